"""Run the real Label Studio (from PyPI) and our backend as subprocesses, for end-to-end tests.

Compatibility is only shown against the real thing, so this module installs `label-studio` into
its own cached virtual env (its pins clash with ours), starts it on loopback with SQLite in a
temp dir and a known legacy token, and gives the tests a small REST client that calls the same
endpoints the labeling UI calls. Every process started here runs in its own process group and
is ended on teardown, at interpreter exit, and when the parent dies.
"""

from __future__ import annotations

import atexit
import contextlib
import fcntl
import json
import os
import secrets
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx

__all__ = [
    "LS_VERSION",
    "BackendFactory",
    "BackendProcess",
    "Exchange",
    "LabelStudio",
    "LabelStudioAPI",
    "ManagedProcess",
    "RecordingProxy",
    "ensure_label_studio",
    "free_port",
    "start_backend",
    "start_label_studio",
    "wait_until",
]

LS_VERSION = "1.23.2"
LOOPBACK = "127.0.0.1"
INSTALL_TIMEOUT = 900.0
LS_START_TIMEOUT = 180.0
BACKEND_START_TIMEOUT = 60.0
_MARKER = f".labelbridge-installed-label-studio-{LS_VERSION}"


def _log(message: str) -> None:
    """Progress lines go to the real stderr so they show even under pytest's capture."""
    print(f"[labelstudio-e2e] {message}", file=sys.__stderr__, flush=True)


# --- install ------------------------------------------------------------------------------
def default_venv() -> Path:
    """Where the Label Studio venv is cached between runs (LABELBRIDGE_LS_VENV overrides)."""
    configured = os.environ.get("LABELBRIDGE_LS_VENV")
    if configured:
        return Path(configured).expanduser()
    return Path.home() / ".cache" / "labelbridge" / f"label-studio-{LS_VERSION}"


