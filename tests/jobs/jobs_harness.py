"""The harness that runs the same job tests against the embedded queue and the RQ queue.

The RQ side uses a real Redis on loopback (DB 15, a unique queue name per test) and a real
`labelbridge worker` subprocess; every process started here is killed at teardown, and only
this test's Redis keys are deleted.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from labelbridge.jobs import EmbeddedJobQueue, JobQueue, JobRecord, JobSpec, JobState
from labelbridge.settings import Settings
from labelbridge.store import LocalModelStore, ProjectRecord

REDIS_URL = os.environ.get("LABELBRIDGE_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")
CONFIG = (
    '<View><Text name="text" value="$text"/>'
    '<Choices name="label" toName="text"><Choice value="a"/><Choice value="b"/></Choices></View>'
)

# The test model: what fit() does per project is read from behavior.json at each run, so a
# test can change it between jobs. Every successful run leaves runs/<project>-<ns>.json.
MODEL_PY = """
import json
import os
import time
from pathlib import Path

from labelbridge.model import Model

HERE = Path(__file__).resolve().parent


def _behavior(project):
    path = HERE / "behavior.json"
    return json.loads(path.read_text()).get(project, {}) if path.exists() else {}


class CountingModel(Model):
    name = "counting"
    min_annotations = 2

    def predict(self, tasks, context):
        return [None for _ in tasks]

    def fit(self, event, data):
        how = _behavior(data.project)
        began = time.time()
        (HERE / "pids").mkdir(exist_ok=True)
        (HERE / "pids" / data.project).write_text(str(os.getpid()))
        data.log.info("fitting %d annotations", data.annotation_count)
        if how.get("hold"):
            release = HERE / "release" / data.project
            deadline = time.time() + 30
            while not release.exists() and time.time() < deadline:
                time.sleep(0.02)
        time.sleep(how.get("sleep", 0))
        if how.get("raise"):
            raise ValueError("boom: the model could not learn")
        if how.get("allocate_mb"):
            hog = bytearray(how["allocate_mb"] * 1024 * 1024)
            del hog
        if how.get("none"):
            return None
        (data.output_dir / "weights.txt").write_text(str(data.annotation_count))
        record = {"project": data.project, "start": began, "end": time.time(), "pid": os.getpid()}
        (HERE / "runs").mkdir(exist_ok=True)
        (HERE / "runs" / f"{data.project}-{time.time_ns()}.json").write_text(json.dumps(record))
        return {"score": 0.75}
"""


def annotated_tasks(count: int = 3) -> list[dict[str, Any]]:
    choice = {"choices": ["a"]}
    result = [{"from_name": "label", "to_name": "text", "type": "choices", "value": choice}]
    return [
        {"id": i, "data": {"text": f"t{i}"}, "annotations": [{"id": i, "result": result}]}
        for i in range(1, count + 1)
    ]


def redis_available() -> bool:
    try:
        from redis import Redis

        Redis.from_url(REDIS_URL, socket_connect_timeout=0.5).ping()
    except Exception:
        return False
    return True


def _session_pids(sid: int) -> list[int]:
    """Every process of a session: the worker supervisor, its workers and their work horses."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        with contextlib.suppress(OSError, IndexError, ValueError):
            fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
            if int(fields[3]) == sid:
                found.append(int(entry))
    return found


