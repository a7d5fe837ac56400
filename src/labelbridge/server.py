"""The HTTP face of a `Backend`: Label Studio's ML protocol on FastAPI.

Routes are thin: parse the body in one pass (pydantic from bytes), call the backend, answer
with orjson. Errors of our tree become `{"error", "detail", "field", "fix"}` here and only here.
Several backends can share one server, each under its own URL prefix (Label Studio joins its
paths onto whatever backend URL it was given, so `http://host:9090/ner` works).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import contextvars
import hmac
import logging
import os
import queue
import threading
import time
import traceback
import weakref
from collections.abc import Callable, Iterable, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, TypeVar

import anyio
import orjson
from fastapi import APIRouter, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from pydantic import BaseModel, ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from labelbridge import __version__
from labelbridge.errors import AuthenticationRequired, BadRequest, LabelBridgeError
from labelbridge.logs import mask_secrets
from labelbridge.metrics import SharedMetrics
from labelbridge.protocol import (
    DeleteRequest,
    DuplicateModelRequest,
    ErrorResponse,
    HealthResponse,
    JobStatusRequest,
    JobStatusResponse,
    PredictRequest,
    PredictResponse,
    PrelabelRequest,
    PrelabelResponse,
    SetupRequest,
    SetupResponse,
    TrainRequest,
    TrainResponse,
    ValidateRequest,
    ValidateResponse,
    VersionsResponse,
    WebhookEvent,
    WebhookResponse,
)
from labelbridge.service import Backend
from labelbridge.settings import Settings
from labelbridge.status import RequestRing, make_status_router

__all__ = ["create_app", "make_router"]

log = logging.getLogger("labelbridge.server")
M = TypeVar("M", bound=BaseModel)

#: routes that answer without credentials (health reveals nothing secret)
_OPEN_PATHS = ("/", "/health")
#: polled by the status page itself and by monitors: kept out of "recent requests"
_QUIET_ROUTES = frozenset({"/status.json", "/metrics"})
#: inference and training requests: one INFO line each in uwsgi.log (all requests with --debug)
_LOGGED_ROUTES = frozenset({"/predict", "/train", "/webhook"})
#: how much of a request body --debug logs
_DEBUG_BODY_BYTES = 4096
#: how long a replacement worker waits for its model before it serves anyway
_REPLACEMENT_LOAD_WAIT = 3600.0
#: set by the production supervisor in the environment of workers that replace another
REPLACEMENT_ENV = "LABELBRIDGE_REPLACEMENT"
#: the supervisor's shared folder for metrics across workers
METRICS_DIR_ENV = "LABELBRIDGE_METRICS_DIR"
_BODY_MODELS: list[type[BaseModel]] = []


class ORJSONResponse(JSONResponse):
    """JSON rendered by orjson: several times faster than the stdlib for large predict answers.

    A JSONResponse subclass so that OpenAPI documents 200 answers as their model alone (a
    plain Response made FastAPI add `type: string` beside the model's $ref)."""

    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content, option=orjson.OPT_SERIALIZE_NUMPY)


def _error(exc: LabelBridgeError) -> ORJSONResponse:
    return ORJSONResponse(exc.to_dict(), status_code=exc.status_code)


def _field_of(error: Mapping[str, Any]) -> str:
    parts = [str(p) for p in error.get("loc", ()) if p not in ("body",)]
    out = ""
    for part in parts:
        out += f"[{part}]" if part.isdigit() else (f".{part}" if out else part)
    return out


async def _parse(request: Request, model: type[M]) -> M:
    return _parse_raw(await request.body(), model)


def _parse_raw(raw: bytes, model: type[M]) -> M:
    if not raw.strip():
        raise BadRequest("the request body is empty; a JSON object is expected", field="body")
    try:
        # orjson is strict RFC 8259 JSON: NaN, Infinity and overflowing numbers (1e309) are
        # refused here, as Label Studio never sends them; pydantic's own JSON parser would
        # let them through as non-finite floats. Costs ~10-20% more than model_validate_json
        # on a 20k-task body (~20 ms), nothing measurable on small ones.
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise BadRequest(f"the body is not valid JSON: {exc}", field="body") from None
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        errors = exc.errors(include_url=False)
        first = errors[0]
        field = _field_of(first) or "body"
        detail = "; ".join(f"{_field_of(e) or 'body'}: {e.get('msg')}" for e in errors[:5])
        err = BadRequest(detail, field=field)
        err.status_code = 422
        raise err from None


