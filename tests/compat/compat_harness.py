"""Serve a backend written for the public SDK with `labelbridge start`, as a user does.

`rewrite_imports` copies a folder of tests/compat_backends and changes only its
`label_studio_ml` import lines to `labelbridge.compat`; `serve` runs `labelbridge start` (ours, or
another venv's) in its own process group, stopped at the end, also on failure; `Running` talks
to it the way Label Studio does and checks every prediction against the labeling config.
"""

from __future__ import annotations

import contextlib
import copy
import difflib
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from fakes import FakeLabelStudio
from fakes.labelstudio import DEFAULT_CONFIG as SENTIMENT
from labelbridge.label_config import LabelConfig
from labelbridge.validation import validate_prediction
from support import backend_environment, captured_request, free_port, wait_until_ready

ROOT = Path(__file__).resolve().parents[2]
BACKENDS = ROOT / "tests" / "compat_backends"
LABELBRIDGE = str(Path(sys.executable).with_name("labelbridge"))
PROJECT = "1.1795541075"  # as Label Studio sends it: "<id>.<created timestamp>"
PROJECT_ID = int(PROJECT.split(".")[0])
SDK_IMPORT = re.compile(r"^from label_studio_ml\.(?:model|response) import (?P<names>.+)$")


def rewrite_imports(name: str, destination: Path) -> Path:
    """tests/compat_backends/<name> copied to `destination`, its SDK imports made ours."""
    shutil.copytree(
        BACKENDS / name, destination, ignore=shutil.ignore_patterns("__pycache__", "*.pyc")
    )
    for path in destination.rglob("*.py"):
        lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
        changed = []
        for line in lines:
            found = SDK_IMPORT.match(line.rstrip("\n"))
            if found:
                line = f"from labelbridge.compat import {found['names']}\n"
            changed.append(line)
        path.write_text("".join(changed), encoding="utf-8")
    return destination


def changed_lines(original: Path, rewritten: Path) -> list[str]:
    """The lines a unified diff of two backend folders adds or removes (files compared)."""
    out: list[str] = []
    for path in sorted(original.rglob("*")):
        if "__pycache__" in path.parts or not path.is_file():
            continue
        other = rewritten / path.relative_to(original)
        before = path.read_text(encoding="utf-8").splitlines()
        after = other.read_text(encoding="utf-8").splitlines()
        for line in difflib.unified_diff(before, after, lineterm="", n=0):
            if line.startswith(("+++", "---", "@@")):
                continue
            out.append(line)
    return out


def _tail(path: Path, lines: int = 60) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no server log)"


