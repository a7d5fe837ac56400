"""The connector: call any ML backend exactly as Label Studio 1.23.2 does.

Why: the doctor, `labelbridge predict` and users' scripts must see what Label Studio sees (same
bodies, limits and failures), or "works here" would not mean "works from Label Studio". Each
call is defined once: its spec in `CALLS` (method, path, governing timeout, retry policy) and
a builder (`_setup` ...) that makes its body and parses its answer; `MLBackendClient` and
`AsyncMLBackendClient` only bind those builders to a sync or an async transport.

Timeouts (the connect phase is ML_CONNECTION_TIMEOUT for every call). The guide's list and the
observed Label Studio disagree on some; we follow what governs each call in Label Studio:

- health: ML_TIMEOUT_HEALTH; setup: ML_TIMEOUT_SETUP; predict: ML_TIMEOUT_PREDICT.
- train (legacy /train) and webhook (START_TRAINING): ML_TIMEOUT_PREDICT, as observed and as
  the guide's list says; ML_TIMEOUT_TRAIN exists but Label Studio never uses it.
- versions: ML_TIMEOUT_SETUP (observed; the guide does not list it).
- duplicate_model, delete, job_status: ML_TIMEOUT_DUPLICATE_MODEL, ML_TIMEOUT_DELETE,
  ML_TIMEOUT_TRAIN_JOB_STATUS (their names and observed 1 s defaults; the guide's list says
  PREDICT for them, which its own variable table contradicts).
- validate, metrics: ML_TIMEOUT_DEFAULT (Label Studio has no variable for them).

Retries (bounded, short backoff) only where a repeat is harmless: health, versions, job_status.
predict, train, setup and webhook are never retried: a repeat could predict or train twice, and
a slow backend would only be hit harder.
"""

from __future__ import annotations

import asyncio
import functools
import socket
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass
from typing import Any, Generic, ParamSpec, TypedDict, TypeVar, overload

import httpx
from typing_extensions import Unpack

from labelbridge import __version__
from labelbridge._wire import (
    _JSON,
    Predictions,
    ProjectRef,
    Task,
    _as_object,
    _decode,
    _encode,
    _Malformed,
    _parse_predict,
    _parse_setup,
    _parse_versions,
    project_uid,
)
from labelbridge.errors import BackendError, BackendHTTPError, BackendTimeout, BackendUnreachable
from labelbridge.protocol import VersionsResponse
from labelbridge.settings import ConnectorSettings

__all__ = [
    "CALLS",
    "DEFAULT_BATCH_SIZE",
    "DEFAULT_CONCURRENCY",
    "AsyncMLBackendClient",
    "BackendCallError",
    "BadAnswer",
    "CallHTTPError",
    "CallInfo",
    "CallSpec",
    "CallTimeout",
    "CallUnreachable",
    "ClientOptions",
    "MLBackendClient",
    "Predictions",
    "project_uid",
]

T = TypeVar("T")
P = ParamSpec("P")

DEFAULT_USER_AGENT = f"labelbridge/{__version__}"


# --- the calls ----------------------------------------------------------------------------
@dataclass(frozen=True)
class CallSpec:
    """One request of the protocol, as Label Studio makes it."""

    name: str
    method: str
    path: str
    timeout: str  # the ConnectorSettings field that governs it
    retry: bool = False

    @property
    def variable(self) -> str:
        return f"ML_{self.timeout.upper()}"

    @property
    def label(self) -> str:
        return f"{self.method} {self.path}"


CALLS: dict[str, CallSpec] = {
    s.name: s
    for s in (
        CallSpec("health", "GET", "/health", "timeout_health", retry=True),
        CallSpec("setup", "POST", "/setup", "timeout_setup"),
        CallSpec("predict", "POST", "/predict", "timeout_predict"),
        CallSpec("train", "POST", "/train", "timeout_predict"),
        CallSpec("webhook", "POST", "/webhook", "timeout_predict"),
        CallSpec("versions", "GET", "/versions", "timeout_setup", retry=True),
        CallSpec("job_status", "POST", "/job_status", "timeout_train_job_status", retry=True),
        CallSpec("duplicate_model", "POST", "/duplicate_model", "timeout_duplicate_model"),
        CallSpec("delete", "POST", "/delete", "timeout_delete"),
        CallSpec("validate", "POST", "/validate", "timeout_default"),
        CallSpec("metrics", "GET", "/metrics", "timeout_default"),
    )
}

