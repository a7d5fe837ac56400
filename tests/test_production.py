"""Production serving: several workers, graceful shutdown, replaced workers, job claims.

The server tests start `labelbridge start BACKEND --production --workers 2` as a subprocess.
Training there runs in the supervisor's one job scheduler: it survives recycled and killed
workers, and /health tells when that scheduler goes quiet. Jobs submitted through several
workers (once each, JOB_WORKERS overall) are in test_logs.py, which trains on such a server."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import sqlite3
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from _serving import CONFIG, Server, make_backend, running
from labelbridge.jobs import EmbeddedJobQueue, JobSpec
from labelbridge.settings import Settings
from labelbridge.store import LocalModelStore

pytestmark = pytest.mark.timeout(120)

PROD = ("--production", "--workers", "2")


def _setup(url: str) -> None:
    answer = httpx.post(f"{url}/setup", json={"project": "1.1", "schema": CONFIG}, timeout=5)
    assert answer.status_code == 200, answer.text


def test_sigterm_finishes_requests_in_flight(tmp_path: Path) -> None:
    backend = make_backend(tmp_path / "b")
    with running(backend, *PROD, env={"GRACEFUL_TIMEOUT": "15"}) as server:
        _setup(server.url)
        # the model takes 1 s per call from the start: had it been measured fast first, the
        # first slow call would run inline and hold the worker's event loop, and uvicorn's
        # shutdown closes the connections it has not read yet (a reset, not a graceful end)
        for _ in range(2):
            assert server.predict(sleep=1.0).status_code == 200
        results: list[Any] = []

        def slow(index: int) -> None:
            try:
                # a new connection per request, so that both workers get some
                answer = server.predict(sleep=1.0, n=index)
                results.append(answer.status_code)
            except httpx.HTTPError as exc:
                results.append(repr(exc))

        threads = [threading.Thread(target=slow, args=(i,)) for i in range(6)]
        for thread in threads:
            thread.start()
        time.sleep(0.4)  # every request is sent and being served (predict sleeps 1 s)
        began = time.monotonic()
        os.kill(server.proc.pid, signal.SIGTERM)
        for thread in threads:
            thread.join(20)
        assert results == [200] * 6, results
        assert server.proc.wait(20) == 0
        assert time.monotonic() - began < 10
        with pytest.raises(httpx.ConnectError):
            httpx.get(f"{server.url}/health", timeout=1)
        log = (backend / "logs" / "uwsgi.log").read_text()
        assert "Received SIGTERM" in log and "Finished server process" in log


def test_killed_and_recycled_workers_are_replaced_with_their_model_loaded(
    tmp_path: Path,
) -> None:
    """SIGKILL one worker, and let MAX_REQUESTS recycle the others, under steady traffic: every
    request gets a prediction. setup() takes 1 s and MODEL_LOAD_WAIT is tiny, so a request
    that reached a worker whose model is still loading would get a 503 at once."""
    backend = make_backend(tmp_path / "b")
    env = {"SLEEPY_SETUP": "1.0", "MODEL_LOAD_WAIT": "0.05", "MAX_REQUESTS": "30"}
    with running(backend, *PROD, env=env, ready=False) as server:
        # /health answers JSON while the first load runs: Label Studio must not see Disconnected
        first = httpx.get(f"{server.url}/health", timeout=1).json()
        assert first["status"] == "UP" and first["model_state"] in ("loading", "ready")
        deadline = time.monotonic() + 20
        while len(server.workers()) < 2 or any(
            httpx.get(f"{server.url}/health", timeout=1).json()["model_state"] != "ready"
            for _ in range(6)
        ):
            assert time.monotonic() < deadline, server.out()
            time.sleep(0.2)
        time.sleep(0.3)
        _setup(server.url)
        before = server.workers()
        victim = min(before)
        os.kill(victim, signal.SIGKILL)
        answers: list[tuple[int, int | None]] = []
        stop = threading.Event()

        def hammer() -> None:
            while not stop.is_set():
                answer = server.predict()
                ok = answer.status_code == 200
                answers.append(
                    (answer.status_code, answer.json()["results"][0]["worker"] if ok else None)
                )

        log = backend / "logs" / "uwsgi.log"
        with ThreadPoolExecutor(4) as pool:
            for _ in range(4):
                pool.submit(hammer)
            deadline = time.monotonic() + 30
            while (
                len({w for _, w in answers} - before) < 2
                or "Maximum request" not in log.read_text()
            ):
                assert time.monotonic() < deadline, f"no replacement answered:\n{server.out()}"
                time.sleep(0.1)
            stop.set()
        assert {code for code, _ in answers} == {200}, [a for a in answers if a[0] != 200][:5]
        served_by = {w for _, w in answers}
        assert victim not in served_by and len(served_by - before) >= 2
        assert victim not in server.workers()
        text = log.read_text()
        assert f"Child process [{victim}] died" in text
        assert re.search(r"Maximum request limit of 3[0-3] exceeded", text)  # 30 + jitter
        # /metrics sums all workers, recycled ones included: every prediction is counted once
        time.sleep(1.5)  # live workers write their snapshot once a second
        metrics = httpx.get(f"{server.url}/metrics", timeout=5).text
        assert f"labelbridge_predictions_total {len(answers)}\n" in metrics, metrics
        loads = re.findall(r'labelbridge_model_load_seconds\{worker="(\d+)"\} ([\d.e-]+)', metrics)
        # gauges: one per live worker (the set shifts while workers recycle), none for the dead
        assert loads and victim not in {int(pid) for pid, _ in loads}
        assert all(float(seconds) >= 1.0 for _, seconds in loads)


def test_claims_are_atomic_between_queues_sharing_one_database(tmp_path: Path) -> None:
    """Two processes' queues race to claim: each job is claimed once, never more than
    JOB_WORKERS at a time overall. (The scheduler is not started: we drive the claims.)"""
    settings = Settings(model_dir=tmp_path / "models", job_workers=2)
    db = tmp_path / "models" / "jobs.sqlite3"
    queues = [EmbeddedJobQueue(settings, db) for _ in range(2)]
    for project in range(10):
        queues[project % 2].submit(JobSpec(project=str(project), model_ref="x"))
    claimed: list[str] = []
    lock = threading.Lock()
    barrier = threading.Barrier(8)

    def claim(queue: EmbeddedJobQueue) -> None:
        barrier.wait()
        for _ in range(5):
            result = queue._claim_next()
            if result is not None:
                with lock:
                    claimed.append(result[0])

    threads = [threading.Thread(target=claim, args=(queues[i % 2],)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert len(claimed) == 2 and len(set(claimed)) == 2
    started = [r for r in queues[0].list() if r.state.value == "started"]
    assert {r.id for r in started} == set(claimed)
    for queue in queues:
        queue.close()


def test_shared_metrics_keep_the_counts_of_dead_workers(tmp_path: Path) -> None:
    """What a scrape sums: live workers' snapshots, plus an archive of dead workers' counts
    (so counters never go down), gauges only for live workers."""
    from labelbridge.metrics import Metrics, SharedMetrics

    dead = Metrics()
    dead.inc("labelbridge_predictions_total", "Tasks predicted.", 5)
    dead.set("labelbridge_model_load_seconds", "Time setup() took.", 2.0)
    dead.observe("labelbridge_request_seconds", "Latency.", 0.2, route="/predict")
    (tmp_path / "4194999.json").write_text(json.dumps(dead.snapshot()))  # above pid_max
    mine = Metrics()
    mine.inc("labelbridge_predictions_total", "Tasks predicted.", 2)
    shared = SharedMetrics(tmp_path, mine)
    for _ in range(2):  # the second scrape reads the archive, not the dead worker's file
        text = shared.collect().render()
        assert "labelbridge_predictions_total 7\n" in text
        assert 'labelbridge_request_seconds_count{route="/predict"} 1' in text
        assert "4194999" not in text  # a dead worker's gauge is gone
    assert not (tmp_path / "4194999.json").exists()
    shared.stop()
    assert json.loads((tmp_path / f"{os.getpid()}.json").read_text())["counters"]


# --- training in production: one scheduler in the supervisor, not in the web workers -------
#: fit() takes 5 s
TRAINING_ENV = {"SLEEPY_FIT": "5"}


def _ppid(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])


def _job_processes(server: Server) -> dict[int, int]:
    """{pid: parent pid} of the training processes started by this server's processes."""
    ours = {server.proc.pid, *server.workers()}
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if b"labelbridge.jobs._child" not in (entry / "cmdline").read_bytes():
                continue
            parent = _ppid(int(entry.name))
        except (OSError, IndexError, ValueError):
            continue
        if parent in ours:
            found[int(entry.name)] = parent
    return found


