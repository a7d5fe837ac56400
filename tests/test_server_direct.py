"""The server's fast paths: its thread pool, and POST /predict served straight from the gate.

The direct /predict path (_gate.Gate._predict) must answer exactly as the FastAPI route it
bypasses, errors included: each body here is sent through both and the answers compared.
"""

from __future__ import annotations

import asyncio
import contextvars
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from _backends import CHOICES_CONFIG, Echo, Raises, WrongCount
from labelbridge._pool import ThreadPool
from labelbridge.model import Model
from labelbridge.server import create_app
from labelbridge.service import Backend
from labelbridge.settings import Settings
from support import serve

SETUP = {"project": "1.1795541075", "schema": CHOICES_CONFIG}


def _run(coro: Any) -> Any:
    return asyncio.run(coro)


# --- the thread pool ----------------------------------------------------------------------
def test_pool_returns_results_and_raises_errors_of_the_call() -> None:
    pool = ThreadPool(2)

    async def main() -> None:
        assert await pool.run(lambda a, b: a + b, 2, 3) == 5
        with pytest.raises(KeyError, match="missing"):
            await pool.run(lambda: {}["missing"])
        results = await asyncio.gather(*(pool.run(lambda i=i: i * i) for i in range(50)))
        assert results == [i * i for i in range(50)]

    _run(main())
    pool.close()


def test_pool_copies_context_variables_into_the_thread() -> None:
    var: contextvars.ContextVar[str] = contextvars.ContextVar("var", default="unset")
    pool = ThreadPool(1)

    async def main() -> str:
        var.set("from the request")
        return await pool.run(var.get)

    assert _run(main()) == "from the request"
    pool.close()


def test_pool_never_runs_more_than_its_size_at_once() -> None:
    pool = ThreadPool(3)
    running = 0
    peak = 0
    lock = threading.Lock()

    def work() -> None:
        nonlocal running, peak
        with lock:
            running += 1
            peak = max(peak, running)
        time.sleep(0.02)
        with lock:
            running -= 1

    async def main() -> None:
        await asyncio.gather(*(pool.run(work) for _ in range(20)))

    _run(main())
    pool.close()
    assert peak == 3


def test_close_stops_the_threads_after_the_queued_calls() -> None:
    before = set(threading.enumerate())
    pool = ThreadPool(4)

    async def main() -> list[None]:
        return await asyncio.gather(*(pool.run(time.sleep, 0.01) for _ in range(8)))

    assert _run(main()) == [None] * 8
    threads = [t for t in set(threading.enumerate()) - before if t.name == "labelbridge-call"]
    assert 0 < len(threads) <= 4
    pool.close()
    for thread in threads:
        thread.join(5)
    assert not any(t.is_alive() for t in threads)
    with pytest.raises(RuntimeError, match="closed"):
        _run(pool.run(lambda: None))


# --- the direct /predict path -------------------------------------------------------------
BODIES: list[tuple[str, bytes | None]] = [
    ("label studio's body", None),
    ("empty body", b""),
    ("not json", b"{tasks: [}"),
    ("not an object", b"[1, 2]"),
    ("tasks not a list", b'{"tasks": 3, "project": "1.1795541075"}'),
    ("nan", b'{"tasks": [{"id": 1, "data": {"x": NaN}}], "project": "1.1795541075"}'),
    ("unknown project, no config", b'{"tasks": [{"id": 1, "data": {}}], "project": "9.1"}'),
]


@pytest.mark.parametrize("model_cls", [Echo, Raises, WrongCount])
def test_direct_predict_answers_as_the_route(tmp_path: Path, model_cls: type[Model]) -> None:
    settings = Settings(model_dir=tmp_path / "models")
    backend = Backend(model_cls, settings, model_ref=f"_backends:{model_cls.__name__}")
    app = create_app(backend)
    good = httpx.Request(
        "POST",
        "http://x/predict",
        json={
            "tasks": [{"id": 1, "data": {"text": "hello"}, "project": 1}],
            "project": SETUP["project"],
            "label_config": CHOICES_CONFIG,
            "params": {"login": None, "password": None, "context": None},
        },
    ).read()
    with serve(app) as url, httpx.Client(timeout=10) as http:
        assert http.post(f"{url}/setup", json=SETUP).status_code == 200

        def answers() -> list[tuple[int, Any, str]]:
            out = []
            for _, body in BODIES:
                reply = http.post(
                    f"{url}/predict",
                    content=good if body is None else body,
                    headers={"content-type": "application/json"},
                )
                out.append((reply.status_code, reply.json(), reply.headers["content-type"]))
            return out

        direct = answers()
        gate = app.gate
        assert gate.direct, "POST /predict is not served directly"
        gate.direct = {}
        through_fastapi = answers()
    for (name, _), ours, theirs in zip(BODIES, direct, through_fastapi, strict=True):
        assert ours == theirs, name
    if model_cls is Echo:
        assert direct[0][0] == 200 and len(direct[0][1]["results"]) == 1
    if model_cls is Raises:
        assert direct[0][0] == 500 and direct[0][1]["error"] == "ModelError"
