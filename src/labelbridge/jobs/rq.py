"""The RQ job queue: jobs on Redis, run by `labelbridge worker` processes on any machine.

RQ moves work to workers; our own `JobRecord` (a Redis hash per job) is the source of truth
for status, so states read the same as with the embedded queue. Keys live under
`labelbridge:<queue name>:`.

- Supersede: `pending:<project>:<kind>` names the newest job; a submit cancels it (in one
  WATCH/MULTI transaction) if it is still queued. A claim is the same kind of transaction, so
  a job is either canceled or started, never both.
- Delay (debounce): a delayed job waits in the `delayed` sorted set (score: when it may run);
  a small dispatcher thread in the server and in every `labelbridge worker` moves due jobs to
  the RQ queue (ZREM decides which process does it). RQ's own scheduler is not needed.
- One job per project: starting a job takes `lock:<project>` (SET with expiry, renewed by a
  heartbeat thread in the work horse). A job that finds the lock taken parks in `waiters` and
  in `delayed` (fallback time); releasing the lock makes the waiters due at once.
- A work horse killed by a signal is reported by the worker process (rq's
  work_horse_killed_handler, with wait4's peak RSS); a worker that vanished entirely is found by
  its stale heartbeat.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import multiprocessing
import os
import signal
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from types import FrameType
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from redis import Redis
from redis.backoff import NoBackoff
from redis.exceptions import RedisError, WatchError
from redis.retry import Retry
from rq import Queue, Worker, get_current_job
from rq.exceptions import InvalidJobOperation, NoSuchJobError
from rq.job import Job
from rq.timeouts import JobTimeoutException
from rq.worker import DequeueStrategy

from labelbridge.errors import QueueUnavailable, UnknownJob
from labelbridge.jobs._base import JobRecord, JobSpec, JobState
from labelbridge.jobs._common import (
    HOSTNAME,
    error_line,
    format_traceback,
    killed_reason,
    read_peak_mb,
    rusage_peak_mb,
    utc,
)
from labelbridge.settings import Settings

__all__ = ["RQJobQueue", "execute", "run_workers"]

log = logging.getLogger("labelbridge.jobs.rq")

LOCK_TTL = 120.0  # a project lock outlives a horse stuck in C code for this long
HEARTBEAT = 2.0
STALE_AFTER = 120.0  # a started job without heartbeat for this long: its worker is gone
PARK_FALLBACK = 15.0  # a parked job retries after this even if nobody wakes it
DONE_TTL = 30 * 24 * 3600  # ended jobs' records expire after 30 days
_WORKER_STOPPED = "the worker running the job stopped"

_RENEW = """
if redis.call('get', KEYS[1]) == ARGV[1] then
  return redis.call('pexpire', KEYS[1], ARGV[2])
