"""The doctor against real servers on loopback, each broken on purpose in one way.

Every fault the troubleshooting guide lists must come back as a fail or warn with the right fix;
a healthy backend (our server, a small model) must pass with no fail.
"""

from __future__ import annotations

import io
import json
import os
import socket
import subprocess
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx
import pytest
from rich.console import Console

from _backends import BBOX_CONFIG, CHOICES_CONFIG, Echo, Raises
from fakes.labelstudio_ml import FakeLabelStudioML
from fakes.stub_backend import StubBackend
from labelbridge.cli.doctor import render
from labelbridge.doctor import Check, network_hints, run_checks
from labelbridge.loader import load_model_class
from labelbridge.model import Model
from labelbridge.server import create_app
from labelbridge.service import Backend
from labelbridge.settings import Settings
from support import LABELBRIDGE, free_port, labelbridge_start, serve

TASKS = [{"data": {"text": "I love it"}}, {"data": {"text": "meh"}}, {"data": {"text": "bad"}}]
MISSING_PACKAGE = "surely-not-installed-doctor-pkg"
HEALTHY_MODEL = """
from labelbridge import Model


class Healthy(Model):
    name = "healthy"

    def predict(self, tasks, context):
        pick = context.label_config.first("Choices")
        region = {"from_name": pick.control.name, "to_name": pick.object.name,
                  "type": "choices", "value": {"choices": [pick.labels[0]]}}
        return [{"result": [region], "score": 0.9} for _ in tasks]

    def fit(self, event, data):
        (data.output_dir / "weights.txt").write_text(str(data.annotation_count))
        return {"score": 1.0}
"""
BOX = {
    "from_name": "box",
    "to_name": "image",
    "type": "rectanglelabels",
    "value": {"x": 10, "y": 10, "width": 20, "height": 20, "rectanglelabels": ["Cat"]},
}


def by_name(checks: list[Check]) -> dict[str, Check]:
    return {c.name: c for c in checks}


def fails(checks: list[Check]) -> list[str]:
    return [f"{c.name}: {c.measured} (fix: {c.fix})" for c in checks if c.status == "fail"]


@pytest.fixture(scope="module")
def stub_server() -> Iterator[StubBackend]:
    with StubBackend() as stub:
        yield stub


@pytest.fixture
def stub(stub_server: StubBackend) -> StubBackend:
    stub_server.reset()
    return stub_server


@pytest.fixture(scope="module")
def ls_server() -> Iterator[FakeLabelStudioML]:
    with FakeLabelStudioML() as ls:
        yield ls


@pytest.fixture
def ls(ls_server: FakeLabelStudioML) -> FakeLabelStudioML:
    ls_server.reset()
    return ls_server


@pytest.fixture
def backend_folder(tmp_path: Path) -> Path:
    folder = tmp_path / "healthy"
    folder.mkdir()
    (folder / "model.py").write_text(HEALTHY_MODEL)
    (folder / "requirements.txt").write_text("httpx  # the only one\n")
    return folder


@pytest.fixture
def our_backend(tmp_path: Path) -> Iterator[Callable[..., str]]:
    """Our real server in this process, its model ready; returns its URL."""
    stack = ExitStack()

    def start(model: type[Model] | Path = Echo) -> str:
        if isinstance(model, Path):
            cls, ref, folder = load_model_class(model), str(model), model
        else:
            cls, ref, folder = model, f"_backends:{model.__name__}", None
        settings = Settings(model_dir=tmp_path / "models", train_on_annotations="off")
        backend = Backend(cls, settings, model_ref=ref, backend_dir=folder)
        url = stack.enter_context(serve(create_app(backend)))
        backend.wait_ready(10)
        return url

    with stack:
        yield start


def project_with_tasks(ls: FakeLabelStudioML, config: str = CHOICES_CONFIG) -> int:
    project = ls.add_project(label_config=config)
    for task in TASKS:
        ls.add_task(project["id"], task["data"])
    return int(project["id"])


# --- the backend is not there --------------------------------------------------------------
def test_a_closed_port_is_told_as_refused_with_the_start_command() -> None:
    port = free_port()
    checks = run_checks(f"http://127.0.0.1:{port}", label_config=CHOICES_CONFIG, tasks=TASKS)
    found = by_name(checks)
    assert found["reachable"].status == "fail"
    assert "connection refused" in found["reachable"].measured
    assert f"labelbridge start <folder> --port {port}" in (found["reachable"].fix or "")
    assert {found[n].status for n in ("health", "setup", "predict", "versions")} == {"skip"}
    out = io.StringIO()
    render(checks, Console(file=out, soft_wrap=True, highlight=False))
    first = out.getvalue().splitlines()[0]
    assert first.startswith("FAIL  reachable") and "fix: start the backend" in first


