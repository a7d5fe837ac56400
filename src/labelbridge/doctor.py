"""Label Studio's ML troubleshooting guide as checks that measure, one `Check` per line.

Why: each problem the guide lists (Disconnected, "Error. Click here for details", wrong or no
predictions, unreadable assets, missing packages) has a cause measurable from outside. Backend
calls go through `labelbridge.client`, so limits and failures are exactly Label Studio's (ML_*).
Checks return data, the CLI prints; a check that crashes is a failed line, not a lost report.
"""

from __future__ import annotations

import functools
import ipaddress
import itertools
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Literal, TypeVar
from urllib.parse import urlsplit

import httpx

from labelbridge import client as connector
from labelbridge import errors
from labelbridge._procs import BackendProcess, find_backend_process, missing_in
from labelbridge.label_config import LabelConfig
from labelbridge.labelstudio import LabelStudio, redact_url
from labelbridge.loader import describe_missing_requirements
from labelbridge.settings import ConnectorSettings, Settings
from labelbridge.validation import validate_prediction

__all__ = ["STATUSES", "BackendProcess", "Check", "Doctor", "find_backend_process", "run_checks"]

Status = Literal["pass", "warn", "fail", "skip"]
STATUSES: tuple[Status, ...] = ("pass", "warn", "fail", "skip")
T = TypeVar("T")

#: the project id sent to /setup and /predict when no Label Studio project is given
DOCTOR_PROJECT = 0
_LOOPBACK = {"localhost", "ip6-localhost", "::1", "0.0.0.0"}
_LOCAL_ALIASES = _LOOPBACK | {"host.docker.internal"}
#: object tags whose value is a URL that Label Studio and the backend must fetch
_URL_TAGS = {"Image", "Audio", "AudioPlus", "Video", "TimeSeries", "Pdf", "PDF"}
_URL_PREFIXES = ("http://", "https://", "/data/", "s3://", "gs://", "gcs://", "azure-blob://")
_MAX_ASSETS = 10
_SHOWN = 20
_DOCKER_FIX = (
    "inside Docker, localhost is the container: connect http://host.docker.internal:{port} "
    "(Linux: --add-host=host.docker.internal:host-gateway), or put both on one Docker network "
    "and use the service name (http://ml-backend:{port})"
)
_RESERVED_FIX = (
    "Label Studio refuses them ('URL resolves to a reserved network address') unless started "
    "with ML_BLOCK_LOCAL_IP=false SSRF_PROTECTION_ENABLED=false"
)
_UNREACHABLE = {  # reason: (what was measured, fix)
    "refused": (
        "connection refused at {host}:{port}: nothing listens there",
        "start the backend (labelbridge start <folder> --port {port}) or fix the URL's port",
    ),
    "dns": (
        "host name {host!r} does not resolve (DNS)",
        "check the name; Compose service names resolve only inside their Docker network",
    ),
    "connect_timeout": (
        "no connection to {host}:{port} within {limit:g} s (ML_CONNECTION_TIMEOUT)",
        "the host is down or a firewall drops the port: check both",
    ),
}
_CHEAP_SETUP = "Label Studio calls /setup before nearly every action: cache it, load no model in it"
_NO_VERSION = "return a model_version from /setup (Label Studio refuses predictions without)"
_SLOW_HEALTH = "make /health answer at once (no model work in it), or raise ML_TIMEOUT_HEALTH"


@dataclass
class Check:
    """One line of the checklist: what was measured and, unless it passed, the one-line fix."""

    name: str
    status: Status
    measured: str
    fix: str | None = None
    details: list[str] = field(default_factory=list)
    data: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _ok(name: str, what: str, **data: Any) -> Check:
    return Check(name, "pass", what, data=data)


def _warn(name: str, what: str, fix: str, *, details: Sequence[str] = (), **d: Any) -> Check:
    return Check(name, "warn", what, fix, list(details), d)


def _fail(name: str, what: str, fix: str | None, *, details: Sequence[str] = (), **d: Any) -> Check:
    return Check(name, "fail", what, fix or "see the backend's log", list(details), d)


def _skip(name: str, why: str) -> Check:
    return Check(name, "skip", why)