end
return 0
"""


def mask_url(url: str) -> str:
    """The Redis URL without its password, for messages and logs."""
    parts = urlsplit(url)
    if parts.password:
        host = parts.hostname or ""
        netloc = f"{parts.username or ''}:***@{host}" + (f":{parts.port}" if parts.port else "")
        return urlunsplit(parts._replace(netloc=netloc))
    return url


def connect(url: str, *, quick: bool = True) -> Redis:
    """A client that fails fast: Label Studio waits 1 s for /health and job status."""
    if quick:
        return Redis.from_url(
            url, socket_connect_timeout=0.5, socket_timeout=5.0, retry=Retry(NoBackoff(), 1)
        )
    return Redis.from_url(url, socket_connect_timeout=5.0, health_check_interval=30)


def _text(value: Any) -> str | None:
    """Redis answers bytes (the RQ connection cannot decode responses)."""
    return value.decode() if isinstance(value, bytes) else None if value is None else str(value)


def _parse(raw: bytes | str, progress: bytes | str | None) -> JobRecord:
    record = JobRecord.model_validate_json(raw)
    if progress:
        record.progress = json.loads(progress)
    return record


class _Jobs:
    """Our records in Redis and the transactions on them (used by server, worker and horse)."""

    def __init__(self, conn: Redis, queue_name: str) -> None:
        self.conn = conn
        self.queue_name = queue_name
        self.base = f"labelbridge:{queue_name}"
        self.delayed = f"{self.base}:delayed"
        self.started = f"{self.base}:started"
        self.index = f"{self.base}:jobs"
        self._renew = conn.register_script(_RENEW)

    def key(self, job_id: str) -> str:
        return f"{self.base}:job:{job_id}"

    def lock(self, project: str) -> str:
        return f"{self.base}:lock:{project}"

    def waiters(self, project: str) -> str:
        return f"{self.base}:waiters:{project}"

    def project_index(self, project: str) -> str:
        return f"{self.base}:project:{project}"

    def pending(self, project: str, kind: str) -> str:
        return f"{self.base}:pending:{project}:{kind}"

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[Any]:
        with self.conn.pipeline() as pipe:
            yield pipe

    def read(self, job_id: str) -> tuple[JobRecord, JobSpec, float | None] | None:
        raw, spec, beat, progress = self.conn.hmget(
            self.key(job_id), ["record", "spec", "heartbeat", "progress"]
        )
        if raw is None or spec is None:
            return None
        heartbeat = float(beat) if beat else None
        return _parse(raw, progress), JobSpec.model_validate_json(spec), heartbeat

    def create(self, job_id: str, spec: JobSpec, delay: float) -> tuple[JobRecord, str | None]:
        """Write a queued record; cancel the project's queued job of that kind. Returns the
        record and the RQ job id of a canceled job (to remove it from RQ as well)."""
        now = time.time()
        record = JobRecord(id=job_id, kind=spec.kind, project=spec.project, created_at=utc(now))
        pending = self.pending(spec.project, spec.kind)
        with self._transaction() as pipe:
            while True:
                try:
                    pipe.watch(pending)
                    old_id = _text(pipe.get(pending))
                    old: JobRecord | None = None
                    old_rq: str | None = None
                    if old_id:
                        pipe.watch(self.key(old_id))
                        raw, rq_id = pipe.hmget(self.key(old_id), ["record", "rq"])
                        old = JobRecord.model_validate_json(raw) if raw else None
                        old_rq = _text(rq_id)
                    pipe.multi()
                    if old is not None and old.state is JobState.queued:
                        old.state, old.superseded_by, old.finished_at = (
                            JobState.canceled,
                            job_id,
                            utc(now),
                        )
                        pipe.hset(self.key(old.id), "record", old.model_dump_json())
                        pipe.expire(self.key(old.id), DONE_TTL)
                        pipe.zrem(self.delayed, old.id)
                        pipe.srem(self.waiters(old.project), old.id)
                    else:
                        old_rq = None
                    pipe.hset(
                        self.key(job_id),
                        mapping={
                            "record": record.model_dump_json(),
                            "spec": spec.model_dump_json(),
                            "attempt": 0,
                        },
                    )
                    pipe.set(pending, job_id)
                    pipe.zadd(self.index, {job_id: now})
                    pipe.zadd(self.project_index(spec.project), {job_id: now})
                    if delay > 0:
                        pipe.zadd(self.delayed, {job_id: now + delay})
                    pipe.execute()
                    return record, old_rq
                except WatchError:
                    continue

    def claim(self, job_id: str) -> tuple[str, JobRecord | None, JobSpec | None]:
        """queued -> started if the project's lock is free ("claimed"); else park ("busy");
        "gone" when the job is no longer queued (canceled, already run, expired)."""
        key = self.key(job_id)
        with self._transaction() as pipe:
            while True:
                try:
                    pipe.watch(key)
                    raw, raw_spec = pipe.hmget(key, ["record", "spec"])
                    if raw is None:
                        return "gone", None, None
                    record = JobRecord.model_validate_json(raw)
                    spec = JobSpec.model_validate_json(raw_spec)
                    if record.state is not JobState.queued:
                        return "gone", record, spec
                    lock = self.lock(record.project)
                    pipe.watch(lock)
                    holder = _text(pipe.get(lock))
                    now = time.time()
                    pipe.multi()
                    if holder is not None and holder != job_id:
                        pipe.sadd(self.waiters(record.project), job_id)
                        pipe.zadd(self.delayed, {job_id: now + PARK_FALLBACK})
                        pipe.execute()
                        return "busy", record, spec
                    record.state, record.started_at = JobState.started, utc(now)
                    pipe.hset(
                        key,
                        mapping={
                            "record": record.model_dump_json(),
                            "heartbeat": now,
                            "worker": f"{HOSTNAME}:{os.getpid()}",
                        },
                    )
                    pipe.set(lock, job_id, px=int(LOCK_TTL * 1000))
                    pipe.srem(self.waiters(record.project), job_id)
                    pipe.sadd(self.started, job_id)
                    pipe.execute()
                    return "claimed", record, spec
                except WatchError:
                    continue

    def finish(
        self,
        job_id: str,
        state: JobState,
        *,
        error: str | None = None,
        traceback: str | None = None,
        result: dict[str, Any] | None = None,
    ) -> JobRecord | None:
        """started -> finished | failed (only from started: the first verdict wins)."""
        key = self.key(job_id)
        with self._transaction() as pipe:
            while True:
                try:
                    pipe.watch(key)
                    raw = pipe.hget(key, "record")
                    record = JobRecord.model_validate_json(raw) if raw else None
                    if record is None or record.state is not JobState.started:
                        return None
                    record.state, record.finished_at = state, utc(time.time())
                    record.error, record.traceback, record.result = error, traceback, result
                    record.model_version = (result or {}).get("model_version")
                    pipe.multi()
                    pipe.hset(key, "record", record.model_dump_json())
                    pipe.expire(key, DONE_TTL)
                    pipe.srem(self.started, job_id)
                    pipe.execute()
                    break
                except WatchError:
                    continue
        level = logging.INFO if state is JobState.finished else logging.WARNING
        log.log(level, "job %s %s%s", job_id, state.value, f": {error}" if error else "")
        return record

    def release(self, project: str, job_id: str) -> None:
        """Free the project's lock (if this job holds it) and make its waiters due now."""
        lock, waiters = self.lock(project), self.waiters(project)
        with self._transaction() as pipe:
            while True:
                try:
                    pipe.watch(lock, waiters)
                    holder = _text(pipe.get(lock))
                    parked = [_text(m) for m in pipe.smembers(waiters)]
                    pipe.multi()
                    if holder == job_id:
                        pipe.delete(lock)
                    if parked:
                        pipe.zadd(self.delayed, dict.fromkeys(parked, time.time()))
                        pipe.delete(waiters)
                    pipe.execute()
                    return
                except WatchError:
                    continue

    def beat(self, job_id: str, project: str) -> bool:
        """Heartbeat and lock renewal; False when the lock was lost."""
        with self.conn.pipeline(transaction=False) as pipe:
            pipe.hset(self.key(job_id), "heartbeat", time.time())
            peak = read_peak_mb()
            if peak is not None:
                pipe.hset(self.key(job_id), "peak_mb", round(peak, 1))
            pipe.execute()
        return bool(self._renew(keys=[self.lock(project)], args=[job_id, int(LOCK_TTL * 1000)]))

    def fail_if_stale(self, job_id: str, heartbeat: float | None) -> JobRecord | None:
        """A started job whose worker stopped beating is failed (and its project unlocked)."""
        if heartbeat is None or time.time() - heartbeat <= STALE_AFTER:
            return None
        record = self.finish(
            job_id,
            JobState.failed,
            error=f"{_WORKER_STOPPED} (no heartbeat for {time.time() - heartbeat:.0f} s)",
        )
        if record is not None:
            self.release(record.project, job_id)
        return record

    def progress_writer(self, job_id: str) -> Callable[[dict[str, Any]], None]:
        """Progress lives in its own field, so it never races with a state change."""

        def write(progress: dict[str, Any]) -> None:
            self.conn.hset(self.key(job_id), "progress", json.dumps(progress, default=str))

        return write


