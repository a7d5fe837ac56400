"""The connector's bulk API against our own server: predict_batches with requests in flight.

The server is the real one (create_app on uvicorn, tests/support.serve) behind a thin ASGI
wrapper that counts the /predict requests in flight and holds each a while, the first ones of
each round longest, so answers come back out of order; it can also fail one request.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from _backends import CHOICES_CONFIG, Echo
from fakes.stub_backend import StubBackend
from labelbridge.client import (
    DEFAULT_CONCURRENCY,
    AsyncMLBackendClient,
    BackendCallError,
    BadAnswer,
    CallHTTPError,
    CallTimeout,
    MLBackendClient,
)
from labelbridge.server import create_app
from labelbridge.service import Backend
from labelbridge.settings import Settings
from support import serve

#: 22 tasks, batches of 4: 6 batches, the last one of 2
TASKS: list[dict[str, Any]] = [
    {"id": i, "data": {"text": f"I love item {i}" if i % 3 == 0 else f"item {i}"}}
    for i in range(22)
]
OPTIONS: dict[str, Any] = {"project": "1.1700000000", "label_config": CHOICES_CONFIG}


def label(task: dict[str, Any]) -> str:
    return "Positive" if "love" in task["data"]["text"] else "Negative"


class InFlight:
    """ASGI wrapper: counts /predict requests in flight and holds the k-th one `holds[k % n]`
    seconds (so answers come back out of order). By batch (its first task's id // 4): `slow`
    holds it that long instead, `fail` answers that status instead."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.lock = threading.Lock()
        self.now = self.most = self.seen = 0
        self.holds = [0.15, 0.08, 0.0]
        self.slow: dict[int, float] = {}
        self.fail: dict[int, int] = {}

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["path"] != "/predict":
            await self.app(scope, receive, send)
            return
        with self.lock:
            number, self.seen, self.now = self.seen, self.seen + 1, self.now + 1
            self.most = max(self.most, self.now)
        try:
            messages = [await receive()]
            while messages[-1].get("more_body"):
                messages.append(await receive())
            body = b"".join(m.get("body", b"") for m in messages)
            batch = json.loads(body)["tasks"][0]["id"] // 4
            hold = self.slow.get(batch, self.holds[number % len(self.holds)])
            await asyncio.sleep(hold)
            if batch in self.fail:
                await self._answer(send, self.fail[batch])
                return

            async def replay() -> Any:
                return messages.pop(0) if messages else await receive()

            await self.app(scope, replay, send)
        finally:
            with self.lock:
                self.now -= 1

    @staticmethod
    async def _answer(send: Any, status: int) -> None:
        body = b'{"error": "Injected", "detail": "the test fails this request"}'
        headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    def reset(self) -> None:
        with self.lock:
            self.most = self.seen = 0
        self.slow, self.fail = {}, {}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, InFlight]]:
    settings = Settings(model_dir=tmp_path_factory.mktemp("bulk") / "models")
    wrapper = InFlight(create_app(Backend(Echo, settings, model_ref="_backends:Echo")))
    with serve(wrapper) as url:
        yield url, wrapper


@pytest.fixture
def backend(server: tuple[str, InFlight]) -> tuple[str, InFlight]:
    server[1].reset()
    return server


def check_answers(got: list[tuple[list[Any], Any]]) -> None:
    """Every batch in order, each task's prediction its own (Echo labels by the text)."""
    assert [task for batch, _ in got for task in batch] == TASKS
    assert [len(batch) for batch, _ in got] == [4, 4, 4, 4, 4, 2]
    for batch, predictions in got:
        labels = [item[0].result[0]["value"]["choices"][0] for item in predictions.results]
        assert labels == [label(task) for task in batch]


def sync_run(url: str, concurrency: int, got: list[Any], **kw: Any) -> list[Any]:
    """predict_batches of TASKS by 4, each (batch, predictions) appended to `got` as it comes."""
    with MLBackendClient(url, **kw) as client:
        got.extend(client.predict_batches(TASKS, batch_size=4, concurrency=concurrency, **OPTIONS))
    return got


def async_run(url: str, concurrency: int, got: list[Any], **kw: Any) -> list[Any]:
    async def main() -> None:
        async with AsyncMLBackendClient(url, **kw) as client:
            batches = client.predict_batches(
                TASKS, batch_size=4, concurrency=concurrency, **OPTIONS
            )
            async for item in batches:
                got.append(item)

    asyncio.run(main())
    return got


RUNS = {"sync": sync_run, "async": async_run}