def _json(model: BaseModel, status: int = 200) -> ORJSONResponse:
    return ORJSONResponse(model.model_dump(mode="json", exclude_none=True), status_code=status)


def _body(model: type[BaseModel]) -> dict[str, Any]:
    """OpenAPI for a body we parse ourselves (faster than FastAPI's json + validate)."""
    _BODY_MODELS.append(model)
    ref = {"$ref": f"#/components/schemas/{model.__name__}"}
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": ref}}}}


def _error_doc(description: str) -> dict[str, Any]:
    ref = {"$ref": "#/components/schemas/ErrorResponse"}
    return {"description": description, "content": {"application/json": {"schema": ref}}}


def _responses(model: type[BaseModel], status: int = 200) -> dict[int | str, dict[str, Any]]:
    return {
        status: {"model": model},
        "4XX": {"model": ErrorResponse, "description": "Bad input"},
        "5XX": {"model": ErrorResponse, "description": "Server or model error"},
    }


def _resolve(future: asyncio.Future[Any], result: Any, error: BaseException | None) -> None:
    if future.cancelled():
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)


class _ThreadPool:
    """At most `size` threads for the blocking calls (the model's predict() above all).

    Why not anyio.to_thread.run_sync: per call it enters a cancel scope, acquires a
    CapacityLimiter and finds its pool through a RunVar, 40-80 us of the event loop's time on
    a busy core: more than a bare uvicorn app spends on a whole request (bench/NOTES.md). Here
    a call is a SimpleQueue.put and one call_soon_threadsafe back; contextvars are copied as
    anyio does. Threads start on demand, as in concurrent.futures.ThreadPoolExecutor, and stop
    at close() (the app's shutdown).
    """

    def __init__(self, size: int) -> None:
        self.size = size
        self._queue: queue.SimpleQueue[tuple[Any, ...] | None] = queue.SimpleQueue()
        self._idle = threading.Semaphore(0)  # released by each thread that finished a call
        self._lock = threading.Lock()
        self._count = 0
        self._closed = False

    async def run(self, func: Callable[..., Any], *args: Any) -> Any:
        if self._closed:
            raise RuntimeError("the thread pool is closed")
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        self._queue.put((contextvars.copy_context(), func, args, loop, future))
        if not self._idle.acquire(blocking=False):
            self._grow()
        return await future

    def _grow(self) -> None:
        with self._lock:
            if self._count >= self.size or self._closed:
                return
            self._count += 1
        threading.Thread(target=self._work, name="labelbridge-call", daemon=True).start()

    def _work(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            context, func, args, loop, future = item
            del item
            error: BaseException | None = None
            result: Any = None
            try:
                result = context.run(func, *args)
            except BaseException as exc:
                error = exc
            with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
                loop.call_soon_threadsafe(_resolve, future, result, error)
            del context, func, args, loop, future, result, error
            self._idle.release()

    def close(self) -> None:
        """Stop the threads once the calls already queued are done."""
        with self._lock:
            self._closed = True
            count, self._count = self._count, 0
        for _ in range(count):
            self._queue.put(None)


_POOLS: weakref.WeakKeyDictionary[Backend, _ThreadPool] = weakref.WeakKeyDictionary()


def _pool_for(backend: Backend) -> _ThreadPool:
    """The backend's threads (THREADS of them), shared by its routes and the direct path."""
    pool = _POOLS.get(backend)
    if pool is None:
        pool = _POOLS.setdefault(backend, _ThreadPool(backend.settings.threads))
    return pool


def _close_pool(backend: Backend) -> None:
    pool = _POOLS.pop(backend, None)
    if pool is not None:
        pool.close()


async def _predict_direct(backend: Backend, debug: bool, receive: Receive, send: Send) -> None:
    """POST /predict straight from the gate, without FastAPI's routing layers (router,
    exception middleware, exit stacks, Request): the same answer as the route below, errors
    included, at ~40% less CPU per small request (bench/NOTES.md)."""
    chunks = []
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return  # the client left
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            break
    try:
        body = _parse_raw(b"".join(chunks), PredictRequest)
        response = ORJSONResponse(await _pool_for(backend).run(backend.predict, body))
    except LabelBridgeError as exc:
        response = _our_error(exc)
    except Exception as exc:
        response = _unexpected_error(exc, debug)
    await send(
        {
            "type": "http.response.start",
            "status": response.status_code,
            "headers": response.raw_headers,
        }
    )
    await send({"type": "http.response.body", "body": response.body})


def _our_error(exc: LabelBridgeError) -> ORJSONResponse:
    if exc.status_code >= 500:
        log.error("%s: %s", exc.error, exc.detail, exc_info=exc.__cause__ is not None)
    return _error(exc)


def _unexpected_error(exc: Exception, debug: bool) -> ORJSONResponse:
    log.exception("unexpected error", exc_info=exc)
    body: dict[str, Any] = {"error": "InternalError", "detail": f"{type(exc).__name__}: {exc}"}
    if debug:
        body["traceback"] = "".join(traceback.format_exception(exc))
    return ORJSONResponse(body, status_code=500)


def make_router(backend: Backend) -> APIRouter:
    """The protocol's routes for one backend."""
    router = APIRouter()

    async def in_thread(func: Callable[..., Any], *args: Any) -> Any:
        return await _pool_for(backend).run(func, *args)

    @router.get("/", include_in_schema=False)
    @router.get("/health", responses=_responses(HealthResponse))
    async def health(request: Request) -> ORJSONResponse:
        answer = backend.health()
        if not request.scope.get("labelbridge.authenticated", True):
            # states only: error texts may name files, hosts or the Redis URL
            answer = answer.model_copy(update={"model_error": None, "queue_error": None})
        return _json(answer)

    @router.post("/setup", openapi_extra=_body(SetupRequest), responses=_responses(SetupResponse))
    async def setup(request: Request) -> ORJSONResponse:
        return _json(backend.setup(await _parse(request, SetupRequest)))

    @router.post(
        "/predict", openapi_extra=_body(PredictRequest), responses=_responses(PredictResponse)
    )
    async def predict(request: Request) -> ORJSONResponse:
        body = await _parse(request, PredictRequest)
        return ORJSONResponse(await in_thread(backend.predict, body))

    @router.post(
        "/webhook", openapi_extra=_body(WebhookEvent), responses=_responses(WebhookResponse)
    )
    async def webhook(request: Request) -> ORJSONResponse:
        event = await _parse(request, WebhookEvent)
        authenticated = request.scope.get("labelbridge.authenticated", True)
        return _json(await in_thread(lambda: backend.webhook(event, authenticated=authenticated)))

    @router.post(
        "/train",
        status_code=201,
        openapi_extra=_body(TrainRequest),
        responses=_responses(TrainResponse, 201),
    )
    async def train(request: Request) -> ORJSONResponse:
        return _json(await in_thread(backend.train, await _parse(request, TrainRequest)), 201)

    @router.get("/versions", responses=_responses(VersionsResponse))
    async def versions(project: str | None = None) -> ORJSONResponse:
        return _json(await in_thread(backend.versions, project))

    @router.post(
        "/job_status",
        openapi_extra=_body(JobStatusRequest),
        responses=_responses(JobStatusResponse),
    )
    async def job_status(request: Request) -> ORJSONResponse:
        body = await _parse(request, JobStatusRequest)
        return _json(await in_thread(backend.job_status, body.job))

    @router.post(
        "/prelabel",
        status_code=201,
        openapi_extra=_body(PrelabelRequest),
        responses=_responses(PrelabelResponse, 201),
    )
    async def prelabel(request: Request) -> ORJSONResponse:
        """Pre-annotate the project's tasks in a job (see `labelbridge prelabel`)."""
        body = await _parse(request, PrelabelRequest)
        return _json(await in_thread(backend.prelabel, body), 201)

    @router.post("/duplicate_model", openapi_extra=_body(DuplicateModelRequest))
    async def duplicate_model(request: Request) -> ORJSONResponse:
        body = await _parse(request, DuplicateModelRequest)
        return ORJSONResponse(await in_thread(backend.duplicate_model, body))

    @router.post("/delete", openapi_extra=_body(DeleteRequest))
    async def delete(request: Request) -> ORJSONResponse:
        body = await _parse(request, DeleteRequest)
        return ORJSONResponse(await in_thread(backend.delete, body))

    @router.post(
        "/validate", openapi_extra=_body(ValidateRequest), responses=_responses(ValidateResponse)
    )
    async def validate(request: Request) -> ORJSONResponse:
        return _json(backend.validate(await _parse(request, ValidateRequest)))

    return router


class _Gate:
    """Pure ASGI middleware: body size limit, auth, request metrics. Cheap on the hot path."""

    def __init__(
        self,
        app: ASGIApp,
        settings: Settings,
        backends: Mapping[str, Backend],
        rings: Mapping[str, RequestRing],
        known_paths: frozenset[str],
    ) -> None:
        self.app = app
        self.known_paths = known_paths
        self.settings = settings
        self.backends = backends
        self.rings = rings
        self.max_body = settings.max_body_bytes
        #: POST paths served by _predict_direct instead of FastAPI's router
        self.direct = {prefix + "/predict": backend for prefix, backend in backends.items()}
        user = settings.basic_auth_user or ""
        password = settings.basic_auth_pass.get_secret_value() if settings.basic_auth_pass else ""
        self.basic = f"{user}:{password}".encode() if settings.basic_auth_user else None
        self.bearer = settings.api_token.get_secret_value().encode() if settings.api_token else None

    def _authorized(self, headers: list[tuple[bytes, bytes]]) -> bool:
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
        prefix, backend, route = self._backend_path(scope["path"])
        headers = scope["headers"]
        if self.basic is not None or self.bearer is not None:
            ok = self._authorized(headers)
            if not ok and (route == "/webhook" or route in _OPEN_PATHS):
                # Label Studio sends webhooks without credentials: accept them as a hint only;
                # health answers anyone, but an anonymous caller gets no error details
                scope["labelbridge.authenticated"] = False
            elif not ok and route not in _OPEN_PATHS:
                await _send_error(
                    send,
                    AuthenticationRequired(
                        "credentials are required",
                        fix="add the backend in Label Studio with basic auth (or send a bearer token)",
                    ),
                    www_auth=self.basic is not None,
                )
                return
        length = next((v for k, v in headers if k == b"content-length"), None)
        if length is not None and length.isdigit() and int(length) > self.max_body:
            await _send_error(send, _too_large(self.max_body))
            return
        began = time.perf_counter()
        status = 500
        received = 0
        max_body = self.max_body

        debug_body: list[bytes] | None = [] if self.settings.debug else None

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                chunk = message.get("body", b"")
                received += len(chunk)
                if received > max_body:
                    raise _BodyTooLarge
                if debug_body is not None and received - len(chunk) < _DEBUG_BODY_BYTES:
                    debug_body.append(chunk)
            return message

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            direct = self.direct.get(scope["path"]) if scope["method"] == "POST" else None
            if direct is not None:
                await _predict_direct(direct, self.settings.debug, limited_receive, send_wrapper)
            else:
                await self.app(scope, limited_receive, send_wrapper)
        except _BodyTooLarge:
            status = 413
            await _send_error(send, _too_large(max_body))
        finally:
            elapsed = time.perf_counter() - began
            if backend is not None:
                # unknown paths share one label: a scanner must not grow the series without end
                label = route if scope["path"] in self.known_paths else "other"
                backend.metrics.observe(
                    "labelbridge_request_seconds", "Request latency by route.", elapsed, route=label
                )
                backend.metrics.inc(
                    "labelbridge_requests_total",
                    "Requests by route and status.",
                    route=label,
                    status=str(status),
                )
            ring = self.rings.get(prefix)
            if ring is not None and route not in _QUIET_ROUTES:
                ring.add(scope["method"], scope["path"], status, elapsed)
            if debug_body is not None:
                _log_debug(scope, status, elapsed, b"".join(debug_body))
            elif route in _LOGGED_ROUTES:
                log.info(
                    "%s %s -> %s in %.1f ms",
                    scope["method"],
                    mask_secrets(scope["path"]),
                    status,
                    elapsed * 1000,
                )


class _BodyTooLarge(Exception):
    pass


def _log_debug(scope: Scope, status: int, elapsed: float, body: bytes) -> None:
    """--debug: the request line and its body, secrets masked, long bodies cut."""
    text = body[:_DEBUG_BODY_BYTES].decode("utf-8", "replace")
    more = f" ... ({len(body)} bytes)" if len(body) > _DEBUG_BODY_BYTES else ""
    log.debug(
        "%s %s -> %s in %.1f ms%s",
        scope["method"],
        mask_secrets(scope["path"]),
        status,
        elapsed * 1000,
        f" body: {mask_secrets(text)}{more}" if text else "",
    )


def _too_large(limit: int) -> LabelBridgeError:
    from labelbridge.errors import PayloadTooLarge

    return PayloadTooLarge(
        f"the request body is larger than {limit} bytes",
        field="body",
        fix="send fewer tasks per request, or raise MAX_BODY_BYTES",
    )


async def _send_error(send: Send, exc: LabelBridgeError, *, www_auth: bool = False) -> None:
    body = orjson.dumps(exc.to_dict())
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    if www_auth:
        headers.append((b"www-authenticate", b'Basic realm="labelbridge"'))
    await send({"type": "http.response.start", "status": exc.status_code, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def _gate_on_model(backends: Iterable[Backend]) -> None:
    """A worker that replaces a recycled or dead one takes no traffic before its model loads.

    Only replacements wait (the supervisor marks them): while the first workers load, nobody
    else could answer, and /health must answer with JSON at once or Label Studio marks the
    backend Disconnected. A replacement's siblings serve meanwhile, so holding back its lifespan
    startup (uvicorn accepts only after it) costs nothing. A model that fails to load does not
    fail the startup: uvicorn's supervisor would stop altogether; /health reports it instead."""
    for backend in backends:
        try:
            await anyio.to_thread.run_sync(backend.wait_ready, _REPLACEMENT_LOAD_WAIT)
        except LabelBridgeError as exc:
            log.error("replacement worker serving without its model: %s", exc.detail)


def _telemetry_options() -> dict[str, Any]:
    """FastAPI's OpenTelemetry bridge (FastAPI >= 0.16x) asks the global providers on every
    request whether to trace: environment look-ups worth ~10% of a small /predict
    (bench/NOTES.md). Keep it when OpenTelemetry is set up for this process (an OTEL_*
    variable, or a provider installed before the app is made, e.g. by model.py), else off."""
    import inspect

    if "telemetry" not in inspect.signature(FastAPI.__init__).parameters:
        return {}
    if any(name.startswith("OTEL_") for name in os.environ):
        return {}
    try:
        from opentelemetry import _logs, metrics, trace
    except ImportError:
        return {}
    providers = (
        trace.get_tracer_provider(),
        metrics.get_meter_provider(),
        _logs.get_logger_provider(),
    )
    if any(not type(p).__name__.startswith(("Proxy", "_Proxy")) for p in providers):
        return {}
    return {"telemetry": {"tracing": False, "metrics": False, "logs": False}}


def create_app(backends: Backend | Mapping[str, Backend]) -> FastAPI:
    """A FastAPI app serving one backend at `/`, or several under their prefixes."""
    mounted: dict[str, Backend] = (
        {"": backends}
        if isinstance(backends, Backend)
        else {p.rstrip("/"): b for p, b in backends.items()}
    )
    settings = next(iter(mounted.values())).settings
    debug = settings.debug

    shared_root = os.environ.get(METRICS_DIR_ENV)
    shared: dict[str, SharedMetrics] = {}
    if shared_root:
        for index, (prefix, backend) in enumerate(mounted.items()):
            shared[prefix] = SharedMetrics(Path(shared_root) / str(index), backend.metrics)
    rings = {prefix: RequestRing() for prefix in mounted}

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> Any:
        for backend in mounted.values():
            backend.start()
        for sharer in shared.values():
            sharer.start()
        if os.environ.get(REPLACEMENT_ENV) == "1":
            await _gate_on_model(mounted.values())
        try:
            yield
        finally:
            for sharer in shared.values():
                sharer.stop()
            for backend in mounted.values():
                backend.close()
                _close_pool(backend)

    app = FastAPI(
        title="labelbridge ML backend",
        version=__version__,
        lifespan=lifespan,
        default_response_class=ORJSONResponse,
        redoc_url=None,
        **_telemetry_options(),
    )
    known_paths: set[str] = set()
    for prefix, backend in mounted.items():
        for router in (
            make_router(backend),
            make_status_router(backend, rings[prefix], shared.get(prefix)),
        ):
            app.include_router(router, prefix=prefix)
            known_paths.update(prefix + str(getattr(r, "path", "")) for r in router.routes)

    @app.exception_handler(LabelBridgeError)
    async def _ours(_: Request, exc: LabelBridgeError) -> ORJSONResponse:
        return _our_error(exc)

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> ORJSONResponse:
        errors = exc.errors()
        field = _field_of(errors[0]) if errors else "request"
        detail = "; ".join(f"{_field_of(e)}: {e.get('msg')}" for e in errors[:5])
        return ORJSONResponse(
            {"error": "BadRequest", "detail": detail, "field": field}, status_code=422
        )

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> ORJSONResponse:
        name = {404: "NotFound", 405: "MethodNotAllowed"}.get(exc.status_code, "HTTPError")
        return ORJSONResponse(
            {"error": name, "detail": str(exc.detail)},
            status_code=exc.status_code,
            headers=exc.headers,  # a 405 keeps its Allow header
        )

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, exc: Exception) -> ORJSONResponse:
        return _unexpected_error(exc, debug)

    def openapi() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        schema = get_openapi(title=app.title, version=app.version, routes=app.routes)
        components = schema.setdefault("components", {}).setdefault("schemas", {})
        for model in _BODY_MODELS:
            body_schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
            for name, sub in body_schema.pop("$defs", {}).items():
                components.setdefault(name, sub)
            components.setdefault(model.__name__, body_schema)
        # any route may answer 401 (auth), 413 (body size) or a 5xx: always our error JSON
        components.setdefault("ErrorResponse", ErrorResponse.model_json_schema())
        for operations in schema.get("paths", {}).values():
            for operation in operations.values():
                for code, description in (("4XX", "Bad input"), ("5XX", "Server error")):
                    operation.setdefault("responses", {}).setdefault(code, _error_doc(description))
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]
    app.add_middleware(
        _Gate, settings=settings, backends=mounted, rings=rings, known_paths=frozenset(known_paths)
    )
    return app


_SERVE_ENV = "LABELBRIDGE_SERVE"


def build_app(
    target: str,
    settings: Settings,
    *,
    class_name: str | None = None,
) -> FastAPI:
    """Load the model class from a backend folder (or module:Class) and serve it."""
    from labelbridge.loader import load_model_class, model_ref_for

    ref = model_ref_for(target)
    backend_dir = Path(ref) if Path(ref).is_dir() else None
    model_cls = load_model_class(ref, class_name)
    backend = Backend(model_cls, settings, model_ref=ref, backend_dir=backend_dir)
    return create_app(backend)


def app_from_env() -> FastAPI:
    """Factory for worker processes: the CLI passes its choices in one environment variable."""
    import json

    from labelbridge.logs import configure_logging

    spec = json.loads(os.environ[_SERVE_ENV])
    settings = Settings(**spec["overrides"])
    backend_dir = Path(spec["backend_dir"]) if spec.get("backend_dir") else None
    configure_logging(settings, backend_dir=backend_dir)
    if spec.get("backends"):  # several models, each under /<name> (see labelbridge.multi)
        from labelbridge.multi import build_multi_app

        return build_multi_app(spec["backends"], settings)
    return build_app(spec["target"], settings, class_name=spec.get("class_name"))
