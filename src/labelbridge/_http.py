"""uvicorn's httptools protocol with a fast path for small POST /predict requests.

uvicorn builds an ASGI scope and a RequestResponseCycle for every request, starts a task for it
as soon as its headers are in, and the app answers in two `send` messages, each one write to
the socket. For a model fast enough to run inline, that machinery costs more than everything
else a one-task /predict does (bench/NOTES.md items 22 and 28). So a POST to a /predict path
whose model runs inline, with a small body (Content-Length up to uvicorn's read buffer limit),
is held here as a `_Light` request (no scope, no cycle, no task) until its body is in, then
handed to the Gate (`Gate.take_predict`: the same answer, metrics and logs as the ASGI path),
which answers at once while this turn of the event loop has inline budget left, else queues the
call for a coming turn (labelbridge._inline); the answer is written whole, with uvicorn's own
default headers, in one write. Whatever the gate cannot answer inline (a version to load,
credentials missing, a bad body) gets its scope and cycle then and goes on as uvicorn would
have run it, with the body already parsed.

Everything else (other routes, large bodies, chunked uploads, pipelining, upgrades, 100-continue,
limit_concurrency, flow control, keep-alive, graceful shutdown) stays uvicorn's: a `_Light`
stands in as `self.cycle` while it waits, with what uvicorn's own code reads of a cycle.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from uvicorn.protocols.http.flow_control import HIGH_WATER_LIMIT
from uvicorn.protocols.http.httptools_impl import (
    STATUS_LINE,
    HttpToolsProtocol,
    RequestResponseCycle,
)

if TYPE_CHECKING:  # not imported at run time: the supervisor imports this module to check it
    from labelbridge._gate import Gate
    from labelbridge.protocol import PredictCall

__all__ = ["PredictProtocol", "find_gate", "supported"]

_JSON_TYPE = b"content-type: application/json\r\ncontent-length: "


def supported() -> bool:
    """Whether the installed uvicorn has the internals this protocol builds on (checked when
    the server starts; without them it runs uvicorn's own protocol)."""
    import inspect

    try:
        cycle = inspect.signature(RequestResponseCycle.__init__).parameters
        begin = inspect.getsource(HttpToolsProtocol.on_message_begin)
    except (TypeError, ValueError, OSError):
        return False
    needed = {"scope", "default_headers", "message_event", "expect_100_continue", "keep_alive"}
    return (
        needed <= set(cycle)
        and "self.scope = " in begin
        and all(
            callable(getattr(HttpToolsProtocol, name, None))
            for name in (
                "_start_asgi_task",
                "on_message_begin",
                "on_headers_complete",
                "on_body",
                "on_message_complete",
                "on_response_complete",
            )
        )
    )


def find_gate(app: Any) -> Gate | None:
    """The Gate inside uvicorn's loaded app (under its middleware: proxy headers, logging)."""
    for _ in range(16):
        gate = getattr(app, "gate", None)
        if callable(getattr(gate, "take_predict", None)):
            return gate
        app = getattr(app, "app", None)
        if app is None:
            return None
    return None


class _NoEvent:
    """uvicorn sets a cycle's message_event when the connection is lost; nobody waits here."""

    def set(self) -> None:
        pass


class _Light:
    """A held POST /predict: what the gate answers to (labelbridge._gate.Responder), and what
    uvicorn's own code reads of `self.cycle` while it waits (connection_lost, shutdown, the
    pipelining check of the next request)."""

    __slots__ = (
        "body",
        "disconnected",
        "headers",
        "http_version",
        "keep_alive",
        "path",
        "protocol",
        "response_complete",
    )
    message_event = _NoEvent()

    def __init__(
        self,
        protocol: PredictProtocol,
        path: str,
        headers: list[tuple[bytes, bytes]],
        http_version: str,
        keep_alive: bool,
    ) -> None:
        self.protocol = protocol
        self.path = path
        self.headers = headers
        self.http_version = http_version
        self.keep_alive = keep_alive
        self.body = bytearray()
        self.response_complete = False
        self.disconnected = False

    def reply(self, status: int, body: bytes) -> None:
        self.protocol._reply(self, status, body)

    def fallback(self, call: PredictCall | None) -> None:
        self.protocol._to_asgi(self, call)

    def wanted(self) -> bool:
        return not self.protocol.transport.is_closing()


class PredictProtocol(HttpToolsProtocol):
    """HttpToolsProtocol, plus small POST /predict answered without scope, cycle or task."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._gate = find_gate(self.app)
        #: the URLs of the gate's /predict paths, as they come off the wire (no root_path:
        #: uvicorn's scope path would then differ from the URL)
        self._paths = (
            {path.encode("ascii"): path for path in self._gate.direct}
            if self._gate is not None and not self.root_path
            else {}
        )
        #: the light request whose body is coming in (on_body, on_message_complete)
        self._light: _Light | None = None

    # uvicorn builds the scope in on_message_begin; a light request never needs one
    def on_message_begin(self) -> None:
        self.url = b""
        self.expect_100_continue = False
        self.headers = []
        self._light = None

    def on_headers_complete(self) -> None:
        path = self._paths.get(self.url)
        if path is not None and self._takes(path):
            parser = self.parser
            version = parser.get_http_version()
            light = _Light(
                self, path, self.headers, version, version != "1.0" and parser.should_keep_alive()
            )
            self._light = light
            self.cycle = light  # type: ignore[assignment]
            return
        self.scope = scope = self._new_scope()
        scope["headers"] = self.headers
        super().on_headers_complete()

    def _takes(self, path: str) -> bool:
        """A light request: what uvicorn would start a task for at once (nothing before it
        on this connection, no upgrade, no 100-continue, under limit_concurrency), with a
        body small enough to hold whole, for a model that runs inline."""
        parser = self.parser
        cycle = self.cycle
        limit = self.limit_concurrency
        return (
            (cycle is None or cycle.response_complete)
            and parser.get_method() == b"POST"
            and not self.expect_100_continue
            and not parser.should_upgrade()
            and (limit is None or (len(self.connections) < limit and len(self.tasks) < limit))
            and _small_body(self.headers)
            and self._gate is not None
            and self._gate.answers_inline(path)
        )

    def _new_scope(self) -> Any:
        """A new scope, built by uvicorn's own on_message_begin; the state that method resets
        (the request being parsed now, maybe another than the one the scope is for) is kept."""
        kept = self.url, self.headers, self.expect_100_continue, self.scope
        HttpToolsProtocol.on_message_begin(self)
        scope = self.scope
        self.url, self.headers, self.expect_100_continue, self.scope = kept
        return scope

    def on_body(self, body: bytes) -> None:
        light = self._light
        if light is None:
            super().on_body(body)
        else:
            light.body += body

    def on_message_complete(self) -> None:
        light = self._light
        if light is None:
            super().on_message_complete()
            return
        self._light = None
        gate = self._gate
        if gate is None or self.flow.write_paused:
            self._to_asgi(light, None)
        else:
            gate.take_predict(light.path, light.headers, bytes(light.body), light)

    def _reply(self, light: _Light, status: int, body: bytes) -> None:
        """The whole response in one write, as uvicorn's send() would have framed it."""
        light.response_complete = True
        transport = self.transport
        if transport.is_closing():  # the client left while its call was queued
            return
        head = _heads.get(self.server_state.default_headers, status)
        if light.keep_alive:
            transport.write(b"%s%d\r\n\r\n%s" % (head, len(body), body))
        else:
            transport.write(b"%s%d\r\nconnection: close\r\n\r\n%s" % (head, len(body), body))
            transport.close()
        self.on_response_complete()

    def _to_asgi(self, light: _Light, call: PredictCall | None) -> None:
        """The held request the ASGI way after all, with its scope and cycle made now."""
        scope = self._new_scope()
        scope["method"] = "POST"
        if light.http_version != "1.1":
            scope["http_version"] = light.http_version
        scope["path"] = light.path
        scope["raw_path"] = light.path.encode("ascii")
        scope["query_string"] = b""
        scope["headers"] = light.headers
        if call is not None:
            scope["labelbridge.request"] = call
        cycle = RequestResponseCycle(
            scope=scope,
            transport=self.transport,
            flow=self.flow,
            logger=self.logger,
            access_logger=self.access_logger,
            access_log=self.access_log,
            default_headers=self.server_state.default_headers,
            message_event=asyncio.Event(),
            expect_100_continue=False,
            keep_alive=light.keep_alive,
            on_response=self.on_response_complete,
        )
        cycle.body = light.body
        cycle.more_body = False
        cycle.message_event.set()  # the body is in: receive() must not wait for it
        cycle.disconnected = light.disconnected
        light.response_complete = True  # answered by the cycle from here on
        if self.cycle is light:
            self.cycle = cycle
        super()._start_asgi_task(cycle, self.app)


class _Heads:
    """Status line, uvicorn's default headers and the content type, up to the length, per
    status: the same bytes for every answer until uvicorn swaps in a new default-headers list
    (once a second, for the date)."""

    def __init__(self) -> None:
        self._for: list[tuple[bytes, bytes]] | None = None
        self._by_status: dict[int, bytes] = {}

    def get(self, default_headers: list[tuple[bytes, bytes]], status: int) -> bytes:
        if self._for is not default_headers:
            self._for, self._by_status = default_headers, {}
        head = self._by_status.get(status)
        if head is None:
            parts = [STATUS_LINE[status]]
            for name, value in default_headers:
                parts += [name, b": ", value, b"\r\n"]
            parts.append(_JSON_TYPE)
            head = self._by_status[status] = b"".join(parts)
        return head


_heads = _Heads()


def _small_body(headers: Iterable[tuple[bytes, bytes]]) -> bool:
    """A Content-Length the protocol may buffer whole without pausing the socket (uvicorn
    pauses reading above HIGH_WATER_LIMIT until the app reads: nobody would, here)."""
    for name, value in headers:
        if name == b"content-length":
            return value.isdigit() and int(value) <= HIGH_WATER_LIMIT
        if name == b"transfer-encoding":
            return False
    return False
