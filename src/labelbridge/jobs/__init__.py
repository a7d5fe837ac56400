"""Training as jobs: the queue interface, the embedded (SQLite) and RQ (Redis) queues, and the
runner a worker calls. Requests only ever write a job record; fit() runs elsewhere."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from labelbridge.errors import MissingDependency
from labelbridge.jobs._base import JobQueue, JobRecord, JobSpec, JobState
from labelbridge.jobs.embedded import EmbeddedJobQueue
from labelbridge.settings import JobQueueKind, Settings

if TYPE_CHECKING:
    from labelbridge.jobs.rq import RQJobQueue

__all__ = [
    "EmbeddedJobQueue",
    "JobQueue",
    "JobRecord",
    "JobSpec",
    "JobState",
    "RQJobQueue",
    "open_queue",
    "resolve_dirs",
]


def resolve_dirs(settings: Settings, backend_dir: Path | None) -> Settings:
    """Settings with model_dir and log_dir made explicit, so that a job process or an RQ worker
    (which has no backend folder of its own) writes where the server reads."""
    update: dict[str, Any] = {}
    if settings.model_dir is None:
        update["model_dir"] = settings.resolved_model_dir(backend_dir).absolute()
    if settings.log_dir is None:
        update["log_dir"] = settings.resolved_log_dir(backend_dir).absolute()
    return settings.model_copy(update=update) if update else settings


def open_queue(settings: Settings, backend_dir: Path | None = None) -> JobQueue:
    """The queue the settings name: `embedded` (<model_dir>/jobs.sqlite3) or `rq` (Redis)."""
    settings = resolve_dirs(settings, backend_dir)
    if settings.job_queue is JobQueueKind.rq:
        try:
            from labelbridge.jobs.rq import RQJobQueue
        except ModuleNotFoundError as exc:
            raise MissingDependency(
                f"JOB_QUEUE=rq needs the {exc.name!r} package, which is not installed",
                fix="pip install 'labelbridge[rq]', or set JOB_QUEUE=embedded",
            ) from exc
        return RQJobQueue(settings)
    assert settings.model_dir is not None
    return EmbeddedJobQueue(settings, settings.model_dir / "jobs.sqlite3")


def __getattr__(name: str) -> Any:
    # RQJobQueue needs the optional `rq` and `redis` packages: import it only when asked for
    if name == "RQJobQueue":
        from labelbridge.jobs.rq import RQJobQueue

        return RQJobQueue
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
