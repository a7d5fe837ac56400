"""What a worker does for a job: the same code for the embedded queue's child process, an RQ
work horse, and the in-process (inline) mode used by tests.

A job either publishes a complete new version or leaves the served one untouched: fit() writes
into the store's staging folder, and any failure (an exception, a `None` return, a kill) means
the staging folder is thrown away and `current` never moves.
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import logging
import threading
from collections.abc import Callable, Iterator
from typing import Any

from labelbridge.errors import JobError, ModelError, TooFewAnnotations, UnknownProject
from labelbridge.jobs._base import JobQueue, JobSpec
from labelbridge.model import Model, TrainingData, annotations_needed
from labelbridge.settings import Settings
from labelbridge.store import ProjectRecord, open_store

__all__ = [
    "Progress",
    "count_annotations",
    "job_context",
    "run_job",
    "run_prelabel",
    "run_spec",
]

log = logging.getLogger("labelbridge.jobs.runner")

Progress = Callable[[dict[str, Any]], None]

# --- the job id on every log line ---------------------------------------------------------
# A record factory rather than a LoggerAdapter: lines logged by the user's fit(), by libraries
# and by rq all carry the job id, which `labelbridge.logs` formatters print when present.
_current_job: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "labelbridge_job", default=None
)
_process_job: str | None = None  # set in processes that run a single job (threads see it too)
_factory_lock = threading.Lock()
_factory_installed = False


def _install_record_factory() -> None:
    global _factory_installed
    with _factory_lock:
        if _factory_installed:
            return
        previous = logging.getLogRecordFactory()

        def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
            record = previous(*args, **kwargs)
            job = _current_job.get() or _process_job
            if job is not None and not hasattr(record, "job"):
                record.job = job
            return record

        logging.setLogRecordFactory(factory)
        _factory_installed = True


@contextlib.contextmanager
def job_context(job_id: str, *, whole_process: bool = False) -> Iterator[None]:
    """Tag every log line made inside (and, with whole_process, in any thread) with the job id."""
    global _process_job
    _install_record_factory()
    token = _current_job.set(job_id)
    if whole_process:
        _process_job = job_id
    try:
        yield
    finally:
        _current_job.reset(token)
        if whole_process:
            _process_job = None


# --- the model, once per process ------------------------------------------------------------
_models: dict[str, Model] = {}
_models_lock = threading.Lock()


def _model_for(model_ref: str, settings: Settings) -> Model:
    """Import, instantiate and set up the model class once per process; a failed setup() is
    not cached, so the next job tries again (and reports the error again)."""
    with _models_lock:
        model = _models.get(model_ref)
        if model is None:
            from labelbridge.loader import load_model_class

            cls = load_model_class(model_ref)
            model = cls(settings)
            log.info("setting up model %s", cls.__name__)
            model.setup()
            _models[model_ref] = model
        return model


# --- helpers --------------------------------------------------------------------------------
def count_annotations(tasks: list[dict[str, Any]]) -> int:
    """Annotations fit() can learn from: skipped (cancelled) ones do not count."""
    return sum(
        1
        for task in tasks
        for annotation in task.get("annotations") or []
        if isinstance(annotation, dict) and not annotation.get("was_cancelled")
    )


def _jsonable(metrics: dict[str, Any]) -> dict[str, Any]:
    """Metrics as plain JSON (numpy scalars and the like become numbers or strings)."""

    def coerce(value: Any) -> Any:
        item = getattr(value, "item", None)
        if callable(item):
            with contextlib.suppress(Exception):
                return item()
        return str(value)

    result: dict[str, Any] = json.loads(json.dumps(metrics, default=coerce))
    return result


def _credentials(settings: Settings, record: ProjectRecord | None) -> tuple[str | None, str | None]:
    url = settings.label_studio_url or (record.label_studio_url if record else None)
    token: str | None = None
    if settings.label_studio_api_key is not None:
        token = settings.label_studio_api_key.get_secret_value() or None
    if token is None and record is not None:
        token = record.access_token
    return url, token


def _fetch_tasks(project: str, url: str | None, token: str | None) -> list[dict[str, Any]]:
    if not url or not token:
        missing = "URL" if not url else "token"
        raise JobError(
            f"cannot fetch the annotations of project {project}: no Label Studio {missing}",
            fix="set LABEL_STUDIO_URL and LABEL_STUDIO_API_KEY, or reconnect the backend in "
            "Label Studio so that /setup sends them",
        )
    if not project.isdigit():
        raise JobError(f"project {project!r} is not a Label Studio project id (a number)")
    from labelbridge.labelstudio import LabelStudio

    with LabelStudio(url, token) as client:
        return list(client.annotated_tasks(int(project)))


class _NothingToPublish(Exception):
    """Raised inside the staging context so that a `None` from fit() publishes nothing."""


# --- the job --------------------------------------------------------------------------------
def run_spec(
    job_id: str, spec: JobSpec, settings: Settings, *, progress: Progress | None = None
) -> dict[str, Any]:
    """Run any kind of job: `train`, or `prelabel`."""
    if spec.kind == "prelabel":
        return run_prelabel(job_id, spec, settings, progress=progress)
    if spec.kind == "train":
        result = run_job(job_id, spec, settings, progress=progress)
        version = result.get("model_version")
        if settings.prelabel_after_training and version:
            result["prelabel_job"] = _queue_prelabel(spec, settings, str(version))
        return result
    raise JobError(f"job kind {spec.kind!r} cannot run in a worker")


def _queue_prelabel(spec: JobSpec, settings: Settings, version: str) -> str | None:
    """PRELABEL_AFTER_TRAINING: pre-annotate with the version just published. It runs after
    this job (one job per project at a time); a failure to queue it fails no training."""
    try:
        queue = _origin_queue(settings)
        try:
            job = queue.submit(
                JobSpec(
                    kind="prelabel",
                    project=spec.project,
                    event="PRELABEL_AFTER_TRAINING",
                    model_ref=spec.model_ref,
                    params={"model_version": version},
                )
            )
        finally:
            queue.close()
    except Exception as exc:
        log.warning("could not queue the prelabel job after training: %s", exc)
        return None
    log.info("queued prelabel job %s with %s", job.id, version)
    return job.id


def _origin_queue(settings: Settings) -> JobQueue:
    """The queue this job came from: an RQ work horse's own (whatever JOB_QUEUE says in the
    worker's environment), else the one the settings name."""
    from labelbridge.jobs import open_queue

    try:
        from rq import get_current_job
    except ModuleNotFoundError:
        current = None
    else:
        current = get_current_job()
    if current is not None:
        from labelbridge.jobs.rq import RQJobQueue
        from labelbridge.settings import JobQueueKind

        update = {"job_queue": JobQueueKind.rq, "rq_queue_name": current.origin}
        return RQJobQueue(settings.model_copy(update=update))
    return open_queue(settings)


