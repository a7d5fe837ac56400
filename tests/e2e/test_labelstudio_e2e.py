"""Our backend driven by the real Label Studio 1.23.2, through its REST API, as a user clicks.

Label Studio talks to our server through a recording proxy, so each test can check both what
Label Studio shows the user and what it sent to (and got from) the backend. The tests follow
one project in order: create and import, connect the backend, retrieve predictions, annotate
and train, interactive pre-annotation; then the ways a broken backend shows.
"""

from __future__ import annotations

import struct
import textwrap
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from _labelstudio import (
    BackendFactory,
    BackendProcess,
    Exchange,
    LabelStudio,
    RecordingProxy,
    free_port,
    port_is_free,
    wait_until,
)

pytestmark = [pytest.mark.labelstudio, pytest.mark.timeout(600)]

CONFIG = (
    '<View><Text name="text" value="$text"/><Choices name="sentiment" toName="text" '
    'choice="single"><Choice value="Positive"/><Choice value="Negative"/></Choices></View>'
)
LABELS = {"Positive", "Negative"}
TEXTS = [
    "I love this product, it works wonderfully.",
    "This is awful, it broke after one day.",
    "Great service and a friendly, helpful team.",
    "Terrible experience, I want my money back.",
    "The delivery was fast and the quality is excellent.",
    "Worst purchase ever, completely useless.",
]
#: what the annotator picks for TEXTS[i] (two labels, as the example's training needs)
GOLD = ["Positive", "Negative", "Positive", "Negative", "Positive", "Negative"]
TRAIN_DEADLINE = 120.0


def _choice(label: str) -> list[dict[str, Any]]:
    return [
        {
            "from_name": "sentiment",
            "to_name": "text",
            "type": "choices",
            "value": {"choices": [label]},
        }
    ]


def _png_1x1() -> bytes:
    """A valid one-pixel PNG, made here so the suite ships no binary file."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    header = struct.pack(">IIBBBBB", 1, 1, 8, 0, 0, 0, 0)
    pixels = zlib.compress(b"\x00\x00")
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", pixels) + chunk(b"IEND", b"")
    )


def _assert_valid_result(result: list[dict[str, Any]]) -> None:
    """A Choices result for our config, the shape Label Studio's editor can show."""
    assert result, "empty result"
    for item in result:
        assert item["from_name"] == "sentiment" and item["to_name"] == "text", item
        assert item["type"] == "choices", item
        picked = item["value"]["choices"]
        assert len(picked) == 1 and picked[0] in LABELS, item


@dataclass
class Flow:
    """The state one project carries from step to step."""

    studio: LabelStudio
    backend: BackendProcess
    proxy: RecordingProxy
    project_id: int
    task_ids: list[int]
    ml_id: int | None = None


@pytest.fixture(scope="module")
def sentiment_backend(
    start_our_backend: BackendFactory, sentiment_dir: Path
) -> Iterator[tuple[BackendProcess, RecordingProxy]]:
    """Our server for examples/sentiment, with a recorder in front of it."""
    backend = start_our_backend(sentiment_dir)
    proxy = RecordingProxy(backend.url)
    try:
        yield backend, proxy
    finally:
        proxy.close()


@pytest.fixture(scope="module")
def flow(
    label_studio: LabelStudio, sentiment_backend: tuple[BackendProcess, RecordingProxy]
) -> Flow:
    backend, proxy = sentiment_backend
    project = label_studio.api.create_project(CONFIG, title="sentiment e2e")
    imported = label_studio.api.import_tasks(project["id"], [{"text": t} for t in TEXTS])
    assert imported["task_count"] == len(TEXTS), imported
    tasks = sorted(label_studio.api.list_tasks(project["id"]), key=lambda t: t["id"])
    return Flow(label_studio, backend, proxy, project["id"], [t["id"] for t in tasks])


@pytest.fixture(scope="module")
def connected(flow: Flow) -> Flow:
    """The flow with our backend added as the project's ML backend (as in Settings > Model)."""
    if flow.ml_id is None:
        response = flow.studio.api.add_ml_backend(
            flow.project_id, flow.proxy.url, title="labelbridge"
        )
        assert response.status_code == 201, response.text
        flow.ml_id = response.json()["id"]
    return flow


# --- 1. project and tasks -----------------------------------------------------------------
def test_project_created_and_tasks_imported(flow: Flow, tmp_path: Path) -> None:
    """The starting point every user has: our config accepted, tasks and an upload imported."""
    api = flow.studio.api
    project = api.get_project(flow.project_id)
    assert project["label_config"] == CONFIG
    assert "sentiment" in project["parsed_label_config"]
    tasks = sorted(api.list_tasks(flow.project_id), key=lambda t: t["id"])
    assert [t["data"]["text"] for t in tasks] == TEXTS

    # the upload path of the harness: a media file import makes a task pointing at
    # /data/upload/ (a .txt file would be inlined as the text itself)
    other = api.create_project(CONFIG, title="upload")
    sample = tmp_path / "dot.png"
    sample.write_bytes(_png_1x1())
    answer = api.upload_file(other["id"], sample, "image/png")
    assert answer["task_count"] == 1 and answer["file_upload_ids"], answer
    (task,) = api.list_tasks(other["id"])
    assert task["data"]["text"].startswith(f"/data/upload/{other['id']}/"), task["data"]


