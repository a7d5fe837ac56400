"""A small synchronous client for Label Studio's REST API, and the auth both token kinds need.

Label Studio has two kinds of token. A legacy token goes in `Authorization: Token <t>` and is
refused by default in new organizations. A personal access token (PAT) is a JWT refresh token: it
is never sent as is, but exchanged at `POST /api/token/refresh/` for an access token that lives
about five minutes and is sent as `Bearer <access>`. `LabelStudioAuth` hides the difference from
any httpx client, so the REST client here and the asset reader share one implementation.

Endpoints used (Label Studio 1.23): `/api/current-user/whoami`, `/api/projects/<id>/`,
`/api/tasks/?project=&page=&page_size=&fields=&query=` (answers `{"tasks": [...], "total": N}`),
`/api/tasks/<id>/`, `/api/annotations/<id>/`, `/api/projects/<id>/export?exportType=JSON`,
`/api/predictions/`, `/api/projects/<id>/import/predictions` (bulk) and
`/tasks/<id>/presign/?fileuri=<base64url>` (a 303 to a presigned URL, or the bytes proxied).
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import threading
import time
from collections.abc import AsyncGenerator, Generator, Iterable, Iterator, Mapping, Sequence
from typing import Any, Literal
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import httpx
from pydantic import SecretStr

from labelbridge.errors import LabelStudioError

__all__ = [
    "DEFAULT_TIMEOUT",
    "LabelStudio",
    "LabelStudioAuth",
    "is_personal_access_token",
    "redact_url",
]

logger = logging.getLogger(__name__)

DEFAULT_TIMEOUT = httpx.Timeout(30.0, connect=5.0)
_USER_AGENT = "labelbridge"
_LOCAL_HOSTS = {"localhost", "127.0.0.1", "::1", "0.0.0.0"}
_SENSITIVE_PARAMS = ("sig", "token", "key", "secret", "credential", "password", "auth", "x-amz-")

TokenKind = Literal["legacy", "personal"]


def redact_url(url: str) -> str:
    """The URL without user info and with signature-like query values masked: safe for messages.

    Presigned URLs carry credentials in their query string; they must never reach a log line.
    """
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<invalid url>"
    netloc = parts.netloc.rsplit("@", 1)[-1]
    query = parts.query
    if query:
        pairs = parse_qsl(query, keep_blank_values=True)
        masked = [
            (k, "***" if any(s in k.lower() for s in _SENSITIVE_PARAMS) else v) for k, v in pairs
        ]
        query = urlencode(masked, safe="/*")
    return urlunsplit((parts.scheme, netloc, parts.path, query, ""))


def _b64url_decode(part: str) -> bytes:
    return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))


def _jwt_claims(token: str) -> dict[str, Any] | None:
    """The payload of a JWT, unverified (we only need `exp`), or None when it is not a JWT."""
    parts = token.split(".")
    if len(parts) != 3 or not all(parts):
        return None
    try:
        header = json.loads(_b64url_decode(parts[0]))
        claims = json.loads(_b64url_decode(parts[1]))
    except (ValueError, binascii.Error):
        return None
    if not isinstance(header, dict) or not isinstance(claims, dict):
        return None
    return claims


def is_personal_access_token(token: str) -> bool:
    """True for a PAT (a JWT: three base64url parts), False for a legacy token."""
    return _jwt_claims(token.strip()) is not None


def _secret(token: str | SecretStr | None) -> str | None:
    if token is None:
        return None
    raw = token.get_secret_value() if isinstance(token, SecretStr) else token
    return raw.strip() or None


def unreachable_fix(url: str, setting: str = "LABEL_STUDIO_URL") -> str:
    """The fix for a refused connection, with the Docker hint when the URL says localhost."""
    fix = f"check that {setting} ({redact_url(url)}) is right and reachable from this machine"
    host = (urlsplit(url).hostname or "").lower()
    if host in _LOCAL_HOSTS or host.startswith("127."):
        fix += (
            "; inside Docker, localhost is the container itself: use the host's address "
            "(e.g. http://host.docker.internal:8080) or the compose service name"
        )
    return fix


def auth_fix(kind: TokenKind | None) -> str:
    """What to do about a 401, depending on the token kind we sent."""
    if kind is None:
        return "set LABEL_STUDIO_API_KEY to a personal access token (Account & Settings)"
    if kind == "legacy":
        return (
            "the legacy token was refused: legacy tokens are off by default in new organizations; "
            "set LABEL_STUDIO_API_KEY to a personal access token (Account & Settings > Personal "
            "Access Token) or enable legacy tokens in the organization's settings"
        )
    return (
        "the personal access token was refused: it may be revoked or from another Label Studio; "
        "create a new one (Account & Settings) and set LABEL_STUDIO_API_KEY"
    )


class LabelStudioAuth(httpx.Auth):
    """httpx auth for both Label Studio token kinds; thread-safe; never logs or repr()s a token.

    A PAT is exchanged for an access token, cached, refreshed shortly before its `exp` and once
    more on a 401 (the access token may have been revoked, or clocks disagree).
    """

    def __init__(
        self,
        token: str | SecretStr,
        base_url: str,
        *,
        timeout: float = 10.0,
        refresh_margin: float = 30.0,
    ) -> None:
        secret = _secret(token)
        if secret is None:
            raise ValueError("an empty Label Studio token")
        self._token = secret
        self.base_url = base_url.rstrip("/")
        self.refresh_url = f"{self.base_url}/api/token/refresh/"
        self.kind: TokenKind = "personal" if is_personal_access_token(secret) else "legacy"
        self._timeout = httpx.Timeout(timeout)
        self._margin = refresh_margin
        self._lock = threading.Lock()
        self._access: str | None = None
        self._refresh_at = 0.0
        self.refresh_count = 0

    def __repr__(self) -> str:
        return f"LabelStudioAuth(kind={self.kind!r}, base_url={self.base_url!r})"

    def _current(self) -> str | None:
        if self._access is not None and time.monotonic() < self._refresh_at:
            return self._access
        return None

    def _refresh_request(self) -> httpx.Request:
        # Built by hand, so the client's timeout does not apply: set ours explicitly.
        return httpx.Request(
            "POST",
            self.refresh_url,
            json={"refresh": self._token},
            headers={"Accept": "application/json", "User-Agent": _USER_AGENT},
            extensions={"timeout": self._timeout.as_dict()},
        )

    def _store(self, response: httpx.Response) -> str:
        """Keep the access token from a refresh answer, or raise a LabelStudioError."""
        status = response.status_code
        if status != 200:
            if status in (401, 403):
                fix = auth_fix("personal")
            elif status == 404:
                fix = (
                    "this Label Studio has no /api/token/refresh/ (older than 1.14?): "
                    "use its legacy token in LABEL_STUDIO_API_KEY"
                )
            else:
                fix = "see Label Studio's logs"
            raise LabelStudioError(
                f"Label Studio answered {status} when exchanging the personal access token "
                f"at {self.refresh_url}",
                fix=fix,
                url=self.refresh_url,
                status=status,
            )
        try:
            access = response.json()["access"]
        except (ValueError, KeyError, TypeError):
            access = None
        if not isinstance(access, str) or not access:
            raise LabelStudioError(
                f"Label Studio's answer at {self.refresh_url} has no access token",
                fix="check that LABEL_STUDIO_URL points at Label Studio itself",
                url=self.refresh_url,
                status=status,
            )
        claims = _jwt_claims(access) or {}
        exp, iat = claims.get("exp"), claims.get("iat")
        if isinstance(exp, (int, float)) and isinstance(iat, (int, float)):
            lifetime = float(exp - iat)  # immune to clock skew between us and Label Studio
        elif isinstance(exp, (int, float)):
            lifetime = float(exp) - time.time()
        else:
            lifetime = 300.0
        lifetime = max(lifetime, 0.0)
        self._refresh_at = time.monotonic() + lifetime - min(self._margin, lifetime * 0.1)
        self._access = access
        self.refresh_count += 1
        logger.debug("got a Label Studio access token valid %.0f s", lifetime)
        return access

    def sync_auth_flow(
        self, request: httpx.Request
    ) -> Generator[httpx.Request, httpx.Response, None]:
        if self.kind == "legacy":
            request.headers["Authorization"] = f"Token {self._token}"
            yield request
            return
        # The lock is held across the refresh round trip so that N threads refresh once.
        with self._lock:
            access = self._current()
            if access is None:
                refreshed = yield self._refresh_request()
                refreshed.read()
                access = self._store(refreshed)
        request.headers["Authorization"] = f"Bearer {access}"
        response = yield request
        if response.status_code != 401:
            return
        with self._lock:
            if self._access == access:  # nobody refreshed meanwhile: ours went stale
                refreshed = yield self._refresh_request()
                refreshed.read()
                self._store(refreshed)
            access = self._access or access
        request.headers["Authorization"] = f"Bearer {access}"
        yield request

    async def async_auth_flow(
        self, request: httpx.Request
    ) -> AsyncGenerator[httpx.Request, httpx.Response]:
        # No lock across awaits: in rare races two coroutines both refresh, which is harmless.
        if self.kind == "legacy":
            request.headers["Authorization"] = f"Token {self._token}"
            yield request
            return
        with self._lock:
            access = self._current()
        if access is None:
            refreshed = yield self._refresh_request()
            await refreshed.aread()
            with self._lock:
                access = self._store(refreshed)
        request.headers["Authorization"] = f"Bearer {access}"
        response = yield request
        if response.status_code != 401:
            return
        refreshed = yield self._refresh_request()
        await refreshed.aread()
        with self._lock:
            access = self._store(refreshed)
        request.headers["Authorization"] = f"Bearer {access}"
        yield request


def _detail(response: httpx.Response) -> str:
    """Label Studio's own error text (its JSON `detail`), short; never the raw body."""
    try:
        body = response.json()
    except ValueError:
        return ""
    if isinstance(body, dict):
        detail = body.get("detail") or body.get("validation_errors") or body.get("error")
        if detail:
            return str(detail)[:300]
    return ""


