"""Training as jobs: the queue interface, the embedded (SQLite) and RQ (Redis) queues, and the
runner a worker calls. Requests only ever write a job record; fit() runs elsewhere."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from labelbridge.errors import MissingDependency
from labelbridge.jobs._base import JobQueue, JobRecord, JobSpec, JobState
from labelbridge.jobs.embedded import EmbeddedJobQueue
from labelbridge.settings import JobQueueKind, Settings

if TYPE_CHECKING:
    from labelbridge.jobs.rq import RQJobQueue

__all__ = [
    "SCHEDULER_ENV",
    "EmbeddedJobQueue",
    "JobQueue",
    "JobRecord",
    "JobSpec",
    "JobState",
    "RQJobQueue",
    "open_queue",
    "resolve_dirs",
]


#: set to "external" by the production supervisor for its web workers: their embedded queues
#: only submit and read, one scheduler in the supervisor runs the jobs (see cli/start.py)
SCHEDULER_ENV = "LABELBRIDGE_JOB_SCHEDULER"


def resolve_dirs(settings: Settings, backend_dir: Path | None) -> Settings:
    """Settings with model_dir and log_dir made explicit, so that a job process or an RQ worker
    (which has no backend folder of its own) writes where the server reads."""
    update: dict[str, Any] = {}
    if settings.model_dir is None:
        update["model_dir"] = settings.resolved_model_dir(backend_dir).absolute()
    if settings.log_dir is None:
        update["log_dir"] = settings.resolved_log_dir(backend_dir).absolute()
    return settings.model_copy(update=update) if update else settings


def open_queue(
    settings: Settings, backend_dir: Path | None = None, *, run_scheduler: bool | None = None
) -> JobQueue:
    """The queue the settings name: `embedded` (<model_dir>/jobs.sqlite3) or `rq` (Redis).

    An embedded queue runs its own scheduler unless `run_scheduler` is False, or it is None and
    SCHEDULER_ENV says another process runs it (a production web worker)."""
    settings = resolve_dirs(settings, backend_dir)
    if settings.job_queue is JobQueueKind.rq:
        try:
            from labelbridge.jobs.rq import RQJobQueue
        except ModuleNotFoundError as exc:
            raise MissingDependency(
                f"JOB_QUEUE=rq needs the {exc.name!r} package, which is not installed",
                fix="pip install 'labelbridge[rq]', or set JOB_QUEUE=embedded",
            ) from exc
        return RQJobQueue(settings, backend_dir=backend_dir)
    assert settings.model_dir is not None
    if run_scheduler is None:
        run_scheduler = os.environ.get(SCHEDULER_ENV) != "external"
    return EmbeddedJobQueue(
        settings, settings.model_dir / "jobs.sqlite3", run_scheduler=run_scheduler
    )


def __getattr__(name: str) -> Any:
    # RQJobQueue needs the optional `rq` and `redis` packages: import it only when asked for
    if name == "RQJobQueue":
        from labelbridge.jobs.rq import RQJobQueue

        return RQJobQueue
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
