"""Pre-annotating a whole project: `labelbridge prelabel`, the prelabel job, several models.

Against the fake Label Studio (real HTTP on loopback) and our real server in a thread. The
model is a small folder written per test, so job worker processes can import it too.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import typer
from typer.testing import CliRunner

from fakes import FakeLabelStudio
from fakes.labelstudio import DEFAULT_CONFIG
from labelbridge.cli import _commands  # noqa: F401  (registers the commands)
from labelbridge.cli._app import app as cli_app
from labelbridge.errors import LabelStudioError
from labelbridge.labelstudio import LabelStudio
from labelbridge.loader import load_model_class
from labelbridge.multi import build_multi_app, parse_backend_args
from labelbridge.predictors import BackendPredictor, Predictor, in_process_predictor
from labelbridge.prelabel import Failure, Prelabeler, PrelabelOptions, PrelabelStats
from labelbridge.server import create_app
from labelbridge.service import Backend
from labelbridge.settings import Settings
from support import serve

MODEL_PY = """
import time

from labelbridge import Model


class Tiny(Model):
    name = "{name}"
    min_annotations = 1

    def predict(self, tasks, context):
        pick = context.label_config.first("Choices")
        out = []
        for task in tasks:
            data = task["data"]
            if data.get("poison"):
                raise RuntimeError(f"poisoned task {{task.get('id')}}")
            time.sleep(float(data.get("sleep", 0)))
            label = "Positive" if "love" in str(data.get("text", "")) else "Negative"
            if data.get("bad"):
                label = "Maybe"  # not in the labeling config: dropped, counted as invalid
            item = {{"from_name": pick.control.name, "to_name": pick.object.name,
                     "type": "choices", "value": {{"choices": [label]}}}}
            out.append({{"result": [item], "score": 0.5}})
        return out

    def fit(self, event, data):
        (data.output_dir / "weights.txt").write_text(str(data.annotation_count))
        return {{"score": 1.0}}
