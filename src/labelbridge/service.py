"""`Backend`: what every route does, independent of HTTP.

The model object is built and `setup()` once per process, in a background thread, so /health
and /setup answer at once whatever the model's load time. Per-project state from /setup is
cached in memory and persisted in the model store; loaded versions are cached per
(project, version). Training goes to the job queue: nothing here blocks on a model's fit().
"""

from __future__ import annotations

import functools
import logging
import threading
import time
import traceback
from collections import OrderedDict
from collections.abc import Callable, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel

from labelbridge._inline import InlineCost
from labelbridge.errors import (
    BadRequest,
    CorruptModelVersion,
    InvalidPrediction,
    LabelBridgeError,
    ModelError,
    ModelNotReady,
    PayloadTooLarge,
    UnknownProject,
)
from labelbridge.jobs import JobQueue, JobSpec, open_queue
from labelbridge.label_config import LabelConfig
from labelbridge.metrics import Metrics
from labelbridge.model import Model, PredictContext, annotations_needed
from labelbridge.protocol import (
    DeleteRequest,
    DuplicateModelRequest,
    HealthResponse,
    JobStatusResponse,
    PredictCall,
    PredictRequest,
    PrelabelRequest,
    PrelabelResponse,
    SetupRequest,
    SetupResponse,
    TrainRequest,
    TrainResponse,
    ValidateRequest,
    ValidateResponse,
    VersionInfo,
    VersionsResponse,
    WebhookEvent,
    WebhookResponse,
    parse_project_id,
)
from labelbridge.settings import Settings, TrainPolicy
from labelbridge.store import ModelStore, ProjectRecord, open_store
from labelbridge.validation import split_valid

__all__ = ["Backend"]

log = logging.getLogger("labelbridge.server")

ANNOTATION_EVENTS = frozenset(
    {"ANNOTATION_CREATED", "ANNOTATION_UPDATED", "ANNOTATIONS_DELETED", "ANNOTATION_DELETED"}
)
TRAIN_EVENTS = frozenset({"START_TRAINING"})
#: how often the queue's health is looked at (/health reports the last look)
QUEUE_CHECK_SECONDS = 1.0
#: parsed labeling configs kept per backend (by text), the oldest dropped first
_CONFIGS_KEPT = 64


def _project_or_error(value: Any, field: str = "project") -> str:
    try:
        project = (
            _project_id(value)
            if type(value) is str or type(value) is int
            else parse_project_id(value)
        )
    except ValueError as exc:
        raise BadRequest(str(exc), field=field) from exc
    if project is None:
        raise BadRequest(f"{field} is required", field=field)
    return project


@functools.lru_cache(maxsize=4096, typed=True)
def _project_id(value: str | int) -> str | None:
    """parse_project_id of an id as sent ("1.1795540744", 1), remembered: every /predict names
    one, and its regular expression cost more than this look-up."""
    return parse_project_id(value)


def _mean_score(result: Any) -> float | None:
    """A prediction's score when predict() gave none: the mean of its items' scores."""
    if type(result) is not list:
        return None
    scores = [
        r["score"]
        for r in result
        if isinstance(r, dict)
        and isinstance(r.get("score"), (int, float))
        and not isinstance(r.get("score"), bool)
    ]
    return sum(scores) / len(scores) if scores else None


class _TaskIds(Sequence[Any]):
    """The tasks' ids, looked up only when a problem is reported (most answers have none)."""

    __slots__ = ("tasks",)

    def __init__(self, tasks: list[dict[str, Any]]) -> None:
        self.tasks = tasks

    def __len__(self) -> int:
        return len(self.tasks)

    def __getitem__(self, index: Any) -> Any:
        if isinstance(index, slice):
            return [task.get("id") for task in self.tasks[index]]
        return self.tasks[index].get("id")


