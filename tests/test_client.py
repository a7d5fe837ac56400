"""The connector against a stand-in backend built only from the protocol.

Bodies are compared with what the real Label Studio 1.23.2 sent (shared/protocol captures);
limits are set small through the environment and through the constructor.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from fakes._server import free_port
from fakes.stub_backend import StubBackend
from labelbridge import __version__
from labelbridge.client import (
    CALLS,
    AsyncMLBackendClient,
    BadAnswer,
    CallHTTPError,
    CallTimeout,
    MLBackendClient,
    project_uid,
)
from labelbridge.errors import BackendHTTPError, BackendTimeout, BackendUnreachable
from labelbridge.settings import ConnectorSettings

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
CAPTURES = SHARED / "protocol" / "label-studio-1.23.2-captures.json"
CONFIG = (
    '<View><Text name="text" value="$text"/><Choices name="sentiment" toName="text" '
    'choice="single"><Choice value="Positive"/><Choice value="Negative"/></Choices></View>'
)
TASKS = [{"data": {"text": f"I love item {i}" if i % 2 else f"item {i}"}} for i in range(5)]


@pytest.fixture(autouse=True)
def _no_ml_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Limits come only from what each test sets."""
    for name in ConnectorSettings.model_fields:
        monkeypatch.delenv(f"ML_{name.upper()}", raising=False)


@pytest.fixture(scope="module")
def captured() -> dict[str, list[dict[str, Any]]]:
    if not CAPTURES.is_file():
        pytest.skip(f"Label Studio captures not found at {CAPTURES}")
    steps = json.loads(CAPTURES.read_text(encoding="utf-8"))["steps"]
    return {step["step"]: step["requests_to_ml_backend"] for step in steps}


def sent_by_label_studio(captured: dict[str, Any], step: str, path: str) -> dict[str, Any]:
    return next(r["body"] for r in captured[step] if r["path"] == path)


@pytest.fixture(scope="module")
def shared_stub() -> Iterator[StubBackend]:
    with StubBackend() as backend:
        yield backend


@pytest.fixture
def stub(shared_stub: StubBackend) -> StubBackend:
    shared_stub.reset()
    return shared_stub


# --- bodies ---------------------------------------------------------------------------------
def test_setup_body_is_what_label_studio_sends(stub: StubBackend, captured: Any) -> None:
    want = sent_by_label_studio(captured, "add_backend", "/setup")
    without_extra = next(
        r["body"]
        for r in captured["patch_backend_full"]
        if r["path"] == "/setup" and r["body"]["extra_params"] is None
    )
    with MLBackendClient(stub.url) as client:
        common = {"hostname": want["hostname"], "access_token": want["access_token"]}
        version = client.setup(
            want["project"], want["schema"], extra_params=want["extra_params"], **common
        )
        client.setup(want["project"], want["schema"], **common)
    first, second = stub.bodies("/setup")
    assert first == want and list(first) == list(want)  # same keys, same order
    assert second == without_extra
    assert version == "stub-v1"


@pytest.mark.parametrize("step", ["retrieve_predictions", "interactive_annotating", "predict_test"])
def test_predict_body_is_what_label_studio_sends(
    stub: StubBackend, captured: Any, step: str
) -> None:
    want = sent_by_label_studio(captured, step, "/predict")
    params = want["params"]
    with MLBackendClient(stub.url) as client:
        answer = client.predict(
            want["tasks"],
            project=want["project"],
            label_config=want["label_config"],
            context=params["context"],
            login=params["login"],
            password=params["password"],
        )
    (sent,) = stub.bodies("/predict")
    assert sent == want and list(sent) == list(want)
    assert len(answer.results) == len(want["tasks"])


def test_start_training_body_is_what_label_studio_sends(stub: StubBackend, captured: Any) -> None:
    want = sent_by_label_studio(captured, "train", "/webhook")
    with MLBackendClient(stub.url) as client:
        answer = client.start_training(want["project"])
        event = sent_by_label_studio(captured, "annotation_created", "/webhook")
        client.webhook(event["action"], {k: v for k, v in event.items() if k != "action"})
    assert stub.bodies("/webhook") == [want, event]
    assert answer == {"status": "queued", "job": "job-1"}