def _start_training(server: Server) -> tuple[str, int]:
    """Set up, train, and wait for the job's process: (job id, its pid). It must be a child of
    the supervisor, never of a web worker."""
    _setup(server.url)
    job = server.train(3)
    deadline = time.monotonic() + 10
    while not (children := _job_processes(server)):
        assert time.monotonic() < deadline, f"no training process:\n{server.out()}"
        time.sleep(0.05)
    assert list(children.values()) == [server.proc.pid], children
    status = httpx.post(f"{server.url}/job_status", json={"job": job}, timeout=5).json()
    assert status["job_status"] == "started", status
    return job, next(iter(children))


def _job_row(backend: Path, job: str) -> tuple[str, str | None, str | None]:
    """(state, model_version, error) from the database: no HTTP, which waits while no worker
    accepts (uvicorn may take ~5 s to see that a worker is gone and replace it)."""
    with sqlite3.connect(backend / "models" / "jobs.sqlite3") as conn:
        row = conn.execute(
            "SELECT state, model_version, error FROM jobs WHERE id=?", (job,)
        ).fetchone()
    return row[0], row[1], row[2]


def _assert_published(backend: Path, job: str) -> None:
    deadline = time.monotonic() + 20
    while (row := _job_row(backend, job))[0] == "started":
        assert time.monotonic() < deadline, "the job did not finish"
        time.sleep(0.1)
    assert row == ("finished", "sleepy-v1", None), row
    assert LocalModelStore(backend / "models").current_name("1") == "sleepy-v1"


