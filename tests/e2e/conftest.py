"""Fixtures for the real-Label-Studio suite: one Label Studio per session, our backends on demand.

The suite runs by default (compatibility is shown against the real package, not our idea of
it); LABELBRIDGE_SKIP_LABELSTUDIO=1 skips it, e.g. on a machine without PyPI access.
"""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Iterator
from pathlib import Path
from types import FrameType
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from _labelstudio import (
    BackendFactory,
    BackendProcess,
    LabelStudio,
    ensure_label_studio,
    start_backend,
    start_label_studio,
)

SKIP_ENV = "LABELBRIDGE_SKIP_LABELSTUDIO"
ROOT = Path(__file__).resolve().parents[2]


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Skip (not deselect) the labelstudio tests when asked to, so the report says why. Under
    pytest-xdist (--dist loadgroup) they all run in one worker: one Label Studio, not one per
    worker."""
    for item in items:
        if "tests/e2e/" in item.nodeid.replace("\\", "/") or item.nodeid.startswith("e2e/"):
            item.add_marker(pytest.mark.xdist_group("labelstudio"))
    if os.environ.get(SKIP_ENV) != "1":
        return
    skip = pytest.mark.skip(reason=f"{SKIP_ENV}=1: the real Label Studio suite is turned off")
    for item in items:
        if "labelstudio" in item.keywords:
            item.add_marker(skip)


def _sigterm_as_interrupt(signum: int, frame: FrameType | None) -> None:
    """pytest stops the whole run on KeyboardInterrupt, running finalizers on the way out."""
    raise KeyboardInterrupt(f"signal {signum}")


@pytest.fixture(scope="session")
def label_studio() -> Iterator[LabelStudio]:
    """Label Studio 1.23.2 on 127.0.0.1 with a fresh SQLite database and a known token.

    A SIGTERM to pytest becomes KeyboardInterrupt, so the finalizer (and atexit) still
    stop Label Studio; a SIGKILL is covered by the child's parent-death signal.
    """
    exe = ensure_label_studio()
    previous = signal.getsignal(signal.SIGTERM)
    if previous is signal.SIG_DFL:
        signal.signal(signal.SIGTERM, _sigterm_as_interrupt)
    studio = start_label_studio(exe)
    try:
        yield studio
    finally:
        studio.stop()
        if previous is signal.SIG_DFL:
            signal.signal(signal.SIGTERM, signal.SIG_DFL)


@pytest.fixture(scope="module")
def start_our_backend(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BackendFactory]:
    """Start `labelbridge start <dir>` subprocesses; every one is stopped at module end."""
    started: list[BackendProcess] = []

    def factory(backend_dir: Path, **kwargs: Any) -> BackendProcess:
        work = tmp_path_factory.mktemp(f"backend-{backend_dir.name}")
        backend = start_backend(backend_dir, work, **kwargs)
        started.append(backend)
        return backend

    try:
        yield factory
    finally:
        for backend in reversed(started):
            backend.stop()


@pytest.fixture(scope="session")
def sentiment_dir() -> Path:
    """The example backend the suite serves (a text classifier for the sentiment config)."""
    path = ROOT / "examples" / "sentiment"
    if not (path / "model.py").is_file():
        pytest.fail(f"{path}/model.py is missing: the e2e suite serves that example")
    return path