def _dur(seconds: float) -> str:
    return f"{seconds * 1000:.0f} ms" if seconds < 1 else f"{seconds:.2f} s"


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def _timed(call: Callable[[], T]) -> tuple[T | None, connector.BackendCallError | None, float]:
    """(answer, error, seconds): a backend call measured, its failure kept as data."""
    began = time.perf_counter()
    try:
        return call(), None, time.perf_counter() - began
    except connector.BackendCallError as exc:
        return None, exc, time.perf_counter() - began


# --- addresses and Docker -----------------------------------------------------------------
def _host_port(url: str) -> tuple[str, int]:
    parts = urlsplit(url)
    return (parts.hostname or "").lower(), parts.port or (443 if parts.scheme == "https" else 80)


def _address_kind(host: str) -> str | None:
    """loopback, private (incl. link-local) or public; None when the name does not resolve."""
    if host in _LOOPBACK or host.startswith("127."):
        return "loopback"
    try:
        infos = socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)
        ips = [ipaddress.ip_address(str(i[4][0]).split("%", 1)[0]) for i in infos]
    except (OSError, ValueError, UnicodeError):
        return None
    if any(ip.is_loopback for ip in ips):
        return "loopback"
    return "private" if any(ip.is_private or ip.is_link_local for ip in ips) else "public"


def _docker_label_studio() -> str | None:
    """The name of a running Label Studio container on this machine, if Docker says so."""
    docker = shutil.which("docker")
    if docker is None:
        return None
    command = [docker, "ps", "--format", "{{.Image}} {{.Names}}"]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=3, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    for line in done.stdout.splitlines() if done.returncode == 0 else []:
        if "label-studio" in line.split(" ", 1)[0]:
            return line.split(" ", 1)[-1]
    return None


def network_hints(
    backend: str, label_studio: str | None, *, docker: str | None = None
) -> list[tuple[str, str]]:
    """(problem, fix) pairs: why Label Studio may not reach a backend that this machine reaches."""
    host, port = _host_port(backend)
    kind = _address_kind(host)
    ls_kind = _address_kind(_host_port(label_studio)[0]) if label_studio else None
    hints: list[tuple[str, str]] = []
    if kind == "loopback" and (docker or (label_studio and ls_kind != "loopback")):
        where = f"Label Studio runs in Docker ({docker})" if docker else "Label Studio is elsewhere"
        hints.append((f"{where}, but --backend is {host}", _DOCKER_FIX.format(port=port)))
    if label_studio and kind in ("loopback", "private") and ls_kind in ("loopback", "private"):
        hints.append((f"the backend is on a {kind} address", _RESERVED_FIX))
    return hints


def _is_local(host: str) -> bool:
    return host in _LOCAL_ALIASES or host.startswith("127.")


def _same_backend(a: str, b: str) -> bool:
    """Same backend seen from two sides: equal URLs, or the same port on local aliases."""
    (ha, pa), (hb, pb) = _host_port(a), _host_port(b)
    same_path = urlsplit(a).path.rstrip("/") == urlsplit(b).path.rstrip("/")
    return pa == pb and same_path and (ha == hb or (_is_local(ha) and _is_local(hb)))


