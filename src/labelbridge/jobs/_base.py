"""The job queue interface. Two implementations: `embedded` (default) and `rq` (Redis)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal, Protocol, runtime_checkable

from pydantic import BaseModel, Field

from labelbridge.protocol import JobState, JobStatusResponse

__all__ = ["JobQueue", "JobRecord", "JobSpec", "JobState"]


class JobSpec(BaseModel):
    """What to run. Plain data, so it travels through SQLite or Redis to any worker."""

    kind: Literal["train", "prelabel"] = "train"
    project: str
    event: str = "START_TRAINING"
    #: how a worker finds the model class: a backend folder or "module:Class" (see loader.py)
    model_ref: str
    #: tasks with annotations, when the request carried them (legacy /train); else fetched
    tasks: list[dict[str, Any]] | None = None
    label_config: str | None = None
    params: dict[str, Any] = Field(default_factory=dict)


class JobRecord(BaseModel):
    """A job's state as stored by the queue, in the lifecycle of `JobState`."""

    id: str
    kind: str = "train"
    project: str
    state: JobState = JobState.queued
    created_at: datetime
    started_at: datetime | None = None
    finished_at: datetime | None = None
    model_version: str | None = None
    error: str | None = None
    traceback: str | None = None
    progress: dict[str, Any] | None = None
    result: dict[str, Any] | None = None
    superseded_by: str | None = None

    def to_status(self, *, with_traceback: bool = True) -> JobStatusResponse:
        return JobStatusResponse(
            job=self.id,
            job_status=self.state,
            kind=self.kind,
            project=self.project,
            created_at=self.created_at,
            started_at=self.started_at,
            finished_at=self.finished_at,
            model_version=self.model_version,
            error=self.error,
            traceback=self.traceback if with_traceback else None,
            progress=self.progress,
            result=self.result,
        )


@runtime_checkable
class JobQueue(Protocol):
    """Submit jobs and read their state; never blocks a request for longer than a write."""

    def start(self) -> None:
        """Begin processing (the embedded queue starts its scheduler; RQ connects)."""
        ...

    def close(self) -> None: ...

    def submit(self, spec: JobSpec, *, delay: float = 0.0) -> JobRecord:
        """Queue a job. A job of the same project and kind still queued (not started) is
        superseded by this one (state canceled, `superseded_by` set). With `delay`, the job
        waits that long before it may start: a newer submit within the delay replaces it, which
        is how a burst of annotations gives one training run (debounce)."""
        ...

    def get(self, job_id: str) -> JobRecord:
        """The job's record; raises UnknownJob."""
        ...

    def list(self, project: str | None = None, limit: int = 50) -> list[JobRecord]:
        """Newest first."""
        ...

    def health(self) -> tuple[bool, str | None]:
        """(ok, reason): False with a reason naming the Redis URL when it is unreachable."""
        ...
