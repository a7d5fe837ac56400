"""Label Studio's ML backend protocol as data: the one definition that server, connector and
doctor share.

Shapes follow what Label Studio 1.23.2 really sends (see shared/protocol captures): unknown
keys are accepted and ignored, `project` arrives as `"<id>.<created_ts>"` (or an int, or a
whole project object in webhooks), `extra_params` may be an object or a string.
"""

from __future__ import annotations

import math
import re
from datetime import datetime
from enum import Enum
from typing import Annotated, Any, Literal, NamedTuple

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    PlainValidator,
    StrictInt,
)
from pydantic_core import PydanticCustomError

__all__ = [
    "DeleteRequest",
    "DuplicateModelRequest",
    "ErrorResponse",
    "HealthResponse",
    "JobState",
    "JobStatusRequest",
    "JobStatusResponse",
    "PredictCall",
    "PredictParams",
    "PredictRequest",
    "PredictResponse",
    "PredictionValue",
    "PrelabelRequest",
    "PrelabelResponse",
    "ResultItem",
    "SetupRequest",
    "SetupResponse",
    "Task",
    "TrainRequest",
    "TrainResponse",
    "ValidateRequest",
    "ValidateResponse",
    "VersionInfo",
    "VersionsResponse",
    "WebhookEvent",
    "WebhookResponse",
    "parse_project_id",
]

#: a project id as sent: "1.1795540744" or 1; StrictInt so that JSON true/false is refused
#: instead of becoming project 1/0 (pydantic's lax mode turns booleans into integers)
ProjectKey = str | StrictInt
ProjectRef = ProjectKey | dict[str, Any] | None
_PROJECT_HEAD = re.compile(r"[A-Za-z0-9][A-Za-z0-9_\-]{0,63}")


def parse_project_id(value: ProjectRef) -> str | None:
    """The project's id from any form Label Studio sends: "1.1795540744", 1, or {"id": 1, ...}."""
    if value is None or value == "":
        return None
    if isinstance(value, dict):
        inner = value.get("id")
        return None if inner is None else parse_project_id(inner)
    if isinstance(value, bool):
        raise ValueError("project must be an id, not a boolean")
    text = str(value).strip()
    head = text.split(".", 1)[0]
    # what the model store accepts as a folder name: ASCII, starting with a letter or digit
    # (a negative id or a non-ASCII letter used to pass here and fail there with a 500)
    if not _PROJECT_HEAD.fullmatch(head):
        raise ValueError(f"project {text[:80]!r} is not a Label Studio project id")
    return head


def _finite_score(score: float | None) -> float | None:
    if score is not None and not math.isfinite(score):
        raise ValueError("score must be a finite number")
    return score


#: a prediction's or result's confidence: NaN and infinities are refused (Label Studio sorts by it)
Score = Annotated[float | None, AfterValidator(_finite_score)]


class _In(BaseModel):
    """Requests: unknown keys accepted and ignored, as Label Studio adds fields over versions."""

    model_config = ConfigDict(extra="ignore", populate_by_name=True)


class _Open(BaseModel):
    """Objects that belong to the user (tasks, results): unknown keys kept."""

    model_config = ConfigDict(extra="allow", populate_by_name=True)


