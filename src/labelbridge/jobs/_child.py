"""The process the embedded queue starts for one job: `python -m labelbridge.jobs._child DIR`.

DIR holds `in.json` (job id, spec, settings with secrets; mode 0600, deleted once read). The
process writes `out.json` ({"ok": true, "result": ...} or {"ok": false, "error", "traceback"})
and exits; the server turns that, or the way the process died, into the job's final state.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import sqlite3
import sys
from pathlib import Path
from types import FrameType
from typing import Any

log = logging.getLogger("labelbridge.jobs.child")

_PR_SET_PDEATHSIG = 1


#: added to a job process's niceness: the scheduler gives the serving processes the CPU first
JOB_NICENESS = 10


def lower_priority(niceness: int, pid: int = 0) -> None:
    """Give a job process (this one: pid 0) at least this niceness, and its autogroup too: a
    job is its own session, so with Linux's autogroup scheduling (the default) the session's
    group would otherwise get as much CPU as the whole server's, whatever the process's own
    niceness. The scheduler calls it right after the spawn (Python's start-up and the imports
    cost ~0.5 s of CPU, which must not compete with /health), the child again (idempotent)."""
    with contextlib.suppress(OSError):
        if os.getpriority(os.PRIO_PROCESS, pid) < niceness:
            os.setpriority(os.PRIO_PROCESS, pid, niceness)
    with contextlib.suppress(OSError):
        Path(f"/proc/{pid or 'self'}/autogroup").write_text(f"{niceness}\n", encoding="ascii")


def _die_with_parent(parent_pid: int) -> None:
    """If the server dies (even by SIGKILL), this process dies too: no orphan publishes later."""
    if sys.platform.startswith("linux"):
        import ctypes  # here: the server imports this module too (~0.3 MB it does not need)

        with contextlib.suppress(OSError, AttributeError):
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent_pid:
        os._exit(70)


def _limit_memory(limit_mb: int | None) -> None:
    if limit_mb:
        import resource

        limit = limit_mb * 1024 * 1024
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))


def _terminate(signum: int, frame: FrameType | None) -> None:
    """SIGTERM (timeout, shutdown) becomes SystemExit so that staging folders are cleaned up."""
    raise SystemExit(128 + signum)


def _write_report(job_dir: Path, report: dict[str, Any]) -> None:
    tmp = job_dir / "out.json.tmp"
    tmp.write_text(json.dumps(report, default=str), encoding="utf-8")
    os.replace(tmp, job_dir / "out.json")


def _progress_writer(db_path: str, job_id: str) -> Any:
    def write(progress: dict[str, Any]) -> None:
        with contextlib.closing(
            sqlite3.connect(db_path, timeout=10.0, isolation_level=None)
        ) as conn:
            conn.execute(
                "UPDATE jobs SET progress=? WHERE id=? AND state='started'",
                (json.dumps(progress, default=str), job_id),
            )

    return write


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python -m labelbridge.jobs._child JOB_DIR", file=sys.stderr)
        return 2
    job_dir = Path(argv[0])
    source = job_dir / "in.json"
    payload = json.loads(source.read_text(encoding="utf-8"))
    source.unlink()
    _die_with_parent(int(payload["parent_pid"]))
    signal.signal(signal.SIGTERM, _terminate)
    # training is batch work: the server it shares the cores with answers Label Studio first
    # (/health under a training job and /predict load, bench/NOTES.md)
    lower_priority(JOB_NICENESS)

    from labelbridge.jobs._base import JobSpec
    from labelbridge.jobs._common import error_line, format_traceback, settings_from_json
    from labelbridge.jobs.runner import job_context, run_spec

    settings = settings_from_json(payload["settings"])
    job_id = str(payload["job_id"])
    try:
        from labelbridge.logs import configure_logging
    except ImportError:  # logging set up by another module in older trees
        logging.basicConfig(level=logging.INFO)
    else:
        configure_logging(settings, role="worker")

    with job_context(job_id, whole_process=True):
        try:
            _limit_memory(settings.job_memory_limit_mb)
            spec = JobSpec.model_validate(payload["spec"])
            result = run_spec(
                job_id, spec, settings, progress=_progress_writer(payload["db_path"], job_id)
            )
        except BaseException as exc:
            error = error_line(exc, memory_limit_mb=settings.job_memory_limit_mb)
            log.error("job failed: %s", error, exc_info=not isinstance(exc, SystemExit))
            _write_report(
                job_dir, {"ok": False, "error": error, "traceback": format_traceback(exc)}
            )
            return 1
        log.info("job finished: %s", result.get("model_version") or "nothing published")
        _write_report(job_dir, {"ok": True, "result": result})
        return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
