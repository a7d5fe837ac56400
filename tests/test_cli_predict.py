"""`labelbridge predict` against the stand-in backend: the output format, bounded concurrency,
failures, and resuming from the journal without redoing finished work."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import Result
from typer.testing import CliRunner

from fakes._server import free_port
from fakes.stub_backend import StubBackend
from labelbridge.cli import _commands  # noqa: F401  (registers the commands, as `main` does)
from labelbridge.cli._app import app
from labelbridge.cli.predict import data_hash, journal_path

CONFIG = (
    '<View><Text name="text" value="$text"/><Choices name="sentiment" toName="text" '
    'choice="single"><Choice value="Positive"/><Choice value="Negative"/></Choices></View>'
)


@pytest.fixture(scope="module")
def shared_stub() -> Iterator[StubBackend]:
    with StubBackend() as backend:
        yield backend


@pytest.fixture
def stub(shared_stub: StubBackend) -> StubBackend:
    shared_stub.reset()
    return shared_stub


class Files:
    def __init__(self, root: Path, tasks: list[Any]) -> None:
        self.config = root / "label_config.xml"
        self.config.write_text(CONFIG, encoding="utf-8")
        self.tasks = root / "tasks.json"
        self.tasks.write_text(json.dumps(tasks), encoding="utf-8")
        self.out = root / "preds.json"
        self.journal = journal_path(self.out)

    def run(self, backend: str, *extra: str) -> Result:
        args = ["predict", "--backend", backend, "--config", str(self.config)]
        args += ["--tasks", str(self.tasks), "--out", str(self.out), *extra]
        return CliRunner().invoke(app, args)

    def output(self) -> list[dict[str, Any]]:
        data: list[dict[str, Any]] = json.loads(self.out.read_text(encoding="utf-8"))
        return data

    def journaled(self) -> list[int]:
        lines = self.journal.read_text(encoding="utf-8").splitlines()[1:]
        return sorted(json.loads(line)["i"] for line in lines)


def texts(n: int) -> list[dict[str, Any]]:
    return [{"text": f"task {i}" + (" love" if i % 3 == 0 else "")} for i in range(n)]


def test_output_is_label_studios_import_format(stub: StubBackend, tmp_path: Path) -> None:
    existing = {"model_version": "old", "score": 0.1, "result": []}
    tasks: list[Any] = [
        {"text": "I love it"},  # bare data, as Label Studio imports it
        {"id": 7, "data": {"text": "meh"}, "meta": {"k": 1}, "predictions": [existing]},
        {"data": {"text": "fine"}},
    ]
    files = Files(tmp_path, tasks)
    result = files.run(stub.url, "--batch-size", "2")
    assert result.exit_code == 0, result.output
    assert "predicted 3 tasks, skipped 0 from journal, 0 failed batches" in result.stdout
    out = files.output()
    assert [t["data"] for t in out] == [{"text": "I love it"}, {"text": "meh"}, {"text": "fine"}]
    assert out[0] == {
        "data": {"text": "I love it"},
        "predictions": [
            {
                "model_version": "stub-v1",  # from setup: the predict answer has none
                "score": 0.5,
                "result": [
                    {
                        "from_name": "sentiment",
                        "to_name": "text",
                        "type": "choices",
                        "value": {"choices": ["Positive"]},
                    }
                ],
            }
        ],
    }
    assert out[1]["id"] == 7 and out[1]["meta"] == {"k": 1}
    assert out[1]["predictions"][0] == existing and len(out[1]["predictions"]) == 2
    assert not files.journal.exists()
    assert len(stub.requests_to("/setup")) == 1
    assert [r.path for r in stub.received][:2] == ["/health", "/setup"]  # setup first
    sent = stub.bodies("/predict")[0]
    assert sent["project"] == "0.0" and sent["label_config"] == CONFIG
    assert sent["tasks"][0] == {"data": {"text": "I love it"}}


def test_model_version_is_never_null(stub: StubBackend, tmp_path: Path) -> None:
    files = Files(tmp_path, texts(2))
    stub.model_version, stub.predict_model_version = None, "p-3"
    assert files.run(stub.url).exit_code == 0
    assert {p["model_version"] for t in files.output() for p in t["predictions"]} == {"p-3"}
    stub.predict_model_version = None  # neither setup nor predict gives one
    assert files.run(stub.url, "--no-resume").exit_code == 0
    assert {p["model_version"] for t in files.output() for p in t["predictions"]} == {"unknown"}


def test_batches_run_concurrently_but_bounded(stub: StubBackend, tmp_path: Path) -> None:
    files = Files(tmp_path, texts(24))
    stub.delays["/predict"] = 0.1
    result = files.run(stub.url, "--batch-size", "2", "--concurrency", "3")
    assert result.exit_code == 0, result.output
    assert 2 <= stub.max_in_flight <= 3
    assert sorted(stub.predicted_texts()) == sorted(t["text"] for t in texts(24))
    assert [t["data"]["text"] for t in files.output()] == [t["text"] for t in texts(24)]


def test_resume_sends_only_the_remaining_tasks(stub: StubBackend, tmp_path: Path) -> None:
    files = Files(tmp_path, texts(10))
    stub.fail_predict_after = 2  # two batches succeed, then every predict answers 500
    first = files.run(stub.url, "--batch-size", "2", "--concurrency", "1")
    assert first.exit_code == 1
    assert "predicted 4 tasks, skipped 0 from journal, 3 failed batches" in first.stdout
    assert "failed: batch 3 (tasks 4-5): POST /predict answered 500" in first.output
    assert "run the same command to resume" in first.stdout
    assert not files.out.exists() and files.journaled() == [0, 1, 2, 3]

    stub.reset()
    second = files.run(stub.url, "--batch-size", "2", "--concurrency", "1")
    assert second.exit_code == 0, second.output
    assert "predicted 6 tasks, skipped 4 from journal, 0 failed batches" in second.stdout
    assert stub.predicted_texts() == [t["text"] for t in texts(10)[4:]]
    out = files.output()
    assert [t["data"]["text"] for t in out] == [t["text"] for t in texts(10)]  # each once
    assert all(len(t["predictions"]) == 1 for t in out)
    assert not files.journal.exists()


def test_changed_tasks_and_a_torn_journal_line_are_redone(
    stub: StubBackend, tmp_path: Path
) -> None:
    files = Files(tmp_path, texts(6))
    stub.fail_predict_after = 2
    assert files.run(stub.url, "--batch-size", "2", "--concurrency", "1").exit_code == 1
    assert files.journaled() == [0, 1, 2, 3]
    changed = texts(6)
    changed[1] = {"text": "edited"}
    files.tasks.write_text(json.dumps(changed), encoding="utf-8")
    torn = json.dumps({"i": 4, "h": data_hash({"data": changed[4]}), "p": []})[:20]
    with files.journal.open("a", encoding="utf-8") as handle:
        handle.write(torn)  # a crash in the middle of a write

    stub.reset()
    result = files.run(stub.url, "--batch-size", "2", "--concurrency", "1")
    assert result.exit_code == 0, result.output
    assert stub.predicted_texts() == ["edited", "task 4", "task 5"]
    assert [t["data"]["text"] for t in files.output()] == [t["text"] for t in changed]


def test_no_resume_starts_over(stub: StubBackend, tmp_path: Path) -> None:
    files = Files(tmp_path, texts(4))
    stub.fail_predict_after = 1
    assert files.run(stub.url, "--batch-size", "2").exit_code == 1
    stub.reset()
    assert files.run(stub.url, "--batch-size", "2", "--no-resume").exit_code == 0
    assert len(stub.predicted_texts()) == 4


def test_wrong_result_count_fails_the_batch(stub: StubBackend, tmp_path: Path) -> None:
    files = Files(tmp_path, texts(4))
    stub.wrong_count = True
    result = files.run(stub.url, "--batch-size", "2")
    assert result.exit_code == 1
    assert "has 1 results for 2 tasks" in result.output
    assert "2 failed batches" in result.stdout and not files.out.exists()


def test_a_broken_backend_is_not_hammered(stub: StubBackend, tmp_path: Path) -> None:
    files = Files(tmp_path, texts(20))
    stub.statuses["/predict"] = 500
    result = files.run(stub.url, "--batch-size", "1", "--concurrency", "1")
    assert result.exit_code == 1 and "stopped early: 5 batches failed in a row" in result.stdout
    assert len(stub.requests_to("/predict")) == 5
    assert "... and" not in result.output  # at most SHOWN_FAILURES reasons, here 5


def test_unreachable_backend_and_basic_auth(stub: StubBackend, tmp_path: Path) -> None:
    files = Files(tmp_path, texts(2))
    result = files.run(f"http://127.0.0.1:{free_port()}")
    assert result.exit_code == 1 and "connection refused" in result.output
    assert not files.journal.exists()
    stub.basic_auth = ("u", "p")
    denied = files.run(stub.url)
    assert denied.exit_code == 1 and "401" in denied.output
    assert files.run(stub.url, "--user", "u", "--password", "p").exit_code == 0
    assert files.run("localhost:9090").exit_code == 2  # no scheme: a clear usage error


def test_the_console_script_has_the_command() -> None:
    script = Path(sys.executable).with_name("labelbridge")
    if not script.exists():
        pytest.skip("console script not installed")
    done = subprocess.run([str(script), "predict", "--help"], capture_output=True, text=True)
    assert done.returncode == 0 and "--batch-size" in done.stdout and "--resume" in done.stdout
