"""A stand-in ML backend built only from the protocol (shared/protocol/README.md), not from
labelbridge's server: connector and CLI tests then prove we speak the protocol, not ourselves.

It answers every route, records each request as it arrives (before any delay or auth check, so
retries are counted), and has knobs for the failures the connector must report well:

    with StubBackend(delays={"/setup": 1.0}, basic_auth=("u", "p")) as stub:
        ...  # call stub.url
        stub.bodies("/setup")

Knobs are plain attributes and may be changed between requests.
"""

from __future__ import annotations

import asyncio
import base64
import json
import threading
import time
from dataclasses import dataclass
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from fakes._server import ServerThread

__all__ = ["Received", "StubBackend"]


@dataclass
class Received:
    method: str
    path: str
    headers: dict[str, str]  # lower-case names
    body: Any  # parsed JSON (key order kept), or None


class StubBackend:
    """An ML backend on a free 127.0.0.1 port, run by uvicorn in a thread."""

    def __init__(
        self,
        *,
        model_version: str | None = "stub-v1",
        predict_model_version: str | None = None,
        delays: dict[str, float] | None = None,
        statuses: dict[str, int] | None = None,
        fail_predict_after: int | None = None,
        wrong_count: bool = False,
        results_shape: str = "object",
        basic_auth: tuple[str, str] | None = None,
        texts: dict[str, str] | None = None,
        region: dict[str, Any] | None = None,
    ) -> None:
        self._knobs: dict[str, Any] = {
            "model_version": model_version,  # what /setup answers
            "predict_model_version": predict_model_version,  # in /predict answers, if set
            "delays": dict(delays or {}),  # path -> seconds before answering
            "statuses": dict(statuses or {}),  # path -> error status to answer
            "fail_predict_after": fail_predict_after,  # answer 500 after this many predicts
            "wrong_count": wrong_count,  # one result fewer than tasks
            "results_shape": results_shape,  # object | list | regions
            "basic_auth": basic_auth,
            "texts": dict(texts or {}),  # path -> plain text answered with 200 (not JSON)
            "region": region,  # replaces the predicted region (to break it on purpose)
        }
        self.model_version = model_version
        self.predict_model_version = predict_model_version
        self.delays: dict[str, float] = {}
        self.statuses: dict[str, int] = {}
        self.fail_predict_after = fail_predict_after
        self.wrong_count = wrong_count
        self.results_shape = results_shape
        self.basic_auth = basic_auth
        self.texts: dict[str, str] = {}
        self.region = region
        self.received: list[Received] = []
        self.predicts_answered = 0
        self.in_flight = 0
        self.max_in_flight = 0
        self._lock = threading.Lock()
        self._closing = threading.Event()
        routes = [
            Route("/health", self._health, methods=["GET"]),
            Route("/", self._health, methods=["GET"]),
            Route("/setup", self._setup, methods=["POST"]),
            Route("/predict", self._predict, methods=["POST"]),
            Route("/webhook", self._webhook, methods=["POST"]),
            Route("/train", self._train, methods=["POST"]),
            Route("/versions", self._versions, methods=["GET"]),
            Route("/job_status", self._job_status, methods=["POST"]),
            Route("/duplicate_model", self._ok, methods=["POST"]),
            Route("/delete", self._ok, methods=["POST"]),
            Route("/validate", self._ok, methods=["POST"]),
            Route("/metrics", self._metrics, methods=["GET"]),
        ]
        self.reset()
        self._server = ServerThread(Starlette(routes=routes))
        self.url = self._server.url
        self.port = self._server.port

    # --- lifecycle and inspection
    def __enter__(self) -> StubBackend:
        self._server.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._closing.set()  # delayed handlers return at once
        self._server.stop()

    def requests_to(self, path: str) -> list[Received]:
        with self._lock:
            return [r for r in self.received if r.path == path]

    def bodies(self, path: str) -> list[Any]:
        return [r.body for r in self.requests_to(path)]

    def predicted_texts(self) -> list[str]:
        """The `data.text` of every task sent to /predict, in arrival order."""
        return [t["data"].get("text") for body in self.bodies("/predict") for t in body["tasks"]]

    def reset(self) -> None:
        """Back to the constructor's knobs, nothing received: one server serves many tests."""
        with self._lock:
            for name, value in self._knobs.items():
                setattr(self, name, dict(value) if isinstance(value, dict) else value)
            self.received.clear()
            self.predicts_answered = 0
            self.max_in_flight = self.in_flight

    # --- plumbing
    async def _enter(self, request: Request) -> tuple[Any, Response | None]:
        """Record, wait, check auth and error knobs; returns (body, early answer)."""
        raw = await request.body()
        body = json.loads(raw) if raw else None
        path = request.url.path
        with self._lock:
            self.received.append(Received(request.method, path, dict(request.headers), body))
        delay = self.delays.get(path, 0.0)
        deadline = time.monotonic() + delay
        while time.monotonic() < deadline and not self._closing.is_set():
            await asyncio.sleep(0.01)
        if self.basic_auth is not None:
            token = base64.b64encode(":".join(self.basic_auth).encode()).decode()
            if request.headers.get("authorization") != f"Basic {token}":
                detail = {"error": "AuthenticationRequired", "detail": "basic auth required"}
                return body, JSONResponse(detail, status_code=401)
        if path in self.texts:
            return body, PlainTextResponse(self.texts[path])
        if path in self.statuses:
            error = {"error": "StubError", "detail": f"stub answers {self.statuses[path]}"}
            return body, JSONResponse(error, status_code=self.statuses[path])
        return body, None

    def _result(self, task: dict[str, Any]) -> Any:
        text = str(task.get("data", {}).get("text", ""))
        label = "Positive" if "love" in text.lower() else "Negative"
        region = {
            "from_name": "sentiment",
            "to_name": "text",
            "type": "choices",
            "value": {"choices": [label]},
        }
        if self.region is not None:
            region = dict(self.region)
        prediction: dict[str, Any] = {"result": [region], "score": 0.5}
        if self.results_shape == "list":
            return [prediction, {"result": [region], "score": 0.25}]
        if self.results_shape == "regions":
            return [region]
        return prediction

    # --- routes
    async def _health(self, request: Request) -> Response:
        _, early = await self._enter(request)
        return early or JSONResponse({"status": "UP", "model_class": "Stub", "stub": True})

    async def _setup(self, request: Request) -> Response:
        _, early = await self._enter(request)
        return early or JSONResponse({"model_version": self.model_version})

    async def _predict(self, request: Request) -> Response:
        with self._lock:
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            body, early = await self._enter(request)
            if early:
                return early
            with self._lock:
                limit = self.fail_predict_after
                if limit is not None and self.predicts_answered >= limit:
                    error = {"error": "StubError", "detail": "stub fails after N predicts"}
                    return JSONResponse(error, status_code=500)
                self.predicts_answered += 1
            results = [self._result(task) for task in body["tasks"]]
            if self.wrong_count:
                results = results[:-1]
            answer: dict[str, Any] = {"results": results, "extra_key": "ignored"}
            if self.predict_model_version:
                answer["model_version"] = self.predict_model_version
            return JSONResponse(answer)
        finally:
            with self._lock:
                self.in_flight -= 1

    async def _webhook(self, request: Request) -> Response:
        body, early = await self._enter(request)
        if early:
            return early
        if body.get("action") == "START_TRAINING":
            return JSONResponse({"status": "queued", "job": "job-1"})
        return JSONResponse({"status": "ignored"})

    async def _train(self, request: Request) -> Response:
        _, early = await self._enter(request)
        return early or JSONResponse({"job": "job-1", "status": "queued"})

    async def _versions(self, request: Request) -> Response:
        _, early = await self._enter(request)
        details = [
            {
                "version": "stub-v1",
                "project": "1",
                "created_at": "2026-11-24T17:24:35Z",
                "current": True,
                "by_stub": 1,
            }
        ]
        answer = {"versions": ["stub-v1"], "details": details, "message": "extra"}
        return early or JSONResponse(answer)

    async def _job_status(self, request: Request) -> Response:
        body, early = await self._enter(request)
        return early or JSONResponse({"job": body.get("job"), "job_status": "finished"})

    async def _ok(self, request: Request) -> Response:
        _, early = await self._enter(request)
        return early or JSONResponse({"status": "ok"})

    async def _metrics(self, request: Request) -> Response:
        _, early = await self._enter(request)
        return early or PlainTextResponse("stub_requests_total 1\n")
