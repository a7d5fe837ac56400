"""The server over real HTTP: every route, the happy path and bad input."""

from __future__ import annotations

import base64
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx
import pytest

from _backends import CHOICES_CONFIG, Echo, FailsToLoad, Raises, SlowSetup, WrongCount
from labelbridge.model import Model, annotations_needed
from labelbridge.server import create_app
from labelbridge.service import Backend
from labelbridge.settings import Settings
from support import captured_request, serve

Factory = Callable[..., tuple[str, Backend]]


@pytest.fixture
def start_backend(tmp_path: Path) -> Iterator[Factory]:
    stack = ExitStack()

    def make(model_cls: type[Model] = Echo, **overrides: Any) -> tuple[str, Backend]:
        overrides.setdefault("model_dir", tmp_path / f"models-{model_cls.__name__}")
        settings = Settings(**overrides)
        backend = Backend(model_cls, settings, model_ref=f"_backends:{model_cls.__name__}")
        url = stack.enter_context(serve(create_app(backend)))
        return url, backend

    with stack:
        yield make


def setup_body(project: str = "1.1795541075", schema: str = CHOICES_CONFIG) -> dict[str, Any]:
    return {
        "project": project,
        "schema": schema,
        "hostname": "http://127.0.0.1:8080",
        "access_token": "tok",
        "extra_params": {"foo": "bar"},
    }


def test_health_answers_at_once_while_the_model_loads(
    start_backend: Factory, http: httpx.Client
) -> None:
    url, backend = start_backend(SlowSetup)
    began = time.perf_counter()
    body = http.get(f"{url}/health").json()
    assert time.perf_counter() - began < 0.5
    assert body["status"] == "UP" and body["model_class"] == "SlowSetup"
    assert body["model_state"] == "loading"
    began = time.perf_counter()
    answer = http.post(f"{url}/setup", json=setup_body())
    assert answer.status_code == 200 and time.perf_counter() - began < 0.5
    assert answer.json() == {"model_version": "slow-v0"}
    backend.wait_ready(10)
    assert http.get(f"{url}/").json()["model_state"] == "ready"


class NeedsThree(Echo):
    min_annotations = 3


class NeedsSome(Echo):
    min_annotations = "some"  # type: ignore[assignment]


def test_health_says_how_many_annotations_training_needs(
    start_backend: Factory, http: httpx.Client, tmp_path: Path
) -> None:
    """The model class's min_annotations, else MIN_ANNOTATIONS_TO_TRAIN: what jobs enforce."""
    url, _ = start_backend(NeedsThree, min_annotations_to_train=7)
    assert http.get(f"{url}/health").json()["min_annotations"] == 3
    url, _ = start_backend(Echo, min_annotations_to_train=7)
    assert http.get(f"{url}/health").json()["min_annotations"] == 7
    url, _ = start_backend(Echo, model_dir=tmp_path / "defaults")
    assert http.get(f"{url}/").json()["min_annotations"] == 1
    url, _ = start_backend(NeedsSome)  # a malformed number must not break health
    health = http.get(f"{url}/health")
    assert health.status_code == 200 and "min_annotations" not in health.json()
    # the one rule, which the job runner enforces too (and names in its error's fix)
    seven = Settings(model_dir=tmp_path, min_annotations_to_train=7)
    assert annotations_needed(NeedsThree, seven) == (3, "Model.min_annotations")
    assert annotations_needed(Echo, seven) == (7, "MIN_ANNOTATIONS_TO_TRAIN")


def test_label_studio_captured_setup_and_predict(
    start_backend: Factory, http: httpx.Client, captures: dict[str, Any]
) -> None:
    url, backend = start_backend()
    setup = captured_request(captures, "add_backend", "/setup")
    answer = http.post(f"{url}/setup", json=setup)
    assert answer.status_code == 200, answer.text
    assert answer.json()["model_version"] == "echo-v0"
    record = backend.store.get_project("1")
    assert record is not None and record.label_studio_url == "http://127.0.0.1:8080"
    predict = captured_request(captures, "retrieve_predictions", "/predict")
    answer = http.post(f"{url}/predict", json=predict)
    assert answer.status_code == 200, answer.text
    results = answer.json()["results"]
    assert len(results) == len(predict["tasks"])
    labels = [r["result"][0]["value"]["choices"][0] for r in results]
    assert labels == [
        "Positive" if "love" in t["data"]["text"] else "Negative" for t in predict["tasks"]
    ]
    assert all(
        r["model_version"] == "echo-v0" and r["score"] == pytest.approx(0.9) for r in results
    )
    interactive = captured_request(captures, "interactive_annotating", "/predict")
    answer = http.post(f"{url}/predict", json=interactive)
    assert answer.status_code == 200 and len(answer.json()["results"]) == 1


