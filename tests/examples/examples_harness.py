"""Run an example backend as a user does: the real `labelbridge start` in a subprocess, spoken
to over HTTP the way Label Studio speaks to it (setup, predict, the legacy /train, job status).

The server runs in its own process group, which is killed at the end, also on failure, so no
server or training child outlives a test. Its output goes to a log file whose tail is put into
any failure message.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from labelbridge.label_config import LabelConfig
from labelbridge.validation import validate_prediction
from support import backend_environment, wait_until_ready

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"
PROJECT = "1.1795541075"  # as Label Studio sends it: "<id>.<created timestamp>"


def cli() -> str:
    """The project's own `labelbridge` (the .venv the tests run from)."""
    for candidate in (
        Path(sys.executable).with_name("labelbridge"),
        ROOT / ".venv/bin/labelbridge",
    ):
        if candidate.is_file():
            return str(candidate)
    raise RuntimeError("no labelbridge executable beside the test interpreter or in .venv")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _tail(path: Path, lines: int = 40) -> str:
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return "(no server log)"
    return "\n".join(text.splitlines()[-lines:])


@dataclass
class Example:
    """A running example backend and the calls a test makes to it."""

    name: str
    url: str
    http: httpx.Client
    log: Path
    config_xml: str
    config: LabelConfig = field(init=False)

    def __post_init__(self) -> None:
        self.config = LabelConfig.parse(self.config_xml)

    def fail(self, message: str) -> AssertionError:
        return AssertionError(f"{message}\n--- server log ({self.log}) ---\n{_tail(self.log)}")

    def post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        answer = self.http.post(self.url + path, json=body)
        if not answer.is_success:  # /train answers 201 Created
            raise self.fail(f"POST {path} answered {answer.status_code}: {answer.text[:2000]}")
        result: dict[str, Any] = answer.json()
        return result

    def setup(self, **extra: Any) -> str:
        body = {"project": PROJECT, "schema": self.config_xml, **extra}
        return str(self.post("/setup", body)["model_version"])

    def predict(self, tasks: Sequence[dict[str, Any]]) -> tuple[list[dict[str, Any]], str]:
        """Predictions for `tasks`, each checked against the labeling config, and the version."""
        body = {"tasks": list(tasks), "project": PROJECT, "label_config": self.config_xml}
        answer = self.post("/predict", body)
        results = answer["results"]
        assert len(results) == len(tasks)
        for index, prediction in enumerate(results):
            problems = validate_prediction(self.config, prediction, task_index=index)
            assert not problems, [str(p) for p in problems]
            score = prediction.get("score")
            assert isinstance(score, float) and 0.0 <= score <= 1.0, prediction
        return results, str(answer["model_version"])

    def train(self, tasks: Sequence[dict[str, Any]], timeout: float = 60.0) -> dict[str, Any]:
        """The legacy "Start Training": tasks with annotations in the body; waits for the job."""
        body = {"annotations": list(tasks), "project": PROJECT, "label_config": self.config_xml}
        job = self.post("/train", body)["job"]
        deadline = time.monotonic() + timeout
        while True:
            status = self.post("/job_status", {"job": job})
            if status["job_status"] in ("finished", "failed", "canceled"):
                break
            if time.monotonic() > deadline:
                raise self.fail(
                    f"training job {job} still {status['job_status']} after {timeout} s"
                )
            time.sleep(0.2)
        if status["job_status"] != "finished":
            raise self.fail(
                f"training job {job} {status['job_status']}: {status.get('error')}\n"
                f"{status.get('traceback') or ''}"
            )
        return status

    def version_metrics(self, version: str) -> dict[str, Any]:
        answer = self.http.get(self.url + "/versions", params={"project": PROJECT})
        assert answer.status_code == 200, answer.text
        for detail in answer.json()["details"]:
            if detail["version"] == version:
                metrics: dict[str, Any] = detail["metrics"]
                return metrics
        raise self.fail(f"/versions does not list {version}: {answer.text[:1000]}")


def _stop(process: subprocess.Popen[bytes]) -> None:
    for sig, wait in ((signal.SIGTERM, 10.0), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            return
        try:
            process.wait(wait)
            # the group may still hold a training child: make sure it is gone too
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            return
        except subprocess.TimeoutExpired:
            continue
        return


@contextmanager
def run_example(
    name: str, tmp_path: Path, *, env: dict[str, str] | None = None, startup: float = 90.0
) -> Iterator[Example]:
    """Start examples/<name> with the CLI on a free port; yield once /health says "ready"."""
    port = free_port()
    log = tmp_path / f"{name}-server.log"
    command = [cli(), "start", str(EXAMPLES / name), "--host", "127.0.0.1", "--port", str(port)]
    with log.open("wb") as out:
        process = subprocess.Popen(
            command,
            cwd=tmp_path,
            env=backend_environment(tmp_path, env),
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    try:
        with httpx.Client(timeout=60) as http:
            example = Example(
                name,
                f"http://127.0.0.1:{port}",
                http,
                log,
                _read(EXAMPLES / name / "label_config.xml"),
            )
            problem = wait_until_ready(example.url, process, timeout=startup)
            if problem:
                raise example.fail(problem)
            yield example
    finally:
        _stop(process)


def _read(path: Path) -> str:
    return path.read_text(encoding="utf-8")


# --- building requests and scoring answers --------------------------------------------------
def annotated(task_id: int, data: dict[str, Any], result: list[dict[str, Any]]) -> dict[str, Any]:
    """A task with one annotation, as Label Studio's legacy /train sends it."""
    annotation = {"id": task_id, "result": result, "was_cancelled": False, "task": task_id}
    return {"id": task_id, "data": data, "annotations": [annotation]}


def chosen(prediction: dict[str, Any]) -> str | None:
    """The label a Choices prediction picked (None for an empty prediction)."""
    items = prediction.get("result") or []
    return items[0]["value"]["choices"][0] if items else None


def accuracy(predictions: Sequence[dict[str, Any]], truth: Sequence[str]) -> float:
    return sum(chosen(p) == t for p, t in zip(predictions, truth, strict=True)) / len(truth)
