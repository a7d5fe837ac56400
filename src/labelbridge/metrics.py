"""Prometheus metrics without a dependency: counters, gauges and histograms in text format 0.0.4.

With several worker processes each has its own counters, and a scrape reaches one worker at
random: served as is, a counter would jump between workers' values. So in production every
worker writes a snapshot of its metrics to `<shared dir>/<pid>.json` (atomically, at most once a
second and when it stops), and /metrics answers with the sum over all workers:
- counters and histograms are summed over every worker that ever ran in this server, the dead
  ones included (a recycled worker's counts are folded into `archive.json`), so they only grow;
- gauges (model load time) are per live worker, labeled `worker="<pid>"`.
The price: a scrape sees other workers' counts up to one second late, and a worker killed with
SIGKILL loses what it counted since its last snapshot. prometheus_client's multiprocess mode
has the same shape with mmap'd files; this keeps us free of that dependency and of its
PROMETHEUS_MULTIPROC_DIR setup.
"""

from __future__ import annotations

import bisect
import contextlib
import json
import os
import threading
from collections import defaultdict
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from labelbridge._proc_util import pid_alive

__all__ = ["Metrics", "SharedMetrics"]

_BUCKETS = (
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    100.0,
)

Key = tuple[tuple[str, str], ...]


def _labels(pairs: Key) -> str:
    if not pairs:
        return ""
    inner = ",".join(
        f'{k}="{v.replace(chr(92), chr(92) * 2).replace(chr(34), chr(92) + chr(34)).replace(chr(10), chr(92) + "n")}"'
        for k, v in pairs
    )
    return "{" + inner + "}"


def _key(raw: Any) -> Key:
    return tuple((str(k), str(v)) for k, v in raw)


class Metrics:
    """Process-local metrics; cheap enough to update on every request."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counters: dict[str, dict[Key, float]] = defaultdict(dict)
        self._gauges: dict[str, dict[Key, float]] = defaultdict(dict)
        self._hist: dict[str, dict[Key, list[float]]] = defaultdict(dict)
        self._help: dict[str, tuple[str, str]] = {}
        #: bumped on every change, so a snapshot is written only when something changed
        self.version = 0

    def _declare(self, name: str, kind: str, help_text: str) -> None:
        self._help.setdefault(name, (kind, help_text))

    def inc(self, name: str, help_text: str, amount: float = 1.0, **labels: str) -> None:
        key = tuple(sorted(labels.items()))
        with self._lock:
            self._declare(name, "counter", help_text)
            series = self._counters[name]
            series[key] = series.get(key, 0.0) + amount
            self.version += 1

    def set(self, name: str, help_text: str, value: float, **labels: str) -> None:
        key = tuple(sorted(labels.items()))
        with self._lock:
            self._declare(name, "gauge", help_text)
            self._gauges[name][key] = value
            self.version += 1

    def observe(self, name: str, help_text: str, value: float, **labels: str) -> None:
        key = tuple(sorted(labels.items()))
        with self._lock:
            self._declare(name, "histogram", help_text)
            series = self._hist[name].get(key)
            if series is None:
                series = self._hist[name][key] = [0.0] * (len(_BUCKETS) + 2)
            series[bisect.bisect_left(_BUCKETS, value)] += 1
            series[-1] += value
            self.version += 1

    # --- bound series: the hot paths (every request) skip the label sorting and declaring
    def timed(
        self,
        histogram: tuple[str, str, dict[str, str]],
        counter: tuple[str, str, dict[str, str]],
    ) -> Callable[[float, float], None]:
        """`record(seconds, amount)`: one series of a histogram and one of a counter updated
        together, under one lock (each answered request updates such a pair; bound here,
        created at 0 now). Both given as (name, help, labels)."""
        hist_key = tuple(sorted(histogram[2].items()))
        count_key = tuple(sorted(counter[2].items()))
        with self._lock:
            self._declare(histogram[0], "histogram", histogram[1])
            self._declare(counter[0], "counter", counter[1])
            series = self._hist[histogram[0]].setdefault(hist_key, [0.0] * (len(_BUCKETS) + 2))
            counts = self._counters[counter[0]]
            counts.setdefault(count_key, 0.0)
            self.version += 1

        def record(seconds: float, amount: float) -> None:
            slot = bisect.bisect_left(_BUCKETS, seconds)
            with self._lock:
                series[slot] += 1
                series[-1] += seconds
                counts[count_key] += amount
                self.version += 1

        return record

    def value(self, name: str, **labels: str) -> float:
        key = tuple(sorted(labels.items()))
        with self._lock:
            return self._counters.get(name, {}).get(key, self._gauges.get(name, {}).get(key, 0.0))

    # --- across processes ---------------------------------------------------------------
    def snapshot(self) -> dict[str, Any]:
        """Everything as plain JSON data (label keys as lists of pairs)."""
        with self._lock:
            return {
                "help": {name: list(pair) for name, pair in self._help.items()},
                "counters": {
                    n: [[list(k), v] for k, v in s.items()] for n, s in self._counters.items()
                },
                "gauges": {
                    n: [[list(k), v] for k, v in s.items()] for n, s in self._gauges.items()
                },
                "hist": {
                    n: [[list(k), list(v)] for k, v in s.items()] for n, s in self._hist.items()
                },
            }

    def merge(self, snap: dict[str, Any], *, gauges: bool = True, extra_labels: Key = ()) -> None:
        """Add a snapshot's counters and histograms to ours; take its gauges (with labels)."""
        with self._lock:
            for name, (kind, help_text) in snap.get("help", {}).items():
                if kind != "gauge" or gauges:
                    self._declare(name, kind, help_text)
            for name, series in snap.get("counters", {}).items():
                mine = self._counters[name]
                for raw, val in series:
                    key = _key(raw)
                    mine[key] = mine.get(key, 0.0) + float(val)
            for name, series in snap.get("hist", {}).items():
                hist = self._hist[name]
                for raw, values in series:
                    key = _key(raw)
                    current = hist.setdefault(key, [0.0] * (len(_BUCKETS) + 2))
                    for index, val in enumerate(values[: len(current)]):
                        current[index] += float(val)
            if gauges:
                for name, series in snap.get("gauges", {}).items():
                    for raw, val in series:
                        key = tuple(sorted((*_key(raw), *extra_labels)))
                        self._gauges[name][key] = float(val)
            self.version += 1

    def render(self) -> str:
        lines: list[str] = []
        with self._lock:
            for name, (kind, help_text) in sorted(self._help.items()):
                lines.append(f"# HELP {name} {help_text}")
                lines.append(f"# TYPE {name} {kind}")
                if kind == "counter":
                    for key, val in sorted(self._counters[name].items()):
                        lines.append(f"{name}{_labels(key)} {val:g}")
                elif kind == "gauge":
                    for key, val in sorted(self._gauges[name].items()):
                        lines.append(f"{name}{_labels(key)} {val:g}")
                else:
                    for key, series in sorted(self._hist[name].items()):
                        cumulative = 0.0
                        for bound, count in zip(_BUCKETS, series, strict=False):
                            cumulative += count
                            lines.append(
                                f"{name}_bucket{_labels((*key, ('le', f'{bound:g}')))} {cumulative:g}"
                            )
                        cumulative += series[len(_BUCKETS)]
                        lines.append(
                            f"{name}_bucket{_labels((*key, ('le', '+Inf')))} {cumulative:g}"
                        )
                        lines.append(f"{name}_count{_labels(key)} {cumulative:g}")
                        lines.append(f"{name}_sum{_labels(key)} {series[-1]:g}")
        return "\n".join(lines) + "\n"


