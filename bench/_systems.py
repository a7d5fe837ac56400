"""The three servers compared, each started the way it ships, on loopback, pinned to one core.

- labelbridge: `labelbridge start <backend> --production --workers 1` (whatever production mode
  does today: the command is run, not re-implemented).
- the public SDK: `label-studio-ml` from PyPI in its own venv under bench/.venvs/, its project
  made by its own `label-studio-ml init`, served by the gunicorn command of the Dockerfile it
  ships (`--preload --workers 1 --threads 8 --timeout 0`).
- the floor: bench/floor_app.py, a bare ASGI app on uvicorn with uvloop and httptools.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from _proc import Proc, Procs, free_port, wait_http

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
VENV_BIN = Path(sys.executable).parent
VENVS = BENCH / ".venvs"
SDK_PACKAGE = "label-studio-ml"
SDK_ANCHOR_VERSION = "1.0.9"
SERVER_CPU = 0
EXTRA_ENV: dict[str, str] = {}  # for every labelbridge server: run.py --lb-env
LOAD_CPU = 1


@dataclass
class Server:
    """A running server: its process tree, base URL, and how it was started."""

    name: str
    proc: Proc
    url: str
    command: str
    startup_s: float = 0.0
    notes: list[str] = field(default_factory=list)


def _run(cmd: list[str], *, cwd: Path | None = None, timeout: float = 600) -> str:
    done = subprocess.run(
        cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return done.stdout


# --- labelbridge -----------------------------------------------------------------------------
def start_labelbridge(
    procs: Procs,
    backend: Path,
    *,
    name: str = "labelbridge",
    env: dict[str, str] | None = None,
    wait_ready: bool = True,
    timeout: float = 120,
) -> Server:
    """`labelbridge start BACKEND --production --workers 1` with its state in a temp folder."""
    state = Path(tempfile.mkdtemp(prefix=f"lb-bench-{name}-"))
    port = free_port()
    cmd = [
        str(VENV_BIN / "labelbridge"),
        "start",
        str(backend),
        "--production",
        "--workers",
        "1",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
    ]
    full_env = {
        "MODEL_DIR": str(state / "models"),
        "LOG_DIR": str(state / "logs"),
        "JOB_QUEUE": "embedded",
        "DEBUG": "false",
        **EXTRA_ENV,
        **(env or {}),
    }
    (state / "logs").mkdir(parents=True, exist_ok=True)
    proc = procs.start(name, cmd, cpu=SERVER_CPU, env=full_env)
    proc.cleanup.append(state)
    url = f"http://127.0.0.1:{port}"
    shown = f"labelbridge start {backend.relative_to(ROOT)} --production --workers 1"
    server = Server(name, proc, url, shown)
    server.startup_s = wait_http(
        f"{url}/health", proc, timeout=timeout, ready="ready" if wait_ready else None
    )
    return server


# --- the public SDK --------------------------------------------------------------------------
def newest_sdk_version() -> str | None:
    """The newest label-studio-ml on PyPI (one `pip index` look-up), or None offline."""
    try:
        out = _run(
            [str(VENV_BIN / "python"), "-m", "pip", "index", "versions", SDK_PACKAGE], timeout=60
        )
    except (RuntimeError, subprocess.SubprocessError, OSError):
        return None
    match = re.search(rf"{SDK_PACKAGE} \(([^)]+)\)", out)
    return match.group(1) if match else None


def sdk_venv(version: str, log: list[str]) -> Path:
    """bench/.venvs/label-studio-ml-<version>: the SDK, its init'ed project and the project's
    requirements, made once and cached. Returns the project folder."""
    venv = VENVS / f"{SDK_PACKAGE}-{version}"
    project = venv / "project"
    pip = venv / "bin" / "pip"
    marker = venv / ".ready"
    if not marker.exists():
        log.append(f"creating {venv.relative_to(ROOT)} (pip install {SDK_PACKAGE}=={version})")
        shutil.rmtree(venv, ignore_errors=True)
        VENVS.mkdir(parents=True, exist_ok=True)
        base = Path(getattr(sys, "_base_executable", sys.executable))
        _run([str(base), "-m", "venv", str(venv)])
        _run([str(pip), "install", "-q", f"{SDK_PACKAGE}=={version}"])
        # what its init copies into every project (gunicorn, rq): 1.0.9 imports rq and redis
        # but does not declare them, so its CLI needs these before `init` can run
        shipped = _run(
            [
                str(venv / "bin" / "python"),
                "-c",
                "import importlib.util as u; "
                "print(u.find_spec('label_studio_ml').submodule_search_locations[0])",
            ]
        ).strip()
        _run([str(pip), "install", "-q", "-r", f"{shipped}/default_configs/requirements.txt"])
    # its own `init` makes the project: _wsgi.py, Dockerfile, requirements.txt, our model.py
    _run(
        [
            str(venv / "bin" / "label-studio-ml"),
            "init",
            "project",
            "--root-dir",
            str(venv),
            "--script",
            str(BENCH / "backends" / "sdk_trivial" / "model.py"),
            "--force",
        ]
    )
    if not marker.exists():
        _run([str(pip), "install", "-q", "-r", str(project / "requirements.txt")])
        marker.write_text(version + "\n")
    return project


def sdk_gunicorn_args(project: Path) -> list[str]:
    """The CMD of the Dockerfile the SDK's init writes, with loopback instead of every address."""
    dockerfile = (project / "Dockerfile").read_text()
    match = re.search(r"gunicorn (.+)$", dockerfile, re.MULTILINE)
    if not match:
        raise RuntimeError(f"no gunicorn command in {project / 'Dockerfile'}")
    args = match.group(1).split()
    return [a if not a.startswith(":") else "127.0.0.1" + a for a in args]


