"""uvicorn's httptools protocol with a fast path for small POST /predict requests.

uvicorn starts an ASGI task per request as soon as its headers are in, and the app answers in
two `send` messages, each one write to the socket. For a model fast enough to run inline, that
machinery costs more than everything else a one-task /predict does (bench/NOTES.md). So for a
POST to a /predict path with a small body (Content-Length up to uvicorn's read buffer limit),
this protocol waits for the body and hands it to the Gate (`Gate.take_predict`: the same
answer, metrics and logs as the ASGI path), which answers at once while this turn of the event
loop has inline budget left, else queues the call for a coming turn (labelbridge._inline); the
answer is written whole, with uvicorn's own default headers, in one write. Whatever the gate
cannot answer inline (a slow model, a version to load, credentials missing, --debug) goes on
as uvicorn would have run it, with the body already parsed.

Everything else (other routes, large bodies, chunked uploads, pipelining, upgrades, 100-continue,
limit_concurrency, flow control, keep-alive, graceful shutdown) stays uvicorn's.
"""

from __future__ import annotations

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

__all__ = ["PredictProtocol", "find_gate", "supported"]

_JSON_TYPE = b"content-type: application/json\r\ncontent-length: "


def supported() -> bool:
    """Whether the installed uvicorn has the internals this protocol builds on (checked when
    the server starts; without them it runs uvicorn's own protocol)."""
    import inspect

    try:
        cycle = inspect.signature(RequestResponseCycle.__init__).parameters
    except (TypeError, ValueError):
        return False
    needed = {"scope", "default_headers", "message_event", "expect_100_continue", "keep_alive"}
    return needed <= set(cycle) and all(
        callable(getattr(HttpToolsProtocol, name, None))
        for name in ("_start_asgi_task", "on_message_complete", "on_response_complete")
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


class PredictProtocol(HttpToolsProtocol):
    """HttpToolsProtocol, plus small POST /predict answered without an ASGI task."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._gate = find_gate(self.app)
        #: the cycle whose task waits for its whole body (see _start_asgi_task)
        self._held: tuple[RequestResponseCycle, Any] | None = None

    def _start_asgi_task(self, cycle: RequestResponseCycle, app: Any) -> None:
        scope = cycle.scope
        if (
            cycle is self.cycle
            and cycle.more_body
            and scope["method"] == "POST"
            and self._gate is not None
            and scope["path"] in self._gate.direct
            and not cycle.waiting_for_100_continue
            and app is self.app  # not uvicorn's 503 for limit_concurrency
            and _small_body(scope["headers"])
        ):
            self._held = (cycle, app)  # on_message_complete decides
            return
        super()._start_asgi_task(cycle, app)

    def on_message_complete(self) -> None:
        super().on_message_complete()
        held = self._held
        if held is None or held[0] is not self.cycle:
            return
        self._held = None
        cycle, app = held
        if self._gate is None or self.flow.write_paused:
            super()._start_asgi_task(cycle, app)
            return

        def reply(status: int, body: bytes) -> None:
            self._write(cycle, status, body)

        def fallback(request: Any) -> None:
            if request is not None:
                cycle.scope["labelbridge.request"] = request  # type: ignore[typeddict-unknown-key]
            super(PredictProtocol, self)._start_asgi_task(cycle, app)

        transport = self.transport
        self._gate.take_predict(
            cycle.scope["path"],
            cycle.scope["headers"],
            bytes(cycle.body),
            reply,
            fallback,
            lambda: not transport.is_closing(),
        )

    def _write(self, cycle: RequestResponseCycle, status: int, body: bytes) -> None:
        """The whole response in one write, as uvicorn's send() would have framed it."""
        parts = [STATUS_LINE[status]]
        for name, value in cycle.default_headers:
            parts += [name, b": ", value, b"\r\n"]
        parts += [_JSON_TYPE, str(len(body)).encode(), b"\r\n"]
        if not cycle.keep_alive:
            parts.append(b"connection: close\r\n")
        parts += [b"\r\n", body]
        cycle.response_started = cycle.response_complete = True
        cycle.waiting_for_100_continue = False
        if self.transport.is_closing():  # the client left while its call was queued
            return
        self.transport.write(b"".join(parts))
        cycle.message_event.set()
        if not cycle.keep_alive:
            self.transport.close()
        self.on_response_complete()


def _small_body(headers: Iterable[tuple[bytes, bytes]]) -> bool:
    """A Content-Length the protocol may buffer whole without pausing the socket (uvicorn
    pauses reading above HIGH_WATER_LIMIT until the app reads: nobody would, here)."""
    for name, value in headers:
        if name == b"content-length":
            return value.isdigit() and int(value) <= HIGH_WATER_LIMIT
        if name == b"transfer-encoding":
            return False
    return False