def test_training_survives_recycled_workers(tmp_path: Path) -> None:
    """Both workers reach MAX_REQUESTS and shut down (their queues closed) while fit() runs."""
    backend = make_backend(tmp_path / "b")
    env = {**TRAINING_ENV, "MAX_REQUESTS": "20"}  # + up to 2 of jitter
    with running(backend, *PROD, env=env) as server:
        deadline = time.monotonic() + 20
        while len(before := server.workers()) < 2:
            assert time.monotonic() < deadline, server.out()
            time.sleep(0.1)
        job, pid = _start_training(server)
        log = backend / "logs" / "uwsgi.log"

        def logged(what: str) -> bool:
            text = log.read_text()
            return all(f"[{worker}] uvicorn.error: {what}" in text for worker in before)

        while not logged("Maximum request limit"):  # ~45 requests, one connection each
            assert time.monotonic() < deadline, server.out()
            # both stopped: none accepts; a connection queued on a worker that exits is reset
            with contextlib.suppress(httpx.TimeoutException, httpx.TransportError):
                httpx.post(
                    f"{server.url}/predict",
                    json={"project": "1.1", "tasks": [{"data": {"text": "hi"}}]},
                    timeout=1,
                )
        while not logged("Finished server process"):
            assert time.monotonic() < deadline, server.out()
            time.sleep(0.05)
        assert _job_row(backend, job)[0] == "started" and Path(f"/proc/{pid}").exists()
        _assert_published(backend, job)


