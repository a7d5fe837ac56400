"""The HTTP protocol's fast path (labelbridge._http): a small POST /predict answered from the
socket's read callback, byte for byte what the ASGI path sends; everything else (large or
chunked bodies, pipelining, Connection: close, 100-continue, credentials) as uvicorn runs it.
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn

from _backends import CHOICES_CONFIG, Echo
from labelbridge import _inline
from labelbridge._gate import parse_predict
from labelbridge._inline import LoopRunner, TurnBudget
from labelbridge.server import create_app
from labelbridge.service import Backend
from labelbridge.settings import Settings
from support import SERVER_PROTOCOL, free_port, serve

PROJECT = "1.1795541075"
SETUP = {"project": PROJECT, "schema": CHOICES_CONFIG}


def _body(*texts: str, pad: int = 0) -> bytes:
    """A /predict body shaped like Label Studio's, one task per text."""
    tasks = [
        {"id": i + 1, "data": {"text": text}, "meta": {"pad": "x" * pad}, "project": 1}
        for i, text in enumerate(texts)
    ]
    body = {
        "tasks": tasks,
        "project": PROJECT,
        "label_config": CHOICES_CONFIG,
        "params": {"login": None, "password": None, "context": None},
    }
    return json.dumps(body).encode()


@contextmanager
def _served(tmp_path: Path, http: str | None = None, **settings: Any) -> Iterator[Any]:
    """An Echo backend served for real; yields (url, app, calls of the ASGI /predict path)."""
    backend = Backend(
        Echo, Settings(model_dir=tmp_path / "models", **settings), model_ref="_backends:Echo"
    )
    app = create_app(backend)
    gate = app.gate
    through_asgi: list[int] = []
    original = gate._predict

    async def counted(*args: Any) -> tuple[int, bytes]:
        through_asgi.append(1)
        return await original(*args)

    gate._predict = counted  # type: ignore[method-assign]
    with serve(app, **({"http": http} if http else {})) as url:
        token = settings.get("api_token")
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        with httpx.Client(timeout=10, headers=headers) as client:
            assert client.post(f"{url}/setup", json=SETUP).status_code == 200
            # the first call is measured in the pool; after it the model may run inline
            warm = client.post(f"{url}/predict", content=_body("warm"))
            assert warm.status_code == 200, warm.text
        through_asgi.clear()
        yield url, app, through_asgi


def _exchange(url: str, raw: bytes, answers: int) -> list[tuple[bytes, dict[bytes, bytes], bytes]]:
    """Send raw bytes on one connection; read `answers` responses (status line, headers, body)."""
    host, port = url.removeprefix("http://").split(":")
    out = []
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(raw)
        buffer = b""
        while len(out) < answers:
            while b"\r\n\r\n" not in buffer:
                chunk = sock.recv(65536)
                assert chunk, f"connection closed after {len(out)} answers: {buffer!r}"
                buffer += chunk
            head, buffer = buffer.split(b"\r\n\r\n", 1)
            status, *lines = head.split(b"\r\n")
            headers = dict(line.split(b": ", 1) for line in lines)
            if status.startswith(b"HTTP/1.1 100"):
                continue
            length = int(headers[b"content-length"])
            while len(buffer) < length:
                chunk = sock.recv(65536)
                assert chunk, "connection closed inside a body"
                buffer += chunk
            out.append((status, headers, buffer[:length]))
            buffer = buffer[length:]
    return out


def _post(path: str, body: bytes, *extra: str) -> bytes:
    head = [f"POST {path} HTTP/1.1", "Host: x", "Content-Type: application/json"]
    head += [f"Content-Length: {len(body)}", *extra]
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


def _choice(body: bytes) -> list[str]:
    return [r["result"][0]["value"]["choices"][0] for r in json.loads(body)["results"]]


# --- the fast path -------------------------------------------------------------------------
def test_small_predict_is_answered_without_an_asgi_task_and_still_counted(tmp_path: Path) -> None:
    with _served(tmp_path) as (url, _, through_asgi), httpx.Client(timeout=10) as http:
        for text in ("I love it", "meh") * 10:
            answer = http.post(f"{url}/predict", content=_body(text))
            assert answer.status_code == 200
            assert _choice(answer.content) == ["Positive" if "love" in text else "Negative"]
        assert through_asgi == []
        metrics = http.get(f"{url}/metrics").text
        recent = http.get(f"{url}/status.json").json()
    line = next(
        row
        for row in metrics.splitlines()
        if row.startswith("labelbridge_requests_total") and 'route="/predict"' in row
    )
    assert 'status="200"' in line and float(line.rsplit(" ", 1)[1]) == 21  # the warm-up too
    assert "/predict" in json.dumps(recent)


