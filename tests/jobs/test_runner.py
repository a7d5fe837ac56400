"""The runner in-process: where tasks come from, what is published, what is logged."""

from __future__ import annotations

import logging
import sys
import types
from pathlib import Path
from typing import Any

import pytest
from jobs_harness import CONFIG, Harness, annotated_tasks

from labelbridge.errors import UnknownProject
from labelbridge.jobs import EmbeddedJobQueue, JobSpec, open_queue
from labelbridge.jobs.runner import count_annotations, run_job
from labelbridge.store import ProjectRecord


class FakeLabelStudio:
    """Stands in for labelbridge.labelstudio.LabelStudio; records how it was called."""

    calls: list[tuple[str, Any, Any]] = []

    def __init__(self, url: str, token: Any) -> None:
        self.url, self.token = url, token

    def __enter__(self) -> FakeLabelStudio:
        return self

    def __exit__(self, *exc: object) -> None:
        pass

    def annotated_tasks(self, project: int) -> list[dict[str, Any]]:
        FakeLabelStudio.calls.append((self.url, self.token, project))
        return annotated_tasks(4)


@pytest.fixture
def fake_label_studio(monkeypatch: pytest.MonkeyPatch) -> type[FakeLabelStudio]:
    module = types.ModuleType("labelbridge.labelstudio")
    module.LabelStudio = FakeLabelStudio  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "labelbridge.labelstudio", module)
    FakeLabelStudio.calls = []
    return FakeLabelStudio


def test_tasks_are_fetched_with_the_projects_credentials(
    embedded: Harness, fake_label_studio: type[FakeLabelStudio]
) -> None:
    record = ProjectRecord(
        project="7",
        label_config=CONFIG,
        label_studio_url="http://ls.example:8080",
        access_token="tok",
    )
    embedded.store.put_project(record)
    spec = JobSpec(project="7", model_ref=str(embedded.backend))
    result = run_job("job-a", spec, embedded.settings())
    assert result["metrics"]["trained_on"] == 4
    assert fake_label_studio.calls == [("http://ls.example:8080", "tok", 7)]

    override = embedded.settings(label_studio_url="http://ls.internal", label_studio_api_key="key")
    run_job("job-b", spec, override)
    assert fake_label_studio.calls[-1] == ("http://ls.internal", "key", 7)


def test_fit_returning_none_publishes_nothing(embedded: Harness) -> None:
    embedded.behave(**{"1": {"none": True}})
    result = run_job("job-none", embedded.spec(), embedded.settings())
    assert result["model_version"] is None and "returned None" in result["detail"]
    assert embedded.store.current_name("1") is None
    assert embedded.store.versions("1") == []
    assert list((embedded.model_dir / "projects" / "1" / ".staging").iterdir()) == []


def test_a_project_never_set_up_is_a_clear_error(embedded: Harness) -> None:
    spec = JobSpec(project="99", model_ref=str(embedded.backend), tasks=annotated_tasks())
    with pytest.raises(UnknownProject, match="never set up"):
        run_job("job-x", spec, embedded.settings())


def test_every_log_line_carries_the_job_id(
    embedded: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO):
        run_job("job-log", embedded.spec(), embedded.settings())
        logging.getLogger("labelbridge.jobs").info("outside a job")
    assert caplog.records[-1].getMessage() == "outside a job"
    assert getattr(caplog.records[-1], "job", None) is None
    ours = [
        r
        for r in caplog.records[:-1]
        if r.name.startswith(("labelbridge.jobs", "labelbridge.train"))
    ]
    assert any(r.name == "labelbridge.train" for r in ours)  # the model's own data.log line
    assert len(ours) >= 4 and all(getattr(r, "job", None) == "job-log" for r in ours)


def test_count_annotations_skips_cancelled() -> None:
    tasks = annotated_tasks(3)
    tasks[0]["annotations"].append({"id": 10, "was_cancelled": True, "result": []})
    tasks.append({"id": 5, "data": {}})
    assert count_annotations(tasks) == 3


def test_open_queue_puts_the_embedded_database_in_the_model_dir(tmp_path: Path) -> None:
    from labelbridge.settings import Settings

    settings = Settings(job_queue="embedded", model_dir=None, log_dir=None)
    queue = open_queue(settings, tmp_path)
    try:
        assert isinstance(queue, EmbeddedJobQueue)
        assert queue.db_path == (tmp_path / "models" / "jobs.sqlite3").absolute()
        assert queue.settings.model_dir == (tmp_path / "models").absolute()
        assert queue.settings.log_dir == (tmp_path / "logs").absolute()
    finally:
        queue.close()
