"""Model stores: where trained versions live, per project."""

from __future__ import annotations

from pathlib import Path

from labelbridge.errors import StoreError
from labelbridge.settings import ModelStoreKind, Settings
from labelbridge.store._base import ModelStore, ProjectRecord, Staging, VersionMeta
from labelbridge.store.local import LocalModelStore
from labelbridge.store.s3 import S3ModelStore  # boto3 is imported only when one is created

__all__ = [
    "LocalModelStore",
    "ModelStore",
    "ProjectRecord",
    "S3ModelStore",
    "Staging",
    "VersionMeta",
    "open_store",
]


def open_store(settings: Settings, backend_dir: Path | None = None) -> ModelStore:
    """The store the settings name: a folder (MODEL_DIR), or S3 with MODEL_DIR as its cache."""
    model_dir = settings.resolved_model_dir(backend_dir)
    if settings.model_store is ModelStoreKind.s3:
        if not settings.model_store_s3_bucket:
            raise StoreError(
                "MODEL_STORE=s3 needs a bucket",
                field="MODEL_STORE_S3_BUCKET",
                fix="set MODEL_STORE_S3_BUCKET (and the AWS_* credentials)",
            )
        return S3ModelStore(
            settings.model_store_s3_bucket,
            settings.model_store_s3_prefix,
            cache_dir=model_dir / ".s3-cache",
            current_ttl=settings.model_store_s3_current_ttl,
        )
    return LocalModelStore(model_dir)
