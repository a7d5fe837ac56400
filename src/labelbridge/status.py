"""The status page (`GET /status`, `GET /status.json`) and `/metrics` for one backend.

The page is a static HTML file with a small script (`static/status.html`): no build step and
no CDN, as the server often has no internet. It polls `status.json`, relative to its own URL,
so it works under a backend's URL prefix too. Both routes sit behind the server's auth when
auth is on (only `/` and `/health` are open).

What the JSON holds, and where it comes from:
- model versions per project with their metrics (the store), for the score-over-time chart;
- jobs with state and error (the queue's `list()`), and job counts by state;
- recent requests: a bounded ring buffer filled by the server's middleware. With several
  worker processes it is the answering worker's ring (`worker` says which pid that is);
- the settings in force, secrets masked (`Settings.masked()`);
- the log tail: the last lines of uwsgi.log and rq.log in production (every process writes
  them), the ring buffer of this process's records in development.
"""

from __future__ import annotations

import os
import time
from collections import deque
from importlib import resources
from pathlib import Path
from typing import Any

import anyio
from fastapi import APIRouter
from fastapi.responses import HTMLResponse, PlainTextResponse, Response

from labelbridge import __version__
from labelbridge.logs import recent_records
from labelbridge.metrics import Metrics, SharedMetrics
from labelbridge.protocol import JobState
from labelbridge.service import Backend

__all__ = [
    "RequestRing",
    "job_counts",
    "make_status_router",
    "metrics_text",
    "status_payload",
    "tail",
]

_STARTED = time.time()
_JOB_LIST_LIMIT = 50
_LOG_LINES = 200


class RequestRing:
    """The last requests this process answered; appended by the gate on every request, so
    an entry is a bare tuple (deque.append is atomic) and made readable only when asked."""

    def __init__(self, size: int = 200) -> None:
        self._items: deque[tuple[float, str, str, int, float]] = deque(maxlen=size)

    def add(self, method: str, path: str, status: int, seconds: float) -> None:
        self._items.append((time.time(), method, path, status, seconds))

    def items(self) -> list[dict[str, Any]]:
        """Newest first."""
        return [
            {"time": at, "method": method, "path": path, "status": status, "ms": round(s * 1000, 2)}
            for at, method, path, status, s in reversed(list(self._items))
        ]


def tail(path: Path, lines: int = _LOG_LINES, *, max_bytes: int = 256 * 1024) -> list[str]:
    """The last `lines` lines of a file, reading at most `max_bytes` from its end."""
    try:
        with path.open("rb") as handle:
            handle.seek(0, os.SEEK_END)
            size = handle.tell()
            handle.seek(max(0, size - max_bytes))
            data = handle.read()
    except OSError:
        return []
    text = data.decode("utf-8", "replace").splitlines()
    if len(data) == max_bytes and text:
        text = text[1:]  # the first line is probably cut
    return text[-lines:]


def job_counts(backend: Backend) -> dict[str, int]:
    """Jobs by state. Uses the queue's `counts()` when it has one, else its newest records."""
    counter = getattr(backend.queue, "counts", None)
    counts: dict[str, int] = {state.value: 0 for state in JobState}
    if callable(counter):
        counts.update({str(k): int(v) for k, v in counter().items()})
        return counts
    for record in backend.queue.list(limit=10_000):
        counts[record.state.value] = counts.get(record.state.value, 0) + 1
    return counts


def metrics_text(backend: Backend, shared: SharedMetrics | None) -> str:
    """Prometheus text: this process's metrics (or all workers' sum), plus jobs by state."""
    if shared is not None:
        total = shared.collect()
    else:
        total = Metrics()
        total.merge(backend.metrics.snapshot())
    try:
        counts = job_counts(backend)
    except Exception:  # the queue is down: the rest of the metrics still matter
        counts = {}
    for state, count in sorted(counts.items()):
        total.set("labelbridge_jobs", "Training jobs by state.", float(count), state=state)
    return total.render()