def test_the_fast_path_sends_what_uvicorn_sends(tmp_path: Path) -> None:
    """Status line, headers (but the date) and body: the same through both protocols."""
    bodies = [_body("I love it"), _body("a", "b love", "c"), b'{"tasks": 3}', b"{not json"]

    def answers(folder: Path, http: str | None) -> list[Any]:
        with _served(folder, http) as (url, _, through_asgi):
            raw = b"".join(_post("/predict", body) for body in bodies)
            got = _exchange(url, raw, len(bodies))
            fast = len(bodies) - len(through_asgi)
        return [(s, {k: v for k, v in h.items() if k != b"date"}, b) for s, h, b in got], fast

    ours, fast = answers(tmp_path / "ours", None)
    theirs, _ = answers(tmp_path / "theirs", "httptools")
    assert ours == theirs
    assert fast == 2  # the two good bodies; the bad ones got their errors the ASGI way
    assert ours[0][0] == b"HTTP/1.1 200 OK" and ours[2][0].startswith(b"HTTP/1.1 422")


def test_pipelined_requests_are_answered_in_order(tmp_path: Path) -> None:
    with _served(tmp_path) as (url, _, through_asgi):
        raw = (
            _post("/predict", _body("love"))
            + b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n"
            + _post("/predict", _body("hate"))
            + _post("/predict", _body("love", pad=100_000))  # over the buffer limit: ASGI
            + _post("/predict", _body("x", "love"))
        )
        got = _exchange(url, raw, 5)
    assert [s for s, _, _ in got] == [b"HTTP/1.1 200 OK"] * 5
    assert _choice(got[0][2]) == ["Positive"]
    assert json.loads(got[1][2])["status"] == "UP"
    assert _choice(got[2][2]) == ["Negative"]
    assert _choice(got[3][2]) == ["Positive"]
    assert _choice(got[4][2]) == ["Negative", "Positive"]
    assert through_asgi  # the large body at least (and what was queued behind /health)


@pytest.mark.parametrize(
    ("request_line", "extra"),
    [("POST /predict HTTP/1.1", "Connection: close"), ("POST /predict HTTP/1.0", "X-Any: 1")],
)
def test_a_connection_not_kept_alive_is_closed_after_the_answer(
    tmp_path: Path, request_line: str, extra: str
) -> None:
    body = _body("love")
    head = f"{request_line}\r\nHost: x\r\nContent-Length: {len(body)}\r\n{extra}\r\n\r\n"
    with _served(tmp_path) as (url, _, through_asgi):
        host, port = url.removeprefix("http://").split(":")
        with socket.create_connection((host, int(port)), timeout=10) as sock:
            sock.sendall(head.encode() + body)
            received = b""
            while chunk := sock.recv(65536):  # ends when the server closes the connection
                received += chunk
    assert received.startswith(b"HTTP/1.1 200 OK\r\n")
    assert b"\r\nconnection: close\r\n" in received.lower()
    assert _choice(received.split(b"\r\n\r\n", 1)[1]) == ["Positive"]
    assert through_asgi == []


def test_chunked_and_100_continue_bodies_take_the_asgi_path(tmp_path: Path) -> None:
    body = _body("love")
    chunked = (
        b"POST /predict HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
        + f"{len(body):x}\r\n".encode()
        + body
        + b"\r\n0\r\n\r\n"
    )
    with _served(tmp_path) as (url, _, through_asgi):
        got = _exchange(url, chunked, 1) + _exchange(
            url, _post("/predict", body, "Expect: 100-continue"), 1
        )
    assert [_choice(b) for _, _, b in got] == [["Positive"], ["Positive"]]
    assert len(through_asgi) == 2