def test_other_calls_send_the_protocol_bodies(stub: StubBackend) -> None:
    annotated = [{"id": 1, "data": {"text": "x"}, "annotations": [{"result": []}]}]
    with MLBackendClient(stub.url) as client:
        assert client.train(annotated, project=1, label_config=CONFIG)["job"] == "job-1"
        assert client.job_status("job-1")["job_status"] == "finished"
        client.duplicate_model("1.1795541075", 2)
        client.delete(3)
        client.validate(CONFIG)
        versions = client.versions()
        assert "stub_requests_total" in client.metrics()
        assert client.health()["status"] == "UP"
    assert stub.bodies("/train") == [
        {
            "annotations": annotated,
            "project": "1.0",
            "label_config": CONFIG,
            "params": {"login": None, "password": None},
        }
    ]
    assert stub.bodies("/job_status") == [{"job": "job-1"}]
    assert stub.bodies("/duplicate_model") == [
        {"project_src": "1.1795541075", "project_dst": "2.0"}
    ]
    assert stub.bodies("/delete") == [{"project": "3.0"}]
    assert stub.bodies("/validate") == [{"config": CONFIG}]
    assert stub.bodies("/versions") == stub.bodies("/health") == [None]  # GET, no body
    assert versions.versions == ["stub-v1"]  # the backend's extra keys are dropped
    assert versions.details[0].current


def test_project_uid_has_label_studios_form() -> None:
    assert project_uid(1, created_at=1795541075.9) == "1.1795541075"
    assert project_uid("1.1795541075") == "1.1795541075"
    assert project_uid(7) == "7.0"


def test_headers_user_agent_and_basic_auth(captured: Any) -> None:
    with StubBackend(basic_auth=("mluser", "mlpass")) as stub:
        with MLBackendClient(stub.url) as client, pytest.raises(CallHTTPError) as refused:
            client.setup(1, CONFIG)
        assert refused.value.status == 401 and "credentials" in (refused.value.fix or "")
        with MLBackendClient(
            stub.url, auth=("mluser", "mlpass"), headers={"X-Trace": "t1"}
        ) as client:
            client.health()
            client.setup(1, CONFIG)
        with MLBackendClient(stub.url, auth=("mluser", "mlpass"), user_agent="heartex/1") as c:
            c.health()
        health, custom = stub.requests_to("/health")
        _, setup = stub.requests_to("/setup")
    want = next(r["headers"] for r in captured["basic_auth_backend"] if r["path"] == "/setup")
    assert setup.headers["authorization"] == want["Authorization"]
    assert setup.headers["content-type"] == want["Content-Type"]
    assert health.headers["user-agent"] == f"labelbridge/{__version__}"
    assert "content-type" not in health.headers  # a GET without a body, as Label Studio
    assert health.headers["x-trace"] == "t1"
    assert custom.headers["user-agent"] == "heartex/1"


def test_credentials_in_the_url_are_used_and_never_shown() -> None:
    with StubBackend(basic_auth=("u", "s3cret")) as stub:
        url = stub.url.replace("http://", "http://u:s3cret@")
        with MLBackendClient(url, timeout_setup=0.2) as client:
            assert client.health()["status"] == "UP"
            stub.delays["/setup"] = 0.6
            with pytest.raises(BackendTimeout) as error:
                client.setup(1, CONFIG)
    assert "s3cret" not in str(error.value) and "s3cret" not in json.dumps(error.value.to_dict())


# --- limits ---------------------------------------------------------------------------------
def test_defaults_and_call_table_follow_label_studio() -> None:
    settings = MLBackendClient("http://127.0.0.1:9").settings
    assert settings.model_dump() == {
        "connection_timeout": 1.0,
        "timeout_default": 100.0,
        "timeout_train": 30.0,
        "timeout_predict": 100.0,
        "timeout_health": 1.0,
        "timeout_setup": 3.0,
        "timeout_duplicate_model": 1.0,
        "timeout_delete": 1.0,
        "timeout_train_job_status": 1.0,
    }
    retried = {name for name, spec in CALLS.items() if spec.retry}
    assert retried == {"health", "versions", "job_status"}


