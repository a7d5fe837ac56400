"""A model store in an S3 bucket, so that servers and RQ workers on several machines share
versions without a shared filesystem.

Layout under `<prefix>projects/<id>/`: `project.json`, `current` (the served version's name),
`versions/<version>/` (files + `_meta.json`) and `reserved/<version>` (one marker per version
number ever handed out).

Why it is safe without locks:
- A PUT of one object is atomic: a reader sees the old object or the new one. A version's files
  are uploaded first, its `_meta.json` (the checksums) next, and `current` is replaced last, so
  whoever follows `current` finds a complete version. A version without `_meta.json` does not
  exist for readers (it is an upload in progress or a failed one).
- Version numbers: a writer creates `reserved/<name>` with `If-None-Match: *` (S3 conditional
  writes). Exactly one writer can create a given key, a loser gets 412 and tries the next
  number. Markers outlive their upload so that a number is never handed out twice; prune deletes
  them except the highest, which keeps numbers growing. The first reservation in a process checks
  that the endpoint really honours If-None-Match (some S3 clones ignore it) and refuses to
  number versions if it does not.
- `current_name` is asked on every /predict: it is cached for `current_ttl` seconds (default 1),
  so a process notices another machine's publish within that time, at most one GET per second
  per project. This process's own publish, rollback, duplicate and delete update it at once.
- A writer killed mid-upload (SIGKILL, OOM, a lost machine) leaves files without `_meta.json`,
  which readers never see, maybe incomplete multipart uploads (invisible, but stored) and its
  marker. `prune` deletes them once the version's newest object (S3's LastModified) is older
  than `UNFINISHED_MAX_AGE`: a day, far above any upload, since a younger one may be a writer
  still uploading. A writer lists its files before it writes `_meta.json`, so one stalled for
  longer than that fails rather than publish a version with a hole; the sweep asks for the
  version's `_meta.json` again right before deleting its files (skipped if it appeared), and the
  writer lists its files again after it published (and takes `current` back if any vanished).
  The marker goes too unless it is the highest, as do stale markers of writers that died before
  uploading anything. Staging folders (in `cache_dir`) of this machine's killed writers are
  removed once no process holds the writer's lock (`<folder>.lock`, beside it) and the pid in
  their name is gone, as the local store does.

open_version downloads a version once into `cache_dir`, checks every sha256 from `_meta.json`
and reuses the folder while it still matches (checksums are rechecked on each open, as the
local store does).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import re
import shutil
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from datetime import datetime, timezone
from pathlib import Path, PurePosixPath
from typing import Any, Literal, overload

from labelbridge._proc_util import HOSTNAME, pid_alive
from labelbridge.errors import CorruptModelVersion, MissingDependency, StoreError, UnknownProject
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

__all__ = ["UNFINISHED_MAX_AGE", "S3ModelStore"]

#: Seconds after which a version without `_meta.json` (and a multipart upload, a marker) is a
#: dead writer's, which `prune` deletes. Far above the longest upload (many GB over a slow
#: link): a writer still uploading must never lose its objects, and leftovers cost only space.
UNFINISHED_MAX_AGE = 24 * 3600.0

log = logging.getLogger("labelbridge.store")

_MISSING = frozenset({"NoSuchKey", "404", "NotFound"})
_TAKEN = frozenset({"PreconditionFailed", "412"})
_BUSY = frozenset({"ConditionalRequestConflict", "409"})  # another conditional PUT in flight
_NUMBERED = re.compile(r"^(?P<prefix>.+)-v(?P<number>\d+)$")
_RESERVE_ATTEMPTS = 50
_DELETE_BATCH = 1000  # DeleteObjects' limit
_DENIED = frozenset({"AccessDenied", "403", "NotImplemented", "501"})
# a staging folder is `<project>.<version>.<id>.<pid>@<host>`: whose it is, for the sweep
_HOST_TAG = re.sub(r"[^A-Za-z0-9_.\-]", "_", HOSTNAME)
_STAGING_OWNER = re.compile(r"\.(?P<pid>\d+)@(?P<host>[^@]+)$")


def _code(exc: BaseException) -> str:
    """The S3 error code of a botocore exception (its class name for client-side errors)."""
    response = getattr(exc, "response", None)
    if isinstance(response, dict):
        error = response.get("Error") or {}
        status = (response.get("ResponseMetadata") or {}).get("HTTPStatusCode")
        return str(error.get("Code") or status or type(exc).__name__)
    return type(exc).__name__


def _fix_for(code: str) -> str | None:
    if code == "NoSuchBucket":
        return "create the bucket, or set MODEL_STORE_S3_BUCKET to an existing one"
    if code in {"AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "403"}:
        return "check AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY (or the instance role) and the bucket policy"
    if code in {"NoCredentialsError", "PartialCredentialsError"}:
        return "set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or use an instance role)"
    if code in {"EndpointConnectionError", "ConnectTimeoutError", "ReadTimeoutError"}:
        return "check that S3 (or AWS_ENDPOINT_URL) is reachable from this machine"
    return None


def _deletion_order(keys: Iterable[str]) -> list[list[str]]:
    """`current` first, then metadata, then files: readers never follow a pointer into a hole."""
    pointers, metas, rest = [], [], []
    for key in keys:
        if key.endswith("/current"):
            pointers.append(key)
        elif key.endswith("/" + META):
            metas.append(key)
        else:
            rest.append(key)
    return [group for group in (pointers, metas, rest) if group]


class S3ModelStore:
    """Model versions in `s3://<bucket>/<prefix>`; safe for any number of writers and readers."""

    def __init__(
        self,
        bucket: str,
        prefix: str = "labelbridge/",
        *,
        cache_dir: Path | str,
        client: Any = None,
        current_ttl: float = 1.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if not bucket:
            raise StoreError(
                "the S3 model store needs a bucket",
                field="MODEL_STORE_S3_BUCKET",
                fix="set MODEL_STORE_S3_BUCKET",
            )
        self.bucket = bucket
        prefix = prefix.strip("/")
        self.prefix = f"{prefix}/" if prefix else ""
        self.current_ttl = current_ttl
        #: seconds since the epoch, compared with S3's LastModified (tests move it forward)
        self.clock = clock
        self._client = client if client is not None else _default_client()
        # one cache folder per bucket and prefix: two stores sharing cache_dir do not collide
        where = hashlib.sha256(f"{bucket}/{self.prefix}".encode()).hexdigest()[:10]
        self.cache_dir = Path(cache_dir) / f"{bucket}-{where}"
        self._current: dict[str, tuple[float, str | None]] = {}
        self._lock = threading.Lock()
        self._conditional_ok = False
        self._multipart_denied = False

    def __repr__(self) -> str:
        return f"S3ModelStore('s3://{self.bucket}/{self.prefix}')"

    # --- keys and raw S3 calls ----------------------------------------------------------
    def _project_key(self, project: str) -> str:
        return f"{self.prefix}projects/{check_name('project', project)}/"

    def _version_key(self, project: str, version: str) -> str:
        return f"{self._project_key(project)}versions/{check_name('version', version)}/"

    def _reserved_key(self, project: str, version: str) -> str:
        return f"{self._project_key(project)}reserved/{check_name('version', version)}"

    def _fail(self, action: str, key: str, exc: BaseException) -> StoreError:
        code = _code(exc)
        return StoreError(
            f"S3 {action} s3://{self.bucket}/{key} failed: {code}: {exc}", fix=_fix_for(code)
        )

    def _get(self, key: str) -> bytes | None:
        """The object's bytes, or None when there is no such key."""
        try:
            body: bytes = self._client.get_object(Bucket=self.bucket, Key=key)["Body"].read()
        except Exception as exc:
            if _code(exc) in _MISSING:
                return None
            raise self._fail("GET", key, exc) from exc
        return body

    def _put(self, key: str, body: bytes, content_type: str = "application/json") -> None:
        try:
            self._client.put_object(
                Bucket=self.bucket, Key=key, Body=body, ContentType=content_type
            )
        except Exception as exc:
            raise self._fail("PUT", key, exc) from exc

    @overload
    def _list(
        self, prefix: str, *, folders: bool = ..., stamped: Literal[False] = ...
    ) -> Iterator[str]: ...
    @overload
    def _list(self, prefix: str, *, stamped: Literal[True]) -> Iterator[tuple[str, float]]: ...
    def _list(
        self, prefix: str, *, folders: bool = False, stamped: bool = False
    ) -> Iterator[str] | Iterator[tuple[str, float]]:
        """Keys under `prefix` (full keys), with `stamped` as (key, LastModified in epoch
        seconds), or with `folders` the next path level's names."""
        return self._listing(prefix, folders, stamped)

    def _listing(self, prefix: str, folders: bool, stamped: bool) -> Iterator[Any]:
        kwargs: dict[str, Any] = {"Bucket": self.bucket, "Prefix": prefix}
        if folders:
            kwargs["Delimiter"] = "/"
        try:
            for page in self._client.get_paginator("list_objects_v2").paginate(**kwargs):
                if folders:
                    for item in page.get("CommonPrefixes") or ():
                        yield item["Prefix"][len(prefix) :].rstrip("/")
                else:
                    for item in page.get("Contents") or ():
                        if stamped:
                            yield item["Key"], item["LastModified"].timestamp()
                        else:
                            yield item["Key"]
        except Exception as exc:
            raise self._fail("LIST", prefix, exc) from exc

    def _exists(self, key: str) -> bool:
        """One HEAD: is there an object at `key` now."""
        try:
            self._client.head_object(Bucket=self.bucket, Key=key)
        except Exception as exc:
            if _code(exc) in _MISSING:
                return False
            raise self._fail("HEAD", key, exc) from exc
        return True

    def _delete(self, keys: Iterable[str]) -> None:
        """Delete keys group by group in `_deletion_order` (one batch does not order itself)."""
        for group in _deletion_order(keys):
            for start in range(0, len(group), _DELETE_BATCH):
                batch = [{"Key": key} for key in group[start : start + _DELETE_BATCH]]
                try:
                    answer = self._client.delete_objects(
                        Bucket=self.bucket, Delete={"Objects": batch, "Quiet": True}
                    )
                except Exception as exc:
                    raise self._fail("DELETE", batch[0]["Key"], exc) from exc
                errors = answer.get("Errors") or []
                if errors:
                    first = errors[0]
                    raise StoreError(
                        f"S3 DELETE s3://{self.bucket}/{first.get('Key')} failed: "
                        f"{first.get('Code')}: {first.get('Message')} "
                        f"({len(errors)} key(s) not deleted)",
                        fix=_fix_for(str(first.get("Code"))),
                    )

    # --- projects -----------------------------------------------------------------------
    def projects(self) -> list[str]:
        names = self._list(f"{self.prefix}projects/", folders=True)
        return sorted(name for name in names if SAFE_NAME.match(name) and ".." not in name)

    def get_project(self, project: str) -> ProjectRecord | None:
        body = self._get(self._project_key(project) + "project.json")
        if body is None:
            return None
        try:
            return ProjectRecord.model_validate_json(body)
        except ValueError as exc:
            raise StoreError(f"project {project}: project.json is unreadable: {exc}") from exc

    def put_project(self, record: ProjectRecord) -> None:
        # the record holds the Label Studio token: protect the bucket (policy, encryption)
        self._put(self._project_key(record.project) + "project.json", _json(record))

    # --- the current version ------------------------------------------------------------
    def _remember(self, project: str, name: str | None) -> None:
        with self._lock:
            self._current[project] = (time.monotonic(), name)

    def _forget(self, project: str) -> None:
        with self._lock:
            self._current.pop(project, None)

    def _fresh_current(self, project: str) -> str | None:
        body = self._get(self._project_key(project) + "current")
        name = body.decode("utf-8", "replace").strip() if body is not None else ""
        self._remember(project, name or None)
        return name or None

    def current_name(self, project: str) -> str | None:
        """Cached for `current_ttl` seconds: this is asked on every /predict."""
        with self._lock:
            cached = self._current.get(project)
        if cached is not None and time.monotonic() - cached[0] < self.current_ttl:
            return cached[1]
        return self._fresh_current(project)

    def current_name_nowait(self, project: str) -> tuple[bool, str | None]:
        """Known only while the cached name is fresh: else asking S3 would block."""
        with self._lock:
            cached = self._current.get(project)
        if cached is not None and time.monotonic() - cached[0] < self.current_ttl:
            return True, cached[1]
        return False, None

    def current(self, project: str) -> VersionMeta | None:
        name = self.current_name(project)
        return None if name is None else self._read_meta(project, name)[0]

    def set_current(self, project: str, version: str) -> None:
        self._read_meta(project, version)
        self._put(self._project_key(project) + "current", version.encode(), "text/plain")
        self._remember(project, version)

    # --- versions -----------------------------------------------------------------------
    def _read_meta(self, project: str, version: str) -> tuple[VersionMeta, bytes]:
        body = self._get(self._version_key(project, version) + META)
        if body is None:
            raise CorruptModelVersion(
                f"project {project}: version {version} has no {META}", field="version"
            )
        try:
            return VersionMeta.model_validate_json(body), body
        except ValueError as exc:
            raise CorruptModelVersion(
                f"project {project}: version {version}: bad metadata"
            ) from exc

    def versions(self, project: str) -> list[VersionMeta]:
        metas = []
        for name in self._list(self._project_key(project) + "versions/", folders=True):
            if not SAFE_NAME.match(name) or ".." in name:
                continue
            with contextlib.suppress(CorruptModelVersion):  # no _meta.json: not published
                metas.append(self._read_meta(project, name)[0])
        return sorted(metas, key=lambda m: m.created_at, reverse=True)

    def _cache_folder(self, project: str, version: str) -> Path:
        return self.cache_dir / "projects" / check_name("project", project) / version

    @contextlib.contextmanager
    def _cache_lock(self, folder: Path, *, wait: bool = True) -> Iterator[bool]:
        """Processes on one machine download a version once, not once each. With wait=False
        it yields False at once if another process holds the lock."""
        folder.parent.mkdir(parents=True, exist_ok=True)
        with (folder.parent / f".{folder.name}.lock").open("a") as handle:
            try:
                fcntl.flock(handle.fileno(), fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
            except BlockingIOError:
                yield False
                return
            try:
                yield True
            finally:
                fcntl.flock(handle.fileno(), fcntl.LOCK_UN)

    def _sweep_cache_leftovers(self, project: str) -> None:
        """Download and stale folders of processes killed mid-download (`.<version>.download-`,
        `.<version>.stale-`): each is made under its version's lock, so one whose lock is
        free now has no live writer."""
        parent = self.cache_dir / "projects" / check_name("project", project)
        with contextlib.suppress(OSError):
            for item in parent.glob(".*-*"):
                version, dot, kind = item.name[1:].rpartition(".")
                if not dot or kind.split("-", 1)[0] not in ("download", "stale"):
                    continue
                with self._cache_lock(parent / version, wait=False) as free:
                    if free:  # else a download of that version runs now
                        shutil.rmtree(item, ignore_errors=True)

    def open_version(self, project: str, version: str) -> Path:
        meta, raw = self._read_meta(project, version)
        folder = self._cache_folder(project, version)
        with self._cache_lock(folder):
            if _cache_matches(folder, meta, raw):
                return folder
            for leftover in folder.parent.glob(f".{version}.download-*"):
                shutil.rmtree(leftover, ignore_errors=True)  # killed downloads (we hold the lock)
            fresh = folder.with_name(f".{version}.download-{uuid.uuid4().hex[:8]}")
            try:
                self._download(project, meta, fresh)
                (fresh / META).write_bytes(raw)
                if folder.exists():
                    stale = folder.with_name(f".{version}.stale-{uuid.uuid4().hex[:8]}")
                    os.replace(folder, stale)
                    shutil.rmtree(stale, ignore_errors=True)
                os.replace(fresh, folder)
            finally:
                shutil.rmtree(fresh, ignore_errors=True)
        return folder

    def _download(self, project: str, meta: VersionMeta, into: Path) -> None:
        where = f"project {project}: version {meta.version}"
        base = self._version_key(project, meta.version)
        for rel, expected in meta.files.items():
            parts = PurePosixPath(rel).parts
            if not parts or rel.startswith("/") or ".." in parts or rel == META:
                raise CorruptModelVersion(f"{where}: {META} lists an unsafe path {rel!r}")
            target = into.joinpath(*parts)
            target.parent.mkdir(parents=True, exist_ok=True)
            try:
                self._client.download_file(self.bucket, base + rel, str(target))
            except Exception as exc:
                if _code(exc) in _MISSING:
                    raise CorruptModelVersion(f"{where}: {rel} is missing") from exc
                raise self._fail("GET", base + rel, exc) from exc
            if sha256_file(target) != expected:
                raise CorruptModelVersion(f"{where}: {rel} does not match its checksum")

    # --- publishing ---------------------------------------------------------------------
    def _check_conditional_writes(self) -> None:
        """Refuse to number versions on an endpoint that ignores If-None-Match (once)."""
        if self._conditional_ok:
            return
        key = f"{self.prefix}.probe/{uuid.uuid4().hex}"
        try:
            self._client.put_object(Bucket=self.bucket, Key=key, Body=b"1", IfNoneMatch="*")
            try:
                self._client.put_object(Bucket=self.bucket, Key=key, Body=b"2", IfNoneMatch="*")
            except Exception as exc:
                if _code(exc) not in _TAKEN:
                    raise
            else:
                raise StoreError(
                    f"s3://{self.bucket}: the endpoint ignores conditional writes "
                    "(If-None-Match), so two writers could publish the same version name",
                    fix="use AWS S3 or an S3 server that supports conditional writes, or "
                    "MODEL_STORE=local on a shared volume",
                )
        except StoreError:
            raise
        except Exception as exc:
            raise self._fail("PUT", key, exc) from exc
        finally:
            with contextlib.suppress(Exception):
                self._client.delete_object(Bucket=self.bucket, Key=key)
        self._conditional_ok = True

    def _next_number(self, project: str, prefix: str) -> int:
        numbers = [0]
        base = self._project_key(project)
        names = [
            *self._list(base + "versions/", folders=True),
            *(key.rsplit("/", 1)[1] for key in self._list(base + "reserved/")),
        ]
        for name in names:
            match = _NUMBERED.match(name)
            if match and match["prefix"] == prefix:
                numbers.append(int(match["number"]))
        return max(numbers) + 1

    def _reserve(self, project: str, prefix: str, job: str | None) -> str:
        """A version name no other writer has, by creating its marker if absent."""
        self._check_conditional_writes()
        number = self._next_number(project, prefix)
        body = json.dumps(
            {
                "job": job,
                "host": HOSTNAME,
                "pid": os.getpid(),
                "at": datetime.now(timezone.utc).isoformat(),
            }
        ).encode()
        for attempt in range(_RESERVE_ATTEMPTS):
            version = check_name("version", f"{prefix}-v{number}")
            key = self._reserved_key(project, version)
            try:
                self._client.put_object(Bucket=self.bucket, Key=key, Body=body, IfNoneMatch="*")
            except Exception as exc:
                code = _code(exc)
                if code in _TAKEN:
                    number += 1
                elif code in _BUSY:
                    time.sleep(0.05 * (attempt + 1))
                else:
                    raise self._fail("PUT", key, exc) from exc
                continue
            return version
        raise StoreError(
            f"project {project}: no free version name after {_RESERVE_ATTEMPTS} attempts",
            fix="retry the job",
        )

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
        self._sweep_dead_stagings()
        version = self._reserve(project, prefix, job)
        base = self._version_key(project, version)
        owner = f"{os.getpid()}@{_HOST_TAG}"  # see _sweep_dead_stagings
        path = self.cache_dir / ".staging" / f"{project}.{version}.{uuid.uuid4().hex[:8]}.{owner}"
        staging = StagingFolder(path=path, version=version)
        uploaded: list[str] = []
        published = False
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            with writer_lock(_lock_of(path)):  # held until the staging folder is gone
                try:
                    staging.create()
                    yield staging
                    staging.check_intact()
                    meta = staging.meta(project, parent=parent, event=event, job=job)
                    files = meta.files
                    for rel in files:
                        uploaded.append(base + rel)
                        self._upload(path / rel, base + rel)
                    self._check_uploaded(project, version, files)
                    uploaded.append(base + META)  # before the PUT: a PUT that errs may land
                    self._put(base + META, meta.model_dump_json(indent=2).encode())
                    previous = self._fresh_current(project)
                    self._put(
                        self._project_key(project) + "current", version.encode(), "text/plain"
                    )
                    published = True
                    # a sweep that listed this version before its _meta.json existed may have
                    # deleted its files since: look again, and take `current` back if so
                    try:
                        self._check_uploaded(project, version, [*files, META], after=True)
                    except StoreError:
                        published = not self._roll_back(project, version, previous)
                        raise
                    self._remember(project, version)
                finally:
                    shutil.rmtree(path, ignore_errors=True)
        except BaseException:
            if uploaded and not published:
                published = self._discard(project, version, uploaded)
            raise
        finally:
            if not published:
                with contextlib.suppress(Exception):  # a leftover marker only skips a number
                    self._client.delete_object(
                        Bucket=self.bucket, Key=self._reserved_key(project, version)
                    )

    def _roll_back(self, project: str, version: str, previous: str | None) -> bool:
        """`current` back to `previous` if it still names `version`; True if it no longer does."""
        key = self._project_key(project) + "current"
        try:
            if self._fresh_current(project) != version:
                return True  # another writer published since
            if previous is None:
                self._client.delete_object(Bucket=self.bucket, Key=key)
            else:
                self._put(key, previous.encode(), "text/plain")
            self._remember(project, previous)
        except Exception:
            log.error(
                "project %s: %s is current but lost files; set another version current",
                project,
                version,
                exc_info=True,
            )
            return False
        log.error(
            "project %s: %s lost files after its publish: %s is current again",
            project,
            version,
            previous,
        )
        return True

    def _upload(self, path: Path, key: str) -> None:
        try:  # upload_file: multipart for large files
            self._client.upload_file(str(path), self.bucket, key)
        except Exception as exc:
            raise self._fail("PUT", key, exc) from exc

    def _check_uploaded(
        self, project: str, version: str, files: Iterable[str], *, after: bool = False
    ) -> None:
        """Every file is still there: a writer stalled past UNFINISHED_MAX_AGE may have been
        swept as a dead one, and must not publish a version with holes (`after`: checked
        again once published, for a sweep that listed the version just before)."""
        base = self._version_key(project, version)
        wanted = [base + rel for rel in files]
        if not wanted:
            return
        present = set(self._list(base))
        missing = [key[len(base) :] for key in wanted if key not in present]
        if missing:
            raise StoreError(
                f"project {project}: version {version}: {missing[0]} vanished "
                f"{'after the publish' if after else 'during the upload'} "
                f"({len(missing)} file(s)); an upload that stalls for "
                f"{UNFINISHED_MAX_AGE / 3600:g} h is taken for a dead writer's and swept",
                fix="retry the job",
            )

    def _sweep_dead_stagings(self) -> None:
        """Remove the staging folders that writers killed on this machine left in the cache
        (no `finally` ran to remove them): those whose lock no process holds and whose name's
        `<pid>@<host>` is this host's and gone. The lock decides: another container sharing
        this hostname (and cache) has its own PID namespace, its live writers' pids look dead."""
        with contextlib.suppress(OSError):
            for item in (self.cache_dir / ".staging").iterdir():
                match = _STAGING_OWNER.search(item.name)
                if not match or match["host"] != _HOST_TAG or pid_alive(int(match["pid"])):
                    continue
                if item.is_symlink() or not item.is_dir():
                    continue
                with abandoned(_lock_of(item)) as dead:
                    if dead:
                        shutil.rmtree(item, ignore_errors=True)

    def _discard(self, project: str, version: str, keys: list[str]) -> bool:
        """Remove a failed publish's objects; True if it turned out to be published after all."""
        try:
            if self._fresh_current(project) == version:
                log.warning("project %s: %s became current despite an error", project, version)
                return True
            self._delete(keys)
        except Exception:
            log.warning("project %s: could not clean up failed version %s", project, version)
        return False

    # --- whole projects -----------------------------------------------------------------
    def duplicate(self, src: str, dst: str) -> None:
        """Copy every version and the record; `current` is written last, stale keys go after."""
        source, target = self._project_key(src), self._project_key(dst)
        keys = list(self._list(source))
        if not keys:
            raise UnknownProject(f"project {src} has no model to duplicate", field="project_src")
        before = set(self._list(target))
        written: set[str] = set()
        pointer: bytes | None = None
        for group in reversed(_deletion_order(keys)):  # files, then metadata, then `current`
            for key in group:
                rel = key[len(source) :]
                if rel == "current":
                    pointer = self._get(key)
                    if pointer is None:
                        continue
                    self._put(target + rel, pointer, "text/plain")
                elif rel == "project.json" or rel.endswith("/" + META):
                    body = self._get(key)
                    if body is None:
                        continue
                    self._put(target + rel, _renamed(rel, body, dst))
                else:
                    self._copy(key, target + rel)
                written.add(target + rel)
        self._delete(key for key in before if key not in written)
        name = pointer.decode("utf-8", "replace").strip() if pointer is not None else ""
        self._remember(dst, name or None)
        shutil.rmtree(self.cache_dir / "projects" / dst, ignore_errors=True)

    def _copy(self, key: str, target: str) -> None:
        try:  # server side; managed copy handles objects over 5 GB
            self._client.copy({"Bucket": self.bucket, "Key": key}, self.bucket, target)
        except Exception as exc:
            raise self._fail("COPY", key, exc) from exc

    def delete(self, project: str) -> bool:
        keys = list(self._list(self._project_key(project)))
        shutil.rmtree(self.cache_dir / "projects" / project, ignore_errors=True)
        if keys:
            self._delete(keys)
        self._forget(project)
        return bool(keys)

    def prune(self, project: str, keep: int) -> list[str]:
        """Delete the oldest versions beyond `keep`; never the current one (read fresh). Dead
        writers' leftovers go too (`_sweep_unfinished`); only published versions are returned."""
        self._sweep_dead_stagings()
        self._sweep_cache_leftovers(project)
        current = self._fresh_current(project)
        doomed = [m.version for m in self.versions(project)[keep:] if m.version != current]
        markers = dict(self._list(self._project_key(project) + "reserved/", stamped=True))
        highest = _highest(key.rsplit("/", 1)[1] for key in markers)
        # one listing of every version's objects, after versions(): the doomed ones are in it
        folders = self._folders(project)
        try:
            self._sweep_unfinished(project, folders, markers, highest)
        except Exception as exc:  # housekeeping: the versions below are still pruned
            log.warning("project %s: could not sweep dead writers' leftovers: %s", project, exc)
        for version in doomed:
            keys = [key for key, _ in folders.get(version, ())]
            if not _is_highest(version, highest):
                keys.append(self._reserved_key(project, version))
            self._delete(keys)
            shutil.rmtree(self._cache_folder(project, version), ignore_errors=True)
        return doomed

    def _folders(self, project: str) -> dict[str, list[tuple[str, float]]]:
        """Each version folder's objects: (key, LastModified)."""
        base = self._project_key(project) + "versions/"
        folders: dict[str, list[tuple[str, float]]] = {}
        for key, modified in self._list(base, stamped=True):
            name, slash, rel = key[len(base) :].partition("/")
            if slash and rel:
                folders.setdefault(name, []).append((key, modified))
        return folders

    def _sweep_unfinished(
        self,
        project: str,
        folders: dict[str, list[tuple[str, float]]],
        markers: dict[str, float],
        highest: dict[str, int],
    ) -> None:
        """Delete what writers that died mid-upload left, once older than UNFINISHED_MAX_AGE:
        versions without `_meta.json` (aged by their newest object), incomplete multipart
        uploads, and markers with no version (but the highest, which keeps numbers growing).

        A version's `_meta.json` is asked for again right before its files are deleted: a
        writer stalled that long may publish between the listing and the delete (it also
        checks its files after publishing, for the moment between this HEAD and the delete)."""
        stale = self.clock() - UNFINISHED_MAX_AGE
        base = self._project_key(project) + "versions/"
        swept: list[str] = []
        for name, objects in folders.items():
            meta = f"{base}{name}/{META}"
            if meta in (key for key, _ in objects):
                continue  # published
            if max(modified for _, modified in objects) > stale:
                continue  # maybe a writer still uploading
            if self._exists(meta):
                continue  # published since the listing
            self._delete(key for key, _ in objects)
            swept.append(name)
            log.info("project %s: removed %s, left unfinished by a dead writer", project, name)
        doomed: list[str] = []
        for key, modified in markers.items():
            name = key.rsplit("/", 1)[1]
            unused = name not in folders or name in swept  # no version, or a swept one
            if unused and modified <= stale and not _is_highest(name, highest):
                doomed.append(key)
        if doomed:
            self._delete(doomed)
        self._abort_stale_uploads(base, stale)

    def _abort_stale_uploads(self, prefix: str, stale: float) -> None:
        """Incomplete multipart uploads are invisible but stored (and billed): abort the old."""
        if self._multipart_denied:
            return
        try:
            pages = self._client.get_paginator("list_multipart_uploads").paginate(
                Bucket=self.bucket, Prefix=prefix
            )
            for page in pages:
                for upload in page.get("Uploads") or ():
                    if upload["Initiated"].timestamp() > stale:
                        continue  # maybe a writer still uploading
                    try:
                        self._client.abort_multipart_upload(
                            Bucket=self.bucket, Key=upload["Key"], UploadId=upload["UploadId"]
                        )
                    except Exception as exc:
                        if _code(exc) not in {"NoSuchUpload", *_MISSING}:
                            raise  # else it ended meanwhile
        except Exception as exc:
            code = _code(exc)
            if code in _DENIED:
                self._multipart_denied = True  # say it once, not after every training
                log.warning(
                    "s3://%s: cannot list or abort multipart uploads (%s): incomplete uploads "
                    "of killed writers stay; allow s3:ListBucketMultipartUploads and "
                    "s3:AbortMultipartUpload, or add a lifecycle rule that aborts them",
                    self.bucket,
                    code,
                )
                return
            raise self._fail("ABORT", prefix, exc) from exc


def _lock_of(staging: Path) -> Path:
    """A writer's lock file, beside its staging folder (inside, it would be uploaded)."""
    return staging.with_name(staging.name + ".lock")


def _highest(names: Iterable[str]) -> dict[str, int]:
    """The highest number reserved per name prefix: its marker stays, numbers keep growing."""
    highest: dict[str, int] = {}
    for name in names:
        match = _NUMBERED.match(name)
        if match:
            number = int(match["number"])
            highest[match["prefix"]] = max(highest.get(match["prefix"], 0), number)
    return highest


def _is_highest(name: str, highest: dict[str, int]) -> bool:
    match = _NUMBERED.match(name)
    return match is not None and highest.get(match["prefix"]) == int(match["number"])


def _json(record: ProjectRecord) -> bytes:
    return record.model_dump_json().encode()


def _renamed(rel: str, body: bytes, project: str) -> bytes:
    """A copied project.json or _meta.json, naming its new project."""
    if rel == "project.json":
        record = ProjectRecord.model_validate_json(body)
        record.project = project
        return _json(record)
    meta = VersionMeta.model_validate_json(body)
    meta.project = project
    return meta.model_dump_json(indent=2).encode()


def _cache_matches(folder: Path, meta: VersionMeta, raw: bytes) -> bool:
    """The cached folder holds this very version (same metadata) and its files are intact."""
    try:
        if (folder / META).read_bytes() != raw:
            return False
    except OSError:
        return False
    for rel, expected in meta.files.items():
        target = folder / rel
        if not target.is_file() or sha256_file(target) != expected:
            return False
    return True


def _default_client() -> Any:
    """A boto3 client from the usual AWS environment (AWS_ENDPOINT_URL included)."""
    try:
        import boto3
        from botocore.config import Config
    except ImportError as exc:
        raise MissingDependency(
            "MODEL_STORE=s3 needs boto3, which is not installed: pip install 'labelbridge[s3]'",
            fix="pip install 'labelbridge[s3]', or set MODEL_STORE=local",
        ) from exc
    config = Config(
        connect_timeout=10, read_timeout=60, retries={"mode": "standard", "max_attempts": 5}
    )
    return boto3.session.Session().client("s3", config=config)