_BACKGROUND = "answer at once and do the work in a background job"
_SLOW_HINTS = {
    "health": "make /health answer at once, even while the model loads",
    "setup": "make setup faster (Label Studio calls it before nearly every action: cache per "
    "project, never load a model in it)",
    "predict": "make predict faster or send fewer tasks per request",
    "train": _BACKGROUND,
    "webhook": _BACKGROUND,
}


# --- errors -------------------------------------------------------------------------------
@dataclass(frozen=True)
class CallInfo:
    """The facts about one failed call, for the doctor and the CLI (never credentials)."""

    call: str  # "setup"
    request: str  # "POST /setup"
    url: str
    reason: str  # timeout, connect_timeout, refused, dns, connect, disconnected, http, bad_answer
    elapsed: float  # seconds, last attempt
    attempts: int = 1
    variable: str | None = None  # the setting whose limit was hit
    limit: float | None = None  # seconds
    status: int | None = None  # HTTP status
    body: Any = None  # the backend's answer: JSON, or text cut short


class BackendCallError(BackendError):
    """Base of the connector's errors: a labelbridge.errors class plus the call's facts."""

    def __init__(self, detail: str, *, fix: str | None, info: CallInfo) -> None:
        super().__init__(detail, fix=fix)
        self.info = info
        self.call: str = info.call
        self.request: str = info.request
        self.url: str = info.url
        self.reason: str = info.reason
        self.elapsed: float = info.elapsed
        self.attempts: int = info.attempts
        self.variable: str | None = info.variable
        self.limit: float | None = info.limit
        self.status: int | None = info.status
        self.body: Any = info.body

    @property
    def error(self) -> str:
        """The public class name from labelbridge.errors (BackendTimeout ...)."""
        return next(c.__name__ for c in type(self).__mro__ if c.__module__ == "labelbridge.errors")

    def to_dict(self) -> dict[str, Any]:
        return {**super().to_dict(), "call": asdict(self.info)}


class CallTimeout(BackendCallError, BackendTimeout):
    """No connection or no answer within the limit (`variable`, `limit`)."""


class CallUnreachable(BackendCallError, BackendUnreachable):
    """No answer at all: refused, unknown host, connection dropped (`reason`)."""


class CallHTTPError(BackendCallError, BackendHTTPError):
    """A non-2xx answer (`status`; the backend's JSON in `body`)."""


class BadAnswer(BackendCallError):
    """A 2xx answer that breaks the protocol: not JSON, wrong shape, wrong result count."""


_LOCAL_HOSTS = {"localhost", "127.0.0.1", "::1", "0.0.0.0"}


def _docker_hint(host: str) -> str:
    if host not in _LOCAL_HOSTS and not host.startswith("127."):
        return ""
    return (
        f". If Label Studio (or this command) runs in Docker, {host} is that container itself: "
        "use http://host.docker.internal:<port> (on Linux add `extra_hosts: "
        '["host.docker.internal:host-gateway"]`) or the Compose service name'
    )


_HTTP_FIXES = {
    401: "the backend wants credentials: pass auth=(user, password) (labelbridge predict "
    "--user/--password), the ones set in Label Studio's ML backend settings",
    413: "send fewer tasks per request (smaller batches) or raise the backend's body limit",
    503: "the backend is not ready (model still loading?): retry in a moment",
    500: "see the backend's log (logs/uwsgi.log in production, the console in development)",
    300: "use the URL the backend redirects to (http or https, path)",
}


def _http_fix(status: int, base_url: str, path: str) -> str:
    if status in (404, 405):
        return (
            f"{base_url} has no {path}: check the URL (no extra path) and that it is an ML backend"
        )
    key = 401 if status == 403 else status if status in _HTTP_FIXES else status // 100 * 100
    return _HTTP_FIXES.get(key, "the backend refused the request: see its message")


def _backend_message(body: Any) -> str:
    """The backend's own error text: our {"error", "detail"} shape or common others."""
    if isinstance(body, dict):
        detail = body.get("detail") or body.get("message")
        parts = [str(p)[:500] for p in (body.get("error"), detail) if p]
        return ": ".join(parts)
    return body.strip()[:200] if isinstance(body, str) else ""