# --- the checks ---------------------------------------------------------------------------
class Doctor:
    """Runs the checklist against one backend; `run()` returns one `Check` per line.

    Facts a check learns (the health answer, the config, the sample tasks, the project) are
    kept on the instance for the checks after it; a check that cannot run says why (skip).
    `train=False` keeps the doctor from sending START_TRAINING (it starts a real job).
    """

    NEED_BACKEND = {"health", "setup", "predict", "versions"}

    def __init__(
        self,
        backend: str,
        *,
        label_config: str | None = None,
        tasks: Sequence[Mapping[str, Any]] | None = None,
        label_studio: str | None = None,
        token: str | None = None,
        project: int | None = None,
        backend_dir: Path | None = None,
        train: bool = True,
        sample: int = 10,
        train_wait: float = 2.0,
        settings: ConnectorSettings | None = None,
    ) -> None:
        self.backend = backend.strip().rstrip("/")
        self.config_text, self.config_source = label_config, "--config"
        self.tasks = [dict(t) for t in tasks] if tasks is not None else None
        self.total_tasks = len(self.tasks) if self.tasks is not None else None
        self.ls_url = label_studio.strip().rstrip("/") if label_studio else None
        self.token, self.project, self.backend_dir = token or None, project, backend_dir
        self.train, self.sample_size, self.train_wait = train, max(1, sample), train_wait
        self.settings = settings or ConnectorSettings()
        self.project_ref = connector.project_uid(DOCTOR_PROJECT if project is None else project)
        # facts learned along the way
        self.client: connector.MLBackendClient | None = None
        self.ls: LabelStudio | None = None
        self.project_obj: dict[str, Any] | None = None
        self.annotation_count: int | None = None
        self.registered: list[dict[str, Any]] | None = None
        self.registered_error: str | None = None
        self.unreachable = False
        self.health: dict[str, Any] | None = None
        self.health_error: connector.BackendCallError | None = None
        self.health_elapsed = 0.0
        self.config: LabelConfig | None = None
        self.setup_version: str | None = None
        self.sample: list[dict[str, Any]] = []
        self.predictions: connector.Predictions | None = None
        self.predict_elapsed = 0.0

    def _mine(self) -> list[dict[str, Any]]:
        """The project's registered ML backends that are this --backend."""
        return [b for b in self.registered or [] if _same_backend(str(b.get("url")), self.backend)]

    def _limit(self, call: str) -> tuple[float, str]:
        spec = connector.CALLS[call]
        limit = float(getattr(self.settings, spec.timeout))
        return limit, f"limit {limit:g} s, {spec.variable}"

    @property
    def _client(self) -> connector.MLBackendClient:
        assert self.client is not None
        return self.client

    def run(self) -> list[Check]:
        try:
            self.client = connector.MLBackendClient(self.backend, settings=self.settings)
        except ValueError as exc:
            return [_fail("reachable", str(exc), "give the backend's URL as http://host:port")]
        results: list[Check] = []
        try:
            for step in [m[6:] for m in vars(Doctor) if m.startswith("check_")]:  # in order
                name = step.replace("_", "-")
                try:
                    if self.unreachable and step in self.NEED_BACKEND:
                        result = _skip(name, "the backend is unreachable")
                    else:
                        result = getattr(self, f"check_{step}")()
                except Exception as exc:  # a bug in one check must not hide the others
                    what = f"the check itself failed: {type(exc).__name__}: {exc}"
                    result = _fail(name, what, "report it as a labelbridge bug")
                if result is not None:
                    results.append(result)
        finally:
            self.client.close()
            if self.ls is not None:
                self.ls.close()
        return results

    # --- Label Studio: the project, its config, tasks and backends
    def check_label_studio(self) -> Check | None:
        name = "label-studio"
        if not self.ls_url:
            return None
        if not self.token:
            fix = "pass --token (Account & Settings > Personal Access Token)"
            return _warn(name, f"{self.ls_url}: no token, so its API and files are closed", fix)
        self.ls = ls = LabelStudio(self.ls_url, self.token, timeout=httpx.Timeout(15, connect=5))
        try:
            user = ls.whoami()
            who = f"{self.ls_url} accepts the {ls.auth.kind if ls.auth else ''} token"
            who += f" ({user.get('email') or user.get('id')})"
            if self.project is None:
                return _ok(name, f"{who}; no --project, so project checks are skipped")
            project = ls.get_project(self.project)
            params = {"project": self.project, "page_size": self.sample_size, "fields": "all"}
            page = ls.request("GET", "/api/tasks/", params=params).json()
            page = {"tasks": page} if isinstance(page, list) else page  # very old versions
        except (errors.LabelStudioError, ValueError) as exc:
            self.ls = None
            ls.close()
            return _fail(name, str(getattr(exc, "detail", exc)), getattr(exc, "fix", None))
        self.project_obj = project
        try:
            created = datetime.fromisoformat(str(project.get("created_at")).replace("Z", "+00:00"))
            self.project_ref = connector.project_uid(self.project, created)
        except ValueError:
            pass
        if self.config_text is None and project.get("label_config"):
            self.config_text = str(project["label_config"])
            self.config_source = f"project {self.project}"
        if self.tasks is None:
            self.tasks = list(page.get("tasks") or [])
        total, annotations = page.get("total"), page.get("total_annotations")
        self.total_tasks = total if isinstance(total, int) else len(self.tasks)
        if not isinstance(annotations, int):
            annotations = project.get("total_annotations_number")
        self.annotation_count = annotations if isinstance(annotations, int) else None
        try:
            listed = ls.request("GET", "/api/ml", params={"project": self.project}).json()
            self.registered = [b for b in listed if isinstance(b, dict)]
        except (errors.LabelStudioError, ValueError, TypeError) as exc:
            self.registered_error = str(exc)
        counts = f"{_plural(self.total_tasks, 'task')}, {_plural(annotations or 0, 'annotation')}"
        return _ok(name, f"{who}; project {self.project} {project.get('title')!r}: {counts}")

    # --- the backend answers at all, and Label Studio can reach it
    def check_reachable(self) -> Check:
        name = "reachable"
        host, port = _host_port(self.backend)
        self.health, self.health_error, self.health_elapsed = _timed(self._client.health)
        err = self.health_error
        if isinstance(err, connector.CallUnreachable) or (
            isinstance(err, connector.CallTimeout) and err.reason == "connect_timeout"
        ):
            self.unreachable = True
            measured, fix = err.detail, err.fix or "check the URL and the network"
            if err.reason in _UNREACHABLE:
                where = {"host": host, "port": port, "limit": err.limit or 0.0}
                measured, fix = (t.format(**where) for t in _UNREACHABLE[err.reason])
            return _fail(name, measured, fix, reason=err.reason)
        measured = f"{host}:{port} accepts connections"
        if any(b.get("state") == "CO" for b in self._mine()):
            return _ok(name, f"{measured}; Label Studio reaches it too (Connected)")
        docker = _docker_label_studio() if _address_kind(host) == "loopback" else None
        hints = network_hints(self.backend, self.ls_url, docker=docker)
        if not hints:
            return _ok(name, measured)
        problems = "; ".join(h[0] for h in hints)
        return _warn(name, f"{measured} from here, but {problems}", " | ".join(h[1] for h in hints))

    def check_health(self) -> Check:
        name = "health"
        limit, lim = self._limit("health")
        err, elapsed = self.health_error, self.health_elapsed
        data: dict[str, Any] = {"seconds": round(elapsed, 4), "limit": limit}
        if err is not None:
            measured = f"{err.detail}: Label Studio marks the backend Disconnected"
            return _fail(name, measured, err.fix, **data)
        body = self.health or {}
        state = body.get("model_state")
        measured = f"answered in {_dur(elapsed)} ({lim}, {max(0, 1 - elapsed / limit):.0%} margin)"
        measured += f"; model_state {state}" if state else ""
        if state == "failed":
            measured += f": {body.get('model_error')}"
            return _fail(name, measured, "the model's setup() raised: see the backend log", **data)
        if elapsed > limit / 2:
            slow = ", only after a retry" if elapsed > limit else ": little margin"
            return _warn(name, measured + slow, _SLOW_HEALTH, **data)
        if state == "loading":
            fix = "wait until model_state is 'ready' (predict waits up to MODEL_LOAD_WAIT)"
            return _warn(name, measured, fix, **data)
        if body.get("queue") == "degraded":
            measured += f"; job queue degraded: {body.get('queue_error')}"
            return _warn(name, measured, "training cannot run: check REDIS_URL / workers", **data)
        return _ok(name, measured, **data)

    def check_registered(self) -> Check | None:
        name, where = "registered", f"project {self.project}"
        if not self.ls_url:
            return None
        if self.project_obj is None or self.registered is None:
            why = self.registered_error or "needs Label Studio with a token and --project"
            return _skip(name, f"cannot list the project's ML backends: {why}")
        connect = f"in Label Studio: {where} > Settings > Model > Connect Model, URL {self.backend}"
        match = self._mine()
        if not match:
            urls = ", ".join(str(b.get("url")) for b in self.registered) or "no ML backend"
            return _warn(name, f"{where} uses {urls}, not {self.backend}", connect)
        b = match[0]
        state, error = b.get("state"), b.get("error_message")
        label = f"Label Studio shows {b.get('url')} ({b.get('title') or 'untitled'})"
        if state == "DI":
            host, port = _host_port(str(b.get("url")))
            fix = "this machine reaches the backend, Label Studio does not: " + (
                _DOCKER_FIX.format(port=port) if _is_local(host) else "check the network"
            )
            if self.unreachable:
                fix = "start the backend, then save its settings in Label Studio (it re-checks)"
            return _fail(name, f"{label} Disconnected: {error}", fix, state=state)
        if state == "ER":
            fix = "its /setup call fails (see the setup line); then save it in Label Studio again"
            return _fail(name, f"{label} Error: {error}", fix, state=state)
        return _ok(name, f"{label} {b.get('readable_state') or state}", state=state)

    # --- config and setup
    def check_label_config(self) -> Check:
        name = "label-config"
        if self.config_text is None:
            fix = "pass --config label_config.xml, or --label-studio URL --token T --project ID"
            return _warn(name, "no labeling config: setup and predictions are not checked", fix)
        try:
            self.config = LabelConfig.parse(self.config_text)
        except errors.InvalidLabelConfig as exc:
            return _fail(name, f"{self.config_source}: {exc.detail}", exc.fix)
        controls = ", ".join(
            f"{c.name} ({c.tag} -> {', '.join(c.to_name)})" for c in self.config.controls.values()
        )
        count = _plural(len(self.config.controls), "control tag")
        return _ok(name, f"{self.config_source}: valid, {count}: {controls}")

    def check_setup(self) -> Check:
        name = "setup"
        if self.config is None:
            return _skip(name, "no labeling config")
        limit, lim = self._limit("setup")
        # Connected by Label Studio: keep the hostname and token it sent (the backend may see
        # Label Studio under another address than we do); else send ours, as it would.
        mine = self._mine()
        call = functools.partial(
            self._client.setup,
            self.project_ref,
            self.config_text or "",
            hostname=None if mine else self.ls_url,
            access_token=None if mine else self.token,
            extra_params=mine[0].get("extra_params") if mine else None,
        )

        first, err, t1 = _timed(call)
        if err is not None:
            measured = f"{err.detail}: Label Studio marks the backend Error (ER)"
            return _fail(name, measured, err.fix, seconds=round(t1, 4), limit=limit)
        second, err, t2 = _timed(call)
        self.setup_version = first or second
        data: dict[str, Any] = {"seconds": round(t1, 4), "again": round(t2, 4), "limit": limit}
        measured = f"answered in {_dur(t1)}, again in {_dur(t2)} ({lim}); model_version {first!r}"
        if err is not None:
            return _fail(name, f"{measured}; the second call failed: {err.detail}", err.fix, **data)
        issues: list[tuple[str, str]] = []
        if first is None:
            issues.append(("no model_version", _NO_VERSION))
        if t1 > limit / 2:
            issues.append(("little margin", _CHEAP_SETUP))
        if t2 > limit / 3:
            issues.append((f"the second call is not cheap (over 1/3 of {limit:g} s)", _CHEAP_SETUP))
        if issues:
            measured += ": " + "; ".join(text for text, _ in issues)
            return _warn(name, measured, issues[0][1], **data)
        return _ok(name, measured, **data)

    # --- tasks and predictions
    def check_task_data(self) -> Check | None:
        if self.config is None or not self.tasks:
            return None
        fields = sorted({o.value_field for o in self.config.objects.values() if o.value_field})
        lacking = [
            f"task {t.get('id', i)} has no data field {f!r}"
            for i, t in enumerate(self.tasks)
            for f in fields
            if f.split(".", 1)[0] not in (t.get("data") or {})
        ]
        names = ", ".join("$" + f for f in fields) or "none"
        if lacking:
            fix = "give every task's data the keys the config's value=\"$...\" reads, or fix it"
            measured = f"{lacking[0]} (the config reads {names})"
            return _fail("task-data", measured, fix, details=lacking[:_SHOWN])
        return _ok("task-data", f"{_plural(len(self.tasks), 'task')} have the fields {names}")

    def check_predict(self) -> Check:
        name = "predict"
        if self.config is None:
            return _skip(name, "no labeling config")
        if not self.tasks:
            return _skip(name, "no tasks: pass --tasks tasks.json, or a project that has tasks")
        limit, lim = self._limit("predict")
        head = self.tasks[: self.sample_size]
        self.sample = [{**t, "id": t.get("id", i + 1)} for i, t in enumerate(head)]
        result, err, elapsed = _timed(
            lambda: self._client.predict(
                self.sample, project=self.project_ref, label_config=self.config_text
            )
        )
        n = len(self.sample)
        data: dict[str, Any] = {"tasks": n, "seconds": round(elapsed, 4), "limit": limit}
        if err is not None or result is None:
            detail, fix = (err.detail, err.fix) if err else ("no answer", None)
            measured = f"{_plural(n, 'task')}: {detail}: Label Studio stores no predictions"
            return _fail(name, measured, fix, **data)
        self.predictions, self.predict_elapsed = result, elapsed
        got = len(result.results)
        versions = [p.model_version for preds in result.results for p in preds if p.model_version]
        version = versions[0] if versions else result.model_version or self.setup_version
        measured = (
            f"{_plural(n, 'task')} answered in {_dur(elapsed)} ({lim}); "
            f"{_plural(got, 'result')}, model_version {version!r}"
        )
        data.update(results=got, model_version=version)
        one_each = "return exactly one result per task, in the tasks' order (null for none)"
        if got != n and got == 1:
            measured += ": Label Studio then retries one task per request (slow)"
            return _warn(name, measured, one_each, **data)
        if got != n:
            return _fail(name, f"{measured}: Label Studio stores nothing", one_each, **data)
        if version is None:
            measured += ": Label Studio refuses to store them (400 model_version may not be null)"
            return _fail(name, measured, "return model_version from /setup or /predict", **data)
        if not any(p.result for preds in result.results for p in preds):
            fix = "check predict(); labelbridge drops items that do not match the config (see its log)"
            return _warn(name, f"{measured}; every result is empty", fix, **data)
        return _ok(name, measured, **data)

    def check_predictions(self) -> Check | None:
        if self.predictions is None or self.config is None:
            return None
        problems: list[str] = []
        items = 0
        for index, task in enumerate(self.sample):
            preds = self.predictions.results[index] if index < len(self.predictions.results) else []
            for pred in preds:
                items += len(pred.result)
                value = pred.model_dump(exclude_none=True)
                found = validate_prediction(
                    self.config, value, task_index=index, task_id=task["id"]
                )
                problems.extend(str(p) for p in found)
        if problems:
            measured = f"{_plural(len(problems), 'problem')} in {_plural(items, 'result item')}: "
            fix = "make from_name, to_name, type and labels match the project's config"
            return _fail("predictions", measured + problems[0], fix, details=problems[:_SHOWN])
        return _ok("predictions", f"{_plural(items, 'result item')} match the config")

    def check_throughput(self) -> Check | None:
        if self.predictions is None:
            return None
        n = len(self.sample)
        rate = n / max(self.predict_elapsed, 1e-3)
        total = max(self.total_tasks or n, n)
        limit, _ = self._limit("predict")
        projected = self.predict_elapsed * total / n
        measured = (
            f"{rate:.1f} tasks/s; Retrieve Predictions of all {_plural(total, 'task')} "
            f"(one request): ~{_dur(projected)} of {limit:g} s (ML_TIMEOUT_PREDICT)"
        )
        data: dict[str, Any] = {"tasks_per_second": round(rate, 2), "projected": projected}
        if projected > limit:
            most = max(1, int(rate * limit * 0.8))
            fix = f"retrieve at most ~{most} tasks at once, or use `labelbridge predict` (batches)"
            return _warn("throughput", f"{measured}: over the limit", fix, **data)
        return _ok("throughput", measured, **data)

    def check_assets(self) -> Check | None:
        name = "assets"
        if self.config is None or not self.tasks:
            return None
        objects = [
            o
            for o in self.config.objects.values()
            if o.value_field and (o.tag in _URL_TAGS or (o.value_type or "").lower() == "url")
        ]
        found: dict[str, Any] = {}  # URL -> task id
        for task, obj in itertools.product(self.tasks[: self.sample_size], objects):
            value = (task.get("data") or {}).get(obj.value_field or "")
            for v in value if isinstance(value, list) else [value]:
                if isinstance(v, str) and v.strip().startswith(_URL_PREFIXES):
                    found.setdefault(v.strip(), task.get("id"))
        if not found:
            return _skip(name, "the tasks hold no URLs that the config's object tags read")
        urls = list(found.items())[:_MAX_ASSETS]
        if not self.ls_url and any(u.startswith("/data/") for u, _ in urls):
            fix = "pass --label-studio URL --token T (the backend needs them too: LABEL_STUDIO_*)"
            return _warn(name, "tasks hold Label Studio paths (/data/...): no URL to read", fix)
        from labelbridge.assets import AssetResolver

        with tempfile.TemporaryDirectory(prefix="labelbridge-doctor-") as cache:
            settings = Settings(
                label_studio_url=self.ls_url,
                label_studio_api_key=self.token,
                asset_cache_dir=Path(cache),
                asset_max_bytes=8 * 1024 * 1024,  # larger ones are readable: that is enough
            )
            with AssetResolver(settings) as resolver:
                outcomes = resolver.get_many(urls)
        failed = [
            (url, out)
            for (url, _), out in zip(urls, outcomes, strict=True)
            if isinstance(out, errors.AssetError) and not isinstance(out, errors.AssetTooLarge)
        ]
        read = f"{len(urls) - len(failed)} of {_plural(len(urls), 'asset URL')} readable"
        read += f" (the first {_MAX_ASSETS} checked)" if len(found) > _MAX_ASSETS else ""
        if not failed:
            return _ok(name, read)
        first = failed[0][1]
        hard = any(
            isinstance(e, errors.AssetNotFound | errors.AssetUnauthorized | errors.AssetUnreachable)
            for _, e in failed
        )
        details = [f"{redact_url(u)}: {e.detail}" for u, e in failed]
        fix = first.fix or "make the URL readable from the backend's machine"
        return Check(name, "fail" if hard else "warn", f"{read}; {first.detail}", fix, details)

    # --- versions and training
    def check_versions(self) -> Check:
        name = "versions"
        _, lim = self._limit("versions")
        result, err, elapsed = _timed(self._client.versions)
        if isinstance(err, connector.CallHTTPError) and err.status == 404:
            fix = 'optional: answer GET /versions {"versions": [...]} to list them in Label Studio'
            return _warn(name, "GET /versions answered 404: Label Studio uses the current one", fix)
        if err is not None or result is None:
            return _fail(name, err.detail if err else "no answer", err.fix if err else None)
        names = ", ".join(result.versions[:3]) + (" ..." if len(result.versions) > 3 else "")
        listed = f"{_plural(len(result.versions), 'version')} ({names})" if names else "none yet"
        return _ok(name, f"{listed}, answered in {_dur(elapsed)} ({lim})", seconds=elapsed)

    def _needed(self) -> int | None:
        """Annotations the model needs, if the backend says (health `min_annotations`)."""
        value = (self.health or {}).get("min_annotations")
        return max(0, value) if isinstance(value, int) and not isinstance(value, bool) else None

    def _least(self) -> int:
        """Annotations training needs: what /health says, else at least 1."""
        needed = self._needed()
        return 1 if needed is None else needed

    def check_annotations(self) -> Check | None:
        name = "annotations"
        if self.project_obj is None:
            return None
        if self.annotation_count is None:
            return _skip(name, "Label Studio did not say how many annotations the project has")
        needed, least, count = self._needed(), self._least(), self.annotation_count
        if needed is None:  # a backend that is not ours, or an older labelbridge
            measured = f"project {self.project} has {_plural(count, 'annotation')}; the model"
            measured += " needs at least 1 (its /health does not say how many)"
        else:
            measured = f"the model needs {_plural(needed, 'annotation')} before training starts"
            measured += f"; project {self.project} has {count}"
        if count < least:
            more = least - count
            fix = f"annotate {_plural(more, 'more task')} in Label Studio"
            fix += " (skipped ones do not count)"
            if needed is not None:
                fix += ", or lower Model.min_annotations (MIN_ANNOTATIONS_TO_TRAIN if it sets none)"
            return _fail(name, measured, fix, count=count, needed=least)
        return _ok(name, measured, count=count, needed=least)

    def check_train(self) -> Check | None:
        name = "train"
        if self.project_obj is None:
            return None
        if not self.train or self.unreachable:
            return _skip(name, "the backend is unreachable" if self.train else "--no-train")
        count, least = self.annotation_count or 0, self._least()
        if count < least:
            return _skip(name, f"too few annotations ({count}/{least}): Start Training would fail")
        project = self.project_obj
        answer, err, elapsed = _timed(lambda: self._client.start_training(project))
        if err is not None or answer is None:
            detail, fix = (err.detail, err.fix) if err else ("no answer", None)
            return _fail(name, f"{detail}: Start Training shows 'Error'", fix)
        sent, job = f"START_TRAINING accepted in {_dur(elapsed)}", answer.get("job")
        if not job:
            return _ok(name, f"{sent} (no job id, so its progress cannot be followed)")
        _, lim = self._limit("job_status")
        status, err, took = _timed(lambda: self._client.job_status(str(job)))
        if isinstance(err, connector.CallHTTPError) and err.status in (404, 405, 501):
            fix = 'optional: answer POST /job_status {"job"} to let users follow training'
            return _warn(name, f"{sent} (job {job}); no /job_status ({err.status})", fix)
        if err is not None or status is None:
            detail, fix = (err.detail, err.fix) if err else ("no answer", None)
            return _fail(name, f"{sent}; job status: {detail}", fix)
        deadline = time.monotonic() + self.train_wait
        while status.get("job_status") in ("queued", "started") and time.monotonic() < deadline:
            time.sleep(0.2)  # a job that fails at once is the guide's "Error. Click here"
            status = _timed(lambda: self._client.job_status(str(job)))[0] or status
        state = status.get("job_status")
        measured = f"{sent} (job {job}); status read in {_dur(took)} ({lim}): {state}"
        if state == "failed":
            fix = "see the job's traceback (POST /job_status) and the training log (logs/rq.log)"
            return _fail(name, f"{measured}: {status.get('error')}", fix, job=job)
        return _ok(name, measured, job=job, state=state)

    # --- the backend's packages
    def check_requirements(self) -> Check:
        name = "requirements"
        host, port = _host_port(self.backend)
        local = _address_kind(host) == "loopback"
        proc = find_backend_process(port) if local else None
        folder = self.backend_dir or (proc.backend_dir if proc else None)
        if folder is None:
            why = f"no `labelbridge start` on port {port} here" if local else "it runs elsewhere"
            return _skip(name, f"no --backend-dir, and {why}")
        req = Path(folder) / "requirements.txt"
        if not req.is_file():
            return _skip(name, f"{folder} has no requirements.txt")
        if proc is not None and proc.python:
            where, python = f"the Python of process {proc.pid} ({proc.python})", proc.python
            try:
                missing = missing_in(python, Path(folder))
            except (OSError, ValueError, RuntimeError, subprocess.SubprocessError) as exc:
                return _warn(
                    name, f"cannot ask {where}: {exc}", f"{python} -m pip install -r {req}"
                )
        else:
            where, python = f"this Python ({sys.executable})", sys.executable
            missing = describe_missing_requirements(Path(folder))
        if missing:
            measured = f"{_plural(len(missing), 'package')} of {req} missing in {where}: "
            fix = f"{python} -m pip install -r {req}, then restart the backend (Docker: rebuild)"
            return _fail(name, measured + ", ".join(missing), fix, missing=missing)
        return _ok(name, f"every package of {req} is installed in {where}")


def run_checks(backend: str, **options: Any) -> list[Check]:
    """Run the checklist (options as `Doctor` takes them); never prints."""
    return Doctor(backend, **options).run()
