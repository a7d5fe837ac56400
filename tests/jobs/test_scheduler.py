"""Submitting apart from running: a submit-only queue (a production web worker) writes and reads
records, one scheduler elsewhere (the supervisor) runs the jobs, and the submit-only side
watches that scheduler's heartbeat. Also the scheduler's graceful stop."""

from __future__ import annotations

import sqlite3
import threading
import time

import pytest
from jobs_harness import Harness, wait_until

from labelbridge.jobs import SCHEDULER_ENV, EmbeddedJobQueue, JobState, open_queue
from labelbridge.jobs._common import pid_alive


def _submit_only(embedded: Harness) -> EmbeddedJobQueue:
    db = embedded.model_dir / "jobs.sqlite3"
    queue = EmbeddedJobQueue(embedded.settings(), db, run_scheduler=False)
    queue.start()  # a no-op: the worker's Backend.start() calls it
    embedded.queues.append(queue)
    return queue


def test_a_submit_only_queue_runs_nothing_and_its_close_fails_nothing(
    embedded: Harness,
) -> None:
    """What a recycled worker does to the job it submitted: nothing."""
    worker = _submit_only(embedded)
    embedded.behave(**{"1": {"hold": True}})
    job = worker.submit(embedded.spec())
    time.sleep(0.3)
    assert worker.get(job.id).state is JobState.queued  # nobody runs it yet
    scheduler = embedded.open()
    pid = embedded.fit_pid()
    worker.close()
    time.sleep(0.3)
    assert pid_alive(pid) and scheduler.get(job.id).state is JobState.started
    embedded.release("1")
    done = embedded.wait_done(scheduler, job.id)
    assert done.state is JobState.finished and done.model_version == "counting-v1"


def test_health_follows_the_scheduler_heartbeat(embedded: Harness) -> None:
    worker = _submit_only(embedded)
    ok, reason = worker.health()
    assert not ok and reason is not None and "never reported" in reason
    scheduler = embedded.open()
    assert worker.health() == (True, None)
    scheduler.close()  # as if it had stopped: its last heartbeat ages
    with sqlite3.connect(embedded.model_dir / "jobs.sqlite3") as conn:
        conn.execute("UPDATE schedulers SET heartbeat=heartbeat-30")
    assert worker.health() == (False, "the job scheduler has not reported for 30 s")


def test_a_live_scheduler_keeps_beating(embedded: Harness) -> None:
    worker = EmbeddedJobQueue(
        embedded.settings(), embedded.model_dir / "jobs.sqlite3", run_scheduler=False
    )
    worker.scheduler_stale_after = 0.5
    embedded.queues.append(worker)
    settings = embedded.settings()
    db = embedded.model_dir / "jobs.sqlite3"
    scheduler = EmbeddedJobQueue(settings, db, poll_interval=0.05, heartbeat_interval=0.1)
    scheduler.start()
    embedded.queues.append(scheduler)
    for _ in range(10):
        time.sleep(0.1)
        assert worker.health() == (True, None)
    scheduler.close()
    wait_until(lambda: not worker.health()[0], 5)


def test_close_with_wait_lets_a_running_job_finish(embedded: Harness) -> None:
    queue = embedded.open()
    embedded.behave(**{"1": {"hold": True}})
    job = queue.submit(embedded.spec())
    embedded.fit_pid()
    assert isinstance(queue, EmbeddedJobQueue)
    closing = threading.Thread(target=queue.close, kwargs={"wait": 20.0})
    closing.start()
    time.sleep(0.5)
    queued = queue.submit(embedded.spec("2"))  # a stopping scheduler claims nothing more
    embedded.release("1")
    closing.join(20)
    assert not closing.is_alive()
    done = queue.get(job.id)
    assert done.state is JobState.finished and done.model_version == "counting-v1"
    assert queue.get(queued.id).state is JobState.queued  # it runs after the next start


def test_close_with_wait_fails_a_job_that_does_not_finish_in_time(embedded: Harness) -> None:
    queue = embedded.open()
    embedded.behave(**{"1": {"hold": True}})
    job = queue.submit(embedded.spec())
    pid = embedded.fit_pid()
    assert isinstance(queue, EmbeddedJobQueue)
    began = time.monotonic()
    queue.close(wait=0.5)
    assert 0.5 <= time.monotonic() - began < 5
    assert not pid_alive(pid)
    failed = queue.get(job.id)
    assert failed.state is JobState.failed
    assert failed.error == (
        "the server stopped during the job "
        "(it was shut down and the job did not finish within 0.5 s)"
    )


def test_open_queue_is_submit_only_when_the_supervisor_says_so(
    embedded: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = embedded.settings()
    monkeypatch.delenv(SCHEDULER_ENV, raising=False)
    opened = [open_queue(settings)]
    monkeypatch.setenv(SCHEDULER_ENV, "external")
    opened += [open_queue(settings), open_queue(settings, run_scheduler=True)]
    embedded.queues.extend(opened)
    assert [getattr(q, "run_scheduler", None) for q in opened] == [True, False, True]
