"""The HTTP face of a `Backend`: Label Studio's ML protocol on FastAPI.

Routes are thin: parse the body in one pass (pydantic from bytes), call the backend, answer
with orjson. Errors of our tree become `{"error", "detail", "field", "fix"}` here and only here.
Several backends can share one server, each under its own URL prefix (Label Studio joins its
paths onto whatever backend URL it was given, so `http://host:9090/ner` works).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, TypeVar

import anyio
from fastapi import APIRouter, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import Receive, Scope, Send

from labelbridge import __version__
from labelbridge._environ import METRICS_DIR_ENV, REPLACEMENT_ENV, SERVE_ENV
from labelbridge._gate import (
    Gate,
    ORJSONResponse,
    authenticated,
    field_of,
    our_error,
    parse_raw,
    unexpected_error,
)
from labelbridge._gc import tune_for_serving
from labelbridge._pool import close_pool, pool_for
from labelbridge.errors import LabelBridgeError
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

#: how long a replacement worker waits for its model before it serves anyway
_REPLACEMENT_LOAD_WAIT = 3600.0
_BODY_MODELS: list[type[BaseModel]] = []


async def _parse(request: Request, model: type[M]) -> M:
    return parse_raw(await request.body(), model)


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


def make_router(backend: Backend) -> APIRouter:
    """The protocol's routes for one backend."""
    router = APIRouter()

    async def in_thread(func: Callable[..., Any], *args: Any) -> Any:
        return await pool_for(backend).run(func, *args)

    @router.get("/", include_in_schema=False)
    @router.get("/health", responses=_responses(HealthResponse))
    async def health(request: Request) -> ORJSONResponse:
        # anonymous callers (auth on) get states only
        return _json(backend.health(details=authenticated(request.scope)))

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
        trusted = authenticated(request.scope)
        return _json(await in_thread(lambda: backend.webhook(event, authenticated=trusted)))

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


class _App(FastAPI):
    """FastAPI behind our Gate: every request meets the gate first (auth, limits, metrics,
    logs, the /predict fast path) and only then FastAPI's own middleware stack and routes."""

    gate: Gate

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.gate(scope, receive, send)

    async def route_request(self, scope: Scope, receive: Receive, send: Send) -> None:
        await super().__call__(scope, receive, send)


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
    async def lifespan(this: FastAPI) -> Any:
        for backend in mounted.values():
            backend.start()
        if getattr(this.state, "serving_process", False):
            tune_for_serving(mounted.values())  # a worker process of its own (see _gc)
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
                close_pool(backend)

    app = _App(
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
        return our_error(exc)

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> ORJSONResponse:
        errors = exc.errors()
        field = field_of(errors[0]) if errors else "request"
        detail = "; ".join(f"{field_of(e)}: {e.get('msg')}" for e in errors[:5])
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
        return unexpected_error(exc, debug)

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
    app.gate = Gate(
        app.route_request,
        settings=settings,
        backends=mounted,
        rings=rings,
        known_paths=frozenset(known_paths),
    )
    return app


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

    spec = json.loads(os.environ[SERVE_ENV])
    settings = Settings(**spec["overrides"])
    backend_dir = Path(spec["backend_dir"]) if spec.get("backend_dir") else None
    configure_logging(settings, backend_dir=backend_dir)
    if spec.get("backends"):  # several models, each under /<name> (see labelbridge.multi)
        from labelbridge.multi import build_multi_app

        app = build_multi_app(spec["backends"], settings)
    else:
        app = build_app(spec["target"], settings, class_name=spec.get("class_name"))
    app.state.serving_process = True  # the process is ours alone: its GC may be tuned
    return app