class RQJobQueue:
    """The JobQueue on Redis + RQ (see the module docstring for how it works)."""

    def __init__(
        self, settings: Settings, *, poll_interval: float = 0.2, backend_dir: Path | None = None
    ) -> None:
        self.settings = settings
        #: named in /health's "no worker" hint, so the command it gives can be pasted as is
        self.backend_dir = backend_dir
        self.url = settings.redis_url
        self.poll_interval = poll_interval
        self.conn = connect(self.url)
        self.jobs = _Jobs(self.conn, settings.rq_queue_name)
        self.rq_queue = Queue(settings.rq_queue_name, connection=self.conn)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _unreachable(self, exc: BaseException) -> str:
        return f"Redis at {mask_url(self.url)} is unreachable: {exc}"

    # --- lifecycle ----------------------------------------------------------------------
    def start(self) -> None:
        """Start the dispatcher thread (delayed and parked jobs); Redis may come up later."""
        if self._thread is not None and self._thread.is_alive():
            return
        try:
            self.conn.ping()
        except RedisError as exc:
            log.error("%s; jobs cannot be queued until it is back", self._unreachable(exc))
        self._stop.clear()
        self._thread = threading.Thread(
            target=self._dispatch_loop, name="labelbridge-rq-dispatch", daemon=True
        )
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        thread, self._thread = self._thread, None
        if thread is not None:
            thread.join(10)
        with contextlib.suppress(Exception):
            self.conn.close()

    # --- JobQueue -------------------------------------------------------------------------
    def submit(self, spec: JobSpec, *, delay: float = 0.0) -> JobRecord:
        job_id = uuid.uuid4().hex
        try:
            record, canceled_rq = self.jobs.create(job_id, spec, delay)
        except RedisError as exc:
            raise QueueUnavailable(
                self._unreachable(exc), fix="start Redis, or set JOB_QUEUE=embedded"
            ) from exc
        later = f" in {delay:g} s" if delay > 0 else ""
        log.info("job %s queued: %s for project %s%s", job_id, spec.kind, spec.project, later)
        if canceled_rq:
            with contextlib.suppress(NoSuchJobError, InvalidJobOperation, RedisError):
                Job.fetch(canceled_rq, connection=self.conn).cancel()
        if delay <= 0:
            try:
                self.dispatch(job_id)
            except RedisError:
                log.warning(
                    "job %s: dispatch failed, the dispatcher retries", job_id, exc_info=True
                )
                with contextlib.suppress(RedisError):
                    self.conn.zadd(self.jobs.delayed, {job_id: time.time() + 1})
        return record

    def get(self, job_id: str) -> JobRecord:
        try:
            found = self.jobs.read(job_id)
            if found is None:
                raise UnknownJob(f"job {job_id} is not known", field="job")
            record, _, heartbeat = found
            if record.state is JobState.started:
                record = self.jobs.fail_if_stale(job_id, heartbeat) or record
        except RedisError as exc:
            raise QueueUnavailable(self._unreachable(exc)) from exc
        return record

    def list(self, project: str | None = None, limit: int = 50) -> list[JobRecord]:
        index = self.jobs.index if project is None else self.jobs.project_index(project)
        try:
            ids = [_text(i) or "" for i in self.conn.zrevrange(index, 0, max(limit, 1) - 1)]
            with self.conn.pipeline(transaction=False) as pipe:
                for job_id in ids:
                    pipe.hmget(self.jobs.key(job_id), ["record", "progress"])
                rows = pipe.execute()
            records = []
            for job_id, (raw, progress) in zip(ids, rows, strict=True):
                if raw is None:  # expired: drop it from the index
                    self.conn.zrem(index, job_id)
                else:
                    records.append(_parse(raw, progress))
        except RedisError as exc:
            raise QueueUnavailable(self._unreachable(exc)) from exc
        return records

    def health(self) -> tuple[bool, str | None]:
        try:
            self.conn.ping()
            workers = Worker.count(queue=self.rq_queue)
        except (RedisError, OSError) as exc:
            return False, self._unreachable(exc)
        if workers == 0:
            folder = f" {self.backend_dir}" if self.backend_dir is not None else ""
            return False, (
                f"no worker listens on RQ queue {self.settings.rq_queue_name!r} at "
                f"{mask_url(self.url)}: start one with `labelbridge worker{folder}` (a server "
                "of several backends: `labelbridge worker NAME=FOLDER ...`, one pair per backend)"
            )
        return True, None

    # --- dispatching --------------------------------------------------------------------
    def dispatch(self, job_id: str) -> None:
        """Put a queued job on the RQ queue (each attempt is a new RQ job: <id>-<n>)."""
        attempt = self.conn.hincrby(self.jobs.key(job_id), "attempt", 1)
        rq_id = f"{job_id}-{attempt}"
        self.conn.hset(self.jobs.key(job_id), "rq", rq_id)
        self.rq_queue.enqueue_call(
            execute,
            args=(job_id, self.settings.rq_queue_name),
            job_id=rq_id,
            timeout=max(1, math.ceil(self.settings.job_timeout)),
            result_ttl=3600,
            failure_ttl=7 * 24 * 3600,
            description=f"labelbridge job {job_id}",
        )

    def dispatch_due(self) -> int:
        """Move due delayed/parked jobs to RQ; ZREM decides which process does each one."""
        moved = 0
        due = self.conn.zrangebyscore(self.jobs.delayed, "-inf", time.time(), start=0, num=100)
        for raw in due:
            job_id = _text(raw) or ""
            if not self.conn.zrem(self.jobs.delayed, job_id):
                continue
            found = self.jobs.read(job_id)
            if found is None or found[0].state is not JobState.queued:
                continue
            try:
                self.dispatch(job_id)
            except RedisError:
                self.conn.zadd(self.jobs.delayed, {job_id: time.time() + 1})
                raise
            moved += 1
        return moved

    def sweep_stale(self) -> None:
        for raw in self.conn.smembers(self.jobs.started):
            job_id = _text(raw) or ""
            found = self.jobs.read(job_id)
            if found is None:
                self.conn.srem(self.jobs.started, job_id)
            elif found[0].state is JobState.started:
                self.jobs.fail_if_stale(job_id, found[2])

    def _dispatch_loop(self) -> None:
        last_sweep = 0.0
        failing = False
        while not self._stop.is_set():
            try:
                self.dispatch_due()
                if time.monotonic() - last_sweep > 10:
                    self.sweep_stale()
                    last_sweep = time.monotonic()
                if failing:
                    log.info("Redis at %s is reachable again", mask_url(self.url))
                failing = False
            except RedisError as exc:
                if not failing:
                    log.error("job dispatcher: %s", self._unreachable(exc))
                failing = True
                self._stop.wait(2.0)
            except Exception:
                log.exception("job dispatcher error")
                self._stop.wait(2.0)
            self._stop.wait(self.poll_interval)


