"""The embedded job queue: no services to run, records in SQLite, each job in its own process.

Why this shape:
- Records are rows in a SQLite file (WAL), so a job's status and traceback survive a restart
  and every server process of a production deployment sees the same jobs.
- Every lifecycle change is one transaction (`BEGIN IMMEDIATE`): a claim is an UPDATE guarded
  by `state='queued'`, "no started job of this project" and "fewer than JOB_WORKERS started",
  checked by rowcount, so several server processes can share the file without running a job
  twice or two jobs of one project at once.
- A job runs in a child process (`python -m labelbridge.jobs._child`): a crash, an OOM kill or
  a timeout ends that process, never the server. The child gets its settings from a 0600 file,
  not from its command line. Peak memory comes from wait4()'s rusage.
- A job left `started` by a dead server is failed on the next start (same host: its pid is
  gone) or once its heartbeat is stale (any host), so nothing stays `started` forever.
- Submitting and running are separable (`run_scheduler=False`): in production the web workers
  only write and read records, and one scheduler in the long-lived supervisor process runs the
  jobs, so recycling or killing a worker never touches training. That scheduler writes a
  heartbeat row every few seconds; a submit-only process reports `degraded` when it goes quiet,
  since queued jobs would then wait forever.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from labelbridge.errors import QueueUnavailable, UnknownJob
from labelbridge.jobs._base import JobRecord, JobSpec, JobState
from labelbridge.jobs._child import JOB_NICENESS, lower_priority
from labelbridge.jobs._common import (
    HOSTNAME,
    error_line,
    exit_reason,
    format_traceback,
    pid_alive,
    rusage_peak_mb,
    settings_to_json,
    utc,
)
from labelbridge.settings import Settings

__all__ = ["EmbeddedJobQueue"]

log = logging.getLogger("labelbridge.jobs.embedded")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    project TEXT NOT NULL,
    state TEXT NOT NULL,
    created_at REAL NOT NULL,
    not_before REAL NOT NULL,
    started_at REAL,
    finished_at REAL,
    heartbeat REAL,
    owner TEXT,
    pid INTEGER,
    model_version TEXT,
    error TEXT,
    traceback TEXT,
    superseded_by TEXT,
    spec TEXT NOT NULL,
    progress TEXT,
    result TEXT
);
CREATE INDEX IF NOT EXISTS jobs_state ON jobs (state, not_before);
CREATE INDEX IF NOT EXISTS jobs_project ON jobs (project, created_at);
CREATE INDEX IF NOT EXISTS jobs_created ON jobs (created_at);
CREATE TABLE IF NOT EXISTS schedulers (
    owner TEXT PRIMARY KEY,
    heartbeat REAL NOT NULL
);
"""

_COLUMNS = (
    "id, kind, project, state, created_at, started_at, finished_at, model_version, error, "
    "traceback, superseded_by, progress, result"
)
_SERVER_STOPPED = "the server stopped during the job"
_KEEP_DONE_SECONDS = 30 * 24 * 3600
#: rows of schedulers that stopped (one per server start) are dropped after this long
_KEEP_SCHEDULER_SECONDS = 24 * 3600


@dataclass
class _Running:
    proc: subprocess.Popen[bytes]
    job_dir: Path
    started: float
    stop_reason: str | None = None  # set when we stop it: "timeout" or "shutdown"
    kill_at: float | None = None  # SIGKILL after the SIGTERM grace period
    exit: tuple[int, Any] | None = None  # (wait status, rusage) once the process has ended
    note: str | None = None  # said about the disk when it ended, kept for a later retry


def _row_to_record(row: sqlite3.Row) -> JobRecord:
    return JobRecord(
        id=row["id"],
        kind=row["kind"],
        project=row["project"],
        state=JobState(row["state"]),
        created_at=utc(row["created_at"]),
        started_at=utc(row["started_at"]),
        finished_at=utc(row["finished_at"]),
        model_version=row["model_version"],
        error=row["error"],
        traceback=row["traceback"],
        superseded_by=row["superseded_by"],
        progress=json.loads(row["progress"]) if row["progress"] else None,
        result=json.loads(row["result"]) if row["result"] else None,
    )


