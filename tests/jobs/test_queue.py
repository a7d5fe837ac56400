"""One set of job-queue tests, run against the embedded queue and against RQ + a real worker."""

from __future__ import annotations

import os
import re
import signal
import time

from jobs_harness import Harness, annotated_tasks

from labelbridge.jobs import JobState


def test_lifecycle_publishes_only_when_finished(harness: Harness) -> None:
    queue = harness.open()
    harness.behave(**{"1": {"hold": True}})
    submitted = queue.submit(harness.spec())
    assert submitted.state in (JobState.queued, JobState.started)  # a fast worker may have it
    assert queue.get(submitted.id).state in (JobState.queued, JobState.started)

    running = harness.wait_state(queue, submitted.id, {JobState.started})
    assert running.started_at is not None and running.finished_at is None
    assert harness.store.current_name("1") is None  # nothing is served while fit() runs

    harness.release("1")
    done = harness.wait_done(queue, submitted.id)
    assert done.state is JobState.finished, done.error
    assert done.model_version == "counting-v1"
    metrics = {"score": 0.75, "trained_on": 3}
    assert done.result == {"model_version": "counting-v1", "metrics": metrics}
    assert done.error is None and done.traceback is None
    assert harness.store.current_name("1") == "counting-v1"
    meta = harness.store.current("1")
    assert meta is not None and meta.job == submitted.id and "weights.txt" in meta.files
    assert [r.id for r in queue.list("1")] == [submitted.id]
    status = queue.get(submitted.id).to_status()
    assert status.job_status is JobState.finished and status.model_version == "counting-v1"


def test_fit_error_fails_with_traceback_and_keeps_the_served_version(harness: Harness) -> None:
    queue = harness.open()
    first = harness.wait_done(queue, queue.submit(harness.spec()).id)
    assert first.state is JobState.finished, first.error

    harness.behave(**{"1": {"raise": True}})
    failed = harness.wait_done(queue, queue.submit(harness.spec()).id)
    assert failed.state is JobState.failed
    assert failed.error == "ValueError: boom: the model could not learn"
    assert failed.traceback is not None
    assert failed.traceback.startswith("Traceback (most recent call last)")
    assert "in fit" in failed.traceback and "boom" in failed.traceback
    assert failed.to_status().traceback == failed.traceback
    assert harness.store.current_name("1") == first.model_version
    assert [m.version for m in harness.store.versions("1")] == [first.model_version]


def test_too_few_annotations_says_how_many(harness: Harness) -> None:
    queue = harness.open()
    tasks = annotated_tasks(2)
    tasks[1]["annotations"][0]["was_cancelled"] = True  # skipped: does not count
    tasks.append({"id": 9, "data": {"text": "none"}, "annotations": []})
    failed = harness.wait_done(queue, queue.submit(harness.spec(tasks=tasks)).id)
    assert failed.state is JobState.failed
    assert failed.error is not None and failed.error.startswith("TooFewAnnotations: ")
    assert "has 1 usable annotation (3 tasks)" in failed.error
    assert "at least 2" in failed.error and "Model.min_annotations" in failed.error
    assert harness.store.current_name("1") is None
    assert not (harness.backend / "runs").exists()  # fit() was never called


def test_killed_training_process_fails_with_a_reason(harness: Harness) -> None:
    queue = harness.open()
    first = harness.wait_done(queue, queue.submit(harness.spec()).id)
    assert first.state is JobState.finished, first.error

    harness.behave(**{"1": {"hold": True}})
    harness.forget_pid()
    doomed = queue.submit(harness.spec())
    pid = harness.fit_pid()
    harness.wait_state(queue, doomed.id, {JobState.started})
    os.kill(pid, signal.SIGKILL)

    failed = harness.wait_done(queue, doomed.id)
    assert failed.state is JobState.failed
    assert failed.error is not None
    assert "the training process was killed by SIGKILL (often: out of memory)" in failed.error
    assert re.search(r"peak memory \d+ MB", failed.error), failed.error
    assert harness.store.current_name("1") == first.model_version

    harness.behave()
    again = harness.wait_done(queue, queue.submit(harness.spec()).id)
    assert again.state is JobState.finished, again.error
    assert harness.store.current_name("1") == again.model_version != first.model_version


def test_timeout_stops_the_job(harness: Harness) -> None:
    queue = harness.open(job_timeout=1.0)
    harness.behave(**{"1": {"hold": True}})
    failed = harness.wait_done(queue, queue.submit(harness.spec()).id)
    assert failed.state is JobState.failed
    assert failed.error == "timed out after 1 s"
    assert failed.started_at is not None and failed.finished_at is not None
    assert (
        failed.finished_at - failed.started_at
    ).total_seconds() >= 0.9  # two processes stamp these: allow clock granularity
    assert harness.store.current_name("1") is None


def test_newer_submit_supersedes_the_queued_job(harness: Harness) -> None:
    queue = harness.open()
    harness.behave(**{"1": {"hold": True}})
    running = queue.submit(harness.spec())
    harness.wait_state(queue, running.id, {JobState.started})
    middle = queue.submit(harness.spec())
    newest = queue.submit(harness.spec())

    canceled = queue.get(middle.id)
    assert canceled.state is JobState.canceled and canceled.superseded_by == newest.id
    assert queue.get(newest.id).state is JobState.queued  # waits: its project is busy
    assert queue.get(running.id).state is JobState.started

    harness.release("1")
    assert harness.wait_done(queue, running.id).state is JobState.finished
    assert harness.wait_done(queue, newest.id).state is JobState.finished
    assert queue.get(middle.id).started_at is None
    assert len(harness.runs("1")) == 2


def test_a_burst_of_delayed_submits_trains_once(harness: Harness) -> None:
    queue = harness.open()
    began = time.monotonic()
    ids = [queue.submit(harness.spec(), delay=1.0).id for _ in range(50)]
    assert time.monotonic() - began < 1.0, "the burst was slower than the delay"
    last = harness.wait_done(queue, ids[-1], timeout=20)
    assert last.state is JobState.finished, last.error
    assert last.started_at is not None
    assert (last.started_at - last.created_at).total_seconds() >= 0.95
    earlier = [queue.get(job_id) for job_id in ids[:-1]]
    assert {r.state for r in earlier} == {JobState.canceled}
    assert [r.superseded_by for r in earlier] == ids[1:]
    time.sleep(0.3)  # nothing else may run afterwards
    assert len(harness.runs("1")) == 1


def test_never_two_jobs_of_one_project_at_once(harness: Harness) -> None:
    queue = harness.open(workers=2)
    harness.behave(**{"1": {"sleep": 0.8}, "2": {"sleep": 0.8}})
    first = queue.submit(harness.spec("1"))
    harness.wait_state(queue, first.id, {JobState.started})
    second = queue.submit(harness.spec("1"))  # a free worker exists, but the project is busy
    other = queue.submit(harness.spec("2"))  # another project may run alongside
    for job in (first, second, other):
        record = harness.wait_done(queue, job.id)
        assert record.state is JobState.finished, record.error

    one, two = harness.runs("1")
    assert one["end"] <= two["start"], "two jobs of project 1 overlapped"
    (parallel,) = harness.runs("2")
    assert parallel["start"] < one["end"] and parallel["end"] > one["start"], (
        "project 2 did not run alongside project 1: the test would not see an overlap"
    )
