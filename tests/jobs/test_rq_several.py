"""`labelbridge worker a=... b=...`: one worker for a server that serves several models with
JOB_QUEUE=rq (labelbridge.multi: each backend its own RQ queue and model store)."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import httpx
import pytest
from jobs_harness import (
    CONFIG,
    MODEL_PY,
    REDIS_URL,
    Harness,
    annotated_tasks,
    labelbridge_command,
    wait_until,
)
from rq import Queue, Worker

from labelbridge.jobs.rq import connect
from labelbridge.store import LocalModelStore
from support import LABELBRIDGE, backend_environment, free_port, wait_until_ready

pytestmark = pytest.mark.timeout(180)


def _other_backend(root: Path) -> Path:
    """A second backend folder: the same model under another name (its versions say which)."""
    folder = root / "other"
    folder.mkdir()
    (folder / "model.py").write_text(MODEL_PY.replace('name = "counting"', 'name = "other"'))
    return folder


def _post(url: str, body: dict[str, Any]) -> httpx.Response:
    return httpx.post(url, json=body, timeout=10, trust_env=False)


def test_one_worker_runs_each_backends_jobs_in_its_own_model_store(rq_harness: Harness) -> None:
    h = rq_harness
    other = _other_backend(h.root)
    args = [f"a={h.backend}", f"b={other}"]
    # server and worker read the same environment and neither is given MODEL_DIR: both must
    # derive <first backend>/models/<name> and <RQ_QUEUE_NAME>-<name> alike
    env = backend_environment(
        h.root, {"JOB_QUEUE": "rq", "REDIS_URL": REDIS_URL, "RQ_QUEUE_NAME": h.queue_name}
    )
    env.pop("MODEL_DIR")
    with h.worker_log.open("ab") as out:
        h.procs.append(
            subprocess.Popen(
                [*labelbridge_command(), "worker", *args, "--workers", "2"],
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        )
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    server_log = h.root / "server.log"
    with server_log.open("wb") as out:
        server = subprocess.Popen(
            [LABELBRIDGE, "start", *args, "--host", "127.0.0.1", "--port", str(port)],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    h.procs.append(server)

    def logs() -> str:
        return f"server:\n{server_log.read_text()[-3000:]}\nworker:\n{h.worker_log.read_text()[-3000:]}"

    problem = wait_until_ready(url, server, timeout=60, path="/b/health")
    assert problem is None, f"{problem}\n{logs()}"
    # both worker processes listen on both backends' queues, and each backend's /health sees it
    conn = connect(REDIS_URL)
    for name in ("a", "b"):
        queue = Queue(f"{h.queue_name}-{name}", connection=conn)
        wait_until(lambda q=queue: Worker.count(queue=q) == 2, 60, logs)
        wait_until(
            lambda n=name: httpx.get(f"{url}/{n}/health", trust_env=False).json()["queue"] == "ok",
            10,
            logs,
        )
    conn.close()

    jobs = {}
    for name in ("a", "b"):
        body = {"project": "1", "label_config": CONFIG, "annotations": annotated_tasks()}
        answer = _post(f"{url}/{name}/train", body)
        assert answer.status_code == 201, answer.text
        jobs[name] = answer.json()["job"]
    done = {}
    for name, job in jobs.items():

        def finished(name: str = name, job: str = job) -> bool:
            done[name] = _post(f"{url}/{name}/job_status", {"job": job}).json()
            return done[name]["job_status"] in {"finished", "failed", "canceled"}

        wait_until(finished, 60, lambda name=name: f"{done.get(name)}\n{logs()}")
        assert done[name]["job_status"] == "finished", f"{done[name]}\n{logs()}"

    # each job ran its own backend's model and published in its own backend's store
    version_a, version_b = done["a"]["model_version"], done["b"]["model_version"]
    assert version_a.startswith("counting-") and version_b.startswith("other-")
    models = h.backend / "models"
    assert LocalModelStore(models / "a").current_name("1") == version_a
    assert LocalModelStore(models / "b").current_name("1") == version_b
    assert LocalModelStore(models).current_name("1") is None
    assert not (other / "models").exists()
    assert len(h.runs("1")) == 1 and len(list((other / "runs").glob("1-*.json"))) == 1
    # and the server serves them
    for name, version in (("a", version_a), ("b", version_b)):
        answer = httpx.get(f"{url}/{name}/versions", params={"project": "1"}, trust_env=False)
        assert answer.json()["versions"] == [version], answer.text


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["a", "b"], "several backends need names: NAME=FOLDER for each, e.g. `labelbridge worker"),
        (["a={backend}", "b"], "'b': give every backend as NAME=FOLDER"),
        (["health={backend}"], "'health' cannot be a URL prefix"),
        (["a={backend}", "b={empty}"], "b={empty}: "),
    ],
)
def test_bad_backend_arguments_are_usage_errors(
    tmp_path: Path, args: list[str], message: str
) -> None:
    backend, empty = tmp_path / "backend", tmp_path / "empty"
    backend.mkdir()
    empty.mkdir()
    (backend / "model.py").write_text(MODEL_PY)
    filled = [arg.format(backend=backend, empty=empty) for arg in args]
    # an unreachable Redis: were the arguments accepted, the worker would exit 1, not 2
    command = [*labelbridge_command(), "worker", *filled, "--burst"]
    command += ["--redis-url", "redis://127.0.0.1:1/0"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 2, done.stderr
    assert message.format(empty=empty) in done.stderr
    if "{empty}" in " ".join(args):
        assert "model.py" in done.stderr