def run_prelabel(
    job_id: str, spec: JobSpec, settings: Settings, *, progress: Progress | None = None
) -> dict[str, Any]:
    """Pre-annotate the project in this process with the backend's model class (no HTTP):
    Label Studio's URL and token come from the settings or the project's /setup record."""
    from pydantic import SecretStr

    from labelbridge.labelstudio import LabelStudio
    from labelbridge.loader import load_model_class
    from labelbridge.predictors import InProcessPredictor, NullQueue
    from labelbridge.prelabel import Prelabeler, PrelabelOptions, PrelabelStats
    from labelbridge.service import Backend

    def report(stats: PrelabelStats) -> None:
        if progress is not None:
            try:
                progress({"stage": "prelabel", **stats.to_dict()})
            except Exception:
                log.debug("progress report failed", exc_info=True)

    with job_context(job_id):
        project = spec.project
        if not project.isdigit():
            raise JobError(f"project {project!r} is not a Label Studio project id (a number)")
        store = open_store(settings)
        url, token = _credentials(settings, store.get_project(project))
        url = spec.params.get("label_studio_url") or url
        if not url or not token:
            raise JobError(
                f"cannot pre-annotate project {project}: no Label Studio "
                f"{'URL' if not url else 'token'}",
                fix="set LABEL_STUDIO_URL and LABEL_STUDIO_API_KEY, or reconnect the backend in "
                "Label Studio so that /setup sends them",
            )
        options = PrelabelOptions(
            filter=spec.params.get("filter", "unlabeled"),
            batch_size=int(spec.params.get("batch_size", 32)),
            model_version=spec.params.get("model_version"),
        )
        # predict() sees the same Label Studio as this job; debug off: invalid items are
        # dropped and counted, not turned into a failed batch
        job_settings = settings.model_copy(
            update={
                "debug": False,
                "label_studio_url": url,
                "label_studio_api_key": SecretStr(token),
            }
        )
        model_cls = load_model_class(spec.model_ref)
        backend = Backend(
            model_cls, job_settings, model_ref=spec.model_ref, store=store, queue=NullQueue()
        )
        predictor = InProcessPredictor(backend)
        log.info("pre-annotating project %s (%s)", project, options.filter.value)
        try:
            with LabelStudio(url, token) as client:
                stats = Prelabeler(
                    client, predictor, int(project), options, token=token, on_progress=report
                ).run()
        finally:
            predictor.close()
        log.info("%s", stats.summary())
        if not stats.ok:
            raise JobError(stats.summary())
        return stats.to_dict()


