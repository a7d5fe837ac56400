"""Reading task data: every source, the cache, dedup and every refusal, on real loopback servers."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from fakes import FakeFileServer, FakeLabelStudio, free_port
from labelbridge import _asset_cache, assets
from labelbridge.assets import AssetResolver
from labelbridge.errors import (
    AssetError,
    AssetNotFound,
    AssetRefused,
    AssetTooLarge,
    AssetUnauthorized,
    AssetUnreachable,
    MissingDependency,
)
from labelbridge.settings import Settings

PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4


@pytest.fixture(scope="module")
def ls_server() -> Iterator[FakeLabelStudio]:
    with FakeLabelStudio() as running:
        yield running


@pytest.fixture
def ls(ls_server: FakeLabelStudio, tmp_path: Path) -> FakeLabelStudio:
    ls_server.reset()
    ls_server.local_files_root = tmp_path / "ls-files"
    return ls_server


@pytest.fixture(scope="module")
def files() -> Iterator[FakeFileServer]:
    with FakeFileServer() as running:
        yield running


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith(("LABEL_STUDIO_", "ASSET_")):
            monkeypatch.delenv(name)


def resolver(
    tmp_path: Path, ls: FakeLabelStudio | None = None, token: str | None = None, **settings: Any
) -> AssetResolver:
    settings.setdefault("asset_cache_dir", tmp_path / "cache")
    return AssetResolver(
        Settings(**settings),
        label_studio_url=ls.url if ls else None,
        token=token if token is not None else (ls.personal_access_token() if ls else None),
    )


def cache_leftovers(tmp_path: Path) -> list[Path]:
    """Files and staging folders in the cache, lock files excepted."""
    found = (tmp_path / "cache").rglob("*")
    return [p for p in found if p.name.endswith(".part") or (p.is_file() and p.suffix != ".lock")]


# --- Label Studio uploads and local files
def test_upload_with_pat_is_cached_and_keeps_its_name(ls: FakeLabelStudio, tmp_path: Path) -> None:
    pid = ls.add_project()["id"]
    value = ls.add_upload(pid, "dot.png", PNG)
    r = resolver(tmp_path, ls)  # asset_allow_private is off: Label Studio's origin still allowed
    path = r.get_local_path(value, task_id=5)
    assert path.read_bytes() == PNG
    assert path.suffix == ".png" and path.name.endswith("-dot.png")
    assert path.is_relative_to(tmp_path / "cache")
    assert r.get_local_path(value, task_id=6) == path
    assert r.read_bytes(value) == PNG
    assert ls.hits(value) == 1  # the second and third calls were cache hits
    assert ls.hits("/api/token/refresh/") == 1


def test_absolute_localhost_url_is_read_through_label_studio_url(
    ls: FakeLabelStudio, tmp_path: Path
) -> None:
    """Label Studio writes its own localhost address; we may reach it under another name."""
    value = ls.add_upload(1, "a.png", PNG)
    port = ls.url.rsplit(":", 1)[1]
    path = resolver(tmp_path, ls).get_local_path(f"http://localhost:{port}{value}")
    assert path.read_bytes() == PNG and ls.hits(value) == 1


def test_legacy_token_refused_names_url_task_status_and_fix(
    ls: FakeLabelStudio, tmp_path: Path
) -> None:
    ls.legacy_enabled = False
    value = ls.add_upload(1, "a.png", PNG)
    with pytest.raises(AssetUnauthorized) as info:
        resolver(tmp_path, ls, token=ls.legacy_token).get_local_path(value, task_id=7)
    err = info.value
    assert f"{ls.url}{value}" in err.detail and "task 7" in err.detail and "401" in err.detail
    assert "personal access token" in (err.fix or "") and "legacy" in (err.fix or "")
    assert ls.legacy_token not in str(err.to_dict())
    assert cache_leftovers(tmp_path) == []


def test_bad_pat_is_unauthorized_not_a_crash(ls: FakeLabelStudio, tmp_path: Path) -> None:
    foreign = FakeLabelStudio().personal_access_token()
    with pytest.raises(AssetUnauthorized) as info:
        resolver(tmp_path, ls, token=foreign).get_local_path(ls.add_upload(1, "a.png", PNG))
    assert "/api/token/refresh/" in info.value.detail and foreign not in str(info.value)


def test_no_token_says_set_the_api_key(ls: FakeLabelStudio, tmp_path: Path) -> None:
    with pytest.raises(AssetUnauthorized) as info:
        resolver(tmp_path, ls, token="").get_local_path(ls.add_upload(1, "a.png", PNG))
    assert "LABEL_STUDIO_API_KEY" in (info.value.fix or "")


def test_missing_upload_is_not_found_with_status(ls: FakeLabelStudio, tmp_path: Path) -> None:
    with pytest.raises(AssetNotFound) as info:
        resolver(tmp_path, ls).get_local_path("/data/upload/1/gone.png", task_id=3)
    assert "404" in info.value.detail and "task 3" in info.value.detail


def test_label_studio_path_without_url_says_set_it(tmp_path: Path) -> None:
    with pytest.raises(AssetUnreachable) as info:
        resolver(tmp_path).get_local_path("/data/upload/1/a.png")
    assert "LABEL_STUDIO_URL" in (info.value.fix or "")


def test_unreachable_label_studio_gives_the_docker_hint(tmp_path: Path) -> None:
    r = AssetResolver(
        Settings(asset_cache_dir=tmp_path / "cache"),
        label_studio_url=f"http://localhost:{free_port()}",
        token="t",
    )
    with pytest.raises(AssetUnreachable) as info:
        r.get_local_path("/data/upload/1/a.png")
    assert "LABEL_STUDIO_URL" in (info.value.fix or "") and "Docker" in (info.value.fix or "")


def test_local_files_are_read_directly_when_mounted(ls: FakeLabelStudio, tmp_path: Path) -> None:
    assert ls.local_files_root is not None
    (ls.local_files_root / "ds1").mkdir(parents=True)
    (ls.local_files_root / "ds1" / "a.txt").write_text("hello")
    value = f"{ls.url}/data/local-files/?d=ds1/a.txt"
    mounted = resolver(tmp_path, ls, asset_local_roots=[str(ls.local_files_root)])
    assert mounted.get_local_path(value) == (ls.local_files_root / "ds1" / "a.txt").resolve()
    assert ls.hits("/data/local-files/") == 0
    fetched = resolver(tmp_path, ls).get_local_path(value)  # not mounted: over HTTP, with auth
    assert fetched.read_text() == "hello" and fetched.name == "a.txt"
    assert ls.hits("/data/local-files/") == 1


# --- plain http(s), the cache, dedup
def test_plain_http_keeps_extension_and_hits_cache(files: FakeFileServer, tmp_path: Path) -> None:
    url = files.add("photos/cat.jpg", b"jpeg bytes", content_type="image/jpeg")
    r = resolver(tmp_path, asset_allow_private=True)  # the file server is on loopback
    path = r.get_local_path(url, task_id=1)
    assert path.read_bytes() == b"jpeg bytes" and path.name == "cat.jpg"
    assert r.get_local_path(url) == path and files.hits("/files/photos/cat.jpg") == 1
    bare = files.add("render", PNG, content_type="image/png")  # no extension in the URL
    assert r.get_local_path(bare).suffix == ".png"


def test_twenty_threads_one_download(files: FakeFileServer, tmp_path: Path) -> None:
    url = files.add("slow-once.png", PNG, delay=0.3)
    r = resolver(tmp_path, asset_allow_private=True)
    barrier = threading.Barrier(20)
    results: list[Path | BaseException] = []

    def fetch() -> None:
        barrier.wait()
        try:
            results.append(r.get_local_path(url))
        except BaseException as exc:  # pragma: no cover - reported by the asserts
            results.append(exc)

    threads = [threading.Thread(target=fetch) for _ in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 20 and len(set(results)) == 1 and isinstance(results[0], Path)
    assert files.hits("/files/slow-once.png") == 1


def test_get_many_dedups_bounds_and_returns_errors(files: FakeFileServer, tmp_path: Path) -> None:
    url = files.add("many.png", PNG, delay=0.2)
    r = resolver(tmp_path, asset_allow_private=True, asset_concurrency=4)
    out = r.get_many([(url, i) for i in range(10)] + ["http://10.0.0.1/x.png", url])
    assert all(isinstance(p, Path) for i, p in enumerate(out) if i != 10)
    assert isinstance(out[10], AssetError) and files.hits("/files/many.png") == 1
    assert asyncio.run(r.aget_many([url])) == [out[0]]
    assert asyncio.run(r.aread_bytes(url)) == PNG


def test_two_processes_download_once(files: FakeFileServer, tmp_path: Path) -> None:
    url = files.add("shared.png", PNG, delay=0.5)
    script = (
        "import sys; from pathlib import Path; from labelbridge.assets import get_local_path;"
        "from labelbridge.settings import Settings;"
        "s = Settings(asset_cache_dir=Path(sys.argv[2]), asset_allow_private=True);"
        "print(get_local_path(sys.argv[1], settings=s))"
    )
    cmd = [sys.executable, "-c", script, url, str(tmp_path / "cache")]
    procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True) for _ in range(2)]
    outputs = {p.communicate(timeout=20)[0].strip() for p in procs}
    assert len(outputs) == 1 and Path(outputs.pop()).read_bytes() == PNG
    assert files.hits("/files/shared.png") == 1


def test_module_level_function_shares_a_resolver(files: FakeFileServer, tmp_path: Path) -> None:
    url = files.add("module.txt", b"text file")
    s = Settings(asset_cache_dir=tmp_path / "cache", asset_allow_private=True)
    path = assets.get_local_path(url, settings=s)
    assert path.read_bytes() == b"text file" and assets.get_local_path(url, settings=s) == path
    assert assets.shared_resolver(s, None, None) is assets.shared_resolver(s, None, None)


# --- refusals
def test_too_big_by_content_length(files: FakeFileServer, tmp_path: Path) -> None:
    url = files.add("big.bin", b"x" * 5000)
    with pytest.raises(AssetTooLarge) as info:
        resolver(tmp_path, asset_allow_private=True, asset_max_bytes=1000).get_local_path(url)
    assert "5000 bytes (Content-Length)" in info.value.detail and url in info.value.detail
    assert "ASSET_MAX_BYTES" in (info.value.fix or "")
    assert cache_leftovers(tmp_path) == []


def test_too_big_while_streaming_deletes_the_partial_file(
    files: FakeFileServer, tmp_path: Path
) -> None:
    url = files.add("chunked.bin", b"x" * 5000, chunked=True, chunk_size=500)
    with pytest.raises(AssetTooLarge) as info:
        resolver(tmp_path, asset_allow_private=True, asset_max_bytes=1000).get_local_path(url)
    assert "while downloading" in info.value.detail
    assert cache_leftovers(tmp_path) == []  # no partial file, no staging folder


def test_too_slow_is_a_total_limit(files: FakeFileServer, tmp_path: Path) -> None:
    # 100 bytes every 0.1 s: every read is quick, the whole download would take 3 s.
    url = files.add("trickle.bin", b"x" * 3000, trickle=0.1, chunk_size=100)
    r = resolver(tmp_path, asset_allow_private=True, asset_timeout=0.5)
    started = time.monotonic()
    with pytest.raises(AssetUnreachable) as info:
        r.get_local_path(url, task_id=2)
    assert time.monotonic() - started < 1.0
    assert "ASSET_TIMEOUT=0.5" in info.value.detail and "task 2" in info.value.detail
    assert cache_leftovers(tmp_path) == []
    stalled = files.add("stall.bin", b"late", delay=2)  # no headers before the deadline
    started = time.monotonic()
    with pytest.raises(AssetUnreachable):
        r.get_local_path(stalled)
    assert time.monotonic() - started < 1.0


def test_dotdot_and_outside_paths_are_refused(tmp_path: Path) -> None:
    root = tmp_path / "data"
    root.mkdir()
    (tmp_path / "secret.txt").write_text("secret")
    r = resolver(tmp_path, asset_local_roots=[str(root)])
    for value in ("../secret.txt", "images/../../secret.txt", str(tmp_path / "secret.txt")):
        with pytest.raises(AssetRefused) as info:
            r.get_local_path(value, task_id=9)
        assert "ASSET_LOCAL_ROOTS" in (info.value.fix or "") and "task 9" in info.value.detail


def test_symlink_escape_is_refused(tmp_path: Path) -> None:
    root = tmp_path / "data"
    root.mkdir()
    (tmp_path / "secret.txt").write_text("secret")
    (root / "innocent.txt").symlink_to(tmp_path / "secret.txt")
    (root / "inside.txt").write_text("fine")
    (root / "alias.txt").symlink_to(root / "inside.txt")
    r = resolver(tmp_path, asset_local_roots=[str(root)])
    with pytest.raises(AssetRefused) as info:
        r.read_text("innocent.txt")
    assert "outside the folders" in info.value.detail
    assert r.read_text("alias.txt") == "fine"  # symlinks inside the roots are fine


def test_local_paths_under_roots_are_read_in_place(tmp_path: Path) -> None:
    root = tmp_path / "data"
    (root / "images").mkdir(parents=True)
    (root / "images" / "cat.png").write_bytes(PNG)
    (root / "notes.txt").write_text("notes")
    r = resolver(tmp_path, asset_local_roots=[str(root)])
    expected = (root / "images" / "cat.png").resolve()
    assert r.get_local_path("images/cat.png") == expected
    assert r.get_local_path(str(expected)) == expected
    assert r.get_local_path(f"file://{expected}") == expected
    assert r.read_text("notes.txt") == "notes"  # a bare name found under a root is a path
    with pytest.raises(AssetNotFound):
        r.get_local_path("images/dog.png")
    with pytest.raises(AssetRefused) as info:  # no roots configured at all
        resolver(tmp_path).get_local_path(str(expected))
    assert "none configured" in info.value.detail


def test_private_addresses_are_refused_without_connecting(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, files: FakeFileServer
) -> None:
    connects: list[Any] = []
    real = socket.create_connection

    def spy(address: Any, *args: Any, **kwargs: Any) -> socket.socket:
        connects.append(address)
        return real(address, *args, **kwargs)

    monkeypatch.setattr(socket, "create_connection", spy)
    r = resolver(tmp_path)
    for url, address in [
        ("http://169.254.169.254/latest/meta-data/iam/security-credentials/", "169.254.169.254"),
        ("http://10.0.0.1/image.png", "10.0.0.1"),
        ("http://[::ffff:10.0.0.1]/image.png", "10.0.0.1"),
        (files.add("local.png", PNG).replace("127.0.0.1", "localhost"), "127.0.0.1"),  # by DNS
    ]:
        with pytest.raises(AssetRefused) as info:
            r.get_local_path(url, task_id=4)
        assert address in info.value.detail and "ASSET_ALLOW_PRIVATE" in (info.value.fix or "")
    assert connects == [] and files.hits("/files/local.png") == 0


def test_allow_list(files: FakeFileServer, tmp_path: Path) -> None:
    url = files.add("listed.png", PNG)
    denied = resolver(tmp_path, asset_allow_private=True, asset_allowed_hosts="example.org")
    with pytest.raises(AssetRefused) as info:
        denied.get_local_path(url)
    assert "'127.0.0.1' is not in ASSET_ALLOWED_HOSTS" in info.value.detail
    assert "add 127.0.0.1 to ASSET_ALLOWED_HOSTS" in (info.value.fix or "")
    allowed = resolver(tmp_path, asset_allow_private=True, asset_allowed_hosts="127.0.0.1")
    assert allowed.read_bytes(url) == PNG


def test_redirects_are_rechecked(
    files: FakeFileServer, ls: FakeLabelStudio, tmp_path: Path
) -> None:
    hop = files.redirect("hop.png", "http://elsewhere.example/x.png")
    r = resolver(tmp_path, asset_allow_private=True, asset_allowed_hosts="127.0.0.1")
    with pytest.raises(AssetRefused) as info:
        r.get_local_path(hop)
    assert "elsewhere.example" in info.value.detail
    # Label Studio itself is trusted, not where it redirects to (here: cloud metadata).
    tid = ls.add_task(ls.add_project()["id"], {"image": "gs://bucket/a.png"})["id"]
    ls.presign_handler = lambda uri: "http://169.254.169.254/latest/meta-data/"
    with pytest.raises(AssetRefused) as info:
        resolver(tmp_path, ls).get_local_path("gs://bucket/a.png", task_id=tid)
    assert "169.254.169.254" in info.value.detail
    assert ls.hits(f"/tasks/{tid}/presign/") == 1


# --- data URIs, inline text, cloud
def test_data_uris(tmp_path: Path) -> None:
    r = resolver(tmp_path, asset_max_bytes=2000)
    b64 = "data:image/png;base64," + base64.b64encode(PNG).decode()
    path = r.get_local_path(b64)
    assert path.read_bytes() == PNG and path.suffix == ".png"
    assert r.read_text("data:,hello%20world%21") == "hello world!"
    assert r.get_local_path("data:text/plain,hi").suffix == ".txt"
    with pytest.raises(AssetTooLarge):
        r.read_bytes("data:application/octet-stream;base64," + "A" * 4000)
    with pytest.raises(AssetError):
        r.read_bytes("data:image/png;base64")  # no comma


def test_inline_text_is_returned_as_is(tmp_path: Path) -> None:
    r = resolver(tmp_path)
    for text in ("I love this product", "Hello.", "ratio: 3/4", "line one\nline two"):
        assert r.read_text(text) == text
    assert r.get_local_path("I love this product").read_text() == "I love this product"


def test_gs_without_package_names_it(tmp_path: Path) -> None:
    try:
        import google.cloud.storage  # noqa: F401
    except ImportError:
        pass
    else:
        pytest.skip("google-cloud-storage is installed here")
    with pytest.raises(MissingDependency) as info:
        resolver(tmp_path).get_local_path("gs://bucket/a.png")
    assert "pip install google-cloud-storage" in (info.value.fix or "")
    with pytest.raises(AssetRefused):
        resolver(tmp_path).get_local_path("ftp://host/file.png")


@pytest.fixture(scope="module")
def moto_url() -> Iterator[str]:
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    yield f"http://127.0.0.1:{port}"
    server.stop()


@pytest.fixture
def s3(moto_url: str, monkeypatch: pytest.MonkeyPatch) -> Any:
    import boto3

    for name, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ENDPOINT_URL": moto_url,
        "AWS_EC2_METADATA_DISABLED": "true",
        "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent",
        "AWS_CONFIG_FILE": "/nonexistent",
    }.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AWS_SESSION_TOKEN", raising=False)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    client = boto3.client("s3")
    client.create_bucket(Bucket="bucket")
    client.put_object(Bucket="bucket", Key="images/cat.png", Body=PNG, ContentType="image/png")
    return client


def test_s3_object_is_read_with_boto3(s3: Any, tmp_path: Path) -> None:
    r = resolver(tmp_path)
    path = r.get_local_path("s3://bucket/images/cat.png", task_id=1)
    assert path.read_bytes() == PNG and path.name == "cat.png"
    with pytest.raises(AssetNotFound) as info:
        r.get_local_path("s3://bucket/images/dog.png", task_id=1)
    assert "NoSuchKey" in info.value.detail and "s3://bucket/images/dog.png" in info.value.detail
    with pytest.raises(AssetTooLarge):
        resolver(tmp_path / "other", asset_max_bytes=100).get_local_path(
            "s3://bucket/images/cat.png"
        )


def test_s3_without_credentials_falls_back_to_presign(
    s3: Any, ls: FakeLabelStudio, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    presigned = s3.generate_presigned_url(
        "get_object", Params={"Bucket": "bucket", "Key": "images/cat.png"}
    )
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    with pytest.raises(AssetUnauthorized) as info:  # no task id: nobody can presign
        resolver(tmp_path, ls).get_local_path("s3://bucket/images/cat.png")
    assert "AWS_ACCESS_KEY_ID" in (info.value.fix or "")
    tid = ls.add_task(ls.add_project()["id"], {"image": "s3://bucket/images/cat.png"})["id"]
    asked: list[str] = []

    def presign(uri: str) -> str:
        asked.append(uri)
        return str(presigned)

    ls.presign_handler = presign
    r = resolver(tmp_path, ls, asset_allow_private=True)  # moto is on loopback
    path = r.get_local_path("s3://bucket/images/cat.png", task_id=tid)
    assert path.read_bytes() == PNG and path.name == "cat.png"
    assert asked == ["s3://bucket/images/cat.png"]


# --- the cache's size bound (ASSET_CACHE_MAX_BYTES)
class Clock:
    """time.time for the cache, moved by the test: ages without sleeping."""

    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now

    def tick(self, seconds: float) -> None:
        self.now += seconds


def bounded(tmp_path: Path, max_bytes: int, clock: Clock) -> AssetResolver:
    """A resolver whose get_local_path also waits for the sweep it started in the background
    (so that a test sees the cache as that sweep left it)."""
    r = resolver(tmp_path, asset_allow_private=True, asset_cache_max_bytes=max_bytes)
    r._cache.clock = clock
    get = r.get_local_path

    def get_then_settle(source: str, *args: Any, **kwargs: Any) -> Path:
        path = get(source, *args, **kwargs)
        r._cache.wait_for_sweep(10)
        return path

    r.get_local_path = get_then_settle  # type: ignore[method-assign]
    return r


def entry_files(tmp_path: Path) -> dict[str, Path]:
    """The cached files by name (the entries' own, not downloads in progress or trash)."""
    found = (tmp_path / "cache").glob("*/*/*")
    return {p.name: p for p in found if p.is_file() and not p.parent.name.startswith(".")}


def cached_bytes(tmp_path: Path) -> int:
    return sum(p.stat().st_size for p in entry_files(tmp_path).values())


def make_entry(root: Path, name: str, size: int, mtime: float) -> Path:
    """An entry as a finished download leaves it, used last at `mtime`."""
    digest = hashlib.sha256(name.encode()).hexdigest()
    entry = root / digest[:2] / digest
    entry.mkdir(parents=True)
    (entry / name).write_bytes(b"x" * size)
    os.utime(entry, (mtime, mtime))
    return entry


def test_the_cache_bound_evicts_the_least_recently_used(
    files: FakeFileServer, tmp_path: Path
) -> None:
    clock = Clock()
    r = bounded(tmp_path, 10_000, clock)
    urls = [files.add(f"lru/a{i:02}.bin", bytes([i]) * 1000) for i in range(30)]
    order: list[str] = []  # least recently used first
    for i, url in enumerate(urls):
        clock.tick(_asset_cache.GRACE + 1)  # every asset used before is old enough to go
        assert r.get_local_path(url).read_bytes() == bytes([i]) * 1000
        order.append(f"a{i:02}.bin")
        if i == 12:  # a hit: a05 is now used more recently than a06 ... a12
            clock.tick(1)
            assert r.get_local_path(urls[5]).name == "a05.bin"
            order.remove("a05.bin")
            order.append("a05.bin")
        kept = set(entry_files(tmp_path))
        assert cached_bytes(tmp_path) <= 10_000
        assert kept == set(order[-len(kept) :]), f"not the most recently used: {sorted(kept)}"
    assert len(kept) >= 9 and "a29.bin" in kept and "a05.bin" not in kept
    assert files.hits("/files/lru/a05.bin") == 1  # the hit was served from the cache
    assert files.hits("/files/lru/a29.bin") == 1 and files.hits("/files/lru/a00.bin") == 1
    r.get_local_path(urls[0])  # evicted: downloaded again
    assert files.hits("/files/lru/a00.bin") == 2
    assert not list((tmp_path / "cache").glob("*/.*.trash"))


def test_a_hit_refreshes_recency_at_most_once_a_minute(
    files: FakeFileServer, tmp_path: Path
) -> None:
    clock = Clock()
    r = bounded(tmp_path, 10**6, clock)
    url = files.add("touch/a.bin", b"a")
    entry = r.get_local_path(url).parent
    published = entry.stat().st_mtime
    assert published == pytest.approx(clock.now)
    clock.tick(_asset_cache.TOUCH_EVERY / 2)
    r.get_local_path(url)
    assert entry.stat().st_mtime == published  # no write for a hit within the minute
    clock.tick(_asset_cache.TOUCH_EVERY)
    r.get_local_path(url)
    assert entry.stat().st_mtime == pytest.approx(clock.now)
    assert files.hits("/files/touch/a.bin") == 1


def test_assets_used_in_the_last_minutes_are_never_evicted(
    files: FakeFileServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    clock = Clock()
    r = bounded(tmp_path, 3000, clock)
    for i in range(6):  # 6000 bytes in a minute, a model may still be reading any of them
        clock.tick(10)
        r.get_local_path(files.add(f"grace/g{i}.bin", b"g" * 1000))
    assert len(entry_files(tmp_path)) == 6
    assert "raise ASSET_CACHE_MAX_BYTES" in caplog.text and "last 5 minutes" in caplog.text
    clock.tick(_asset_cache.GRACE)  # g0 ... g5 are now old enough to go
    r.get_local_path(files.add("grace/new.bin", b"n" * 1000))
    assert set(entry_files(tmp_path)) == {"g5.bin", "new.bin"}


def test_a_reader_keeps_reading_an_evicted_file(files: FakeFileServer, tmp_path: Path) -> None:
    clock = Clock()
    r = bounded(tmp_path, 1500, clock)
    a, b = files.add("open/a.bin", PNG), files.add("open/b.bin", PNG)
    path = r.get_local_path(a)
    with open(path, "rb") as fh:
        head = fh.read(10)
        clock.tick(_asset_cache.GRACE + 1)
        r.get_local_path(b)  # over the bound: a is evicted while open
        assert not path.exists() and set(entry_files(tmp_path)) == {"b.bin"}
        assert head + fh.read() == PNG
    assert r.get_local_path(a).read_bytes() == PNG and files.hits("/files/open/a.bin") == 2


def test_entries_locked_by_a_download_or_a_hit_are_left_alone(
    files: FakeFileServer, tmp_path: Path
) -> None:
    clock = Clock()
    r = bounded(tmp_path, 1000, clock)
    path = r.get_local_path(files.add("locked/a.bin", PNG))
    lock = path.parent.parent / f".{path.parent.name}.lock"
    clock.tick(_asset_cache.GRACE + 1)
    with _asset_cache._locked(lock, shared=True):  # a hit refreshing its recency right now
        report = r._cache.sweep()
    assert report is not None and report.evicted == 0 and path.exists()
    report = r._cache.sweep()
    assert report is not None and report.evicted == 1 and not path.exists()
    # a download running for longer than the stale age: its folder is not taken from it
    slow = files.add("locked/slow.bin", b"s" * 3000, trickle=0.1, chunk_size=300)  # ~1 s
    done: list[Path] = []
    thread = threading.Thread(target=lambda: done.append(r.get_local_path(slow)))
    thread.start()
    deadline = time.monotonic() + 5
    while not list((tmp_path / "cache").glob("*/.*.part")) and time.monotonic() < deadline:
        time.sleep(0.01)
    clock.tick(2 * _asset_cache.STALE)
    report = r._cache.sweep()
    assert list((tmp_path / "cache").glob("*/.*.part"))  # still downloading during the sweep
    thread.join(10)
    assert report is not None and report.leftovers == 0
    assert done and done[0].read_bytes() == b"s" * 3000


def test_a_sweep_removes_what_killed_downloads_left(files: FakeFileServer, tmp_path: Path) -> None:
    clock = Clock()
    root = tmp_path / "cache"
    old, young = clock.now - 2 * _asset_cache.STALE, clock.now - 60
    live = make_entry(root, "live.bin", 10, clock.now)
    shard = live.parent
    live_lock = shard / f".{live.name}.lock"
    live_lock.touch()
    os.utime(live_lock, (old, old))

    def leftover(name: str, mtime: float) -> Path:
        path = shard / name
        path.mkdir()
        (path / "data").write_bytes(b"half")
        for p in (path / "data", path):
            os.utime(p, (mtime, mtime))
        return path

    stale_part = leftover(f".{'1' * 64}.{'a' * 32}.part", old)  # a download killed long ago
    fresh_part = leftover(f".{'2' * 64}.{'b' * 32}.part", young)  # perhaps still running
    busy_part = leftover(f".{'3' * 64}.{'c' * 32}.part", old)  # its download holds the lock
    trash = leftover(f".{'4' * 64}.{'d' * 32}.trash", young)  # a sweeper killed mid-delete
    orphan_lock, young_lock = shard / f".{'5' * 64}.lock", shard / f".{'6' * 64}.lock"
    for lock_file, mtime in ((orphan_lock, old), (young_lock, young)):
        lock_file.touch()
        os.utime(lock_file, (mtime, mtime))
    cache = _asset_cache.AssetCache(root, 10**6, clock=clock)
    with _asset_cache._locked(shard / f".{'3' * 64}.lock"):
        report = cache.sweep()
    assert report is not None and report.leftovers == 3 and report.entries == 1
    assert not stale_part.exists() and not trash.exists() and not orphan_lock.exists()
    assert fresh_part.exists() and busy_part.exists() and young_lock.exists()
    assert live.exists() and live_lock.exists()
    # a resolver sweeps at its process's first download: the busy part is stale now
    r = bounded(tmp_path, 10**6, clock)
    assert r.get_local_path(files.add("leftover/a.bin", PNG)).read_bytes() == PNG
    assert not busy_part.exists() and fresh_part.exists()


_SWEEP_SCRIPT = """
import json, sys, time
from pathlib import Path
from labelbridge._asset_cache import AssetCache
root, go = Path(sys.argv[1]), Path(sys.argv[2])
Path(sys.argv[3]).touch()  # ready
while not go.exists():
    time.sleep(0.001)
report = AssetCache(root, 10_000).sweep()
print(json.dumps(None if report is None else report.evicted))
"""


def test_processes_sweeping_at_once_evict_exactly_the_oldest(tmp_path: Path) -> None:
    root = tmp_path / "cache"
    now = time.time()
    for i in range(1500):  # 150,000 bytes, bound 10,000: keep the 90 most recent (90%)
        make_entry(root, f"e{i:04}.bin", 100, now - 10_000 + i)
    cache = _asset_cache.AssetCache(root, 10_000)
    with _asset_cache._locked(root / ".sweep.lock"):  # another process is sweeping
        assert cache.sweep() is None
    go = tmp_path / "go"
    ready = [tmp_path / f"ready{i}" for i in range(4)]
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _SWEEP_SCRIPT, str(root), str(go), str(flag)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for flag in ready
    ]
    deadline = time.monotonic() + 30
    while not all(f.exists() for f in ready) and time.monotonic() < deadline:
        time.sleep(0.01)
    go.touch()  # all four start sweeping at once
    outputs = [p.communicate(timeout=60) for p in procs]
    assert [p.returncode for p in procs] == [0] * 4, [err for _, err in outputs]
    evicted = [json.loads(out) for out, _ in outputs]
    assert sum(n or 0 for n in evicted) == 1410, evicted  # none counted twice
    assert set(entry_files(tmp_path)) == {f"e{i:04}.bin" for i in range(1410, 1500)}
    assert not list(root.glob("*/.*.trash"))


def test_zero_means_unbounded(
    files: FakeFileServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert Settings().asset_cache_max_bytes == 2 * 1024**3
    monkeypatch.setenv("ASSET_CACHE_MAX_BYTES", "0")
    sweeps: list[Any] = []
    real = _asset_cache.AssetCache.sweep
    monkeypatch.setattr(_asset_cache.AssetCache, "sweep", lambda self: sweeps.append(real(self)))
    clock = Clock()
    r = resolver(tmp_path, asset_allow_private=True)
    r._cache.clock = clock
    assert r.settings.asset_cache_max_bytes == 0
    for i in range(20):
        clock.tick(_asset_cache.RESCAN)
        r.get_local_path(files.add(f"unbounded/u{i:02}.bin", b"u" * 1000))
    assert len(entry_files(tmp_path)) == 20 and sweeps == []
    r._cache.sweep()
    assert sweeps[0].evicted == 0 and len(entry_files(tmp_path)) == 20


@pytest.fixture
def sweep_threads(monkeypatch: pytest.MonkeyPatch) -> list[threading.Thread]:
    """The thread of every AssetCache.sweep() call, in order."""
    threads: list[threading.Thread] = []
    real = _asset_cache.AssetCache.sweep

    def spy(self: _asset_cache.AssetCache) -> Any:
        threads.append(threading.current_thread())
        return real(self)

    monkeypatch.setattr(_asset_cache.AssetCache, "sweep", spy)
    return threads


def test_a_sweep_does_not_run_on_every_download(
    files: FakeFileServer, tmp_path: Path, sweep_threads: list[threading.Thread]
) -> None:
    threads = sweep_threads
    clock = Clock()
    r = bounded(tmp_path, 2500, clock)
    urls = [files.add(f"rare/r{i}.bin", b"r" * 1000) for i in range(4)]
    r.get_local_path(urls[0])  # a process's first download learns the cache's size
    assert len(threads) == 1 and threads[0] is not threading.current_thread()
    r.get_local_path(urls[1])
    r.get_local_path(urls[2])  # 3000 bytes, over the bound: but a sweep ran just now
    assert len(threads) == 1 and len(entry_files(tmp_path)) == 3
    clock.tick(_asset_cache.MIN_INTERVAL)
    r.get_local_path(urls[3])  # over the bound, nothing to evict yet (all in use)
    assert len(threads) == 2
    for i in range(10):  # stuck over the bound: no sweep per download either
        r.get_local_path(files.add(f"rare/more{i}.bin", b"m"))
    assert len(threads) == 2
    small = bounded(tmp_path / "other", 10**6, clock)
    for i in range(10):
        small.get_local_path(files.add(f"rare/s{i}.bin", b"s"))
    assert len(threads) == 3  # under the bound: only the first download
    clock.tick(_asset_cache.RESCAN)  # other processes may have filled it meanwhile
    small.get_local_path(files.add("rare/late.bin", b"l"))
    assert len(threads) == 4


def test_close_waits_for_the_sweep_so_the_folder_can_go(
    files: FakeFileServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The doctor removes its temporary cache right after close(): a sweep still running
    there made that fail ("Directory not empty")."""
    real = _asset_cache.AssetCache.sweep
    threads: list[threading.Thread] = []

    def slow(self: _asset_cache.AssetCache) -> Any:
        threads.append(threading.current_thread())
        time.sleep(0.3)
        return real(self)

    monkeypatch.setattr(_asset_cache.AssetCache, "sweep", slow)
    with tempfile.TemporaryDirectory() as cache:
        with resolver(tmp_path, asset_allow_private=True, asset_cache_dir=Path(cache)) as r:
            r.get_local_path(files.add("close/a.bin", b"a"))  # a first download: a sweep
        assert threads and not threads[0].is_alive()


def test_a_download_never_waits_for_the_sweep_it_starts(
    files: FakeFileServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The sweep (a scan of the whole cache) runs in a background thread, one at a time."""
    release, started = threading.Event(), threading.Event()
    threads: list[threading.Thread] = []
    real = _asset_cache.AssetCache.sweep

    def slow(self: _asset_cache.AssetCache) -> Any:
        threads.append(threading.current_thread())
        started.set()
        release.wait(10)
        return real(self)

    monkeypatch.setattr(_asset_cache.AssetCache, "sweep", slow)
    clock = Clock()
    r = resolver(tmp_path, asset_allow_private=True, asset_cache_max_bytes=1500)
    r._cache.clock = clock
    try:
        first = r.get_local_path(files.add("bg/a.bin", b"a" * 1000))  # the first download
        assert started.wait(5) and threads[0] is not threading.current_thread()
        clock.tick(_asset_cache.RESCAN)  # due again, over the bound: but one is running
        second = r.get_local_path(files.add("bg/b.bin", b"b" * 1000))
        assert first.read_bytes() == b"a" * 1000 and second.read_bytes() == b"b" * 1000
        assert len(threads) == 1
    finally:
        release.set()
        r._cache.wait_for_sweep(10)
    assert not threads[0].is_alive()


def test_a_download_on_the_event_loop_sweeps_in_another_thread(
    files: FakeFileServer, tmp_path: Path, sweep_threads: list[threading.Thread]
) -> None:
    threads = sweep_threads
    r = bounded(tmp_path, 10**6, Clock())

    async def predict_inline() -> Path:  # a fast model's predict() runs on the loop
        return r.get_local_path(files.add("loop/a.bin", PNG))

    assert asyncio.run(predict_inline()).read_bytes() == PNG
    deadline = time.monotonic() + 5
    while not threads and time.monotonic() < deadline:
        time.sleep(0.01)
    assert threads and threads[0] is not threading.current_thread()
    threads[0].join(5)
