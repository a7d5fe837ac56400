"""A fast model's predict() runs on the event loop; a slow one, or one that was slow once, in
the pool (labelbridge._inline and Gate._predict)."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from _backends import CHOICES_CONFIG, Echo
from labelbridge import _inline
from labelbridge._inline import InlineCost, LoopRunner
from labelbridge.model import PredictContext
from labelbridge.server import create_app
from labelbridge.service import Backend
from labelbridge.settings import Settings
from support import serve

BODY = {"tasks": [{"id": 1, "data": {"text": "I love it"}}], "project": "1.1"}


# --- the policy -----------------------------------------------------------------------------
def test_nothing_runs_inline_before_it_was_measured_or_with_a_zero_limit() -> None:
    assert not InlineCost(2.0).allows(1)
    off = InlineCost(0.0)
    off.record(0.000_001, 1, inline=False)
    assert not off.allows(1)


def test_batches_are_judged_per_task_and_single_calls_on_their_own() -> None:
    cost = InlineCost(2.0)
    cost.record(0.000_100, 1, inline=False)  # 0.1 ms per call of one task
    assert cost.allows(1) and cost.allows(19)  # no batch measured: 19 x 0.1 ms
    assert not cost.allows(64)  # 6.4 ms expected
    cost.record(0.064, 64, inline=False)  # batches: 1 ms per task
    assert cost.allows(1) and not cost.allows(3)
    for _ in range(30):
        cost.record(0.010, 1, inline=False)  # one-task calls became slow
    assert not cost.allows(1)


def test_a_cheap_batch_rate_does_not_make_slow_single_calls_inline() -> None:
    """A model with a large fixed cost per call: 0.1 ms per task in batches of 100, but 50 ms
    for one task. Only a measured one-task call can put one-task calls on the loop."""
    cost = InlineCost(2.0)
    cost.record(0.010, 100, inline=False)
    assert not cost.allows(1) and cost.allows(10)
    cost.record(0.050, 1, inline=False)
    assert not cost.allows(1)


def test_a_model_measured_in_batches_only_is_likely_inline_before_its_size_is_known() -> None:
    """labelbridge._http holds a request for the inline path from its headers alone."""
    cost = InlineCost(2.0)
    assert not cost.likely()  # nothing measured
    cost.record(0.010, 100, inline=False)  # batches only: 0.1 ms per task
    assert cost.likely() and not cost.allows(1) and cost.allows(10)
    slow = InlineCost(2.0)
    slow.record(0.500, 100, inline=False)  # 5 ms per task: no batch size fits
    assert not slow.likely()
    waits = InlineCost(2.0)
    waits.record(0.001, 1, inline=False, cpu_seconds=0.000_01)  # a call that mostly waits
    assert not waits.likely()


def test_a_paused_model_is_not_likely_inline(now: list[float]) -> None:
    cost = InlineCost(2.0)
    cost.record(0.000_100, 1, inline=True)
    assert cost.likely()
    cost.record(0.100, 1, inline=True)  # a surprise: inline pauses
    for _ in range(30):  # meanwhile fast again, in the pool
        cost.record(0.000_100, 1, inline=False)
    assert cost.allows(1) is cost.likely() is False  # paused still
    now[0] += _inline.FIRST_PAUSE + 1
    assert cost.allows(1) and cost.likely()


@pytest.fixture
def now(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """time.monotonic() as _inline sees it, moved by the test: now[0]."""
    clock = [1000.0]
    monkeypatch.setattr(_inline.time, "monotonic", lambda: clock[0])
    return clock


def test_a_slow_surprise_inline_pauses_inline_and_the_pause_doubles(now: list[float]) -> None:
    cost = InlineCost(2.0)
    cost.record(0.000_050, 1, inline=False)
    cost.record(0.500, 1, inline=True)  # 250x the limit, on the event loop
    for _ in range(40):
        cost.record(0.000_050, 1, inline=False)  # fast again: the average is back down
    assert not cost.allows(1)
    now[0] += _inline.FIRST_PAUSE + 0.1
    assert cost.allows(1)
    cost.record(0.500, 1, inline=True)
    for _ in range(40):
        cost.record(0.000_050, 1, inline=False)
    now[0] += _inline.FIRST_PAUSE + 0.1
    assert not cost.allows(1)  # the second pause is twice as long
    now[0] += _inline.FIRST_PAUSE
    assert cost.allows(1)


def test_a_surprise_long_after_the_last_one_pauses_for_the_first_pause_again(
    now: list[float],
) -> None:
    """A host that stalls a process now and then must not turn inline off for good."""
    cost = InlineCost(2.0)
    cost.record(0.000_050, 1, inline=False)
    for _ in range(3):  # three surprises in a row: 5, 10, 20 s
        cost.record(0.500, 1, inline=True)
        now[0] = cost.paused_until + 0.1
    assert cost.pauses == 3
    now[0] += _inline.FORGIVE_AFTER
    cost.record(0.500, 1, inline=True)
    assert cost.paused_until - now[0] == _inline.FIRST_PAUSE


def test_pool_calls_beside_others_count_their_cpu_time_not_their_wait_for_the_gil() -> None:
    """Three batches in flight in the pool: each one's wall time is ~3x its work (it waits for
    the GIL while the others run). Counting that kept a model that fits inline in the pool."""
    cost = InlineCost(10.0)
    cost.record(0.004, 64, inline=False, cpu_seconds=0.0038, alone=True)  # 4 ms alone
    assert cost.allows(64)
    for _ in range(30):
        cost.record(0.012, 64, inline=False, cpu_seconds=0.0038, alone=False)
    assert cost.allows(64)  # ~4 ms of work per batch: inline
    assert cost.cpu_share is not None and cost.cpu_share > 0.9  # not taken for waiting
    for _ in range(30):  # slower work, alone: 12 ms per batch
        cost.record(0.012, 64, inline=False, cpu_seconds=0.0118, alone=True)
    assert not cost.allows(64)


def test_a_first_call_beside_others_still_teaches_the_share() -> None:
    """Else a model that waits, first seen only beside other calls, would have no share and
    go inline (seen once in the suite)."""
    cost = InlineCost(10.0)
    cost.record(0.002, 1, inline=False, cpu_seconds=0.000_05, alone=False)  # asleep, mostly
    assert cost.cpu_share is not None and not cost.allows(1)


def test_a_pool_call_is_alone_only_if_no_other_pool_call_overlapped_it() -> None:
    cost = InlineCost(10.0)
    first = cost.pool_enter()
    assert cost.pool_alone(first)
    a = cost.pool_enter()
    b = cost.pool_enter()  # began while a ran
    assert not cost.pool_alone(a)
    c = cost.pool_enter()  # began while b ran
    assert not cost.pool_alone(b)
    assert not cost.pool_alone(c)
    assert cost.pool_alone(cost.pool_enter())


def test_cpu_time_is_read_on_every_batch_and_one_task_call_in_n_once_the_share_is_known() -> None:
    cost = InlineCost(10.0)
    assert all(cost.samples_cpu(True, 1) for _ in range(5))  # share unknown: every call
    assert all(cost.samples_cpu(False, 1) for _ in range(5))  # the pool: every call
    cost.record(0.000_02, 1, inline=True, cpu_seconds=0.000_02)
    reads = [cost.samples_cpu(True, 1) for _ in range(8 * _inline.CPU_SAMPLE_EVERY)]
    assert sum(reads) == 8
    assert all(cost.samples_cpu(True, 64) for _ in range(5))  # 0.7 us against milliseconds


# --- where predict() runs in a real server ----------------------------------------------------
class _Recording(Echo):
    seconds = 0.0
    threads: list[str] = []

    def predict(self, tasks: list[dict[str, Any]], context: PredictContext) -> list[Any]:
        type(self).threads.append(threading.current_thread().name)
        if self.seconds:
            time.sleep(self.seconds)
        return super().predict(tasks, context)


class Fast(_Recording):
    threads: list[str] = []


class UsesAsyncio(_Recording):
    """An SDK-style model that runs a coroutine with asyncio.run() inside predict()."""

    threads: list[str] = []

    def predict(self, tasks: list[dict[str, Any]], context: PredictContext) -> list[Any]:
        async def answer() -> list[Any]:
            return super(UsesAsyncio, self).predict(tasks, context)

        return asyncio.run(answer())


class Slow(_Recording):
    seconds = 0.02
    threads: list[str] = []


def _threads_of(model: type[_Recording], tmp_path: Path, **settings: Any) -> list[str]:
    model.threads = []
    backend = Backend(
        model,
        Settings(model_dir=tmp_path / "models", **settings),
        model_ref=f"test_inline:{model.__name__}",
    )
    with serve(create_app(backend)) as url, httpx.Client(timeout=10) as http:
        setup = {"project": "1.1", "schema": CHOICES_CONFIG}
        assert http.post(f"{url}/setup", json=setup).status_code == 200
        for _ in range(20):
            answer = http.post(f"{url}/predict", json=BODY)
            assert answer.status_code == 200, answer.text
            assert answer.json()["results"][0]["result"][0]["value"]["choices"] == ["Positive"]
    return model.threads


def test_a_fast_model_moves_onto_the_event_loop_once_measured(tmp_path: Path) -> None:
    threads = _threads_of(Fast, tmp_path)
    assert threads[0] == "labelbridge-call"  # not measured yet: the pool
    assert all(name != "labelbridge-call" for name in threads[1:]), threads


def test_a_slow_model_stays_in_the_pool(tmp_path: Path) -> None:
    assert set(_threads_of(Slow, tmp_path)) == {"labelbridge-call"}


def test_inline_predict_ms_zero_keeps_every_call_in_the_pool(tmp_path: Path) -> None:
    assert set(_threads_of(Fast, tmp_path, inline_predict_ms=0)) == {"labelbridge-call"}


# the inline try leaves the model's coroutine unawaited (asyncio.run refuses before running it)
@pytest.mark.filterwarnings("ignore:coroutine .* was never awaited:RuntimeWarning")
def test_a_model_running_asyncio_itself_is_never_inline_and_never_fails(tmp_path: Path) -> None:
    """asyncio.run() cannot run on the server's loop thread: the first inline try falls back
    to the pool (the request still answers 200, checked in _threads_of) and inline stays off."""
    threads = _threads_of(UsesAsyncio, tmp_path)
    assert threads[0] == "labelbridge-call"
    assert threads[-1] == "labelbridge-call" and threads.count("labelbridge-call") >= 19


def test_a_base_exception_from_a_call_reaches_its_request_and_the_runner_goes_on() -> None:
    class Boom(BaseException):
        pass

    def call(request: str) -> str:
        if request == "boom":
            raise Boom
        if request == "cancel":
            raise asyncio.CancelledError
        return request.upper()

    runner = LoopRunner(call)

    async def main() -> None:
        first = runner.run("a")
        boom = runner.run("boom")
        cancel = runner.run("cancel")
        last = runner.run("b")
        assert await first == "A"
        with pytest.raises(Boom):
            await boom
        with pytest.raises(asyncio.CancelledError):
            await cancel
        assert await last == "B"
        assert await runner.run("c") == "C"  # later calls still run

    asyncio.run(main())


def test_a_turn_stops_after_its_budget_and_keeps_the_order(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(_inline, "TURN_BUDGET", 0.0)  # one call per turn
    done: list[str] = []
    runner = LoopRunner(lambda request: done.append(request) or request)

    async def main() -> None:
        futures = [runner.run(str(i)) for i in range(5)]
        await asyncio.sleep(0)  # one turn of the loop
        assert done == ["0"]
        futures.append(runner.run("5"))  # a newer arrival goes after the rest
        assert [await f for f in futures] == [str(i) for i in range(6)]

    asyncio.run(main())
    assert done == [str(i) for i in range(6)]


def test_threads_1_keeps_every_call_in_the_pool(tmp_path: Path) -> None:
    """THREADS=1 promises predict() one call at a time: an inline call could run beside a
    pool call, so none runs inline."""
    assert set(_threads_of(Fast, tmp_path, threads=1)) == {"labelbridge-call"}


def test_a_call_that_mostly_waits_stays_in_the_pool_however_short() -> None:
    """A model that asks another server: 1 ms per call, nearly all of it waiting. Inline, each
    wait would stall the loop; in the pool the waits overlap."""
    cost = InlineCost(10.0)
    cost.record(0.001, 1, inline=False, cpu_seconds=0.000_05)
    assert not cost.allows(1)
    for _ in range(30):
        cost.record(0.001, 1, inline=False, cpu_seconds=0.000_95)  # computing after all
    assert cost.allows(1)


class Waits(_Recording):
    seconds = 0.002  # under the limit, but asleep
    threads: list[str] = []


def test_a_model_that_waits_stays_in_the_pool_in_a_real_server(tmp_path: Path) -> None:
    assert set(_threads_of(Waits, tmp_path, inline_predict_ms=10)) == {"labelbridge-call"}
    assert all(name != "labelbridge-call" for name in _threads_of(Fast, tmp_path)[1:])
