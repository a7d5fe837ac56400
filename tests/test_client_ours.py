"""The connector against our own server: every call Label Studio makes, over real HTTP."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from _backends import CHOICES_CONFIG, Echo
from labelbridge.client import AsyncMLBackendClient, CallHTTPError, MLBackendClient
from labelbridge.server import create_app
from labelbridge.service import Backend
from labelbridge.settings import Settings
from support import serve

TASKS: list[dict[str, Any]] = [
    {"id": 1, "data": {"text": "I love it"}},
    {"id": 2, "data": {"text": "meh"}},
]


def test_every_call_against_our_server(tmp_path: Path) -> None:
    settings = Settings(model_dir=tmp_path / "models", basic_auth_user="u", basic_auth_pass="p")
    backend = Backend(Echo, settings, model_ref="_backends:Echo")
    with serve(create_app(backend)) as url, MLBackendClient(url, auth=("u", "p")) as client:
        assert client.health()["status"] == "UP"
        assert client.setup("5.1700000000", CHOICES_CONFIG, hostname="http://ls") == "echo-v0"
        answer = client.predict(TASKS, project="5.1700000000", label_config=CHOICES_CONFIG)
        assert answer.model_version == "echo-v0" and len(answer.results) == 2
        labels = [r[0].result[0]["value"]["choices"] for r in answer.results]
        assert labels == [["Positive"], ["Negative"]]
        interactive = client.predict(TASKS[:1], project="5.1", context={"result": []})
        assert len(interactive.results) == 1
        assert client.versions().versions == ["echo-v0"]
        with backend.store.new_version("5", "echo") as staging:
            (staging.path / "w").write_text("x")
        assert client.versions().versions == ["echo-v1"]
        assert client.duplicate_model("5", "6")["model_version"] == "echo-v1"
        assert client.delete("6")["status"] == "deleted"
        assert client.validate(CHOICES_CONFIG)["controls"] == ["sentiment"]
        assert "labelbridge_requests_total" in client.metrics()
        job = client.start_training({"id": 5, "label_config": CHOICES_CONFIG})["job"]
        status = client.job_status(job)
        assert status["job"] == job and status["job_status"] in {"queued", "started", "failed"}
        with pytest.raises(CallHTTPError) as error:
            client.job_status("no-such-job")
        assert error.value.status == 404 and "UnknownJob" in str(error.value.body)
    with serve(create_app(Backend(Echo, settings, model_ref="_backends:Echo"))) as url:
        with MLBackendClient(url) as anonymous, pytest.raises(CallHTTPError) as error:
            anonymous.setup("5.1", CHOICES_CONFIG)
        assert error.value.status == 401


def test_async_client_against_our_server(tmp_path: Path) -> None:
    backend = Backend(Echo, Settings(model_dir=tmp_path / "m"), model_ref="_backends:Echo")

    async def session(url: str) -> list[str | None]:
        async with AsyncMLBackendClient(url) as client:
            assert (await client.health())["model_class"] == "Echo"
            assert await client.setup(1, CHOICES_CONFIG) == "echo-v0"
            answer = await client.predict(TASKS, project=1, label_config=CHOICES_CONFIG)
            return [r[0].model_version for r in answer.results]

    with serve(create_app(backend)) as url:
        assert asyncio.run(session(url)) == ["echo-v0", "echo-v0"]