_UNREACHABLE = {  # reason: (detail, fix)
    "dns": (
        "{label}: host name {host!r} not found (DNS)",
        "check the host name in the URL; Compose service names resolve only inside their "
        "Docker network (from the host use localhost and the published port)",
    ),
    "refused": (
        "{label}: connection refused by {url}",
        "start the backend (labelbridge start ...) and check host and port",
    ),
    "connect": (
        "{label}: cannot connect to {url}: {exc}",
        "check the URL, the network and proxy settings (HTTP_PROXY, NO_PROXY)",
    ),
    "disconnected": (
        "{label}: {url} dropped the connection: {exc!r}",
        "see the backend's log: did it crash, run out of memory, lose a worker?",
    ),
}


_RETRYABLE = ("timeout", "connect_timeout", "refused", "disconnected")


def _has_cause(exc: BaseException | None, kind: type[BaseException]) -> bool:
    for _ in range(20):  # a chain of causes, bounded
        if exc is None or isinstance(exc, kind):
            return exc is not None
        exc = exc.__cause__ or exc.__context__
    return False


@dataclass(frozen=True)
class _Call(Generic[T]):
    spec: CallSpec
    body: Any
    parse: Callable[[Any], T]


class PredictOptions(TypedDict, total=False):
    project: ProjectRef | None
    label_config: str | None
    context: Mapping[str, Any] | None
    login: str | None
    password: str | None


# Each call's body, exactly as Label Studio 1.23.2 sends it, and its parser. These functions
# are the API: both clients expose each as a method with the same signature and docstring.
def _health() -> _Call[dict[str, Any]]:
    """GET /health: Label Studio needs a 2xx JSON answer; returns it as an object."""
    return _Call(CALLS["health"], None, _as_object)


def _setup(
    project: ProjectRef,
    label_config: str,
    *,
    hostname: str | None = None,
    access_token: str | None = None,
    extra_params: Mapping[str, Any] | str | None = None,
    model_version: str | None = None,
) -> _Call[str | None]:
    """POST /setup; returns the backend's model_version (None if it gives none)."""
    body: dict[str, Any] = {
        "project": project_uid(project),
        "schema": label_config,
        "hostname": hostname,
        "access_token": access_token,
        "extra_params": dict(extra_params) if isinstance(extra_params, Mapping) else extra_params,
    }
    if model_version is not None:  # Label Studio 1.23.2 does not send it; older ones did
        body["model_version"] = model_version
    return _Call(CALLS["setup"], body, _parse_setup)


def _predict(
    tasks: Sequence[Task],
    *,
    project: ProjectRef | None = None,
    label_config: str | None = None,
    context: Mapping[str, Any] | None = None,
    login: str | None = None,
    password: str | None = None,
) -> _Call[Predictions]:
    """POST /predict with all `tasks` in one request; see Predictions for the answer."""
    body = {
        "tasks": [dict(task) for task in tasks],
        "project": None if project is None else project_uid(project),
        "label_config": label_config,
        "params": {
            "login": login,
            "password": password,
            "context": None if context is None else dict(context),
        },
    }
    return _Call(CALLS["predict"], body, _parse_predict)


def _predict_exact(tasks: Sequence[Task], **options: Unpack[PredictOptions]) -> _Call[Predictions]:
    """predict(), but BadAnswer unless the answer has exactly one result per task."""
    call = _predict(tasks, **options)
    return _Call(call.spec, call.body, functools.partial(_parse_predict, expect=len(tasks)))


def _train(
    annotations: Sequence[Task],
    *,
    project: ProjectRef,
    label_config: str,
    params: Mapping[str, Any] | None = None,
) -> _Call[dict[str, Any]]:
    """Legacy POST /train (tasks with annotations); the answer may carry `job`."""
    body = {
        "annotations": [dict(a) for a in annotations],
        "project": project_uid(project),
        "label_config": label_config,
        "params": dict(params) if params is not None else {"login": None, "password": None},
    }
    return _Call(CALLS["train"], body, _as_object)


