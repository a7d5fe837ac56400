"""What only the embedded queue has: records in SQLite across restarts, crash recovery,
shutdown, a memory limit, and the inline mode."""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import sys
import time

from jobs_harness import Harness, annotated_tasks, stop_process_tree, wait_until

from labelbridge.jobs import EmbeddedJobQueue, JobState
from labelbridge.jobs._common import pid_alive

# A server process that queues a job and then lives until it is killed.
SERVER = """
import json, sys, time
from pathlib import Path
from labelbridge.jobs import EmbeddedJobQueue, JobSpec
from labelbridge.settings import Settings
db, backend, tasks = Path(sys.argv[1]), sys.argv[2], json.loads(sys.argv[3])
queue = EmbeddedJobQueue(Settings(model_dir=db.parent), db, poll_interval=0.05)
queue.start()
print(queue.submit(JobSpec(project="1", model_ref=backend, tasks=tasks)).id, flush=True)
time.sleep(120)
"""


def test_records_survive_reopening(embedded: Harness) -> None:
    queue = embedded.open()
    embedded.behave(**{"1": {"raise": True}})
    failed = embedded.wait_done(queue, queue.submit(embedded.spec()).id)
    embedded.behave()
    done = embedded.wait_done(queue, queue.submit(embedded.spec()).id)
    queue.close()

    reopened = EmbeddedJobQueue(embedded.settings(), embedded.model_dir / "jobs.sqlite3")
    try:
        assert reopened.get(done.id) == done
        again = reopened.get(failed.id)
        assert again.state is JobState.failed and again.traceback == failed.traceback
        assert [r.id for r in reopened.list()] == [done.id, failed.id]
    finally:
        reopened.close()


def test_a_job_left_started_by_a_killed_server_is_failed_on_start(embedded: Harness) -> None:
    embedded.behave(**{"1": {"hold": True}})
    db = embedded.model_dir / "jobs.sqlite3"
    tasks = json.dumps(annotated_tasks())
    server = subprocess.Popen(
        [sys.executable, "-c", SERVER, str(db), str(embedded.backend), tasks],
        stdout=subprocess.PIPE,
        start_new_session=True,
    )
    try:
        assert server.stdout is not None
        job_id = server.stdout.readline().decode().strip()
        training_pid = embedded.fit_pid()
        reader = EmbeddedJobQueue(embedded.settings(), db)  # not started: only reads
        assert reader.get(job_id).state is JobState.started
        server.send_signal(signal.SIGKILL)
        server.wait(5)
        # the training process dies with its server: it can never publish later
        wait_until(lambda: not pid_alive(training_pid), 5)
        assert reader.get(job_id).state is JobState.started  # nobody has looked yet
        reader.close()
    finally:
        stop_process_tree(server)

    queue = embedded.open()
    failed = queue.get(job_id)
    assert failed.state is JobState.failed
    assert failed.error is not None and failed.error.startswith("the server stopped during the job")
    assert embedded.store.current_name("1") is None
    embedded.behave()
    retry = embedded.wait_done(queue, queue.submit(embedded.spec()).id)
    assert retry.state is JobState.finished, retry.error


def test_a_stale_job_of_another_host_is_failed(embedded: Harness) -> None:
    db = embedded.model_dir / "jobs.sqlite3"
    setup = EmbeddedJobQueue(embedded.settings(), db)
    job_id = setup.submit(embedded.spec(), delay=3600).id
    setup.close()
    with sqlite3.connect(db) as conn:
        conn.execute(
            "UPDATE jobs SET state='started', owner='elsewhere:123:abcd', heartbeat=? WHERE id=?",
            (time.time() - 3600, job_id),
        )
    queue = embedded.open()
    failed = queue.get(job_id)
    assert failed.state is JobState.failed
    assert (
        failed.error == "the server stopped during the job (no heartbeat from elsewhere for 60 s)"
    )


def test_close_stops_a_running_job_and_fails_it(embedded: Harness) -> None:
    queue = embedded.open()
    embedded.behave(**{"1": {"hold": True}})
    job = queue.submit(embedded.spec())
    pid = embedded.fit_pid()
    queue.close()
    assert not pid_alive(pid)
    record = queue.get(job.id)
    assert record.state is JobState.failed
    assert record.error == "the server stopped during the job (it was shut down)"
    # SIGTERM let the store discard the half-written version
    assert list((embedded.model_dir / "projects" / "1" / ".staging").iterdir()) == []


def test_memory_limit_fails_with_a_clear_error(embedded: Harness) -> None:
    queue = embedded.open(job_memory_limit_mb=300)
    embedded.behave(**{"1": {"allocate_mb": 600}})
    failed = embedded.wait_done(queue, queue.submit(embedded.spec()).id)
    assert failed.state is JobState.failed
    assert failed.error is not None and failed.error.startswith("MemoryError")
    assert "ran out of memory (JOB_MEMORY_LIMIT_MB=300)" in failed.error
    assert embedded.store.current_name("1") is None


def test_inline_mode_runs_the_job_in_submit(embedded: Harness) -> None:
    queue = EmbeddedJobQueue(embedded.settings(), embedded.model_dir / "jobs.sqlite3", inline=True)
    try:
        queue.start()
        assert queue.health() == (True, None)
        done = queue.submit(embedded.spec())
        assert done.state is JobState.finished and done.model_version == "counting-v1"
        embedded.behave(**{"1": {"raise": True}})
        failed = queue.submit(embedded.spec())
        assert failed.state is JobState.failed
        assert failed.error == "ValueError: boom: the model could not learn"
        assert failed.traceback is not None and "boom" in failed.traceback
        assert embedded.store.current_name("1") == "counting-v1"
    finally:
        queue.close()


def test_health_reports_a_stopped_scheduler(embedded: Harness) -> None:
    queue = embedded.open()
    assert queue.health() == (True, None)
    queue.close()
    ok, reason = queue.health()
    assert not ok and reason == "the embedded job scheduler is not running"