def _read(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


class SharedMetrics:
    """One worker's side of the shared folder: write our snapshot, read everyone's sum."""

    ARCHIVE = "archive.json"

    def __init__(self, folder: Path, metrics: Metrics, *, interval: float = 1.0) -> None:
        self.folder = Path(folder)
        self.metrics = metrics
        self.interval = interval
        self.pid = os.getpid()
        self._written = -1
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.folder.mkdir(parents=True, exist_ok=True)

    @property
    def path(self) -> Path:
        return self.folder / f"{self.pid}.json"

    def flush(self) -> None:
        version = self.metrics.version
        if version == self._written:
            return
        tmp = self.folder / f".{self.pid}.tmp"
        tmp.write_text(json.dumps(self.metrics.snapshot()), encoding="utf-8")
        os.replace(tmp, self.path)
        self._written = version

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            with contextlib.suppress(OSError):
                self.flush()

    def start(self) -> None:
        """Begin writing snapshots; a file left under our pid by a dead process is archived."""
        if self.path.exists():
            with self._locked():
                self._fold_dead(also=[self.path])
        self._thread = threading.Thread(target=self._loop, name="labelbridge-metrics", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Final snapshot: a recycled worker's counts survive it."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(2)
        with contextlib.suppress(OSError):
            self.flush()

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        import fcntl

        lock_fd = os.open(self.folder / ".lock", os.O_WRONLY | os.O_CREAT, 0o600)
        try:
            fcntl.flock(lock_fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(lock_fd)

    def _fold_dead(self, also: list[Path] | None = None) -> None:
        """Move the counts of workers that are gone into the archive (caller holds the lock)."""
        dead = [
            p
            for p in self.folder.glob("*.json")
            if p.stem.isdigit() and int(p.stem) != self.pid and not pid_alive(int(p.stem))
        ] + list(also or [])
        if not dead:
            return
        archive = Metrics()
        old = _read(self.folder / self.ARCHIVE)
        if old:
            archive.merge(old, gauges=False)
        for path in dead:
            snap = _read(path)
            if snap:
                archive.merge(snap, gauges=False)
        tmp = self.folder / ".archive.tmp"
        tmp.write_text(json.dumps(archive.snapshot()), encoding="utf-8")
        os.replace(tmp, self.folder / self.ARCHIVE)
        for path in dead:
            path.unlink(missing_ok=True)

    def collect(self) -> Metrics:
        """The sum over all workers, as a fresh Metrics (ours is read live, not from disk).

        The whole read happens under one lock, so a fold by another worker never makes a
        dead worker's counts vanish from a scrape (which Prometheus would take as a reset)."""
        total = Metrics()
        with self._locked():
            self._fold_dead()
            archive = _read(self.folder / self.ARCHIVE)
            if archive:
                total.merge(archive, gauges=False)
            for path in sorted(self.folder.glob("*.json")):
                if not path.stem.isdigit() or int(path.stem) == self.pid:
                    continue
                snap = _read(path)
                if snap:
                    total.merge(snap, extra_labels=(("worker", path.stem),))
        total.merge(self.metrics.snapshot(), extra_labels=(("worker", str(self.pid)),))
        return total
