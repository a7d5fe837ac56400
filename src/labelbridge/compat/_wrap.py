"""Wrapping an SDK-style class (ours, or `label_studio_ml`'s 1.x or 2.x) into a `labelbridge.Model`.

The SDK builds a model object per request and keeps training state in a key/value cache that
every process writes to at once. Here an object is built per (project, label config, model
version) and kept; the keys fit() sets are saved with the version the job publishes (see
`StateView`), so the version in /setup and in predictions always names the state used.
"""

from __future__ import annotations

import inspect
import json
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from labelbridge.compat._base import (
    KeyValue,
    LabelStudioMLBase,
    StateView,
    local_path,
    state_get,
    state_has,
    state_set,
)
from labelbridge.errors import BadRequest, MissingDependency
from labelbridge.model import Model, PredictContext, TrainingData

__all__ = ["wrap_sdk_model"]

log = logging.getLogger("labelbridge.compat")

Api = Literal["labelbridge", "v2", "v1"]

#: files a training job adds to the version it publishes
STATE_FILE = "sdk_state.json"  # keys set by fit() through self.set
OUTPUT_FILE = "sdk_fit_output.json"  # what fit() returned (the 1.x SDK's `train_output`)
_ANNOTATION_EVENTS = ("ANNOTATION_CREATED", "ANNOTATION_UPDATED")
_EXTRA_PARAMS_TTL = 5.0  # seconds a project's /setup record is reused for extra_params


@dataclass(frozen=True)
class Published:
    """A published version as the SDK object sees it: its keys and fit()'s return value."""

    keys: dict[str, Any] = field(default_factory=dict)
    train_output: Any = None


def _sdk_base(cls: type) -> type:
    for klass in cls.__mro__:
        if klass.__name__ == "LabelStudioMLBase":
            return klass
    raise TypeError(f"{cls!r} does not subclass a LabelStudioMLBase")


def api_of(cls: type) -> Api:
    """Which SDK the class was written for: ours, label_studio_ml 2.x (get/set, setup, fit on
    events) or 1.x (the PyPI release: fit on tasks returning `train_output`)."""
    base = _sdk_base(cls)
    if base is LabelStudioMLBase:
        return "labelbridge"
    if hasattr(base, "set") and hasattr(base, "setup"):
        return "v2"
    return "v1"


def _written_for(cls: type) -> Literal["v1", "v2"] | None:
    """Which API the user's own methods follow: 1.x fits tasks into a workdir, 2.x fits an
    event and has setup(); None when the class does not tell."""
    own = [k for k in cls.__mro__ if k.__name__ != "LabelStudioMLBase" and k is not object]
    fit = next((k.__dict__["fit"] for k in own if "fit" in k.__dict__), None)
    if fit is not None:
        try:
            names = list(inspect.signature(fit).parameters)[1:]
        except (TypeError, ValueError):
            names = []
        if names[:1] == ["event"]:
            return "v2"
        if names[:1] in (["tasks"], ["completions"]) or "workdir" in names:
            return "v1"
    if any("setup" in k.__dict__ for k in own):
        return "v2"
    return None


def check_api(cls: type) -> Api:
    """The API to serve the class with; an SDK of the other major version is an error that
    says what to do, not an AttributeError at the first request."""
    api = api_of(cls)
    written = _written_for(cls)
    if api == "v1" and written == "v2":
        raise MissingDependency(
            f"{cls.__name__} is written for label-studio-ml 2.x (fit(event, data), setup()), "
            "but the installed label_studio_ml is 1.x (PyPI's label-studio-ml 1.0.9)",
            fix="import LabelStudioMLBase and ModelResponse from labelbridge.compat instead, "
            "or install the 2.x SDK from its GitHub repository",
        )
    if api != "v1" and written == "v1":
        raise BadRequest(
            f"{cls.__name__} is written for label-studio-ml 1.x (fit(tasks, workdir)), which "
            "labelbridge.compat does not offer",
            fix="keep `from label_studio_ml.model import LabelStudioMLBase` and install "
            "label-studio-ml 1.x beside labelbridge, or port fit() to fit(event, data)",
        )
    return api