class _Out(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


# --- health -------------------------------------------------------------------------------
class HealthResponse(_Out):
    status: Literal["UP"] = "UP"
    model_class: str
    model_state: Literal["loading", "ready", "failed"] = "ready"
    model_error: str | None = None
    queue: Literal["ok", "degraded"] = "ok"
    queue_error: str | None = None
    #: usable annotations a training job needs (Model.min_annotations, else the setting)
    min_annotations: int | None = None
    v2: bool = True


# --- setup --------------------------------------------------------------------------------
class SetupRequest(_In):
    project: ProjectKey | None = None
    label_schema: str | None = Field(None, alias="schema")
    hostname: str | None = None
    access_token: str | None = None
    model_version: str | None = None
    extra_params: dict[str, Any] | str | None = None


class SetupResponse(_Out):
    model_version: str


# --- predict ------------------------------------------------------------------------------
class Task(_Open):
    id: int | None = None
    data: dict[str, Any]
    annotations: list[dict[str, Any]] = Field(default_factory=list)
    predictions: list[dict[str, Any]] = Field(default_factory=list)


class PredictParams(_Open):
    login: str | None = None
    password: str | None = None
    context: dict[str, Any] | None = None


def _task(task: Any) -> dict[str, Any]:
    if not isinstance(task, dict):
        raise PydanticCustomError("dict_type", "Input should be a valid dictionary")
    if not isinstance(task.get("data"), dict):
        raise ValueError("data must be an object")
    return task


#: a task as Label Studio sends it, checked but not copied: pydantic's dict[str, Any] copies
#: every task (10 ms of a 10,000-task /predict, against ~3 ms for this check; bench/NOTES.md)
_RawTask = Annotated[Any, PlainValidator(_task, json_schema_input_type=dict[str, Any])]


class PredictRequest(_In):
    tasks: list[_RawTask]
    project: ProjectKey | None = None
    label_config: str | None = None
    model_version: str | None = None
    params: PredictParams | None = None


class PredictCall(NamedTuple):
    """A /predict request as the server uses it: its params as a plain dict. Made from a
    PredictRequest (`of`), or by `from_json` straight from the parsed body when it has the
    usual shape: on a one-task /predict, model validation cost more than the rest of the
    request's parsing (bench/NOTES.md item 28)."""

    tasks: list[dict[str, Any]]
    project: str | int | None
    label_config: str | None
    params: dict[str, Any]

    @classmethod
    def of(cls, request: PredictRequest) -> PredictCall:
        params = request.params
        return cls(
            request.tasks,
            request.project,
            request.label_config,
            {} if params is None else {**params.__dict__, **(params.__pydantic_extra__ or {})},
        )

    @classmethod
    def from_json(cls, data: Any) -> PredictCall | None:
        """The call, if `data` is a body PredictRequest would accept as it is; None for any
        other shape (PredictRequest then validates it, and its error names the field)."""
        if type(data) is not dict:
            return None
        tasks = data.get("tasks")
        project = data.get("project")
        config = data.get("label_config")
        version = data.get("model_version")
        params = data.get("params")
        if (
            type(tasks) is not list
            or not (project is None or type(project) is str or type(project) is int)
            or not (config is None or type(config) is str)
            or not (version is None or type(version) is str)
        ):
            return None
        for task in tasks:
            if type(task) is not dict or type(task.get("data")) is not dict:
                return None
        if params is None:
            return cls(tasks, project, config, {})
        if type(params) is not dict:
            return None
        login, password, context = (
            params.get("login"),
            params.get("password"),
            params.get("context"),
        )
        if (
            not (login is None or type(login) is str)
            or not (password is None or type(password) is str)
            or not (context is None or type(context) is dict)
        ):
            return None
        return cls(tasks, project, config, {**_NO_PARAMS, **params})


#: PredictParams' declared fields, first in its dict as in the model's
_NO_PARAMS: dict[str, Any] = {"login": None, "password": None, "context": None}


class ResultItem(_Open):
    id: str | None = None
    from_name: str
    to_name: str
    type: str
    value: dict[str, Any]
    score: Score = None


class PredictionValue(_Open):
    result: list[dict[str, Any]] = Field(default_factory=list)
    score: Score = None
    model_version: str | None = None


class PredictResponse(_Out):
    results: list[dict[str, Any] | list[dict[str, Any]]]
    model_version: str | None = None


# --- training -----------------------------------------------------------------------------
class WebhookEvent(_Open):
    action: str
    project: ProjectRef = None
    annotation: dict[str, Any] | None = None
    task: dict[str, Any] | None = None
    annotations: list[dict[str, Any]] | None = None
    tasks: list[dict[str, Any]] | None = None


class WebhookResponse(_Out):
    status: Literal["queued", "counted", "ignored"]
    job: str | None = None
    detail: str | None = None


class TrainRequest(_In):
    annotations: list[dict[str, Any]] = Field(default_factory=list)
    project: ProjectRef = None
    label_config: str | None = None
    params: dict[str, Any] | None = None


class TrainResponse(_Out):
    job: str
    status: str = "queued"


class PrelabelRequest(_In):
    """POST /prelabel (a labelbridge addition): pre-annotate a project's tasks in a job."""

    project: ProjectKey
    filter: Literal["unlabeled", "all", "no-prediction-for-version"] = "unlabeled"
    batch_size: int = Field(32, ge=1, le=10_000)
    #: where the job reaches Label Studio, if not LABEL_STUDIO_URL or /setup's hostname
    label_studio_url: str | None = None
    #: store under this version instead of the project's current one
    model_version: str | None = None


class PrelabelResponse(_Out):
    job: str
    status: str = "queued"


class JobState(str, Enum):
    """A job's lifecycle: queued -> started -> finished | failed; queued -> canceled."""

    queued = "queued"
    started = "started"
    finished = "finished"
    failed = "failed"
    canceled = "canceled"

    @property
    def done(self) -> bool:
        return self in (JobState.finished, JobState.failed, JobState.canceled)


class JobStatusRequest(_In):
    job: str


class JobStatusResponse(_Out):
    job: str
    job_status: JobState
    kind: str = "train"
    project: str | None = None
    created_at: datetime | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    model_version: str | None = None
    error: str | None = None
    traceback: str | None = None
    progress: dict[str, Any] | None = None
    result: dict[str, Any] | None = None


# --- versions, duplicate, delete, validate ------------------------------------------------
class VersionInfo(_Out):
    version: str
    project: str
    created_at: datetime
    current: bool = False
    metrics: dict[str, Any] = Field(default_factory=dict)


class VersionsResponse(_Out):
    versions: list[str]
    details: list[VersionInfo] = Field(default_factory=list)


class DuplicateModelRequest(_In):
    project_src: ProjectKey
    project_dst: ProjectKey


class DeleteRequest(_In):
    project: ProjectKey


class ValidateRequest(_In):
    config: str


class ValidateResponse(_Out):
    status: Literal["ok"] = "ok"
    controls: list[str] = Field(default_factory=list)


class ErrorResponse(_Out):
    error: str
    detail: str
    field: str | None = None
    fix: str | None = None
    traceback: str | None = None