# --- the worker side ----------------------------------------------------------------------
#: {RQ queue name: the settings of the backend whose jobs it carries}, set in each worker
#: process by run_workers: one entry, or one per backend of `labelbridge worker a=... b=...`
_worker_settings: dict[str, Settings] = {}


def _settings_here(queue_name: str) -> Settings:
    """The settings a job of `queue_name` runs with: its backend's (model dir, store prefix)."""
    if queue_name in _worker_settings:
        return _worker_settings[queue_name]
    if len(_worker_settings) == 1:  # a job whose queue the worker was not told of: as before
        return next(iter(_worker_settings.values()))
    from labelbridge.jobs import resolve_dirs

    from_environment: dict[str, Any] = {}  # a plain `rq worker`: the environment's settings
    return resolve_dirs(Settings(**from_environment), None)


class _Heartbeat(threading.Thread):
    def __init__(self, jobs: _Jobs, job_id: str, project: str) -> None:
        super().__init__(name="labelbridge-heartbeat", daemon=True)
        self.jobs, self.job_id, self.project = jobs, job_id, project
        self.halt = threading.Event()

    def run(self) -> None:
        while not self.halt.wait(HEARTBEAT):
            try:
                if not self.jobs.beat(self.job_id, self.project):
                    log.warning("lost the lock of project %s (heartbeat too late)", self.project)
            except RedisError as exc:
                log.warning("heartbeat failed: %s", exc)


