"""The model store interface: versions per project, published whole or not at all."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import AbstractContextManager
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from pydantic import BaseModel, Field

__all__ = ["ModelStore", "ProjectRecord", "Staging", "VersionMeta"]


class VersionMeta(BaseModel):
    """What a published version is: its files' checksums, its metrics, what it came from."""

    version: str
    project: str
    created_at: datetime
    metrics: dict[str, Any] = Field(default_factory=dict)
    files: dict[str, str] = Field(default_factory=dict)  # relative path -> sha256
    parent: str | None = None
    event: str | None = None
    job: str | None = None


class ProjectRecord(BaseModel):
    """A project as /setup described it. Persisted so jobs and restarts know it too."""

    project: str
    label_config: str | None = None
    label_studio_url: str | None = None
    # repr=False: records end up in debug logs and tracebacks; the token must not
    access_token: str | None = Field(default=None, repr=False)
    extra_params: dict[str, Any] | str | None = None
    updated_at: datetime | None = None
    kv: dict[str, Any] = Field(default_factory=dict)


@runtime_checkable
class ModelStore(Protocol):
    """Where versions live. Two implementations: a local (or shared) folder, and S3.

    Both run the same contract tests (tests/store/test_store_contract.py)."""

    def projects(self) -> list[str]: ...

    def get_project(self, project: str) -> ProjectRecord | None: ...

    def put_project(self, record: ProjectRecord) -> None: ...

    def current(self, project: str) -> VersionMeta | None: ...

    def current_name(self, project: str) -> str | None:
        """The current version's name; cheap, as it is asked on every request."""
        ...

    def current_name_nowait(self, project: str) -> tuple[bool, str | None]:
        """(known, name): the current name if it can be had without blocking on the network
        (the event loop asks, to run a fast model inline), else (False, None)."""
        ...

    def versions(self, project: str) -> list[VersionMeta]:
        """Newest first."""
        ...

    def open_version(self, project: str, version: str) -> Path:
        """A local folder with the version's files, checksums verified."""
        ...

    def new_version(
        self,
        project: str,
        prefix: str,
        *,
        parent: str | None = None,
        event: str | None = None,
        job: str | None = None,
    ) -> AbstractContextManager[Staging]: ...

    def set_current(self, project: str, version: str) -> None:
        """Serve an existing version (a rollback); readers switch to it whole."""
        ...

    def duplicate(self, src: str, dst: str) -> None: ...

    def delete(self, project: str) -> bool: ...

    def prune(self, project: str, keep: int) -> list[str]: ...


class Staging(Protocol):
    """A version being written: files go into `path`; `metrics` are saved on publish."""

    path: Path
    version: str
    metrics: dict[str, Any]

    def files(self) -> Iterator[Path]: ...