def _webhook(action: str, payload: Mapping[str, Any]) -> _Call[dict[str, Any]]:
    """POST /webhook {"action": action, **payload}."""
    return _Call(CALLS["webhook"], {"action": action, **payload}, _as_object)


def _start_training(project_obj: Mapping[str, Any]) -> _Call[dict[str, Any]]:
    """What "Start Training" sends: START_TRAINING with the whole project object."""
    return _webhook("START_TRAINING", {"project": dict(project_obj)})


def _versions() -> _Call[VersionsResponse]:
    """GET /versions; keys other backends add are dropped."""
    return _Call(CALLS["versions"], None, _parse_versions)


def _job_status(job: str) -> _Call[dict[str, Any]]:
    """POST /job_status; raw, since job queues name their states differently."""
    return _Call(CALLS["job_status"], {"job": job}, _as_object)


def _duplicate_model(src: ProjectRef, dst: ProjectRef) -> _Call[dict[str, Any]]:
    """POST /duplicate_model {"project_src", "project_dst"}."""
    body = {"project_src": project_uid(src), "project_dst": project_uid(dst)}
    return _Call(CALLS["duplicate_model"], body, _as_object)


def _delete(project: ProjectRef) -> _Call[dict[str, Any]]:
    """POST /delete {"project"}."""
    return _Call(CALLS["delete"], {"project": project_uid(project)}, _as_object)


def _validate(config: str) -> _Call[dict[str, Any]]:
    """POST /validate {"config"}."""
    return _Call(CALLS["validate"], {"config": config}, _as_object)


def _metrics() -> _Call[str]:
    """GET /metrics: Prometheus text (a labelbridge addition)."""
    return _Call(CALLS["metrics"], None, str)


#: predict_batches' defaults: 64 tasks per request (as `labelbridge predict`), 3 requests in
#: flight. Measured with examples/sentiment on one server worker (bench/run.py's batch section):
#: a second request lets the backend work on one batch while this side reads the last and sends
#: the next; a third one was 2-5% faster on a quiet machine and 15-30% faster when other work
#: shared the cores (it absorbs the client's or the server's stalls); a fourth gained nothing.
DEFAULT_BATCH_SIZE = 64
DEFAULT_CONCURRENCY = 3


def _batches(tasks: Sequence[Task], size: int) -> Iterator[list[Task]]:
    if size < 1:
        raise ValueError("batch_size must be at least 1")
    for start in range(0, len(tasks), size):
        yield list(tasks[start : start + size])


def _in_flight(concurrency: int) -> int:
    if isinstance(concurrency, bool) or not isinstance(concurrency, int) or concurrency < 1:
        raise ValueError(f"concurrency must be an integer of at least 1, not {concurrency!r}")
    return concurrency


# --- the shared core ----------------------------------------------------------------------
@dataclass(frozen=True)
class _Reply:
    data: Any
    elapsed: float
    attempts: int


class ClientOptions(TypedDict, total=False):
    """Options of both clients. Limits: `settings` (default: ConnectorSettings(), read from the
    ML_* environment when the client is made) and overrides named like its fields."""

    settings: ConnectorSettings
    auth: tuple[str, str] | None  # HTTP basic auth, as set in Label Studio's ML backend settings
    headers: Mapping[str, str]  # added to every request
    user_agent: str  # default labelbridge/<version>; Label Studio sends heartex/<version>
    retries: int  # extra attempts for the safe calls (health, versions, job_status); default 2
    backoff: float  # seconds before the first retry, doubled each time; default 0.2
    verify: bool | str  # TLS verification, or a CA bundle path
    transport: httpx.BaseTransport | httpx.AsyncBaseTransport  # for tests and proxies
    connection_timeout: float
    timeout_default: float
    timeout_train: float
    timeout_predict: float
    timeout_health: float
    timeout_setup: float
    timeout_duplicate_model: float
    timeout_delete: float
    timeout_train_job_status: float