def stop_process_tree(proc: subprocess.Popen[bytes], grace: float = 5.0) -> None:
    """SIGTERM the session leader (warm shutdown), then SIGKILL anything left in its session."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(grace)
    for pid in _session_pids(proc.pid):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    if proc.poll() is None:
        proc.kill()
        proc.wait(5)


def labelbridge_command() -> list[str]:
    script = Path(sys.executable).with_name("labelbridge")
    if script.exists():
        return [str(script)]
    return [sys.executable, "-c", "from labelbridge.cli import main; main()"]


class Harness:
    """One test's backend folder, queues and processes, for either implementation."""

    def __init__(self, kind: str, root: Path) -> None:
        self.kind = kind
        self.root = root
        self.backend = root / "backend"
        self.backend.mkdir()
        (self.backend / "model.py").write_text(MODEL_PY)
        self.model_dir = self.backend / "models"
        self.store = LocalModelStore(self.model_dir)
        for project in ("1", "2"):
            self.store.put_project(ProjectRecord(project=project, label_config=CONFIG))
        self.queue_name = f"lbtest-{uuid.uuid4().hex[:10]}"
        self.queues: list[Any] = []
        self.procs: list[subprocess.Popen[bytes]] = []
        self.worker_log = root / "worker.log"

    # --- setup
    def settings(self, **overrides: Any) -> Settings:
        values: dict[str, Any] = {
            "model_dir": self.model_dir,
            "log_dir": self.root / "logs",
            "redis_url": REDIS_URL,
            "rq_queue_name": self.queue_name,
            "job_queue": self.kind,
            "job_timeout": 60.0,
            **overrides,
        }
        return Settings(**values)

    def open(self, *, workers: int = 1, **overrides: Any) -> JobQueue:
        settings = self.settings(job_workers=workers, **overrides)
        if self.kind == "embedded":
            db = self.model_dir / "jobs.sqlite3"
            queue: Any = EmbeddedJobQueue(settings, db, poll_interval=0.05, kill_grace=0.5)
            queue.start()
            self.queues.append(queue)
            if workers > 1:  # a second server process sharing the database, as in production
                other = EmbeddedJobQueue(settings, db, poll_interval=0.05, kill_grace=0.5)
                other.start()
                self.queues.append(other)
            return queue
        from labelbridge.jobs.rq import RQJobQueue

        command = [*labelbridge_command(), "worker", str(self.backend)]
        command += ["--redis-url", REDIS_URL, "--queue", self.queue_name, "--workers", str(workers)]
        with self.worker_log.open("ab") as log:
            proc = subprocess.Popen(
                command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        self.procs.append(proc)
        queue = RQJobQueue(settings, poll_interval=0.05)
        queue.start()
        self.queues.append(queue)
        deadline = time.monotonic() + 20
        while not queue.health()[0]:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"the worker did not start:\n{self.worker_log.read_text()}")
            time.sleep(0.05)
        if workers > 1:
            from rq import Worker

            while Worker.count(queue=queue.rq_queue) < workers:
                assert time.monotonic() < deadline, "not every worker registered"
                time.sleep(0.05)
        return queue

    def spec(self, project: str = "1", tasks: list[dict[str, Any]] | None = None) -> JobSpec:
        return JobSpec(
            project=project,
            model_ref=str(self.backend),
            tasks=annotated_tasks() if tasks is None else tasks,
        )

    # --- controlling the model
    def behave(self, **projects: dict[str, Any]) -> None:
        (self.backend / "behavior.json").write_text(json.dumps(projects))
        for path in (self.backend / "release").glob("*"):
            path.unlink()

    def release(self, project: str) -> None:
        (self.backend / "release").mkdir(exist_ok=True)
        (self.backend / "release" / project).touch()

    def fit_pid(self, project: str = "1", timeout: float = 15.0) -> int:
        path = self.backend / "pids" / project
        wait_until(lambda: path.exists() and path.read_text().strip(), timeout)
        return int(path.read_text())

    def forget_pid(self, project: str = "1") -> None:
        (self.backend / "pids" / project).unlink(missing_ok=True)

    def runs(self, project: str) -> list[dict[str, Any]]:
        found = sorted((self.backend / "runs").glob(f"{project}-*.json"))
        return sorted((json.loads(p.read_text()) for p in found), key=lambda r: r["start"])

    # --- waiting
    def wait_state(
        self, queue: JobQueue, job_id: str, states: set[JobState], timeout: float = 15.0
    ) -> JobRecord:
        record: list[JobRecord] = []

        def reached() -> bool:
            record[:] = [queue.get(job_id)]
            return record[0].state in states

        wait_until(reached, timeout, lambda: f"job {job_id} stayed {record[0].state.value}")
        return record[0]

    def wait_done(self, queue: JobQueue, job_id: str, timeout: float = 15.0) -> JobRecord:
        done = {JobState.finished, JobState.failed, JobState.canceled}
        return self.wait_state(queue, job_id, done, timeout)

    # --- teardown
    def close(self) -> None:
        for queue in self.queues:
            with contextlib.suppress(Exception):
                queue.close()
        for proc in self.procs:
            stop_process_tree(proc)
        if self.kind == "rq":
            self._delete_redis_keys()

    def _delete_redis_keys(self) -> None:
        """Only this test's keys: ours (labelbridge:<queue>:*), RQ's for our queue and jobs;
        with several backends, their queues <queue>-<name> as well."""
        from redis import Redis

        conn = Redis.from_url(REDIS_URL, decode_responses=True)
        job_ids: list[str] = []
        for index in conn.scan_iter(match=f"labelbridge:{self.queue_name}*:jobs", count=1000):
            job_ids += [str(j) for j in conn.zrange(str(index), 0, -1)]
        for key in conn.scan_iter(count=1000):
            name = str(key)
            if self.queue_name in name or any(job_id in name for job_id in job_ids):
                conn.delete(name)
        for queue in conn.smembers("rq:queues"):
            if self.queue_name in str(queue):
                conn.srem("rq:queues", str(queue))
        for member in conn.smembers("rq:workers"):
            if self.queue_name in str(member):
                conn.srem("rq:workers", str(member))
        conn.close()


def wait_until(
    predicate: Callable[[], Any], timeout: float, message: Callable[[], str] | None = None
) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(message() if message else f"condition not met within {timeout} s")
        time.sleep(0.02)
