"""/health never waits on the job queue: its state comes from a watcher thread, and a queue
that stops answering shows as degraded within seconds while /health stays fast."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import httpx

from _backends import Echo
from labelbridge.jobs import EmbeddedJobQueue
from labelbridge.server import create_app
from labelbridge.service import Backend
from labelbridge.settings import Settings
from support import serve


class HangingQueue(EmbeddedJobQueue):
    """A queue whose health check hangs once `hang` is set (a Redis that stops answering)."""

    def __init__(self, settings: Settings, db_path: Path) -> None:
        super().__init__(settings, db_path)
        self.hang = threading.Event()
        self.release = threading.Event()

    def health(self) -> tuple[bool, str | None]:
        if self.hang.is_set():
            self.release.wait(30)
        return super().health()


def test_a_hanging_queue_never_holds_up_health(tmp_path: Path) -> None:
    settings = Settings(model_dir=tmp_path / "models")
    queue = HangingQueue(settings, tmp_path / "jobs.sqlite3")
    backend = Backend(Echo, settings, model_ref="_backends:Echo", queue=queue)
    with serve(create_app(backend)) as url, httpx.Client(timeout=5) as http:
        assert http.get(f"{url}/health").json()["queue"] == "ok"
        queue.hang.set()
        slowest, answer = 0.0, {}
        deadline = time.monotonic() + 8
        while time.monotonic() < deadline:
            began = time.perf_counter()
            answer = http.get(f"{url}/health").json()
            slowest = max(slowest, time.perf_counter() - began)
            if answer["queue"] == "degraded":
                break
            time.sleep(0.1)
        assert answer["queue"] == "degraded", answer
        assert "did not answer in time" in answer["queue_error"]
        assert slowest < 0.5, f"/health took {slowest:.2f} s"
        queue.release.set()  # it answers again: ok within a look or two
        deadline = time.monotonic() + 5
        while http.get(f"{url}/health").json()["queue"] != "ok":
            assert time.monotonic() < deadline, "the queue's recovery was not seen"
            time.sleep(0.1)