class _Method(Generic[P, T]):
    """Binds a request builder to a client: same signature and docstring. The sync client's
    _run returns the parsed answer, the async client's a coroutine of it."""

    def __init__(self, build: Callable[P, _Call[T]]) -> None:
        self.build, self.name, self.__doc__ = build, build.__name__, build.__doc__

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    @overload
    def __get__(self, client: None, owner: type) -> _Method[P, T]: ...
    @overload
    def __get__(self, client: MLBackendClient, owner: type) -> Callable[P, T]: ...
    @overload
    def __get__(
        self, client: AsyncMLBackendClient, owner: type
    ) -> Callable[P, Coroutine[Any, Any, T]]: ...
    def __get__(self, client: _Core | None, owner: type) -> Any:
        if client is None:
            return self
        build, run = self.build, client._run

        @functools.wraps(build)
        def method(*args: P.args, **kwargs: P.kwargs) -> Any:
            return run(build(*args, **kwargs))

        method.__name__ = method.__qualname__ = self.name
        return method


class _Core:
    """Everything but I/O, and the calls, declared once for both clients (see _Method)."""

    health = _Method(_health)
    setup = _Method(_setup)
    predict = _Method(_predict)
    predict_exact = _Method(_predict_exact)
    train = _Method(_train)
    webhook = _Method(_webhook)
    start_training = _Method(_start_training)
    versions = _Method(_versions)
    job_status = _Method(_job_status)
    duplicate_model = _Method(_duplicate_model)
    delete = _Method(_delete)
    validate = _Method(_validate)
    metrics = _Method(_metrics)

    def __init__(self, url: str, **options: Unpack[ClientOptions]) -> None:
        parsed = httpx.URL(url.strip())
        if parsed.scheme not in ("http", "https") or not parsed.host:
            raise ValueError(f"backend URL {url!r} must look like http://host:port")
        base = options.get("settings") or ConnectorSettings()
        limits = {k: v for k, v in options.items() if k in ConnectorSettings.model_fields}
        self.settings = ConnectorSettings.model_validate({**base.model_dump(), **limits})
        auth = options.get("auth")
        if auth is None and parsed.username:
            auth = (parsed.username, parsed.password)
        # credentials in the URL never reach messages
        self.base_url = str(parsed.copy_with(username=None, password=None, query=None)).rstrip("/")
        self.host = parsed.host
        self.auth = auth
        self.headers = {"User-Agent": options.get("user_agent", DEFAULT_USER_AGENT)}
        self.headers.update(options.get("headers") or {})
        self.retries = max(0, options.get("retries", 2))
        self.backoff = options.get("backoff", 0.2)
        self._open(options.get("verify", True), options.get("transport"))

    def _open(self, verify: bool | str, transport: Any) -> None:
        raise NotImplementedError

    def _run(self, call: _Call[T]) -> Any:
        """The parsed answer (sync client) or a coroutine of it (async client)."""
        raise NotImplementedError

    def _request(self, spec: CallSpec, body: Any) -> dict[str, Any]:
        """httpx request() arguments: the same for both transports."""
        limit = float(getattr(self.settings, spec.timeout))
        timeout = httpx.Timeout(limit, connect=self.settings.connection_timeout)
        auth = httpx.BasicAuth(*self.auth) if self.auth else None
        url = self.base_url + spec.path
        request = {"method": spec.method, "url": url, "timeout": timeout, "auth": auth}
        if body is not None:  # a GET has no body, as from Label Studio
            request.update(content=_encode(body), headers=_JSON)
        return request

    def _retry_delay(
        self, exc: httpx.TransportError, spec: CallSpec, start: float, attempt: int
    ) -> float:
        """Seconds to wait before the next attempt, or raise the classified error."""
        error = self._transport_error(exc, spec, time.monotonic() - start, attempt)
        if spec.retry and attempt <= self.retries and error.reason in _RETRYABLE:
            return self.backoff * (2 ** (attempt - 1))
        raise error from exc

    def _reply(
        self, response: httpx.Response, spec: CallSpec, start: float, attempt: int
    ) -> _Reply:
        elapsed = time.monotonic() - start
        return _Reply(self._answer(response, spec, elapsed, attempt), elapsed, attempt)

    def _info(
        self, spec: CallSpec, reason: str, elapsed: float, attempts: int, **kw: Any
    ) -> CallInfo:
        url = self.base_url + spec.path
        return CallInfo(spec.name, spec.label, url, reason, round(elapsed, 3), attempts, **kw)

    def _transport_error(
        self, exc: httpx.TransportError, spec: CallSpec, elapsed: float, attempts: int
    ) -> BackendCallError:
        """Tell apart: timeout, connect timeout, refused, unknown host, dropped connection."""
        tries = f" ({attempts} attempts)" if attempts > 1 else ""
        info = functools.partial(self._info, spec, elapsed=elapsed, attempts=attempts)
        if isinstance(exc, httpx.ConnectTimeout):
            limit, var = self.settings.connection_timeout, "ML_CONNECTION_TIMEOUT"
            return CallTimeout(
                f"{spec.label} could not connect to {self.host} within {limit} s ({var}){tries}",
                fix=f"check that the host is up and no firewall drops the port; raise {var} "
                "only for slow networks",
                info=info("connect_timeout", variable=var, limit=limit),
            )
        if isinstance(exc, httpx.TimeoutException):
            limit, var = float(getattr(self.settings, spec.timeout)), spec.variable
            hint = _SLOW_HINTS.get(spec.name, f"make {spec.name} faster")
            return CallTimeout(
                f"{spec.label} timed out after {limit} s ({var}){tries}",
                fix=f"raise {var} (here and in Label Studio's environment) or {hint}",
                info=info("timeout", variable=var, limit=limit),
            )
        if not isinstance(exc, httpx.ConnectError):
            reason = "disconnected"
        elif _has_cause(exc, socket.gaierror):
            reason = "dns"
        else:
            reason = "refused" if _has_cause(exc, ConnectionRefusedError) else "connect"
        detail, fix = _UNREACHABLE[reason]
        where = {"label": spec.label, "host": self.host, "url": self.base_url, "exc": exc}
        fix += _docker_hint(self.host) if reason == "refused" else ""
        return CallUnreachable(detail.format(**where) + tries, fix=fix, info=info(reason))

    def _answer(
        self, response: httpx.Response, spec: CallSpec, elapsed: float, attempts: int
    ) -> Any:
        """A 2xx answer's JSON (text for metrics), else a structured error."""
        status = response.status_code
        if not 200 <= status < 300:
            text = response.text
            try:
                body: Any = response.json()
            except ValueError:
                body = text[:2000]
            detail = f"{spec.label} answered {status} {response.reason_phrase}".rstrip()
            if message := _backend_message(body):
                detail += f": {message}"
            if 300 <= status < 400 and "location" in response.headers:
                detail += f" (redirect to {response.headers['location']})"
            own_fix = body.get("fix") if isinstance(body, dict) else None
            fix = str(own_fix) if own_fix else _http_fix(status, self.base_url, spec.path)
            info = self._info(spec, "http", elapsed, attempts, status=status, body=body)
            raise CallHTTPError(detail, fix=fix, info=info)
        if spec.name == "metrics":
            return response.text
        try:
            return _decode(response)
        except ValueError:
            text = response.text
            info = self._info(
                spec, "bad_answer", elapsed, attempts, status=status, body=text[:2000]
            )
            detail = f"{spec.label} answered {status} but not with JSON: {text[:120]!r}"
            fix = "Label Studio needs a JSON answer: return a JSON object"
            raise BadAnswer(detail, fix=fix, info=info) from None

    def _finish(self, call: _Call[T], reply: _Reply) -> T:
        try:
            return call.parse(reply.data)
        except _Malformed as exc:
            spec, fix = call.spec, "make the backend's answer follow the protocol"
            info = self._info(spec, "bad_answer", reply.elapsed, reply.attempts, body=reply.data)
            raise BadAnswer(f"{spec.label} answer {exc}", fix=fix, info=info) from None


