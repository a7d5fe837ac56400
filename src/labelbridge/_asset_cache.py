"""The assets' download cache on disk: one download per entry, a size bound, LRU eviction.

Layout under the cache folder (ASSET_CACHE_DIR), `d` being the sha256 of an asset's source:

    <d[:2]>/<d>/<name>             an entry: a folder holding the asset's one file
    <d[:2]>/.<d>.lock              the entry's lock file (flock)
    <d[:2]>/.<d>.<uuid>.part/      a download in progress, renamed to <d> once complete
    <d[:2]>/.<d>.<uuid>.trash/     an evicted entry being deleted
    .sweep.lock                    held by the one process sweeping

Recency is the entry folder's mtime: set when the entry is published, refreshed by a hit at
most every TOUCH_EVERY seconds (a hit costs one stat; the refresh, once a minute per entry).

The bound (ASSET_CACHE_MAX_BYTES, 0: none): `sweep()` lists the entries and, when their total is
over the bound, evicts the least recently used until it is under KEEP (90%) of it. Uvicorn
workers and job processes share the folder, so a sweep never breaks another one's use of it:

- one sweeper at a time: `.sweep.lock` is taken without waiting; a process that finds it taken
  skips its sweep (the other one is doing the same work).
- an entry is evicted only under its lock, taken without waiting: a download holds it
  (exclusive) from start to publication and a hit refreshing recency holds it (shared), so
  both are skipped; under the lock the mtime is read again, so a hit since the listing counts.
- entries used in the last GRACE seconds are never evicted: a path just handed to a model stays
  until the model has opened it. The bound is overshot by what was used in that time (logged).
- eviction renames the folder to a trash name, then deletes it: a lookup sees the entry whole
  or not at all, and a reader that already opened the file keeps reading it (POSIX).
- a lock file is deleted only while held; whoever takes a lock checks that the file it locked
  is still the one at that path (same inode), and starts over otherwise.

A sweep also removes what killed processes left behind: download folders untouched for STALE
seconds whose lock is free (no download running), trash, and lock files of absent entries.

When: each process keeps an approximate total (its last sweep's, plus its own downloads since).
A download starts a sweep when that total passes the bound (at most every MIN_INTERVAL seconds;
STUCK_INTERVAL when the last sweep could not get under it), at a process's first download, and
every RESCAN seconds (other processes download too). The sweep runs in a background thread, one
at a time per process and cache folder: a scan of tens of thousands of entries never delays the
download that started it, nor the threads waiting for that asset. Without fcntl (Windows) there is no cross-process lock; the renames
stay atomic.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: no cross-process lock; rename stays atomic
    fcntl = None  # type: ignore[assignment]

__all__ = ["AssetCache", "Sweep"]

log = logging.getLogger("labelbridge.assets")

#: a hit refreshes an entry's recency at most this often (seconds)
TOUCH_EVERY = 60.0
#: entries used this recently are never evicted (seconds; must exceed TOUCH_EVERY)
GRACE = 300.0
#: download folders and orphan lock files untouched this long are leftovers (seconds)
STALE = 3600.0
#: a sweep evicts down to this share of the bound
KEEP = 0.9
#: seconds between sweeps of one process when over the bound, and when stuck over it
MIN_INTERVAL = 2.0
STUCK_INTERVAL = 60.0
#: seconds between sweeps of one process in any case (other processes fill the cache too)
RESCAN = 600.0
#: seconds one sweep spends evicting at most (a huge cache shrinks over several downloads)
EVICT_BUDGET = 5.0
#: seconds between two warnings of one process that the cache stays over its bound
WARN_EVERY = 600.0

_held: dict[int, int] = {}  # lock descriptor -> thread holding it (see _after_fork)


@contextlib.contextmanager
def _locked(path: Path, *, shared: bool = False, wait: bool = True) -> Iterator[bool]:
    """flock `path` (created if missing); yields False if `wait` is off and it is taken."""
    if fcntl is None:  # pragma: no cover - Windows
        yield True
        return
    mode = (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | (0 if wait else fcntl.LOCK_NB)
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        _held[fd] = threading.get_ident()
        try:
            try:
                fcntl.flock(fd, mode)
            except BlockingIOError:
                taken = True
            else:
                taken = False
                try:
                    same = os.path.samestat(os.fstat(fd), os.stat(path))
                except FileNotFoundError:
                    same = False
        except BaseException:
            _held.pop(fd, None)
            os.close(fd)
            raise
        if not taken and same:
            break
        _held.pop(fd, None)
        os.close(fd)
        if taken:
            yield False
            return
        # else a sweep deleted that file meanwhile: lock the one at that path now
    try:
        yield True
    finally:
        _held.pop(fd, None)
        os.close(fd)


def _lock_path(entry: Path) -> Path:
    return entry.parent / f".{entry.name}.lock"


def _lookup(entry: Path) -> Path | None:
    try:
        return next((p for p in entry.iterdir() if p.is_file()), None)
    except OSError:
        return None


def _newest_mtime(folder: Path) -> float:
    newest = folder.stat().st_mtime
    with os.scandir(folder) as items:
        for item in items:
            with contextlib.suppress(OSError):
                newest = max(newest, item.stat(follow_symlinks=False).st_mtime)
    return newest


def _size(n: float) -> str:
    return f"{n / 1e9:.2f} GB" if n >= 1e9 else f"{n / 1e6:.1f} MB"


@dataclass(frozen=True)
class Sweep:
    """What one sweep found and did."""

    total: int  # bytes in the entries left
    entries: int  # entries left
    evicted: int
    freed: int  # bytes evicted
    leftovers: int  # stale download folders, trash and orphan lock files removed
    stuck: bool = False  # over the bound: what is left was used in the last GRACE seconds


@dataclass(frozen=True)
class _Entry:
    path: Path
    mtime: float
    size: int


@dataclass
class _Tally:
    """What one process knows of a cache folder between two sweeps."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    approx: int | None = None  # bytes: the last sweep's total plus this process's downloads
    next_sweep: float = 0.0  # clock time before which this process does not sweep
    rescan_at: float = 0.0  # clock time at which it sweeps even if under the bound
    sweeping: bool = False
    sweeper: threading.Thread | None = None  # the background sweep running or last run
    evicting_logged: bool = False
    warned_at: float = float("-inf")  # time.monotonic()


