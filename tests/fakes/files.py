"""A plain HTTP file server for asset tests: sizes, chunked bodies, slow bodies, redirects.

with FakeFileServer() as files:
    url = files.add("cat.png", b"...", delay=0.3)   # -> http://127.0.0.1:<port>/files/cat.png
    files.hits("/files/cat.png")                     # how many GETs reached it
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass

import anyio
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response, StreamingResponse
from starlette.routing import Route

from fakes._server import ServerThread


@dataclass
class FileSpec:
    """How one file is served."""

    content: bytes
    content_type: str = "application/octet-stream"
    chunked: bool = False  # no Content-Length: the client must count bytes itself
    delay: float = 0.0  # seconds before the headers
    trickle: float = 0.0  # seconds between chunks (implies chunked)
    chunk_size: int = 1024
    redirect_to: str | None = None
    status: int = 200


class FakeFileServer:
    def __init__(self) -> None:
        self.files: dict[str, FileSpec] = {}
        self._hits: Counter[str] = Counter()
        self._lock = threading.Lock()
        self._server: ServerThread | None = None
        self.url = ""

    def start(self) -> FakeFileServer:
        self._server = ServerThread(Starlette(routes=[Route("/{path:path}", self._serve)]))
        self._server.start()
        self.url = self._server.url
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop()

    def __enter__(self) -> FakeFileServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def add(self, name: str, content: bytes = b"", **options: object) -> str:
        """Serve `content` at /files/<name>; returns its full URL."""
        self.files[f"/files/{name}"] = FileSpec(content, **options)  # type: ignore[arg-type]
        return f"{self.url}/files/{name}"

    def redirect(self, name: str, to: str) -> str:
        return self.add(name, redirect_to=to)

    def hits(self, path: str) -> int:
        with self._lock:
            return self._hits[path]

    async def _serve(self, request: Request) -> Response:
        path = request.url.path
        with self._lock:
            self._hits[path] += 1
        spec = self.files.get(path)
        if spec is None:
            return Response(b"not found", status_code=404)
        if spec.delay:
            await anyio.sleep(spec.delay)
        if spec.redirect_to:
            return RedirectResponse(spec.redirect_to, status_code=302)
        if not (spec.chunked or spec.trickle):
            return Response(spec.content, status_code=spec.status, media_type=spec.content_type)

        async def body() -> AsyncIterator[bytes]:
            for start in range(0, len(spec.content), spec.chunk_size):
                yield spec.content[start : start + spec.chunk_size]
                if spec.trickle:
                    await anyio.sleep(spec.trickle)

        return StreamingResponse(body(), status_code=spec.status, media_type=spec.content_type)