def test_training_survives_killed_workers(tmp_path: Path) -> None:
    backend = make_backend(tmp_path / "b")
    with running(backend, *PROD, env=TRAINING_ENV) as server:
        job, pid = _start_training(server)
        victims = server.workers()
        assert victims
        for victim in victims:
            os.kill(victim, signal.SIGKILL)
        time.sleep(1.0)
        assert Path(f"/proc/{pid}").exists() and _ppid(pid) == server.proc.pid
        _assert_published(backend, job)
        assert not victims & server.workers()


def test_health_reports_a_silent_scheduler(tmp_path: Path) -> None:
    """The supervisor (and so its scheduler) stopped with SIGSTOP: the web workers go on
    serving, and once the scheduler's heartbeat is older than 10 s (backdated here rather than
    waited for), /health says the queue is degraded; SIGCONT and it recovers."""
    backend = make_backend(tmp_path / "b")
    with running(backend, *PROD) as server:
        health = httpx.get(f"{server.url}/health", timeout=5).json()
        assert health["queue"] == "ok", health
        db = backend / "models" / "jobs.sqlite3"
        try:
            for _ in range(50):  # not while it holds the write lock (a claim every 0.1 s)
                os.kill(server.proc.pid, signal.SIGSTOP)
                try:
                    with sqlite3.connect(db, timeout=0.2) as conn:
                        conn.execute("UPDATE schedulers SET heartbeat=heartbeat-60")
                    break
                except sqlite3.OperationalError:
                    os.kill(server.proc.pid, signal.SIGCONT)
                    time.sleep(0.02)
            else:
                raise AssertionError("the job database stayed locked")
            deadline = time.monotonic() + 5  # the queue is looked at once a second
            while True:
                health = httpx.get(f"{server.url}/health", timeout=5).json()
                if health["queue"] == "degraded" or time.monotonic() > deadline:
                    break
                time.sleep(0.1)
            assert health["queue"] == "degraded", health
            assert health["queue_error"].startswith("the job scheduler has not reported for 6")
            _setup(server.url)
            assert server.predict().status_code == 200  # web traffic does not need it
        finally:
            os.kill(server.proc.pid, signal.SIGCONT)
        deadline = time.monotonic() + 10
        while httpx.get(f"{server.url}/health", timeout=5).json()["queue"] != "ok":
            assert time.monotonic() < deadline, server.out()
            time.sleep(0.2)


def test_the_supervisor_schedules_every_database_the_workers_submit_to(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Several backends (each its own queue): the workers' app, built from the CLI's spec, sees
    a live scheduler on each of its queues once the supervisor has started them."""
    from fastapi.testclient import TestClient

    from labelbridge.cli.start import SERVE_ENV, _start_schedulers, _stop_schedulers
    from labelbridge.jobs import SCHEDULER_ENV
    from labelbridge.server import app_from_env

    backend = make_backend(tmp_path / "b")
    overrides = {"model_dir": str(tmp_path / "models"), "log_dir": str(tmp_path / "logs")}
    spec = {
        "target": str(backend),
        "backends": {"ner": str(backend), "sentiment": str(backend)},
        "backend_dir": str(backend),
        "class_name": None,
        "overrides": overrides,
    }
    monkeypatch.setenv(SERVE_ENV, json.dumps(spec))
    monkeypatch.setenv(SCHEDULER_ENV, "external")
    worker = TestClient(app_from_env())  # no lifespan: nothing starts in this "worker"

    def queues() -> dict[str, str]:
        backends = worker.get("/health").json()["backends"]
        return {name: state["queue"] for name, state in backends.items()}

    assert queues() == {"ner": "degraded", "sentiment": "degraded"}
    schedulers = _start_schedulers(Settings(**overrides))
    try:
        assert len(schedulers) == 2
        deadline = time.monotonic() + 6  # /health reports the queue as last looked at
        while queues() != {"ner": "ok", "sentiment": "ok"} and time.monotonic() < deadline:
            time.sleep(0.2)
        assert queues() == {"ner": "ok", "sentiment": "ok"}
    finally:
        _stop_schedulers(schedulers, 0.0)
