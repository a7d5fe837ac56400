"""Reading task data safely: one call turns a task field's value into a local file.

Task data arrives unresolved (`/data/upload/...`, `/data/local-files/?d=...`, `s3://`, URLs,
data URIs, inline text). Model authors should not need Label Studio's auth, cloud SDKs or SSRF
rules, so `AssetResolver.get_local_path(value, task_id=...)` does it all and caches each asset on
disk under a key derived from its source, keeping the original file name (models often dispatch
on the extension). The cache is bounded (ASSET_CACHE_MAX_BYTES): the least recently used assets
are evicted, never one in use by another thread or process (see labelbridge._asset_cache).

Safety in one place: a size limit (Content-Length, then counted while streaming), a total time
limit per download, local paths only under ASSET_LOCAL_ROOTS after resolving symlinks, and for
http(s) an optional host allow-list plus refusal of private/loopback/link-local/multicast/reserved
addresses (every DNS answer checked before connecting, the connected peer checked again, every
redirect re-checked). Label Studio's own origin is always allowed: it is usually on localhost.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import hashlib
import ipaddress
import mimetypes
import os
import re
import socket
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import IO, Any, Literal
from urllib.parse import parse_qs, unquote, unquote_to_bytes, urljoin, urlsplit

import httpx
from pydantic import SecretStr

from labelbridge._asset_cache import AssetCache
from labelbridge.errors import (
    AssetError,
    AssetNotFound,
    AssetRefused,
    AssetTooLarge,
    AssetUnauthorized,
    AssetUnreachable,
    LabelStudioError,
    MissingDependency,
)
from labelbridge.labelstudio import LabelStudioAuth, auth_fix, redact_url, unreachable_fix
from labelbridge.settings import Settings

__all__ = ["AssetResolver", "get_local_path", "shared_resolver"]

Kind = Literal["http", "ls", "s3", "gs", "azure", "data", "path", "text"]
Item = str | tuple[str, int | None]
Chunks = tuple[Iterator[bytes], Any, str | None]  # (body, size if known, content type)

_CHUNK = 64 * 1024
#: seconds close() waits for a running cache sweep (one sweep evicts for at most ~2 s)
CLOSE_SWEEP_WAIT = 10.0
_MAX_REDIRECTS = 5
_REDIRECTS = {301, 302, 303, 307, 308}
_LS_PREFIXES = ("/data/upload/", "/data/local-files")
_CLOUD: dict[str, Kind] = {"s3": "s3", "gs": "gs", "gcs": "gs", "azure-blob": "azure"}
_PACKAGES = {"s3": "boto3", "gs": "google-cloud-storage", "azure": "azure-storage-blob"}
_PATH_LIKE = re.compile(r"^[^\s:]+\.[A-Za-z0-9]{1,8}$")
_NAME_SAFE = re.compile(r"[^A-Za-z0-9._-]+")
_DEFAULT_PORTS = {"http": 80, "https": 443}
_ROOTS_FIX = "mount the folder into this machine/container and add it to ASSET_LOCAL_ROOTS"
_SIZE_FIX = "raise ASSET_MAX_BYTES if this asset is expected"


@dataclass(frozen=True)
class _Source:
    """A classified task value: what to fetch, under which cache key, and its file name."""

    kind: Kind
    value: str
    key: str
    filename: str
    local_files: str | None = None  # the `d` of a /data/local-files/ URL


def _safe_name(name: str, default: str = "asset") -> str:
    name = _NAME_SAFE.sub("_", PurePosixPath(unquote(name)).name).strip("._") or default
    stem, suffix = os.path.splitext(name)
    return stem[: 100 - len(suffix[:12])] + suffix[:12]


def _is_local_host(host: str) -> bool:
    return host in ("localhost", "0.0.0.0", "::1") or host.startswith("127.")


def _origin(url: str) -> tuple[str, str, int | None]:
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    return scheme, (parts.hostname or "").lower(), parts.port or _DEFAULT_PORTS.get(scheme)


def _forbidden_ip(address: str) -> bool:
    """Private, loopback, link-local (cloud metadata), multicast, reserved or unspecified."""
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return True
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return not ip.is_global or ip.is_multicast or ip.is_reserved or ip.is_link_local


def _host_allowed(host: str, port: int | None, allowed: list[str]) -> bool:
    """Exact host, `host:port`, or `*.domain` / `.domain` for subdomains."""
    for entry in (e.strip().lower() for e in allowed if e.strip()):
        name, _, entry_port = entry.rpartition(":") if entry.count(":") == 1 else (entry, "", "")
        if entry_port and entry_port != str(port):
            continue
        name = name[1:] if name.startswith("*.") else name
        if host == name or (name.startswith(".") and host.endswith(name)):
            return True
    return False


def _where(url: str, task_id: int | None) -> str:
    return redact_url(url) + (f" (task {task_id})" if task_id is not None else "")


class _Budget:
    """Bytes and seconds left for one asset; raises the right error when either runs out."""

    def __init__(self, max_bytes: int, seconds: float, what: str) -> None:
        self.max_bytes, self.seconds, self.what = max_bytes, seconds, what
        self.deadline = time.monotonic() + seconds
        self.count = 0

    def remaining(self) -> float:
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise self.too_slow()
        return left

    def too_slow(self) -> AssetUnreachable:
        return AssetUnreachable(
            f"downloading {self.what} took longer than ASSET_TIMEOUT={self.seconds:g} s",
            fix="raise ASSET_TIMEOUT, or make the asset smaller or closer",
        )

    def check_length(self, length: Any, how: str = "Content-Length") -> None:
        with contextlib.suppress(TypeError, ValueError):
            if int(length) > self.max_bytes:
                raise AssetTooLarge(
                    f"{self.what} is {int(length)} bytes ({how}), "
                    f"over ASSET_MAX_BYTES={self.max_bytes}",
                    fix=_SIZE_FIX,
                )

    def copy(self, chunks: Iterable[bytes], fh: IO[bytes]) -> None:
        for chunk in chunks:
            self.count += len(chunk)
            if self.count > self.max_bytes:
                raise AssetTooLarge(
                    f"{self.what} exceeded ASSET_MAX_BYTES={self.max_bytes} while downloading",
                    fix=_SIZE_FIX,
                )
            self.remaining()
            fh.write(chunk)


class AssetResolver:
    """Resolves task values to local files, with a shared on-disk cache and in-flight dedup.

    Label Studio's URL and token come from settings first (LABEL_STUDIO_URL,
    LABEL_STUDIO_API_KEY), then from the arguments (what /setup sent): /setup's hostname is only
    a default, and its token is the legacy one, which new organizations refuse.
    """

    def __init__(
        self,
        settings: Settings | None = None,
        *,
        label_studio_url: str | None = None,
        token: str | SecretStr | None = None,
    ) -> None:
        self.settings = s = settings or Settings.model_validate({})
        url = (s.label_studio_url or label_studio_url or "").strip().rstrip("/")
        self.label_studio_url = url or None
        key = s.label_studio_api_key or token
        secret = (key.get_secret_value() if isinstance(key, SecretStr) else key or "").strip()
        self._auth = LabelStudioAuth(secret, url) if secret and url else None
        self.cache_dir = (s.asset_cache_dir or s.resolved_model_dir() / ".assets").absolute()
        self._cache = AssetCache(self.cache_dir, s.asset_cache_max_bytes)
        self._roots = [Path(r).expanduser().resolve() for r in s.asset_local_roots]
        self._client = httpx.Client(
            trust_env=False,  # a proxy would hide the peer address we check
            headers={"User-Agent": "labelbridge"},
            limits=httpx.Limits(max_connections=max(10, 2 * s.asset_concurrency)),
        )
        self._flights: dict[str, Future[Path]] = {}
        self._lock = threading.Lock()
        self._s3: Any = None

    def __repr__(self) -> str:
        return f"AssetResolver(label_studio_url={self.label_studio_url!r}, cache={self.cache_dir})"

    def close(self) -> None:
        """Also waits (up to CLOSE_SWEEP_WAIT s) for a cache sweep this process started: a
        caller may remove the cache folder next (the doctor's temporary one), under it."""
        self._client.close()
        self._cache.wait_for_sweep(CLOSE_SWEEP_WAIT)

    def __enter__(self) -> AssetResolver:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- public API
    def get_local_path(self, value: str, *, task_id: int | None = None) -> Path:
        """A local file with the asset's bytes (cached; the original file name kept)."""
        src = self._classify(value, task_id)
        if src.kind == "path":
            path = self._under_roots(src.value, task_id, missing_ok=False)
            assert path is not None
            return path
        if src.local_files is not None:  # Label Studio's local storage, mounted here too?
            direct = self._under_roots(src.local_files, task_id, missing_ok=True)
            if direct is not None:
                return direct
        return self._cached(src, task_id)

    def read_bytes(self, value: str, *, task_id: int | None = None) -> bytes:
        src = self._classify(value, task_id)
        if src.kind == "text":
            return src.value.encode()
        if src.kind == "data":
            return self._decode_data(src.value, task_id)[0]
        return self.get_local_path(value, task_id=task_id).read_bytes()

    def read_text(self, value: str, *, task_id: int | None = None, encoding: str = "utf-8") -> str:
        """The asset as text; a value that is not a URL or path is the text itself."""
        src = self._classify(value, task_id)
        if src.kind == "text":
            return src.value
        return self.read_bytes(value, task_id=task_id).decode(encoding, errors="replace")

    def get_many(self, items: Iterable[Item]) -> list[Path | AssetError]:
        """Many assets, ASSET_CONCURRENCY at a time; errors are returned in place, not raised."""
        pairs = [(i, None) if isinstance(i, str) else (i[0], i[1]) for i in items]

        def one(pair: tuple[str, int | None]) -> Path | AssetError:
            try:
                return self.get_local_path(pair[0], task_id=pair[1])
            except AssetError as exc:
                return exc
            except MissingDependency as exc:
                return AssetError(exc.detail, fix=exc.fix)

        if not pairs:
            return []
        workers = min(self.settings.asset_concurrency, len(pairs))
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="assets") as pool:
            return list(pool.map(one, pairs))

    async def aget_local_path(self, value: str, *, task_id: int | None = None) -> Path:
        return await asyncio.to_thread(self.get_local_path, value, task_id=task_id)

    async def aread_bytes(self, value: str, *, task_id: int | None = None) -> bytes:
        return await asyncio.to_thread(self.read_bytes, value, task_id=task_id)

    async def aread_text(self, value: str, *, task_id: int | None = None) -> str:
        return await asyncio.to_thread(self.read_text, value, task_id=task_id)

    async def aget_many(self, items: Iterable[Item]) -> list[Path | AssetError]:
        return await asyncio.to_thread(self.get_many, list(items))

    # --- classification
    def _is_ls(self, url: str) -> bool:
        ls = self.label_studio_url
        return ls is not None and _origin(url) == _origin(ls)

    def _need_ls(self, what: str, task_id: int | None) -> str:
        if not self.label_studio_url:
            raise AssetUnreachable(
                f"{_where(what, task_id)} is a Label Studio path but Label Studio's URL is unknown",
                fix="set LABEL_STUDIO_URL to Label Studio's address as this backend sees it",
            )
        return self.label_studio_url

    def _classify(self, value: str, task_id: int | None) -> _Source:
        if not isinstance(value, str):
            raise AssetError(f"task value {value!r} is not a string", fix="pass a URL or path")
        v = value.strip()
        digest = hashlib.sha256(value.encode()).hexdigest()
        if v.startswith("data:"):
            mime = v[5:].split(",", 1)[0].split(";", 1)[0] or "text/plain"
            return _Source(
                "data", v, "data:" + digest, "data" + (mimetypes.guess_extension(mime) or ".bin")
            )
        if "\n" in v or len(v) > 8192:
            return _Source("text", value, "text:" + digest, "text.txt")
        if v.startswith(_LS_PREFIXES):
            v = self._need_ls(v, task_id) + v
        parts = urlsplit(v)
        scheme = parts.scheme.lower()
        if scheme in ("http", "https"):
            ls = self.label_studio_url
            host = (parts.hostname or "").lower()
            if ls and parts.path.startswith(_LS_PREFIXES) and _is_local_host(host):
                # Label Studio wrote its own localhost address; from here (often another
                # container) it is reachable under LABEL_STUDIO_URL instead.
                v = ls + v[v.index(parts.path) :]
                parts = urlsplit(v)
            is_ls = self._is_ls(v)
            d = None
            if is_ls and parts.path.startswith("/data/local-files"):
                d = parse_qs(parts.query).get("d", [""])[0] or None
            return _Source("ls" if is_ls else "http", v, v, _safe_name(d or parts.path), d)
        if scheme in _CLOUD:
            if not parts.netloc or not parts.path.strip("/"):
                raise AssetNotFound(
                    f"{_where(v, task_id)} has no bucket or key", fix="use <scheme>://bucket/key"
                )
            return _Source(_CLOUD[scheme], v, v, _safe_name(parts.path))
        if scheme == "file":
            return _Source("path", unquote(parts.path), v, _safe_name(parts.path))
        if len(scheme) > 1 and parts.netloc:
            raise AssetRefused(
                f"{_where(v, task_id)}: the {scheme}:// scheme is not supported",
                fix="use http(s)://, s3://, gs://, azure-blob://, a data: URI or a local path",
            )
        explicit = v.startswith(("/", "./", "../")) or bool(_PATH_LIKE.match(v) and "/" in v)
        # A bare "cat.jpg" is a path only if it exists under a root; otherwise it is text.
        if explicit or (_PATH_LIKE.match(v) and any((r / v).is_file() for r in self._roots)):
            return _Source("path", v, v, _safe_name(v))
        return _Source("text", value, "text:" + digest, "text.txt")

    # --- local files
    def _under_roots(self, raw: str, task_id: int | None, *, missing_ok: bool) -> Path | None:
        """The real path of `raw` if it lies under a root once every symlink is resolved."""
        where = f"local path {raw!r}{_where('', task_id)}"
        rel = PurePosixPath(raw.replace("\\", "/"))
        if ".." in rel.parts:
            raise AssetRefused(f"{where} contains '..'", fix="use a path inside ASSET_LOCAL_ROOTS")
        roots = ", ".join(map(str, self._roots)) or "none configured"
        outside = AssetRefused(
            f"{where} is outside the folders assets may be read from ({roots})", fix=_ROOTS_FIX
        )
        if not self._roots and not missing_ok:
            raise outside
        escaped = False
        for candidate in [Path(raw)] if rel.is_absolute() else [r / raw for r in self._roots]:
            try:
                real = candidate.resolve()
            except (OSError, RuntimeError):
                continue
            if not any(real.is_relative_to(root) for root in self._roots):
                escaped = True
            elif real.is_file():
                _Budget(self.settings.asset_max_bytes, 1, where).check_length(
                    real.stat().st_size, "file size"
                )
                return real
        if escaped:
            raise outside
        if missing_ok:
            return None
        raise AssetNotFound(
            f"{where} does not exist under {roots}",
            fix="check the path, and that the folder is mounted where ASSET_LOCAL_ROOTS says",
        )

    # --- the cache: one download per key, across threads and processes (see _asset_cache)
    def _cached(self, src: _Source, task_id: int | None) -> Path:
        digest = hashlib.sha256(src.key.encode()).hexdigest()
        entry = self._cache.entry(digest)
        hit = self._cache.get(entry)
        if hit is not None:
            return hit
        with self._lock:
            flight = self._flights.get(digest)
            owner = flight is None
            if flight is None:
                flight = self._flights[digest] = Future()
        if not owner:
            return flight.result()  # another thread is fetching the same asset
        try:
            path = self._download(src, task_id, entry)
            flight.set_result(path)
            return path
        except BaseException as exc:
            flight.set_exception(exc)
            raise
        finally:
            with self._lock:
                self._flights.pop(digest, None)

    def _download(self, src: _Source, task_id: int | None, entry: Path) -> Path:
        """Fetch into a staging folder that the cache renames into place: atomic for readers."""

        def write(staging: Path) -> Path:
            with open(staging / "data", "wb") as fh:
                content_type = self._fetch(src, task_id, fh)
            name = src.filename
            if not os.path.splitext(name)[1] and content_type:
                name += mimetypes.guess_extension(content_type.split(";")[0].strip()) or ""
            return (staging / "data").rename(staging / name)

        hit = self._cache.fill(entry, write)
        if hit is None:
            raise AssetError(f"cache entry for {_where(src.value, task_id)} vanished")
        return hit

    def _fetch(self, src: _Source, task_id: int | None, fh: IO[bytes]) -> str | None:
        """Write the asset's bytes to fh; returns its content type when known."""
        s = self.settings
        budget = _Budget(s.asset_max_bytes, s.asset_timeout, _where(src.value, task_id))
        if src.kind in ("http", "ls"):
            return self._fetch_http(src.value, task_id, fh, budget)
        if src.kind in _PACKAGES:
            return self._fetch_cloud(src, task_id, fh, budget)
        if src.kind == "data":
            data, mime = self._decode_data(src.value, task_id)
            fh.write(data)
            return mime
        fh.write(src.value.encode())
        return "text/plain"

    # --- http(s)
    def _check_url(self, url: str, task_id: int | None) -> bool:
        """Apply the host rules; True when the URL is Label Studio's (our auth goes with it)."""
        scheme, host, port = _origin(url)
        if scheme not in ("http", "https") or not host:
            raise AssetRefused(
                f"{_where(url, task_id)}: only http(s) is fetched", fix="use http(s)"
            )
        if self._is_ls(url):
            return True
        s = self.settings
        if s.asset_allowed_hosts and not _host_allowed(host, port, s.asset_allowed_hosts):
            raise AssetRefused(
                f"{_where(url, task_id)}: host {host!r} is not in ASSET_ALLOWED_HOSTS",
                fix=f"add {host} to ASSET_ALLOWED_HOSTS if this backend may fetch from it",
            )
        if not s.asset_allow_private:
            try:
                infos = socket.getaddrinfo(urlsplit(url).hostname, port, type=socket.SOCK_STREAM)
            except (OSError, UnicodeError) as exc:
                raise AssetUnreachable(
                    f"{_where(url, task_id)}: cannot resolve {host!r} ({exc})",
                    fix="check the host name, and DNS from this machine/container",
                ) from exc
            bad = sorted({str(i[4][0]) for i in infos if _forbidden_ip(str(i[4][0]))})
            if bad:
                raise self._private(url, task_id, bad[0])
        return False

    @staticmethod
    def _private(url: str, task_id: int | None, address: str) -> AssetRefused:
        return AssetRefused(
            f"{_where(url, task_id)}: {address} is a private, loopback, link-local or reserved "
            "address, refused",
            fix="set ASSET_ALLOW_PRIVATE=true if the asset really is on your own network",
        )

    def _peer_guard(self, url: str, task_id: int | None) -> Callable[[str, dict[str, Any]], None]:
        """A trace hook re-checking the connected peer: defeats DNS rebinding before any byte."""

        def trace(event: str, info: dict[str, Any]) -> None:
            stream = info.get("return_value")
            if event != "connection.connect_tcp.complete" or stream is None:
                return
            peer = stream.get_extra_info("server_addr")
            if peer and _forbidden_ip(str(peer[0])):
                stream.close()
                raise self._private(url, task_id, str(peer[0]))

        return trace

    def _fetch_http(
        self, url: str, task_id: int | None, fh: IO[bytes], budget: _Budget
    ) -> str | None:
        for _ in range(_MAX_REDIRECTS + 1):
            is_ls = self._check_url(url, task_id)  # again for every redirect
            guard = not is_ls and not self.settings.asset_allow_private
            try:
                with self._client.stream(
                    "GET",
                    url,
                    auth=self._auth if is_ls and self._auth else None,  # never to other hosts
                    timeout=httpx.Timeout(budget.remaining()),
                    follow_redirects=False,
                    extensions={"trace": self._peer_guard(url, task_id)} if guard else None,
                ) as response:
                    if response.status_code in _REDIRECTS and "location" in response.headers:
                        url = urljoin(url, response.headers["location"])
                        continue
                    self._check_status(response, url, task_id, is_ls)
                    budget.check_length(response.headers.get("content-length"))
                    self._stream(response, fh, budget)
                    return response.headers.get("content-type")
            except LabelStudioError as exc:  # the personal access token exchange failed
                raise AssetUnauthorized(
                    f"{_where(url, task_id)}: {exc.detail}", fix=exc.fix
                ) from exc
            except httpx.TimeoutException as exc:
                raise budget.too_slow() from exc
            except httpx.TransportError as exc:
                if time.monotonic() >= budget.deadline:
                    raise budget.too_slow() from exc
                raise AssetUnreachable(
                    f"cannot download {_where(url, task_id)}: {exc}",
                    fix=unreachable_fix(url, "LABEL_STUDIO_URL" if is_ls else "the asset URL"),
                ) from exc
        raise AssetRefused(f"{_where(url, task_id)}: too many redirects", fix="use the final URL")

    @staticmethod
    def _stream(response: httpx.Response, fh: IO[bytes], budget: _Budget) -> None:
        """Copy the body; a watchdog cuts the socket at the deadline, since httpx's read timeout
        applies to each read, not to the whole download."""
        stream = response.extensions.get("network_stream")
        sock: Any = stream.get_extra_info("socket") if stream is not None else None

        def cut() -> None:
            with contextlib.suppress(OSError, AttributeError):
                sock.shutdown(socket.SHUT_RDWR)

        watchdog = threading.Timer(budget.remaining(), cut)
        watchdog.daemon = True
        watchdog.start()
        try:
            budget.copy(response.iter_bytes(_CHUNK), fh)
            if time.monotonic() >= budget.deadline:  # a body read until close, cut short
                raise budget.too_slow()
        finally:
            watchdog.cancel()

    def _check_status(
        self, response: httpx.Response, url: str, task_id: int | None, is_ls: bool
    ) -> None:
        status = response.status_code
        if status < 300:
            return
        who = "Label Studio" if is_ls else "the server"
        message = f"{who} answered {status} for {_where(url, task_id)}"
        if status in (401, 403):
            fix = "the URL needs credentials this backend lacks: make it readable"
            if is_ls:
                fix = auth_fix(self._auth.kind if self._auth else None)
            raise AssetUnauthorized(message, fix=fix, status=status)
        if status in (404, 410):
            fix = "check the file still exists in Label Studio" if is_ls else "check the URL"
            raise AssetNotFound(message, fix=fix, status=status)
        raise AssetUnreachable(message, fix=f"retry later, or see {who}'s logs", status=status)

    # --- cloud storage: the SDK when installed and configured, else Label Studio presigns
    def _fetch_cloud(
        self, src: _Source, task_id: int | None, fh: IO[bytes], budget: _Budget
    ) -> str | None:
        parts = urlsplit(src.value)
        bucket, key = parts.netloc, unquote(parts.path.lstrip("/"))
        can_presign = task_id is not None and self.label_studio_url is not None
        package = _PACKAGES[src.kind]
        try:
            opener = {"s3": self._open_s3, "gs": _open_gs, "azure": _open_azure}[src.kind]
            opened = opener(bucket, key, budget)
        except ImportError:
            if can_presign:
                return self._fetch_presigned(src, task_id, fh, budget)
            raise MissingDependency(
                f"reading {src.value} needs the {package} package "
                "(or a task id and LABEL_STUDIO_URL, so Label Studio can presign it)",
                fix=f"pip install {package}",
            ) from None
        except AssetError as exc:
            if isinstance(exc, AssetUnauthorized) and can_presign:
                return self._fetch_presigned(src, task_id, fh, budget)
            exc.detail = f"{exc.detail} for {budget.what}"
            raise
        body, size, content_type = opened
        budget.check_length(size)
        try:
            budget.copy(body, fh)
        except AssetError:
            raise
        except Exception as exc:  # the SDKs' own read errors
            raise AssetUnreachable(f"reading {budget.what} failed: {exc}", fix="retry") from exc
        finally:
            getattr(body, "close", lambda: None)()
        return content_type

    @staticmethod
    def _drain(reader: Any) -> Iterator[bytes]:
        """Chunks from a file-like SDK body, closed when done or abandoned."""
        try:
            while chunk := reader.read(_CHUNK):
                yield chunk
        finally:
            reader.close()

    def _fetch_presigned(
        self, src: _Source, task_id: int | None, fh: IO[bytes], budget: _Budget
    ) -> str | None:
        """Let Label Studio resolve the URI with its own storage credentials (303 or proxy)."""
        fileuri = base64.urlsafe_b64encode(src.value.encode()).decode()
        url = f"{self._need_ls(src.value, task_id)}/tasks/{task_id}/presign/"
        return self._fetch_http(
            str(httpx.URL(url, params={"fileuri": fileuri})), task_id, fh, budget
        )

    def _open_s3(self, bucket: str, key: str, budget: _Budget) -> Chunks:
        import boto3
        from botocore.config import Config

        env, t = os.environ, self.settings.asset_timeout
        with self._lock:  # boto3 clients are thread-safe, sessions are not
            if self._s3 is None:
                config = Config(
                    connect_timeout=min(t, 10), read_timeout=t, retries={"total_max_attempts": 2}
                )
                endpoint = env.get("AWS_ENDPOINT_URL_S3") or env.get("AWS_ENDPOINT_URL") or None
                self._s3 = boto3.session.Session().client(
                    "s3", endpoint_url=endpoint, config=config
                )
            client = self._s3
        try:  # without credentials: NoCredentialsError, so Label Studio presigns instead
            obj = client.get_object(Bucket=bucket, Key=key)
        except Exception as exc:
            raise _sdk_error(exc) from exc
        return self._drain(obj["Body"]), obj.get("ContentLength"), obj.get("ContentType")

    # --- data URIs
    def _decode_data(self, value: str, task_id: int | None) -> tuple[bytes, str]:
        header, sep, payload = value[5:].partition(",")
        where = f"data: URI{_where('', task_id)}"
        if not sep:
            raise AssetError(
                f"{where} is malformed (no comma)", fix="use data:<type>;base64,<data>"
            )
        params = header.split(";")
        is_b64 = any(p.strip().lower() == "base64" for p in params[1:])
        budget = _Budget(self.settings.asset_max_bytes, 1, where)
        budget.check_length(len(payload) * 3 // 4 if is_b64 else len(payload), "decoded size")
        try:
            data = (
                base64.b64decode(unquote(payload).strip()) if is_b64 else unquote_to_bytes(payload)
            )
        except (binascii.Error, ValueError) as exc:
            raise AssetError(f"{where} is not valid base64", fix="check its encoding") from exc
        budget.check_length(len(data), "decoded size")
        return data, params[0].strip() or "text/plain"


def _open_gs(bucket: str, key: str, budget: _Budget) -> Chunks:
    from google.cloud import storage  # credentials: Application Default Credentials

    try:
        blob = storage.Client().bucket(bucket).blob(key)
        blob.reload(timeout=budget.remaining())
        return AssetResolver._drain(blob.open("rb")), blob.size, blob.content_type
    except Exception as exc:
        raise _sdk_error(exc) from exc


def _open_azure(container: str, key: str, budget: _Budget) -> Chunks:
    from azure.storage.blob import BlobServiceClient

    try:
        if conn := os.environ.get("AZURE_STORAGE_CONNECTION_STRING"):
            service = BlobServiceClient.from_connection_string(conn)
        else:  # the variables Label Studio's own Azure storage reads
            account_url = (
                f"https://{os.environ.get('AZURE_BLOB_ACCOUNT_NAME')}.blob.core.windows.net"
            )
            service = BlobServiceClient(account_url, os.environ.get("AZURE_BLOB_ACCOUNT_KEY"))
        download = service.get_blob_client(container, key).download_blob(
            timeout=int(budget.remaining()) + 1
        )
        content_type = download.properties.content_settings.content_type or None
        return iter(download.chunks()), download.size, content_type
    except Exception as exc:
        raise _sdk_error(exc) from exc


def _sdk_error(exc: Exception) -> AssetError:
    """Map a cloud SDK's exception by HTTP status or class name: their exception trees differ."""
    name = type(exc).__name__
    response = getattr(exc, "response", None)  # botocore's ClientError carries a dict
    meta: dict[str, Any] = response if isinstance(response, dict) else {}
    status = meta.get("ResponseMetadata", {}).get("HTTPStatusCode") or getattr(exc, "code", None)
    code = str(meta.get("Error", {}).get("Code") or name)
    message = f"the storage answered {status} {code}" if status else f"the storage failed: {exc}"
    if status == 404 or "NotFound" in name or code in ("NoSuchKey", "NoSuchBucket"):
        return AssetNotFound(message, fix="check the bucket/container and key", status=status)
    if "NoCredentials" in name:
        return AssetUnauthorized(
            "no AWS credentials were found",
            fix="set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY (and AWS_ENDPOINT_URL for "
            "S3-compatible storage), or pass the task id so Label Studio presigns it",
        )
    if status in (401, 403) or any(w in name for w in ("Forbidden", "Authentication", "Cred")):
        return AssetUnauthorized(message, fix="give this backend's credentials read access")
    return AssetUnreachable(message, fix="check the storage endpoint, credentials and network")


# --- module-level convenience; resolvers are shared so dedup and connection pools are too
_shared: dict[tuple[int, str | None, str], tuple[Settings, AssetResolver]] = {}
_shared_lock = threading.Lock()
_DEFAULT_SETTINGS: list[Settings] = []


def shared_resolver(
    settings: Settings | None, label_studio_url: str | None, token: str | SecretStr | None
) -> AssetResolver:
    """One resolver per (settings, Label Studio, token), kept for the process: its HTTP client,
    cache and in-flight downloads are shared by every request of that project."""
    with _shared_lock:
        if settings is None:
            _DEFAULT_SETTINGS[:] = _DEFAULT_SETTINGS or [Settings.model_validate({})]
            settings = _DEFAULT_SETTINGS[0]
        raw = token.get_secret_value() if isinstance(token, SecretStr) else token or ""
        # The settings object is kept alive with its resolver, so its id() cannot be reused.
        key = (id(settings), label_studio_url, hashlib.sha256(raw.encode()).hexdigest())
        if key not in _shared:
            if len(_shared) >= 16:
                _shared.pop(next(iter(_shared)))[1].close()
            resolver = AssetResolver(settings, label_studio_url=label_studio_url, token=token)
            _shared[key] = (settings, resolver)
        return _shared[key][1]


def get_local_path(
    value: str,
    *,
    task_id: int | None = None,
    settings: Settings | None = None,
    label_studio_url: str | None = None,
    token: str | SecretStr | None = None,
) -> Path:
    """A local file for a task value (URL, path, data URI...): see AssetResolver."""
    return shared_resolver(settings, label_studio_url, token).get_local_path(value, task_id=task_id)