def _python_ok(executable: str) -> bool:
    try:
        out = subprocess.run(
            [
                executable,
                "-c",
                "import sys; print((3, 10) <= sys.version_info[:2] <= (3, 12))",
            ],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return out.stdout.strip() == "True"


def find_python() -> str:
    """A Python that label-studio 1.23.2 supports (3.10-3.12): ours if it fits, else from PATH."""
    if (3, 10) <= sys.version_info[:2] <= (3, 12):
        # the base interpreter, not our venv's: a venv made from a venv's python works, but
        # the base one avoids inheriting anything from the project's venv
        return getattr(sys, "_base_executable", None) or sys.executable
    for name in ("python3.12", "python3.11", "python3.10"):
        found = shutil.which(name)
        if found and _python_ok(found):
            return found
    raise RuntimeError(
        f"label-studio {LS_VERSION} needs Python 3.10-3.12; this is {sys.version.split()[0]} "
        "and no python3.12/3.11/3.10 is on PATH"
    )


def ensure_label_studio(venv: Path | None = None) -> Path:
    """The `label-studio` executable, installing it into its own venv on first use.

    The marker file is written only after pip succeeded, so an interrupted install is redone
    from scratch. A file lock keeps two test runs from installing into the same venv at once.
    """
    venv = venv or default_venv()
    exe = venv / "bin" / "label-studio"
    marker = venv / _MARKER
    if marker.is_file() and exe.is_file():
        return exe
    venv.parent.mkdir(parents=True, exist_ok=True)
    lock_path = venv.parent / f".{venv.name}.lock"
    with open(lock_path, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if marker.is_file() and exe.is_file():  # another run finished it while we waited
            return exe
        if venv.exists():
            _log(f"removing incomplete Label Studio venv {venv}")
            shutil.rmtree(venv)
        python = find_python()
        began = time.monotonic()
        _log(f"installing label-studio=={LS_VERSION} into {venv} with {python} (once; cached)")
        subprocess.run([python, "-m", "venv", str(venv)], check=True, timeout=120)
        env = {**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
        env.pop("PYTHONPATH", None)
        env.pop("VIRTUAL_ENV", None)
        result = subprocess.run(
            [
                str(venv / "bin" / "python"),
                "-m",
                "pip",
                "install",
                "-q",
                f"label-studio=={LS_VERSION}",
            ],
            env=env,
            capture_output=True,
            text=True,
            timeout=INSTALL_TIMEOUT,
            check=False,
        )
        if result.returncode != 0 or not exe.is_file():
            raise RuntimeError(
                f"pip install label-studio=={LS_VERSION} failed ({result.returncode}):\n"
                f"{_tail(result.stdout + result.stderr)}"
            )
        marker.write_text(f"label-studio=={LS_VERSION}\n")
        _log(f"label-studio {LS_VERSION} installed in {time.monotonic() - began:.1f} s")
    return exe


# --- processes ----------------------------------------------------------------------------
def free_port() -> int:
    """A port nobody listens on right now (the kernel's pick for a loopback bind)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        return int(sock.getsockname()[1])


def port_is_free(port: int) -> bool:
    """Label Studio silently moves to the next port when its port is taken, so check first."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((LOOPBACK, port))
        except OSError:
            return False
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.2)
        return sock.connect_ex((LOOPBACK, port)) != 0


def _listen_addresses(port: int) -> set[str]:
    """Addresses (hex, as in /proc/net/tcp*) that listen on `port`, to prove we bind loopback."""
    found: set[str] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError):
            for line in Path(table).read_text().splitlines()[1:]:
                parts = line.split()
                local, state = parts[1], parts[3]
                address, _, hexport = local.rpartition(":")
                if state == "0A" and int(hexport, 16) == port:  # 0A = LISTEN
                    found.add(address)
    return found


_LOOPBACK_HEX = {"0100007F", "00000000000000000000000001000000"}


def assert_loopback_only(port: int) -> None:
    """Fail loudly if anything listens on `port` beyond 127.0.0.1 (or ::1)."""
    addresses = _listen_addresses(port)
    if not Path("/proc/net/tcp").exists():
        return
    wide = addresses - _LOOPBACK_HEX
    if wide:
        raise RuntimeError(f"port {port} listens beyond loopback: {sorted(wide)}")


def _tail(text: str, lines: int = 60) -> str:
    return "\n".join(text.splitlines()[-lines:])


def _die_with_parent() -> None:
    """In the child: start a new process group and get SIGTERM when the test process dies."""
    os.setsid()
    if sys.platform.startswith("linux"):
        with contextlib.suppress(Exception):
            import ctypes

            libc = ctypes.CDLL("libc.so.6", use_errno=True)
            libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


_LIVE: set[ManagedProcess] = set()


@atexit.register
def _stop_all() -> None:
    """Last resort: whatever a crashed or interrupted test left running."""
    for proc in list(_LIVE):
        proc.stop()


@dataclass(eq=False)
class ManagedProcess:
    """A subprocess in its own process group, its output in a log file, stopped for sure."""

    name: str
    args: list[str]
    env: dict[str, str]
    log_path: Path
    cwd: Path | None = None
    popen: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    def start(self) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            self.popen = subprocess.Popen(
                self.args,
                env=self.env,
                cwd=self.cwd,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                preexec_fn=_die_with_parent,
            )
        _LIVE.add(self)

    @property
    def pid(self) -> int | None:
        return self.popen.pid if self.popen else None

    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def log_tail(self, lines: int = 60) -> str:
        try:
            return _tail(self.log_path.read_text(errors="replace"), lines)
        except OSError:
            return "(no log)"

    def stop(self, grace: float = 10.0) -> None:
        """SIGTERM the whole group, wait, then SIGKILL it: nothing is left behind."""
        popen, self.popen = self.popen, None
        _LIVE.discard(self)
        if popen is None:
            return
        pgid = popen.pid  # setsid() made the child its group's leader
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, signal.SIGTERM)
        try:
            popen.wait(grace)
        except subprocess.TimeoutExpired:
            _log(f"{self.name} ignored SIGTERM for {grace:g} s: killing it")
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, signal.SIGKILL)  # also any grandchild still in the group
        with contextlib.suppress(subprocess.TimeoutExpired):
            popen.wait(5)


