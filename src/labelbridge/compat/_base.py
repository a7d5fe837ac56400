"""`LabelStudioMLBase` and `ModelResponse` with the public SDK's names and behaviour."""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field

from labelbridge.label_config import LabelConfig

__all__ = ["KeyValue", "LabelStudioMLBase", "ModelResponse"]

log = logging.getLogger("labelbridge.compat")


class ModelResponse(BaseModel):
    """What an SDK-style predict() may return: predictions plus an optional version."""

    model_config = ConfigDict(extra="allow", protected_namespaces=())

    model_version: str | None = None
    predictions: list[Any] = Field(default_factory=list)

    def has_model_version(self) -> bool:
        return bool(self.model_version)

    def set_version(self, version: str) -> None:
        self.model_version = version

    def update_predictions_version(self) -> None:
        for prediction in self.predictions:
            if isinstance(prediction, dict) and not prediction.get("model_version"):
                prediction["model_version"] = self.model_version


class KeyValue:
    """Per-project key/value pairs (the SDK's get/set), in SQLite so that the server and the
    job workers (other processes) see the same values."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self._memory: dict[tuple[str, str], str] = {}
        self._local = threading.local()
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            with self._connect() as db:
                db.execute(
                    "CREATE TABLE IF NOT EXISTS kv (project TEXT, key TEXT, value TEXT, PRIMARY KEY (project, key))"
                )

    def _connect(self) -> sqlite3.Connection:
        db = getattr(self._local, "db", None)
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
        if self.path is None:
            self._memory[(project, key)] = value
            return
        self._connect().execute(
            "INSERT OR REPLACE INTO kv (project, key, value) VALUES (?, ?, ?)",
            (project, key, json.dumps(value)),
        )

    def has(self, project: str, key: str) -> bool:
        return self.get(project, key) is not None


_default_kv = KeyValue(None)


class LabelStudioMLBase:
    """The public SDK's base class, backed by labelbridge (same attribute and method names)."""

    INITIAL_MODEL_VERSION: ClassVar[str] = "0.0.1"
    TRAIN_EVENTS: ClassVar[tuple[str, ...]] = (
        "ANNOTATION_CREATED",
        "ANNOTATION_UPDATED",
        "ANNOTATION_DELETED",
        "START_TRAINING",
    )

    #: set by the wrapper: storage for get/set, and the project's Label Studio credentials
    _kv: ClassVar[KeyValue] = _default_kv
    _hostname: str | None = None
    _access_token: str | None = None
    _asset_reader: Callable[..., Path] | None = None

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
    def get(self, key: str) -> Any:
        return self._kv.get(self.project_id, key)

    def set(self, key: str, value: Any) -> None:
        self._kv.set(self.project_id, key, value)

    def has(self, key: str) -> bool:
        return self._kv.has(self.project_id, key)

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
        return json.loads(raw) if raw else {}

    @property
    def label_interface(self) -> LabelConfig:
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
        self.set(
            "extra_params",
            json.dumps(extra_params) if not isinstance(extra_params, str) else extra_params,
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

    def get_local_path(
        self,
        url: str,
        project_dir: str | None = None,
        ls_host: str | None = None,
        ls_access_token: str | None = None,
        task_id: int | None = None,
        *args: Any,
        **kwargs: Any,
    ) -> str:
        """A local file for a task's URL (Label Studio uploads, local files, http, s3 ...)."""
        from labelbridge.assets import get_local_path

        path = get_local_path(
            url,
            task_id=task_id,
            label_studio_url=ls_host or self._hostname,
            token=ls_access_token or self._access_token,
        )
        return str(path)

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