def execute(job_id: str, queue_name: str) -> dict[str, Any]:
    """What an RQ work horse runs: claim our record, train, record the outcome."""
    from labelbridge.jobs.runner import job_context, run_spec

    settings = _settings_here(queue_name)
    current = get_current_job()
    conn = current.connection if current is not None else connect(settings.redis_url, quick=False)
    jobs = _Jobs(conn, queue_name)
    with job_context(job_id, whole_process=True):
        outcome, record, spec = jobs.claim(job_id)
        if outcome == "gone" or record is None or spec is None:
            state = record.state.value if record else "expired"
            log.info("nothing to do: the job is %s", state)
            return {"skipped": state}
        if outcome == "busy":
            log.info("project %s has a job running: waiting for it", record.project)
            return {"waiting": True}
        heartbeat = _Heartbeat(jobs, job_id, record.project)
        heartbeat.start()
        try:
            result = run_spec(job_id, spec, settings, progress=jobs.progress_writer(job_id))
        except BaseException as exc:
            timeout = current.timeout if current is not None else None
            if isinstance(exc, JobTimeoutException):
                error = f"timed out after {timeout or settings.job_timeout:g} s"
            else:
                error = error_line(exc, memory_limit_mb=settings.job_memory_limit_mb)
            log.error("job failed: %s", error)
            jobs.finish(job_id, JobState.failed, error=error, traceback=format_traceback(exc))
            raise
        else:
            jobs.finish(job_id, JobState.finished, result=result)
            return result
        finally:
            heartbeat.halt.set()
            jobs.release(record.project, job_id)


