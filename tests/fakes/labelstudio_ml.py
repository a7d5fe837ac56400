"""FakeLabelStudio plus the project's ML backends (`GET /api/ml?project=ID`), for the doctor.

Shapes follow the 1.23.2 captures (list_backends): id, state (CO/ER/DI), readable_state, url,
error_message, title, extra_params, model_version, project.

    with FakeLabelStudioML() as ls:
        project = ls.add_project()
        ls.add_ml_backend(project["id"], "http://127.0.0.1:9090", state="ER", error_message="...")
"""

from __future__ import annotations

import itertools
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from fakes.labelstudio import NOW, FakeLabelStudio

READABLE = {"CO": "Connected", "ER": "Error", "DI": "Disconnected", "TR": "Training"}


class FakeLabelStudioML(FakeLabelStudio):
    def reset(self) -> None:
        super().reset()
        self.ml_backends: list[dict[str, Any]] = []
        self._ml_ids = itertools.count(1)

    def add_ml_backend(
        self,
        project: int,
        url: str,
        *,
        state: str = "CO",
        error_message: str | None = None,
        extra_params: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        backend = {
            "id": next(self._ml_ids),
            "state": state,
            "readable_state": READABLE.get(state, state),
            "is_interactive": True,
            "url": url,
            "error_message": error_message,
            "title": "doctor-test",
            "auth_method": "NONE",
            "extra_params": extra_params,
            "model_version": "",
            "timeout": 100.0,
            "created_at": NOW,
            "updated_at": NOW,
            "project": project,
        }
        self.ml_backends.append(backend)
        return backend

    def app(self) -> Starlette:
        app = super().app()

        async def ml(request: Request) -> Response:
            with self._lock:
                self.requests.append((request.method, request.url.path))
            error = self._auth_error(request)
            if error is not None:
                return error
            project = request.query_params.get("project")
            rows = [b for b in self.ml_backends if project is None or b["project"] == int(project)]
            return JSONResponse(rows)

        app.router.routes.append(Route("/api/ml", ml))
        app.router.routes.append(Route("/api/ml/", ml))
        return app
