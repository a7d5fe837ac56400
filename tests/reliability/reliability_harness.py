"""Helpers for the reliability tests: a real `labelbridge start` server process, a dedicated
Redis server, and /proc readings (RSS, open descriptors) of a process.

Why a subprocess and not uvicorn in a thread: RSS and file descriptors must be the server's
own, a SIGKILL must hit the server and nothing else, and its log output must be captured
separately from pytest's. Every process started here is stopped by `close()`, whatever
happened; every port is a free loopback port.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[2]
LABELBRIDGE = str(Path(sys.executable).with_name("labelbridge"))
USER, PASSWORD = "annotator", "s3cret-Pa55word-xyz"
TOKEN = "tok-9f8e7d6c5b4a-bearer"

CONFIG = (
    '<View><Text name="text" value="$text"/><Choices name="sentiment" toName="text">'
    '<Choice value="Positive"/><Choice value="Negative"/></Choices></View>'
)

# A model that never raises in predict(): any 5xx the server answers is the server's fault.
# fit() is steered per project by behavior.json (hold until released, sleep, write N MB).
MODEL_PY = """
import json
import os
import time
from pathlib import Path

from labelbridge import Model

HERE = Path(__file__).resolve().parent


def _behavior(project):
    path = HERE / "behavior.json"
    try:
        return json.loads(path.read_text()).get(project, {})
    except (OSError, ValueError):
        return {}


class Steady(Model):
    name = "steady"
    min_annotations = 1

    def load(self, path):
        return json.loads((path / "weights.json").read_text())

    def predict(self, tasks, context):
        delay = max((t["data"].get("sleep", 0) for t in tasks if isinstance(t.get("data"), dict)
                     and isinstance(t["data"].get("sleep", 0), (int, float))), default=0)
        time.sleep(min(max(delay, 0), 5))  # a slow model, on request
        try:
            pick = context.label_config.first("Choices")
            labels = pick.labels
        except Exception:
            return [None for _ in tasks]
        if not labels:
            return [None for _ in tasks]
        state = context.state if isinstance(context.state, dict) else {}
        label = state.get("label") if state.get("label") in labels else labels[0]
        item = {
            "from_name": pick.control.name,
            "to_name": pick.object.name,
            "type": "choices",
            "value": {"choices": [label]},
            "score": 0.5,
        }
        return [{"result": [dict(item)], "score": 0.5} for _ in tasks]

    def fit(self, event, data):
        how = _behavior(data.project)
        (HERE / "pids").mkdir(exist_ok=True)
        (HERE / "pids" / data.project).write_text(str(os.getpid()))
        if how.get("hold"):
            release = HERE / "release" / data.project
            deadline = time.time() + 60
            while not release.exists() and time.time() < deadline:
                time.sleep(0.02)
        time.sleep(how.get("sleep", 0))
        if how.get("fill"):  # fill the disk outside the staging folder, and keep it full
            fd = os.open(how["fill"], os.O_WRONLY | os.O_CREAT, 0o600)
            try:
                for size in (1 << 16, 1):
                    try:
                        while os.write(fd, b"\\0" * size):
                            pass
                    except OSError:
                        pass
            finally:
                os.close(fd)
            raise OSError(28, "No space left on device (filled on purpose)")
        if how.get("write_mb"):
            with open(data.output_dir / "blob.bin", "wb") as handle:
                for _ in range(how["write_mb"]):
                    handle.write(os.urandom(1 << 20))
        label = how.get("label", "Negative")
        (data.output_dir / "weights.json").write_text(json.dumps({"label": label}))
        return {"score": 0.5, "n": data.annotation_count}
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def basic_header(user: str = USER, password: str = PASSWORD) -> dict[str, str]:
    raw = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"Authorization": f"Basic {raw}"}


