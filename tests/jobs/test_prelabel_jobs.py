"""The `prelabel` job kind on both queues (embedded, and RQ with a real worker process), and
PRELABEL_AFTER_TRAINING: a finished training queues a prelabel with the version it published."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator

import pytest
from jobs_harness import CONFIG, Harness

from fakes import FakeLabelStudio
from labelbridge.jobs import JobSpec, JobState
from labelbridge.store import ProjectRecord


@pytest.fixture(scope="module")
def fake_server() -> Iterator[FakeLabelStudio]:
    with FakeLabelStudio() as running:
        yield running


@pytest.fixture
def fake(fake_server: FakeLabelStudio) -> FakeLabelStudio:
    fake_server.reset()
    return fake_server


def _project(harness: Harness, fake: FakeLabelStudio, tasks: int) -> tuple[str, list[int]]:
    """A Label Studio project, and its record as /setup would have left it in the store."""
    pid = fake.add_project(label_config=CONFIG)["id"]
    ids = [fake.add_task(pid, {"text": f"t{i}"})["id"] for i in range(tasks)]
    record = ProjectRecord(
        project=str(pid),
        label_config=CONFIG,
        label_studio_url=fake.url,
        access_token=fake.legacy_token,
    )
    harness.store.put_project(record)
    return str(pid), ids


def _stored(fake: FakeLabelStudio, version: str) -> Counter[int]:
    return Counter(p["task"] for p in fake.predictions.values() if p["model_version"] == version)


def test_prelabel_job_runs_in_the_worker(harness: Harness, fake: FakeLabelStudio) -> None:
    project, ids = _project(harness, fake, 7)
    queue = harness.open()
    spec = JobSpec(
        kind="prelabel",
        project=project,
        model_ref=str(harness.backend),
        params={"batch_size": 3, "filter": "all"},
    )
    done = harness.wait_done(queue, queue.submit(spec).id)

    assert done.state is JobState.finished, done.error
    assert done.kind == "prelabel" and done.model_version == "counting-v0"
    assert done.progress is not None and done.progress["done"] == len(ids)
    assert done.result is not None and done.result["stored"] == len(ids)
    assert _stored(fake, "counting-v0") == Counter({task: 1 for task in ids})

    again = harness.wait_done(queue, queue.submit(spec).id)
    assert again.state is JobState.finished and again.result is not None
    assert again.result["skipped"] == len(ids) and again.result["stored"] == 0


def test_prelabel_job_without_label_studio_fails_with_the_fix(harness: Harness) -> None:
    queue = harness.open()
    spec = JobSpec(kind="prelabel", project="2", model_ref=str(harness.backend))
    failed = harness.wait_done(queue, queue.submit(spec).id)
    assert failed.state is JobState.failed
    assert failed.error is not None and "no Label Studio URL" in failed.error


def test_prelabel_after_training(
    harness: Harness, fake: FakeLabelStudio, monkeypatch: pytest.MonkeyPatch
) -> None:
    project, ids = _project(harness, fake, 4)
    monkeypatch.setenv("PRELABEL_AFTER_TRAINING", "true")  # an RQ worker reads its environment
    queue = harness.open(prelabel_after_training=True)
    trained = harness.wait_done(queue, queue.submit(harness.spec(project)).id)
    assert trained.state is JobState.finished, trained.error
    assert trained.result is not None and trained.result["model_version"] == "counting-v1"

    follow = harness.wait_done(queue, trained.result["prelabel_job"])
    assert follow.state is JobState.finished, follow.error
    assert follow.kind == "prelabel" and follow.model_version == "counting-v1"
    assert _stored(fake, "counting-v1") == Counter({task: 1 for task in ids})
