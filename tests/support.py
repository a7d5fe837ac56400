"""Helpers for tests (import as `from support import ...`; conftest modules are not importable
by name once several folders have one)."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import uvicorn

ROOT = Path(__file__).resolve().parents[1]
#: CI lays shared/ beside the clone
SHARED = ROOT.parent / "shared"
CAPTURES = SHARED / "protocol" / "label-studio-1.23.2-captures.json"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


#: the HTTP protocol `labelbridge start` runs (labelbridge._http), so every served test meets it
SERVER_PROTOCOL = "labelbridge._http:PredictProtocol"


@contextmanager
def serve(app: Any, *, port: int | None = None, http: str = SERVER_PROTOCOL) -> Iterator[str]:
    """Run an ASGI app under a real uvicorn server in a thread; yield its base URL."""
    port = port or free_port()
    config = uvicorn.Config(
        app, host="127.0.0.1", port=port, log_level="warning", lifespan="on", http=http
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("test server did not start")
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)


def captured_request(captures: dict[str, Any], step: str, path: str) -> dict[str, Any]:
    """The body of the first request Label Studio sent to `path` during `step`."""
    for request in captures[step]["requests_to_ml_backend"]:
        if request["path"] == path:
            return dict(request["body"])
    raise KeyError(f"{step} sent no request to {path}")


LABELBRIDGE = str(Path(sys.executable).with_name("labelbridge"))


def backend_environment(tmp: Path, extra: dict[str, str] | None = None) -> dict[str, str]:
    """This environment without any labelbridge setting a developer may have exported, for a
    backend process under test: its folders in `tmp`, the embedded queue, debug validation."""
    from labelbridge.settings import Settings

    names = {name.upper() for name in Settings.model_fields}
    env = {k: v for k, v in os.environ.items() if k.upper() not in names}
    env.update(
        MODEL_DIR=str(tmp / "models"),
        LOG_DIR=str(tmp / "logs"),
        JOB_QUEUE="embedded",
        DEBUG="true",  # an invalid predicted item is an error, not silently dropped
        TRAIN_ON_ANNOTATIONS="off",
        PYTHONUNBUFFERED="1",
        HF_HUB_OFFLINE="1",
        NO_PROXY="127.0.0.1,localhost",
    )
    env.update(extra or {})
    return env


def wait_until_ready(
    url: str, process: subprocess.Popen[Any], *, timeout: float = 30.0, path: str = "/health"
) -> str | None:
    """Poll `url + path` until the model is ready. None when it is, else why not (the server
    exited, the model failed, or the time ran out)."""
    deadline = time.monotonic() + timeout
    state = None
    while True:
        if process.poll() is not None:
            return f"the server exited with code {process.returncode}"
        try:
            state = httpx.get(url + path, timeout=2, trust_env=False).json().get("model_state")
        except (httpx.HTTPError, ValueError):
            state = None
        if state == "ready":
            return None
        if state == "failed" or time.monotonic() > deadline:
            return f"the model did not get ready (state {state!r})"
        time.sleep(0.05)


def stop_group(process: subprocess.Popen[Any], timeout: float = 15.0) -> None:
    """SIGTERM the process group, then SIGKILL it if it does not stop in time."""
    if process.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()


class Started:
    """A `labelbridge start` process: its URL, the process, and the file its output goes to."""

    def __init__(self, url: str, process: subprocess.Popen[bytes], log: Path) -> None:
        self.url, self.process, self.log = url, process, log

    def output(self) -> str:
        return self.log.read_text(errors="replace")


@contextmanager
def labelbridge_start(
    *args: str, tmp: Path, env: dict[str, str] | None = None, health: str = "/health"
) -> Iterator[Started]:
    """`labelbridge start ARGS` on a free loopback port, in its own process group, with
    MODEL_DIR and LOG_DIR under `tmp` and its output in a file (a pipe nobody reads would fill
    and block the server); yields once the model is ready, stops the group at the end."""
    port = free_port()
    log = tmp / f"labelbridge-{port}.log"
    environment = {**os.environ, "MODEL_DIR": str(tmp / "models"), "LOG_DIR": str(tmp / "logs")}
    with log.open("wb") as out:
        process = subprocess.Popen(
            [LABELBRIDGE, "start", *args, "--host", "127.0.0.1", "--port", str(port)],
            env={**environment, **(env or {})},
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    started = Started(f"http://127.0.0.1:{port}", process, log)
    try:
        problem = wait_until_ready(started.url, process, path=health)
        if problem:
            stop_group(process)
            raise AssertionError(f"{problem}:\n{started.output()[-3000:]}")
        yield started
    finally:
        stop_group(process)