def _on_horse_killed(job: Job, retpid: int, status: int, rusage: Any) -> None:
    """In the worker process: the horse died without reporting (SIGKILL, OOM, segfault)."""
    if job.func_name != f"{__name__}.execute" or len(job.args) < 2:
        return
    job_id, queue_name = str(job.args[0]), str(job.args[1])
    jobs = _Jobs(job.connection, queue_name)
    peak = rusage_peak_mb(rusage)
    found = jobs.read(job_id)
    if found is None:
        return
    record = found[0]
    elapsed = time.time() - record.started_at.timestamp() if record.started_at else 0.0
    if job.timeout and job.timeout > 0 and elapsed >= job.timeout:
        reason = f"timed out after {job.timeout:g} s"
    elif os.WIFSIGNALED(status):
        reason = killed_reason(os.WTERMSIG(status), peak)
    else:
        code = os.WEXITSTATUS(status) if os.WIFEXITED(status) else status
        reason = f"the training process exited with code {code} without reporting a result"
    if jobs.finish(job_id, JobState.failed, error=reason) is not None:
        jobs.release(record.project, job_id)


def _work(served: list[Settings], burst: bool, name: str) -> None:
    """One RQ worker process (forked by run_workers), listening on every served queue."""
    _worker_settings.clear()
    _worker_settings.update({one.rq_queue_name: one for one in served})
    import labelbridge.jobs.runner  # noqa: F401  (imported once here, not in every horse)

    settings = served[0]  # Redis, logging and the like: the same for every backend
    worker = Worker(
        list(_worker_settings),
        connection=connect(settings.redis_url, quick=False),
        name=name,
        work_horse_killed_handler=_on_horse_killed,
    )
    level = "DEBUG" if settings.debug else settings.log_level.upper()
    # several queues: take from each in turn, so that one backend's backlog does not starve
    # the others (RQ's default would empty the first queue first)
    strategy = DequeueStrategy.ROUND_ROBIN if len(served) > 1 else DequeueStrategy.DEFAULT
    worker.work(burst=burst, logging_level=level, dequeue_strategy=strategy)


