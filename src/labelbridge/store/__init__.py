"""Model stores: where trained versions live, per project."""

from __future__ import annotations

from pathlib import Path

from labelbridge.settings import Settings
from labelbridge.store._base import ModelStore, ProjectRecord, VersionMeta
from labelbridge.store.local import LocalModelStore

__all__ = ["LocalModelStore", "ModelStore", "ProjectRecord", "VersionMeta", "open_store"]


def open_store(settings: Settings, backend_dir: Path | None = None) -> LocalModelStore:
    """The store the settings name (today: a folder, MODEL_DIR)."""
    return LocalModelStore(settings.resolved_model_dir(backend_dir))
