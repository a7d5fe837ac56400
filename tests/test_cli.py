"""The command line as a user runs it: init a backend, start it, talk to it over HTTP."""

from __future__ import annotations

import base64
import hashlib
import os
import shutil
import signal
import subprocess
import sys
import zipfile
from importlib import metadata
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

import labelbridge
from labelbridge.cli import (
    _commands,  # noqa: F401  (registers the commands, as `main` does)
    _wheel,
)
from labelbridge.cli._app import app
from support import LABELBRIDGE, free_port, labelbridge_start


def test_init_scaffolds_a_backend_that_starts_and_predicts(tmp_path: Path) -> None:
    folder = tmp_path / "my-backend"
    done = subprocess.run(
        [LABELBRIDGE, "init", str(folder)], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr
    names = {p.name for p in folder.iterdir()}
    assert {
        "model.py",
        "requirements.txt",
        "README.md",
        "Dockerfile",
        "docker-compose.yml",
        "wheels",
    } <= names
    again = subprocess.run(
        [LABELBRIDGE, "init", str(folder)], capture_output=True, text=True, check=False
    )
    assert again.returncode == 2 and "already has" in again.stderr
    config = (folder / "label_config.xml").read_text()
    with labelbridge_start(str(folder), tmp=tmp_path) as server:
        url = server.url
        health = httpx.get(f"{url}/health").json()
        assert health["status"] == "UP" and health["model_class"] == "MyBackend"
        setup = httpx.post(f"{url}/setup", json={"project": "1.1", "schema": config}).json()
        assert setup == {"model_version": "my-backend-v0"}
        tasks = [{"id": 1, "data": {"text": "hello"}}]
        answer = httpx.post(f"{url}/predict", json={"tasks": tasks, "project": "1.1"})
        assert answer.status_code == 200, answer.text
        assert answer.json()["results"][0]["result"][0]["value"]["choices"] == ["Yes"]


def test_start_refuses_a_folder_without_a_model(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    done = subprocess.run(
        [LABELBRIDGE, "start", str(tmp_path / "empty"), "--port", str(free_port())],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2
    assert "has no model.py" in done.stderr and "labelbridge init" in done.stderr


def test_start_reports_a_missing_requirement_by_name(tmp_path: Path) -> None:
    folder = tmp_path / "needs"
    folder.mkdir()
    (folder / "model.py").write_text("import surely_not_installed_pkg\n")
    done = subprocess.run(
        [LABELBRIDGE, "start", str(folder), "--port", str(free_port())],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2
    assert "surely_not_installed_pkg" in done.stderr and "requirements.txt" in done.stderr


def test_production_checks_the_model_in_a_child_and_never_imports_it_in_the_supervisor(
    tmp_path: Path,
) -> None:
    """A model.py importing torch would otherwise stay in the supervisor's memory for its whole
    life: the supervisor checks the class in a short-lived process, and only workers import it.
    A bad backend still fails at once with the same clear error, named backends included."""
    folder = tmp_path / "b"
    subprocess.run([LABELBRIDGE, "init", str(folder)], check=True, capture_output=True)
    imports = tmp_path / "imports.txt"
    model = folder / "model.py"
    model.write_text(
        model.read_text()
        + f"\nimport os\nwith open({str(imports)!r}, 'a') as _f:\n    _f.write(f'{{os.getpid()}}\\n')\n"
    )
    with labelbridge_start(str(folder), "--production", tmp=tmp_path) as server:
        importers = {int(line) for line in imports.read_text().split()}
        assert server.process.pid not in importers  # the supervisor
        assert len(importers) == 2  # the check's child, and the one worker
    (tmp_path / "needs").mkdir()
    (tmp_path / "needs" / "model.py").write_text("import surely_not_installed_pkg\n")
    for targets in ([str(tmp_path / "needs")], [f"good={folder}", f"bad={tmp_path / 'needs'}"]):
        done = subprocess.run(
            [LABELBRIDGE, "start", *targets, "--production", "--port", str(free_port())],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert done.returncode == 2, done.stderr
        assert "surely_not_installed_pkg" in done.stderr and "requirements.txt" in done.stderr
        assert "Traceback" not in done.stderr
        assert ("bad=" in done.stderr) is (len(targets) == 2)


def test_sigterm_stops_the_server_cleanly(tmp_path: Path) -> None:
    folder = tmp_path / "b"
    subprocess.run([LABELBRIDGE, "init", str(folder)], check=True, capture_output=True)
    with labelbridge_start(str(folder), tmp=tmp_path) as server:
        os.killpg(server.process.pid, signal.SIGTERM)
        # uvicorn finishes in-flight work, then re-raises the signal so the exit status tells
        assert server.process.wait(15) in (0, -signal.SIGTERM)
        assert "Application shutdown complete" in server.output()


def test_settings_table_lists_every_setting() -> None:
    done = subprocess.run(
        [LABELBRIDGE, "settings", "--markdown"], capture_output=True, text=True, check=True
    )
    for name in (
        "`MODEL_DIR`",
        "`BASIC_AUTH_USER`",
        "`JOB_QUEUE`",
        "`ML_TIMEOUT_SETUP`",
        "`ASSET_MAX_BYTES`",
    ):
        assert name in done.stdout
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    assert done.stdout.strip() in readme, (
        "README's settings table is stale: labelbridge settings --markdown"
    )


def _record_problems(wheel: Path) -> list[str]:
    """What in the wheel's RECORD disagrees with its files."""
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        record_name = next(n for n in names if n.endswith(".dist-info/RECORD"))
        rows = [line.split(",") for line in archive.read(record_name).decode().splitlines()]
        problems = [f"not in RECORD: {n}" for n in set(names) - {row[0] for row in rows}]
        for name, digest, size in rows:
            if name == record_name:
                continue
            data = archive.read(name)
            sha = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
            if digest != f"sha256={sha}" or int(size) != len(data):
                problems.append(f"RECORD is wrong for {name}")
    return problems


def test_init_writes_a_wheel_of_labelbridge_that_pip_installs(tmp_path: Path) -> None:
    """The Dockerfile installs labelbridge from wheels/ (it is not on PyPI): the wheel installs
    with pip, offline, and that install is a whole labelbridge: its console script runs `init`
    from the wheel's own templates, and packs a wheel byte for byte the same (the bytes depend on
    the files only, so Docker's layer cache survives writing it again)."""
    first, second = tmp_path / "1" / "backend", tmp_path / "2" / "backend"
    subprocess.run([LABELBRIDGE, "init", str(first)], check=True, capture_output=True)
    (wheel,) = (first / "wheels").iterdir()
    assert wheel.name.startswith("labelbridge-") and wheel.name.endswith("-py3-none-any.whl")
    assert f"/tmp/wheels/{wheel.name}[rq]" in (first / "Dockerfile").read_text()
    assert _record_problems(wheel) == []
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
    assert "labelbridge/templates/Dockerfile.tmpl" in names and "labelbridge/py.typed" in names
    assert not any("__pycache__" in n or n.endswith(".pyc") for n in names)

    target = tmp_path / "site"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--no-deps",
            "--no-index",
            "--target",
            target,
            wheel,
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    # the install comes first on the path (its dependencies are this environment's)
    env = {**os.environ, "PYTHONPATH": str(target)}
    which = subprocess.run(
        [sys.executable, "-c", "import labelbridge; print(labelbridge.__file__)"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    assert which.stdout.startswith(str(target))
    script = target / "bin" / "labelbridge"
    subprocess.run([str(script), "init", str(second)], env=env, check=True)
    assert (second / "Dockerfile").read_text() == (first / "Dockerfile").read_text()
    assert (second / "wheels" / wheel.name).read_bytes() == wheel.read_bytes()


def test_init_update_wheel_replaces_the_wheel_and_leaves_the_rest(tmp_path: Path) -> None:
    folder = tmp_path / "b"
    subprocess.run([LABELBRIDGE, "init", str(folder)], check=True, capture_output=True)
    (wheel,) = (folder / "wheels").iterdir()
    old = "labelbridge-0.0.1-py3-none-any.whl"
    dockerfile = folder / "Dockerfile"
    dockerfile.write_text(dockerfile.read_text().replace(wheel.name, old) + "# mine\n")
    wheel.rename(folder / "wheels" / old)
    (folder / "model.py").write_text("# my model\n")
    done = subprocess.run(
        [LABELBRIDGE, "init", str(folder), "--update-wheel"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert [p.name for p in (folder / "wheels").iterdir()] == [wheel.name]
    text = dockerfile.read_text()
    assert old not in text and f"/tmp/wheels/{wheel.name}[rq]" in text and "# mine" in text
    assert (folder / "model.py").read_text() == "# my model\n"
    missing = subprocess.run(
        [LABELBRIDGE, "init", str(tmp_path / "none"), "--update-wheel"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert missing.returncode == 2 and "no Dockerfile" in missing.stderr


def test_wheel_packs_only_what_a_build_ships(tmp_path: Path) -> None:
    """An editable install's folder is a working tree: patch and editor leftovers, caches and
    dotfiles beside the code are not part of labelbridge and stay out of its wheel."""
    package = tmp_path / "labelbridge"
    shutil.copytree(
        Path(labelbridge.__file__).resolve().parent,
        package,
        ignore=shutil.ignore_patterns("__pycache__"),
    )
    stray = [
        "model.py.orig",
        "model.py.rej",
        "model.py~",
        ".model.py.swp",
        "notes.txt",
        "templates/Dockerfile.tmpl~",
        "templates/notes.md",
        "static/.DS_Store",
        "static/sub/extra.html",
        "__pycache__/model.cpython-310.pyc",
        ".hidden/module.py",
        "cli/scratch.json",
    ]
    for name in stray:
        (package / name).parent.mkdir(parents=True, exist_ok=True)
        (package / name).write_text("stray\n")
    names = {name for name, _ in _wheel._package_files(package)}
    assert not {f"labelbridge/{name}" for name in stray} & names
    assert {
        "labelbridge/__init__.py",
        "labelbridge/py.typed",
        "labelbridge/cli/_wheel.py",
        "labelbridge/templates/Dockerfile.tmpl",
        "labelbridge/static/status.html",
    } <= names
    assert all(
        n.endswith(".py")
        or n.startswith(("labelbridge/templates/", "labelbridge/static/"))
        or n == "labelbridge/py.typed"
        for n in names
    )


def _init_fails(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """`labelbridge init` in process: exit 2, nothing written; its error message."""
    monkeypatch.chdir(tmp_path)
    done = CliRunner().invoke(app, ["init", "backend"])
    assert done.exit_code == 2, done.output
    assert not (tmp_path / "backend").exists()
    with pytest.raises(_wheel.WheelError):
        _wheel.build_wheel(tmp_path / "wheels")
    assert not (tmp_path / "wheels").exists()
    return " ".join(done.output.split())


def test_wheel_refuses_a_version_the_metadata_does_not_share(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(labelbridge, "__version__", "9.9.9")
    message = _init_fails(tmp_path, monkeypatch)
    installed = metadata.version("labelbridge")
    assert "code says version 9.9.9" in message and f"metadata says {installed}" in message
    assert "pip install -e ." in message


def test_wheel_refuses_metadata_of_another_installation(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """PYTHONPATH=src over an older install: the code imported is not the code the installed
    metadata (its requirements, its version) describes."""
    site = tmp_path / "site"
    info = site / "labelbridge-0.0.1.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: labelbridge\nVersion: 0.0.1\n")
    (info / "RECORD").write_text(
        "labelbridge/__init__.py,,\nlabelbridge-0.0.1.dist-info/METADATA,,\n"
    )
    (site / "labelbridge").mkdir()
    (site / "labelbridge" / "__init__.py").write_text('__version__ = "0.0.1"\n')
    old = metadata.PathDistribution(info)
    monkeypatch.setattr(_wheel, "_distribution", lambda: old)
    message = _init_fails(tmp_path, monkeypatch)
    imported = Path(labelbridge.__file__).resolve().parent
    assert f"imported from {imported}" in message and str(site / "labelbridge") in message
    assert str(info) in message and "scripts/bootstrap.sh" in message


def test_start_serves_several_backends_under_their_prefixes(tmp_path: Path) -> None:
    for name in ("yes-no", "other"):
        subprocess.run([LABELBRIDGE, "init", str(tmp_path / name)], check=True, capture_output=True)
    config = (tmp_path / "yes-no" / "label_config.xml").read_text()
    args = [f"a={tmp_path / 'yes-no'}", f"b={tmp_path / 'other'}"]
    with labelbridge_start(*args, tmp=tmp_path, health="/b/health") as server:
        url = server.url
        assert httpx.get(f"{url}/a/health").json()["model_class"] == "YesNo"
        assert httpx.get(f"{url}/b/health").json()["model_class"] == "Other"
        for name, version in (("a", "yes-no-v0"), ("b", "other-v0")):
            body = {"project": "3.1", "schema": config}
            assert httpx.post(f"{url}/{name}/setup", json=body).json() == {"model_version": version}
        assert (tmp_path / "models" / "a").is_dir() and (tmp_path / "models" / "b").is_dir()


def test_help_shows_which_environment_variable_backs_each_option() -> None:
    """Rich markup once took "[env REDIS_URL]" for a style and printed "Redis URL ."."""
    for command, needle in (("worker", "[env REDIS_URL]"), ("start", "[env MODEL_DIR]")):
        done = subprocess.run(
            [LABELBRIDGE, command, "--help"],
            capture_output=True,
            text=True,
            check=True,
            env={**os.environ, "COLUMNS": "200"},
        )
        assert needle in done.stdout, done.stdout