class MLBackendClient(_Core):
    """Synchronous client; options in ClientOptions, limits in the module docstring."""

    def _open(self, verify: bool | str, transport: Any) -> None:
        if transport is not None and not isinstance(transport, httpx.BaseTransport):
            raise TypeError("MLBackendClient needs a sync transport (httpx.BaseTransport)")
        self._http = httpx.Client(headers=self.headers, verify=verify, transport=transport)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> MLBackendClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _send(self, spec: CallSpec, body: Any) -> _Reply:
        attempt = 0
        while True:
            attempt, start = attempt + 1, time.monotonic()
            try:
                response = self._http.request(**self._request(spec, body))
            except httpx.TransportError as exc:
                time.sleep(self._retry_delay(exc, spec, start, attempt))
                continue
            return self._reply(response, spec, start, attempt)

    def _run(self, call: _Call[T]) -> T:
        return self._finish(call, self._send(call.spec, call.body))

    def predict_batches(
        self,
        tasks: Sequence[Task],
        *,
        batch_size: int = DEFAULT_BATCH_SIZE,
        concurrency: int = DEFAULT_CONCURRENCY,
        **options: Unpack[PredictOptions],
    ) -> Iterator[tuple[list[Task], Predictions]]:
        """Predict many tasks: yields (batch, its Predictions) for each `batch_size` tasks, in
        order, with up to `concurrency` /predict requests in flight (a small thread pool), so
        the backend works on the next batches while you handle one. Each batch is a
        predict_exact() call: BadAnswer unless it gets one result per task; the first failure
        in order is raised as that call raises it (CallTimeout, CallHTTPError ...), once the
        requests still in flight have ended. concurrency=1: one request after the other."""
        batches = _batches(tasks, batch_size)
        limit = _in_flight(concurrency)
        if limit == 1:
            for batch in batches:
                yield batch, self.predict_exact(batch, **options)
            return
        window: deque[tuple[list[Task], Future[Predictions]]] = deque()
        pool = ThreadPoolExecutor(limit, thread_name_prefix="labelbridge-predict")
        try:
            for batch in batches:
                if len(window) < limit:
                    window.append((batch, pool.submit(self.predict_exact, batch, **options)))
                    continue
                done, answer = window.popleft()
                result = answer.result()
                window.append((batch, pool.submit(self.predict_exact, batch, **options)))
                yield done, result
            while window:
                done, answer = window.popleft()
                yield done, answer.result()
        finally:  # an error, or the caller stopped early: send no more, let the rest end
            for _, answer in window:
                answer.cancel()
            pool.shutdown(wait=True)


