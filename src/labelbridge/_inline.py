"""When a model's predict() may run on the event loop instead of a pool thread.

Handing a call to a thread and back costs the event loop more than a fast model's whole
predict() (a trivial model: ~15 us of model work against the hop, the wake-ups and the GIL
hand-over, on a busy core). So a model whose measured cost per call stays under
INLINE_PREDICT_MS runs inline; anything slower, or not yet measured, goes to the pool, where a
slow predict() never holds up /health.

Inline calls are not made from each request's own task but queued and run back to back by
one loop callback (`LoopRunner`): the requests that arrived in one turn of the event loop are
parsed together, predicted together, answered together. Measured on the real server
(bench/NOTES.md), that costs less per request than either running each inline in its own task
or the thread pool, at every concurrency: the same code stays hot in the CPU's caches.

The cost is measured wherever the call ran: predict() and the checking of its answer, as both
hold up the loop when inline (see InlineCost for the two averages kept). A call that spends
most of its time waiting rather than computing (a model that asks another server) stays in
the pool however short: inline, its waits would not overlap. A model that is
fast most of the time but sometimes slow (an asset download on a cache miss, a new version to
load) would block the loop when the slow call runs inline: after such a surprise (a call over
SURPRISE times the limit) inline is off for a while, the pause doubling each time (up to
MAX_PAUSE), so such a model settles on the pool.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from typing import Any

__all__ = ["InlineCost", "LoopRunner"]

#: weight of the newest sample in the moving average
ALPHA = 0.2
#: an inline call this many times over the limit pauses inline execution
SURPRISE = 10.0
FIRST_PAUSE = 5.0
MAX_PAUSE = 600.0
#: ... and so does one over this many seconds, whatever the limit (/health's p99 target)
SURPRISE_CAP = 0.05
#: a model whose calls spend less of their time on the CPU than this mostly waits (network,
#: sleeps, another process): in the pool such waits overlap, inline each would stall the loop
MIN_CPU_SHARE = 0.2
#: an inline call's CPU time is read on one call in this many (the thread-CPU clock is a
#: system call, ~0.7 us); pool calls are always read
CPU_SAMPLE_EVERY = 8
#: one loop callback runs queued calls for at most this long, then lets I/O in (/health)
TURN_BUDGET = 0.005


class InlineCost:
    """What a model's predict() costs, and whether the next call may run inline.

    Two moving averages, as many models have a fixed cost per call: seconds per one-task call
    (Label Studio's interactive and per-task requests), and seconds per task in calls of
    several tasks (batches). A one-task call is judged by the first only; a batch by the
    second, else (not measured yet) by the one-task cost times its size."""

    def __init__(self, limit_ms: float) -> None:
        self.limit = limit_ms / 1000.0
        self.single: float | None = None  # seconds per one-task call
        self.per_task: float | None = None  # seconds per task, in calls of several tasks
        self.cpu_share: float | None = None  # CPU time of the calling thread / wall time
        self.paused_until = 0.0  # time.monotonic()
        self.pauses = 0
        self._calls = 0
        self._lock = threading.Lock()

    def samples_cpu(self, inline: bool) -> bool:
        """Whether this call's CPU time should be read (see CPU_SAMPLE_EVERY)."""
        if not inline:
            return True
        self._calls += 1  # a race between threads costs a sample, nothing else
        return self._calls % CPU_SAMPLE_EVERY == 0

    def allows(self, tasks: int) -> bool:
        """Whether a call with this many tasks is expected to finish inside the limit."""
        if self.limit <= 0:
            return False
        if tasks <= 1:
            expected = self.single
        else:
            unit = self.per_task if self.per_task is not None else self.single
            expected = None if unit is None else unit * tasks
        if expected is None or expected > self.limit:
            return False
        if self.cpu_share is not None and self.cpu_share < MIN_CPU_SHARE:
            return False
        return not self.paused_until or time.monotonic() >= self.paused_until

    def disable(self) -> None:
        """Never inline again (a predict() that cannot run on the event loop's thread)."""
        self.limit = 0.0

    def record(
        self, seconds: float, tasks: int, *, inline: bool, cpu_seconds: float | None = None
    ) -> None:
        """One call took `seconds` for `tasks` tasks, `cpu_seconds` of them on its thread's
        CPU (a pool call's wall time also holds its waits for the GIL: its share then reads
        low, which errs towards the pool)."""
        with self._lock:
            if tasks <= 1:
                self.single = _moved(self.single, seconds)
            else:
                self.per_task = _moved(self.per_task, seconds / tasks)
            if cpu_seconds is not None and seconds > 0:
                self.cpu_share = _moved(self.cpu_share, min(cpu_seconds / seconds, 1.0))
            surprise = min(SURPRISE * self.limit, SURPRISE_CAP)
            if inline and self.limit > 0 and seconds > surprise:
                pause = min(FIRST_PAUSE * 2.0**self.pauses, MAX_PAUSE)
                self.pauses += 1
                self.paused_until = time.monotonic() + pause


def _moved(average: float | None, sample: float) -> float:
    return sample if average is None else average + ALPHA * (sample - average)


class LoopRunner:
    """Runs `call(request)` on the event loop, batched per loop turn (see the module doc).

    `run()` resolves to what `call` returned (None: the caller goes to the pool instead) or
    raises what it raised. A turn stops after TURN_BUDGET seconds and leaves the rest to the
    next turn, so a burst of queued calls never holds up other requests for long."""

    def __init__(self, call: Callable[[Any], Any]) -> None:
        self.call = call
        self._queue: list[tuple[Any, asyncio.Future[Any]]] = []
        self._scheduled = False

    def run(self, request: Any) -> asyncio.Future[Any]:
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        self._queue.append((request, future))
        if not self._scheduled:
            self._scheduled = True
            loop.call_soon(self._turn, loop)
        return future

    def _turn(self, loop: asyncio.AbstractEventLoop) -> None:
        queue, self._queue = self._queue, []
        self._scheduled = False
        deadline = time.perf_counter() + TURN_BUDGET
        for index, (request, future) in enumerate(queue):
            if index and time.perf_counter() > deadline:
                self._later(loop, queue[index:])  # the rest, ahead of newer arrivals
                return
            if future.cancelled():
                continue
            try:
                future.set_result(self.call(request))
            except (KeyboardInterrupt, SystemExit) as exc:
                future.set_exception(RuntimeError(f"the server is stopping ({type(exc).__name__})"))
                self._later(loop, queue[index + 1 :])
                raise
            except asyncio.CancelledError:
                future.cancel()
            except BaseException as exc:  # to the request, as the pool path would
                future.set_exception(exc)

    def _later(
        self, loop: asyncio.AbstractEventLoop, rest: list[tuple[Any, asyncio.Future[Any]]]
    ) -> None:
        if rest:
            self._queue[:0] = rest
            if not self._scheduled:
                self._scheduled = True
                loop.call_soon(self._turn, loop)