class LabelStudio:
    """The few Label Studio REST calls labelbridge needs; raises LabelStudioError with a fix."""

    def __init__(
        self,
        url: str,
        token: str | SecretStr | None,
        *,
        timeout: float | httpx.Timeout = DEFAULT_TIMEOUT,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        if not url or not url.strip():
            raise LabelStudioError(
                "no Label Studio URL is known",
                fix="set LABEL_STUDIO_URL (Label Studio's address as this machine sees it)",
            )
        self.url = url.strip().rstrip("/")
        secret = _secret(token)
        timeout_ = timeout if isinstance(timeout, httpx.Timeout) else httpx.Timeout(timeout)
        self.auth = (
            LabelStudioAuth(secret, self.url, timeout=timeout_.read or 10.0) if secret else None
        )
        self._client = httpx.Client(
            base_url=self.url + "/",
            auth=self.auth,
            timeout=timeout_,
            transport=transport,
            follow_redirects=True,
            headers={"User-Agent": _USER_AGENT, "Accept": "application/json"},
        )

    def __repr__(self) -> str:
        kind = self.auth.kind if self.auth else None
        return f"LabelStudio(url={self.url!r}, token_kind={kind!r})"

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> LabelStudio:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- plumbing
    def request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, Any] | None = None,
        json: Any = None,
        ok: Sequence[int] = (200, 201, 204),
        follow_redirects: bool = True,
    ) -> httpx.Response:
        """One call; any failure becomes a LabelStudioError naming the URL, status and fix."""
        url = f"{self.url}/{path.lstrip('/')}"
        try:
            response = self._client.request(
                method,
                path.lstrip("/"),
                params=dict(params) if params else None,
                json=json,
                follow_redirects=follow_redirects,
            )
        except httpx.TimeoutException as exc:
            raise LabelStudioError(
                f"Label Studio did not answer {method} {redact_url(url)} in time ({exc!r})",
                fix="check that Label Studio is up; raise the timeout for large projects",
                url=redact_url(url),
            ) from exc
        except httpx.TransportError as exc:
            raise LabelStudioError(
                f"cannot reach Label Studio at {redact_url(url)}: {exc}",
                fix=unreachable_fix(self.url),
                url=redact_url(url),
            ) from exc
        if response.status_code not in ok:
            raise self._status_error(method, response)
        return response

    def _status_error(self, method: str, response: httpx.Response) -> LabelStudioError:
        status = response.status_code
        url = redact_url(str(response.request.url))
        detail = _detail(response)
        message = f"Label Studio answered {status} to {method} {url}"
        if detail:
            message += f": {detail}"
        if status == 401:
            fix = auth_fix(self.auth.kind if self.auth else None)
        elif status == 403:
            fix = (
                "the token's user may not see this object: use a token of a user in the "
                "project's organization, or check LABEL_STUDIO_API_KEY"
            )
        elif status == 404:
            fix = "check the id exists in this Label Studio and that LABEL_STUDIO_URL is right"
        elif status >= 500:
            fix = "Label Studio failed: see its logs"
        else:
            fix = "see Label Studio's message above"
        return LabelStudioError(message, fix=fix, url=url, status=status)

    def _json(self, method: str, path: str, **kwargs: Any) -> Any:
        response = self.request(method, path, **kwargs)
        if response.status_code == 204 or not response.content:
            return None
        try:
            return response.json()
        except ValueError as exc:
            raise LabelStudioError(
                f"Label Studio's answer to {method} {redact_url(str(response.url))} is not JSON",
                fix="check that LABEL_STUDIO_URL points at Label Studio itself, not a proxy page",
            ) from exc

    # --- the API
    def whoami(self) -> dict[str, Any]:
        """The token's user: the cheapest call that proves URL and token both work."""
        result: dict[str, Any] = self._json("GET", "/api/current-user/whoami")
        return result

    def get_project(self, project_id: int) -> dict[str, Any]:
        result: dict[str, Any] = self._json("GET", f"/api/projects/{int(project_id)}/")
        return result

    def iter_tasks(
        self,
        project: int,
        *,
        page_size: int = 100,
        fields: Literal["all", "task_only"] = "all",
        filters: Mapping[str, Any] | None = None,
        task_ids: Iterable[int] | None = None,
    ) -> Iterator[dict[str, Any]]:
        """Every task of a project, page by page (`fields="all"` includes annotations).

        `filters` is a Data Manager filter, e.g. `{"conjunction": "and", "items": [...]}`;
        `task_ids` restricts to those tasks. Both go in Label Studio's `query` parameter.
        """
        if page_size < 1:
            raise ValueError("page_size must be >= 1")
        query: dict[str, Any] = {}
        if filters:
            query["filters"] = dict(filters)
        if task_ids is not None:
            query["selectedItems"] = {"all": False, "included": [int(i) for i in task_ids]}
        params: dict[str, Any] = {"project": int(project), "page_size": page_size, "fields": fields}
        if query:
            params["query"] = json.dumps(query)
        seen = 0
        page = 1
        while True:
            params["page"] = page
            try:
                body = self._json("GET", "/api/tasks/", params=params)
            except LabelStudioError as exc:
                if page > 1 and exc.extra.get("status") == 404:
                    return  # Django's paginator: "Invalid page." past the end
                raise
            if isinstance(body, list):  # very old versions answer a bare list
                tasks, total = body, None
            else:
                tasks, total = body.get("tasks") or [], body.get("total")
            yield from tasks
            seen += len(tasks)
            if len(tasks) < page_size or (isinstance(total, int) and seen >= total):
                return
            page += 1

    def get_task(self, task_id: int) -> dict[str, Any]:
        result: dict[str, Any] = self._json("GET", f"/api/tasks/{int(task_id)}/")
        return result

    def list_annotations(self, task_id: int) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self._json("GET", f"/api/tasks/{int(task_id)}/annotations/")
        return result

    def get_annotation(self, annotation_id: int) -> dict[str, Any]:
        result: dict[str, Any] = self._json("GET", f"/api/annotations/{int(annotation_id)}/")
        return result

    def annotated_tasks(
        self, project: int, *, via: Literal["export", "tasks"] = "export"
    ) -> list[dict[str, Any]]:
        """Tasks with their non-cancelled annotations, for training.

        `export` is one call to `/api/projects/<id>/export?exportType=JSON` (what Label Studio's
        own export does; only annotated tasks); `tasks` pages through `/api/tasks/` instead, for
        projects so large that one export answer would time out.
        """
        if via == "export":
            raw = self._json(
                "GET",
                f"/api/projects/{int(project)}/export",
                params={"exportType": "JSON", "download_all_tasks": "false"},
            )
            tasks: Iterable[dict[str, Any]] = raw or []
        else:
            tasks = self.iter_tasks(project, fields="all")
        out = []
        for task in tasks:
            kept = [a for a in task.get("annotations") or [] if not a.get("was_cancelled")]
            if kept:
                out.append({**task, "annotations": kept})
        return out

    def list_predictions(
        self, *, project: int | None = None, task: int | None = None
    ) -> list[dict[str, Any]]:
        params = {k: int(v) for k, v in (("project", project), ("task", task)) if v is not None}
        body = self._json("GET", "/api/predictions/", params=params)
        if isinstance(body, dict):  # a paginated answer, should a version add paging
            results: list[dict[str, Any]] = body.get("results") or []
            return results
        return list(body or [])

    def create_prediction(self, item: Mapping[str, Any]) -> dict[str, Any]:
        """One prediction `{"task", "result", "score", "model_version"}`; returns it with its id."""
        result: dict[str, Any] = self._json("POST", "/api/predictions/", json=dict(item))
        return result

    def create_predictions(
        self, items: Iterable[Mapping[str, Any]], *, project: int | None = None
    ) -> int:
        """Store predictions; returns how many were created.

        With `project`, one bulk call to `/api/projects/<id>/import/predictions` (all items must
        be tasks of that project, or Label Studio rejects the whole batch with 400); without,
        one POST /api/predictions/ per item.
        """
        batch = [dict(item) for item in items]
        if not batch:
            return 0
        if project is None:
            for item in batch:
                self.create_prediction(item)
            return len(batch)
        body = self._json("POST", f"/api/projects/{int(project)}/import/predictions", json=batch)
        created = body.get("created") if isinstance(body, dict) else None
        return int(created) if isinstance(created, int) else len(batch)

    def presign(self, task_id: int, fileuri: str) -> str | bytes:
        """Resolve a cloud URI (s3://, gs://, azure-blob://) through Label Studio's storage.

        Label Studio answers a 303 to a presigned URL (returned as str) or, when its storage has
        presigning off, the file itself (returned as bytes).
        """
        encoded = base64.urlsafe_b64encode(fileuri.encode()).decode()
        response = self.request(
            "GET",
            f"/tasks/{int(task_id)}/presign/",
            params={"fileuri": encoded},
            ok=(200, 301, 302, 303, 307, 308),
            follow_redirects=False,
        )
        if response.is_redirect:
            return str(response.next_request.url) if response.next_request else ""
        return response.content
