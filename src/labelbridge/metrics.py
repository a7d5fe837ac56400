"""Prometheus metrics without a dependency: counters and histograms in text format 0.0.4."""

from __future__ import annotations

import bisect
import threading
from collections import defaultdict

__all__ = ["Metrics"]

_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 100.0)


def _labels(pairs: tuple[tuple[str, str], ...]) -> str:
    if not pairs:
        return ""
    inner = ",".join(f'{k}="{v.replace(chr(92), chr(92) * 2).replace(chr(34), chr(92) + chr(34))}"' for k, v in pairs)
    return "{" + inner + "}"


class Metrics:
    """Process-local metrics; cheap enough to update on every request."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counters: dict[str, dict[tuple[tuple[str, str], ...], float]] = defaultdict(dict)
        self._gauges: dict[str, dict[tuple[tuple[str, str], ...], float]] = defaultdict(dict)
        self._hist: dict[str, dict[tuple[tuple[str, str], ...], list[float]]] = defaultdict(dict)
        self._help: dict[str, tuple[str, str]] = {}

    def _declare(self, name: str, kind: str, help_text: str) -> None:
        self._help.setdefault(name, (kind, help_text))

    def inc(self, name: str, help_text: str, amount: float = 1.0, **labels: str) -> None:
        key = tuple(sorted(labels.items()))
        with self._lock:
            self._declare(name, "counter", help_text)
            series = self._counters[name]
            series[key] = series.get(key, 0.0) + amount

    def set(self, name: str, help_text: str, value: float, **labels: str) -> None:
        key = tuple(sorted(labels.items()))
        with self._lock:
            self._declare(name, "gauge", help_text)
            self._gauges[name][key] = value

    def observe(self, name: str, help_text: str, value: float, **labels: str) -> None:
        key = tuple(sorted(labels.items()))
        with self._lock:
            self._declare(name, "histogram", help_text)
            series = self._hist[name].get(key)
            if series is None:
                series = self._hist[name][key] = [0.0] * (len(_BUCKETS) + 2)
            series[bisect.bisect_left(_BUCKETS, value)] += 1
            series[-1] += value

    def value(self, name: str, **labels: str) -> float:
        key = tuple(sorted(labels.items()))
        with self._lock:
            return self._counters.get(name, {}).get(key, self._gauges.get(name, {}).get(key, 0.0))

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
                            lines.append(f"{name}_bucket{_labels((*key, ('le', f'{bound:g}')))} {cumulative:g}")
                        cumulative += series[len(_BUCKETS)]
                        lines.append(f"{name}_bucket{_labels((*key, ('le', '+Inf')))} {cumulative:g}")
                        lines.append(f"{name}_count{_labels(key)} {cumulative:g}")
                        lines.append(f"{name}_sum{_labels(key)} {series[-1]:g}")
        return "\n".join(lines) + "\n"
