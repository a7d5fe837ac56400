"""The HTTP face of a `Backend`: Label Studio's ML protocol on FastAPI.

Routes are thin: parse the body in one pass (pydantic from bytes), call the backend, answer
with orjson. Errors of our tree become `{"error", "detail", "field", "fix"}` here and only here.
Several backends can share one server, each under its own URL prefix (Label Studio joins its
paths onto whatever backend URL it was given, so `http://host:9090/ner` works).
"""

from __future__ import annotations

import base64
import hmac
import logging
import time
import traceback
from collections.abc import Callable, Mapping
from contextlib import asynccontextmanager
from typing import Any, TypeVar

import anyio
import orjson
from fastapi import APIRouter, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import PlainTextResponse
from pydantic import BaseModel, ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from labelbridge import __version__
from labelbridge.errors import AuthenticationRequired, BadRequest, LabelBridgeError
from labelbridge.logs import mask_secrets
from labelbridge.protocol import (
    DeleteRequest,
    DuplicateModelRequest,
    ErrorResponse,
    HealthResponse,
    JobStatusRequest,
    JobStatusResponse,
    PredictRequest,
    PredictResponse,
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

__all__ = ["create_app", "make_router"]

log = logging.getLogger("labelbridge.server")
M = TypeVar("M", bound=BaseModel)

#: routes that answer without credentials (health reveals nothing secret)
_OPEN_PATHS = ("/", "/health")
_BODY_MODELS: list[type[BaseModel]] = []


class ORJSONResponse(Response):
    """JSON rendered by orjson: several times faster than the stdlib for large predict answers."""

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
    raw = await request.body()
    if not raw.strip():
        raise BadRequest("the request body is empty; a JSON object is expected", field="body")
    try:
        return model.model_validate_json(raw)
    except ValidationError as exc:
        errors = exc.errors(include_url=False)
        first = errors[0]
        if first.get("type") == "json_invalid":
            raise BadRequest(
                f"the body is not valid JSON: {first.get('msg')}", field="body"
            ) from None
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


def _responses(model: type[BaseModel]) -> dict[int | str, dict[str, Any]]:
    return {
        200: {"model": model},
        "4XX": {"model": ErrorResponse, "description": "Bad input"},
        "5XX": {"model": ErrorResponse, "description": "Server or model error"},
    }


def make_router(backend: Backend) -> APIRouter:
    """The protocol's routes for one backend."""
    router = APIRouter()
    limiter = anyio.CapacityLimiter(backend.settings.threads)

    async def in_thread(func: Callable[..., Any], *args: Any) -> Any:
        return await anyio.to_thread.run_sync(func, *args, limiter=limiter)

    @router.get("/", include_in_schema=False)
    @router.get("/health", responses=_responses(HealthResponse))
    async def health() -> ORJSONResponse:
        return _json(backend.health())

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

    @router.post("/train", openapi_extra=_body(TrainRequest), responses=_responses(TrainResponse))
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

    @router.get("/metrics", response_class=PlainTextResponse)
    async def metrics() -> PlainTextResponse:
        return PlainTextResponse(backend.metrics.render(), media_type="text/plain; version=0.0.4")

    return router


class _Gate:
    """Pure ASGI middleware: body size limit, auth, request metrics. Cheap on the hot path."""

    def __init__(self, app: ASGIApp, settings: Settings, backends: Mapping[str, Backend]) -> None:
        self.app = app
        self.settings = settings
        self.backends = backends
        self.max_body = settings.max_body_bytes
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

    def _backend_path(self, path: str) -> tuple[Backend | None, str]:
        for prefix, backend in self.backends.items():
            if prefix and (path == prefix or path.startswith(prefix + "/")):
                return backend, path[len(prefix) :] or "/"
        return self.backends.get(""), path

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        backend, route = self._backend_path(scope["path"])
        headers = scope["headers"]
        if self.basic is not None or self.bearer is not None:
            ok = self._authorized(headers)
            if not ok and route == "/webhook":
                # Label Studio sends webhooks without credentials: accept them as a hint only
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

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > max_body:
                    raise _BodyTooLarge
            return message

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, limited_receive, send_wrapper)
        except _BodyTooLarge:
            status = 413
            await _send_error(send, _too_large(max_body))
        finally:
            if backend is not None:
                elapsed = time.perf_counter() - began
                backend.metrics.observe(
                    "labelbridge_request_seconds", "Request latency by route.", elapsed, route=route
                )
                backend.metrics.inc(
                    "labelbridge_requests_total",
                    "Requests by route and status.",
                    route=route,
                    status=str(status),
                )
            if self.settings.debug:
                log.debug("%s %s -> %s", scope["method"], mask_secrets(scope["path"]), status)


class _BodyTooLarge(Exception):
    pass


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


def create_app(backends: Backend | Mapping[str, Backend]) -> FastAPI:
    """A FastAPI app serving one backend at `/`, or several under their prefixes."""
    mounted: dict[str, Backend] = (
        {"": backends}
        if isinstance(backends, Backend)
        else {p.rstrip("/"): b for p, b in backends.items()}
    )
    settings = next(iter(mounted.values())).settings
    debug = settings.debug

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> Any:
        for backend in mounted.values():
            backend.start()
        try:
            yield
        finally:
            for backend in mounted.values():
                backend.close()

    app = FastAPI(
        title="labelbridge ML backend",
        version=__version__,
        lifespan=lifespan,
        default_response_class=ORJSONResponse,
        redoc_url=None,
    )
    for prefix, backend in mounted.items():
        app.include_router(make_router(backend), prefix=prefix)

    @app.exception_handler(LabelBridgeError)
    async def _ours(_: Request, exc: LabelBridgeError) -> ORJSONResponse:
        if exc.status_code >= 500:
            log.error("%s: %s", exc.error, exc.detail, exc_info=exc.__cause__ is not None)
        return _error(exc)

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
            {"error": name, "detail": str(exc.detail)}, status_code=exc.status_code
        )

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, exc: Exception) -> ORJSONResponse:
        log.exception("unexpected error")
        body: dict[str, Any] = {"error": "InternalError", "detail": f"{type(exc).__name__}: {exc}"}
        if debug:
            body["traceback"] = traceback.format_exc()
        return ORJSONResponse(body, status_code=500)

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
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]
    app.add_middleware(_Gate, settings=settings, backends=mounted)
    return app


_SERVE_ENV = "LABELBRIDGE_SERVE"


def build_app(
    target: str,
    settings: Settings,
    *,
    class_name: str | None = None,
) -> FastAPI:
    """Load the model class from a backend folder (or module:Class) and serve it."""
    from pathlib import Path

    from labelbridge.loader import load_model_class, model_ref_for

    ref = model_ref_for(target)
    backend_dir = Path(ref) if Path(ref).is_dir() else None
    model_cls = load_model_class(ref, class_name)
    backend = Backend(model_cls, settings, model_ref=ref, backend_dir=backend_dir)
    return create_app(backend)


def app_from_env() -> FastAPI:
    """Factory for worker processes: the CLI passes its choices in one environment variable."""
    import json
    import os

    from labelbridge.logs import configure_logging

    spec = json.loads(os.environ[_SERVE_ENV])
    settings = Settings(**spec["overrides"])
    configure_logging(
        settings,
        backend_dir=spec.get("backend_dir") and __import__("pathlib").Path(spec["backend_dir"]),
    )
    return build_app(spec["target"], settings, class_name=spec.get("class_name"))
