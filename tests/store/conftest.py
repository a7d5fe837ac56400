"""Fixtures for the store tests: moto's S3 server on loopback, a fresh bucket per test, and
`make_store`, which opens a store of the parametrized kind (several instances of one kind share
the same folder or bucket, as processes on several machines would)."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from fakes import free_port
from labelbridge.store import LocalModelStore, ModelStore, S3ModelStore

AWS_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_EC2_METADATA_DISABLED": "true",
    "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent",
    "AWS_CONFIG_FILE": "/nonexistent",
}


@pytest.fixture(scope="session")
def moto_url() -> Iterator[str]:
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    yield f"http://127.0.0.1:{port}"
    server.stop()


@pytest.fixture
def aws_env(moto_url: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """The usual AWS variables, pointing boto3 at moto (AWS_ENDPOINT_URL); returns the URL."""
    for name, value in {**AWS_ENV, "AWS_ENDPOINT_URL": moto_url}.items():
        monkeypatch.setenv(name, value)
    for name in ("AWS_SESSION_TOKEN", "AWS_PROFILE", "AWS_ENDPOINT_URL_S3"):
        monkeypatch.delenv(name, raising=False)
    return moto_url


@pytest.fixture
def s3_client(aws_env: str) -> Any:
    import boto3

    return boto3.client("s3")


@pytest.fixture
def bucket(s3_client: Any) -> str:
    name = f"lb-{uuid.uuid4().hex[:12]}"
    s3_client.create_bucket(Bucket=name)
    return name


@pytest.fixture(params=["local", "s3"])
def make_store(request: pytest.FixtureRequest, tmp_path: Path) -> Callable[..., ModelStore]:
    """`make_store()` opens one more instance on the same storage (its own S3 cache folder)."""
    if request.param == "local":
        return lambda: LocalModelStore(tmp_path / "models")
    bucket_name: str = request.getfixturevalue("bucket")
    opened = iter(range(1000))

    def open_s3(current_ttl: float = 0.0) -> S3ModelStore:
        cache = tmp_path / f"cache-{next(opened)}"
        return S3ModelStore(bucket_name, "lb/", cache_dir=cache, current_ttl=current_ttl)

    return open_s3


@pytest.fixture
def store(make_store: Callable[..., ModelStore]) -> ModelStore:
    return make_store()