@dataclass
class Running:
    """A running backend and the calls Label Studio makes to it."""

    url: str
    log: Path
    http: httpx.Client = field(repr=False)

    def fail(self, message: str) -> AssertionError:
        return AssertionError(f"{message}\n--- server log ({self.log}) ---\n{_tail(self.log)}")

    def post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        answer = self.http.post(self.url + path, json=body)
        if not answer.is_success:
            raise self.fail(f"POST {path} answered {answer.status_code}: {answer.text[:3000]}")
        result: dict[str, Any] = answer.json()
        return result

    def setup(self, config: str, **extra: Any) -> str:
        return str(
            self.post("/setup", {"project": PROJECT, "schema": config, **extra})["model_version"]
        )

    def predict(
        self, config: str, tasks: Sequence[dict[str, Any]]
    ) -> tuple[list[dict[str, Any]], str]:
        """Predictions (each valid for the config) and the answer's model version."""
        body = {
            "tasks": list(tasks),
            "project": PROJECT,
            "label_config": config,
            "params": {"login": None, "password": None, "context": None},
        }
        answer = self.post("/predict", body)
        results = answer["results"]
        if len(results) != len(tasks):
            raise self.fail(f"{len(results)} predictions for {len(tasks)} tasks: {answer}")
        parsed = LabelConfig.parse(config)
        for index, prediction in enumerate(results):
            problems = validate_prediction(parsed, prediction, task_index=index)
            if problems:
                raise self.fail(f"invalid prediction {prediction}: {[str(p) for p in problems]}")
        return results, str(answer["model_version"])

    def wait_job(self, job: str, timeout: float = 60.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            status = self.post("/job_status", {"job": job})
            if status["job_status"] in ("finished", "failed", "canceled"):
                break
            if time.monotonic() > deadline:
                raise self.fail(f"job {job} still {status['job_status']} after {timeout} s")
            time.sleep(0.1)
        if status["job_status"] != "finished":
            raise self.fail(
                f"job {job} {status['job_status']}: {status.get('error')}\n"
                f"{status.get('traceback') or ''}"
            )
        return status

    def version_metrics(self, version: str) -> dict[str, Any]:
        answer = self.http.get(self.url + "/versions", params={"project": PROJECT})
        for detail in answer.json()["details"]:
            if detail["version"] == version:
                metrics: dict[str, Any] = detail["metrics"]
                return metrics
        raise self.fail(f"/versions does not list {version}: {answer.text[:2000]}")


def _stop(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM the group, then SIGKILL it: no server, worker or job child outlives a test."""
    for sig, wait in ((signal.SIGTERM, 15.0), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            return
        try:
            process.wait(wait)
        except subprocess.TimeoutExpired:
            continue
        with contextlib.suppress(ProcessLookupError):  # a training child may still be there
            os.killpg(process.pid, signal.SIGKILL)
        return


@contextmanager
def serve(
    backend: Path,
    tmp: Path,
    *,
    env: dict[str, str] | None = None,
    labelbridge: str = LABELBRIDGE,
    startup: float = 60.0,
) -> Iterator[Running]:
    """`labelbridge start BACKEND` on a free port; yields once /health says the model is ready."""
    port = free_port()
    log = tmp / f"{backend.name}-{port}.log"
    command = [labelbridge, "start", str(backend), "--host", "127.0.0.1", "--port", str(port)]
    with log.open("wb") as out:
        process = subprocess.Popen(
            command,
            cwd=tmp,
            env=backend_environment(tmp, env),
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    try:
        with httpx.Client(timeout=60, trust_env=False) as http:
            running = Running(f"http://127.0.0.1:{port}", log, http)
            problem = wait_until_ready(running.url, process, timeout=startup)
            if problem:
                raise running.fail(problem)
            yield running
    finally:
        _stop(process)


def choice(name: str, label: str, to_name: str = "text") -> list[dict[str, Any]]:
    return [
        {"from_name": name, "to_name": to_name, "type": "choices", "value": {"choices": [label]}}
    ]


def chosen(prediction: dict[str, Any]) -> str:
    return str(prediction["result"][0]["value"]["choices"][0])


def _webhook(captures: dict[str, Any], step: str, **fields: Any) -> dict[str, Any]:
    """A webhook body exactly as Label Studio 1.23.2 sent it, with our project's values."""
    body = copy.deepcopy(captured_request(captures, step, "/webhook"))
    body["project"].update(id=PROJECT_ID, label_config=SENTIMENT, model_version="")
    body.update(fields)
    return body


TRAIN = [
    ("I love this phone, the screen is wonderful", "Positive"),
    ("wonderful service and a friendly team", "Positive"),
    ("great value, I love it", "Positive"),
    ("awful battery, it broke after a day", "Negative"),
    ("terrible support and an awful refund process", "Negative"),
    ("the worst purchase, it broke at once", "Negative"),
]
HELD_OUT = [
    ("what a wonderful friendly shop", "Positive"),
    ("it broke, awful", "Negative"),
    ("I love the great screen", "Positive"),
]


def check_text_classifier(
    backend: Path, tmp_path: Path, captures: dict[str, Any], labelbridge: str = LABELBRIDGE
) -> None:
    """The checks of tests/compat_backends/text_classifier served from `backend` (see
    test_sdk_backends.py): training from Label Studio and from a webhook payload, state kept
    with self.set and read back in the server, versions consistent throughout."""
    held_out = [{"id": 900 + i, "data": {"text": t}} for i, (t, _) in enumerate(HELD_OUT)]
    with FakeLabelStudio() as ls:
        assert ls.add_project("sentiment")["id"] == PROJECT_ID
        for text, label in TRAIN:
            task = ls.add_task(PROJECT_ID, {"text": text})
            ls.add_annotation(task["id"], choice("sentiment", label))
        env = {
            "LABEL_STUDIO_URL": ls.url,  # the backend's own download, as the SDK docs say
            "LABEL_STUDIO_API_KEY": ls.legacy_token,
            "TRAIN_ON_ANNOTATIONS": "every",
            "TRAIN_EVERY_N": "1",
        }
        with serve(backend, tmp_path, env=env, labelbridge=labelbridge) as server:
            setup = {"hostname": ls.url, "access_token": ls.legacy_token}
            extra = {"extra_params": {"default_label": "Negative"}}  # an object, as LS sends
            v0 = server.setup(SENTIMENT, **setup, **extra)
            assert v0 == "wordcountclassifier-v0"
            before, version = server.predict(SENTIMENT, held_out)
            assert version == v0 and {p["model_version"] for p in before} == {v0}
            assert [chosen(p) for p in before] == ["Negative"] * 3  # extra_params' default

            queued = server.post("/webhook", _webhook(captures, "train"))
            assert queued["status"] == "queued", queued
            status = server.wait_job(queued["job"])
            v1 = status["model_version"]
            assert v1 == "wordcountclassifier-v1"
            assert ls.hits(f"/api/projects/{PROJECT_ID}/export") == 2  # the job's and fit()'s
            assert server.setup(SENTIMENT, **setup, **extra) == v1
            after, version = server.predict(SENTIMENT, held_out)
            assert version == v1 and {p["model_version"] for p in after} == {v1}
            assert [chosen(p) for p in after] == [label for _, label in HELD_OUT]
            metrics = server.version_metrics(v1)
            assert metrics["learned"] == len(TRAIN) and metrics["trained_on"] == len(TRAIN)
            assert metrics["sdk_model_version"] == "wordcount-1"  # what fit() set

            zebra = [{"id": 990, "data": {"text": "zebra"}}]
            assert chosen(server.predict(SENTIMENT, zebra)[0][0]) == "Negative"  # unknown word
            task = ls.add_task(PROJECT_ID, {"text": "a zebra"})
            annotation = ls.add_annotation(task["id"], choice("sentiment", "Positive"))
            body = _webhook(captures, "annotation_created", annotation=annotation, task=task)
            queued = server.post("/webhook", body)
            assert queued["status"] == "queued", queued
            v2 = server.wait_job(queued["job"])["model_version"]
            assert v2 == "wordcountclassifier-v2"
            assert server.version_metrics(v2)["learned"] == 1  # the event's annotation only
            assert server.version_metrics(v2)["sdk_model_version"] == "wordcount-2"
            predicted, version = server.predict(SENTIMENT, zebra + held_out)
            assert version == v2 and {p["model_version"] for p in predicted} == {v2}
            # the new word, and everything v1 knew (its counts were the starting point)
            assert [chosen(p) for p in predicted] == ["Positive"] + [lbl for _, lbl in HELD_OUT]
