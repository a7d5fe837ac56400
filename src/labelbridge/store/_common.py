"""Helpers both stores share: name checks, checksums, the staging object, writers' locks."""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from labelbridge.errors import StoreError
from labelbridge.store._base import VersionMeta

__all__ = [
    "META",
    "SAFE_NAME",
    "StagingFolder",
    "abandoned",
    "check_name",
    "sha256_file",
    "writer_lock",
]

#: a version's metadata file; never listed in its own checksums
META = "_meta.json"
#: project ids and version names become folder names and S3 key parts: keep them boring
SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,127}$")


@contextlib.contextmanager
def writer_lock(path: Path) -> Iterator[None]:
    """Held (flock, exclusive) by a writer for the whole life of its staging folder: a sweep
    removes a staging folder only if it can take its lock (`abandoned`). A pid does not tell:
    containers sharing a hostname have separate PID namespaces, so a live writer of another
    container looks dead; the kernel drops the lock of a killed process, whatever its namespace.

    Take it before the staging folder exists; it is deleted (while held) on exit, so leave the
    block only once the folder is gone. A lock file deleted by a sweep between our open and our
    flock is not the one at the path any more: start over."""
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            if _is_at(fd, path):
                break
        except BaseException:
            os.close(fd)
            raise
        os.close(fd)
    try:
        yield
    finally:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        os.close(fd)


@contextlib.contextmanager
def abandoned(path: Path) -> Iterator[bool]:
    """For a sweep: True (and the lock held for the block) if no writer holds this staging
    folder's lock, taken without waiting; the lock file is deleted (while held) on exit."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    except OSError:
        yield False
        return
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:  # a live writer holds it (BlockingIOError), or no locks here
            yield False
            return
        if not _is_at(fd, path):  # deleted meanwhile by another sweep: its business
            yield False
            return
        try:
            yield True
        finally:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
    finally:
        os.close(fd)


def _is_at(fd: int, path: Path) -> bool:
    try:
        here = os.stat(path)
    except FileNotFoundError:
        return False
    mine = os.fstat(fd)
    return (here.st_dev, here.st_ino) == (mine.st_dev, mine.st_ino)


def check_name(kind: str, value: str) -> str:
    """Refuse names that could escape a folder or a key prefix."""
    if not SAFE_NAME.match(value) or ".." in value:
        raise StoreError(f"{kind} {value[:80]!r} is not a valid name", field=kind)
    return value


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


@dataclass
class StagingFolder:
    """A version being written (the `Staging` protocol): fit() fills `path`."""

    path: Path
    version: str
    metrics: dict[str, Any] = field(default_factory=dict)
    _made: tuple[int, int, int] | None = field(default=None, repr=False)

    def create(self) -> None:
        """Make the folder and remember which one it is (for `check_intact`)."""
        self.path.mkdir(parents=True)
        made = self.path.stat()
        self._made = (made.st_dev, made.st_ino, made.st_mtime_ns)

    def check_intact(self) -> None:
        """Refuse to publish a staging folder that was removed under the writer (by a sweep
        that took it for a dead writer's, or anyone else): gone, made again, or emptied after
        files were written into it. Its files would be missing from the version."""
        if self._made is None:
            return
        try:
            now = self.path.stat()
        except FileNotFoundError:
            raise self._vanished("no longer exists") from None
        if (now.st_dev, now.st_ino) != self._made[:2]:
            raise self._vanished("was removed and made again")
        if now.st_mtime_ns != self._made[2] and not any(self.path.iterdir()):
            raise self._vanished("is empty, though files were written into it")

    def _vanished(self, what: str) -> StoreError:
        return StoreError(
            f"version {self.version}: the staging folder {self.path} {what} before the "
            "publish: refusing to publish a version with missing files",
            fix="retry the job; check that nothing else deletes the model store's staging folders",
        )

    def files(self) -> Iterator[Path]:
        for item in sorted(self.path.rglob("*")):
            if item.is_file() and item.name != META:
                yield item

    def meta(
        self, project: str, *, parent: str | None, event: str | None, job: str | None
    ) -> VersionMeta:
        """The version's _meta.json: every file's sha256, the metrics fit() returned."""
        return VersionMeta(
            version=self.version,
            project=project,
            created_at=datetime.now(timezone.utc),
            metrics=self.metrics,
            files={
                item.relative_to(self.path).as_posix(): sha256_file(item) for item in self.files()
            },
            parent=parent,
            event=event,
            job=job,
        )