def wait_until(
    check: Callable[[], Any],
    *,
    timeout: float,
    interval: float = 0.25,
    what: str = "condition",
    proc: ManagedProcess | None = None,
) -> Any:
    """Call `check` until it returns something truthy or the deadline passes.

    Exceptions from `check` count as "not yet"; the last one is in the error. If `proc` dies
    meanwhile we stop at once and show its log instead of waiting out the deadline.
    """
    deadline = time.monotonic() + timeout
    last: BaseException | None = None
    while True:
        try:
            value = check()
        except Exception as exc:
            last, value = exc, None
        if value:
            return value
        if proc is not None and not proc.alive():
            raise RuntimeError(
                f"{proc.name} exited while waiting for {what}; log tail:\n{proc.log_tail()}"
            )
        if time.monotonic() >= deadline:
            detail = f" (last error: {last!r})" if last else ""
            tail = f"\n{proc.name} log tail:\n{proc.log_tail()}" if proc else ""
            raise TimeoutError(f"{what} not reached within {timeout:g} s{detail}{tail}")
        time.sleep(interval)


# --- Label Studio's REST API --------------------------------------------------------------
class LabelStudioAPI:
    """The REST calls the labeling UI makes, as thin httpx wrappers.

    Calls that tests check for failure return the `httpx.Response`; the others raise on a
    non-2xx answer (with the body in the message) and return the decoded JSON.
    """

    def __init__(self, url: str, token: str, timeout: float = 120.0) -> None:
        self.client = httpx.Client(
            base_url=url,
            headers={"Authorization": f"Token {token}"},
            timeout=timeout,
            trust_env=False,
        )

    def close(self) -> None:
        self.client.close()

    @staticmethod
    def _ok(response: httpx.Response) -> Any:
        if response.is_error:
            request = response.request
            raise AssertionError(
                f"{request.method} {request.url} -> {response.status_code}: {response.text[:2000]}"
            )
        if not response.content:
            return None
        return response.json()

    def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        return self.client.request(method, path, **kwargs)

    # projects and tasks
    def create_project(
        self, label_config: str, title: str = "labelbridge-e2e", **fields: Any
    ) -> dict[str, Any]:
        body = {"title": title, "label_config": label_config, **fields}
        return self._ok(self.client.post("/api/projects", json=body))  # type: ignore[no-any-return]

    def get_project(self, project_id: int) -> dict[str, Any]:
        return self._ok(self.client.get(f"/api/projects/{project_id}"))  # type: ignore[no-any-return]

    def import_tasks(self, project_id: int, tasks: list[dict[str, Any]]) -> dict[str, Any]:
        """Tasks as a JSON list; each item is the task's `data` (or a full task with `data`)."""
        return self._ok(self.client.post(f"/api/projects/{project_id}/import", json=tasks))  # type: ignore[no-any-return]

    def upload_file(
        self, project_id: int, path: Path, content_type: str = "application/octet-stream"
    ) -> dict[str, Any]:
        """Multipart import, as the UI's upload: the new task's data points at /data/upload/..."""
        with open(path, "rb") as handle:
            files = {path.name: (path.name, handle, content_type)}
            return self._ok(self.client.post(f"/api/projects/{project_id}/import", files=files))  # type: ignore[no-any-return]

    def list_tasks(self, project_id: int) -> list[dict[str, Any]]:
        data = self._ok(
            self.client.get("/api/tasks", params={"project": project_id, "page_size": 1000})
        )
        return data["tasks"] if isinstance(data, dict) else data  # type: ignore[no-any-return]

    # ML backends
    def add_ml_backend(
        self,
        project_id: int,
        url: str,
        title: str = "labelbridge",
        is_interactive: bool = True,
        **fields: Any,
    ) -> httpx.Response:
        body = {
            "url": url,
            "project": project_id,
            "title": title,
            "is_interactive": is_interactive,
            **fields,
        }
        return self.client.post("/api/ml", json=body)

    def get_ml_backend(self, ml_id: int) -> dict[str, Any]:
        """GET runs Label Studio's health + setup check first, so `state` is fresh."""
        return self._ok(self.client.get(f"/api/ml/{ml_id}"))  # type: ignore[no-any-return]

    def list_ml_backends(self, project_id: int) -> list[dict[str, Any]]:
        return self._ok(self.client.get("/api/ml", params={"project": project_id}))  # type: ignore[no-any-return]

    def delete_ml_backend(self, ml_id: int) -> None:
        self._ok(self.client.delete(f"/api/ml/{ml_id}"))

    def train(self, ml_id: int) -> httpx.Response:
        """The UI's "Start Training" button."""
        return self.client.post(f"/api/ml/{ml_id}/train", json={"use_ground_truth": True})

    def ml_versions(self, ml_id: int) -> dict[str, Any]:
        return self._ok(self.client.get(f"/api/ml/{ml_id}/versions"))  # type: ignore[no-any-return]

    def project_model_versions(self, project_id: int) -> dict[str, Any]:
        return self._ok(self.client.get(f"/api/projects/{project_id}/model-versions"))  # type: ignore[no-any-return]

    def interactive_annotating(
        self, ml_id: int, task_id: int, context: Mapping[str, Any] | None
    ) -> httpx.Response:
        body = {"task": task_id, "context": dict(context) if context is not None else None}
        return self.client.post(f"/api/ml/{ml_id}/interactive-annotating", json=body)

    # predictions and annotations
    def _action(self, action: str, project_id: int) -> dict[str, Any]:
        body = {"selectedItems": {"all": True, "excluded": []}}
        response = self.client.post(
            "/api/dm/actions", params={"id": action, "project": project_id}, json=body
        )
        return self._ok(response)  # type: ignore[no-any-return]

    def retrieve_predictions(self, project_id: int) -> dict[str, Any]:
        """Data Manager > select all > Actions > Retrieve Predictions."""
        return self._action("retrieve_tasks_predictions", project_id)

    def delete_predictions(self, project_id: int) -> dict[str, Any]:
        """Data Manager > select all > Actions > Delete Predictions."""
        return self._action("delete_tasks_predictions", project_id)

    def list_predictions(self, project_id: int) -> list[dict[str, Any]]:
        return self._ok(self.client.get("/api/predictions", params={"project": project_id}))  # type: ignore[no-any-return]

    def create_annotation(
        self, task_id: int, result: list[dict[str, Any]], **fields: Any
    ) -> dict[str, Any]:
        body = {"result": result, **fields}
        return self._ok(self.client.post(f"/api/tasks/{task_id}/annotations", json=body))  # type: ignore[no-any-return]


