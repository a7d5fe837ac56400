"""`LabelStudioMLBase` and `ModelResponse` with the public SDK's names and behaviour.

State (`get`/`set`) goes through a `StateView`, which the wrapper (`_wrap.py`) gives every
object it builds; the same functions replace the state and file access of the SDK's own base
class when a backend imports `label_studio_ml` unchanged.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field

from labelbridge.label_config import LabelConfig

if TYPE_CHECKING:
    from labelbridge.assets import AssetResolver

__all__ = ["KeyValue", "LabelStudioMLBase", "ModelResponse", "StateView"]

log = logging.getLogger("labelbridge.compat")


class ModelResponse(BaseModel):
    """What an SDK-style predict() may return: predictions plus an optional version."""

    model_config = ConfigDict(extra="allow", protected_namespaces=(), arbitrary_types_allowed=True)

    model_version: str | None = None
    predictions: list[Any] = Field(default_factory=list)

    def has_model_version(self) -> bool:
        return bool(self.model_version)

    def set_version(self, version: str) -> None:
        """As in the SDK: the response's version, and each prediction's that has none."""
        self.model_version = version
        self.update_predictions_version()

    def update_predictions_version(self) -> None:
        for entry in self.predictions:
            for prediction in entry if isinstance(entry, list) else [entry]:
                if isinstance(prediction, dict):
                    if not prediction.get("model_version"):
                        prediction["model_version"] = self.model_version
                elif hasattr(prediction, "model_version") and not prediction.model_version:
                    prediction.model_version = self.model_version


class KeyValue:
    """Per-project key/value pairs (the SDK's get/set), in SQLite so that every process of a
    backend on this machine (server workers, job children) sees the same values."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self._memory: dict[tuple[str, str], Any] = {}
        self._local = threading.local()
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._connect().execute(
                "CREATE TABLE IF NOT EXISTS kv (project TEXT, key TEXT, value TEXT, "
                "PRIMARY KEY (project, key))"
            )

    def _connect(self) -> sqlite3.Connection:
        db: sqlite3.Connection | None = getattr(self._local, "db", None)
        if db is None:
            db = sqlite3.connect(str(self.path), timeout=30, isolation_level=None)
            db.execute("PRAGMA journal_mode=WAL")
            self._local.db = db
        return db

    def get(self, project: str, key: str) -> Any:
        if self.path is None:
            return self._memory.get((project, key))
        row = (
            self._connect()
            .execute("SELECT value FROM kv WHERE project=? AND key=?", (project, key))
            .fetchone()
        )
        return None if row is None else json.loads(row[0])

    def set(self, project: str, key: str, value: Any) -> None:
        text = json.dumps(value)  # refuse what another process could not read back, here
        if self.path is None:
            self._memory[(project, key)] = json.loads(text)
            return
        self._connect().execute(
            "INSERT OR REPLACE INTO kv (project, key, value) VALUES (?, ?, ?)",
            (project, key, text),
        )


class StateView:
    """What `get`/`set` see for one SDK object.

    Keys that a training job's fit() set belong to the version that job published (saved with
    its files), so predictions labelled with a version use that version's state: never the
    state of a job still running or of one that failed. They are layered over the project's
    shared keys (label config, extra params, whatever setup() or predict() set), which live in
    `KeyValue`. While `collecting`, writes are kept for the version being trained instead.
    """

    def __init__(
        self, kv: KeyValue, project: str, version_keys: dict[str, Any] | None = None
    ) -> None:
        self.kv = kv
        self.project = project
        self.version_keys = dict(version_keys or {})
        self.written: dict[str, Any] | None = None

    def get(self, key: str) -> Any:
        if self.written is not None and key in self.written:
            return self.written[key]
        if key in self.version_keys:
            return self.version_keys[key]
        return self.kv.get(self.project, key)

    def set(self, key: str, value: Any) -> None:
        if self.written is not None:
            json.dumps(value)  # fail in fit(), where the error is readable, not at publish
            self.written[key] = value
            return
        self.kv.set(self.project, key, value)
        if key in self.version_keys:
            self.version_keys[key] = value

    def has(self, key: str) -> bool:
        return self.get(key) is not None

    def collect(self) -> None:
        self.written = {}

    def collected(self) -> dict[str, Any]:
        """The keys set since collect(); collection stops, and the view becomes the new
        version's (the object goes on seeing what it wrote)."""
        written, self.written = self.written or {}, None
        self.version_keys.update(written)
        return written


_default_kv = KeyValue(None)


# --- shared by our base and the SDK's own (the wrapper puts these on its classes) ------------
def _state(obj: Any) -> StateView:
    state: StateView | None = obj.__dict__.get("_lb_state")
    if state is None:  # an object built outside the wrapper (a unit test, a script)
        state = StateView(_default_kv, str(getattr(obj, "project_id", "") or ""))
        obj.__dict__["_lb_state"] = state
    return state


def state_get(self: Any, key: str) -> Any:
    return _state(self).get(key)


def state_set(self: Any, key: str, value: Any) -> None:
    _state(self).set(key, value)


def state_has(self: Any, key: str) -> bool:
    return _state(self).has(key)


def local_path(
    self: Any,
    url: str,
    project_dir: str | None = None,
    ls_host: str | None = None,
    ls_access_token: str | None = None,
    task_id: int | None = None,
    *args: Any,
    **kwargs: Any,
) -> str:
    """A local file for a task's value (Label Studio uploads, local files, http, s3 ...).

    Through labelbridge's asset reader with the project's Label Studio URL and token (from the
    settings or /setup): the SDK's own reader only knows LABEL_STUDIO_URL and sends the legacy
    token, which a default Label Studio refuses. `project_dir` is ignored.
    """
    resolver: AssetResolver | None = self.__dict__.get("_lb_assets")
    if resolver is not None and ls_host is None and ls_access_token is None:
        return str(resolver.get_local_path(url, task_id=task_id))
    from labelbridge.assets import get_local_path

    return str(
        get_local_path(
            url,
            task_id=task_id,
            settings=resolver.settings if resolver is not None else None,
            label_studio_url=ls_host or (resolver.label_studio_url if resolver else None),
            token=ls_access_token,
        )
    )


class LabelStudioMLBase:
    """The public SDK's base class, backed by labelbridge (same attribute and method names)."""

    INITIAL_MODEL_VERSION: ClassVar[str] = "0.0.1"
    TRAIN_EVENTS: ClassVar[tuple[str, ...]] = (
        "ANNOTATION_CREATED",
        "ANNOTATION_UPDATED",
        "ANNOTATION_DELETED",
        "START_TRAINING",
    )

    def __init__(
        self, project_id: str | None = None, label_config: str | None = None, **_: Any
    ) -> None:
        self.project_id = str(project_id or "")
        self._config: LabelConfig | None = None
        if label_config is not None:
            self.use_label_config(label_config)
        if not self.model_version:
            self.set("model_version", self.INITIAL_MODEL_VERSION)
        self.setup()

    def setup(self) -> None:
        """Override to load the model; runs when the object is created."""

    # --- state
    get = state_get
    set = state_set
    has = state_has

    def use_label_config(self, label_config: str) -> None:
        self._config = LabelConfig.parse(label_config)
        if self.get("label_config") != label_config:
            self.set("label_config", label_config)
            self.set("parsed_label_config", json.dumps(self._config.to_parsed_dict()))

    @property
    def label_config(self) -> str | None:
        value = self.get("label_config")
        return None if value is None else str(value)

    @property
    def parsed_label_config(self) -> dict[str, Any]:
        if self._config is not None:
            return self._config.to_parsed_dict()
        raw = self.get("parsed_label_config")
        if not raw:
            return {}
        value = json.loads(raw) if isinstance(raw, str) else raw
        return value if isinstance(value, dict) else {}

    @property
    def label_interface(self) -> LabelConfig:
        """labelbridge's `LabelConfig` (not label_studio_sdk's `LabelInterface`)."""
        if self._config is None:
            text = self.label_config
            if not text:
                raise ValueError(
                    "no label config: Label Studio has not called /setup for this project"
                )
            self._config = LabelConfig.parse(text)
        return self._config

    @property
    def model_version(self) -> str | None:
        value = self.get("model_version")
        return None if value in (None, "") else str(value)

    def bump_model_version(self) -> str:
        current = self.model_version or self.INITIAL_MODEL_VERSION
        parts = current.split(".")
        if len(parts) == 3 and all(p.isdigit() for p in parts):
            bumped = f"{parts[0]}.{int(parts[1]) + 1}.0"
        else:
            bumped = f"{current}.1"
        self.set("model_version", bumped)
        return bumped

    def set_extra_params(self, extra_params: Any) -> None:
        """Stored as JSON text, as the SDK reads it back (Label Studio sends an object)."""
        self.set(
            "extra_params",
            extra_params if isinstance(extra_params, str) else json.dumps(extra_params),
        )

    @property
    def extra_params(self) -> dict[str, Any]:
        raw = self.get("extra_params")
        if not raw:
            return {}
        try:
            value = json.loads(raw) if isinstance(raw, str) else raw
        except ValueError:
            return {}
        return value if isinstance(value, dict) else {}

    # --- the methods users override
    def predict(
        self, tasks: list[dict[str, Any]], context: dict[str, Any] | None = None, **kwargs: Any
    ) -> Any:
        return []

    def fit(self, event: str, data: Any, **kwargs: Any) -> Any:
        return None

    def process_event(
        self, event: str, data: Any, job_id: str | None, additional_params: dict[str, Any]
    ) -> Any:
        if event in self.TRAIN_EVENTS:
            return self.fit(event, data, job_id=job_id, **additional_params)
        return None

    # --- helpers the SDK offers
    def get_first_tag_occurence(
        self,
        control_type: str | tuple[str, ...],
        object_type: str | tuple[str, ...],
        name_filter: Callable[[str], bool] | None = None,
        to_name_filter: Callable[[str], bool] | None = None,
    ) -> tuple[str, str, str]:
        return self.label_interface.get_first_tag_occurence(
            control_type, object_type, name_filter=name_filter, to_name_filter=to_name_filter
        )

    get_local_path = local_path

    def preload_task_data(
        self, task: dict[str, Any], value: Any = None, read_file: bool = True
    ) -> Any:
        if value is None:
            value = task.get("data")
        if isinstance(value, dict):
            return {k: self.preload_task_data(task, v, read_file) for k, v in value.items()}
        if isinstance(value, list):
            return [self.preload_task_data(task, v, read_file) for v in value]
        if isinstance(value, str) and value.startswith(
            ("http://", "https://", "/data/", "s3://", "gs://", "azure-blob://")
        ):
            path = self.get_local_path(value, task_id=task.get("id"))
            return Path(path).read_text(encoding="utf-8") if read_file else path
        return value