def no_pool_threads() -> bool:
    return not any(t.name.startswith("labelbridge-predict") for t in threading.enumerate())


def failure(way: str, url: str, concurrency: int, **kw: Any) -> tuple[int, BackendCallError]:
    """How many batches came before the error, and the error."""
    got: list[Any] = []
    with pytest.raises(BackendCallError) as error:
        RUNS[way](url, concurrency, got, **kw)
    assert no_pool_threads()  # the sync client's requests in flight ended before the raise
    return len(got), error.value


@pytest.mark.parametrize("way", RUNS)
@pytest.mark.parametrize("concurrency", [1, 2, 3])
def test_order_is_kept_with_at_most_n_in_flight(
    backend: tuple[str, InFlight], way: str, concurrency: int
) -> None:
    url, wrapper = backend
    check_answers(RUNS[way](url, concurrency, []))
    assert wrapper.seen == 6
    assert wrapper.most == concurrency  # never more, and the pipeline does fill


def test_the_default_is_pipelined(backend: tuple[str, InFlight]) -> None:
    url, wrapper = backend
    assert DEFAULT_CONCURRENCY >= 2
    with MLBackendClient(url) as client:
        got = list(client.predict_batches(TASKS, batch_size=4, **OPTIONS))
    check_answers(got)
    assert wrapper.most == DEFAULT_CONCURRENCY


@pytest.mark.parametrize("way", RUNS)
def test_an_error_status_propagates_in_order_as_with_one_request(
    backend: tuple[str, InFlight], way: str
) -> None:
    url, wrapper = backend
    outcomes = []
    for concurrency in (1, 3):
        wrapper.reset()
        wrapper.fail = {2: 500}  # the third batch, answered before the two first
        wrapper.slow = {0: 0.15, 1: 0.08, 2: 0.0}
        outcomes.append(failure(way, url, concurrency))
        assert wrapper.most <= concurrency
    (before_one, one), (before_three, three) = outcomes
    assert before_one == before_three == 2  # the batches before it were yielded
    assert type(one) is type(three) is CallHTTPError
    assert three.status == 500 and three.call == "predict"
    assert str(one) == str(three)


@pytest.mark.parametrize("way", RUNS)
def test_a_timeout_propagates_as_call_timeout(backend: tuple[str, InFlight], way: str) -> None:
    url, wrapper = backend
    wrapper.slow = {0: 0.0, 1: 1.0}  # the second batch outlasts ML_TIMEOUT_PREDICT
    try:
        before, error = failure(way, url, 2, timeout_predict=0.4)
    finally:
        deadline = time.monotonic() + 5
        while wrapper.now and time.monotonic() < deadline:  # the server ends the held one
            time.sleep(0.02)
    assert before == 1 and type(error) is CallTimeout
    assert error.variable == "ML_TIMEOUT_PREDICT" and error.call == "predict"


@pytest.mark.parametrize("way", RUNS)
def test_a_wrong_result_count_is_a_bad_answer(way: str) -> None:
    with StubBackend(wrong_count=True) as stub:
        before, error = failure(way, stub.url, 2)
    assert before == 0 and type(error) is BadAnswer
    assert "has 3 results for 4 tasks" in str(error) and error.reason == "bad_answer"


def test_stopping_early_sends_no_more(backend: tuple[str, InFlight]) -> None:
    url, wrapper = backend
    with MLBackendClient(url) as client:
        batches = client.predict_batches(TASKS, batch_size=4, concurrency=3, **OPTIONS)
        first = next(batches)
        batches.close()
        assert no_pool_threads()  # close() waited for the requests in flight
    assert first[0] == TASKS[:4]
    assert wrapper.seen <= 4  # the three first, and at most the one sent while yielding


def test_async_stopping_early_cancels_the_rest(backend: tuple[str, InFlight]) -> None:
    url, wrapper = backend

    async def main() -> list[Any]:
        async with AsyncMLBackendClient(url) as client:
            batches = client.predict_batches(TASKS, batch_size=4, concurrency=3, **OPTIONS)
            first = await batches.__anext__()
            await batches.aclose()
            return first[0]

    assert asyncio.run(main()) == TASKS[:4]
    assert wrapper.seen <= 4


@pytest.mark.parametrize("concurrency", [0, -1, 1.5, True])
def test_concurrency_must_be_a_positive_integer(concurrency: Any) -> None:
    with MLBackendClient("http://127.0.0.1:9") as client, pytest.raises(ValueError):
        next(client.predict_batches(TASKS, concurrency=concurrency))