@dataclass(eq=False)
class LabelStudio:
    """A running Label Studio: where it is, how to authenticate, and a REST client."""

    url: str
    token: str
    username: str
    password: str
    data_dir: Path
    process: ManagedProcess
    api: LabelStudioAPI

    def stop(self) -> None:
        """Stop the server and remove its data dir (kept when LABELBRIDGE_E2E_KEEP=1)."""
        self.api.close()
        self.process.stop()
        if os.environ.get("LABELBRIDGE_E2E_KEEP") == "1":
            _log(f"kept Label Studio data and log in {self.data_dir}")
        else:
            shutil.rmtree(self.data_dir, ignore_errors=True)


def label_studio_env(
    data_dir: Path, username: str, password: str, token: str, venv: Path
) -> dict[str, str]:
    """The environment from shared/protocol/README.md, plus prediction validation turned on."""
    keep = ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "TZ")
    env = {k: os.environ[k] for k in keep if k in os.environ}
    env.update(
        {
            "PATH": f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '/usr/bin:/bin')}",
            "VIRTUAL_ENV": str(venv),
            "PYTHONUNBUFFERED": "1",
            "LABEL_STUDIO_BASE_DATA_DIR": str(data_dir),
            "DJANGO_DB": "sqlite",
            "LABEL_STUDIO_USERNAME": username,
            "LABEL_STUDIO_PASSWORD": password,
            "LABEL_STUDIO_USER_TOKEN": token,
            "LABEL_STUDIO_ENABLE_LEGACY_API_TOKEN": "true",
            "ML_BLOCK_LOCAL_IP": "false",
            "SSRF_PROTECTION_ENABLED": "false",
            "COLLECT_ANALYTICS": "false",
            "LATEST_VERSION_CHECK": "false",
            "SENTRY_DSN": "",
            "FRONTEND_SENTRY_DSN": "",
            # Label Studio's own check of predicted results against the config (off by default)
            "fflag_feat_utc_210_prediction_validation_15082025": "true",
        }
    )
    return env


