"""Garbage-collector settings for a server worker: no collections on the request path.

A worker holds a large heap that lives as long as it does (FastAPI, pydantic, the model and
its libraries: hundreds of thousands of objects). With CPython's defaults, the young
generation is collected every 700 net allocations; with many requests in flight that happens
every few dozen requests, and the older generations' collections that follow walk much of the
heap. Measured on the real server (bench/NOTES.md): 16-20 us of collection per one-task
/predict at 64 connections, ~10% of the worker's CPU; none with the settings below.

So a worker (1) raises the young generation's threshold above what a request allocates, and
(2) once its models have loaded, moves everything alive into the permanent generation
(`gc.freeze()`), which full collections skip. Memory is unchanged: objects are still freed
by reference counting as before; only cyclic garbage waits a little longer for a collection.
"""

from __future__ import annotations

import gc
import logging
import threading
from collections.abc import Iterable
from typing import Any, Protocol

__all__ = ["GEN0_THRESHOLD", "tune_for_serving"]

log = logging.getLogger("labelbridge.server")

#: young-generation threshold: above the containers one large /predict allocates
GEN0_THRESHOLD = 10_000
#: how long the freeze waits for the models to load (a load that takes longer is frozen then)
FREEZE_WAIT_SECONDS = 600.0


class _Loading(Protocol):
    metrics: Any  # labelbridge.metrics.Metrics

    def wait_loaded(self, timeout: float) -> bool: ...


def tune_for_serving(backends: Iterable[_Loading]) -> None:
    """Raise the young generation's threshold now; freeze the heap once every backend's model
    has loaded (a background thread: startup never waits for it)."""
    gen0, gen1, gen2 = gc.get_threshold()
    gc.set_threshold(max(GEN0_THRESHOLD, gen0), gen1, gen2)
    waiting = list(backends)

    def freeze_when_loaded() -> None:
        for backend in waiting:
            backend.wait_loaded(FREEZE_WAIT_SECONDS)
        gc.collect()  # what is garbage already goes now, not into the permanent generation
        gc.freeze()
        frozen = gc.get_freeze_count()
        for backend in waiting:
            backend.metrics.set(
                "labelbridge_gc_frozen_objects",
                "Objects a worker moved out of garbage collection once its model loaded.",
                float(frozen),
            )
        log.debug("gc: %d objects frozen after the model load", frozen)

    threading.Thread(target=freeze_when_loaded, name="labelbridge-gc-freeze", daemon=True).start()