# --- 2. connect ---------------------------------------------------------------------------
def test_backend_connects_with_our_model_version(connected: Flow) -> None:
    """Health + setup pass Label Studio's check, and it shows the version our /setup gave."""
    api, proxy = connected.studio.api, connected.proxy
    assert connected.ml_id is not None
    ml = api.get_ml_backend(connected.ml_id)
    assert ml["state"] == "CO", ml
    assert ml["readable_state"] == "Connected" and ml["error_message"] in (None, ""), ml
    setups = proxy.find("/setup")
    assert setups, "Label Studio never called /setup"
    ours = setups[-1]
    assert ours.status == 200, ours
    assert ours.request["project"].split(".")[0] == str(connected.project_id)
    assert ours.request["schema"] == CONFIG
    assert ml["model_version"] == ours.response["model_version"]
    assert ml["model_version"], "model_version must not be empty"
    assert all(e.status == 200 for e in proxy.find("/health")), "a /health check failed"


# --- 3. predictions -----------------------------------------------------------------------
def test_retrieve_predictions_stored_with_our_version(connected: Flow) -> None:
    """One /predict for all tasks; Label Studio stores (and validates) one result per task."""
    api, proxy = connected.studio.api, connected.proxy
    since = proxy.mark()
    answer = api.retrieve_predictions(connected.project_id)
    assert answer.get("processed_items") == len(TEXTS), answer
    predicts = proxy.find("/predict", since=since)
    assert len(predicts) == 1, "all selected tasks go in one /predict call"
    assert len(predicts[0].request["tasks"]) == len(TEXTS)
    assert predicts[0].status == 200, predicts[0].response

    ml = api.get_ml_backend(connected.ml_id or 0)
    predictions = api.list_predictions(connected.project_id)
    # one per task, none rejected by Label Studio's own validation (on for this process)
    assert sorted(p["task"] for p in predictions) == connected.task_ids
    for prediction in predictions:
        assert prediction["model_version"] == ml["model_version"], prediction
        _assert_valid_result(prediction["result"])
    versions = api.project_model_versions(connected.project_id)
    assert versions.get(ml["model_version"]) == len(TEXTS), versions

    # control: Label Studio's validation is really on, so the results above passed it
    control = api.create_project(CONFIG, title="validation control")
    api.import_tasks(control["id"], [{"text": "control"}])
    (task,) = api.list_tasks(control["id"])
    bad = {"task": task["id"], "result": _choice("Maybe"), "model_version": "bad"}
    refused = api.request("POST", "/api/predictions", json=bad)
    assert refused.status_code == 400 and "Error validating prediction" in refused.text, (
        refused.text
    )


# --- 4. annotate and train ----------------------------------------------------------------
def test_annotations_reach_backend_and_training_publishes_a_version(connected: Flow) -> None:
    """Webhooks arrive; "Start Training" runs a job whose version Label Studio then uses."""
    api, proxy, backend = connected.studio.api, connected.proxy, connected.backend
    assert connected.ml_id is not None
    project = connected.project_id
    before = set(backend.versions(project)["versions"])

    since = proxy.mark()
    for task_id, label in zip(connected.task_ids[:4], GOLD[:4], strict=True):
        api.create_annotation(task_id, _choice(label), lead_time=1.0)

    # Label Studio's webhooks are synchronous in the open-source build, but allow a moment
    def annotation_events() -> list[Exchange]:
        found = proxy.find("/webhook", "ANNOTATION_CREATED", since)
        return found if len(found) >= 4 else []

    created = wait_until(annotation_events, timeout=10, what="4 ANNOTATION_CREATED webhooks")
    for event in created:
        assert event.status == 200, event.response  # answered, within Label Studio's 1 s
        assert event.response["status"] in ("queued", "counted", "ignored"), event.response
        assert event.request["annotation"]["result"], event.request
        assert str(event.request["project"]["id"]) == str(project)

    # "Start Training" in the model settings
    since = proxy.mark()
    answer = api.train(connected.ml_id)
    assert answer.status_code == 200, answer.text
    (start,) = proxy.find("/webhook", "START_TRAINING", since)
    assert start.status in (200, 201), start.response
    job = start.response.get("job")
    assert job, f"START_TRAINING queued no job: {start.response}"

    def finished() -> dict[str, Any] | None:
        status = backend.job_status(job)
        return status if status["job_status"] in ("finished", "failed", "canceled") else None

    status = wait_until(finished, timeout=TRAIN_DEADLINE, interval=0.5, what=f"job {job} done")
    assert status["job_status"] == "finished", status.get("traceback") or status
    new = wait_until(
        lambda: set(backend.versions(project)["versions"]) - before,
        timeout=30,
        what="a new version in /versions",
    )
    assert status.get("model_version") in new, (status, new)
    version = status["model_version"]

    # Label Studio sees it: in its version list, as the backend's current version, in new
    # predictions
    assert version in api.ml_versions(connected.ml_id)["versions"]
    wait_until(
        lambda: api.get_ml_backend(connected.ml_id or 0)["model_version"] == version,
        timeout=15,
        what=f"Label Studio's backend model_version == {version}",
    )
    api.delete_predictions(project)
    assert api.list_predictions(project) == []
    api.retrieve_predictions(project)
    predictions = api.list_predictions(project)
    assert sorted(p["task"] for p in predictions) == connected.task_ids
    assert {p["model_version"] for p in predictions} == {version}
    for prediction in predictions:
        _assert_valid_result(prediction["result"])
    assert api.project_model_versions(project).get(version) == len(TEXTS)


