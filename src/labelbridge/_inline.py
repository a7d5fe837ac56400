"""When a model's predict() may run on the event loop instead of a pool thread.

Handing a call to a thread and back costs the event loop more than a fast model's whole
predict() (a trivial model: ~15 us of model work against the hop, the wake-ups and the GIL
hand-over, on a busy core). So a model whose measured cost per call stays under
INLINE_PREDICT_MS runs inline; anything slower, or not yet measured, goes to the pool, where a
slow predict() never holds up /health.

A small /predict is answered from the socket's read callback (labelbridge._http), while the
turn's budget lasts (`TurnBudget`, TURN_BUDGET). Other inline calls are not made from each
request's own task but queued and run back to back by one loop callback (`LoopRunner`): the
requests that arrived in one turn of the event loop are predicted together, answered together,
within the same budget. Measured on the real server
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
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

__all__ = ["InlineCost", "LoopRunner", "TurnBudget"]

log = logging.getLogger("labelbridge.server")

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
#: an inline one-task call's CPU time is read on one call in this many (the thread-CPU clock
#: is a system call, ~0.7 us); pool calls and batches are always read
CPU_SAMPLE_EVERY = 8
#: a surprise this long after the last one pauses for FIRST_PAUSE again, not twice the last
#: pause (a host that stalls a process now and then must not turn inline off for good)
FORGIVE_AFTER = 60.0
#: inline work per turn of the event loop (both paths), then I/O and other requests get in:
#: at /predict c=64, 1 ms took /train's answer from ~41 to ~15 ms (p50) with the same req/s
#: as 5 ms (a turn always runs one call, however long: a batch of 4 ms is one per turn)
TURN_BUDGET = 0.001


class InlineCost:
    """What a model's predict() costs, and whether the next call may run inline.

    Two moving averages, as many models have a fixed cost per call: seconds per one-task call
    (Label Studio's interactive and per-task requests), and seconds per task in calls of
    several tasks (batches). A one-task call is judged by the first only; a batch by the
    second, else (not measured yet) by the one-task cost times its size.

    The cost is what the call would hold the event loop for: the wall time of a call that ran
    alone (inline, or the only call in the pool). A pool call beside others also waits for the
    GIL while they run (three batches in flight make each look three times longer), and
    counting that kept a model that fits inline in the pool for good: such a call counts as
    its CPU time over the CPU share learned from calls that ran alone."""

    def __init__(self, limit_ms: float) -> None:
        self.limit = limit_ms / 1000.0
        self.single: float | None = None  # seconds per one-task call
        self.per_task: float | None = None  # seconds per task, in calls of several tasks
        self.cpu_share: float | None = None  # CPU time of the calling thread / wall time
        self.paused_until = 0.0  # time.monotonic()
        self.pauses = 0
        self._surprised_at = float("-inf")  # time.monotonic()
        self._calls = 0
        self._pool_running = 0  # pool calls under way
        self._pool_started = 0  # pool calls ever started
        self._lock = threading.Lock()

    def samples_cpu(self, inline: bool, tasks: int = 1) -> bool:
        """Whether this call's CPU time should be read (see CPU_SAMPLE_EVERY)."""
        if not inline or tasks > 1 or self.cpu_share is None:
            return True
        self._calls += 1  # a race between threads costs a sample, nothing else
        return self._calls % CPU_SAMPLE_EVERY == 0

    def pool_enter(self) -> tuple[int, int]:
        """A pool call begins; pass what this returns to pool_alone() when it ends."""
        with self._lock:
            self._pool_running += 1
            self._pool_started += 1
            return self._pool_started, self._pool_running

    def pool_alone(self, ticket: tuple[int, int]) -> bool:
        """A pool call ends: whether no other pool call ran beside it."""
        with self._lock:
            self._pool_running -= 1
            return ticket[1] == 1 and ticket[0] == self._pool_started

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

    def likely(self) -> bool:
        """Whether some call (one task, or a batch of a size measured inline) may run inline
        now: before the number of tasks is known (labelbridge._http, from the headers)."""
        single, per_task, limit = self.single, self.per_task, self.limit
        if limit <= 0 or not (
            (single is not None and single <= limit) or (per_task is not None and per_task <= limit)
        ):
            return False  # off, nothing measured, or nothing fits
        if self.cpu_share is not None and self.cpu_share < MIN_CPU_SHARE:
            return False
        return not self.paused_until or time.monotonic() >= self.paused_until

    def disable(self) -> None:
        """Never inline again (a predict() that cannot run on the event loop's thread)."""
        self.limit = 0.0

    def record(
        self,
        seconds: float,
        tasks: int,
        *,
        inline: bool,
        cpu_seconds: float | None = None,
        alone: bool = True,
    ) -> None:
        """One call took `seconds` for `tasks` tasks, `cpu_seconds` of them on its thread's
        CPU; `alone`: a pool call with no other pool call beside it (see the class doc)."""
        with self._lock:
            cost = seconds
            # a first reading even from a call beside others (its GIL waits read as waiting:
            # towards the pool), never none: an unknown share would let a waiting model in
            if inline or alone or self.cpu_share is None:
                if cpu_seconds is not None and seconds > 0:
                    self.cpu_share = _moved(self.cpu_share, min(cpu_seconds / seconds, 1.0))
            elif cpu_seconds is not None and self.cpu_share:
                cost = min(seconds, cpu_seconds / self.cpu_share)
            if tasks <= 1:
                self.single = _moved(self.single, cost)
            else:
                self.per_task = _moved(self.per_task, cost / tasks)
            surprise = min(SURPRISE * self.limit, SURPRISE_CAP)
            if inline and self.limit > 0 and seconds > surprise:
                now = time.monotonic()
                if now - self._surprised_at > FORGIVE_AFTER:
                    self.pauses = 0
                pause = min(FIRST_PAUSE * 2.0**self.pauses, MAX_PAUSE)
                self.pauses += 1
                self._surprised_at = now
                self.paused_until = now + pause


def _moved(average: float | None, sample: float) -> float:
    return sample if average is None else average + ALPHA * (sample - average)


class TurnBudget:
    """How long the current turn of the event loop has spent on inline work: the LoopRunner's
    calls and labelbridge._http's answers from the sockets' read callbacks (uvloop runs those
    of every ready socket in one turn). Past TURN_BUDGET the rest waits for later turns, after
    what else is ready (/health), so the two paths together hold a turn for ~TURN_BUDGET."""

    __slots__ = ("_end_handle", "began")

    def __init__(self) -> None:
        self.began: float | None = None
        self._end_handle: asyncio.Handle | None = None

    def allows(self) -> bool:
        """Whether one more inline call fits in this turn (call it on the loop's thread)."""
        now = time.perf_counter()
        if self.began is None:
            self.began = now
            # once this turn's callbacks are done
            self._end_handle = asyncio.get_running_loop().call_soon(self._end)
            return True
        return now - self.began < TURN_BUDGET

    def end_after(self) -> None:
        """Move the end of this turn's budget after the callbacks scheduled so far: a
        LoopRunner turn queued by this turn's read callbacks runs in this turn too, and must
        see what they spent (else each turn could hold the loop for twice the budget)."""
        if self._end_handle is not None:
            self._end_handle.cancel()
            self._end_handle = asyncio.get_running_loop().call_soon(self._end)

    def _end(self) -> None:
        self.began = None
        self._end_handle = None


#: what a queued call's outcome goes to: (result, None) or (None, the exception it raised)
Done = Callable[[Any, "BaseException | None"], None]


class LoopRunner:
    """Runs `call(request)` on the event loop, batched per loop turn (see the module doc).

    `run()` resolves to what `call` returned (None: the caller goes to the pool instead) or
    raises what it raised; `submit()` hands the outcome to a callback instead (labelbridge._http
    writes the answer from it, with no task to wake). A turn runs at least one call, then stops
    when the turn's budget (shared with the HTTP fast path) is spent and leaves the rest to the
    next turn, so a burst of queued calls never holds up other requests for long."""

    def __init__(self, call: Callable[[Any], Any], budget: TurnBudget | None = None) -> None:
        self.call = call
        self.budget = budget if budget is not None else TurnBudget()
        self._queue: list[tuple[Any, Done, Callable[[], bool]]] = []
        self._scheduled = False

    @property
    def idle(self) -> bool:
        """No call waits: a request answered now would not overtake queued ones."""
        return not self._queue

    def run(self, request: Any) -> asyncio.Future[Any]:
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()

        def done(result: Any, exc: BaseException | None) -> None:
            if future.cancelled():
                return
            if exc is None:
                future.set_result(result)
            elif isinstance(exc, asyncio.CancelledError):
                future.cancel()
            else:
                future.set_exception(exc)

        self.submit(request, done, lambda: not future.cancelled())
        return future

    def submit(self, request: Any, done: Done, wanted: Callable[[], bool]) -> None:
        """Queue `call(request)` for a coming turn; `done` gets its outcome, on the loop's
        thread. A call no longer `wanted()` when its turn comes (the client left) is skipped."""
        self._queue.append((request, done, wanted))
        if not self._scheduled:
            self._scheduled = True
            asyncio.get_running_loop().call_soon(self._turn)
            self.budget.end_after()

    def _turn(self) -> None:
        queue, self._queue = self._queue, []
        self._scheduled = False
        budget = self.budget
        for index, (request, done, wanted) in enumerate(queue):
            if not budget.allows() and index:
                self._later(queue[index:])  # the rest, ahead of newer arrivals
                return
            if not wanted():
                continue
            try:
                result = self.call(request)
            except (KeyboardInterrupt, SystemExit) as exc:
                stopping = RuntimeError(f"the server is stopping ({type(exc).__name__})")
                _deliver(done, None, stopping)
                self._later(queue[index + 1 :])
                raise
            except BaseException as exc:  # to the request, as the pool path would
                _deliver(done, None, exc)
            else:
                _deliver(done, result, None)

    def _later(self, rest: list[tuple[Any, Done, Callable[[], bool]]]) -> None:
        if rest:
            self._queue[:0] = rest
            if not self._scheduled:
                self._scheduled = True
                asyncio.get_running_loop().call_soon(self._turn)


def _deliver(done: Done, result: Any, exc: BaseException | None) -> None:
    """One outcome to its callback; a callback that fails must not lose the calls after it."""
    try:
        done(result, exc)
    except Exception:
        log.exception("a queued inline call's answer could not be delivered")