_DATA_PREFIX = "labelbridge-ls-"
_OWNER_FILE = "labelbridge-owner.pid"


def _sweep_stale_data_dirs(base_dir: Path | None) -> None:
    """Remove data dirs of earlier runs that were killed (SIGKILL skips every cleanup)."""
    root = Path(base_dir or tempfile.gettempdir())
    for path in root.glob(f"{_DATA_PREFIX}*"):
        try:
            owner = int((path / _OWNER_FILE).read_text())
        except (OSError, ValueError):
            continue  # not ours, or still being created
        try:
            os.kill(owner, 0)
        except ProcessLookupError:
            shutil.rmtree(path, ignore_errors=True)
        except PermissionError:
            pass


@dataclass(frozen=True)
class _User:
    username: str
    password: str
    token: str

    @classmethod
    def new(cls) -> _User:
        return cls("e2e@example.com", secrets.token_urlsafe(12), secrets.token_hex(20))


_TEMPLATE_DB = "label_studio.sqlite3"


def _template_dir(venv: Path) -> Path:
    return venv / ".labelbridge-db-template"


def start_label_studio(
    exe: Path | None = None,
    base_dir: Path | None = None,
    extra_env: Mapping[str, str] | None = None,
    *,
    use_template: bool = True,
) -> LabelStudio:
    """Start Label Studio on 127.0.0.1 with its own SQLite database; return once it answers.

    A fresh database spends ~25 s in migrations, so the first start saves a snapshot of the
    migrated database (with the test user and token) next to the venv, and later starts copy
    it (~8 s). A snapshot that fails to start is dropped and a fresh database used instead.
    """
    exe = exe or ensure_label_studio()
    template = _template_dir(exe.parent.parent)
    if use_template and (template / _MARKER).is_file():
        user = _User(**json.loads((template / "user.json").read_text()))
        try:
            return _start(exe, base_dir, extra_env, user, seed=template / _TEMPLATE_DB)
        except (RuntimeError, TimeoutError) as exc:
            _log(f"starting from the saved database failed, starting fresh: {exc}")
            shutil.rmtree(template, ignore_errors=True)
    user = _User.new()
    studio = _start(exe, base_dir, extra_env, user, seed=None)
    if use_template:
        with contextlib.suppress(OSError, sqlite3.Error):
            _save_template(studio, template, user)
    return studio


def _save_template(studio: LabelStudio, template: Path, user: _User) -> None:
    """Snapshot the just-migrated database with SQLite's backup API (consistent while live)."""
    staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=template.parent))
    try:
        source = sqlite3.connect(studio.data_dir / _TEMPLATE_DB)
        target = sqlite3.connect(staging / _TEMPLATE_DB)
        try:
            source.backup(target)
        finally:
            target.close()
            source.close()
        (staging / "user.json").write_text(json.dumps(asdict(user)))
        (staging / _MARKER).write_text(f"label-studio=={LS_VERSION}\n")
        shutil.rmtree(template, ignore_errors=True)
        os.replace(staging, template)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _start(
    exe: Path,
    base_dir: Path | None,
    extra_env: Mapping[str, str] | None,
    user: _User,
    seed: Path | None,
) -> LabelStudio:
    venv = exe.parent.parent
    _sweep_stale_data_dirs(base_dir)
    data_dir = Path(tempfile.mkdtemp(prefix=_DATA_PREFIX, dir=base_dir))
    (data_dir / _OWNER_FILE).write_text(str(os.getpid()))
    if seed is not None:
        shutil.copyfile(seed, data_dir / _TEMPLATE_DB)
    env = label_studio_env(data_dir, user.username, user.password, user.token, venv)
    env.update(extra_env or {})
    for _attempt in range(5):
        port = free_port()
        if port_is_free(port):
            break
    else:
        raise RuntimeError("no free port on 127.0.0.1")
    url = f"http://{LOOPBACK}:{port}"
    args = [str(exe), "start", "--no-browser", "--internal-host", LOOPBACK]
    args += ["--port", str(port), "--host", url]
    proc = ManagedProcess("label-studio", args, env, data_dir / "label-studio.log", cwd=data_dir)
    began = time.monotonic()
    proc.start()
    try:
        probe = httpx.Client(base_url=url, timeout=5.0, trust_env=False)
        try:

            def ready() -> bool:
                version = probe.get("/api/version")
                return version.status_code == 200 and version.json().get("release") == LS_VERSION

            what = f"Label Studio at {url}"
            wait_until(ready, timeout=LS_START_TIMEOUT, interval=0.5, what=what, proc=proc)
            # the token works, i.e. the user exists with it
            auth = {"Authorization": f"Token {user.token}"}
            whoami = probe.get("/api/current-user/whoami", headers=auth)
            if whoami.status_code != 200:
                raise RuntimeError(
                    f"token refused: {whoami.status_code} {whoami.text[:300]}\n{proc.log_tail()}"
                )
        finally:
            probe.close()
        assert_loopback_only(port)
    except BaseException:
        proc.stop()
        shutil.rmtree(data_dir, ignore_errors=True)
        raise
    elapsed = time.monotonic() - began
    how = "saved" if seed else "new"
    _log(f"Label Studio {LS_VERSION} ready at {url} in {elapsed:.1f} s ({how} database {data_dir})")
    api = LabelStudioAPI(url, user.token)
    return LabelStudio(url, user.token, user.username, user.password, data_dir, proc, api)


