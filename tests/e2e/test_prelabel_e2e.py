"""Pre-annotating against the real Label Studio 1.23.2: a 2,000-task project killed half-way and
resumed, and two models served from one process under two URL prefixes.

Label Studio's "Retrieve predictions" sends all selected tasks in one /predict call under a
100 s limit; `labelbridge prelabel` reads pages, predicts in batches and stores through the
bulk import, so these tests count what Label Studio itself says it stored.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import pytest
from _labelstudio import BackendFactory, LabelStudio, labelbridge_executable, wait_until

pytestmark = [pytest.mark.labelstudio, pytest.mark.timeout(300)]

CONFIG = (
    '<View><Text name="text" value="$text"/><Choices name="sentiment" toName="text" '
    'choice="single"><Choice value="Positive"/><Choice value="Negative"/></Choices></View>'
)
WORDS = ["great", "awful", "lovely", "broken", "friendly", "useless", "fast", "terrible"]
TASKS = 2000

#: a second model for the two-prefix test: picks a label by keyword, version "keyword-v0"
KEYWORD_MODEL = """
from labelbridge import Model


class Keyword(Model):
    name = "keyword"

    def predict(self, tasks, context):
        pick = context.label_config.first("Choices")
        out = []
        for task in tasks:
            text = str(task["data"].get(pick.value_field, ""))
            label = pick.labels[0] if "good" in text else pick.labels[-1]
            item = {"from_name": pick.control.name, "to_name": pick.object.name,
                    "type": "choices", "value": {"choices": [label]}}
            out.append({"result": [item], "score": 0.5})
        return out
"""


def _versions(studio: LabelStudio, project: int) -> dict[str, int]:
    answer = studio.api.request("GET", f"/api/projects/{project}/model-versions/")
    answer.raise_for_status()
    return dict(answer.json())


def _per_task(studio: LabelStudio, project: int, version: str) -> Counter[int]:
    rows = studio.api.list_predictions(project)
    return Counter(p["task"] for p in rows if p["model_version"] == version)


def _prelabel(
    studio: LabelStudio, project: int, backend: str, log: Path
) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")}
    env["LABEL_STUDIO_API_KEY"] = studio.token  # not on the command line
    args = [str(labelbridge_executable()), "prelabel", "--label-studio", studio.url]
    args += ["--project", str(project), "--backend", backend, "--filter", "all"]
    args += ["--batch-size", "50", "--write-batch", "250"]
    with open(log, "ab") as out:
        return subprocess.Popen(
            args, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )


def _kill(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)


def test_prelabel_2000_tasks_killed_half_way_and_resumed(
    label_studio: LabelStudio,
    start_our_backend: BackendFactory,
    sentiment_dir: Path,
    tmp_path: Path,
) -> None:
    api = label_studio.api
    project = api.create_project(CONFIG, title="prelabel 2000")["id"]
    texts = [{"text": f"task {i}: {WORDS[i % 8]} and {WORDS[(i * 3) % 8]}"} for i in range(TASKS)]
    assert api.import_tasks(project, texts)["task_count"] == TASKS
    backend = start_our_backend(sentiment_dir)
    version = backend.client.post(
        "/setup", json={"project": f"{project}.0", "schema": CONFIG}
    ).json()["model_version"]
    log = tmp_path / "prelabel.log"

    started = time.monotonic()
    first = _prelabel(label_studio, project, backend.url, log)
    try:
        stored = wait_until(
            lambda: (n := _versions(label_studio, project).get(version, 0)) >= 1000 and n,
            timeout=120,
            interval=0.05,
            what="1,000 stored predictions",
        )
        _kill(first)
        killed_after = time.monotonic() - started
    finally:
        _kill(first)
    assert first.returncode == -signal.SIGKILL
    at_kill = _versions(label_studio, project).get(version, 0)
    assert stored <= at_kill < TASKS, (stored, at_kill)

    began = time.monotonic()
    second = _prelabel(label_studio, project, backend.url, log)
    try:
        assert second.wait(120) == 0, log.read_text()[-3000:]
    finally:
        _kill(second)
    elapsed = time.monotonic() - began
    summary = log.read_text().strip().splitlines()[-1]
    assert f"skipped {at_kill} already predicted" in summary, summary

    counts = _per_task(label_studio, project, version)
    assert len(counts) == TASKS and set(counts.values()) == {1}, Counter(counts.values())
    assert _versions(label_studio, project) == {version: TASKS}
    rate = re.search(r"\(([\d.]+) tasks/s", summary)
    print(
        f"\nprelabel e2e: {TASKS} tasks; first run killed at {at_kill} stored after "
        f"{killed_after:.1f} s ({at_kill / killed_after:.0f} tasks/s, start-up included); "
        f"resumed {TASKS - at_kill} in {elapsed:.1f} s ({rate.group(1) if rate else '?'} tasks/s)"
    )


def test_two_models_in_one_process_each_connected_to_its_own_project(
    label_studio: LabelStudio,
    start_our_backend: BackendFactory,
    sentiment_dir: Path,
    tmp_path: Path,
) -> None:
    keyword_dir = tmp_path / "keyword"
    keyword_dir.mkdir()
    (keyword_dir / "model.py").write_text(KEYWORD_MODEL)
    spec = {
        "target": str(sentiment_dir),
        "backends": {"sentiment": str(sentiment_dir), "keyword": str(keyword_dir)},
        "overrides": {},
    }
    # what `labelbridge start sentiment=... keyword=...` runs: the server's app factory
    command = [sys.executable, "-m", "uvicorn", "--factory", "labelbridge.server:app_from_env"]
    command += ["--host", "127.0.0.1", "--port", "{port}"]
    server = start_our_backend(
        sentiment_dir, command=command, extra_env={"LABELBRIDGE_SERVE": json.dumps(spec)}
    )
    health = server.health()
    assert set(health["backends"]) == {"sentiment", "keyword"}, health

    api = label_studio.api
    projects: dict[str, int] = {}
    for name in ("sentiment", "keyword"):
        project = api.create_project(CONFIG, title=f"two models: {name}")["id"]
        api.import_tasks(project, [{"text": f"a good day {i}"} for i in range(8)])
        added = api.add_ml_backend(project, f"{server.url}/{name}", title=name)
        assert added.status_code == 201, added.text
        ml = api.get_ml_backend(added.json()["id"])
        assert ml["state"] == "CO" and ml["model_version"] == f"{name}-v0", ml
        projects[name] = project

    # Label Studio's own "Retrieve predictions" on one, our prelabel job on the other
    api.retrieve_predictions(projects["sentiment"])
    job = server.client.post("/keyword/prelabel", json={"project": projects["keyword"]})
    assert job.status_code == 201, job.text

    def finished() -> dict[str, Any] | None:
        status = server.client.post("/keyword/job_status", json={"job": job.json()["job"]})
        body: dict[str, Any] = status.json()
        return body if body["job_status"] in ("finished", "failed") else None

    status = wait_until(finished, timeout=60, what="the prelabel job")
    assert status["job_status"] == "finished", status
    for name, project in projects.items():
        rows = api.list_predictions(project)
        assert len(rows) == 8 and {p["model_version"] for p in rows} == {f"{name}-v0"}, rows
    assert {
        p["result"][0]["value"]["choices"][0] for p in api.list_predictions(projects["keyword"])
    } == {"Positive"}
    httpx.get(f"{server.url}/health").raise_for_status()