class AsyncMLBackendClient(_Core):
    """The asyncio twin of MLBackendClient: same calls, limits and errors."""

    def _open(self, verify: bool | str, transport: Any) -> None:
        if transport is not None and not isinstance(transport, httpx.AsyncBaseTransport):
            raise TypeError("AsyncMLBackendClient needs an httpx.AsyncBaseTransport")
        self._http = httpx.AsyncClient(headers=self.headers, verify=verify, transport=transport)

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> AsyncMLBackendClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def _send(self, spec: CallSpec, body: Any) -> _Reply:
        attempt = 0
        while True:
            attempt, start = attempt + 1, time.monotonic()
            try:
                response = await self._http.request(**self._request(spec, body))
            except httpx.TransportError as exc:
                await asyncio.sleep(self._retry_delay(exc, spec, start, attempt))
                continue
            return self._reply(response, spec, start, attempt)

    async def _run(self, call: _Call[T]) -> T:
        return self._finish(call, await self._send(call.spec, call.body))

    async def predict_batches(
        self,
        tasks: Sequence[Task],
        *,
        batch_size: int = DEFAULT_BATCH_SIZE,
        concurrency: int = DEFAULT_CONCURRENCY,
        **options: Unpack[PredictOptions],
    ) -> AsyncIterator[tuple[list[Task], Predictions]]:
        """MLBackendClient.predict_batches for asyncio: (batch, Predictions) in order, up to
        `concurrency` requests in flight (asyncio tasks); on the first failure in order, or
        when the caller stops early, the requests still in flight are cancelled."""
        batches = _batches(tasks, batch_size)
        limit = _in_flight(concurrency)
        if limit == 1:
            for batch in batches:
                yield batch, await self.predict_exact(batch, **options)
            return
        window: deque[tuple[list[Task], asyncio.Future[Predictions]]] = deque()
        try:
            for batch in batches:
                if len(window) < limit:
                    window.append(
                        (batch, asyncio.ensure_future(self.predict_exact(batch, **options)))
                    )
                    continue
                done, answer = window.popleft()
                result = await answer
                window.append((batch, asyncio.ensure_future(self.predict_exact(batch, **options))))
                yield done, result
            while window:
                done, answer = window.popleft()
                yield done, await answer
        finally:
            for _, answer in window:
                answer.cancel()
            await asyncio.gather(*(answer for _, answer in window), return_exceptions=True)
