"""A model store in a folder (local disk, or a shared volume for several machines).

Layout: `<root>/projects/<id>/project.json`, `versions/<version>/` (files + `_meta.json`),
`current` (the served version's name). A version is written into `.staging/`, checksummed,
then renamed into place; `current` is replaced with an atomic rename. A reader therefore sees
either the old version or the complete new one, never half a version.

A writer killed mid-version (SIGKILL, OOM: no `finally` runs) leaves its staging folder and its
`versions/.reserved-<version>` marker, which names its host, pid and staging folder. The next
`new_version` or `prune` of the project removes them once no process holds the writer's lock
(`.staging/<folder>.lock`, flock'ed by the writer for the life of its staging folder; the kernel
drops it with the process) and the marker's pid is gone from this host. The lock decides: a pid
alone does not, as containers sharing a hostname have separate PID namespaces; the pid check
spares writers of versions that took no lock. Writers of other hosts sharing the folder are
left alone, as before (whether their locks reach across the network filesystem is not known),
and an age would not do, as a staging folder lives as long as the training (the S3 store sweeps
by age because its unfinished objects exist only during the upload).
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import re
import shutil
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

from labelbridge._proc_util import HOSTNAME, pid_alive
from labelbridge.errors import CorruptModelVersion, StoreError, UnknownProject
from labelbridge.store._base import ProjectRecord, VersionMeta
from labelbridge.store._common import (
    META,
    SAFE_NAME,
    StagingFolder,
    abandoned,
    check_name,
    sha256_file,
    writer_lock,
)

__all__ = ["LocalModelStore"]

log = logging.getLogger("labelbridge.store")
#: how long a looked-up `current` is trusted before the next stat() (see current_name)
CURRENT_RECHECK_SECONDS = 0.002
#: a duplicate's `.copy-` folder untouched this long belongs to a killed copy
COPY_ABANDONED_SECONDS = 3600.0


def _lock_of(staging: Path) -> Path:
    """The writer's lock file, beside its staging folder (inside, it would be published)."""
    return staging.with_name(staging.name + ".lock")


def _atomic_write(path: Path, text: str, mode: int = 0o644) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