def run_workers(
    settings: Settings,
    backend_dir: Path | None = None,
    *,
    burst: bool = False,
    count: int = 1,
    backends: Mapping[str, str] | None = None,
) -> int:
    """`labelbridge worker`: `count` RQ worker processes plus this supervisor, which runs the
    dispatchers, forwards SIGTERM (warm shutdown; a second signal kills) and restarts a worker
    that died. Returns the exit code.

    `backends` ({name: folder or module:Class}, as `labelbridge start` serves them; then
    `backend_dir` is the first one's folder): every worker listens on each backend's queue and
    runs a job with that backend's settings (labelbridge.multi.mounted_backends). `count` is
    still how many jobs run at once, whichever backends they are for."""
    from labelbridge.jobs import resolve_dirs

    settings = resolve_dirs(settings, backend_dir)
    with contextlib.suppress(ImportError):
        from labelbridge.logs import configure_logging

        configure_logging(settings, backend_dir=backend_dir, role="worker")
    if backends:
        from labelbridge.multi import mounted_backends

        served = [one.settings for one in mounted_backends(backends, settings)]
    else:
        served = [settings]
    url = mask_url(settings.redis_url)
    try:
        connect(settings.redis_url).ping()
    except RedisError as exc:
        log.error("Redis at %s is unreachable: %s", url, exc)
        return 1
    names = ", ".join(repr(one.rq_queue_name) for one in served)
    log.info("serving RQ queue(s) %s at %s with %d worker(s)", names, url, count)

    context = multiprocessing.get_context("fork")
    token = uuid.uuid4().hex[:6]
    workers: dict[int, multiprocessing.process.BaseProcess] = {}
    spawned: dict[int, float] = {}

    def spawn(index: int) -> None:
        spawned[index] = time.monotonic()
        name = f"{settings.rq_queue_name}.{HOSTNAME}.{os.getpid()}.{token}.{index}"
        process = context.Process(
            target=_work, args=(served, burst, name), name=f"rq-worker-{index}"
        )
        process.start()
        workers[index] = process

    for index in range(count):
        spawn(index)
    # after the forks: workers do not inherit their threads
    queues = [RQJobQueue(one) for one in served]
    for queue in queues:
        queue.start()
    stopping = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        forward = signal.SIGKILL if stopping.is_set() else signal.SIGTERM
        stopping.set()
        if signum == signal.SIGINT and forward == signal.SIGTERM:
            return  # Ctrl+C reached the whole process group already
        for process in workers.values():
            if process.pid is not None and process.is_alive():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(process.pid, forward)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        while True:
            alive = {i for i, p in workers.items() if p.is_alive()}
            if not alive and (burst or stopping.is_set()):
                break
            if not burst and not stopping.is_set():
                for index in set(workers) - alive:
                    if time.monotonic() - spawned[index] < 5.0:
                        continue  # a worker that dies at once is restarted every 5 s, not in a loop
                    log.warning(
                        "worker %d exited (code %s): restarting it", index, workers[index].exitcode
                    )
                    spawn(index)
            time.sleep(0.2)
    finally:
        for queue in queues:
            queue.close()
    return 0
