"""Helpers for tests (import as `from support import ...`; conftest modules are not importable
by name once several folders have one)."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import uvicorn

ROOT = Path(__file__).resolve().parents[1]
#: CI lays shared/ beside the clone
SHARED = ROOT.parent / "shared"
CAPTURES = SHARED / "protocol" / "label-studio-1.23.2-captures.json"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def serve(app: Any, *, port: int | None = None) -> Iterator[str]:
    """Run an ASGI app under a real uvicorn server in a thread; yield its base URL."""
    port = port or free_port()
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on")
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
