"""Shared fixtures: the captured Label Studio requests, waiting, an HTTP client."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from support import CAPTURES


@pytest.fixture(scope="session")
def captures() -> dict[str, Any]:
    if not CAPTURES.is_file():
        pytest.skip(f"Label Studio captures not found at {CAPTURES}")
    data = json.loads(CAPTURES.read_text(encoding="utf-8"))
    return {step["step"]: step for step in data["steps"]}


@pytest.fixture
def wait_for() -> Callable[..., Any]:
    def _wait(predicate: Callable[[], Any], timeout: float = 10.0, interval: float = 0.05) -> Any:
        deadline = time.monotonic() + timeout
        while True:
            value = predicate()
            if value:
                return value
            if time.monotonic() > deadline:
                raise AssertionError(f"condition not met within {timeout} s")
            time.sleep(interval)

    return _wait


@pytest.fixture
def http() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=10) as client:
        yield client