def test_a_body_larger_than_the_read_buffer_limit_is_read_the_asgi_way(tmp_path: Path) -> None:
    """uvicorn stops reading a socket above its buffer limit until the app reads the body: a
    request held for the fast path with such a body would never complete."""
    body = _body("love", pad=1_000_000)
    with _served(tmp_path) as (url, _, through_asgi):
        answer = httpx.post(f"{url}/predict", content=body, timeout=10)
    assert answer.status_code == 200 and _choice(answer.content) == ["Positive"]
    assert through_asgi == [1]


def test_credentials_are_checked_before_the_fast_path(tmp_path: Path) -> None:
    with _served(tmp_path, api_token="s3cret") as (url, _, through_asgi):
        refused = httpx.post(f"{url}/predict", content=_body("love"), timeout=10)
        wrong = httpx.post(
            f"{url}/predict",
            content=_body("love"),
            headers={"Authorization": "Bearer nope"},
            timeout=10,
        )
        good = httpx.post(
            f"{url}/predict",
            content=_body("love"),
            headers={"Authorization": "Bearer s3cret"},
            timeout=10,
        )
    assert refused.status_code == wrong.status_code == 401
    assert refused.json()["error"] == "AuthenticationRequired"
    assert good.status_code == 200 and _choice(good.content) == ["Positive"]
    assert through_asgi == []


def test_fast_answers_count_towards_uvicorns_request_limit(tmp_path: Path) -> None:
    """uvicorn's total_requests drives MAX_REQUESTS worker restarts: fast answers count."""
    backend = Backend(Echo, Settings(model_dir=tmp_path / "models"), model_ref="_backends:Echo")
    app = create_app(backend)
    port = free_port()
    config = uvicorn.Config(
        app, host="127.0.0.1", port=port, log_level="warning", http=SERVER_PROTOCOL
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 10
        while not server.started and time.monotonic() < deadline:
            time.sleep(0.01)
        url = f"http://127.0.0.1:{port}"
        assert httpx.post(f"{url}/setup", json=SETUP, timeout=10).status_code == 200
        assert httpx.post(f"{url}/predict", content=_body("w"), timeout=10).status_code == 200
        before = server.server_state.total_requests
        got = _exchange(url, b"".join(_post("/predict", _body("love")) for _ in range(5)), 5)
        assert len(got) == 5
        assert server.server_state.total_requests == before + 5
    finally:
        server.should_exit = True
        thread.join(10)


def test_calls_queued_for_the_loop_runner_are_not_overtaken(tmp_path: Path) -> None:
    backend = Backend(Echo, Settings(model_dir=tmp_path / "models"), model_ref="_backends:Echo")
    app = create_app(backend)
    gate = app.gate
    body = _body("love")

    order: list[str] = []
    replies: list[tuple[int, bytes]] = []

    class To:
        def reply(self, status: int, payload: bytes) -> None:
            order.append("new")
            replies.append((status, payload))

        def fallback(self, call: Any) -> None:
            raise AssertionError("went the ASGI way")

        def wanted(self) -> bool:
            return True

    async def main() -> None:
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app)
            async with httpx.AsyncClient(transport=transport, base_url="http://x") as http:
                assert (await http.post("/setup", json=SETUP)).status_code == 200
                for _ in range(2):  # measured: the model may now run inline
                    assert (await http.post("/predict", content=body)).status_code == 200
            runner = gate.loop_runs[backend]
            runner.submit(parse_predict(body), lambda *_: order.append("queued"), lambda: True)
            gate.take_predict("/predict", [], body, To())
            assert replies == []  # not answered at once: a call was queued before it
            await asyncio.sleep(0)
            await asyncio.sleep(0)
            assert order == ["queued", "new"]
            assert replies[0][0] == 200 and _choice(replies[0][1]) == ["Positive"]
            gate.take_predict("/predict", [], body, To())
            assert len(replies) == 2  # nothing queued, budget left: at once

    asyncio.run(main())


