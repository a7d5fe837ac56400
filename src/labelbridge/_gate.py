"""The HTTP edge in front of FastAPI: auth, body limit, request metrics and logs, and POST
/predict served without FastAPI's layers.

`Gate` is the outermost ASGI app (the server's FastAPI app calls it first), so the hot path
pays for no middleware stack: a small /predict is parsed, answered (inline on the event loop
when the model is fast, see labelbridge._inline, else in the backend's thread pool) and sent
from here. Every other request goes on to FastAPI's routes with the same auth, limit, metrics
and log line. The answers, errors included, are the same either way (tests/test_server_direct).
"""

from __future__ import annotations

import base64
import hmac
import logging
import time
import traceback
from collections.abc import Awaitable, Callable, Iterable, Mapping
from functools import partial
from typing import Any, Protocol, TypeVar

import orjson
from pydantic import BaseModel, ValidationError
from starlette.responses import JSONResponse
from starlette.types import Message, Receive, Scope, Send

from labelbridge._inline import LoopRunner, TurnBudget
from labelbridge._pool import pool_for
from labelbridge.errors import AuthenticationRequired, BadRequest, LabelBridgeError, PayloadTooLarge
from labelbridge.logs import mask_secrets
from labelbridge.protocol import PredictCall, PredictRequest
from labelbridge.service import Backend
from labelbridge.settings import Settings
from labelbridge.status import RequestRing

__all__ = [
    "Gate",
    "ORJSONResponse",
    "Responder",
    "authenticated",
    "our_error",
    "parse_predict",
    "parse_raw",
    "unexpected_error",
]

log = logging.getLogger("labelbridge.server")
M = TypeVar("M", bound=BaseModel)
ASGICall = Callable[[Scope, Receive, Send], Awaitable[None]]

#: routes that answer without credentials (health reveals nothing secret)
OPEN_PATHS = ("/", "/health")
#: polled by the status page itself and by monitors: kept out of "recent requests"
_QUIET_ROUTES = frozenset({"/status.json", "/metrics"})
#: training requests: one INFO line each in uwsgi.log; /predict too with ACCESS_LOG, and any
#: request that fails (all requests with --debug)
_LOGGED_ROUTES = frozenset({"/train", "/webhook"})
#: how much of a request body --debug logs
_DEBUG_BODY_BYTES = 4096
_JSON = (b"content-type", b"application/json")
_NUMPY = orjson.OPT_SERIALIZE_NUMPY


def authenticated(scope: Scope) -> bool:
    """False for a caller the gate let in without credentials (an open path, /webhook)."""
    return bool(scope.get("labelbridge.authenticated", True))


class ORJSONResponse(JSONResponse):
    """JSON rendered by orjson: several times faster than the stdlib for large predict answers.

    A JSONResponse subclass so that OpenAPI documents 200 answers as their model alone (a
    plain Response made FastAPI add `type: string` beside the model's $ref)."""

    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content, option=_NUMPY)


def field_of(error: Mapping[str, Any]) -> str:
    parts = [str(p) for p in error.get("loc", ()) if p not in ("body",)]
    out = ""
    for part in parts:
        out += f"[{part}]" if part.isdigit() else (f".{part}" if out else part)
    return out


def parse_raw(raw: bytes, model: type[M]) -> M:
    return _validated(_loads(raw), model)


def parse_predict(raw: bytes) -> PredictCall:
    """A /predict body: the usual shape checked by hand (PredictCall.from_json), anything
    else validated by PredictRequest, whose error names the field."""
    data = _loads(raw)
    call = PredictCall.from_json(data)
    return call if call is not None else PredictCall.of(_validated(data, PredictRequest))


def _loads(raw: bytes) -> Any:
    if not raw or raw.isspace():
        raise BadRequest("the request body is empty; a JSON object is expected", field="body")
    try:
        # orjson is strict RFC 8259 JSON: NaN, Infinity and overflowing numbers (1e309) are
        # refused here, as Label Studio never sends them; pydantic's own JSON parser would
        # let them through as non-finite floats. Costs ~10-20% more than model_validate_json
        # on a 20k-task body (~20 ms), nothing measurable on small ones.
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise BadRequest(f"the body is not valid JSON: {exc}", field="body") from None