Invoke = Callable[[MLBackendClient], Any]
GOVERNED: list[tuple[str, str, Invoke]] = [
    ("/health", "ML_TIMEOUT_HEALTH", lambda c: c.health()),
    ("/setup", "ML_TIMEOUT_SETUP", lambda c: c.setup(1, CONFIG)),
    ("/predict", "ML_TIMEOUT_PREDICT", lambda c: c.predict(TASKS)),
    ("/train", "ML_TIMEOUT_PREDICT", lambda c: c.train([], project=1, label_config=CONFIG)),
    ("/webhook", "ML_TIMEOUT_PREDICT", lambda c: c.start_training({"id": 1})),
    ("/versions", "ML_TIMEOUT_SETUP", lambda c: c.versions()),
    ("/job_status", "ML_TIMEOUT_TRAIN_JOB_STATUS", lambda c: c.job_status("j")),
    ("/duplicate_model", "ML_TIMEOUT_DUPLICATE_MODEL", lambda c: c.duplicate_model(1, 2)),
    ("/delete", "ML_TIMEOUT_DELETE", lambda c: c.delete(1)),
    ("/validate", "ML_TIMEOUT_DEFAULT", lambda c: c.validate(CONFIG)),
]


@pytest.mark.parametrize(("path", "variable", "invoke"), GOVERNED, ids=[g[0] for g in GOVERNED])
def test_each_call_times_out_on_its_variable(
    stub: StubBackend, monkeypatch: pytest.MonkeyPatch, path: str, variable: str, invoke: Invoke
) -> None:
    """Only `variable` is small, and the delay is under every other default: a call governed
    by the wrong variable would succeed."""
    monkeypatch.setenv(variable, "0.2")
    stub.delays[path] = 0.9  # under the smallest other default (1 s)
    with MLBackendClient(stub.url, retries=0) as client, pytest.raises(CallTimeout) as error:
        invoke(client)
    exc = error.value
    label = f"{'GET' if path in ('/health', '/versions') else 'POST'} {path}"
    assert str(exc).startswith(f"{label} timed out after 0.2 s ({variable})")
    assert f"raise {variable}" in str(exc)
    assert (exc.variable, exc.limit, exc.request, exc.reason) == (variable, 0.2, label, "timeout")
    assert exc.url == stub.url + path and exc.status is None and exc.elapsed < 0.8
    assert exc.to_dict()["error"] == "BackendTimeout"


