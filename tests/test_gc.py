"""A server worker tunes its garbage collector (labelbridge._gc); an app used in process does
not touch the caller's."""

from __future__ import annotations

import gc
import subprocess
import sys
import textwrap
from pathlib import Path

import httpx

from _backends import Echo
from labelbridge.server import create_app
from labelbridge.service import Backend
from labelbridge.settings import Settings
from support import serve

CHILD = textwrap.dedent(
    """
    import gc, threading, time
    from labelbridge import _gc

    loaded = threading.Event()

    class Metrics:
        def set(self, name, help_text, value):
            print(name, value > 1000)

    class Loading:
        metrics = Metrics()

        def wait_loaded(self, timeout):
            return loaded.wait(timeout)

    default = gc.get_threshold()
    _gc.tune_for_serving([Loading()])
    assert gc.get_threshold() == (_gc.GEN0_THRESHOLD, *default[1:]), gc.get_threshold()
    time.sleep(0.2)
    assert gc.get_freeze_count() == 0  # nothing frozen before the model has loaded
    loaded.set()
    deadline = time.monotonic() + 10
    while gc.get_freeze_count() == 0 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert gc.get_freeze_count() > 1000, gc.get_freeze_count()
    time.sleep(0.2)
    print("ok")
    """
)


def test_a_worker_raises_the_young_threshold_and_freezes_once_loaded() -> None:
    done = subprocess.run(
        [sys.executable, "-c", CHILD], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split("\n")[:2] == ["labelbridge_gc_frozen_objects True", "ok"]


def test_an_app_served_in_process_leaves_the_callers_gc_alone(tmp_path: Path) -> None:
    before = gc.get_threshold()
    backend = Backend(Echo, Settings(model_dir=tmp_path / "m"), model_ref="_backends:Echo")
    with serve(create_app(backend)) as url:
        assert httpx.get(f"{url}/health", timeout=10).status_code == 200
        backend.wait_ready(10)
    assert gc.get_threshold() == before