def _validated(data: Any, model: type[M]) -> M:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        errors = exc.errors(include_url=False)
        first = errors[0]
        field = field_of(first) or "body"
        detail = "; ".join(f"{field_of(e) or 'body'}: {e.get('msg')}" for e in errors[:5])
        err = BadRequest(detail, field=field)
        err.status_code = 422
        raise err from None


def our_error(exc: LabelBridgeError) -> ORJSONResponse:
    if exc.status_code >= 500:
        log.error("%s: %s", exc.error, exc.detail, exc_info=exc.__cause__ is not None)
    return ORJSONResponse(exc.to_dict(), status_code=exc.status_code)


def unexpected_error(exc: BaseException, debug: bool) -> ORJSONResponse:
    log.exception("unexpected error", exc_info=exc)
    body: dict[str, Any] = {"error": "InternalError", "detail": f"{type(exc).__name__}: {exc}"}
    if debug:
        body["traceback"] = "".join(traceback.format_exception(exc))
    return ORJSONResponse(body, status_code=500)


def too_large(limit: int) -> LabelBridgeError:
    return PayloadTooLarge(
        f"the request body is larger than {limit} bytes",
        field="body",
        fix="send fewer tasks per request, or raise MAX_BODY_BYTES",
    )


async def _send_json(send: Send, status: int, body: bytes, extra: list[Any] | None = None) -> None:
    headers = [_JSON, (b"content-length", str(len(body)).encode())]
    if extra:
        headers.extend(extra)
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def send_error(send: Send, exc: LabelBridgeError, *, www_auth: bool = False) -> None:
    extra = [(b"www-authenticate", b'Basic realm="labelbridge"')] if www_auth else None
    await _send_json(send, exc.status_code, orjson.dumps(exc.to_dict()), extra)


class Responder(Protocol):
    """Where take_predict's outcome goes: labelbridge._http's request waiting for its answer."""

    def reply(self, status: int, body: bytes) -> None: ...

    def fallback(self, call: PredictCall | None) -> None:
        """Answer it the ASGI way (call: the body, parsed already)."""

    def wanted(self) -> bool:
        """False once the client has left."""