def test_constructor_overrides_beat_the_environment(
    stub: StubBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ML_TIMEOUT_SETUP", "50")
    stub.delays["/setup"] = 0.6
    for client in (
        MLBackendClient(stub.url, timeout_setup=0.2),
        MLBackendClient(
            stub.url, settings=ConnectorSettings.model_validate({"timeout_setup": 0.2})
        ),
        MLBackendClient(stub.url, settings=ConnectorSettings(), timeout_setup=0.2),
    ):
        with client, pytest.raises(BackendTimeout) as error:
            client.setup(1, CONFIG)
        assert "POST /setup timed out after 0.2 s (ML_TIMEOUT_SETUP)" in str(error.value)
    assert MLBackendClient(stub.url).settings.timeout_setup == 50  # read from the environment


def test_refused_dns_and_timeout_are_told_apart(stub: StubBackend) -> None:
    closed = MLBackendClient(f"http://localhost:{free_port()}", backoff=0.01)
    with closed, pytest.raises(BackendUnreachable) as refused:
        closed.health()
    unknown = MLBackendClient("http://ml-backend.invalid:9090", backoff=0.01)
    with unknown, pytest.raises(BackendUnreachable) as dns:
        unknown.health()
    stub.delays["/health"] = 0.6
    slow_client = MLBackendClient(stub.url, timeout_health=0.2, retries=0)
    with slow_client, pytest.raises(BackendTimeout) as slow:
        slow_client.health()
    r, d, t = refused.value, dns.value, slow.value
    assert (r.reason, d.reason, t.reason) == ("refused", "dns", "timeout")
    assert "connection refused" in r.detail and "host.docker.internal" in (r.fix or "")
    assert "'ml-backend.invalid' not found (DNS)" in d.detail
    assert "host.docker.internal" not in (d.fix or "")
    assert not isinstance(t, BackendUnreachable) and t.variable == "ML_TIMEOUT_HEALTH"
    assert r.attempts == 3 and d.attempts == 1  # a wrong name does not fix itself


def test_health_is_retried_but_predict_setup_and_webhook_never(stub: StubBackend) -> None:
    stub.delays.update({"/health": 0.6, "/predict": 0.6, "/setup": 0.6, "/webhook": 0.6})
    client = MLBackendClient(
        stub.url, timeout_health=0.1, timeout_predict=0.1, timeout_setup=0.1, backoff=0.01
    )
    with client:
        calls: list[Callable[[], Any]] = [
            client.health,
            lambda: client.predict(TASKS[:1]),
            lambda: client.setup(1, CONFIG),
            lambda: client.start_training({"id": 1}),
        ]
        for call in calls:
            with pytest.raises(BackendTimeout):
                call()
    counts = {p: len(stub.requests_to(p)) for p in ("/health", "/predict", "/setup", "/webhook")}
    assert counts == {"/health": 3, "/predict": 1, "/setup": 1, "/webhook": 1}


def test_an_error_status_is_not_retried_and_carries_the_backends_json(stub: StubBackend) -> None:
    stub.statuses.update({"/health": 503, "/predict": 500})
    with MLBackendClient(stub.url) as client:
        with pytest.raises(BackendHTTPError) as unhealthy:
            client.health()
        with pytest.raises(CallHTTPError) as failed:
            client.predict(TASKS)
    assert len(stub.requests_to("/health")) == 1 and unhealthy.value.status == 503
    exc = failed.value
    assert (
        exc.detail
        == "POST /predict answered 500 Internal Server Error: StubError: stub answers 500"
    )
    assert exc.body == {"error": "StubError", "detail": "stub answers 500"}
    assert "log" in (exc.fix or "") and exc.to_dict()["call"]["status"] == 500


# --- answers --------------------------------------------------------------------------------
def test_predict_batches_checks_one_result_per_task(stub: StubBackend) -> None:
    with MLBackendClient(stub.url) as client:
        batches = list(client.predict_batches(TASKS, batch_size=2, project=1))
        assert [len(batch) for batch, _ in batches] == [2, 2, 1]
        assert all(len(p.results) == len(b) for b, p in batches)
        stub.wrong_count = True
        assert len(client.predict(TASKS).results) == len(TASKS) - 1  # predict() alone reports
        with pytest.raises(BadAnswer) as error:
            list(client.predict_batches(TASKS, batch_size=2))
    assert "has 1 results for 2 tasks" in str(error.value)
    assert error.value.reason == "bad_answer"


@pytest.mark.parametrize(("shape", "per_task"), [("object", 1), ("list", 2), ("regions", 1)])
def test_lenient_with_other_backends_answers(stub: StubBackend, shape: str, per_task: int) -> None:
    stub.results_shape, stub.predict_model_version = shape, "p-7"
    with MLBackendClient(stub.url) as client:
        answer = client.predict(TASKS[:2])
    assert [len(item) for item in answer.results] == [per_task, per_task]
    assert all(p.model_version == "p-7" for item in answer.results for p in item)
    assert answer.results[1][0].result[0]["value"] == {"choices": ["Positive"]}


def test_answers_that_break_the_protocol() -> None:
    def answer(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/setup":
            return httpx.Response(200, text="<html>ok</html>")
        return httpx.Response(200, json={"results": [None, 3]})

    transport = httpx.MockTransport(answer)
    with MLBackendClient("http://backend:9090", transport=transport) as client:
        with pytest.raises(BadAnswer, match="not with JSON"):
            client.setup(1, CONFIG)
        with pytest.raises(BadAnswer, match=r"results\[1\] is neither a prediction"):
            client.predict(TASKS[:2])


def test_async_client_shares_the_definitions(stub: StubBackend) -> None:
    async def main() -> tuple[Any, ...]:
        async with AsyncMLBackendClient(stub.url, timeout_health=0.2, retries=0) as client:
            health = await client.health()
            version = await client.setup(1, CONFIG, hostname="http://ls")
            sizes = [len(p.results) async for _, p in client.predict_batches(TASKS, batch_size=3)]
            stub.delays["/health"] = 0.6
            try:
                await client.health()
            except CallTimeout as exc:
                return health, version, sizes, exc
        raise AssertionError("no timeout")

    health, version, sizes, timeout = asyncio.run(main())
    assert health["status"] == "UP" and version == "stub-v1" and sizes == [3, 2]
    assert timeout.variable == "ML_TIMEOUT_HEALTH" and timeout.attempts == 1
    with MLBackendClient(stub.url) as client:
        client.setup(1, CONFIG, hostname="http://ls")
    first, second = stub.bodies("/setup")
    assert first == second  # the same body from both clients


def test_answers_are_checked_in_order_with_one_validation() -> None:
    """All predictions are validated in one call; the error names the first bad one, as a
    check one by one would, whatever the shapes of the items around it."""
    good = {"result": [{"from_name": "s", "value": {}}]}
    answers = {
        "a": {"results": [good, [good, {"result": [], "score": "high"}], 3]},
        "b": {"results": [good, {"from_name": "s", "value": {}}, [good, good], {"result": 7}]},
        "c": {"results": [None, [{"from_name": "s"}, {"result": []}]]},
    }

    def answer(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json=answers[json.loads(request.content)["project"][0]])

    with MLBackendClient("http://backend:9090", transport=httpx.MockTransport(answer)) as client:
        with pytest.raises(BadAnswer, match=r"answer results\[1\]: Input should be a valid number"):
            client.predict(TASKS[:3], project="a")
        with pytest.raises(BadAnswer, match=r"answer results\[3\]: Input should be a valid list"):
            client.predict(TASKS[:4], project="b")
        with pytest.raises(BadAnswer, match=r"answer results\[1\] is neither a prediction"):
            client.predict(TASKS[:2], project="c")


def test_json_on_the_wire_is_the_stdlibs() -> None:
    """Bodies and answers go through orjson, with the stdlib's meaning: what it refuses to
    send is refused (NaN, a UUID), what orjson would read otherwise is read as it reads it."""
    answers = {
        "big": b'{"results": [{"result": [], "id": 123456789012345678901234567890}]}',
        "nan": b'{"results": [{"result": [], "score": NaN}]}',
        "bom": b'\xef\xbb\xbf{"results": [{"result": [], "model_version": "\\u00e9"}]}',
    }
    sent: list[bytes] = []

    def answer(request: httpx.Request) -> httpx.Response:
        sent.append(request.content)
        return httpx.Response(200, content=answers[json.loads(request.content)["project"][:3]])

    task = {"data": {"text": "é \u2028", "n": 2**70, "t": (1, 2), 5: None}}
    with MLBackendClient("http://backend:9090", transport=httpx.MockTransport(answer)) as client:
        big = client.predict([task], project="big")
        with pytest.raises(BadAnswer, match="score must be a finite number"):
            client.predict([task], project="nan")
        assert client.predict([task], project="bom").results[0][0].model_version == "é"
        with pytest.raises(ValueError, match="Out of range float"):
            client.predict([{"data": {"x": float("nan")}}], project="big")
        with pytest.raises(TypeError, match="UUID is not JSON serializable"):
            client.predict([{"data": {"x": uuid.UUID(int=1)}}], project="big")
    assert big.results[0][0].model_extra == {"id": 123456789012345678901234567890}
    assert json.loads(sent[0])["tasks"] == [
        {"data": {"text": "é \u2028", "n": 2**70, "t": [1, 2], "5": None}}
    ]
    assert len(sent) == 3  # the refused bodies were never sent