def rss_mb(pid: int) -> float:
    """Resident memory of a process (VmRSS), in MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError(f"no VmRSS for process {pid}")


def fd_count(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def children_of(pid: int) -> list[int]:
    """Direct children of a process (from /proc/<pid>/task/*/children)."""
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(OSError):
            found += [int(p) for p in (task / "children").read_text().split()]
    return found


def session_pids(sid: int) -> list[int]:
    """Every live process of a session (the server, its workers, its job processes)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        with contextlib.suppress(OSError, IndexError, ValueError):
            fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
            if int(fields[3]) == sid and fields[0] != "Z":
                found.append(int(entry))
    return found


def wait_until(predicate: Callable[[], Any], timeout: float, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not met within {timeout} s")
        time.sleep(0.05)


def annotated_tasks(count: int = 3) -> list[dict[str, Any]]:
    value = {"choices": ["Positive"]}
    result = [{"from_name": "sentiment", "to_name": "text", "type": "choices", "value": value}]
    return [
        {"id": i, "data": {"text": f"t{i}"}, "annotations": [{"id": i, "result": result}]}
        for i in range(1, count + 1)
    ]


class Backend:
    """A backend folder with the Steady model, and a way to steer its fit()."""

    def __init__(self, root: Path) -> None:
        self.dir = root / "backend"
        self.dir.mkdir(parents=True, exist_ok=True)
        (self.dir / "model.py").write_text(MODEL_PY)

    def behave(self, **projects: dict[str, Any]) -> None:
        (self.dir / "behavior.json").write_text(json.dumps(projects))
        shutil.rmtree(self.dir / "release", ignore_errors=True)

    def release(self, project: str) -> None:
        (self.dir / "release").mkdir(exist_ok=True)
        (self.dir / "release" / project).touch()

    def fit_pid(self, project: str, timeout: float = 20.0) -> int:
        path = self.dir / "pids" / project
        wait_until(lambda: path.exists() and path.read_text().strip(), timeout, "fit() started")
        return int(path.read_text())


class Server:
    """`labelbridge start` in its own session, output in a log file."""

    def __init__(
        self,
        root: Path,
        backend: Backend,
        *,
        env: dict[str, str] | None = None,
        args: tuple[str, ...] = (),
        port: int | None = None,
        name: str = "server",
    ) -> None:
        self.root = root
        self.backend = backend
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.model_dir = root / "models"
        self.log_path = root / f"{name}.out"
        self.env = {
            **os.environ,
            "MODEL_DIR": str(self.model_dir),
            "LOG_DIR": str(root / "logs"),
            "TRAIN_ON_ANNOTATIONS": "off",
            "PYTHONUNBUFFERED": "1",
            **(env or {}),
        }
        self.args = args
        self.proc: subprocess.Popen[bytes] | None = None
        self.headers: dict[str, str] = {}
        if self.env.get("BASIC_AUTH_USER"):
            self.headers = basic_header(
                self.env["BASIC_AUTH_USER"], self.env.get("BASIC_AUTH_PASS", "")
            )

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(self, timeout: float = 30.0, until: str = "ready") -> Server:
        """Start, and wait until /health reports the model state `until`."""
        command = [
            LABELBRIDGE,
            "start",
            str(self.backend.dir),
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            *self.args,
        ]
        with self.log_path.open("ab") as out:
            self.proc = subprocess.Popen(
                command,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout
        while True:
            with contextlib.suppress(httpx.HTTPError, ValueError, KeyError):
                body = httpx.get(f"{self.url}/health", timeout=1).json()
                if body["model_state"] == until:
                    return self
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"the server did not become ready:\n{self.output()}")
            time.sleep(0.05)

    def output(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def client(self, timeout: float = 30.0, **kwargs: Any) -> httpx.Client:
        return httpx.Client(base_url=self.url, headers=self.headers, timeout=timeout, **kwargs)

    def setup_project(self, project: str = "1", config: str = CONFIG) -> None:
        with self.client() as client:
            answer = client.post(
                "/setup", json={"project": f"{project}.1700000000", "schema": config}
            )
            assert answer.status_code == 200, answer.text

    def rss_mb(self) -> float:
        return rss_mb(self.pid)

    def fds(self) -> int:
        return fd_count(self.pid)

    def stop(self, sig: int = signal.SIGTERM, grace: float = 15.0) -> None:
        """Stop the server; SIGKILL whatever of its session is left after the grace period."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, sig)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(grace)
        for pid in session_pids(self.proc.pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def kill(self) -> None:
        """SIGKILL the server process alone (its job processes die with it: PDEATHSIG)."""
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)


class Worker:
    """`labelbridge worker` (RQ) for a backend, in its own session, output in a log file."""

    def __init__(self, root: Path, backend: Backend, redis_url: str) -> None:
        self.log_path = root / "worker.out"
        self.command = [LABELBRIDGE, "worker", str(backend.dir), "--redis-url", redis_url]
        self.env = {**os.environ, "MODEL_DIR": str(root / "models"), "LOG_DIR": str(root / "logs")}
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Worker:
        with self.log_path.open("ab") as out:
            self.proc = subprocess.Popen(
                self.command,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        return self

    def output(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(10)
        for pid in session_pids(self.proc.pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


class RedisServer:
    """A Redis of our own on a free port, to stop and start during a test."""

    def __init__(self, root: Path) -> None:
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.dir = root / "redis"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.proc: subprocess.Popen[bytes] | None = None

    @staticmethod
    def available() -> bool:
        return shutil.which("redis-server") is not None

    def start(self) -> RedisServer:
        # appendonly: what was queued before a stop is there after the restart
        self.proc = subprocess.Popen(
            [
                "redis-server",
                "--bind",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--save",
                "",
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
                "--dir",
                str(self.dir),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        from redis import Redis

        def up() -> bool:
            try:
                return bool(Redis.from_url(self.url, socket_connect_timeout=0.2).ping())
            except Exception:
                return False

        wait_until(up, 10, "redis-server answering")
        return self

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.proc = None


@contextlib.contextmanager
def running(server: Server) -> Iterator[Server]:
    try:
        yield server.start()
    finally:
        server.stop()
