"""A real `labelbridge start` in a subprocess, and a small model made for serving tests."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from support import free_port

LABELBRIDGE = str(Path(sys.executable).with_name("labelbridge"))

CONFIG = (
    '<View><Text name="text" value="$text"/><Choices name="label" toName="text" '
    'choice="single"><Choice value="Yes"/><Choice value="No"/></Choices></View>'
)

#: predict sleeps as long as a task's data asks; setup as SLEEPY_SETUP says; fit scores n/(n+1)
MODEL = """
import json
import os
import time

from labelbridge import Model


class Sleepy(Model):
    name = "sleepy"

    def setup(self):
        time.sleep(float(os.environ.get("SLEEPY_SETUP", "0")))
        self.pid = os.getpid()

    def load(self, path):
        return json.loads((path / "state.json").read_text())

    def predict(self, tasks, context):
        pick = context.label_config.first("Choices")
        out = []
        for task in tasks:
            time.sleep(float(task["data"].get("sleep", 0)))
            item = {"from_name": pick.control.name, "to_name": pick.object.name,
                    "type": "choices", "value": {"choices": [pick.labels[0]]}}
            out.append({"result": [item], "score": 0.5, "worker": self.pid,
                        "trained_on": (context.state or {}).get("n")})
        return out

    def fit(self, event, data):
        began = time.time()
        n = data.annotation_count
        data.log.info("fitting on %d annotations", n)
        time.sleep(float(os.environ.get("SLEEPY_FIT", "0")))
        (data.output_dir / "state.json").write_text(json.dumps({"n": n}))
        trace = os.environ.get("SLEEPY_TRACE")
        if trace:
            with open(trace, "a") as handle:
                handle.write(f"{data.project} {os.getpid()} {began} {time.time()}\\n")
        return {"score": n / (n + 1), "annotations": n}
"""


def make_backend(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "model.py").write_text(MODEL, encoding="utf-8")
    return folder


def annotated(count: int) -> list[dict[str, Any]]:
    """Tasks with one annotation each, as Label Studio's legacy /train sends them."""
    return [
        {
            "id": i + 1,
            "data": {"text": f"text {i}"},
            "annotations": [
                {
                    "id": i + 1,
                    "result": [
                        {
                            "from_name": "label",
                            "to_name": "text",
                            "type": "choices",
                            "value": {"choices": ["Yes" if i % 2 else "No"]},
                        }
                    ],
                }
            ],
        }
        for i in range(count)
    ]


@dataclass
class Server:
    url: str
    proc: subprocess.Popen[bytes]
    backend: Path
    output: Path
    auth: tuple[str, str] | None = None

    def out(self) -> str:
        return self.output.read_text(errors="replace") if self.output.exists() else ""

    def workers(self) -> set[int]:
        """Pids of the supervisor's worker processes (uvicorn spawns them via multiprocessing)."""
        found = set()
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                stat = (entry / "stat").read_text()
                cmdline = (entry / "cmdline").read_bytes()
            except OSError:
                continue
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            if ppid == self.proc.pid and b"spawn_main" in cmdline:
                found.add(int(entry.name))
        return found

    def predict(self, client: httpx.Client | None = None, **data: Any) -> httpx.Response:
        body = {"project": "1.1", "tasks": [{"id": 1, "data": {"text": "hi", **data}}]}
        if client is None:
            return httpx.post(f"{self.url}/predict", json=body, timeout=30, auth=self.auth)
        return client.post(f"{self.url}/predict", json=body)

    def train(self, count: int, project: str = "1.1") -> str:
        answer = httpx.post(
            f"{self.url}/train",
            json={"project": project, "label_config": CONFIG, "annotations": annotated(count)},
            timeout=10,
            auth=self.auth,
        )
        assert answer.status_code == 201, answer.text
        return str(answer.json()["job"])

    def wait_job(self, job: str, timeout: float = 30) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            answer = httpx.post(
                f"{self.url}/job_status", json={"job": job}, timeout=5, auth=self.auth
            )
            status = answer.json()
            if status["job_status"] in ("finished", "failed", "canceled"):
                return dict(status)
            if time.monotonic() > deadline:
                raise AssertionError(f"job {job} still {status['job_status']}:\n{self.out()}")
            time.sleep(0.1)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    # workers of a supervisor that was killed outright: same process group
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)


@contextlib.contextmanager
def running(
    backend: Path,
    *args: str,
    env: dict[str, str] | None = None,
    ready: bool = True,
    timeout: float = 30,
    auth: tuple[str, str] | None = None,
) -> Iterator[Server]:
    """`labelbridge start BACKEND ARGS` on a free port; waits for /health (and the model)."""
    port = free_port()
    output = backend / f"server-{port}.out"
    full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    for name in ("PRODUCTION", "WORKERS", "DEBUG", "LOG_DIR", "MODEL_DIR", "JOB_QUEUE"):
        if env is None or name not in env:
            full_env.pop(name, None)
    with output.open("wb") as sink:
        proc = subprocess.Popen(
            [LABELBRIDGE, "start", str(backend), "--host", "127.0.0.1", "--port", str(port), *args],
            env=full_env,
            stdout=sink,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    server = Server(f"http://127.0.0.1:{port}", proc, backend, output, auth)
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                health = httpx.get(f"{server.url}/health", timeout=1).json()
                if not ready or health["model_state"] == "ready":
                    break
            except httpx.HTTPError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"server did not start:\n{server.out()}")
            time.sleep(0.05)
        yield server
    finally:
        _stop(proc)