class Backend:
    """One model class served for any number of Label Studio projects."""

    def __init__(
        self,
        model_cls: type[Model],
        settings: Settings,
        *,
        model_ref: str,
        backend_dir: Path | None = None,
        store: ModelStore | None = None,
        queue: JobQueue | None = None,
    ) -> None:
        self.model_cls = model_cls
        #: the version name before any training
        self._v0 = f"{model_cls.version_prefix()}-v0"
        self.settings = settings
        self.model_ref = model_ref
        self.backend_dir = backend_dir
        self.store: ModelStore = store or open_store(settings, backend_dir)
        self.queue: JobQueue = queue or open_queue(settings, backend_dir)
        self.metrics = Metrics()
        self.model: Model | None = None
        self.model_state: Literal["loading", "ready", "failed"] = "loading"
        self.model_error: str | None = None
        self.load_seconds: float | None = None
        self._ready = threading.Event()
        self._lock = threading.Lock()
        self._records: dict[str, ProjectRecord] = {}
        self._states: OrderedDict[tuple[str, str], tuple[str, Any]] = OrderedDict()
        #: parsed configs by their text: /predict sends the config with every request
        self._configs: OrderedDict[str, LabelConfig] = OrderedDict()
        self.inline = InlineCost(settings.inline_predict_ms)
        self._predict_metrics: Callable[[float, float], None] | None = None
        self._state_lock = threading.Lock()
        self._annotation_events: dict[str, int] = {}
        self._started = False
        self._closing = threading.Event()
        self._queue_state: tuple[float, bool, str | None] | None = None
        self._watch_since = 0.0

    # --- lifecycle ----------------------------------------------------------------------
    def start(self, *, wait: bool = False) -> None:
        """Load the model in the background (or wait for it), start the job queue."""
        if self._started:
            return
        self._started = True
        self._watch_since = time.monotonic()
        try:
            self.queue.start()
        except LabelBridgeError as exc:
            log.error("job queue unavailable: %s", exc)
        thread = threading.Thread(
            target=self._load_model, name="labelbridge-model-load", daemon=True
        )
        thread.start()
        threading.Thread(
            target=self._watch_queue, name="labelbridge-queue-watch", daemon=True
        ).start()
        if wait:
            self._ready.wait()

    def close(self) -> None:
        self._closing.set()
        self.queue.close()

    def _watch_queue(self) -> None:
        """The queue's health, looked at every QUEUE_CHECK_SECONDS for /health."""
        while True:
            try:
                ok, reason = self.queue.health()
            except Exception as exc:  # a queue must not take /health down with it
                ok, reason = False, f"{type(exc).__name__}: {exc}"
            self._queue_state = (time.monotonic(), ok, reason)
            if self._closing.wait(QUEUE_CHECK_SECONDS):
                return

    def _load_model(self) -> None:
        began = time.perf_counter()
        try:
            model = self.model_cls(self.settings)
            model.setup()
        except Exception as exc:
            self.model_error = f"{type(exc).__name__}: {exc}"
            self.model_state = "failed"
            log.exception("model setup failed")
        else:
            self.model = model
            self.model_state = "ready"
        finally:
            self.load_seconds = time.perf_counter() - began
            self.metrics.set(
                "labelbridge_model_load_seconds", "Time setup() took.", self.load_seconds
            )
            self._ready.set()
            log.info(
                "model %s %s in %.2f s",
                self.model_cls.__name__,
                self.model_state,
                self.load_seconds,
            )

    def wait_loaded(self, timeout: float) -> bool:
        """Wait until the model loaded or failed to; False if `timeout` passed first."""
        return self._ready.wait(timeout)

    def wait_ready(self, timeout: float | None = None) -> Model:
        if self.model is not None:
            return self.model
        if not self._ready.wait(self.settings.model_load_wait if timeout is None else timeout):
            raise ModelNotReady(
                f"the model is still loading ({self.settings.model_load_wait:g} s waited)",
                fix="wait for /health to report model_state 'ready'; raise MODEL_LOAD_WAIT",
            )
        if self.model is None:
            raise ModelNotReady(f"the model failed to load: {self.model_error}", fix="see the log")
        return self.model

    # --- health, setup ------------------------------------------------------------------
    def health(self, *, details: bool = True) -> HealthResponse:
        """Never waits on I/O: the queue's state comes from the watcher thread (an SQLite read
        or a Redis round trip on the event loop would hold up every request behind it).
        `details=False` (anonymous callers when auth is on): states only, no error texts, which
        may name files, hosts or the Redis URL."""
        seen, now = self._queue_state, time.monotonic()
        last = seen[0] if seen is not None else self._watch_since
        if self._started and now - last > 3 * QUEUE_CHECK_SECONDS:
            # the watcher's look is overdue: the queue hangs (a Redis that does not answer)
            age = "never" if seen is None else f"{now - seen[0]:.0f} s ago"
            seen = (last, False, f"the job queue did not answer in time (last answer: {age})")
        elif seen is None or not self._started:
            # no watcher (an app used without its lifespan), or before its first look
            seen = self._queue_state = (now, *self.queue.health())
        _, ok, reason = seen
        needed: int | None = annotations_needed(self.model_cls, self.settings)[0]
        if not isinstance(needed, int) or isinstance(needed, bool):
            needed = None  # a malformed Model.min_annotations must not break /health
        return HealthResponse(
            model_class=self.model_cls.__name__,
            model_state=self.model_state,
            model_error=self.model_error if details else None,
            queue="ok" if ok else "degraded",
            queue_error=reason if details else None,
            min_annotations=needed,
        )

    def _record(self, project: str) -> ProjectRecord | None:
        record = self._records.get(project)
        if record is None:
            record = self.store.get_project(project)
            if record is not None:
                self._records[project] = record
        return record

    def _config(self, text: str, field: str) -> LabelConfig:
        if len(text.encode("utf-8", "surrogatepass")) > self.settings.max_label_config_bytes:
            raise PayloadTooLarge(
                f"{field} is larger than {self.settings.max_label_config_bytes} bytes",
                field=field,
                fix="raise MAX_LABEL_CONFIG_BYTES",
            )
        return LabelConfig.parse(text, max_bytes=self.settings.max_label_config_bytes)

    def current_version(self, project: str) -> str:
        return self.store.current_name(project) or self._v0

    def setup(self, request: SetupRequest) -> SetupResponse:
        if self.model_state == "failed":
            # Label Studio shows a backend as Error only when /setup fails (health must stay 2xx)
            raise ModelNotReady(
                f"the model failed to load: {self.model_error}",
                fix="see the backend's log (logs/uwsgi.log in production), fix, restart",
            )
        project = _project_or_error(request.project)
        record = self._record(project)
        schema = request.label_schema or (record.label_config if record else None)
        if not schema:
            raise BadRequest("schema (the labeling config) is required", field="schema")
        self._config(schema, "schema")
        changed = (
            record is None
            or record.label_config != schema
            or record.label_studio_url != request.hostname
            or record.access_token != request.access_token
            or record.extra_params != request.extra_params
        )
        if changed:
            record = ProjectRecord(
                project=project,
                label_config=schema,
                label_studio_url=request.hostname or (record.label_studio_url if record else None),
                access_token=request.access_token or (record.access_token if record else None),
                extra_params=request.extra_params,
                updated_at=datetime.now(timezone.utc),
                kv=record.kv if record else {},
            )
            with self._lock:
                self.store.put_project(record)
                self._records[project] = record
        version = self.current_version(project)
        if self._ready.is_set() and self.model is not None:
            threading.Thread(target=self._preload, args=(project,), daemon=True).start()
        return SetupResponse(model_version=version)

    def _preload(self, project: str) -> None:
        try:
            self._state_for(project)
        except Exception:  # reported when predict() needs it
            log.debug("preloading %s failed", project, exc_info=True)

    # --- predict ------------------------------------------------------------------------
    def _state_for(self, project: str, *, block: bool = True) -> tuple[str, Any] | None:
        """The newest version that loads, and its state; a corrupt version is skipped.

        With block=False: None when the answer needs the store's I/O or a model.load()."""
        model = self.wait_ready() if block else self.model
        if block:
            current = self.store.current_name(project)
        else:
            # a ModelStore written before current_name_nowait existed: never inline
            nowait = getattr(self.store, "current_name_nowait", None)
            known, current = nowait(project) if nowait is not None else (False, None)
            if not known:
                return None
        if current is None:
            return self._v0, None
        key = (project, current)
        with self._state_lock:
            cached = self._states.get(key)
            if cached is not None:
                self._states.move_to_end(key)
                return cached
        if not block or model is None:
            return None
        older = [m.version for m in self.store.versions(project) if m.version != current]
        for version in [current, *older]:
            try:
                state = model.load(self.store.open_version(project, version))
            except CorruptModelVersion as exc:
                log.error("refusing version %s of project %s: %s", version, project, exc)
                self.metrics.inc("labelbridge_corrupt_versions_total", "Versions refused on load.")
                continue
            entry = (version, state)
            with self._state_lock:
                self._states[key] = entry
                while len(self._states) > 16:
                    self._states.popitem(last=False)
            return entry
        return self._v0, None

    def predict(
        self, request: PredictRequest | PredictCall, *, dropped: list[Any] | None = None
    ) -> dict[str, Any]:
        """`dropped` collects the invalid items left out (labelbridge prelabel counts them)."""
        call = request if isinstance(request, PredictCall) else PredictCall.of(request)
        prepared = self._prepare(call, block=True)
        assert prepared is not None  # block=True never gives up
        return self._call(*prepared, call.tasks, dropped=dropped, inline=False)

    def predict_nowait(self, request: PredictCall) -> dict[str, Any] | None:
        """The answer of predict(), made on the caller's thread (the event loop) if the model
        is fast (see labelbridge._inline) and nothing on the way needs I/O or a model.load();
        else None, and the caller uses predict() in a pool thread."""
        if not self.inline.allows(len(request.tasks)):
            return None
        prepared = self._prepare(request, block=False)
        if prepared is None:
            return None
        try:
            return self._call(*prepared, request.tasks, dropped=None, inline=True)
        except ModelError as exc:
            cause = exc.__cause__
            if isinstance(cause, RuntimeError) and "event loop" in str(cause):
                # predict() runs asyncio itself (asyncio.run, loop.run_until_complete): it
                # cannot on the server's loop thread; from now on it runs in the pool
                log.info("%s.predict() uses asyncio: not run inline", self.model_cls.__name__)
                self.inline.disable()
                return None
            raise

    def _prepare(
        self, request: PredictCall, *, block: bool
    ) -> tuple[Model, PredictContext, LabelConfig] | None:
        """Checks, project record, config and loaded version: what predict() is called with."""
        tasks = request.tasks
        if len(tasks) > self.settings.max_tasks_per_request:
            raise PayloadTooLarge(
                f"{len(tasks)} tasks in one request; the limit is {self.settings.max_tasks_per_request}",
                field="tasks",
                fix="send fewer tasks per request (labelbridge prelabel batches them), or raise MAX_TASKS_PER_REQUEST",
            )
        project = _project_or_error(request.project) if request.project not in (None, "") else None
        if project is None and tasks and isinstance(tasks[0].get("project"), int):
            project = str(tasks[0]["project"])
        if project and not block:
            record = self._records.get(project)
            if record is None:
                return None  # the store would be read
        else:
            record = self._record(project) if project else None
        config_text = request.label_config or (record.label_config if record else None)
        if not config_text:
            raise UnknownProject(
                f"project {project} was never set up and the request has no label_config",
                field="project",
                fix="call /setup first (Label Studio does when the backend is added)",
            )
        config = self._configs.get(config_text)
        if config is None:
            if not block:
                return None  # parsing a large config takes milliseconds
            config = self._config(config_text, "label_config")
            with self._state_lock:
                self._configs[config_text] = config
                while len(self._configs) > _CONFIGS_KEPT:
                    self._configs.popitem(last=False)
        project = project or f"config-{config.hash[:12]}"
        model = self.wait_ready() if block else self.model
        served = self._state_for(project, block=block)
        if model is None or served is None:
            return None
        version, state = served
        params = request.params
        context = PredictContext(
            project=project,
            label_config=config,
            model_version=version,
            state=state,
            interactive=params.get("context"),
            params=params,
            label_studio_url=self.settings.label_studio_url
            or (record.label_studio_url if record else None),
            access_token=(
                self.settings.label_studio_api_key.get_secret_value()
                if self.settings.label_studio_api_key
                else (record.access_token if record else None)
            ),
            _settings=self.settings,
        )
        return model, context, config

    def _call(
        self,
        model: Model,
        context: PredictContext,
        config: LabelConfig,
        tasks: list[dict[str, Any]],
        *,
        dropped: list[Any] | None,
        inline: bool,
    ) -> dict[str, Any]:
        """The model's predict(), then its answer normalized and checked against the config."""
        version = context.model_version
        cost = self.inline
        count = len(tasks)
        sample = cost.samples_cpu(inline, count)
        ticket = None if inline else cost.pool_enter()
        began = time.perf_counter()
        cpu = time.thread_time() if sample else 0.0
        try:
            try:
                raw = model.predict(tasks, context)
            except LabelBridgeError:
                raise
            except Exception as exc:
                raise ModelError(
                    f"predict() raised {type(exc).__name__}: {exc}",
                    traceback=traceback.format_exc() if self.settings.debug else None,
                ) from exc
            took = time.perf_counter() - began
            return self._checked(raw, tasks, config, version, took, dropped)
        finally:
            # the whole call (checking a large answer costs too), as it holds up the loop
            cost.record(
                time.perf_counter() - began,
                count,
                inline=inline,
                cpu_seconds=time.thread_time() - cpu if sample else None,
                alone=ticket is None or cost.pool_alone(ticket),
            )

    def _checked(
        self,
        raw: Any,
        tasks: list[dict[str, Any]],
        config: LabelConfig,
        version: str,
        took: float,
        dropped: list[Any] | None,
    ) -> dict[str, Any]:
        """predict()'s answer normalized, checked against the config, counted."""
        record = self._predict_metrics
        if record is None:
            record = self._predict_metrics = self.metrics.timed(
                ("labelbridge_predict_seconds", "Time in the model's predict().", {}),
                ("labelbridge_predictions_total", "Tasks predicted.", {}),
            )
        try:
            predictions = self._normalize(raw, len(tasks), version)
        except BaseException:
            record(took, 0.0)  # its time, but no tasks predicted
            raise
        clean, problems = split_valid(config, predictions, _TaskIds(tasks))
        if dropped is not None:
            dropped.extend(problems)
        if problems:
            self.metrics.inc(
                "labelbridge_invalid_results_total",
                "Predicted results dropped as invalid.",
                len(problems),
            )
            if self.settings.debug:
                lines = [str(p) for p in problems[:20]]
                record(took, 0.0)
                raise InvalidPrediction(
                    f"{len(problems)} predicted result(s) do not match the labeling config: "
                    + "; ".join(lines),
                    problems=lines,
                )
            for problem in problems[:20]:
                log.warning("dropped invalid prediction: %s", problem)
        record(took, len(tasks))
        return {"results": clean, "model_version": version}

    def _normalize(self, raw: Any, count: int, version: str) -> list[Any]:
        raw = getattr(raw, "predictions", raw)  # the SDK's ModelResponse
        if not isinstance(raw, Sequence) or isinstance(raw, (str, bytes)):
            raise ModelError(
                f"predict() must return a list with one entry per task, got {type(raw).__name__}"
            )
        if len(raw) != count:
            raise ModelError(f"predict() returned {len(raw)} predictions for {count} tasks")
        return [self._one(item, version) for item in raw]

    def _one(self, item: Any, version: str) -> Any:
        if type(item) is dict and "result" in item:  # the usual shape, first
            prediction = dict(item)
            if prediction.get("model_version") is None:
                prediction["model_version"] = version
            if prediction.get("score") is None:
                prediction["score"] = _mean_score(prediction["result"])
            return prediction
        if item is None:
            return {"result": [], "score": None, "model_version": version}
        if isinstance(item, BaseModel):
            item = item.model_dump(exclude_none=True)
        if isinstance(item, dict):
            if "result" not in item and "from_name" in item:
                item = {"result": [item]}
            prediction = dict(item)
        elif isinstance(item, (list, tuple)):
            if item and all(isinstance(x, dict) and "result" in x for x in item):
                return [self._one(x, version) for x in item]
            prediction = {
                "result": [
                    x.model_dump(exclude_none=True) if isinstance(x, BaseModel) else x for x in item
                ]
            }
        else:
            raise ModelError(
                f"predict() returned a {type(item).__name__} for a task; expected a dict or list"
            )
        prediction.setdefault("model_version", version)
        if prediction.get("model_version") is None:
            prediction["model_version"] = version
        if prediction.get("score") is None:
            prediction["score"] = _mean_score(prediction.get("result"))
        return prediction

    # --- training -----------------------------------------------------------------------
    def _spec(self, project: str, event: str, **extra: Any) -> JobSpec:
        return JobSpec(project=project, event=event, model_ref=self.model_ref, **extra)

    def webhook(self, event: WebhookEvent, *, authenticated: bool = True) -> WebhookResponse:
        action = event.action.upper()
        project_ref = event.project
        if project_ref is None and event.annotation:
            project_ref = event.annotation.get("project")
        project = _project_or_error(project_ref) if project_ref is not None else None
        if project is None:
            return WebhookResponse(status="ignored", detail=f"{action}: no project in the event")
        if not authenticated and self._record(project) is None:
            # an anonymous event is a hint for a project we serve, never more: else anyone could
            # queue training jobs for any number of made-up projects
            return WebhookResponse(status="ignored", detail=f"{action}: unknown project {project}")
        if authenticated and isinstance(event.project, dict) and event.project.get("label_config"):
            self._remember_config(project, str(event.project["label_config"]))
        if action in TRAIN_EVENTS:
            record = self.queue.submit(self._spec(project, action))
            return WebhookResponse(status="queued", job=record.id)
        if action not in ANNOTATION_EVENTS:
            return WebhookResponse(status="ignored", detail=f"{action} does not trigger training")
        policy = self.settings.train_on_annotations
        if policy is TrainPolicy.off:
            return WebhookResponse(status="ignored", detail="TRAIN_ON_ANNOTATIONS is off")
        if policy is TrainPolicy.every:
            with self._lock:
                seen = self._annotation_events.get(project, 0) + 1
                self._annotation_events[project] = seen
            if seen % self.settings.train_every_n:
                return WebhookResponse(
                    status="counted",
                    detail=f"{seen % self.settings.train_every_n}/{self.settings.train_every_n}",
                )
            record = self.queue.submit(self._spec(project, action))
            return WebhookResponse(status="queued", job=record.id)
        record = self.queue.submit(
            self._spec(project, action), delay=self.settings.train_debounce_seconds
        )
        return WebhookResponse(status="queued", job=record.id)

    def _remember_config(self, project: str, label_config: str) -> None:
        record = self._record(project)
        if record is not None and record.label_config == label_config:
            return
        try:
            self._config(label_config, "project.label_config")
        except LabelBridgeError:
            return
        updated = (record or ProjectRecord(project=project)).model_copy(
            update={"label_config": label_config, "updated_at": datetime.now(timezone.utc)}
        )
        with self._lock:
            self.store.put_project(updated)
            self._records[project] = updated

    def train(self, request: TrainRequest) -> TrainResponse:
        project = _project_or_error(request.project)
        if request.label_config:
            self._config(request.label_config, "label_config")
            self._remember_config(project, request.label_config)
        elif self._record(project) is None:
            raise UnknownProject(
                f"project {project} was never set up", field="project", fix="call /setup first"
            )
        record = self.queue.submit(
            self._spec(
                project,
                "TRAIN",
                tasks=request.annotations or None,
                label_config=request.label_config,
                params=request.params or {},
            )
        )
        return TrainResponse(job=record.id, status=record.state.value)

    def job_status(self, job: str) -> JobStatusResponse:
        return self.queue.get(job).to_status()

    def prelabel(self, request: PrelabelRequest) -> PrelabelResponse:
        """Queue a job that pre-annotates the project's tasks (labelbridge.prelabel)."""
        project = _project_or_error(request.project)
        record = self._record(project)
        known = self.settings.label_studio_url or (record.label_studio_url if record else None)
        url = request.label_studio_url or known
        if not url:
            raise BadRequest(
                f"no Label Studio URL is known for project {project}",
                field="label_studio_url",
                fix="connect the backend in Label Studio (its /setup sends it), set "
                "LABEL_STUDIO_URL, or pass label_studio_url",
            )
        if url.rstrip("/") != (known or "").rstrip("/") and not self.settings.auth_enabled:
            # the job sends the project's Label Studio token there: not to anyone's URL
            raise BadRequest(
                "label_studio_url differs from the known Label Studio URL, and this backend "
                "has no auth: the token would go to a URL anyone can name",
                field="label_studio_url",
                fix="set LABEL_STUDIO_URL, or enable API_TOKEN or basic auth on the backend",
            )
        params = request.model_dump(exclude={"project"}, exclude_none=True)
        job = self.queue.submit(self._spec(project, "PRELABEL", kind="prelabel", params=params))
        return PrelabelResponse(job=job.id, status=job.state.value)

    # --- versions and projects ----------------------------------------------------------
    def versions(self, project: str | None = None) -> VersionsResponse:
        projects = [_project_or_error(project)] if project else self.store.projects()
        details: list[VersionInfo] = []
        for pid in projects:
            current = self.store.current_name(pid)
            for meta in self.store.versions(pid):
                details.append(
                    VersionInfo(
                        version=meta.version,
                        project=pid,
                        created_at=meta.created_at,
                        current=meta.version == current,
                        metrics=meta.metrics,
                    )
                )
        details.sort(key=lambda d: d.created_at, reverse=True)
        names = list(dict.fromkeys(d.version for d in details))
        if not names:
            # nothing trained yet: the version /setup reports (Label Studio lists it)
            names = [self.current_version(projects[0])] if projects else []
        return VersionsResponse(versions=names, details=details)

    def duplicate_model(self, request: DuplicateModelRequest) -> dict[str, Any]:
        src = _project_or_error(request.project_src, "project_src")
        dst = _project_or_error(request.project_dst, "project_dst")
        if self._record(src) is None and self.store.current_name(src) is None:
            raise UnknownProject(f"project {src} has no model to duplicate", field="project_src")
        self.store.duplicate(src, dst)
        with self._lock:
            self._records.pop(dst, None)
        return {"status": "ok", "project": dst, "model_version": self.current_version(dst)}

    def delete(self, request: DeleteRequest) -> dict[str, Any]:
        project = _project_or_error(request.project)
        if not self.store.delete(project):
            raise UnknownProject(f"project {project} has no model", field="project")
        with self._lock:
            self._records.pop(project, None)
        with self._state_lock:
            for key in [k for k in self._states if k[0] == project]:
                del self._states[key]
        return {"status": "deleted", "project": project}

    def validate(self, request: ValidateRequest) -> ValidateResponse:
        config = self._config(request.config, "config")
        return ValidateResponse(controls=sorted(config.controls))