def test_many_connections_each_get_their_own_answer_when_calls_wait_for_later_turns(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A budget of 0: every call after the first of a turn waits for a coming turn, and its
    answer is written from there to the connection it came from."""
    monkeypatch.setattr(_inline, "TURN_BUDGET", 0.0)
    errors: list[str] = []
    with _served(tmp_path) as (url, _, through_asgi):

        def client(index: int) -> None:
            with httpx.Client(timeout=10) as http:
                for turn in range(15):
                    text = "I love it" if (index + turn) % 2 else "no"
                    answer = http.post(f"{url}/predict", content=_body(text, f"{index}"))
                    want = ["Positive" if "love" in text else "Negative", "Negative"]
                    if answer.status_code != 200 or _choice(answer.content) != want:
                        errors.append(f"{index}/{turn}: {answer.status_code} {answer.text}")

        threads = [threading.Thread(target=client, args=(i,)) for i in range(16)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
    assert errors == []
    assert through_asgi == []


# --- the turn budget --------------------------------------------------------------------------
def test_the_turn_budget_runs_out_within_a_turn_and_comes_back_in_the_next() -> None:
    budget = TurnBudget()

    async def main() -> list[bool]:
        seen = [budget.allows(), budget.allows()]
        time.sleep(_inline.TURN_BUDGET * 2)
        seen.append(budget.allows())
        await asyncio.sleep(0)  # the next turn
        seen.append(budget.allows())
        return seen

    assert asyncio.run(main()) == [True, True, False, True]


def test_a_budget_spent_by_the_fast_path_leaves_the_runner_one_call_per_turn() -> None:
    budget = TurnBudget()
    done: list[str] = []
    runner = LoopRunner(lambda request: done.append(request) or request, budget)

    async def main() -> None:
        futures = [runner.run(str(i)) for i in range(3)]
        assert not runner.idle
        budget.allows()
        time.sleep(_inline.TURN_BUDGET * 2)  # the fast path spent this turn's budget
        await asyncio.sleep(0)
        assert done == ["0"]  # one call, for progress; the rest in later turns
        assert [await f for f in futures] == ["0", "1", "2"]
        assert runner.idle

    asyncio.run(main())


# --- how `labelbridge start` serves ---------------------------------------------------------
def test_labelbridge_start_serves_with_the_fast_path_protocol() -> None:
    from labelbridge.cli.start import _uvicorn_config

    assert _uvicorn_config(Settings(), workers=1).http == SERVER_PROTOCOL


def test_a_uvicorn_without_the_needed_internals_gets_its_own_protocol(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from labelbridge import _http
    from labelbridge.cli.start import _http_protocol

    assert _http.supported()
    monkeypatch.delattr(_http.HttpToolsProtocol, "_start_asgi_task")
    assert not _http.supported()
    assert _http_protocol() == "auto"


# --- a held request, step by step (a real socket; the gate's answer given by the test) -------
def _with_held_connection(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, test: Any) -> None:
    """PredictProtocol on one end of a socket pair, in a running loop; the gate's take_predict
    replaced by a list of the requests it was handed, for the test to answer when it likes.
    `test(protocol, client socket, held)` runs in the loop."""
    from uvicorn.server import ServerState

    from labelbridge._http import PredictProtocol

    backend = Backend(Echo, Settings(model_dir=tmp_path / "models"), model_ref="_backends:Echo")
    app = create_app(backend)
    held: list[Any] = []

    async def main() -> None:
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app)
            async with httpx.AsyncClient(transport=transport, base_url="http://x") as http:
                assert (await http.post("/setup", json=SETUP)).status_code == 200
                for _ in range(2):  # measured: the model may now run inline
                    assert (await http.post("/predict", content=_body("w"))).status_code == 200
            monkeypatch.setattr(
                app.gate, "take_predict", lambda path, headers, raw, to: held.append(to)
            )
            config = uvicorn.Config(app, http=PredictProtocol, log_level="warning")
            config.load()
            state = ServerState()
            ours, theirs = socket.socketpair()
            theirs.setblocking(False)
            loop = asyncio.get_running_loop()
            _, protocol = await loop.connect_accepted_socket(
                lambda: PredictProtocol(config=config, server_state=state, app_state={}), ours
            )
            try:
                await test(protocol, theirs, held)
            finally:
                theirs.close()
                protocol.transport.close()

    asyncio.run(main())


async def _until(check: Any) -> None:
    for _ in range(500):
        if check():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("never happened")


async def _send_one_and_hold(client: socket.socket, held: list[Any]) -> None:
    """A one-task /predict sent, and held by the server."""
    await asyncio.get_running_loop().sock_sendall(client, _post("/predict", _body("love")))
    await _until(lambda: held)


async def _read_all(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection."""
    loop = asyncio.get_running_loop()
    received = b""
    while chunk := await asyncio.wait_for(loop.sock_recv(sock, 65536), 5):
        received += chunk
    return received


def test_a_request_pipelined_behind_a_held_one_waits_for_its_answer(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def test(protocol: Any, client: socket.socket, held: list[Any]) -> None:
        loop = asyncio.get_running_loop()
        await loop.sock_sendall(
            client,
            _post("/predict", _body("love"))
            + _post("/predict", _body("hate"))
            + b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        )
        await _until(lambda: held)
        await asyncio.sleep(0.2)
        with pytest.raises(TimeoutError):  # nothing is answered before the held request
            await asyncio.wait_for(loop.sock_recv(client, 65536), 0.2)
        assert len(held) == 1  # the next /predict is not held beside it: it waits its turn
        assert held[0].wanted()
        held[0].reply(200, b'{"held":true}')
        received = await _read_all(client)
        first, second, third = received.split(b"HTTP/1.1 ")[1:]
        assert first.startswith(b"200 OK\r\n") and first.endswith(b'\r\n\r\n{"held":true}')
        assert b"connection: close" not in first.lower()
        assert second.startswith(b"200 OK\r\n")
        assert _choice(second.split(b"\r\n\r\n", 1)[1]) == ["Negative"]
        assert third.startswith(b"200 OK\r\n") and b'"status":"UP"' in third

    _with_held_connection(tmp_path, monkeypatch, test)


def test_shutdown_while_a_request_is_held_closes_the_connection_after_its_answer(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def test(protocol: Any, client: socket.socket, held: list[Any]) -> None:
        await _send_one_and_hold(client, held)
        protocol.shutdown()  # what uvicorn does to every connection when it stops
        assert not protocol.transport.is_closing()  # the held request still gets its answer
        held[0].reply(200, b"{}")
        received = await _read_all(client)
        assert received.startswith(b"HTTP/1.1 200 OK\r\n") and received.endswith(b"\r\n\r\n{}")
        assert b"\r\nconnection: close\r\n" in received

    _with_held_connection(tmp_path, monkeypatch, test)


def test_a_client_that_leaves_while_held_is_not_answered(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def test(protocol: Any, client: socket.socket, held: list[Any]) -> None:
        await _send_one_and_hold(client, held)
        client.close()
        await _until(lambda: not held[0].wanted())
        held[0].reply(200, b"{}")  # nothing to write to: no error, nothing counted
        assert protocol.server_state.total_requests == 0

    _with_held_connection(tmp_path, monkeypatch, test)


@pytest.mark.parametrize("version", ["1.1", "1.0"])
def test_a_held_request_sent_the_asgi_way_gets_the_scope_uvicorn_gives(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, version: str
) -> None:
    """A held request the gate cannot answer inline (here a body in error) gets its ASGI
    scope late, built by labelbridge._http: the same as uvicorn's own protocol builds."""
    from labelbridge._gate import Gate

    scopes: list[dict[str, Any]] = []
    original = Gate.__call__

    async def recording(self: Gate, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["path"] == "/predict":
            scopes.append(dict(scope))
        await original(self, scope, receive, send)

    monkeypatch.setattr(Gate, "__call__", recording)
    body = b'{"tasks": 3}'
    raw = (
        f"POST /predict HTTP/{version}\r\nHost: x\r\nContent-Length: {len(body)}\r\n"
        "Content-Type: application/json\r\n\r\n"
    ).encode() + body

    def scope_of(folder: Path, http: str | None) -> tuple[dict[str, Any], int]:
        with _served(folder, http) as (url, _, through_asgi):
            scopes.clear()
            assert _exchange(url, raw, 1)[0][0].startswith(b"HTTP/1.1 422")
            return scopes[-1], len(through_asgi)

    ours, through = scope_of(tmp_path / "ours", None)
    theirs, _ = scope_of(tmp_path / "theirs", "httptools")
    assert through == 1
    for scope in (ours, theirs):
        scope.pop("client")
        scope["server"] = scope["server"][0]  # ports differ
        scope["state"] = sorted(scope["state"])
    assert ours == theirs
    assert ours["http_version"] == version and ours["method"] == "POST"