_tallies: dict[Path, _Tally] = {}
_tallies_lock = threading.Lock()


def _tally(root: Path) -> _Tally:
    with _tallies_lock:
        return _tallies.setdefault(root, _Tally())


def _after_fork() -> None:
    """In a forked child only the forking thread runs: drop the other threads' locks (the
    parent's descriptors keep them; these copies would hold them for the child's life)."""
    global _tallies_lock
    for fd, thread in list(_held.items()):
        if thread != threading.get_ident():
            _held.pop(fd, None)
            with contextlib.suppress(OSError):
                os.close(fd)
    _tallies_lock = threading.Lock()
    _tallies.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork)


class AssetCache:
    """The cache folder `root`, bounded to `max_bytes` (0: unbounded); `clock` is time.time."""

    def __init__(
        self, root: Path, max_bytes: int, *, clock: Callable[[], float] = time.time
    ) -> None:
        self.root, self.max_bytes, self.clock = root, max_bytes, clock

    def entry(self, digest: str) -> Path:
        return self.root / digest[:2] / digest

    def get(self, entry: Path) -> Path | None:
        """The entry's file if it is cached; a hit refreshes its recency (see TOUCH_EVERY)."""
        try:
            mtime = os.stat(entry).st_mtime
        except OSError:
            return None
        hit = _lookup(entry)
        now = self.clock()
        if hit is None or now - mtime < TOUCH_EVERY:
            return hit  # fresh: within GRACE, no sweep evicts it
        with _locked(_lock_path(entry), shared=True):  # a sweep now skips it, or has taken it
            hit = _lookup(entry)
            if hit is not None:
                with contextlib.suppress(OSError):
                    os.utime(entry, (now, now))
        return hit

    def fill(self, entry: Path, write: Callable[[Path], Path]) -> Path | None:
        """The entry, downloaded once across threads and processes: under its lock, the file
        if another process published it meanwhile, else `write(folder)` (which returns the file
        it wrote in that new folder), published by renaming the folder into place. None if the
        entry vanished; may sweep afterwards (see the module's docstring)."""
        entry.parent.mkdir(parents=True, exist_ok=True)
        with _locked(_lock_path(entry)):
            hit = _lookup(entry)
            if hit is not None:
                return hit
            staging = entry.parent / f".{entry.name}.{uuid.uuid4().hex}.part"
            staging.mkdir()
            try:
                size = write(staging).stat().st_size
                with contextlib.suppress(OSError):  # else another process published first
                    staging.rename(entry)
                now = self.clock()
                with contextlib.suppress(OSError):
                    os.utime(entry, (now, now))  # recency starts now
                hit = _lookup(entry)
            finally:
                shutil.rmtree(staging, ignore_errors=True)
        if hit is not None:
            self._added(size)
        return hit

    # --- when to sweep
    def _added(self, nbytes: int) -> None:
        if self.max_bytes <= 0:
            return
        tally = _tally(self.root)
        now = self.clock()
        with tally.lock:
            if tally.approx is not None:
                tally.approx += nbytes
            over = tally.approx is None or tally.approx > self.max_bytes
            if tally.sweeping or now < tally.next_sweep or (not over and now < tally.rescan_at):
                return
            tally.sweeping = True
            # never on the request path: the download (and the threads waiting for the same
            # asset) returns at once; `sweeping` keeps it one at a time in this process
            tally.sweeper = threading.Thread(
                target=self._sweep_for, args=(tally,), name="asset-cache-sweep", daemon=True
            )
            tally.sweeper.start()

    def wait_for_sweep(self, timeout: float | None = None) -> None:
        """Wait until this process's background sweep of this cache (if any) has finished."""
        tally = _tally(self.root)
        with tally.lock:
            sweeper = tally.sweeper
        if sweeper is not None and sweeper is not threading.current_thread():
            sweeper.join(timeout)

    def _sweep_for(self, tally: _Tally) -> None:
        report, failed = None, False
        try:
            report = self.sweep()
        except Exception:  # a disk gone read-only, say: the download itself succeeded
            failed = True
            log.warning("the asset cache sweep of %s failed", self.root, exc_info=True)
        finally:
            now = self.clock()
            with tally.lock:
                tally.sweeping = False
                tally.next_sweep = now + (STUCK_INTERVAL if failed else MIN_INTERVAL)
                if report is not None:
                    tally.approx = report.total
                    tally.rescan_at = now + RESCAN
                    if report.stuck:  # nothing to evict before some entries age past GRACE
                        tally.next_sweep = now + STUCK_INTERVAL

    # --- the sweep
    def sweep(self) -> Sweep | None:
        """Evict the least recently used entries down to KEEP of the bound if over it, remove
        leftovers. None when another process or thread is sweeping (it does the same work)."""
        self.root.mkdir(parents=True, exist_ok=True)
        with _locked(self.root / ".sweep.lock", wait=False) as mine:
            if not mine:
                return None
            now = self.clock()
            entries, junk = self._scan()
            leftovers = sum(self._remove_leftover(path, now) for path in junk)
            total = sum(e.size for e in entries)
            evicted = freed = 0
            stuck = False
            if self.max_bytes > 0 and total > self.max_bytes:
                target = int(self.max_bytes * KEEP)
                deadline = time.monotonic() + EVICT_BUDGET
                for e in sorted(entries, key=lambda e: e.mtime):
                    stuck = now - e.mtime < GRACE
                    if total <= target or stuck or time.monotonic() > deadline:
                        break
                    if self._evict(e, now):
                        total, evicted, freed = total - e.size, evicted + 1, freed + e.size
            stuck = stuck and total > self.max_bytes
            report = Sweep(total, len(entries) - evicted, evicted, freed, leftovers, stuck)
        self._tell(report)
        return report

    def _scan(self) -> tuple[list[_Entry], list[Path]]:
        """The entries, and the dot files (lock files, download folders, trash)."""
        entries: list[_Entry] = []
        junk: list[Path] = []
        try:
            with os.scandir(self.root) as items:
                shards = [s.path for s in items if len(s.name) == 2 and s.is_dir()]
        except OSError:
            return entries, junk
        for shard in shards:
            try:
                with os.scandir(shard) as items:
                    found = list(items)
            except OSError:
                continue
            for item in found:
                if item.name.startswith("."):
                    junk.append(Path(item.path))
                    continue
                with contextlib.suppress(OSError):  # evicted meanwhile (Windows: no lock)
                    if item.is_dir(follow_symlinks=False):
                        with os.scandir(item.path) as files:
                            size = sum(f.stat().st_size for f in files if f.is_file())
                        entries.append(_Entry(Path(item.path), item.stat().st_mtime, size))
        return entries, junk

    def _remove_leftover(self, path: Path, now: float) -> bool:
        digest = path.name[1:].split(".", 1)[0]
        entry, lock = path.parent / digest, path.parent / f".{digest}.lock"
        try:
            if path.name.endswith(".trash"):  # a sweeper was killed while deleting it
                shutil.rmtree(path, ignore_errors=True)
                return True
            if path.name.endswith(".part"):  # a download that failed halfway, or is running
                if now - _newest_mtime(path) < STALE:
                    return False
                with _locked(lock, wait=False) as free:
                    if not free:
                        return False  # a download is writing it right now
                    shutil.rmtree(path, ignore_errors=True)
                    if not entry.exists():
                        lock.unlink(missing_ok=True)
                return True
            if path == lock and not entry.exists() and now - path.stat().st_mtime >= STALE:
                with _locked(lock, wait=False) as free:  # an old failed download's lock
                    if free and not entry.exists():
                        lock.unlink(missing_ok=True)
                        return True
        except OSError:
            pass  # removed meanwhile
        return False

    def _evict(self, e: _Entry, now: float) -> bool:
        lock = _lock_path(e.path)
        trash = e.path.parent / f".{e.path.name}.{uuid.uuid4().hex}.trash"
        with _locked(lock, wait=False) as free:
            if not free:
                return False  # being downloaded, or a hit is refreshing it
            try:
                if now - os.stat(e.path).st_mtime < GRACE:
                    return False  # a hit since the listing
                os.rename(e.path, trash)  # readers that opened its file keep reading
            except FileNotFoundError:
                return True  # already gone
            except OSError:
                return False
            with contextlib.suppress(OSError):
                lock.unlink()  # held: whoever waits on it starts over (see _locked)
        shutil.rmtree(trash, ignore_errors=True)
        return True

    def _tell(self, report: Sweep) -> None:
        tally = _tally(self.root)
        bound = f"ASSET_CACHE_MAX_BYTES={self.max_bytes} ({_size(self.max_bytes)})"
        if report.evicted and not tally.evicting_logged:
            tally.evicting_logged = True
            log.info(
                "the asset cache %s reached %s: the least recently used assets are removed "
                "(%d just now, %s)",
                self.root,
                bound,
                report.evicted,
                _size(report.freed),
            )
        if report.stuck and time.monotonic() - tally.warned_at >= WARN_EVERY:
            tally.warned_at = time.monotonic()
            log.warning(
                "the asset cache %s holds %s, over %s: the assets used in the last %d "
                "minutes are kept (a model may still read them); raise "
                "ASSET_CACHE_MAX_BYTES if the disk allows",
                self.root,
                _size(report.total),
                bound,
                GRACE // 60,
            )
        log.debug("asset cache sweep of %s: %s", self.root, report)
