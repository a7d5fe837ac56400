"""Backends that import the real `label_studio_ml`, unchanged, served by labelbridge installed
beside it in a separate virtual env.

The venv (`LABELBRIDGE_SDK_VENV`, default ~/.cache/labelbridge/sdk-venv) gets
`pip install -e <this repo>[rq] label-studio-ml` once; a marker written after pip succeeded
makes later runs reuse it (only labelbridge is reinstalled when the checkout moved or its
pyproject changed). An install that fails or takes longer than
`LABELBRIDGE_SDK_INSTALL_TIMEOUT` seconds (default 120; measured here: 63 s the first time,
23 s with pip's cache off, 17 s with it warm) skips the tests with the reason. `redis` and `rq` come with
labelbridge's `rq` extra: label-studio-ml 1.0.9 imports them without declaring them.

PyPI's `label-studio-ml` is 1.0.9 (January 2023), the 1.x API: `fit(tasks, workdir)` returning
`train_output`, no `get`/`set`/`setup()`, no `label_studio_ml.response`. The 2.x SDK that the
current documentation describes is only installed from its GitHub repository;
`LABELBRIDGE_SDK_SPEC` (a pip requirement) picks another build, and the 2.x test runs when
the installed SDK has the 2.x API.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from compat_harness import (
    BACKENDS,
    PROJECT,
    ROOT,
    check_text_classifier,
    choice,
    chosen,
    serve,
)

from fakes.labelstudio import DEFAULT_CONFIG as SENTIMENT

pytestmark = [pytest.mark.labelstudio, pytest.mark.timeout(900)]

SPEC = os.environ.get("LABELBRIDGE_SDK_SPEC", "label-studio-ml")
INSTALL_TIMEOUT = float(os.environ.get("LABELBRIDGE_SDK_INSTALL_TIMEOUT", "120"))
MARKER = ".labelbridge-sdk.json"


def _log(message: str) -> None:
    print(f"[real-sdk] {message}", file=sys.__stderr__, flush=True)


def default_venv() -> Path:
    configured = os.environ.get("LABELBRIDGE_SDK_VENV")
    if configured:
        return Path(configured).expanduser()
    return Path.home() / ".cache" / "labelbridge" / "sdk-venv"


class SDKUnavailable(Exception):
    """The SDK could not be installed in time: the tests skip with this reason."""


@dataclass(frozen=True)
class SDK:
    venv: Path
    version: str
    has_v2_api: bool

    @property
    def labelbridge(self) -> str:
        return str(self.venv / "bin" / "labelbridge")

    @property
    def python(self) -> str:
        return str(self.venv / "bin" / "python")


def _pip(venv: Path, *args: str, timeout: float) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    command = [str(venv / "bin" / "python"), "-m", "pip", "install", "-q", *args]
    try:
        done = subprocess.run(
            command, env=env, capture_output=True, text=True, timeout=timeout, check=False
        )
    except subprocess.TimeoutExpired as exc:
        raise SDKUnavailable(
            f"pip install {' '.join(args)} took more than {timeout:g} s "
            "(LABELBRIDGE_SDK_INSTALL_TIMEOUT)"
        ) from exc
    if done.returncode != 0:
        tail = "\n".join((done.stdout + done.stderr).splitlines()[-15:])
        raise SDKUnavailable(f"pip install {' '.join(args)} failed:\n{tail}")


def _wanted() -> dict[str, str]:
    pyproject = (ROOT / "pyproject.toml").read_bytes()
    return {"spec": SPEC, "root": str(ROOT), "pyproject": hashlib.sha256(pyproject).hexdigest()}


def _install(venv: Path) -> None:
    """Install or update under the exclusive lock; the marker is written last."""
    wanted = _wanted()
    marker = venv / MARKER
    found: dict[str, Any] = {}
    with contextlib.suppress(OSError, ValueError):
        found = json.loads(marker.read_text())
    if found.get("spec") != SPEC or not (venv / "bin" / "labelbridge").is_file():
        shutil.rmtree(venv, ignore_errors=True)
        began = time.monotonic()
        _log(f"installing {SPEC!r} and labelbridge into {venv} (once; cached)")
        python = getattr(sys, "_base_executable", None) or sys.executable
        subprocess.run([python, "-m", "venv", str(venv)], check=True, timeout=120)
        _pip(venv, "-e", f"{ROOT}[rq]", SPEC, timeout=INSTALL_TIMEOUT)
        elapsed = time.monotonic() - began
        _log(f"installed in {elapsed:.1f} s")
        marker.write_text(json.dumps({**wanted, "install_seconds": round(elapsed, 1)}))
    elif any(found.get(k) != v for k, v in wanted.items()):
        _log(f"pointing {venv} at labelbridge in {ROOT}")
        _pip(venv, "-e", f"{ROOT}[rq]", timeout=INSTALL_TIMEOUT)
        marker.write_text(json.dumps({**found, **wanted}))


def _probe(venv: Path) -> SDK:
    script = (
        "import importlib.metadata as m, importlib.util as u, json;"
        "print(json.dumps([m.version('label-studio-ml'),"
        " u.find_spec('label_studio_ml.response') is not None]))"
    )
    out = subprocess.run(
        [str(venv / "bin" / "python"), "-c", script],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    version, v2 = json.loads(out.stdout)
    return SDK(venv, version, v2)


@contextlib.contextmanager
def sdk_venv(venv: Path) -> Iterator[SDK]:
    """The venv with the SDK and labelbridge (this checkout, editable), installed on first use.

    One venv serves every checkout on the machine, so it is held with a shared lock while
    tests use it, and installed or re-pointed at a checkout only under the exclusive lock
    (taken first, then turned into the shared one: two runs never wait on each other's).
    """
    venv.parent.mkdir(parents=True, exist_ok=True)
    with open(venv.parent / f".{venv.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        _install(venv)
        fcntl.flock(lock, fcntl.LOCK_SH)
        yield _probe(venv)


@pytest.fixture(scope="module")
def sdk() -> Iterator[SDK]:
    with contextlib.ExitStack() as stack:
        try:
            found = stack.enter_context(sdk_venv(default_venv()))
        except SDKUnavailable as exc:
            pytest.skip(f"label-studio-ml could not be installed beside labelbridge: {exc}")
        yield found


def test_the_loader_wraps_the_real_sdk_class(sdk: SDK) -> None:
    """In the SDK's venv, the backend's class is the SDK's own subclass, wrapped by API."""
    name = "text_classifier" if sdk.has_v2_api else "sdk1_classifier"
    script = (
        "import json, sys; from labelbridge.loader import load_model_class;"
        "from labelbridge.compat._wrap import api_of;"
        "cls = load_model_class(sys.argv[1]); sdk = cls.wrapped;"
        "base = [k for k in sdk.__mro__ if k.__name__ == 'LabelStudioMLBase'][0];"
        "print(json.dumps([cls.__name__, base.__module__, api_of(sdk)]))"
    )
    out = subprocess.run(
        [sdk.python, "-c", script, str(BACKENDS / name)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"},  # no __pycache__ in the sources
    )
    assert out.returncode == 0, out.stderr
    class_name, base_module, api = json.loads(out.stdout)
    assert base_module == "label_studio_ml.model"
    if sdk.has_v2_api:
        assert (class_name, api) == ("WordCountClassifier", "v2")
    else:
        assert (class_name, api) == ("SimpleWordClassifier", "v1")


def _annotated(rows: list[tuple[str, str]]) -> list[dict[str, Any]]:
    return [
        {
            "id": i + 1,
            "data": {"text": text},
            "annotations": [{"id": i + 1, "result": choice("sentiment", label)}],
        }
        for i, (text, label) in enumerate(rows)
    ]


def test_sdk1_backend_runs_unchanged(sdk: SDK, tmp_path: Path) -> None:
    """The 1.x API of PyPI's release: /setup, valid predictions, /train in a job whose
    `train_output` (a file written into the job's workdir) the next model object loads."""
    if sdk.has_v2_api:
        pytest.skip(f"the installed label-studio-ml {sdk.version} has the 2.x API, not 1.x")
    backend = tmp_path / "sdk1_classifier"
    shutil.copytree(BACKENDS / "sdk1_classifier", backend)
    tasks = [
        {"id": 101, "data": {"text": "wonderful great screen"}},
        {"id": 102, "data": {"text": "awful it broke"}},
    ]
    with serve(backend, tmp_path, labelbridge=sdk.labelbridge) as server:
        health = server.http.get(server.url + "/health").json()
        assert health["model_class"] == "SimpleWordClassifier"
        v0 = server.setup(SENTIMENT)
        assert v0 == "simplewordclassifier-v0"
        before, answered = server.predict(SENTIMENT, tasks)
        assert answered == v0 and [p["model_version"] for p in before] == [v0, v0]
        rows = [
            ("wonderful great phone", "Positive"),
            ("great screen", "Positive"),
            ("awful battery", "Negative"),
            ("it broke", "Negative"),
        ]
        body = {"annotations": _annotated(rows), "project": PROJECT, "label_config": SENTIMENT}
        status = server.wait_job(server.post("/train", body)["job"])
        v1 = status["model_version"]
        assert v1 == "simplewordclassifier-v1"
        assert server.setup(SENTIMENT) == v1
        after, answered = server.predict(SENTIMENT, tasks)
        assert answered == v1 and [p["model_version"] for p in after] == [v1, v1]
        assert [chosen(p) for p in after] == ["Positive", "Negative"]
        metrics = server.version_metrics(v1)
        assert metrics["trained_on"] == len(rows)


def test_sdk2_backend_runs_unchanged(sdk: SDK, captures: dict[str, Any], tmp_path: Path) -> None:
    """tests/compat_backends/text_classifier with its label_studio_ml imports, as written."""
    if not sdk.has_v2_api:
        pytest.skip(
            f"label-studio-ml {sdk.version} ({SPEC}) has the 1.x API (no "
            "label_studio_ml.response, no get/set/setup); the 2.x SDK is published only on "
            "GitHub: set LABELBRIDGE_SDK_SPEC to e.g. 'label-studio-ml @ git+https://github.com/"
            "HumanSignal/label-studio-ml-backend' to run this test"
        )
    backend = tmp_path / "text_classifier"
    shutil.copytree(BACKENDS / "text_classifier", backend)
    check_text_classifier(backend, tmp_path, captures, labelbridge=sdk.labelbridge)


def test_a_2x_backend_on_the_1x_sdk_is_refused_with_a_fix(sdk: SDK, tmp_path: Path) -> None:
    """Unchanged 2.x code on PyPI's 1.x SDK: `labelbridge start` says so and what to do."""
    if sdk.has_v2_api:
        pytest.skip(f"the installed label-studio-ml {sdk.version} has the 2.x API")
    backend = tmp_path / "text_classifier"
    shutil.copytree(BACKENDS / "text_classifier", backend)
    done = subprocess.run(
        [sdk.labelbridge, "start", str(backend), "--host", "127.0.0.1", "--port", "0"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=tmp_path,
    )
    assert done.returncode == 2, done.stdout + done.stderr
    assert "written for label-studio-ml 2.x" in done.stderr
    assert "labelbridge.compat" in done.stderr