# --- our backend --------------------------------------------------------------------------
@dataclass(eq=False)
class BackendProcess:
    """Our `labelbridge start` server as Label Studio sees it."""

    url: str
    work_dir: Path
    process: ManagedProcess
    client: httpx.Client

    def health(self) -> dict[str, Any]:
        return self.client.get("/health").json()  # type: ignore[no-any-return]

    def versions(self, project: int | str | None = None) -> dict[str, Any]:
        params = {"project": str(project)} if project is not None else None
        response = self.client.get("/versions", params=params)
        response.raise_for_status()
        return response.json()  # type: ignore[no-any-return]

    def job_status(self, job: str) -> dict[str, Any]:
        response = self.client.post("/job_status", json={"job": job})
        response.raise_for_status()
        return response.json()  # type: ignore[no-any-return]

    def stop(self) -> None:
        self.client.close()
        self.process.stop()


#: what the `start_our_backend` fixture yields: start_backend() with the work dir filled in
BackendFactory = Callable[..., BackendProcess]


def labelbridge_executable() -> Path:
    """The `labelbridge` script of the venv running the tests."""
    candidate = Path(sys.executable).parent / "labelbridge"
    if not candidate.exists():
        found = shutil.which("labelbridge")
        if not found:
            raise RuntimeError(f"no labelbridge script next to {sys.executable} nor on PATH")
        return Path(found)
    return candidate


def start_backend(
    backend_dir: Path,
    work_dir: Path,
    *,
    extra_env: Mapping[str, str] | None = None,
    args: Iterable[str] = (),
    wait_for: Iterable[str] = ("ready",),
    command: list[str] | None = None,
) -> BackendProcess:
    """Start `labelbridge start <backend_dir>` on a free loopback port; wait for /health.

    Waits until /health answers `{"status": "UP", "model_state": <one of wait_for>}`, so a test
    of a broken model can wait for "failed". `command` replaces the labelbridge command line
    (for a stand-in server); `{port}` in it is filled in.
    """
    work_dir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    url = f"http://{LOOPBACK}:{port}"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_", "LABEL_STUDIO_"))}
    env.update(
        {
            "MODEL_DIR": str(work_dir / "models"),
            "LOG_DIR": str(work_dir / "logs"),
            "PYTHONUNBUFFERED": "1",
            "NO_PROXY": "127.0.0.1,localhost",  # its calls back to Label Studio stay local
            "no_proxy": "127.0.0.1,localhost",
            "HOST": LOOPBACK,
            "PORT": str(port),
        }
    )
    env.update(extra_env or {})
    if command is None:
        argv = [
            str(labelbridge_executable()),
            "start",
            str(backend_dir),
            "--host",
            LOOPBACK,
            "--port",
            str(port),
        ]
        argv += list(args)
    else:
        argv = [part.replace("{port}", str(port)) for part in command]
    proc = ManagedProcess(
        f"backend {backend_dir.name}", argv, env, work_dir / "server.log", cwd=work_dir
    )
    states = set(wait_for)
    began = time.monotonic()
    proc.start()
    client = httpx.Client(base_url=url, timeout=10.0, trust_env=False)
    try:

        def ready() -> bool:
            health = client.get("/health").json()
            return health.get("status") == "UP" and health.get("model_state") in states

        wait_until(
            ready,
            timeout=BACKEND_START_TIMEOUT,
            what=f"{url}/health model_state in {sorted(states)}",
            proc=proc,
        )
        assert_loopback_only(port)
    except BaseException:
        client.close()
        proc.stop()
        raise
    _log(f"backend {backend_dir} ready at {url} in {time.monotonic() - began:.1f} s")
    return BackendProcess(url, work_dir, proc, client)


