"""Logging where the troubleshooting guide says to look.

Production: runtime and inference logs in `<backend>/logs/uwsgi.log`, training logs in
`<backend>/logs/rq.log` (LOG_DIR overrides), rotated by size. Development: everything on the
console, training included (a job process inherits the server's stderr), plus a ring buffer of
recent records for the status page. `--debug` turns on detailed logs; secrets are masked in
every line. LOG_FORMAT=json writes one JSON object per line.

Why a handler of our own for the files: in production many processes write the same two files
(the supervisor, every server worker, every job process, RQ workers). The stdlib's
RotatingFileHandler is unsafe there: each process rotates on its own, renames the file under
the others' feet and they go on writing into the renamed file. `SharedRotatingFileHandler`
instead:
- writes each record with a single `os.write` on an O_APPEND descriptor, so lines from several
  processes never interleave inside a line;
- before each write, checks (one `stat`) whether the path still names the file it holds open,
  and reopens it if another process rotated it (what WatchedFileHandler does);
- rotates under an exclusive `flock` on `<file>.lock`, and only if, once the lock is held, the
  file is still the one it saw grow too big: of several processes that see the size pass the
  limit at once, one rotates and the others just reopen.
A record written in the instant between another process's rename and this one's reopen lands at
the end of `uwsgi.log.1`: it is never lost.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import sys
import threading
from collections import deque
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal

from labelbridge.settings import Settings

__all__ = [
    "TRAINING_LOGGERS",
    "SecretFilter",
    "SharedRotatingFileHandler",
    "configure_logging",
    "mask_secrets",
    "recent_records",
]

#: loggers whose lines belong in rq.log (training), not uwsgi.log
TRAINING_LOGGERS = ("labelbridge.jobs", "labelbridge.train", "rq")
#: rotated files kept beside the live one (uwsgi.log.1 ... uwsgi.log.5)
BACKUP_COUNT = 5

_SECRET_PATTERNS = [
    re.compile(r"(?i)\b(token|bearer|basic)\s+[A-Za-z0-9._~+/=\-]{6,}"),
    re.compile(
        r"""(?i)(["']?(?:access_token|api_key|password|pass|secret|authorization|refresh|access)"""
        r"""["']?\s*[:=]\s*["']?)[^"',\s}]+"""
    ),
]


def mask_secrets(text: str) -> str:
    """Replace tokens and passwords with ***; used on every log line and debug body."""
    text = _SECRET_PATTERNS[0].sub(lambda m: f"{m.group(1)} ***", text)
    return _SECRET_PATTERNS[1].sub(lambda m: f"{m.group(1)}***", text)


class SecretFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        masked = mask_secrets(message)
        if masked != message:
            record.msg, record.args = masked, None
        return True


class _JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        body: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, timezone.utc).isoformat(),
            "level": record.levelname,
            "logger": record.name,
            "pid": record.process,
            "message": record.getMessage(),
        }
        job = getattr(record, "job", None)
        if job:
            body["job"] = job
        if record.exc_info:
            body["exc"] = mask_secrets(self.formatException(record.exc_info))
        return json.dumps(body, ensure_ascii=False, default=str)


class _JobFormatter(logging.Formatter):
    """Text lines; the job id appears on every line that has one."""

    def format(self, record: logging.LogRecord) -> str:
        job = getattr(record, "job", None)
        record.jobtag = f" [job {job}]" if job else ""
        return super().format(record)


class _OnlyTraining(logging.Filter):
    def __init__(self, keep: bool) -> None:
        super().__init__()
        self.keep = keep

    def filter(self, record: logging.LogRecord) -> bool:
        is_training = record.name.startswith(TRAINING_LOGGERS) or bool(getattr(record, "job", None))
        return is_training == self.keep


