"""Wrapping an SDK-style class (ours or label_studio_ml's) into a `labelbridge.Model`."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

from labelbridge.model import Model, PredictContext, TrainingData

__all__ = ["wrap_sdk_model"]


def _strip_versions(raw: Any) -> Any:
    """Predictions carry the version our store publishes, not the SDK object's own string."""
    predictions = getattr(raw, "predictions", raw)
    if predictions is None:
        return []
    out = []
    for item in predictions:
        if hasattr(item, "model_dump"):
            item = item.model_dump(exclude_none=True)
        if isinstance(item, dict):
            item = {k: v for k, v in item.items() if k != "model_version"}
        out.append(item)
    return out


def wrap_sdk_model(sdk_cls: type) -> type[Model]:
    """A Model that keeps one SDK object per project (the SDK rebuilds one per request)."""

    class SDKModel(Model):
        name = sdk_cls.__name__.lower()
        wrapped = sdk_cls

        def setup(self) -> None:
            self._objects: dict[tuple[str, str], Any] = {}
            self._lock = threading.Lock()
            self._kv = None
            if self.settings is not None and _is_ours(sdk_cls):
                from labelbridge.compat._base import KeyValue

                model_dir = self.settings.model_dir or Path.cwd() / "models"
                self._kv = KeyValue(Path(model_dir) / "compat-kv.sqlite3")

        def _object(self, project: str, config: str, url: str | None, token: str | None) -> Any:
            key = (project, config)
            with self._lock:
                obj = self._objects.get(key)
                if obj is None:
                    if self._kv is not None:
                        sdk_cls._kv = self._kv  # type: ignore[attr-defined]
                    obj = sdk_cls(project_id=project, label_config=config)
                    obj._hostname, obj._access_token = url, token
                    self._objects = {k: v for k, v in self._objects.items() if k[0] != project}
                    self._objects[key] = obj
                return obj

        def predict(self, tasks: list[dict[str, Any]], context: PredictContext) -> Any:
            obj = self._object(
                context.project,
                context.label_config.raw,
                context.label_studio_url,
                context.access_token,
            )
            raw = obj.predict(
                tasks,
                context=context.interactive,
                login=context.params.get("login"),
                password=context.params.get("password"),
            )
            return _strip_versions(raw)

        def fit(self, event: str, data: TrainingData) -> dict[str, Any] | None:
            obj = self._object(
                data.project, data.label_config.raw, data.label_studio_url, data.access_token
            )
            payload: Any = (
                data.tasks
                if event == "TRAIN"
                else {
                    "project": {"id": _as_int(data.project), "label_config": data.label_config.raw},
                    "annotations": data.tasks,
                }
            )
            result = obj.fit(event, payload, job_id=data.model_version)
            (data.output_dir / "sdk_fit.txt").write_text(repr(result)[:10_000], encoding="utf-8")
            metrics: dict[str, Any] = {"trained_on": data.annotation_count}
            if isinstance(result, dict):
                metrics.update(
                    {k: v for k, v in result.items() if isinstance(v, (int, float, str, bool))}
                )
            version = getattr(obj, "model_version", None)
            if version:
                metrics["sdk_model_version"] = str(version)
            return metrics

    SDKModel.__name__ = sdk_cls.__name__
    SDKModel.__qualname__ = sdk_cls.__qualname__
    return SDKModel


def _is_ours(cls: type) -> bool:
    from labelbridge.compat._base import LabelStudioMLBase

    return issubclass(cls, LabelStudioMLBase)


def _as_int(project: str) -> int | str:
    return int(project) if project.isdigit() else project