def _bind(cls: type) -> type:
    """A subclass of an SDK-imported class whose state and file access are labelbridge's.

    The SDK's base keeps get/set in a SQLite file with a per-process read cache (another
    process's writes stay invisible) and accepts only strings; its get_local_path ignores what
    /setup sent. Only methods the SDK's base defines are replaced, never the user's own.
    """
    overrides: dict[str, Any] = {}
    for name, function in (
        ("get", state_get),
        ("set", state_set),
        ("has", state_has),
        ("get_local_path", local_path),
    ):
        owner = next((k for k in cls.__mro__ if name in k.__dict__), None)
        if owner is None or owner.__name__ == "LabelStudioMLBase":
            overrides[name] = function
    namespace = {"__module__": cls.__module__, "__qualname__": cls.__qualname__, **overrides}
    return type(cls.__name__, (cls,), namespace)


def _call(function: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Call with the keyword arguments the function accepts (SDK code varies in signatures)."""
    try:
        parameters = inspect.signature(function).parameters.values()
    except (TypeError, ValueError):
        return function(*args, **kwargs)
    if not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters):
        names = {p.name for p in parameters}
        kwargs = {k: v for k, v in kwargs.items() if k in names}
    return function(*args, **kwargs)


def _plain(value: Any) -> Any:
    """Pydantic objects (the SDK's PredictionValue, our ResultItem ...) as plain data."""
    if hasattr(value, "model_dump"):
        return _plain(value.model_dump(exclude_none=True))
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def _without_versions(entry: Any) -> Any:
    """Predictions carry the version our store publishes, not the SDK object's own string."""
    if isinstance(entry, dict):
        return {k: v for k, v in entry.items() if k != "model_version"}
    if isinstance(entry, list):
        return [_without_versions(x) for x in entry]
    return entry


def predictions_of(raw: Any, count: int) -> Any:
    """The SDK's answers (a list, a ModelResponse, a dict with `predictions`, None) as ours.

    "No predictions" (None or an empty list) becomes None per task, labelbridge's way of
    saying so; the SDK's server answers an empty list, which Label Studio stores nothing for.
    """
    if isinstance(raw, dict) and "predictions" in raw:
        raw = raw["predictions"]
    raw = getattr(raw, "predictions", raw)
    if raw is None or (isinstance(raw, (list, tuple)) and not raw and count):
        return [None] * count
    if not isinstance(raw, (list, tuple)):
        return raw  # not a list: the server reports it as predict()'s error
    return [_without_versions(_plain(entry)) for entry in raw]


def _latest_annotation(
    tasks: list[dict[str, Any]],
) -> tuple[dict[str, Any], dict[str, Any]] | None:
    best: tuple[tuple[str, int], dict[str, Any], dict[str, Any]] | None = None
    for task in tasks:
        for annotation in task.get("annotations") or []:
            if annotation.get("was_cancelled"):
                continue
            key = (
                str(annotation.get("updated_at") or annotation.get("created_at") or ""),
                int(annotation.get("id") or 0),
            )
            if best is None or key > best[0]:
                best = (key, task, annotation)
    return None if best is None else (best[1], best[2])


def fit_event_and_data(event: str, data: TrainingData) -> tuple[str, dict[str, Any]]:
    """fit()'s arguments as the SDK's /webhook gives them: the event and the payload without
    `action`. Jobs do not carry Label Studio's payload, so it is rebuilt: `project` (id, label
    config, model version), for annotation events `annotation` and `task` (the most recent
    annotation: several events may have been coalesced into this job), and, a labelbridge
    addition, `tasks`: every annotated task this job trains on. The legacy /train becomes
    START_TRAINING, the event of the button that sends it."""
    project: dict[str, Any] = {
        "id": int(data.project) if data.project.isdigit() else data.project,
        "label_config": data.label_config.raw,
        "model_version": data.previous_version or "",
    }
    payload: dict[str, Any] = {"project": project, "tasks": data.tasks}
    if event in _ANNOTATION_EVENTS:
        latest = _latest_annotation(data.tasks)
        if latest is not None:
            task, annotation = latest
            payload["task"] = {k: v for k, v in task.items() if k != "annotations"}
            payload["annotation"] = {**annotation, "task": task.get("id")}
    return ("START_TRAINING" if event == "TRAIN" else event), payload


def _relocated(value: Any, old: str, new: str) -> Any:
    """Paths fit() wrote into the staging folder, pointed at the published one."""
    if isinstance(value, str) and old and old in value:
        return value.replace(old, new)
    if isinstance(value, dict):
        return {k: _relocated(v, old, new) for k, v in value.items()}
    if isinstance(value, list):
        return [_relocated(v, old, new) for v in value]
    return value


def load_published(path: Path) -> Published:
    keys: dict[str, Any] = {}
    output: Any = None
    state_file, output_file = path / STATE_FILE, path / OUTPUT_FILE
    if state_file.is_file():
        saved = json.loads(state_file.read_text(encoding="utf-8"))
        keys = _relocated(saved["keys"], saved.get("workdir", ""), str(path))
    if output_file.is_file():
        saved = json.loads(output_file.read_text(encoding="utf-8"))
        output = _relocated(saved["train_output"], saved.get("workdir", ""), str(path))
    return Published(keys, output)


def wrap_sdk_model(sdk_cls: type) -> type[Model]:
    """A Model serving an SDK-style class: one object per (project, config, version)."""
    api = check_api(sdk_cls)
    bound: Any = sdk_cls if api == "labelbridge" else _bind(sdk_cls)
    trains = sdk_cls.fit is not _sdk_base(sdk_cls).fit  # type: ignore[attr-defined]

    class SDKModel(Model):
        name = sdk_cls.__name__.lower()
        wrapped = sdk_cls

        def setup(self) -> None:
            self._objects: dict[tuple[str, str, str], Any] = {}
            self._building: dict[tuple[str, str, str], threading.Lock] = {}
            self._lock = threading.Lock()
            path = None
            if self.settings is not None:
                path = self.settings.resolved_model_dir() / "compat-kv.sqlite3"
            self._kv = KeyValue(path)
            self._store: Any = None
            self._extra: dict[str, tuple[float, Any]] = {}

        @property
        def can_train(self) -> bool:
            return trains

        def load(self, path: Path) -> Published:
            return load_published(path)

        # --- objects ----------------------------------------------------------------------
        def _build(
            self,
            project: str,
            config: str,
            state: StateView,
            published: Published | None,
            context: PredictContext | TrainingData,
        ) -> Any:
            """The SDK object, with our state and asset reader in place before its __init__
            (which reads and writes state, and calls setup())."""
            obj = bound.__new__(bound)
            obj.__dict__["_lb_state"] = state
            obj.__dict__["_lb_assets"] = context.assets
            kwargs: dict[str, Any] = {"project_id": project, "label_config": config}
            if api == "v1":
                kwargs.update(
                    train_output=published.train_output if published else None,
                    hostname=context.label_studio_url or "",
                    access_token=context.access_token or "",
                )
                _call(obj.__init__, **kwargs)
            else:
                obj.__init__(**kwargs)
            self._sync_extra_params(obj, project)
            return obj

        def _object(self, context: PredictContext) -> Any:
            published = context.state if isinstance(context.state, Published) else None
            key = (context.project, context.label_config.hash, context.model_version)
            with self._lock:
                obj = self._objects.get(key)
                if obj is not None:
                    return obj
                building = self._building.setdefault(key, threading.Lock())
            with building:  # one build per key; other projects are not held up
                with self._lock:
                    obj = self._objects.get(key)
                if obj is not None:
                    return obj
                try:
                    state = StateView(
                        self._kv, context.project, published.keys if published else None
                    )
                    obj = self._build(
                        context.project, context.label_config.raw, state, published, context
                    )
                    with self._lock:
                        # the project's objects of older versions or configs are dropped
                        self._objects = {
                            k: v for k, v in self._objects.items() if k[0] != context.project
                        }
                        self._objects[key] = obj
                finally:
                    with self._lock:
                        self._building.pop(key, None)
            return obj

        def _sync_extra_params(self, obj: Any, project: str) -> None:
            """/setup's extra_params, as the SDK's /setup hands them over: set_extra_params
            with JSON text (the SDK's own cache refuses the object Label Studio sends)."""
            setter = getattr(obj, "set_extra_params", None)
            if setter is None or self.settings is None:
                return
            now = time.monotonic()
            cached = self._extra.get(project)
            if cached is None or now - cached[0] > _EXTRA_PARAMS_TTL:
                try:
                    if self._store is None:
                        from labelbridge.store import open_store

                        self._store = open_store(self.settings)
                    record = self._store.get_project(project)
                except Exception:
                    log.debug("no /setup record for project %s", project, exc_info=True)
                    record = None
                cached = (now, record.extra_params if record is not None else None)
                self._extra[project] = cached
            params = cached[1]
            if params in (None, "", {}):
                return
            text = params if isinstance(params, str) else json.dumps(params)
            if obj.get("extra_params") != text:
                setter(text)

        # --- the Model API ----------------------------------------------------------------
        def predict(self, tasks: list[dict[str, Any]], context: PredictContext) -> Any:
            obj = self._object(context)
            obj.__dict__["_lb_assets"] = context.assets  # the token may have changed
            if api == "v1":
                obj.hostname = context.label_studio_url or ""
                obj.access_token = context.access_token or ""
            self._sync_extra_params(obj, context.project)
            raw = _call(
                obj.predict,
                tasks,
                context=context.interactive,
                login=context.params.get("login"),
                password=context.params.get("password"),
            )
            return predictions_of(raw, len(tasks))

        def fit(self, event: str, data: TrainingData) -> dict[str, Any] | None:
            published = load_published(data.previous_dir) if data.previous_dir else None
            state = StateView(self._kv, data.project, published.keys if published else None)
            obj = self._build(data.project, data.label_config.raw, state, published, data)
            workdir = str(data.output_dir)
            state.collect()
            if api == "v1":
                result = _call(
                    obj.fit, data.tasks, workdir=workdir, event=event, job_id=data.model_version
                )
            else:
                sdk_event, payload = fit_event_and_data(event, data)
                result = _call(
                    obj.fit, sdk_event, payload, job_id=data.model_version, workdir=workdir
                )
            written = state.collected()
            if result is None and not written:
                data.log.info("fit() returned nothing and set nothing: no new version")
                return None
            # the staging folder's path is kept, so paths into it can be moved on load
            keys = {**(published.keys if published else {}), **written}
            (data.output_dir / STATE_FILE).write_text(
                json.dumps({"workdir": workdir, "keys": keys}), encoding="utf-8"
            )
            (data.output_dir / OUTPUT_FILE).write_text(
                json.dumps({"workdir": workdir, "train_output": result}, default=str),
                encoding="utf-8",
            )
            metrics: dict[str, Any] = {}
            if isinstance(result, dict):
                metrics.update(
                    {k: v for k, v in result.items() if isinstance(v, (int, float, str, bool))}
                )
            version = getattr(obj, "model_version", None) if api != "v1" else None
            if version:
                metrics["sdk_model_version"] = str(version)
            return metrics

    SDKModel.__name__ = sdk_cls.__name__
    SDKModel.__qualname__ = sdk_cls.__qualname__
    return SDKModel
