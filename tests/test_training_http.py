"""Training over HTTP as Label Studio drives it: requests answer at once while a 20 s fit()
runs in a job, and a burst of annotation webhooks gives one training run, not fifty."""

from __future__ import annotations

import statistics
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from fakes import FakeLabelStudio
from labelbridge.loader import load_model_class
from labelbridge.server import create_app
from labelbridge.service import Backend
from labelbridge.settings import Settings
from support import serve

BACKEND = Path(__file__).parent / "training_backends" / "sleepy"
CONFIG = (
    '<View><Text name="text" value="$text"/><Choices name="sentiment" toName="text">'
    '<Choice value="Positive"/><Choice value="Negative"/></Choices></View>'
)


def choice(label: str) -> list[dict[str, Any]]:
    value = {"choices": [label]}
    return [{"from_name": "sentiment", "to_name": "text", "type": "choices", "value": value}]


@pytest.fixture
def label_studio() -> Iterator[FakeLabelStudio]:
    with FakeLabelStudio() as ls:
        yield ls


def timed(call: Any) -> tuple[httpx.Response, float]:
    began = time.perf_counter()
    answer = call()
    return answer, time.perf_counter() - began


def test_requests_answer_in_milliseconds_while_training_and_a_burst_trains_once(
    tmp_path: Path, label_studio: FakeLabelStudio, monkeypatch: pytest.MonkeyPatch
) -> None:
    runs = tmp_path / "runs"
    runs.mkdir()
    monkeypatch.setenv("SLEEPY_RUNS_DIR", str(runs))  # the job processes inherit it
    monkeypatch.setenv("FIT_SECONDS", "20")
    project = label_studio.add_project(label_config=CONFIG)
    tasks = [label_studio.add_task(project["id"], {"text": f"text {i}"}) for i in range(3)]
    for task in tasks:
        label_studio.add_annotation(task["id"], choice("Negative"))
    settings = Settings(
        model_dir=tmp_path / "models",
        train_on_annotations="debounce",
        train_debounce_seconds=1.0,
    )
    backend = Backend(load_model_class(str(BACKEND)), settings, model_ref=str(BACKEND))
    with serve(create_app(backend)) as url, httpx.Client(base_url=url, timeout=10) as http:
        setup = {
            "project": f"{project['id']}.1700000000",
            "schema": CONFIG,
            "hostname": label_studio.url,
            "access_token": label_studio.legacy_token,
        }
        assert http.post("/setup", json=setup).json() == {"model_version": "sleepy-v0"}
        answer, took = timed(
            lambda: http.post(
                "/webhook", json={"action": "START_TRAINING", "project": {"id": project["id"]}}
            )
        )
        assert answer.status_code == 200 and answer.json()["status"] == "queued", answer.text
        first = answer.json()["job"]
        deadline = time.monotonic() + 15
        while http.post("/job_status", json={"job": first}).json()["job_status"] != "started":
            assert time.monotonic() < deadline, "the training job did not start"
            time.sleep(0.1)

        # fit() sleeps 20 s in its own process: every route keeps answering at once
        latencies: dict[str, list[float]] = {
            "health": [],
            "predict": [],
            "train": [],
            "webhook": [],
        }
        predict = {"project": setup["project"], "tasks": [{"data": {"text": "x"}}]}
        for _ in range(5):
            answer, took = timed(lambda: http.get("/health"))
            assert answer.json()["status"] == "UP"
            latencies["health"].append(took)
            answer, took = timed(lambda: http.post("/predict", json=predict))
            assert (
                answer.status_code == 200
                and answer.json()["results"][0]["model_version"] == "sleepy-v0"
            )
            latencies["predict"].append(took)
        train = {"project": setup["project"], "label_config": CONFIG, "annotations": []}
        answer, took = timed(lambda: http.post("/train", json=train))
        assert answer.status_code == 201 and answer.json()["status"] == "queued"
        latencies["train"].append(took)

        # 50 annotation webhooks in a burst, as Label Studio sends them (1 s timeout each)
        burst_jobs = set()
        for i in range(50):
            event = {
                "action": "ANNOTATION_CREATED",
                "annotation": {
                    "id": 1000 + i,
                    "result": choice("Positive"),
                    "project": project["id"],
                },
                "project": {"id": project["id"]},
            }
            label_studio.add_annotation(tasks[i % 3]["id"], choice("Positive"))
            answer, took = timed(lambda event=event: http.post("/webhook", json=event))
            assert answer.status_code == 200 and answer.json()["status"] == "queued"
            burst_jobs.add(answer.json()["job"])
            latencies["webhook"].append(took)
        for route, values in latencies.items():
            print(
                f"{route}: median {statistics.median(values) * 1000:.1f} ms, max {max(values) * 1000:.1f} ms"
            )
            assert max(values) < 0.5, f"{route} took {max(values):.2f} s while training ran"

        # the first job is still running: the burst (and the /train) wait, superseding each other
        assert http.post("/job_status", json={"job": first}).json()["job_status"] == "started"
        statuses = [
            http.post("/job_status", json={"job": j}).json()["job_status"] for j in burst_jobs
        ]
        assert statuses.count("queued") == 1 and statuses.count("canceled") == 49
        monkeypatch.setenv("FIT_SECONDS", "0")  # later jobs are spawned fresh: they read it
        deadline = time.monotonic() + 60
        while backend.store.current_name(str(project["id"])) != "sleepy-v2":
            assert time.monotonic() < deadline, (
                f"trainings: {sorted(p.name for p in runs.iterdir())}"
            )
            time.sleep(0.2)
        ran = sorted(p.name.split("-", 1)[1] for p in runs.iterdir())
        print(
            f"50 webhooks in a burst + 1 START_TRAINING + 1 /train: {len(ran)} trainings ran: {ran}"
        )
        assert ran == ["ANNOTATION_CREATED", "START_TRAINING"]
        answer = http.post("/predict", json=predict).json()["results"][0]
        assert answer["model_version"] == "sleepy-v2"
        assert answer["result"][0]["value"]["choices"] == ["Positive"]