class EmbeddedJobQueue:
    """Jobs in SQLite, run by a scheduler thread in separate processes (or inline for tests).

    With `run_scheduler=False` this process only submits and reads: another process (the
    production supervisor) runs the jobs, and `health()` watches its heartbeat, which counts
    as lost after `scheduler_stale_after` seconds."""

    def __init__(
        self,
        settings: Settings,
        db_path: Path | str,
        *,
        inline: bool = False,
        run_scheduler: bool = True,
        poll_interval: float = 0.1,
        heartbeat_interval: float = 2.0,
        stale_after: float = 60.0,
        scheduler_stale_after: float = 10.0,
        kill_grace: float = 2.0,
    ) -> None:
        self.settings = settings
        self.db_path = Path(db_path)
        self.inline = inline
        self.run_scheduler = run_scheduler
        self.scheduler_stale_after = scheduler_stale_after
        self.poll_interval = poll_interval
        self.heartbeat_interval = heartbeat_interval
        self.stale_after = stale_after
        self.kill_grace = kill_grace
        self.owner = f"{HOSTNAME}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._work_dir = self.db_path.parent / ".jobs"
        self._local = threading.local()
        self._running: dict[str, _Running] = {}
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._drain_until = 0.0  # monotonic time until which running jobs may finish on stop
        self._drain_wait = 0.0
        self._thread: threading.Thread | None = None
        self.db_path.parent.mkdir(parents=True, exist_ok=True)
        conn = self._conn()
        conn.execute("PRAGMA journal_mode=WAL")
        conn.executescript(_SCHEMA)

    # --- database -----------------------------------------------------------------------
    def _conn(self) -> sqlite3.Connection:
        """One connection per thread (sqlite3 objects must stay in their thread)."""
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(self.db_path, timeout=10.0, isolation_level=None)
            conn.row_factory = sqlite3.Row
            conn.execute("PRAGMA synchronous=NORMAL")
            self._local.conn = conn
        return conn

    @contextlib.contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        """A write transaction that takes the database's write lock at once.

        A write that fails (a full disk: "database or disk is full"; a lock held too long)
        becomes QueueUnavailable, which names the database and what to do. ROLLBACK only while
        a transaction is open: SQLite rolls back by itself on a full disk, and a second
        ROLLBACK would raise "no transaction is active" and hide the real error."""
        conn = self._conn()
        try:
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
        except sqlite3.OperationalError as exc:
            raise QueueUnavailable(
                f"the job database {self.db_path} cannot be written: {exc}",
                fix="free disk space where MODEL_DIR lives",
            ) from exc

    def _finish(
        self,
        job_id: str,
        state: JobState,
        *,
        owner: str | None = None,
        error: str | None = None,
        traceback: str | None = None,
        result: dict[str, Any] | None = None,
    ) -> bool:
        """started -> finished | failed, only if the row is still ours and still started."""
        model_version = (result or {}).get("model_version")
        with self._tx() as conn:
            cursor = conn.execute(
                "UPDATE jobs SET state=?, finished_at=?, error=?, traceback=?, result=?,"
                " model_version=? WHERE id=? AND state='started' AND owner=?",
                (
                    state.value,
                    time.time(),
                    error,
                    traceback,
                    None if result is None else json.dumps(result),
                    model_version,
                    job_id,
                    owner or self.owner,
                ),
            )
        done = cursor.rowcount == 1
        if done:
            level = logging.INFO if state is JobState.finished else logging.WARNING
            log.log(level, "job %s %s%s", job_id, state.value, f": {error}" if error else "")
        return done

    # --- the JobQueue interface -----------------------------------------------------------
    def start(self) -> None:
        """Fail jobs a dead server left behind, then start the scheduler thread (not in a
        submit-only process: there, another process runs the jobs)."""
        if not self.run_scheduler or self.inline:
            return
        if self._thread is not None and self._thread.is_alive():
            return
        self._recover()
        # before any submit-only process asks, so health is ok from the start; a failed write
        # (a full disk) must not keep the scheduler from starting: its loop beats again
        with contextlib.suppress(QueueUnavailable):
            self._beat()
        self._stop.clear()
        self._drain_until = 0.0
        self._thread = threading.Thread(target=self._loop, name="labelbridge-jobs", daemon=True)
        self._thread.start()

    def shutdown(self, wait: float = 0.0) -> None:
        """Begin stopping, without blocking: claim no more jobs, give running ones `wait`
        seconds to finish, then stop and fail them. Jobs still queued stay queued for the next
        start. A later call does not change the first one's deadline."""
        if self._stop.is_set():
            return
        self._drain_wait = max(wait, 0.0)
        self._drain_until = time.monotonic() + self._drain_wait
        self._stop.set()
        self._wake.set()

    def close(self, *, wait: float = 0.0) -> None:
        """Stop the scheduler (see `shutdown`); jobs still running after `wait` seconds are
        stopped and failed (never left started). A submit-only queue only lets go of its
        database: the jobs belong to the scheduler's process."""
        self.shutdown(wait)
        thread, self._thread = self._thread, None
        if thread is not None:
            draining = max(0.0, self._drain_until - time.monotonic())
            thread.join(draining + self.kill_grace + 30)
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None

    def submit(self, spec: JobSpec, *, delay: float = 0.0) -> JobRecord:
        now = time.time()
        job_id = uuid.uuid4().hex
        with self._tx() as conn:
            superseded = conn.execute(
                "UPDATE jobs SET state='canceled', superseded_by=?, finished_at=?"
                " WHERE project=? AND kind=? AND state='queued'",
                (job_id, now, spec.project, spec.kind),
            ).rowcount
            conn.execute(
                "INSERT INTO jobs (id, kind, project, state, created_at, not_before, spec)"
                " VALUES (?, ?, ?, 'queued', ?, ?, ?)",
                (
                    job_id,
                    spec.kind,
                    spec.project,
                    now,
                    now + max(delay, 0.0),
                    spec.model_dump_json(),
                ),
            )
        log.info(
            "job %s queued: %s for project %s%s%s",
            job_id,
            spec.kind,
            spec.project,
            f" in {delay:g} s" if delay > 0 else "",
            f" (superseding {superseded} queued)" if superseded else "",
        )
        if self.inline:
            self._run_inline(job_id, spec)
        else:
            self._wake.set()
        return self.get(job_id)

    def get(self, job_id: str) -> JobRecord:
        row = self._conn().execute(f"SELECT {_COLUMNS} FROM jobs WHERE id=?", (job_id,)).fetchone()
        if row is None:
            raise UnknownJob(f"job {job_id} is not known", field="job")
        return _row_to_record(row)

    def list(self, project: str | None = None, limit: int = 50) -> list[JobRecord]:
        if project is None:
            rows = self._conn().execute(
                f"SELECT {_COLUMNS} FROM jobs ORDER BY created_at DESC LIMIT ?", (limit,)
            )
        else:
            rows = self._conn().execute(
                f"SELECT {_COLUMNS} FROM jobs WHERE project=? ORDER BY created_at DESC LIMIT ?",
                (project, limit),
            )
        return [_row_to_record(row) for row in rows]

    def health(self) -> tuple[bool, str | None]:
        if self.inline:
            return True, None
        if not self.run_scheduler:
            return self._scheduler_health()
        if self._thread is not None and self._thread.is_alive():
            return True, None
        return False, "the embedded job scheduler is not running"

    def _scheduler_health(self) -> tuple[bool, str | None]:
        """Submit-only: is the scheduler of another process alive (its heartbeat fresh)?"""
        try:
            row = self._conn().execute("SELECT MAX(heartbeat) FROM schedulers").fetchone()
        except sqlite3.Error as exc:
            return False, f"the job database {self.db_path} cannot be read: {exc}"
        last = row[0] if row is not None else None
        if last is None:
            return False, "the job scheduler has never reported (it runs in the server process)"
        quiet = time.time() - float(last)
        if quiet > self.scheduler_stale_after:
            return False, f"the job scheduler has not reported for {quiet:.0f} s"
        return True, None

    # --- inline mode --------------------------------------------------------------------
    def _run_inline(self, job_id: str, spec: JobSpec) -> None:
        """Tests: the whole lifecycle in this thread (delay and per-project limits ignored)."""
        from labelbridge.jobs.runner import run_spec

        with self._tx() as conn:
            claimed = conn.execute(
                "UPDATE jobs SET state='started', started_at=?, heartbeat=?, owner=?, pid=?"
                " WHERE id=? AND state='queued'",
                (time.time(), time.time(), self.owner, os.getpid(), job_id),
            ).rowcount
        if claimed != 1:
            return
        try:
            result = run_spec(job_id, spec, self.settings, progress=self._progress_writer(job_id))
        except Exception as exc:
            log.exception("job %s failed", job_id)
            self._finish(
                job_id, JobState.failed, error=error_line(exc), traceback=format_traceback(exc)
            )
        else:
            self._finish(job_id, JobState.finished, result=result)

    def _progress_writer(self, job_id: str) -> Any:
        def write(progress: dict[str, Any]) -> None:
            self._conn().execute(
                "UPDATE jobs SET progress=? WHERE id=? AND state='started'",
                (json.dumps(progress), job_id),
            )

        return write

    # --- the scheduler ------------------------------------------------------------------
    def _loop(self) -> None:
        last_beat = last_sweep = time.monotonic()
        while not self._stop.is_set():
            try:
                self._reap()
                now = time.monotonic()
                if now - last_beat >= self.heartbeat_interval:
                    self._beat()
                    last_beat = now
                if now - last_sweep >= max(self.heartbeat_interval * 2, 5.0):
                    self._recover()
                    self._purge()
                    last_sweep = now
                if not self._stop.is_set():
                    self._launch_due()
            except Exception:
                log.exception("job scheduler error (retrying)")
                self._stop.wait(1.0)
            self._wake.wait(self.poll_interval)
            self._wake.clear()
        self._drain()
        self._stop_children()

    def _drain(self) -> None:
        """On a stop with a grace period: claim nothing, let running jobs finish in time."""
        if not self._running or time.monotonic() >= self._drain_until:
            return
        log.info(
            "waiting up to %.0f s for %d running job(s) to finish",
            self._drain_until - time.monotonic(),
            len(self._running),
        )
        last_beat = time.monotonic()
        while self._running and time.monotonic() < self._drain_until:
            try:
                self._reap()
                if time.monotonic() - last_beat >= self.heartbeat_interval:
                    self._beat()  # a long drain must not look like a dead server
                    last_beat = time.monotonic()
            except Exception:
                log.exception("job scheduler error while stopping (retrying)")
            time.sleep(self.poll_interval)

    def _stop_children(self) -> None:
        """On close: SIGTERM (fit() can clean up), SIGKILL after the grace period, then fail."""
        for run in self._running.values():
            run.stop_reason = run.stop_reason or "shutdown"
            self._signal(run, signal.SIGTERM)
        for grace, signum in ((self.kill_grace, signal.SIGKILL), (5.0, None)):
            deadline = time.monotonic() + grace
            while self._running and time.monotonic() < deadline:
                self._reap()
                time.sleep(0.02)
            for run in self._running.values():
                if signum is not None:
                    self._signal(run, signum)

    def _beat(self) -> None:
        """The scheduler's own heartbeat (submit-only processes read it in health()), and
        its running jobs' (other schedulers fail a job whose heartbeat is stale)."""
        now = time.time()
        with self._tx() as conn:
            conn.execute(
                "INSERT OR REPLACE INTO schedulers (owner, heartbeat) VALUES (?, ?)",
                (self.owner, now),
            )
            if self._running:
                conn.execute(
                    "UPDATE jobs SET heartbeat=? WHERE owner=? AND state='started'",
                    (now, self.owner),
                )

    def _stop_note(self) -> str:
        if self._drain_wait > 0:
            return f"it was shut down and the job did not finish within {self._drain_wait:g} s"
        return "it was shut down"

    def _recover(self) -> None:
        """Fail `started` jobs whose server is gone: pid dead on this host, or heartbeat stale."""
        now = time.time()
        rows = (
            self._conn()
            .execute(
                "SELECT id, owner, heartbeat FROM jobs WHERE state='started' AND owner!=?",
                (self.owner,),
            )
            .fetchall()
        )
        for row in rows:
            host, _, rest = (row["owner"] or "").partition(":")
            pid_text = rest.partition(":")[0]
            reason = None
            if host == HOSTNAME and pid_text.isdigit() and not pid_alive(int(pid_text)):
                reason = f"{_SERVER_STOPPED} (its process {pid_text} is gone)"
            elif row["heartbeat"] is None or now - row["heartbeat"] > self.stale_after:
                quiet = f"{self.stale_after:g} s"
                reason = f"{_SERVER_STOPPED} (no heartbeat from {host or 'its host'} for {quiet})"
            if reason is not None:
                self._finish(row["id"], JobState.failed, owner=row["owner"], error=reason)

    def _purge(self) -> None:
        """Drop records of jobs that ended long ago: a debounce burst leaves many canceled rows."""
        with self._tx() as conn:
            conn.execute(
                "DELETE FROM jobs WHERE state IN ('finished', 'failed', 'canceled')"
                " AND finished_at<?",
                (time.time() - _KEEP_DONE_SECONDS,),
            )
            conn.execute(
                "DELETE FROM schedulers WHERE heartbeat<?",
                (time.time() - _KEEP_SCHEDULER_SECONDS,),
            )

    def _claim_next(self) -> tuple[str, str] | None:
        """Atomically move the oldest due job whose project is idle to `started` (ours)."""
        now = time.time()
        with self._tx() as conn:
            row = conn.execute(
                "SELECT id, spec FROM jobs AS q WHERE state='queued' AND not_before<=?"
                " AND NOT EXISTS (SELECT 1 FROM jobs AS r"
                " WHERE r.project=q.project AND r.state='started')"
                " ORDER BY created_at LIMIT 1",
                (now,),
            ).fetchone()
            if row is None:
                return None
            cursor = conn.execute(
                "UPDATE jobs SET state='started', started_at=?, heartbeat=?, owner=?"
                " WHERE id=? AND state='queued'"
                " AND NOT EXISTS (SELECT 1 FROM jobs AS r"
                " WHERE r.project=jobs.project AND r.state='started')"
                " AND (SELECT COUNT(*) FROM jobs WHERE state='started') < ?",
                (now, now, self.owner, row["id"], self.settings.job_workers),
            )
        if cursor.rowcount != 1:
            return None
        return str(row["id"]), str(row["spec"])

    def _launch_due(self) -> None:
        while len(self._running) < self.settings.job_workers and not self._stop.is_set():
            claimed = self._claim_next()
            if claimed is None:
                return
            self._launch(*claimed)

    def _launch(self, job_id: str, spec_json: str) -> None:
        job_dir = self._work_dir / job_id
        try:
            job_dir.mkdir(parents=True, mode=0o700)
            payload = {
                "job_id": job_id,
                "spec": json.loads(spec_json),
                "settings": settings_to_json(self.settings),
                "db_path": str(self.db_path.resolve()),
                "parent_pid": os.getpid(),
            }
            fd = os.open(job_dir / "in.json", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                json.dump(payload, handle)
            proc = subprocess.Popen(
                [sys.executable, "-m", "labelbridge.jobs._child", str(job_dir)],
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                close_fds=True,
                env=_child_env(),
            )
            lower_priority(JOB_NICENESS, proc.pid)
        except Exception as exc:
            shutil.rmtree(job_dir, ignore_errors=True)
            self._finish(
                job_id,
                JobState.failed,
                error=f"could not start the training process: {error_line(exc)}",
                traceback=format_traceback(exc),
            )
            return
        self._running[job_id] = _Running(proc=proc, job_dir=job_dir, started=time.monotonic())
        self._conn().execute("UPDATE jobs SET pid=? WHERE id=?", (proc.pid, job_id))
        log.info("job %s started in process %d", job_id, proc.pid)

    def _signal(self, run: _Running, signum: int) -> None:
        """Signal the job's whole process group (fit() may have started processes of its own)."""
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(run.proc.pid, signum)

    def _reap(self) -> None:
        for job_id, run in list(self._running.items()):
            if run.exit is None:
                try:
                    pid, status, usage = os.wait4(run.proc.pid, os.WNOHANG)
                except ChildProcessError:
                    pid, status = run.proc.pid, _as_wait_status(run.proc.returncode or -9)
                    usage = None
                if pid == 0:
                    self._enforce_timeout(run)
                    continue
                run.proc.returncode = _returncode(status)
                run.exit = (status, usage)
            # the job leaves `_running` only once its final state is written: when the write
            # fails (a full disk), the next round tries again, so it never stays `started`
            self._finalize(job_id, run, *run.exit)
            del self._running[job_id]

    def _enforce_timeout(self, run: _Running) -> None:
        now = time.monotonic()
        if run.stop_reason is None and now - run.started > self.settings.job_timeout:
            run.stop_reason = "timeout"
            run.kill_at = now + self.kill_grace
            self._signal(run, signal.SIGTERM)
        elif run.kill_at is not None and now >= run.kill_at:
            run.kill_at = None
            self._signal(run, signal.SIGKILL)

    def _finalize(self, job_id: str, run: _Running, status: int, usage: Any) -> None:
        """Turn how the process ended (and what it reported) into the record's final state."""
        report: dict[str, Any] | None = None
        with contextlib.suppress(OSError, ValueError):
            report = json.loads((run.job_dir / "out.json").read_text(encoding="utf-8"))
        peak = rusage_peak_mb(usage)
        if report is not None and report.get("ok"):
            self._finish(job_id, JobState.finished, result=report.get("result") or {})
        elif run.stop_reason == "timeout":
            self._finish(
                job_id, JobState.failed, error=f"timed out after {self.settings.job_timeout:g} s"
            )
        elif run.stop_reason == "shutdown":
            self._finish(job_id, JobState.failed, error=f"{_SERVER_STOPPED} ({self._stop_note()})")
        elif report is not None:
            self._finish(
                job_id,
                JobState.failed,
                error=str(report.get("error") or "the job failed"),
                traceback=report.get("traceback"),
            )
        else:
            if run.note is None:  # no report: a full disk is the likely reason, say so
                run.note = ""
                with contextlib.suppress(OSError):
                    if shutil.disk_usage(self._work_dir).free < 1 << 16:
                        run.note = f"; the disk of {self._work_dir.parent} is full"
            self._finish(job_id, JobState.failed, error=exit_reason(status, peak) + run.note)
        shutil.rmtree(run.job_dir, ignore_errors=True)  # last: a failed write retries with it


def _as_wait_status(returncode: int) -> int:
    """A Popen returncode (negative: signal) as a waitpid() status."""
    return -returncode if returncode < 0 else returncode << 8


def _returncode(status: int) -> int:
    return -os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)


def _child_env() -> dict[str, str]:
    """The server's environment, plus our source folder on PYTHONPATH for uninstalled runs."""
    import labelbridge

    env = dict(os.environ)
    source = str(Path(labelbridge.__file__).resolve().parents[1])
    paths = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
    if source not in paths:
        env["PYTHONPATH"] = os.pathsep.join([source, *paths])
    env["PYTHONUNBUFFERED"] = "1"
    return env