def start_sdk(
    procs: Procs,
    version: str,
    log: list[str],
    *,
    name: str | None = None,
    env: dict[str, str] | None = None,
    timeout: float = 120,
) -> Server:
    project = sdk_venv(version, log)
    port = free_port()
    args = sdk_gunicorn_args(project)
    args = [a.replace("$PORT", str(port)) for a in args]
    state = Path(tempfile.mkdtemp(prefix="lb-bench-sdk-"))
    full_env = {
        "PORT": str(port),
        "PYTHONUNBUFFERED": "True",
        "MODEL_DIR": str(state),
        # no Redis: the SDK's own local mode, so nothing depends on a shared service
        "REDIS_HOST": "127.0.0.1",
        "REDIS_PORT": str(free_port()),
        **(env or {}),
    }
    cmd = [str(project.parent / "bin" / "gunicorn"), *args]
    label = name or f"sdk-{version}"
    proc = procs.start(label, cmd, cpu=SERVER_CPU, env=full_env, cwd=project)
    proc.cleanup.append(state)
    url = f"http://127.0.0.1:{port}"
    shown = "gunicorn " + " ".join(args).replace(str(port), "$PORT")
    server = Server(label, proc, url, shown)
    server.startup_s = wait_http(f"{url}/health", proc, timeout=timeout)
    return server


def sdk_gunicorn_version(version: str) -> str:
    venv = VENVS / f"{SDK_PACKAGE}-{version}"
    try:
        out = _run([str(venv / "bin" / "gunicorn"), "--version"])
    except (RuntimeError, OSError):
        return "gunicorn"
    return out.strip().replace("(version ", "").rstrip(")")


# --- the floor -------------------------------------------------------------------------------
def start_floor(procs: Procs, *, timeout: float = 60) -> Server:
    port = free_port()
    args = [
        "floor_app:app",
        "--app-dir",
        str(BENCH),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        "1",
        "--loop",
        "uvloop",
        "--http",
        "httptools",
        "--no-access-log",
        "--log-level",
        "warning",
    ]
    proc = procs.start("floor", [str(VENV_BIN / "python"), "-m", "uvicorn", *args], cpu=SERVER_CPU)
    url = f"http://127.0.0.1:{port}"
    server = Server("floor", proc, url, "uvicorn floor_app:app --loop uvloop --http httptools")
    server.startup_s = wait_http(f"{url}/health", proc, timeout=timeout)
    return server