# --- 5. interactive pre-annotation --------------------------------------------------------
def test_interactive_preannotation_with_context(connected: Flow) -> None:
    """The labeling UI's context reaches predict(); the answer is shown, never stored."""
    api, proxy = connected.studio.api, connected.proxy
    assert connected.ml_id is not None
    context = {"result": _choice("Positive")}
    since = proxy.mark()
    before = len(api.list_predictions(connected.project_id))
    answer = api.interactive_annotating(connected.ml_id, connected.task_ids[4], context)
    assert answer.status_code == 200, answer.text
    data = answer.json()["data"]
    _assert_valid_result(data["result"])
    current = api.get_ml_backend(connected.ml_id)["model_version"]
    assert data.get("model_version") == current, data  # after training: the new version
    (sent,) = proxy.find("/predict", since=since)
    assert sent.request["params"]["context"] == context
    assert [t["id"] for t in sent.request["tasks"]] == [connected.task_ids[4]]
    assert len(api.list_predictions(connected.project_id)) == before, "interactive is never stored"


# --- 6. broken backends -------------------------------------------------------------------
def test_backend_on_closed_port_is_refused_at_add(label_studio: LabelStudio) -> None:
    """What a user sees when our server is not running: the add form's connection error."""
    api = label_studio.api
    project = api.create_project(CONFIG, title="closed port")
    port = free_port()
    assert port_is_free(port)
    url = f"http://127.0.0.1:{port}"
    answer = api.add_ml_backend(project["id"], url)
    assert answer.status_code == 400, answer.text
    errors = answer.json()["validation_errors"]["non_field_errors"]
    assert any(f"Can't connect to ML backend {url}" in e for e in errors), errors
    assert api.list_ml_backends(project["id"]) == []


FAILING_MODEL = textwrap.dedent(
    '''
    """A model whose setup() fails: the server runs, Label Studio must show the error."""

    from labelbridge import Model


    class Broken(Model):
        def setup(self) -> None:
            raise RuntimeError("weights not found")

        def predict(self, tasks, context):
            return [None for _ in tasks]
    '''
)


@pytest.fixture(scope="module")
def broken_backend(
    start_our_backend: BackendFactory, tmp_path_factory: pytest.TempPathFactory
) -> BackendProcess:
    """Our server running a model whose setup() raised: up, but it cannot predict."""
    backend_dir = tmp_path_factory.mktemp("broken")
    (backend_dir / "model.py").write_text(FAILING_MODEL)
    backend = start_our_backend(backend_dir, wait_for=("failed",))
    assert backend.health()["model_state"] == "failed"
    return backend


def test_backend_whose_setup_fails_is_refused_at_add(
    label_studio: LabelStudio, broken_backend: BackendProcess
) -> None:
    """Health is fine, /setup is not: Label Studio refuses it with /setup's status line."""
    api = label_studio.api
    project = api.create_project(CONFIG, title="broken at add")
    answer = api.add_ml_backend(project["id"], broken_backend.url)
    assert answer.status_code == 400, answer.text
    message = " ".join(answer.json()["validation_errors"]["non_field_errors"])
    assert "doesn't look like a valid ML backend" in message, message
    assert "Server Error" in message and f"{broken_backend.url}/setup" in message, message


def test_connected_backend_whose_setup_starts_failing_shows_error(
    label_studio: LabelStudio,
    sentiment_backend: tuple[BackendProcess, RecordingProxy],
    broken_backend: BackendProcess,
) -> None:
    """A redeploy behind the same URL that breaks setup: state "ER" and the status line."""
    good, _ = sentiment_backend
    api = label_studio.api
    project = api.create_project(CONFIG, title="broken after redeploy")
    stable = RecordingProxy(good.url)
    try:
        answer = api.add_ml_backend(project["id"], stable.url)
        assert answer.status_code == 201 and answer.json()["state"] == "CO", answer.text
        ml_id = answer.json()["id"]
        stable.retarget(broken_backend.url)
        ml = api.get_ml_backend(ml_id)  # every GET re-runs Label Studio's health + setup
        assert ml["state"] == "ER" and ml["readable_state"] == "Error", ml
        error = ml["error_message"] or ""
        assert "Server Error" in error and f"for url: {stable.url}/setup" in error, ml
        stable.retarget(good.url)
        assert api.get_ml_backend(ml_id)["state"] == "CO", "it recovers once setup works again"
    finally:
        stable.close()
