"""Every setting in one typed object, read once from the environment.

Names follow the public SDK where it has one (MODEL_DIR, BASIC_AUTH_USER, LABEL_STUDIO_URL,
WORKERS ...) so existing deployments keep their environment. CLI flags build a copy with
overrides (`Settings(**flags)`), they never mutate the environment.
"""

from __future__ import annotations

import json
from enum import Enum
from pathlib import Path
from typing import Annotated, Any

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

__all__ = ["ConnectorSettings", "JobQueueKind", "ModelStoreKind", "Settings", "TrainPolicy"]


class JobQueueKind(str, Enum):
    embedded = "embedded"
    rq = "rq"


class ModelStoreKind(str, Enum):
    local = "local"
    s3 = "s3"


class TrainPolicy(str, Enum):
    """What an annotation webhook does: nothing, train every N annotations, or debounce."""

    off = "off"
    every = "every"
    debounce = "debounce"


def _split_list(value: Any) -> Any:
    """Lists from the environment: comma separated (`/data,/mnt`) or a JSON list."""
    if isinstance(value, str) and value.lstrip().startswith("["):
        return json.loads(value)
    if isinstance(value, str):
        return [item.strip() for item in value.split(",") if item.strip()]
    return value


class Settings(BaseSettings):
    """The backend's settings. See the README's settings table for each one."""

    model_config = SettingsConfigDict(
        env_prefix="", case_sensitive=False, extra="ignore", populate_by_name=True
    )

    # --- serving
    host: str = Field("0.0.0.0", description="Address the server binds to.")
    port: int = Field(9090, ge=0, le=65535, description="Port the server listens on.")
    debug: bool = Field(
        False,
        description="Detailed logs; tracebacks and invalid predictions are returned to the caller.",
    )
    log_level: str = Field("INFO", description="Log level when not in debug mode.")
    log_format: str = Field(
        "text", pattern="^(text|json)$", description="`text` or `json` log lines."
    )
    log_dir: Path | None = Field(
        None, description="Folder for uwsgi.log and rq.log; default `<backend>/logs`."
    )
    log_max_bytes: int = Field(10_000_000, ge=1024, description="Log file size before rotation.")
    production: bool = Field(
        False, description="Serve with several worker processes and log to files."
    )
    workers: int = Field(1, ge=1, le=64, description="Worker processes in production mode.")
    threads: int = Field(
        8,
        ge=1,
        le=256,
        description="Threads per worker for the model's predict(); 1: one call at a time "
        "(and none inline, see INLINE_PREDICT_MS).",
    )
    inline_predict_ms: float = Field(
        10.0,
        ge=0,
        description="A model whose predict() measures under this many ms per request, and "
        "spends its time computing rather than waiting, runs on the event loop, not in a "
        "thread (no GIL hand-offs: faster for small requests and CPU-bound batches); "
        "0: always in a thread.",
    )
    access_log: bool = Field(
        False,
        description="One log line per /predict request (errors, /train and /webhook are "
        "always logged).",
    )
    max_requests: int = Field(
        0, ge=0, description="Recycle a worker after this many requests (0: never)."
    )
    graceful_timeout: float = Field(
        30.0,
        gt=0,
        description="Seconds to finish requests in flight on shutdown (production: running "
        "training jobs too, which are then stopped and failed).",
    )

    # --- storage
    model_dir: Path | None = Field(
        None, description="Where model versions and project state live; default `<backend>/models`."
    )
    keep_versions: int = Field(
        5, ge=1, description="Model versions kept per project (older ones are deleted)."
    )
    model_store: ModelStoreKind = Field(
        ModelStoreKind.local,
        description="`local` (versions in MODEL_DIR) or `s3` (in a bucket, shared by machines; "
        "MODEL_DIR is then only a download cache).",
    )
    model_store_s3_bucket: str | None = Field(
        None,
        description="Bucket for `MODEL_STORE=s3`; credentials and endpoint come from the usual "
        "`AWS_*` variables (`AWS_ENDPOINT_URL` for MinIO and the like).",
    )
    model_store_s3_prefix: str = Field(
        "labelbridge/", description="Key prefix of the model store inside the bucket."
    )
    model_store_s3_current_ttl: float = Field(
        1.0,
        ge=0,
        description="Seconds a process reuses the served version's name before asking S3 "
        "again (asked on every /predict).",
    )

    # --- auth
    basic_auth_user: str | None = Field(None, description="Require HTTP basic auth with this user.")
    basic_auth_pass: SecretStr | None = Field(None, description="Password for basic auth.")
    api_token: SecretStr | None = Field(
        None, description="Require `Authorization: Bearer <token>` (or basic auth)."
    )

    # --- limits
    max_body_bytes: int = Field(
        100 * 1024 * 1024, ge=1024, description="Largest request body accepted."
    )
    max_label_config_bytes: int = Field(
        1024 * 1024, ge=256, description="Largest labeling config accepted."
    )
    max_tasks_per_request: int = Field(
        50_000, ge=1, description="Most tasks in one /predict request."
    )
    model_load_wait: float = Field(
        30.0, ge=0, description="Seconds /predict waits for a model still loading before 503."
    )

    # --- Label Studio (for fetching annotations and assets)
    label_studio_url: str | None = Field(
        None, description="Label Studio base URL; /setup's `hostname` is used when unset."
    )
    label_studio_api_key: SecretStr | None = Field(
        None, description="Label Studio token (legacy or personal access token)."
    )

    # --- training
    job_queue: JobQueueKind = Field(
        JobQueueKind.embedded, description="`embedded` (no services) or `rq` (Redis)."
    )
    redis_url: str = Field("redis://127.0.0.1:6379/0", description="Redis for the RQ job queue.")
    rq_queue_name: str = Field("labelbridge", description="RQ queue name.")
    job_workers: int = Field(
        1, ge=1, le=32, description="Embedded queue: jobs run at once (one per project at most)."
    )
    job_timeout: float = Field(
        3600.0, gt=0, description="Seconds before a training job is stopped."
    )
    job_memory_limit_mb: int | None = Field(
        None, ge=16, description="Address-space limit of a job process (embedded)."
    )
    train_on_annotations: TrainPolicy = Field(
        TrainPolicy.debounce, description="What annotation webhooks do: off, every, debounce."
    )
    train_every_n: int = Field(
        10, ge=1, description="With `every`: train after this many annotation events."
    )
    train_debounce_seconds: float = Field(
        10.0, ge=0, description="With `debounce`: quiet time before a burst trains once."
    )
    min_annotations_to_train: int = Field(
        1, ge=0, description="Fewer annotations than this fail the job with a clear error."
    )
    prelabel_after_training: bool = Field(
        False,
        description="When a training job publishes a version, queue a prelabel job that "
        "pre-annotates the project's unlabeled tasks with it.",
    )

    # --- assets
    asset_cache_dir: Path | None = Field(
        None,
        description="Download cache for task assets; default `<model_dir>/.assets`. Set, it is "
        "one folder (and one size bound) for every backend of a multi-backend server.",
    )
    asset_cache_max_bytes: int = Field(
        2 * 1024**3,
        ge=0,
        description="Size bound of the asset cache, shared by all processes: past it the least "
        "recently used assets are removed, down to 90% (never one used in the last 5 minutes). "
        "2 GiB: thousands of images, yet fits a small container disk. 0: unbounded. With "
        "several backends (`labelbridge start a=.. b=..`) and no ASSET_CACHE_DIR, each has its "
        "own cache (`<model_dir>/<name>/.assets`) and its own bound: the disk holds up to "
        "their sum.",
    )
    asset_max_bytes: int = Field(200 * 1024 * 1024, ge=1, description="Largest asset downloaded.")
    asset_timeout: float = Field(30.0, gt=0, description="Seconds per asset download.")
    asset_local_roots: Annotated[list[Path], NoDecode] = Field(
        default_factory=list, description="Folders local paths may be read from (comma separated)."
    )
    asset_allowed_hosts: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description="If set, only these hosts are fetched (comma separated)."
    )
    asset_allow_private: bool = Field(
        False, description="Allow fetching from private/loopback/link-local addresses."
    )
    asset_concurrency: int = Field(8, ge=1, le=256, description="Concurrent downloads per batch.")

    @field_validator("asset_local_roots", "asset_allowed_hosts", mode="before")
    @classmethod
    def _lists(cls, value: Any) -> Any:
        return _split_list(value)

    @property
    def auth_enabled(self) -> bool:
        return bool(self.basic_auth_user or self.api_token)

    def resolved_model_dir(self, backend_dir: Path | None = None) -> Path:
        if self.model_dir is not None:
            return self.model_dir
        return (backend_dir or Path.cwd()) / "models"

    def resolved_log_dir(self, backend_dir: Path | None = None) -> Path:
        if self.log_dir is not None:
            return self.log_dir
        return (backend_dir or Path.cwd()) / "logs"

    def masked(self) -> dict[str, Any]:
        """The settings in force, secrets masked: safe for logs and the status page."""
        out: dict[str, Any] = {}
        for name, value in self.model_dump(mode="json").items():
            field = getattr(self, name)
            if isinstance(field, SecretStr):
                out[name] = "********" if field.get_secret_value() else None
            else:
                out[name] = value
        return out


class ConnectorSettings(BaseSettings):
    """Label Studio's timeouts for calls to an ML backend, with its variable names and defaults."""

    model_config = SettingsConfigDict(env_prefix="ML_", case_sensitive=False, extra="ignore")

    connection_timeout: float = Field(1.0, gt=0)
    timeout_default: float = Field(100.0, gt=0)
    timeout_train: float = Field(30.0, gt=0)
    timeout_predict: float = Field(100.0, gt=0)
    timeout_health: float = Field(1.0, gt=0)
    timeout_setup: float = Field(3.0, gt=0)
    timeout_duplicate_model: float = Field(1.0, gt=0)
    timeout_delete: float = Field(1.0, gt=0)
    timeout_train_job_status: float = Field(1.0, gt=0)
