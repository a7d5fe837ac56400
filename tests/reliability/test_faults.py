"""Faults: Redis going away, a full disk, killed processes, a server restarted mid-job.

Each test starts what it breaks (its own redis-server on a free port, its own tmpfs mount, its
own server processes) and removes it whatever happens.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from reliability_harness import (
    Backend,
    RedisServer,
    Server,
    Worker,
    annotated_tasks,
    children_of,
    running,
    wait_until,
)


def _train(client: httpx.Client, project: str) -> str:
    answer = client.post("/train", json={"project": project, "annotations": annotated_tasks()})
    assert answer.status_code == 201, answer.text
    return str(answer.json()["job"])


def _status(client: httpx.Client, job: str) -> dict[str, Any]:
    answer = client.post("/job_status", json={"job": job})
    assert answer.status_code == 200, answer.text
    return dict(answer.json())


def _wait_done(client: httpx.Client, job: str, timeout: float = 60.0) -> dict[str, Any]:
    found: list[dict[str, Any]] = []

    def done() -> bool:
        found[:] = [_status(client, job)]
        return found[0]["job_status"] in ("finished", "failed", "canceled")

    wait_until(done, timeout, f"job {job} ended")
    return found[0]


def _predicted_label(client: httpx.Client, project: str = "1") -> str:
    answer = client.post("/predict", json={"project": project, "tasks": [{"data": {"text": "x"}}]})
    assert answer.status_code == 200, answer.text
    return str(answer.json()["results"][0]["result"][0]["value"]["choices"][0])


# --- Redis ---------------------------------------------------------------------------------
@pytest.mark.skipif(not RedisServer.available(), reason="redis-server is not installed")
def test_redis_goes_away_and_comes_back(tmp_path: Path) -> None:
    redis = RedisServer(tmp_path).start()
    backend = Backend(tmp_path)
    backend.behave(**{"1": {"hold": True, "label": "Negative"}})
    server = Server(tmp_path, backend, env={"JOB_QUEUE": "rq", "REDIS_URL": redis.url})
    worker = Worker(tmp_path, backend, redis.url)
    try:
        worker.start()
        server.start()
        server.setup_project("1")
        server.setup_project("2")
        with server.client() as client:
            wait_until(lambda: client.get("/health").json()["queue"] == "ok", 30, "queue ok")
            running_job = _train(client, "1")  # holds in fit() until released
            backend.fit_pid("1")
            queued_job = _train(client, "2")  # the only worker is busy: stays queued
            assert _status(client, queued_job)["job_status"] == "queued"

            redis.stop()
            outage = time.monotonic()
            slowest = 0.0

            def degraded() -> bool:
                nonlocal slowest
                began = time.perf_counter()
                health = client.get("/health")
                slowest = max(slowest, time.perf_counter() - began)
                assert health.status_code == 200
                return bool(health.json()["queue"] == "degraded")

            # the queue is looked at once a second, never on the request's way
            wait_until(degraded, 5, "/health reports the queue degraded")
            assert "unreachable" in client.get("/health").json()["queue_error"]
            assert slowest < 0.5, f"/health took {slowest:.2f} s without Redis"
            for _ in range(20):  # predictions do not need Redis
                assert _predicted_label(client, "2") == "Positive"
            refused = client.post("/train", json={"project": "2", "annotations": annotated_tasks()})
            assert refused.status_code == 503 and refused.json()["error"] == "QueueUnavailable"
            assert "start Redis" in refused.json()["fix"]
            time.sleep(max(0.0, 3.0 - (time.monotonic() - outage)))  # a few seconds away

            redis.start()  # same port, same append-only file
            wait_until(lambda: client.get("/health").json()["queue"] == "ok", 30, "queue ok again")
            assert _status(client, queued_job)["job_status"] in ("queued", "started", "finished")
            backend.release("1")
            first = _wait_done(client, running_job)
            second = _wait_done(client, queued_job)
            assert (first["job_status"], second["job_status"]) == ("finished", "finished"), (
                first,
                second,
                worker.output()[-3000:],
            )
            assert _predicted_label(client, "1") == "Negative"  # the new version serves
    finally:
        worker.stop()
        server.stop()
        redis.stop()


# --- a full disk ---------------------------------------------------------------------------
@contextlib.contextmanager
def _tmpfs(path: Path, size: str) -> Iterator[Path]:
    """A small tmpfs of our own: a disk that really fills up (needs root; skips otherwise)."""
    path.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", str(path)],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({done.stderr.strip()}); run the tests as root")
    try:
        yield path
    finally:
        for _ in range(50):
            if (
                subprocess.run(["umount", str(path)], capture_output=True, check=False).returncode
                == 0
            ):
                break
            time.sleep(0.1)
        else:
            subprocess.run(["umount", "-l", str(path)], capture_output=True, check=False)


def _fill(folder: Path) -> Path:
    """Fill the file system of `folder` to the last byte."""
    ballast = folder / "ballast.bin"
    fd = os.open(ballast, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        for size in (1 << 16, 1):  # big blocks, then the last bytes one by one
            with contextlib.suppress(OSError):
                while os.write(fd, b"\0" * size):
                    pass
    finally:
        os.close(fd)
    return ballast


def test_a_full_disk_fails_the_job_cleanly_and_keeps_the_served_version(tmp_path: Path) -> None:
    with _tmpfs(tmp_path / "disk", "4m") as disk:
        backend = Backend(tmp_path)
        backend.behave(**{"1": {"label": "Negative"}})
        server = Server(tmp_path, backend, env={"MODEL_DIR": str(disk / "models")})
        with running(server), server.client() as client:
            server.setup_project("1")
            assert _wait_done(client, _train(client, "1"))["job_status"] == "finished"
            assert _predicted_label(client) == "Negative"

            # 1. fit() writes more than the disk holds
            backend.behave(**{"1": {"label": "Positive", "write_mb": 16}})
            failed = _wait_done(client, _train(client, "1"))
            print("\nfit fills the disk:", failed["job_status"], failed.get("error"))
            assert failed["job_status"] == "failed"
            assert "No space left on device" in failed["error"]
            assert _predicted_label(client) == "Negative"
            assert client.get("/versions", params={"project": "1"}).json()["versions"] == [
                "steady-v1"
            ]
            assert shutil.disk_usage(disk).used < 1 << 20, "the staging folder was left behind"

            # 2. the disk is already full when the job starts
            ballast = _fill(disk)
            answer = client.post("/train", json={"project": "1", "annotations": annotated_tasks()})
            print("train on a full disk:", answer.status_code, answer.text[:300])
            if answer.status_code == 201:
                result = _wait_done(client, answer.json()["job"])
                print("job on a full disk:", result["job_status"], result.get("error"))
                assert result["job_status"] == "failed"
                assert "No space left on device" in (result.get("error") or ""), result
            else:
                assert answer.status_code == 503, answer.text
                assert answer.json()["error"] == "QueueUnavailable"
                assert "disk" in answer.json()["detail"] + answer.json()["fix"]
            assert _predicted_label(client) == "Negative"
            ballast.unlink()
            backend.behave(**{"1": {"label": "Positive"}})
            assert _wait_done(client, _train(client, "1"))["job_status"] == "finished"
            assert _predicted_label(client) == "Positive"


# --- killed processes --------------------------------------------------------------------
def test_a_training_process_killed_by_sigkill_fails_the_job_and_nothing_else(
    tmp_path: Path,
) -> None:
    backend = Backend(tmp_path)
    backend.behave(**{"1": {"label": "Negative"}})
    server = Server(tmp_path, backend)
    with running(server), server.client() as client:
        server.setup_project("1")
        assert _wait_done(client, _train(client, "1"))["job_status"] == "finished"
        (backend.dir / "pids" / "1").unlink()
        backend.behave(**{"1": {"label": "Positive", "hold": True}})
        job = _train(client, "1")
        os.kill(backend.fit_pid("1"), signal.SIGKILL)
        failed = _wait_done(client, job)
        assert failed["job_status"] == "failed"
        assert "killed by SIGKILL" in failed["error"], failed
        assert _predicted_label(client) == "Negative"  # the served version is untouched
        backend.behave(**{"1": {"label": "Positive"}})
        assert _wait_done(client, _train(client, "1"))["job_status"] == "finished"
        assert _predicted_label(client) == "Positive"
        # what the killed process was writing is swept by the next writer
        project = server.model_dir / "projects" / "1"
        assert not list((project / ".staging").iterdir())
        assert not list((project / "versions").glob(".reserved-*"))


def _workers(server: Server) -> list[int]:
    """The production server's worker processes (children of uvicorn's supervisor)."""
    found = []
    for pid in children_of(server.pid):
        with contextlib.suppress(OSError):
            command = Path(f"/proc/{pid}/cmdline").read_bytes()
            if b"multiprocessing" in command and b"resource_tracker" not in command:
                found.append(pid)
    return found


def test_a_killed_server_worker_costs_at_most_its_requests_in_flight(tmp_path: Path) -> None:
    server = Server(tmp_path, Backend(tmp_path), args=("--production", "--workers", "2"))
    with running(server):
        server.setup_project("1")
        wait_until(lambda: len(_workers(server)) == 2, 30, "two workers")
        victim = _workers(server)[0]
        outcomes: list[tuple[float, str]] = []
        stop = threading.Event()

        def hammer() -> None:
            with server.client(timeout=30) as client:
                while not stop.is_set():
                    body = {"project": "1", "tasks": [{"data": {"text": "x", "sleep": 0.05}}]}
                    try:
                        answer = client.post("/predict", json=body)
                        outcome = "ok" if answer.status_code == 200 else str(answer.status_code)
                    except httpx.HTTPError as exc:
                        outcome = type(exc).__name__
                    outcomes.append((time.monotonic(), outcome))

        threads = [threading.Thread(target=hammer) for _ in range(4)]
        for thread in threads:
            thread.start()
        try:
            time.sleep(1.5)
            killed_at = time.monotonic()
            os.kill(victim, signal.SIGKILL)
            time.sleep(4.0)
        finally:
            stop.set()
            for thread in threads:
                thread.join(30)
        failures = [(t - killed_at, o) for t, o in outcomes if o != "ok"]
        after = [o for t, o in outcomes if t > killed_at + 1.0]
        print(f"\n{len(outcomes)} predictions, failed: {failures}")
        # each of the 4 clients had at most one request in flight on the killed worker
        assert len(failures) <= 4, failures
        assert all(-0.1 < delay < 1.0 for delay, _ in failures), failures
        assert after and all(o == "ok" for o in after), "the service stopped answering"
        wait_until(lambda: len(_workers(server)) == 2, 60, "the killed worker replaced")
        with server.client() as client:
            assert _predicted_label(client) == "Positive"


# --- a restart in the middle of a job -----------------------------------------------------
@pytest.mark.parametrize("how", [signal.SIGTERM, signal.SIGKILL], ids=["SIGTERM", "SIGKILL"])
def test_a_server_restarted_during_training_leaves_no_job_started(
    tmp_path: Path, how: signal.Signals
) -> None:
    backend = Backend(tmp_path)
    backend.behave(**{"1": {"hold": True}})
    server = Server(tmp_path, backend)
    with running(server), server.client() as client:
        server.setup_project("1")
        job = _train(client, "1")
        fit_pid = backend.fit_pid("1")
        if how == signal.SIGKILL:
            server.kill()
        else:
            server.stop(signal.SIGTERM)
    wait_until(lambda: not Path(f"/proc/{fit_pid}").exists(), 10, "the training process gone")
    restarted = Server(tmp_path, backend, port=server.port, name="restarted")
    with running(restarted), restarted.client() as client:
        record = _wait_done(client, job, timeout=15)
        print(f"\nafter {how.name}: {record['job_status']}: {record.get('error')}")
        assert record["job_status"] == "failed"
        assert "the server stopped during the job" in record["error"]
        assert client.get("/versions", params={"project": "1"}).json()["versions"] == ["steady-v0"]
        backend.behave(**{"1": {}})
        assert _wait_done(client, _train(client, "1"))["job_status"] == "finished"