def _score_key(versions: list[dict[str, Any]]) -> str | None:
    """The metric to chart: `score` when the model reports it, else its first number."""
    keys: list[str] = []
    for version in versions:
        for key, value in version["metrics"].items():
            if isinstance(value, (int, float)) and not isinstance(value, bool) and key not in keys:
                keys.append(key)
    if "score" in keys:
        return "score"
    return keys[0] if keys else None


def _projects(backend: Backend) -> list[dict[str, Any]]:
    out = []
    for project in backend.store.projects():
        current = backend.store.current_name(project)
        versions: list[dict[str, Any]] = [
            {
                "version": meta.version,
                "created_at": meta.created_at.isoformat(),
                "current": meta.version == current,
                "metrics": meta.metrics,
                "job": meta.job,
            }
            for meta in reversed(backend.store.versions(project))  # oldest first, for the chart
        ]
        key = _score_key(versions)
        for version in versions:
            value = version["metrics"].get(key) if key else None
            version["score"] = value if isinstance(value, (int, float)) else None
        out.append({"project": project, "current": current, "score_key": key, "versions": versions})
    return out


def _jobs(backend: Backend) -> list[dict[str, Any]]:
    return [
        {
            "id": record.id,
            "kind": record.kind,
            "project": record.project,
            "state": record.state.value,
            "created_at": record.created_at.isoformat(),
            "started_at": record.started_at.isoformat() if record.started_at else None,
            "finished_at": record.finished_at.isoformat() if record.finished_at else None,
            "model_version": record.model_version,
            "error": record.error,
        }
        for record in backend.queue.list(limit=_JOB_LIST_LIMIT)
    ]


def _logs(backend: Backend) -> dict[str, list[str]]:
    settings = backend.settings
    if settings.production:
        folder = settings.resolved_log_dir(backend.backend_dir)
        return {
            "uwsgi.log": tail(folder / "uwsgi.log"),
            "rq.log": tail(folder / "rq.log"),
        }
    return {"console": [record["line"] for record in recent_records(_LOG_LINES)]}


def status_payload(backend: Backend, ring: RequestRing) -> dict[str, Any]:
    """Everything the status page shows, as JSON data. Each part fails on its own."""
    payload: dict[str, Any] = {
        "labelbridge": __version__,
        "worker": os.getpid(),
        "uptime_seconds": round(time.time() - _STARTED, 1),
        "model": {
            "class": backend.model_cls.__name__,
            "state": backend.model_state,
            "error": backend.model_error,
            "load_seconds": backend.load_seconds,
        },
        "production": backend.settings.production,
        "requests": ring.items(),
        "settings": backend.settings.masked(),
    }
    parts = {"projects": _projects, "jobs": _jobs, "job_counts": job_counts, "logs": _logs}
    for name, build in parts.items():
        try:
            payload[name] = build(backend)
        except Exception as exc:
            payload[name] = None
            payload.setdefault("errors", {})[name] = f"{type(exc).__name__}: {exc}"
    return payload


def _page() -> str:
    return (resources.files("labelbridge") / "static" / "status.html").read_text(encoding="utf-8")


def make_status_router(
    backend: Backend, ring: RequestRing, shared: SharedMetrics | None = None
) -> APIRouter:
    """`/status`, `/status.json` and `/metrics` for one backend."""
    router = APIRouter()
    page = _page()

    @router.get("/status", response_class=HTMLResponse, include_in_schema=False)
    async def status_page() -> HTMLResponse:
        return HTMLResponse(page, headers={"cache-control": "no-store"})

    @router.get("/status.json")
    async def status_json() -> Response:
        import orjson

        payload = await anyio.to_thread.run_sync(status_payload, backend, ring)
        return Response(
            orjson.dumps(payload, default=str),
            media_type="application/json",
            headers={"cache-control": "no-store"},
        )

    @router.get("/metrics", response_class=PlainTextResponse)
    async def metrics() -> PlainTextResponse:
        text = await anyio.to_thread.run_sync(metrics_text, backend, shared)
        return PlainTextResponse(text, media_type="text/plain; version=0.0.4")

    return router