class LocalModelStore:
    """Model versions in a folder; safe for several processes (file locks, atomic renames)."""

    def __init__(self, root: Path | str) -> None:
        self.root = Path(root)
        (self.root / "projects").mkdir(parents=True, exist_ok=True)
        #: project -> (mtime of `current`, its name, time.monotonic() of the stat)
        self._current_cache: dict[str, tuple[int, str | None, float]] = {}
        self._current_paths: dict[str, str] = {}

    # --- paths and locks
    def _dir(self, project: str) -> Path:
        return self.root / "projects" / check_name("project", project)

    @contextlib.contextmanager
    def _lock(self, project: str) -> Iterator[None]:
        directory = self._dir(project)
        directory.mkdir(parents=True, exist_ok=True)
        with (directory / ".lock").open("a") as handle:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle.fileno(), fcntl.LOCK_UN)

    # --- projects
    def projects(self) -> list[str]:
        base = self.root / "projects"
        return sorted(p.name for p in base.iterdir() if p.is_dir() and SAFE_NAME.match(p.name))

    def get_project(self, project: str) -> ProjectRecord | None:
        path = self._dir(project) / "project.json"
        try:
            return ProjectRecord.model_validate_json(path.read_bytes())
        except FileNotFoundError:
            return None
        except ValueError as exc:
            raise StoreError(f"project {project}: project.json is unreadable: {exc}") from exc

    def put_project(self, record: ProjectRecord) -> None:
        # mode 0600: the record holds the Label Studio token
        _atomic_write(self._dir(record.project) / "project.json", record.model_dump_json(), 0o600)

    # --- versions
    def current_name(self, project: str) -> str | None:
        """One stat() per call (another process may publish at any time); the file is read
        again only when its mtime changed."""
        return self._current_name(project, 0.0)

    def current_name_nowait(self, project: str) -> tuple[bool, str | None]:
        """The event loop's look-up, on every inline /predict: at most one stat() per
        CURRENT_RECHECK_SECONDS (another process's publish seen 2 ms later is as good as at
        once, and at thousands of requests per second it spares most stats)."""
        return True, self._current_name(project, CURRENT_RECHECK_SECONDS)

    def _current_name(self, project: str, max_age: float) -> str | None:
        """`current`, looked at again if the last look is older than `max_age` seconds; a
        write from this process is seen at once. Paths are kept as strings: building them
        with pathlib cost more than the stat on every /predict."""
        now = time.monotonic()
        cached = self._current_cache.get(project)
        if cached is not None and now - cached[2] < max_age:
            return cached[1]
        path = self._current_paths.get(project)
        if path is None:
            path = str(self._dir(project) / "current")
            if len(self._current_paths) < 4096:
                self._current_paths[project] = path
        try:
            mtime = os.stat(path).st_mtime_ns
        except FileNotFoundError:
            self._current_cache[project] = (-1, None, now)
            return None
        if cached is not None and cached[0] == mtime:
            self._current_cache[project] = (mtime, cached[1], now)
            return cached[1]
        with open(path, encoding="utf-8") as handle:
            name = handle.read().strip() or None
        self._current_cache[project] = (mtime, name, now)
        return name

    def _read_meta(self, project: str, version: str) -> VersionMeta:
        path = self._dir(project) / "versions" / check_name("version", version) / META
        try:
            return VersionMeta.model_validate_json(path.read_bytes())
        except FileNotFoundError as exc:
            raise CorruptModelVersion(
                f"project {project}: version {version} has no {META}", field="version"
            ) from exc
        except ValueError as exc:
            raise CorruptModelVersion(
                f"project {project}: version {version}: bad metadata"
            ) from exc

    def current(self, project: str) -> VersionMeta | None:
        name = self.current_name(project)
        return None if name is None else self._read_meta(project, name)

    def versions(self, project: str) -> list[VersionMeta]:
        base = self._dir(project) / "versions"
        if not base.is_dir():
            return []
        metas = []
        for item in base.iterdir():
            if (item / META).is_file():
                with contextlib.suppress(CorruptModelVersion):
                    metas.append(self._read_meta(project, item.name))
        return sorted(metas, key=lambda m: m.created_at, reverse=True)

    def open_version(self, project: str, version: str) -> Path:
        meta = self._read_meta(project, version)
        folder = self._dir(project) / "versions" / version
        for rel, expected in meta.files.items():
            target = folder / rel
            if not target.is_file():
                raise CorruptModelVersion(f"project {project}: version {version}: {rel} is missing")
            if sha256_file(target) != expected:
                raise CorruptModelVersion(
                    f"project {project}: version {version}: {rel} does not match its checksum"
                )
        return folder

    def _next_number(self, project: str, prefix: str) -> int:
        # names reserved by writers still staging count too, or two writers pick the same one
        pattern = re.compile(rf"^(?:\.reserved-)?{re.escape(prefix)}-v(\d+)$")
        numbers = [0]
        base = self._dir(project) / "versions"
        if base.is_dir():
            for item in base.iterdir():
                match = pattern.match(item.name)
                if match:
                    numbers.append(int(match.group(1)))
        return max(numbers) + 1

    @contextlib.contextmanager
    def new_version(
        self,
        project: str,
        prefix: str,
        *,
        parent: str | None = None,
        event: str | None = None,
        job: str | None = None,
    ) -> Iterator[StagingFolder]:
        """Write files into the staging folder; on a clean exit the version is published."""
        staging_root = self._dir(project) / ".staging"
        staging_root.mkdir(parents=True, exist_ok=True)
        with contextlib.ExitStack() as held:
            with self._lock(project):
                self._sweep_dead_writers(project)
                version = f"{prefix}-v{self._next_number(project, prefix)}"
                # reserve the name so that a concurrent writer picks the next one; the marker
                # says who writes where, the lock (held until the staging folder is gone) that
                # the writer lives: a sweep under the project lock sees both or neither
                (self._dir(project) / "versions").mkdir(exist_ok=True)
                reserved = self._dir(project) / "versions" / f".reserved-{version}"
                path = staging_root / f"{version}.{uuid.uuid4().hex[:8]}"
                held.enter_context(writer_lock(_lock_of(path)))
                reserved.write_text(f"{HOSTNAME}\n{os.getpid()}\n{path}", encoding="utf-8")
            staging = StagingFolder(path=path, version=version)
            try:
                staging.create()
                yield staging
                staging.check_intact()
                meta = staging.meta(project, parent=parent, event=event, job=job)
                _atomic_write(path / META, meta.model_dump_json(indent=2))
                with self._lock(project):
                    os.replace(path, self._dir(project) / "versions" / version)
                    _atomic_write(self._dir(project) / "current", version)
                    self._current_cache.pop(project, None)
            finally:
                shutil.rmtree(path, ignore_errors=True)
                with contextlib.suppress(FileNotFoundError):
                    reserved.unlink()

    def _sweep_dead_writers(self, project: str) -> None:
        """Remove what writers killed mid-version left (SIGKILL, OOM: no `finally` ran).

        Only writers of this host whose lock is free and whose pid is gone; only folders in
        this project's `.staging/` (a marker names one: never trust it further). Call with the
        project locked (writers take their lock and write their marker under it)."""
        staging_root = self._dir(project) / ".staging"
        for marker in (self._dir(project) / "versions").glob(".reserved-*"):
            with contextlib.suppress(OSError, ValueError):
                host, pid, named = marker.read_text(encoding="utf-8").split("\n", 2)
                if host != HOSTNAME or pid_alive(int(pid)):
                    continue
                staging = Path(named)
                inside = staging.resolve().parent == staging_root.resolve()
                if not inside or not SAFE_NAME.match(staging.name):
                    log.warning(
                        "project %s: %s names %s, outside %s: left alone",
                        project,
                        marker.name,
                        named[:200],
                        staging_root,
                    )
                    continue
                with abandoned(_lock_of(staging)) as dead:
                    if not dead:
                        continue  # a live writer (of another PID namespace, say)
                    shutil.rmtree(staging, ignore_errors=True)
                    marker.unlink()
                log.info(
                    "project %s: removed the staging of %s, left by a killed writer (pid %s)",
                    project,
                    marker.name.removeprefix(".reserved-"),
                    pid,
                )

    def set_current(self, project: str, version: str) -> None:
        self._read_meta(project, version)
        with self._lock(project):
            _atomic_write(self._dir(project) / "current", version)
            self._current_cache.pop(project, None)

    # --- whole projects
    def duplicate(self, src: str, dst: str) -> None:
        source = self._dir(src)
        if not source.is_dir():
            raise UnknownProject(f"project {src} has no model to duplicate", field="project_src")
        target = self._dir(dst)
        tmp = target.with_name(f".{dst}.copy-{uuid.uuid4().hex[:8]}")
        shutil.copytree(
            source, tmp, ignore=shutil.ignore_patterns(".staging", ".lock", ".reserved-*")
        )
        for meta_path in tmp.glob(f"versions/*/{META}"):
            meta = VersionMeta.model_validate_json(meta_path.read_bytes())
            meta.project = dst
            meta_path.write_text(meta.model_dump_json(indent=2), encoding="utf-8")
        record_path = tmp / "project.json"
        if record_path.is_file():
            record = ProjectRecord.model_validate_json(record_path.read_bytes())
            record.project = dst
            record_path.write_text(record.model_dump_json(), encoding="utf-8")
        if target.exists():
            shutil.rmtree(target)
        os.replace(tmp, target)
        self._current_cache.pop(dst, None)

    def delete(self, project: str) -> bool:
        target = self._dir(project)
        if not target.exists():
            return False
        trash = target.with_name(f".{project}.deleted-{uuid.uuid4().hex[:8]}")
        os.replace(target, trash)
        shutil.rmtree(trash, ignore_errors=True)
        self._current_cache.pop(project, None)
        return True

    def prune(self, project: str, keep: int) -> list[str]:
        """Delete the oldest versions beyond `keep`; never the current one. Killed writers'
        leftovers go too (`_sweep_dead_writers`); only published versions are returned."""
        if (self._dir(project) / "versions").is_dir():  # else _lock would create the project
            with self._lock(project):
                self._sweep_dead_writers(project)
        self._sweep_trash(project)
        current = self.current_name(project)
        removed = []
        for meta in self.versions(project)[keep:]:
            if meta.version == current:
                continue
            shutil.rmtree(self._dir(project) / "versions" / meta.version, ignore_errors=True)
            removed.append(meta.version)
        return removed

    def _sweep_trash(self, project: str) -> None:
        """What a killed delete or duplicate left in the store's root: a `.deleted-` folder
        (renamed away before its removal: gone by intent), and a `.copy-` folder not touched
        for COPY_ABANDONED_SECONDS (a live copy writes into it: copies take seconds)."""
        now = time.time()
        for leftover in self._dir(project).parent.glob(f".{project}.*-*"):
            kind = leftover.name[len(project) + 2 :].split("-", 1)[0]
            try:
                idle = now - leftover.stat().st_mtime
            except FileNotFoundError:
                continue
            if kind == "deleted" or (kind == "copy" and idle > COPY_ABANDONED_SECONDS):
                shutil.rmtree(leftover, ignore_errors=True)
                log.info(
                    "project %s: removed %s, left by a killed %s", project, leftover.name, kind
                )

    def __repr__(self) -> str:
        return f"LocalModelStore({str(self.root)!r})"