def test_setup_rejects_bad_configs(start_backend: Factory, http: httpx.Client) -> None:
    url, _ = start_backend()
    for schema, needle in [
        ("this is not xml", "XML"),
        ('<View><Text name="text" value="$text"/></View>', "control"),
    ]:
        answer = http.post(f"{url}/setup", json=setup_body(schema=schema))
        assert answer.status_code == 422, answer.text
        body = answer.json()
        assert body["error"] == "InvalidLabelConfig"
        assert needle.lower() in body["detail"].lower()
    answer = http.post(f"{url}/setup", json={"schema": CHOICES_CONFIG})
    assert answer.status_code == 400 and answer.json()["field"] == "project"


def test_malformed_bodies_get_json_errors_naming_the_field(
    start_backend: Factory, http: httpx.Client
) -> None:
    url, _ = start_backend()
    bad_json = http.post(
        f"{url}/predict", content=b"{not json", headers={"content-type": "application/json"}
    )
    assert bad_json.status_code == 400 and bad_json.json()["error"] == "BadRequest"
    assert "JSON" in bad_json.json()["detail"]
    empty = http.post(f"{url}/predict", content=b"")
    assert empty.status_code == 400 and empty.json()["field"] == "body"
    missing = http.post(f"{url}/predict", json={"project": "1.1"})
    assert missing.status_code == 422 and missing.json()["field"] == "tasks"
    no_data = http.post(f"{url}/predict", json={"tasks": [{"data": {"text": "a"}}, {"id": 2}]})
    assert no_data.status_code == 422 and no_data.json()["field"] == "tasks[1]"
    assert "data must be an object" in no_data.json()["detail"]
    not_utf8 = http.post(f"{url}/setup", content=b'{"project": "\xff\xfe"}')
    assert not_utf8.status_code == 400
    unknown_route = http.get(f"{url}/nope")
    assert unknown_route.status_code == 404 and unknown_route.json()["error"] == "NotFound"
    assert http.get(f"{url}/health").json()["status"] == "UP"


def test_unknown_project_and_oversized_body(start_backend: Factory, http: httpx.Client) -> None:
    url, _ = start_backend(max_body_bytes=4096)
    answer = http.post(
        f"{url}/predict", json={"tasks": [{"data": {"text": "x"}}], "project": "42.1"}
    )
    assert answer.status_code == 404 and answer.json()["error"] == "UnknownProject"
    assert "/setup" in answer.json()["fix"]
    big = {"tasks": [{"data": {"text": "x" * 5000}}], "project": "42.1"}
    answer = http.post(f"{url}/predict", json=big)
    assert answer.status_code == 413 and answer.json()["error"] == "PayloadTooLarge"

    def chunks() -> Iterator[bytes]:
        yield b'{"tasks": [{"data": {"text": "'
        for _ in range(10):
            yield b"y" * 1000
        yield b'"}}]}'

    streamed = http.post(f"{url}/predict", content=chunks())
    assert streamed.status_code == 413
    assert http.get(f"{url}/health").status_code == 200


def test_model_that_raises_gives_500_and_the_server_keeps_serving(
    start_backend: Factory, http: httpx.Client
) -> None:
    url, _ = start_backend(Raises)
    http.post(f"{url}/setup", json=setup_body()).raise_for_status()
    body = {"tasks": [{"id": 1, "data": {"text": "a"}}], "project": "1.1795541075"}
    answer = http.post(f"{url}/predict", json=body)
    assert answer.status_code == 500
    assert answer.json()["error"] == "ModelError" and "boom in predict" in answer.json()["detail"]
    assert "traceback" not in answer.json()
    assert http.get(f"{url}/health").json()["status"] == "UP"


def test_debug_mode_returns_the_traceback(start_backend: Factory, http: httpx.Client) -> None:
    url, _ = start_backend(Raises, debug=True)
    http.post(f"{url}/setup", json=setup_body()).raise_for_status()
    answer = http.post(f"{url}/predict", json={"tasks": [{"data": {"text": "a"}}], "project": "1"})
    assert (
        answer.status_code == 500 and "RuntimeError: boom in predict" in answer.json()["traceback"]
    )


def test_wrong_prediction_count_is_a_clear_error(
    start_backend: Factory, http: httpx.Client
) -> None:
    url, _ = start_backend(WrongCount)
    http.post(f"{url}/setup", json=setup_body()).raise_for_status()
    tasks = [{"data": {"text": "a"}}, {"data": {"text": "b"}}]
    answer = http.post(f"{url}/predict", json={"tasks": tasks, "project": "1"})
    assert answer.status_code == 500 and "1 predictions for 2 tasks" in answer.json()["detail"]