# --- a recorder between Label Studio and our backend --------------------------------------
@dataclass
class Exchange:
    """One request Label Studio sent to the backend, and what the backend answered."""

    method: str
    path: str
    request: Any
    status: int
    response: Any
    headers: dict[str, str]


_HOP_BY_HOP = {
    "connection",
    "keep-alive",
    "transfer-encoding",
    "te",
    "upgrade",
    "proxy-connection",
    "host",
}


def _decode(body: bytes) -> Any:
    if not body:
        return None
    try:
        return json.loads(body)
    except ValueError:
        return body.decode("utf-8", "replace")


class RecordingProxy:
    """A loopback HTTP proxy that forwards to `target` and records every exchange.

    Label Studio's /train answers an empty body and webhooks' answers are dropped, so this is
    the only way a test sees which event reached the backend and which job it queued.
    """

    def __init__(self, target: str) -> None:
        self.target = target
        self.exchanges: list[Exchange] = []
        self._lock = threading.Lock()
        self._client = httpx.Client(base_url=target, timeout=120.0, trust_env=False)
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                """Quiet: exchanges are recorded instead."""

            def _forward(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP_BY_HOP}
                try:
                    answer = proxy._client.request(
                        self.command, self.path, content=body, headers=headers
                    )
                    status, content = answer.status_code, answer.content
                    out_headers = {
                        k: v
                        for k, v in answer.headers.items()
                        if k.lower() not in _HOP_BY_HOP
                        and k.lower() not in ("content-length", "content-encoding")
                    }
                except httpx.HTTPError as exc:
                    status, content, out_headers = (
                        502,
                        str(exc).encode(),
                        {"Content-Type": "text/plain"},
                    )
                proxy._record(
                    Exchange(
                        self.command,
                        self.path,
                        _decode(body),
                        status,
                        _decode(content),
                        dict(self.headers),
                    )
                )
                self.send_response(status)
                for key, value in out_headers.items():
                    self.send_header(key, value)
                self.send_header("Content-Length", str(len(content)))
                self.end_headers()
                self.wfile.write(content)

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _forward

        self._server = ThreadingHTTPServer((LOOPBACK, 0), Handler)
        self._server.daemon_threads = True
        self.url = f"http://{LOOPBACK}:{self._server.server_address[1]}"
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="recording-proxy", daemon=True
        )
        self._thread.start()

    def retarget(self, target: str) -> None:
        """Forward to another server from now on: a redeploy behind a stable URL."""
        old, self._client = (
            self._client,
            httpx.Client(base_url=target, timeout=120.0, trust_env=False),
        )
        self.target = target
        old.close()

    def _record(self, exchange: Exchange) -> None:
        with self._lock:
            self.exchanges.append(exchange)

    def find(self, path: str, action: str | None = None, since: int = 0) -> list[Exchange]:
        """Exchanges on `path` (and with body["action"] == action), from index `since` on."""
        with self._lock:
            found = self.exchanges[since:]
        return [
            e
            for e in found
            if e.path.split("?")[0] == path
            and (
                action is None
                or (isinstance(e.request, dict) and e.request.get("action") == action)
            )
        ]

    def mark(self) -> int:
        """An index to pass as `since`: only what comes after now."""
        with self._lock:
            return len(self.exchanges)

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._client.close()