class SharedRotatingFileHandler(logging.Handler):
    """A size-rotated log file that any number of processes may append to (see module doc)."""

    def __init__(self, path: Path | str, max_bytes: int, backup_count: int = BACKUP_COUNT) -> None:
        super().__init__()
        self.path = Path(path)
        self.max_bytes = max_bytes
        self.backup_count = backup_count
        self._fd = -1
        self._ident: tuple[int, int] | None = None
        self._open()

    def _open(self) -> None:
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        st = os.fstat(self._fd)
        self._ident = (st.st_dev, st.st_ino)

    def _reopen_if_moved(self) -> None:
        try:
            st = os.stat(self.path)
            moved = (st.st_dev, st.st_ino) != self._ident
        except FileNotFoundError:
            moved = True
        if moved:
            with contextlib.suppress(OSError):
                os.close(self._fd)
            self._open()

    def _rotate(self) -> None:
        """Shift uwsgi.log -> .1 -> .2 ...; one process does it, the others reopen."""
        lock_fd = os.open(f"{self.path}.lock", os.O_WRONLY | os.O_CREAT, 0o644)
        try:
            import fcntl

            fcntl.flock(lock_fd, fcntl.LOCK_EX)
            try:
                st = os.stat(self.path)
            except FileNotFoundError:
                st = None
            ours = st is not None and (st.st_dev, st.st_ino) == self._ident
            if ours and st is not None and st.st_size >= self.max_bytes:
                for index in range(self.backup_count - 1, 0, -1):
                    older = Path(f"{self.path}.{index}")
                    if older.exists():
                        os.replace(older, f"{self.path}.{index + 1}")
                os.replace(self.path, f"{self.path}.1")
            with contextlib.suppress(OSError):
                os.close(self._fd)
            self._open()
        finally:
            os.close(lock_fd)

    def emit(self, record: logging.LogRecord) -> None:
        try:
            data = (self.format(record) + "\n").encode("utf-8", "backslashreplace")
            with self.lock if self.lock is not None else contextlib.nullcontext():
                self._reopen_if_moved()
                os.write(self._fd, data)
                if os.fstat(self._fd).st_size >= self.max_bytes:
                    self._rotate()
        except Exception:
            self.handleError(record)

    def close(self) -> None:
        with self.lock if self.lock is not None else contextlib.nullcontext():
            if self._fd >= 0:
                with contextlib.suppress(OSError):
                    os.close(self._fd)
                self._fd = -1
        super().close()


class _RingHandler(logging.Handler):
    """Keeps the last records of this process, formatted, for the status page."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            entry = {
                "time": record.created,
                "level": record.levelname,
                "logger": record.name,
                "job": getattr(record, "job", None),
                "line": self.format(record),
            }
            with _RING_LOCK:
                _RING.append(entry)
        except Exception:
            self.handleError(record)


_RING: deque[dict[str, Any]] = deque(maxlen=500)
_RING_LOCK = threading.Lock()


def recent_records(limit: int = 200) -> list[dict[str, Any]]:
    """The newest log records of this process (development mode), oldest first."""
    with _RING_LOCK:
        records = list(_RING)
    return records[-limit:]


def _formatter(settings: Settings) -> logging.Formatter:
    if settings.log_format == "json":
        return _JsonFormatter()
    return _JobFormatter("%(asctime)s %(levelname)s [%(process)d] %(name)s%(jobtag)s: %(message)s")


def configure_logging(
    settings: Settings,
    *,
    backend_dir: Path | None = None,
    role: Literal["server", "worker"] = "server",
) -> Path | None:
    """Install handlers on the root logger; returns the log folder in production, else None.

    `role="worker"` is a training process (embedded job or RQ worker): in production all it
    says goes to rq.log; in development to stderr, which is the server's console."""
    level = logging.DEBUG if settings.debug else getattr(logging, settings.log_level.upper(), 20)
    root = logging.getLogger()
    for handler in list(root.handlers):
        if getattr(handler, "_labelbridge", False):
            root.removeHandler(handler)
            handler.close()
    root.setLevel(level)
    formatter = _formatter(settings)
    secret_filter = SecretFilter()
    handlers: list[logging.Handler] = []
    log_dir: Path | None = None
    if settings.production:
        log_dir = settings.resolved_log_dir(backend_dir)
        log_dir.mkdir(parents=True, exist_ok=True)
        training = SharedRotatingFileHandler(log_dir / "rq.log", settings.log_max_bytes)
        if role == "worker":
            handlers.append(training)  # everything a worker says is about training
        else:
            runtime = SharedRotatingFileHandler(log_dir / "uwsgi.log", settings.log_max_bytes)
            runtime.addFilter(_OnlyTraining(keep=False))
            training.addFilter(_OnlyTraining(keep=True))
            handlers += [runtime, training]
        if settings.debug:
            handlers.append(logging.StreamHandler(sys.stderr))
    else:
        handlers.append(logging.StreamHandler(sys.stderr))
        if role == "server":
            handlers.append(_RingHandler())
    for handler in handlers:
        handler.setFormatter(formatter)
        handler.addFilter(secret_filter)
        handler._labelbridge = True  # type: ignore[attr-defined]
        root.addHandler(handler)
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access", "gunicorn.error", "rq.worker"):
        logger = logging.getLogger(name)
        logger.handlers.clear()
        logger.propagate = True
    logging.getLogger("uvicorn.access").setLevel(
        logging.INFO if settings.debug else logging.WARNING
    )
    logging.getLogger("httpx").setLevel(logging.INFO if settings.debug else logging.WARNING)
    return log_dir