def test_auth_basic_and_bearer(start_backend: Factory, http: httpx.Client) -> None:
    url, _ = start_backend(basic_auth_user="ml", basic_auth_pass="secret", api_token="t0ken")
    assert http.get(f"{url}/health").status_code == 200
    denied = http.post(f"{url}/setup", json=setup_body())
    assert denied.status_code == 401 and denied.json()["error"] == "AuthenticationRequired"
    wrong = http.post(f"{url}/setup", json=setup_body(), auth=("ml", "nope"))
    assert wrong.status_code == 401
    garbage = http.post(f"{url}/setup", json=setup_body(), headers={"Authorization": "Basic !!!"})
    assert garbage.status_code == 401
    assert http.post(f"{url}/setup", json=setup_body(), auth=("ml", "secret")).status_code == 200
    bearer = {"Authorization": "Bearer t0ken"}
    assert http.get(f"{url}/versions", headers=bearer).status_code == 200
    assert http.get(f"{url}/metrics").status_code == 401
    token = base64.b64encode(b"ml:secret").decode()
    assert (
        http.get(f"{url}/metrics", headers={"Authorization": f"Basic {token}"}).status_code == 200
    )
    # Label Studio's webhooks carry no credentials: accepted, but only as a hint
    hint = http.post(f"{url}/webhook", json={"action": "TASKS_CREATED", "project": {"id": 1}})
    assert hint.status_code == 200 and hint.json()["status"] == "ignored"


def test_versions_duplicate_delete_validate(start_backend: Factory, http: httpx.Client) -> None:
    url, backend = start_backend()
    http.post(f"{url}/setup", json=setup_body("7.1700000000")).raise_for_status()
    assert http.get(f"{url}/versions", params={"project": "7"}).json()["versions"] == ["echo-v0"]
    with backend.store.new_version("7", "echo") as staging:
        (staging.path / "weights.bin").write_bytes(b"\x00" * 10)
        staging.metrics["score"] = 0.5
    answer = http.get(f"{url}/versions").json()
    assert answer["versions"] == ["echo-v1"] and answer["details"][0]["metrics"] == {"score": 0.5}
    assert (
        http.post(f"{url}/setup", json=setup_body("7.1700000000")).json()["model_version"]
        == "echo-v1"
    )
    dup = http.post(f"{url}/duplicate_model", json={"project_src": "7", "project_dst": 8})
    assert dup.status_code == 200 and dup.json()["model_version"] == "echo-v1"
    assert backend.store.current_name("8") == "echo-v1"
    missing = http.post(f"{url}/duplicate_model", json={"project_src": "99", "project_dst": "100"})
    assert missing.status_code == 404 and missing.json()["field"] == "project_src"
    assert http.post(f"{url}/delete", json={"project": "8"}).json()["status"] == "deleted"
    assert backend.store.current_name("8") is None
    assert http.post(f"{url}/delete", json={"project": "8"}).status_code == 404
    ok = http.post(f"{url}/validate", json={"config": CHOICES_CONFIG})
    assert ok.status_code == 200 and ok.json()["controls"] == ["sentiment"]
    bad = http.post(f"{url}/validate", json={"config": "<View>"})
    assert bad.status_code == 422 and bad.json()["error"] == "InvalidLabelConfig"
    unknown_job = http.post(f"{url}/job_status", json={"job": "nope"})
    assert unknown_job.status_code == 404 and unknown_job.json()["error"] == "UnknownJob"


def test_metrics_count_requests_and_predictions(start_backend: Factory, http: httpx.Client) -> None:
    url, _ = start_backend()
    http.post(f"{url}/setup", json=setup_body()).raise_for_status()
    tasks = [{"data": {"text": "I love it"}}, {"data": {"text": "no"}}]
    http.post(f"{url}/predict", json={"tasks": tasks, "project": "1"}).raise_for_status()
    text = http.get(f"{url}/metrics").text
    assert 'labelbridge_requests_total{route="/predict",status="200"} 1' in text
    assert "labelbridge_predictions_total 2" in text
    assert 'labelbridge_request_seconds_bucket{route="/setup",le="+Inf"} 1' in text


def test_openapi_documents_request_bodies(start_backend: Factory, http: httpx.Client) -> None:
    url, _ = start_backend()
    schema = http.get(f"{url}/openapi.json").json()
    body = schema["paths"]["/predict"]["post"]["requestBody"]["content"]["application/json"][
        "schema"
    ]
    assert body == {"$ref": "#/components/schemas/PredictRequest"}
    assert "tasks" in schema["components"]["schemas"]["PredictRequest"]["properties"]


def test_setup_fails_with_503_when_the_model_failed_to_load(
    start_backend: Factory, http: httpx.Client, wait_for: Callable[..., Any]
) -> None:
    url, _ = start_backend(FailsToLoad)
    wait_for(lambda: http.get(f"{url}/health").json()["model_state"] != "loading")
    health = http.get(f"{url}/health")
    assert health.status_code == 200 and health.json()["model_state"] == "failed"
    assert "weights missing" in health.json()["model_error"]
    answer = http.post(f"{url}/setup", json=setup_body())
    assert answer.status_code == 503 and answer.json()["error"] == "ModelNotReady"
    assert "weights missing" in answer.json()["detail"]