class Gate:
    """Pure ASGI: auth, body limit, metrics, logs; POST /predict answered here."""

    def __init__(
        self,
        app: ASGICall,
        settings: Settings,
        backends: Mapping[str, Backend],
        rings: Mapping[str, RequestRing],
        known_paths: frozenset[str],
    ) -> None:
        self.app = app
        self.known_paths = known_paths
        self.settings = settings
        self.debug = settings.debug
        self.access_log = settings.access_log
        self.backends = backends
        self.rings = rings
        self.max_body = settings.max_body_bytes
        #: POST paths answered by _predict instead of FastAPI's router
        self.direct = {prefix + "/predict": backend for prefix, backend in backends.items()}
        #: inline predict() for fast models (INLINE_PREDICT_MS > 0); THREADS=1 promises
        #: predict() one call at a time, which an inline call beside a pool call would break
        self.inline = settings.inline_predict_ms > 0 and settings.threads > 1
        #: inline work of the current event loop turn, both paths (labelbridge._inline)
        self.turn = TurnBudget()
        self.loop_runs = {
            backend: LoopRunner(backend.predict_nowait, self.turn) for backend in backends.values()
        }
        self._series: dict[tuple[int, str, int], Callable[[float, float], None]] = {}
        user = settings.basic_auth_user or ""
        password = settings.basic_auth_pass.get_secret_value() if settings.basic_auth_pass else ""
        self.basic = f"{user}:{password}".encode() if settings.basic_auth_user else None
        self.bearer = settings.api_token.get_secret_value().encode() if settings.api_token else None

    def _count(self, backend: Backend, route: str, status: int) -> Callable[[float, float], None]:
        """The metrics of one (backend, route, status): latency and count, bound once.
        Unknown paths share the route "other": a scanner must not grow the series without
        end."""
        key = (id(backend), route, status)
        series = self._series.get(key)
        if series is None:
            series = self._series[key] = backend.metrics.timed(
                ("labelbridge_request_seconds", "Request latency by route.", {"route": route}),
                (
                    "labelbridge_requests_total",
                    "Requests by route and status.",
                    {"route": route, "status": str(status)},
                ),
            )
        return series

    def _authorized(self, headers: Iterable[tuple[bytes, bytes]]) -> bool:
        value = next((v for k, v in headers if k == b"authorization"), b"")
        scheme, _, credentials = value.partition(b" ")
        scheme = scheme.lower()
        if scheme == b"basic" and self.basic is not None:
            try:
                decoded = base64.b64decode(credentials.strip(), validate=True)
            except ValueError:
                return False
            return hmac.compare_digest(decoded, self.basic)
        if scheme == b"bearer" and self.bearer is not None:
            return hmac.compare_digest(credentials.strip(), self.bearer)
        return False

    def _backend_path(self, path: str) -> tuple[str, Backend | None, str]:
        for prefix, backend in self.backends.items():
            if prefix and (path == prefix or path.startswith(prefix + "/")):
                return prefix, backend, path[len(prefix) :] or "/"
        return "", self.backends.get(""), path

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope["path"]
        prefix, backend, route = self._backend_path(path)
        headers = scope["headers"]
        if self.basic is not None or self.bearer is not None:
            ok = self._authorized(headers)
            if not ok and (route == "/webhook" or route in OPEN_PATHS):
                # Label Studio sends webhooks without credentials: accept them as a hint only;
                # health answers anyone, but an anonymous caller gets no error details
                scope["labelbridge.authenticated"] = False
            elif not ok and route not in OPEN_PATHS:
                await send_error(
                    send,
                    AuthenticationRequired(
                        "credentials are required",
                        fix="add the backend in Label Studio with basic auth (or send a bearer token)",
                    ),
                    www_auth=self.basic is not None,
                )
                return
        for key, value in headers:
            if key == b"content-length":
                if value.isdigit() and int(value) > self.max_body:
                    await send_error(send, too_large(self.max_body))
                    return
                break
        began = time.perf_counter()
        status = 500
        body = b""
        direct = None
        try:
            direct = self.direct.get(path) if scope["method"] == "POST" else None
            if direct is not None:
                status, body = await self._predict(
                    direct, receive, send, scope.get("labelbridge.request")
                )
            else:
                status, body = await self._forward(scope, receive, send)
        finally:
            self._done(
                scope["method"],
                path,
                prefix,
                backend,
                route,
                status,
                time.perf_counter() - began,
                body,
                direct is not None,
            )

    def _done(
        self,
        method: str,
        path: str,
        prefix: str,
        backend: Backend | None,
        route: str,
        status: int,
        elapsed: float,
        body: bytes,
        direct: bool,
    ) -> None:
        """A request answered: its metrics, its line in the status page's ring, its log."""
        if backend is not None:
            self._count(backend, route if path in self.known_paths else "other", status)(
                elapsed, 1.0
            )
        ring = self.rings.get(prefix)
        if ring is not None and route not in _QUIET_ROUTES:
            ring.add(method, path, status, elapsed)
        if self.debug:
            _log_debug(method, path, status, elapsed, body)
        elif (
            route in _LOGGED_ROUTES or status >= 400 or (self.access_log and direct)
        ) and log.isEnabledFor(logging.INFO):
            log.info("%s %s -> %s in %.1f ms", method, mask_secrets(path), status, elapsed * 1000)

    def _error_answer(self, exc: Exception) -> tuple[int, bytes]:
        """Status and JSON body of a /predict that failed: ours mapped, anything else a 500."""
        if isinstance(exc, LabelBridgeError):
            response = our_error(exc)
        else:
            response = unexpected_error(exc, self.debug)
        return response.status_code, bytes(response.body)

    def answers_inline(self, path: str) -> bool:
        """Whether a POST to `path` is for a model that runs inline now: labelbridge._http
        then holds the request for take_predict instead of starting an ASGI task."""
        backend = self.direct.get(path)
        return backend is not None and self.inline and not self.debug and backend.inline.likely()

    def take_predict(
        self, path: str, headers: Iterable[tuple[bytes, bytes]], raw: bytes, to: Responder
    ) -> None:
        """POST /predict for labelbridge._http's fast path, with its body in hand: `to.reply`
        gets (status, JSON body) when the model runs inline, now if this loop turn's budget
        allows, else from the LoopRunner in a coming turn (no task to wake either way);
        `to.fallback` gets the request (parsed, or None) when it must go the ASGI way: a
        model that waits or is slow, a version to load, credentials missing, --debug, a body
        over the limit or in error (those errors are answered there exactly as before).

        The same answer, metrics, ring line and log as __call__ would give."""
        backend = self.direct.get(path)
        if (
            backend is None
            or not self.inline
            or self.debug
            or len(raw) > self.max_body
            or (
                (self.basic is not None or self.bearer is not None)
                and not self._authorized(headers)
            )
        ):
            to.fallback(None)
            return
        began = time.perf_counter()
        try:
            call = parse_predict(raw)
        except LabelBridgeError:
            to.fallback(None)
            return
        if not backend.inline.allows(len(call.tasks)):
            to.fallback(call)
            return
        runner = self.loop_runs[backend]
        if runner.idle and self.turn.allows():
            try:
                answer = backend.predict_nowait(call)
            except Exception as exc:
                self._answer(path, backend, began, to, call, None, exc)
            else:
                self._answer(path, backend, began, to, call, answer, None)
        else:  # queued calls first; this turn's budget spent: a coming turn
            runner.submit(call, partial(self._answer, path, backend, began, to, call), to.wanted)

    def _answer(
        self,
        path: str,
        backend: Backend,
        began: float,
        to: Responder,
        call: PredictCall,
        answer: Any,
        exc: BaseException | None,
    ) -> None:
        """An inline call's outcome, to its responder (see take_predict)."""
        if exc is None and answer is None:
            to.fallback(call)  # it needs the pool after all (a version to load, ...)
            return
        if exc is None:
            try:
                status, payload = 200, orjson.dumps(answer, option=_NUMPY)
            except Exception as error:
                status, payload = self._error_answer(error)
        elif isinstance(exc, Exception):
            status, payload = self._error_answer(exc)
        else:  # CancelledError from predict(), or the server stopping
            status, payload = self._error_answer(RuntimeError(repr(exc)))
        elapsed = time.perf_counter() - began
        prefix = path[: -len("/predict")]
        self._done("POST", path, prefix, backend, "/predict", status, elapsed, b"", True)
        to.reply(status, payload)

    async def _predict(
        self, backend: Backend, receive: Receive, send: Send, parsed: PredictCall | None
    ) -> tuple[int, bytes]:
        """POST /predict: the same answer as the FastAPI route (server.make_router), errors
        included, without its routing layers. `parsed`: the body, when labelbridge._http's
        fast path parsed it already (then handed the request on)."""
        chunks = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return 499, b""  # the client left
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body:
                await send_error(send, too_large(self.max_body))
                return 413, b""
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        raw = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        try:
            request = parsed if parsed is not None else parse_predict(raw)
            answer = (
                await self.loop_runs[backend].run(request)
                if self.inline and backend.inline.allows(len(request.tasks))
                else None
            )
            if answer is None:
                answer = await pool_for(backend).run(backend.predict, request)
            status, payload = 200, orjson.dumps(answer, option=_NUMPY)
        except Exception as exc:
            status, payload = self._error_answer(exc)
        await _send_json(send, status, payload)
        return status, raw if self.debug else b""

    async def _forward(self, scope: Scope, receive: Receive, send: Send) -> tuple[int, bytes]:
        """Any other request: on to FastAPI, with the body limit enforced as it streams in."""
        status = 500
        received = 0
        max_body = self.max_body
        debug_body: list[bytes] | None = [] if self.debug else None

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                chunk = message.get("body", b"")
                received += len(chunk)
                if received > max_body:
                    # our error: FastAPI's handler for it answers 413 with the usual JSON (an
                    # exception of another kind would reach its 500 handler first)
                    raise too_large(max_body)
                if debug_body is not None and received - len(chunk) < _DEBUG_BODY_BYTES:
                    debug_body.append(chunk)
            return message

        started = False

        async def send_wrapper(message: Message) -> None:
            nonlocal status, started
            if message["type"] == "http.response.start":
                status, started = message["status"], True
            await send(message)

        try:
            await self.app(scope, limited_receive, send_wrapper)
        except PayloadTooLarge as exc:  # raised outside a route (no handler answered)
            if started:
                raise
            status = 413
            await send_error(send, exc)
        return status, b"".join(debug_body) if debug_body is not None else b""


def _log_debug(method: str, path: str, status: int, elapsed: float, body: bytes) -> None:
    """--debug: the request line and its body, secrets masked, long bodies cut."""
    text = body[:_DEBUG_BODY_BYTES].decode("utf-8", "replace")
    more = f" ... ({len(body)} bytes)" if len(body) > _DEBUG_BODY_BYTES else ""
    log.debug(
        "%s %s -> %s in %.1f ms%s",
        method,
        mask_secrets(path),
        status,
        elapsed * 1000,
        f" body: {mask_secrets(text)}{more}" if text else "",
    )