"""

FAST = {"backoff": 0.01, "write_batch": 8, "flush_seconds": 60.0}


def make_model(root: Path, name: str = "tiny") -> Path:
    folder = root / name
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "model.py").write_text(MODEL_PY.format(name=name))
    return folder


@pytest.fixture(scope="module")
def fake_server() -> Iterator[FakeLabelStudio]:
    with FakeLabelStudio() as running:
        yield running


@pytest.fixture
def fake(fake_server: FakeLabelStudio) -> FakeLabelStudio:
    fake_server.reset()
    return fake_server


def add_project(fake: FakeLabelStudio, texts: list[dict[str, Any]]) -> tuple[int, list[int]]:
    project = fake.add_project()
    ids = [fake.add_task(project["id"], data)["id"] for data in texts]
    return project["id"], ids


def per_task(fake: FakeLabelStudio, project: int, version: str) -> Counter[int]:
    return Counter(
        p["task"]
        for p in fake.predictions.values()
        if p["project"] == project and p["model_version"] == version
    )


def run(
    fake: FakeLabelStudio,
    predictor: Predictor,
    project: int,
    token: str | None = None,
    on_progress: Callable[[PrelabelStats], None] | None = None,
    **options: Any,
) -> PrelabelStats:
    token = token or fake.legacy_token
    with LabelStudio(fake.url, token) as client:
        runner = Prelabeler(
            client,
            predictor,
            project,
            PrelabelOptions(**{**FAST, **options}),
            token=token,
            on_progress=on_progress,
        )
        try:
            return runner.run()
        finally:
            predictor.close()


@pytest.fixture
def our_server(tmp_path: Path) -> Iterator[str]:
    """Our server for the tiny model (embedded job queue), in a thread."""
    folder = make_model(tmp_path)
    backend = Backend(
        load_model_class(folder),
        Settings(model_dir=tmp_path / "models"),
        model_ref=str(folder),
        backend_dir=folder,
    )
    with serve(create_app(backend)) as url:
        yield url


def local(tmp_path: Path, name: str = "tiny") -> Predictor:
    settings = Settings(model_dir=tmp_path / "models", debug=False)
    return in_process_predictor(str(make_model(tmp_path, name)), settings)


# --- the run ------------------------------------------------------------------------------
def test_full_run_through_our_server_stores_one_prediction_per_task(
    fake: FakeLabelStudio, our_server: str
) -> None:
    texts = [{"text": f"I love {i}" if i % 2 else f"meh {i}"} for i in range(23)]
    project, ids = add_project(fake, [*texts, {"text": "x", "bad": True}])
    annotated = fake.add_task(project, {"text": "done already"})["id"]
    fake.add_annotation(annotated, [])
    seen: list[dict[str, Any]] = []

    stats = run(
        fake,
        BackendPredictor(our_server),
        project,
        batch_size=4,
        on_progress=lambda s: seen.append(s.to_dict()),
    )

    assert stats.ok and stats.model_version == "tiny-v0"
    counts = per_task(fake, project, "tiny-v0")
    assert counts == Counter({task: 1 for task in ids})  # the annotated task is left out
    assert stats.stored == len(ids) == stats.total and stats.skipped == 0
    # our server drops the "Maybe" item itself; a stored prediction never carries it
    assert [p["result"] for p in fake.predictions.values() if p["task"] == ids[-1]] == [[]]
    labels = {
        p["task"]: p["result"][0]["value"]["choices"][0]
        for p in fake.predictions.values()
        if p["result"]
    }
    assert labels[ids[1]] == "Positive" and labels[ids[0]] == "Negative"
    # bulk writes of up to write_batch predictions, never one by one
    assert fake.hits(f"/api/projects/{project}/import/predictions") == 3
    assert ("POST", "/api/predictions/") not in fake.requests
    assert seen[-1]["done"] == seen[-1]["total"] == len(ids)
    assert {"stored", "skipped", "failed", "tasks_per_second", "eta_seconds"} <= set(seen[-1])


def test_interrupted_run_resumes_and_ends_with_one_prediction_per_task(
    fake: FakeLabelStudio, tmp_path: Path
) -> None:
    project, ids = add_project(fake, [{"text": f"t{i}"} for i in range(20)])
    reports = 0

    def stop_after_two_batches(stats: PrelabelStats) -> None:
        nonlocal reports
        reports += 1
        if reports == 3:  # the first report comes before any batch
            raise KeyboardInterrupt("stop")

    with pytest.raises(KeyboardInterrupt):
        run(
            fake,
            local(tmp_path),
            project,
            batch_size=3,
            concurrency=1,
            write_batch=1000,
            on_progress=stop_after_two_batches,
        )
    first = per_task(fake, project, "tiny-v0")
    assert 6 <= sum(first.values()) < len(ids)  # what was predicted is stored on the way out
    assert set(first.values()) == {1}

    stats = run(fake, local(tmp_path), project, batch_size=3, filter="all")

    assert stats.ok and stats.skipped == len(first)
    assert stats.stored == len(ids) - len(first)
    assert per_task(fake, project, "tiny-v0") == Counter({task: 1 for task in ids})
    again = run(fake, local(tmp_path), project, filter="no-prediction-for-version")
    assert again.ok and again.stored == 0 and again.total == 0


def test_lost_write_answer_is_checked_not_written_twice(
    fake: FakeLabelStudio, tmp_path: Path
) -> None:
    project, ids = add_project(fake, [{"text": f"t{i}"} for i in range(9)] + [{"bad": True}])
    fake.lost_import_answers = 1  # stored, then 500: the run must look before writing again

    stats = run(fake, local(tmp_path), project, batch_size=5)

    assert stats.ok and stats.stored == len(ids)
    assert stats.invalid == 1  # the "Maybe" item, dropped before storing
    assert per_task(fake, project, "tiny-v0") == Counter({task: 1 for task in ids})


def test_a_task_seen_twice_is_predicted_and_stored_once(
    fake: FakeLabelStudio, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    project, ids = add_project(fake, [{"text": f"t{i}"} for i in range(6)])
    pages = Prelabeler._pages

    def twice(self: Prelabeler, filters: list[dict[str, Any]]) -> Iterator[list[dict[str, Any]]]:
        for page in pages(self, filters):
            yield page
            yield page  # as if paging shifted and a page came back

    monkeypatch.setattr(Prelabeler, "_pages", twice)
    stats = run(fake, local(tmp_path), project, batch_size=2, concurrency=3)

    assert stats.ok and stats.stored == len(ids)
    assert per_task(fake, project, "tiny-v0") == Counter({task: 1 for task in ids})


def test_poisoned_task_is_isolated_by_splitting(fake: FakeLabelStudio, our_server: str) -> None:
    texts: list[dict[str, Any]] = [{"text": f"t{i}"} for i in range(16)]
    texts[5] = {"text": "boom", "poison": True}
    project, ids = add_project(fake, texts)

    stats = run(fake, BackendPredictor(our_server), project, batch_size=8)

    assert not stats.ok and stats.stopped is None
    assert [f.task for f in stats.failures] == [ids[5]]
    assert "poisoned task" in stats.failures[0].reason
    assert per_task(fake, project, "tiny-v0") == Counter({t: 1 for t in ids if t != ids[5]})


def test_a_config_the_model_cannot_use_stops_the_run(fake: FakeLabelStudio, tmp_path: Path) -> None:
    config = '<View><Text name="text" value="$text"/><TextArea name="note" toName="text"/></View>'
    project = fake.add_project(label_config=config)["id"]
    for i in range(40):
        fake.add_task(project, {"text": f"t{i}"})

    stats = run(fake, local(tmp_path), project, batch_size=4, concurrency=1)

    assert stats.stopped is not None and "Choices" in stats.stopped
    assert not fake.predictions and stats.failed <= 8  # no split of every batch into singles


def test_task_label_studio_rejects_is_isolated_on_write(
    fake: FakeLabelStudio, tmp_path: Path
) -> None:
    project, ids = add_project(fake, [{"text": f"t{i}"} for i in range(8)])
    fake.rejected_tasks = {ids[3]}

    stats = run(fake, local(tmp_path), project, batch_size=8)

    assert stats.failures == [Failure(ids[3], stats.failures[0].reason)]
    assert "400" in stats.failures[0].reason
    assert per_task(fake, project, "tiny-v0") == Counter({t: 1 for t in ids if t != ids[3]})


def test_personal_access_token_with_refresh(fake: FakeLabelStudio, tmp_path: Path) -> None:
    fake.legacy_enabled = False
    fake.access_ttl = 1.0  # the access token expires during the run: refreshed, not failed
    project, ids = add_project(fake, [{"text": f"t{i}", "sleep": 0.1} for i in range(12)])
    pat = fake.personal_access_token()

    stats = run(fake, local(tmp_path), project, token=pat, batch_size=3, concurrency=1)

    assert stats.ok and stats.stored == len(ids)
    assert fake.hits("/api/token/refresh/") >= 2
    with pytest.raises(LabelStudioError, match="401"):
        run(fake, local(tmp_path), project, token=fake.legacy_token)


# --- the command line -----------------------------------------------------------------------
def test_cli_exit_codes_and_summary(
    fake: FakeLabelStudio, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = make_model(tmp_path)
    monkeypatch.setenv("MODEL_DIR", str(tmp_path / "models"))
    project, _ = add_project(fake, [{"text": f"t{i}"} for i in range(5)])
    args = ["prelabel", "--label-studio", fake.url, "--project", str(project)]
    args += ["--token", fake.legacy_token, "--model", str(folder), "--batch-size", "2"]
    runner = CliRunner()

    done = runner.invoke(cli_app, args)
    assert done.exit_code == 0, done.output
    assert "stored 5 prediction(s) for 5 task(s)" in done.output

    fake.add_task(project, {"text": "x", "poison": True})
    failed = runner.invoke(cli_app, args)
    assert failed.exit_code == 1 and "poisoned task" in failed.output
    assert "skipped 5 already predicted" in failed.output

    both = runner.invoke(cli_app, [*args, "--backend", "http://127.0.0.1:9"])
    assert both.exit_code == 2


# --- the job ------------------------------------------------------------------------------
def wait_job(url: str, job: str, timeout: float = 60.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        status = httpx.post(f"{url}/job_status", json={"job": job}).json()
        if status["job_status"] in ("finished", "failed", "canceled"):
            return status
        assert time.monotonic() < deadline, status
        time.sleep(0.05)


def setup_project(url: str, fake: FakeLabelStudio, project: int) -> None:
    body = {
        "project": f"{project}.1795540744",
        "schema": fake.projects[project]["label_config"],
        "hostname": fake.url,
        "access_token": fake.legacy_token,
    }
    httpx.post(f"{url}/setup", json=body).raise_for_status()


def test_prelabel_route_runs_a_job_with_progress(fake: FakeLabelStudio, our_server: str) -> None:
    project, ids = add_project(fake, [{"text": f"t{i}", "sleep": 0.05} for i in range(30)])
    setup_project(our_server, fake, project)
    refused = httpx.post(
        f"{our_server}/prelabel", json={"project": project, "label_studio_url": "http://evil"}
    )
    assert refused.status_code == 400 and refused.json()["field"] == "label_studio_url"

    answer = httpx.post(f"{our_server}/prelabel", json={"project": project, "batch_size": 3})
    assert answer.status_code == 201, answer.text
    job = answer.json()["job"]
    during: list[dict[str, Any]] = []
    deadline = time.monotonic() + 60
    while (status := httpx.post(f"{our_server}/job_status", json={"job": job}).json())[
        "job_status"
    ] in ("queued", "started"):
        if status.get("progress"):
            during.append(status["progress"])
        assert time.monotonic() < deadline
        time.sleep(0.05)

    assert status["job_status"] == "finished", status
    assert status["kind"] == "prelabel" and status["model_version"] == "tiny-v0"
    assert status["result"]["stored"] == len(ids) and status["result"]["failed"] == 0
    progress = status["progress"]
    assert progress["done"] == progress["total"] == len(ids)
    assert {"stored", "skipped", "failed", "tasks_per_second"} <= set(progress)
    assert any(0 < p["done"] < len(ids) for p in during), during
    assert per_task(fake, project, "tiny-v0") == Counter({task: 1 for task in ids})


def test_training_with_prelabel_after_training_queues_a_prelabel_job(
    fake: FakeLabelStudio, tmp_path: Path
) -> None:
    folder = make_model(tmp_path)
    settings = Settings(model_dir=tmp_path / "models", prelabel_after_training=True)
    backend = Backend(load_model_class(folder), settings, model_ref=str(folder), backend_dir=folder)
    project, ids = add_project(fake, [{"text": f"t{i}"} for i in range(6)])
    fake.add_annotation(ids[0], [])
    with serve(create_app(backend)) as url:
        setup_project(url, fake, project)
        trained = httpx.post(f"{url}/train", json={"project": project})
        assert trained.status_code == 201, trained.text
        train = wait_job(url, trained.json()["job"])
        assert train["job_status"] == "finished", train
        assert train["model_version"] == "tiny-v1"
        follow = wait_job(url, train["result"]["prelabel_job"])

    assert follow["job_status"] == "finished", follow
    assert follow["kind"] == "prelabel" and follow["model_version"] == "tiny-v1"
    assert per_task(fake, project, "tiny-v1") == Counter({task: 1 for task in ids[1:]})


# --- several models in one process ----------------------------------------------------------
def test_two_models_served_from_one_process_under_two_prefixes(
    fake: FakeLabelStudio, tmp_path: Path
) -> None:
    alpha, beta = make_model(tmp_path, "alpha"), make_model(tmp_path, "beta")
    _, parsed = parse_backend_args([f"a={alpha}", f"b={beta}"])
    assert parsed == {"a": str(alpha), "b": str(beta)}
    app = build_multi_app(parsed, Settings(model_dir=tmp_path / "models"))
    first, ids1 = add_project(fake, [{"text": f"t{i}"} for i in range(4)])
    second, ids2 = add_project(fake, [{"text": f"u{i}"} for i in range(3)])
    with serve(app) as url:
        health = httpx.get(f"{url}/health").json()
        assert health["status"] == "UP" and set(health["backends"]) == {"a", "b"}
        assert httpx.get(f"{url}/a/health").json()["model_class"] == "Tiny"
        one = run(fake, BackendPredictor(f"{url}/a"), first)
        two = run(fake, BackendPredictor(f"{url}/b/"), second)

    assert (one.model_version, two.model_version) == ("alpha-v0", "beta-v0")
    assert per_task(fake, first, "alpha-v0") == Counter({task: 1 for task in ids1})
    assert per_task(fake, second, "beta-v0") == Counter({task: 1 for task in ids2})
    # each backend its own model store and job queue
    assert (tmp_path / "models" / "a" / "jobs.sqlite3").is_file()
    assert (tmp_path / "models" / "b" / "jobs.sqlite3").is_file()


def test_app_from_env_serves_several_backends(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from labelbridge.server import app_from_env

    alpha, beta = make_model(tmp_path, "alpha"), make_model(tmp_path, "beta")
    target, backends = parse_backend_args([f"alpha={alpha}", f"beta={beta}"])
    spec = {
        "target": target,
        "backends": backends,
        "overrides": {"model_dir": str(tmp_path / "models")},
    }
    monkeypatch.setenv("LABELBRIDGE_SERVE", json.dumps(spec))
    with serve(app_from_env()) as url:
        body = {"project": "1.1", "schema": DEFAULT_CONFIG}
        for name in ("alpha", "beta"):
            assert httpx.get(f"{url}/{name}/health").json()["status"] == "UP"
            answer = httpx.post(f"{url}/{name}/setup", json=body)
            assert answer.json() == {"model_version": f"{name}-v0"}, answer.text


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["a", "b"], "need names"),
        (["b", "a=x"], "NAME=FOLDER"),
        (["health=x"], "cannot be a URL prefix"),
        (["bad/name=x"], "cannot be a URL prefix"),
    ],
)
def test_backend_arguments_are_checked(args: list[str], message: str) -> None:
    with pytest.raises(typer.BadParameter, match=message):
        parse_backend_args(args)


def test_one_backend_argument_keeps_the_single_mode(tmp_path: Path) -> None:
    assert parse_backend_args(None) == (".", None)
    assert parse_backend_args(["examples/sentiment"]) == ("examples/sentiment", None)
    alpha = make_model(tmp_path, "alpha")
    with pytest.raises(typer.BadParameter, match="given twice"):
        parse_backend_args([f"a={alpha}", f"a={alpha}"])


def test_each_mounted_backend_gets_its_own_store_queue_and_s3_prefix(tmp_path: Path) -> None:
    from labelbridge.multi import backend_settings

    base = Settings(model_dir=tmp_path, rq_queue_name="q", model_store_s3_prefix="team/")
    ner, text = backend_settings(base, "ner"), backend_settings(base, "text")
    assert (ner.model_dir, text.model_dir) == (
        (tmp_path / "ner").absolute(),
        (tmp_path / "text").absolute(),
    )
    assert (ner.rq_queue_name, text.rq_queue_name) == ("q-ner", "q-text")
    assert (ner.model_store_s3_prefix, text.model_store_s3_prefix) == ("team/ner/", "team/text/")
