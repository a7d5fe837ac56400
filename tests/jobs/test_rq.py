"""What only the RQ queue has: Redis being down, no worker listening, `labelbridge worker --burst`."""

from __future__ import annotations

import socket
import subprocess
import time
from pathlib import Path

import pytest
from jobs_harness import REDIS_URL, Harness, labelbridge_command

from labelbridge.errors import QueueUnavailable
from labelbridge.jobs import JobSpec, JobState, open_queue
from labelbridge.jobs.rq import RQJobQueue, mask_url
from labelbridge.settings import Settings


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])  # nothing listens once the socket is closed


def test_unreachable_redis_is_reported_not_fatal(tmp_path: Path) -> None:
    url = f"redis://127.0.0.1:{_closed_port()}/0"
    queue = open_queue(Settings(job_queue="rq", redis_url=url, model_dir=tmp_path))
    assert isinstance(queue, RQJobQueue)
    began = time.monotonic()
    queue.start()  # logs the problem, does not raise: the server keeps serving predictions
    try:
        ok, reason = queue.health()
        assert not ok
        assert reason is not None and reason.startswith(f"Redis at {url} is unreachable: ")
        with pytest.raises(QueueUnavailable, match="is unreachable"):
            queue.submit(JobSpec(project="1", model_ref="/nowhere"))
        with pytest.raises(QueueUnavailable):
            queue.get("nope")
        assert time.monotonic() - began < 3.0  # Label Studio waits 1 s for /health
    finally:
        queue.close()


def test_password_is_masked_in_messages() -> None:
    assert mask_url("redis://:s3cret@redis.local:6380/2") == "redis://:***@redis.local:6380/2"
    assert mask_url("redis://user:s3cret@h/0") == "redis://user:***@h/0"
    assert mask_url(REDIS_URL) == REDIS_URL


def test_health_says_when_no_worker_listens(rq_harness: Harness) -> None:
    queue = open_queue(rq_harness.settings(), rq_harness.backend)
    assert isinstance(queue, RQJobQueue)
    rq_harness.queues.append(queue)
    ok, reason = queue.health()
    assert not ok
    assert reason == (
        f"no worker listens on RQ queue {rq_harness.queue_name!r} at {REDIS_URL}: "
        f"start one with `labelbridge worker {rq_harness.backend}` (a server of several "
        "backends: `labelbridge worker NAME=FOLDER ...`, one pair per backend)"
    )


def test_burst_worker_runs_queued_jobs_and_exits(rq_harness: Harness) -> None:
    queue = RQJobQueue(rq_harness.settings())
    rq_harness.queues.append(queue)
    job = queue.submit(rq_harness.spec())
    assert queue.get(job.id).state is JobState.queued  # no worker yet
    command = [*labelbridge_command(), "worker", str(rq_harness.backend), "--burst"]
    command += ["--redis-url", REDIS_URL, "--queue", rq_harness.queue_name]
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    rq_harness.procs.append(proc)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err.decode()
    done = queue.get(job.id)
    assert done.state is JobState.finished, done.error
    assert rq_harness.store.current_name("1") == done.model_version


def test_worker_exits_with_an_error_when_redis_is_down(tmp_path: Path) -> None:
    url = f"redis://127.0.0.1:{_closed_port()}/0"
    command = [*labelbridge_command(), "worker", str(tmp_path), "--redis-url", url, "--burst"]
    proc = subprocess.run(command, capture_output=True, timeout=30, check=False)
    assert proc.returncode == 1
    assert f"Redis at {url} is unreachable" in proc.stderr.decode()
