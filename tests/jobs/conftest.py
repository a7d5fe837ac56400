"""Fixtures for the job tests: `harness` runs a test against both queues (see jobs_harness)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from jobs_harness import REDIS_URL, Harness, redis_available


@pytest.fixture(params=["embedded", "rq"])
def harness(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Harness]:
    """Each test that uses it runs twice: embedded queue, and RQ with a real worker process."""
    if request.param == "rq" and not redis_available():
        pytest.skip(f"no Redis at {REDIS_URL} (scripts/ensure_redis.sh starts one)")
    h = Harness(request.param, tmp_path)
    try:
        yield h
    finally:
        h.close()


@pytest.fixture
def embedded(tmp_path: Path) -> Iterator[Harness]:
    h = Harness("embedded", tmp_path)
    try:
        yield h
    finally:
        h.close()


@pytest.fixture
def rq_harness(tmp_path: Path) -> Iterator[Harness]:
    """RQ only, with a real worker process (skipped without Redis)."""
    if not redis_available():
        pytest.skip(f"no Redis at {REDIS_URL} (scripts/ensure_redis.sh starts one)")
    h = Harness("rq", tmp_path)
    try:
        yield h
    finally:
        h.close()