def test_an_unknown_host_is_told_as_dns(monkeypatch: pytest.MonkeyPatch) -> None:
    real = socket.getaddrinfo

    def resolve(host: Any, *args: Any, **kwargs: Any) -> Any:
        if host == "ml-backend.doctor.invalid":
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return real(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", resolve)
    reachable = by_name(run_checks("http://ml-backend.doctor.invalid:9090"))["reachable"]
    assert reachable.status == "fail" and "does not resolve (DNS)" in reachable.measured
    assert "Docker network" in (reachable.fix or "")


def test_docker_and_reserved_address_hints(stub: StubBackend, ls: FakeLabelStudioML) -> None:
    remote = network_hints("http://localhost:9090", "http://192.168.1.20:8080")
    assert "host.docker.internal:9090" in remote[0][1]
    in_docker = network_hints("http://127.0.0.1:9090", None, docker="label-studio-app-1")
    assert "Docker (label-studio-app-1)" in in_docker[0][0]
    assert "service name" in in_docker[0][1]
    # both on loopback, and Label Studio has not (yet) accepted this backend
    project = project_with_tasks(ls)
    checks = run_checks(stub.url, label_studio=ls.url, token=ls.legacy_token, project=project)
    reachable = by_name(checks)["reachable"]
    assert reachable.status == "warn"
    assert "ML_BLOCK_LOCAL_IP=false SSRF_PROTECTION_ENABLED=false" in (reachable.fix or "")
    assert by_name(checks)["registered"].status == "warn"  # no backend connected


# --- health and setup ----------------------------------------------------------------------
def test_slow_health_fails_with_its_variable(
    stub: StubBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ML_TIMEOUT_HEALTH", "0.3")
    stub.delays["/health"] = 0.6
    found = by_name(run_checks(stub.url))
    assert found["reachable"].status == "pass"
    assert found["health"].status == "fail"
    assert "Disconnected" in found["health"].measured
    assert "ML_TIMEOUT_HEALTH" in (found["health"].fix or "")
    assert len(stub.requests_to("/health")) == 3  # as Label Studio: tried three times


def test_health_that_is_not_json_fails(stub: StubBackend) -> None:
    stub.texts["/health"] = "OK"
    health = by_name(run_checks(stub.url))["health"]
    assert health.status == "fail"
    assert "not with JSON" in health.measured and "Disconnected" in health.measured
    assert "JSON" in (health.fix or "")


def test_slow_setup_fails_with_its_variable(
    stub: StubBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ML_TIMEOUT_SETUP", "0.3")
    stub.delays["/setup"] = 0.6
    setup = by_name(run_checks(stub.url, label_config=CHOICES_CONFIG))["setup"]
    assert setup.status == "fail" and "timed out" in setup.measured and "(ER)" in setup.measured
    assert "ML_TIMEOUT_SETUP" in (setup.fix or "")


def test_setup_that_is_not_cheap_warns(stub: StubBackend, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ML_TIMEOUT_SETUP", "0.6")
    stub.delays["/setup"] = 0.25
    setup = by_name(run_checks(stub.url, label_config=CHOICES_CONFIG))["setup"]
    assert setup.status == "warn" and "not cheap" in setup.measured
    assert "before nearly every action" in (setup.fix or "")


def test_setup_without_model_version(stub: StubBackend) -> None:
    stub.model_version = None
    found = by_name(run_checks(stub.url, label_config=CHOICES_CONFIG, tasks=TASKS))
    assert found["setup"].status == "warn" and "model_version None" in found["setup"].measured
    assert "return a model_version from /setup" in (found["setup"].fix or "")
    assert found["predict"].status == "fail"
    assert "400 model_version may not be null" in found["predict"].measured


# --- predictions -------------------------------------------------------------------------
def test_predictions_that_do_not_match_the_config_are_named(stub: StubBackend) -> None:
    stub.region = {
        "from_name": "sentiment",
        "to_name": "text",
        "type": "choices",
        "value": {"choices": ["Maybe"]},
    }
    found = by_name(run_checks(stub.url, label_config=CHOICES_CONFIG, tasks=TASKS))
    assert found["predict"].status == "pass"
    check = found["predictions"]
    assert check.status == "fail" and len(check.details) == 3
    assert check.details[0].startswith("task 1 (index 0), result[0]: value.choices")
    assert "'Maybe'" in check.details[0]
    assert "match the project's config" in (check.fix or "")


def test_a_wrong_result_count_fails(stub: StubBackend) -> None:
    stub.wrong_count = True
    predict = by_name(run_checks(stub.url, label_config=CHOICES_CONFIG, tasks=TASKS))["predict"]
    assert predict.status == "fail" and "2 results" in predict.measured
    assert "stores nothing" in predict.measured and "one result per task" in (predict.fix or "")


def test_a_model_that_raises(our_backend: Callable[..., str]) -> None:
    url = our_backend(Raises)
    predict = by_name(run_checks(url, label_config=CHOICES_CONFIG, tasks=TASKS))["predict"]
    assert predict.status == "fail"
    assert "500" in predict.measured and "boom in predict" in predict.measured
    assert "backend's log" in (predict.fix or "")


def test_a_slow_model_gets_a_projection_for_the_whole_project(
    stub: StubBackend, ls: FakeLabelStudioML, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ML_TIMEOUT_PREDICT", "2")
    stub.delays["/predict"] = 0.2
    project = project_with_tasks(ls)
    for index in range(40):
        ls.add_task(project, {"text": f"more {index}"})
    found = by_name(
        run_checks(stub.url, label_studio=ls.url, token=ls.legacy_token, project=project, sample=3)
    )
    assert found["predict"].status == "pass"
    throughput = found["throughput"]
    assert throughput.status == "warn" and "all 43 tasks" in throughput.measured
    assert "labelbridge predict" in (throughput.fix or "")


# --- assets ---------------------------------------------------------------------------------
def test_an_asset_that_404s(stub: StubBackend, ls: FakeLabelStudioML) -> None:
    stub.region = BOX
    project = ls.add_project(label_config=BBOX_CONFIG)["id"]
    ls.add_task(project, {"image": ls.add_upload(project, "cat.png", b"\x89PNG...")})
    gone = ls.add_task(project, {"image": f"/data/upload/{project}/gone.png"})
    ls.add_annotation(gone["id"], [BOX])
    ls.add_ml_backend(project, stub.url)
    found = by_name(
        run_checks(stub.url, label_studio=ls.url, token=ls.legacy_token, project=project)
    )
    assets = found["assets"]
    assert assets.status == "fail" and "1 of 2 asset URLs readable" in assets.measured
    assert "404" in assets.measured and "gone.png" in assets.details[0]
    assert "still exists in Label Studio" in (assets.fix or "")
    assert fails(checks=[c for c in found.values() if c.name != "assets"]) == []


def test_an_asset_that_needs_a_token(stub: StubBackend, ls: FakeLabelStudioML) -> None:
    stub.region = BOX
    path = ls.add_upload(1, "cat.png", b"\x89PNG...")
    tasks = [{"id": 7, "data": {"image": path}}]
    found = by_name(
        run_checks(stub.url, label_config=BBOX_CONFIG, tasks=tasks, label_studio=ls.url)
    )
    assert found["label-studio"].status == "warn" and "--token" in (found["label-studio"].fix or "")
    assets = found["assets"]
    assert assets.status == "fail" and "401" in assets.measured and "(task 7)" in assets.measured
    assert "LABEL_STUDIO_API_KEY" in (assets.fix or "") and "personal access token" in (
        assets.fix or ""
    )


# --- Label Studio's side: annotations, training, registered backends ----------------------
def test_too_few_annotations(stub: StubBackend, ls: FakeLabelStudioML) -> None:
    project = project_with_tasks(ls)
    ls.add_ml_backend(project, stub.url)
    found = by_name(
        run_checks(stub.url, label_studio=ls.url, token=ls.legacy_token, project=project)
    )
    annotations = found["annotations"]
    assert annotations.status == "fail" and "has 0 annotations" in annotations.measured
    assert "does not say how many" in annotations.measured  # the stub's /health has no number
    assert "annotate 1 more task " in (annotations.fix or "")
    assert found["train"].status == "skip"
    assert not stub.requests_to("/webhook")


class NeedsThree(Echo):
    min_annotations = 3


def test_the_annotations_the_model_needs_come_from_its_health(
    our_backend: Callable[..., str], ls: FakeLabelStudioML
) -> None:
    url = our_backend(NeedsThree)
    project = project_with_tasks(ls)
    ls.add_annotation(1, [{"from_name": "sentiment", "to_name": "text", "type": "choices"}])
    ls.add_ml_backend(project, url)
    checks = run_checks(url, label_studio=ls.url, token=ls.legacy_token, project=project)
    found = by_name(checks)
    annotations = found["annotations"]
    needs = f"the model needs 3 annotations before training starts; project {project} has 1"
    assert annotations.status == "fail" and annotations.measured == needs
    assert annotations.data == {"count": 1, "needed": 3}
    assert "annotate 2 more tasks" in (annotations.fix or "")
    assert "Model.min_annotations" in (annotations.fix or "")
    train = found["train"]
    assert train.status == "skip" and "too few annotations (1/3)" in train.measured
    out = io.StringIO()
    render(checks, Console(file=out, soft_wrap=True, highlight=False))
    [line] = [x for x in out.getvalue().splitlines() if x.startswith("FAIL  annotations")]
    assert needs in line and "fix: annotate 2 more tasks" in line


def test_a_registered_backend_in_error(stub: StubBackend, ls: FakeLabelStudioML) -> None:
    project = project_with_tasks(ls)
    error = f"500 Server Error: Internal Server Error for url: {stub.url}/setup"
    ls.add_ml_backend(project, stub.url + "/", state="ER", error_message=error)
    found = by_name(
        run_checks(stub.url, label_studio=ls.url, token=ls.legacy_token, project=project)
    )
    registered = found["registered"]
    assert registered.status == "fail" and error in registered.measured
    assert "/setup" in (registered.fix or "")


def test_training_without_job_status_warns(stub: StubBackend, ls: FakeLabelStudioML) -> None:
    stub.statuses["/job_status"] = 404
    stub.statuses["/versions"] = 404
    project = project_with_tasks(ls)
    ls.add_annotation(1, [{"from_name": "sentiment", "to_name": "text", "type": "choices"}])
    ls.add_ml_backend(project, stub.url)
    found = by_name(
        run_checks(stub.url, label_studio=ls.url, token=ls.legacy_token, project=project)
    )
    assert found["annotations"].status == "pass"
    train = found["train"]
    assert train.status == "warn" and "no /job_status" in train.measured
    [event] = stub.bodies("/webhook")
    assert event["action"] == "START_TRAINING" and event["project"]["id"] == project
    versions = found["versions"]
    assert versions.status == "warn" and "current one" in versions.measured


# --- healthy ------------------------------------------------------------------------------
def test_a_healthy_backend_passes_clean(
    our_backend: Callable[..., str], ls: FakeLabelStudioML, backend_folder: Path
) -> None:
    url = our_backend(backend_folder)
    project = project_with_tasks(ls)
    ls.add_annotation(
        1,
        [
            {
                "from_name": "sentiment",
                "to_name": "text",
                "type": "choices",
                "value": {"choices": ["Positive"]},
            }
        ],
    )
    ls.add_ml_backend(project, url)
    setup = {"project": f"{project}.1767225600", "schema": CHOICES_CONFIG, "hostname": ls.url}
    httpx.post(f"{url}/setup", json={**setup, "access_token": ls.legacy_token}).raise_for_status()
    checks = run_checks(
        url,
        label_studio=ls.url,
        token=ls.legacy_token,
        project=project,
        backend_dir=backend_folder,
        train_wait=10,
    )
    assert fails(checks) == []
    found = by_name(checks)
    skipped = {c.name for c in checks if c.status == "skip"}
    assert skipped == {"assets"}  # a text project has no URLs to read
    assert {c.name for c in checks if c.status == "warn"} == set()
    assert "model_version 'healthy-v0'" in found["setup"].measured
    assert found["train"].data["state"] == "finished", found["train"].measured
    assert found["requirements"].status == "pass"


def test_the_cli_finds_the_started_process_and_its_missing_package(
    tmp_path: Path, backend_folder: Path
) -> None:
    (backend_folder / "requirements.txt").write_text(f"httpx\n{MISSING_PACKAGE}>=1.0\n")
    (tmp_path / "config.xml").write_text(CHOICES_CONFIG)
    (tmp_path / "tasks.json").write_text(json.dumps(TASKS))
    with labelbridge_start(str(backend_folder), tmp=tmp_path) as server:
        url = server.url
        inputs = ["--config", str(tmp_path / "config.xml"), "--tasks", str(tmp_path / "tasks.json")]
        done = subprocess.run(
            [LABELBRIDGE, "doctor", "--backend", url, "--json", *inputs],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
            env={k: v for k, v in os.environ.items() if not k.startswith("LABEL_STUDIO_")},
        )
    assert done.returncode == 1, done.stderr
    checks = {c["name"]: c for c in json.loads(done.stdout)}
    requirements = checks["requirements"]
    assert requirements["status"] == "fail"
    assert requirements["data"]["missing"] == [MISSING_PACKAGE]
    assert f"process {server.process.pid}" in requirements["measured"]
    assert "-m pip install -r" in requirements["fix"]
    others = {name: c["status"] for name, c in checks.items() if name != "requirements"}
    assert "fail" not in others.values(), others
    assert set(checks["predict"]) == {"name", "status", "measured", "fix", "details", "data"}