def run_job(
    job_id: str, spec: JobSpec, settings: Settings, *, progress: Progress | None = None
) -> dict[str, Any]:
    """Train one version for `spec.project` and publish it; raise on any failure.

    Returns {"model_version": <new version or None>, "metrics": {...}}; `model_version` is None
    (and nothing is published) when fit() returned None.
    """

    def report(stage: str, **extra: Any) -> None:
        if progress is not None:
            try:
                progress({"stage": stage, **extra})
            except Exception:  # progress is informative: never fail a job over it
                log.debug("progress report failed", exc_info=True)

    with job_context(job_id):
        from labelbridge.label_config import LabelConfig

        project = spec.project
        log.info("training project %s (event %s)", project, spec.event)
        report("loading model")
        model = _model_for(spec.model_ref, settings)
        model_cls = type(model)
        store = open_store(settings)
        record = store.get_project(project)
        config_text = spec.label_config or (record.label_config if record else None)
        if not config_text:
            raise UnknownProject(
                f"project {project} has no labeling config: it was never set up",
                field="project",
                fix="connect the backend to the project in Label Studio (it calls /setup)",
            )
        label_config = LabelConfig.parse(config_text, max_bytes=settings.max_label_config_bytes)
        url, token = _credentials(settings, record)

        if spec.tasks is not None:
            tasks = spec.tasks
        else:
            report("fetching annotations")
            tasks = _fetch_tasks(project, url, token)
        count = count_annotations(tasks)
        needed, source = annotations_needed(model_cls, settings)
        if count < needed:
            raise TooFewAnnotations(
                f"project {project} has {count} usable annotation{'s' * (count != 1)} "
                f"({len(tasks)} task{'s' * (len(tasks) != 1)}); training needs at least {needed}",
                fix=f"annotate more tasks, or lower {source}",
            )
        log.info("%d annotations in %d tasks", count, len(tasks))

        current = store.current_name(project)
        previous_dir = None
        if current is not None:
            try:
                previous_dir = store.open_version(project, current)
            except Exception as exc:
                log.warning(
                    "previous version %s is unusable, training from scratch: %s", current, exc
                )

        report("training", annotations=count)
        result: dict[str, Any] = {"model_version": None, "metrics": {}}
        try:
            with store.new_version(
                project, model_cls.version_prefix(), parent=current, event=spec.event, job=job_id
            ) as staging:
                data = TrainingData(
                    project=project,
                    label_config=label_config,
                    tasks=tasks,
                    output_dir=staging.path,
                    model_version=staging.version,
                    event=spec.event,
                    previous_dir=previous_dir,
                    previous_version=current,
                    label_studio_url=url,
                    access_token=token,
                    _settings=settings,
                )
                metrics = model.fit(spec.event, data)
                if metrics is None:
                    raise _NothingToPublish
                if not isinstance(metrics, dict):
                    raise ModelError(
                        f"fit() returned a {type(metrics).__name__}; "
                        "expected a dict of metrics or None"
                    )
                staging.metrics = {**_jsonable(metrics), "trained_on": count}
                report("publishing", model_version=staging.version)
        except _NothingToPublish:
            log.info("fit() returned None: nothing published, %s stays current", current)
            result["detail"] = "fit() returned None: no new version was published"
            return result

        removed = store.prune(project, settings.keep_versions)
        if removed:
            log.info("pruned old versions: %s", ", ".join(removed))
        log.info("published %s (%s)", staging.version, staging.metrics)
        result.update(model_version=staging.version, metrics=staging.metrics)
        return result
