"""A Label Studio-like server (a credible subset of 1.23's API) for tests, on real loopback HTTP.

What it does like the real one (see /work/shared/protocol/README.md):
- auth: `Token <legacy>` only while `legacy_enabled`; `Bearer <access JWT>`; a PAT sent as Bearer
  is 401; `POST /api/token/refresh/ {"refresh": PAT}` -> `{"access": JWT}` signed HS256 with an
  `exp` `access_ttl` seconds ahead; expired or revoked access tokens are 401.
- projects, tasks paging (`/api/tasks/?project=&page=&page_size=&fields=&query=` answering
  `{"tasks", "total", "total_annotations", "total_predictions"}`, 404 past the last page),
  annotations, predictions (single and bulk import, the model-versions counts), the JSON
  export, `/data/upload/...`, `/data/local-files/?d=...` and
  `/tasks/<id>/presign/?fileuri=<base64url>`. Knobs: `delays`, `lost_import_answers` (a bulk
  import stores, then answers 500), `rejected_tasks` (a bulk import with them answers 400).

Every request is recorded (`hits(path)`), so tests can count downloads and token refreshes.

    with FakeLabelStudio(access_ttl=1) as ls:
        project = ls.add_project()
        task = ls.add_task(project["id"], {"image": ls.add_upload(project["id"], "a.png", b"..")})
        client = LabelStudio(ls.url, ls.personal_access_token())
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import itertools
import json
import mimetypes
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import Route

from fakes._server import ServerThread

DEFAULT_CONFIG = (
    '<View><Text name="text" value="$text"/><Choices name="sentiment" toName="text" '
    'choice="single"><Choice value="Positive"/><Choice value="Negative"/></Choices></View>'
)
NOW = "2026-01-01T00:00:00.000000Z"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _not_found() -> JSONResponse:
    return JSONResponse({"detail": "Not found."}, status_code=404)


class FakeLabelStudio:
    """The fake server and its state; mutate the state directly or with the add_* helpers."""

    def __init__(
        self,
        *,
        legacy_enabled: bool = True,
        access_ttl: float = 300.0,
        local_files_root: Path | None = None,
    ) -> None:
        self.legacy_token = "ls-legacy-token-0123456789abcdef"
        self._defaults = (legacy_enabled, access_ttl, local_files_root)
        self.secret = uuid.uuid4().bytes
        self.epoch = 0  # bump to revoke every access token issued so far
        self.reset()
        self._lock = threading.Lock()
        self._server: ServerThread | None = None
        self.url = ""

    def reset(self) -> None:
        """Forget all data, recorded requests and knobs; tokens issued before stop working.

        Lets one running server serve many tests (starting and stopping one costs ~0.2 s).
        """
        self.legacy_enabled, self.access_ttl, self.local_files_root = self._defaults
        self.epoch += 1
        self.secret = uuid.uuid4().bytes
        self.projects: dict[int, dict[str, Any]] = {}
        self.tasks: dict[int, dict[str, Any]] = {}
        self.annotations: dict[int, dict[str, Any]] = {}
        self.predictions: dict[int, dict[str, Any]] = {}
        self.uploads: dict[str, bytes] = {}
        self.delays: dict[str, float] = {}  # path -> seconds to wait before answering
        #: bulk imports that store, then answer 500 as if the answer was lost (next N calls)
        self.lost_import_answers = 0
        #: tasks whose predictions the bulk import rejects with 400 (the whole batch)
        self.rejected_tasks: set[int] = set()
        self.presign_handler: Callable[[str], str | bytes | None] | None = None
        self.requests: list[tuple[str, str]] = []
        self._ids = {k: itertools.count(1) for k in ("project", "task", "annotation", "prediction")}

    # --- lifecycle
    def start(self) -> FakeLabelStudio:
        self._server = ServerThread(self.app())
        self._server.start()
        self.url = self._server.url
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop()

    def __enter__(self) -> FakeLabelStudio:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- tokens
    def _sign(self, claims: dict[str, Any]) -> str:
        head = _b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
        body = _b64(json.dumps(claims).encode())
        sig = hmac.new(self.secret, f"{head}.{body}".encode(), hashlib.sha256).digest()
        return f"{head}.{body}.{_b64(sig)}"

    def _verify(self, token: str, token_type: str) -> dict[str, Any] | None:
        try:
            head, body, sig = token.split(".")
            expected = hmac.new(self.secret, f"{head}.{body}".encode(), hashlib.sha256).digest()
            if not hmac.compare_digest(expected, _unb64(sig)):
                return None
            claims: dict[str, Any] = json.loads(_unb64(body))
        except (ValueError, binascii.Error):
            return None
        if claims.get("token_type") != token_type or claims.get("exp", 0) <= time.time():
            return None
        if token_type == "access" and claims.get("epoch") != self.epoch:
            return None
        return claims

    def personal_access_token(self, *, user_id: int = 1) -> str:
        """A PAT as Label Studio issues it: a long-lived JWT refresh token."""
        now = int(time.time())
        claims = {
            "token_type": "refresh",
            "exp": now + 86400 * 365,
            "iat": now,
            "jti": uuid.uuid4().hex,
            "user_id": user_id,
        }
        return self._sign(claims)

    def revoke_access_tokens(self) -> None:
        self.epoch += 1

    # --- state helpers
    def add_project(self, title: str = "project", label_config: str = DEFAULT_CONFIG) -> dict:
        pid = next(self._ids["project"])
        self.projects[pid] = {
            "id": pid,
            "title": title,
            "label_config": label_config,
            "model_version": "",
            "created_at": NOW,
            "organization": 1,
        }
        return self.projects[pid]

    def add_task(self, project: int, data: dict[str, Any]) -> dict[str, Any]:
        tid = next(self._ids["task"])
        self.tasks[tid] = {
            "id": tid,
            "data": data,
            "meta": {},
            "project": project,
            "created_at": NOW,
            "updated_at": NOW,
            "inner_id": tid,
            "overlap": 1,
            "file_upload": None,
        }
        return self.tasks[tid]

    def add_annotation(
        self, task: int, result: list[dict[str, Any]], *, was_cancelled: bool = False
    ) -> dict[str, Any]:
        aid = next(self._ids["annotation"])
        self.annotations[aid] = {
            "id": aid,
            "task": task,
            "project": self.tasks[task]["project"],
            "result": result,
            "was_cancelled": was_cancelled,
            "ground_truth": False,
            "completed_by": 1,
            "lead_time": 1.0,
            "created_at": NOW,
            "updated_at": NOW,
        }
        return self.annotations[aid]

    def add_prediction(self, item: dict[str, Any]) -> dict[str, Any]:
        pid = next(self._ids["prediction"])
        task = int(item["task"])
        self.predictions[pid] = {
            "id": pid,
            "task": task,
            "project": self.tasks[task]["project"],
            "result": item.get("result", []),
            "score": item.get("score"),
            "model_version": item.get("model_version") or "",
            "created_at": NOW,
            "updated_at": NOW,
        }
        return self.predictions[pid]

    def add_upload(self, project: int, filename: str, content: bytes) -> str:
        """Store an uploaded file; returns the path Label Studio puts in task data."""
        path = f"/data/upload/{project}/{uuid.uuid4().hex[:8]}-{filename}"
        self.uploads[path] = content
        return path

    def hits(self, path: str) -> int:
        """How many requests reached this exact path (query string excluded)."""
        with self._lock:
            return Counter(p for _, p in self.requests)[path]

    def serialize_task(self, task: dict[str, Any], *, full: bool = True) -> dict[str, Any]:
        anns = [a for a in self.annotations.values() if a["task"] == task["id"]]
        preds = [p for p in self.predictions.values() if p["task"] == task["id"]]
        out = {
            **task,
            "is_labeled": any(not a["was_cancelled"] for a in anns),
            "total_annotations": sum(not a["was_cancelled"] for a in anns),
            "cancelled_annotations": sum(a["was_cancelled"] for a in anns),
            "total_predictions": len(preds),
        }
        if full:
            out.update(annotations=anns, predictions=preds, drafts=[])
        return out

    # --- the app
    def _auth_error(self, request: Request) -> JSONResponse | None:
        header = request.headers.get("authorization", "")
        kind, _, value = header.partition(" ")
        if kind == "Token":
            if not self.legacy_enabled:
                detail = "Legacy token authentication has been disabled for this organization"
                return JSONResponse({"detail": detail}, status_code=401)
            if hmac.compare_digest(value.encode(), self.legacy_token.encode()):
                return None
            return JSONResponse({"detail": "Invalid token."}, status_code=401)
        if kind == "Bearer":
            if self._verify(value, "access") is not None:
                return None
            invalid = {
                "detail": "Given token not valid for any token type",
                "code": "token_not_valid",
            }
            return JSONResponse(invalid, status_code=401)
        return JSONResponse({"detail": "Authentication credentials were not provided."}, 401)

    def app(self) -> Starlette:
        def guarded(handler: Callable[..., Response]) -> Callable[[Request], Any]:
            async def endpoint(request: Request) -> Response:
                with self._lock:
                    self.requests.append((request.method, request.url.path))
                delay = self.delays.get(request.url.path)
                if delay:
                    await anyio.sleep(delay)
                if request.url.path != "/api/token/refresh/":
                    error = self._auth_error(request)
                    if error is not None:
                        return error
                body = None
                if request.method in ("POST", "PATCH") and (await request.body()):
                    body = await request.json()
                result: Response = handler(request) if body is None else handler(request, body)
                return result

            return endpoint

        routes = [
            Route("/api/token/refresh/", guarded(self._refresh), methods=["POST"]),
            Route("/api/current-user/whoami", guarded(self._whoami)),
            Route("/api/projects/{pid:int}/", guarded(self._project)),
            Route("/api/projects/{pid:int}/export", guarded(self._export)),
            Route("/api/projects/{pid:int}/model-versions/", guarded(self._model_versions)),
            Route(
                "/api/projects/{pid:int}/import/predictions",
                guarded(self._import_predictions),
                methods=["POST"],
            ),
            Route("/api/tasks/", guarded(self._tasks)),
            Route("/api/tasks/{tid:int}/", guarded(self._task)),
            Route(
                "/api/tasks/{tid:int}/annotations/",
                guarded(self._task_annotations),
                methods=["GET", "POST"],
            ),
            Route(
                "/api/annotations/{aid:int}/",
                guarded(self._annotation),
                methods=["GET", "PATCH", "DELETE"],
            ),
            Route("/api/predictions/", guarded(self._predictions), methods=["GET", "POST"]),
            Route("/api/predictions", guarded(self._predictions), methods=["GET", "POST"]),
            Route("/data/upload/{path:path}", guarded(self._upload)),
            Route("/data/local-files/", guarded(self._local_files)),
            Route("/tasks/{tid:int}/presign/", guarded(self._presign)),
        ]
        return Starlette(routes=routes)

    def _refresh(self, request: Request, body: dict[str, Any] | None = None) -> Response:
        claims = self._verify(str((body or {}).get("refresh", "")), "refresh")
        if claims is None:
            detail = {"detail": "Token is invalid or expired", "code": "token_not_valid"}
            return JSONResponse(detail, status_code=401)
        now = time.time()
        access = self._sign(
            {
                "token_type": "access",
                "iat": now,
                "exp": now + self.access_ttl,
                "user_id": claims["user_id"],
                "epoch": self.epoch,
                "jti": uuid.uuid4().hex,
            }
        )
        return JSONResponse({"access": access})

    def _whoami(self, request: Request) -> Response:
        return JSONResponse(
            {"id": 1, "email": "admin@example.com", "username": "admin", "active_organization": 1}
        )

    def _project(self, request: Request) -> Response:
        project = self.projects.get(request.path_params["pid"])
        return JSONResponse(project) if project else _not_found()

    def _tasks(self, request: Request) -> Response:
        q = request.query_params
        project = int(q.get("project", 0))
        page, size = int(q.get("page", 1)), int(q.get("page_size", 100))
        tasks = [t for t in self.tasks.values() if t["project"] == project]
        query = json.loads(q["query"]) if q.get("query") else {}
        selected = query.get("selectedItems")
        if selected and not selected.get("all"):
            tasks = [t for t in tasks if t["id"] in set(selected.get("included", []))]
        full = q.get("fields") == "all"
        rows = [self.serialize_task(t, full=full) for t in tasks]
        for item in (query.get("filters") or {}).get("items", []):  # numeric task fields only
            field = item["filter"].removeprefix("filter:tasks:")
            if field == "predictions_model_versions":  # Label Studio matches by substring
                rows = [r for r in rows if self._has_version(r, item)]
                continue
            op = {
                "equal": lambda a, b: a == b,
                "greater": lambda a, b: a > b,
                "less": lambda a, b: a < b,
            }[item["operator"]]
            rows = [r for r in rows if op(r.get(field), item["value"])]
        start = (page - 1) * size
        if page < 1 or (page > 1 and start >= len(rows)):
            return JSONResponse({"detail": "Invalid page."}, status_code=404)
        return JSONResponse(
            {
                "total_annotations": sum(r["total_annotations"] for r in rows),
                "total_predictions": sum(r["total_predictions"] for r in rows),
                "total": len(rows),
                "tasks": rows[start : start + size],
            }
        )

    def _task(self, request: Request) -> Response:
        task = self.tasks.get(request.path_params["tid"])
        return JSONResponse(self.serialize_task(task)) if task else _not_found()

    def _task_annotations(self, request: Request, body: dict[str, Any] | None = None) -> Response:
        tid = request.path_params["tid"]
        if tid not in self.tasks:
            return _not_found()
        if body is not None:
            annotation = self.add_annotation(
                tid, body.get("result", []), was_cancelled=bool(body.get("was_cancelled"))
            )
            return JSONResponse(annotation, status_code=201)
        rows = [a for a in self.annotations.values() if a["task"] == tid and not a["was_cancelled"]]
        return JSONResponse(rows)

    def _annotation(self, request: Request, body: dict[str, Any] | None = None) -> Response:
        annotation = self.annotations.get(request.path_params["aid"])
        if annotation is None:
            return _not_found()
        if request.method == "DELETE":
            del self.annotations[annotation["id"]]
            return Response(status_code=204)
        if body is not None:
            annotation.update({k: v for k, v in body.items() if k in ("result", "was_cancelled")})
        return JSONResponse(annotation)

    def _predictions(self, request: Request, body: dict[str, Any] | None = None) -> Response:
        if body is not None:
            if int(body.get("task", 0)) not in self.tasks:
                return JSONResponse({"detail": "Validation error"}, status_code=400)
            return JSONResponse(self.add_prediction(body), status_code=201)
        q = request.query_params
        rows = list(self.predictions.values())
        for name in ("project", "task"):
            if q.get(name):
                rows = [p for p in rows if p[name] == int(q[name])]
        return JSONResponse(rows)

    def _import_predictions(self, request: Request, body: list[dict[str, Any]]) -> Response:
        pid = request.path_params["pid"]
        ids = {t["id"] for t in self.tasks.values() if t["project"] == pid}
        bad = [item for item in body if item.get("task") not in ids - self.rejected_tasks]
        if bad:
            detail = f'{bad[0]} contains invalid "task" field'
            return JSONResponse({"detail": "Validation error", "validation_errors": [detail]}, 400)
        for item in body:
            self.add_prediction(item)
        if self.lost_import_answers > 0:
            self.lost_import_answers -= 1
            return JSONResponse({"detail": "Server error"}, status_code=500)
        return JSONResponse({"created": len(body)}, status_code=201)

    def _has_version(self, row: dict[str, Any], item: dict[str, Any]) -> bool:
        versions = [p["model_version"] for p in self.predictions.values() if p["task"] == row["id"]]
        hit = any(value in version for value in item["value"] for version in versions)
        return hit if item["operator"] == "contains" else not hit

    def _model_versions(self, request: Request) -> Response:
        pid = request.path_params["pid"]
        if pid not in self.projects:
            return _not_found()
        counts = Counter(
            p["model_version"] for p in self.predictions.values() if p["project"] == pid
        )
        return JSONResponse(dict(counts))

    def _export(self, request: Request) -> Response:
        pid = request.path_params["pid"]
        if pid not in self.projects:
            return _not_found()
        everything = request.query_params.get("download_all_tasks", "false") == "true"
        rows = [self.serialize_task(t) for t in self.tasks.values() if t["project"] == pid]
        rows = [r for r in rows if everything or r["annotations"]]
        headers = {"Content-Disposition": 'attachment; filename="export.json"'}
        return JSONResponse(rows, headers=headers)

    def _upload(self, request: Request) -> Response:
        content = self.uploads.get(request.url.path)
        if content is None:
            return _not_found()
        media = mimetypes.guess_type(request.url.path)[0] or "application/octet-stream"
        return Response(content, media_type=media)

    def _local_files(self, request: Request) -> Response:
        d = request.query_params.get("d", "")
        root = self.local_files_root
        if root is None or ".." in Path(d).parts:
            return _not_found()
        path = (root / d).resolve()
        if not path.is_relative_to(root.resolve()) or not path.is_file():
            return _not_found()
        return Response(path.read_bytes(), media_type=mimetypes.guess_type(path.name)[0])

    def _presign(self, request: Request) -> Response:
        if request.path_params["tid"] not in self.tasks:
            return _not_found()
        try:
            fileuri = _unb64(request.query_params.get("fileuri", "")).decode()
        except (ValueError, binascii.Error):
            return Response(status_code=400)
        resolved = self.presign_handler(fileuri) if self.presign_handler else None
        if resolved is None:
            return Response(status_code=404)
        if isinstance(resolved, bytes):  # storage with presigning off: proxied
            return Response(resolved, media_type="application/octet-stream")
        return RedirectResponse(resolved, status_code=303)
