"""Logging where the troubleshooting guide says to look.

Production: runtime and inference logs in `<backend>/logs/uwsgi.log`, training logs in
`<backend>/logs/rq.log`, rotated by size. Development: everything on the console, training
included. `--debug` turns on detailed logs; secrets are masked in every line.
"""

from __future__ import annotations

import json
import logging
import logging.handlers
import re
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Literal

from labelbridge.settings import Settings

__all__ = ["TRAINING_LOGGERS", "SecretFilter", "configure_logging", "mask_secrets"]

#: loggers whose lines belong in rq.log (training), not uwsgi.log
TRAINING_LOGGERS = ("labelbridge.jobs", "labelbridge.train", "rq")

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
        body = {
            "time": datetime.fromtimestamp(record.created, timezone.utc).isoformat(),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        job = getattr(record, "job", None)
        if job:
            body["job"] = job
        if record.exc_info:
            body["exc"] = self.formatException(record.exc_info)
        return json.dumps(body, ensure_ascii=False)


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
        is_training = record.name.startswith(TRAINING_LOGGERS)
        return is_training == self.keep


def _formatter(settings: Settings) -> logging.Formatter:
    if settings.log_format == "json":
        return _JsonFormatter()
    return _JobFormatter("%(asctime)s %(levelname)s %(name)s%(jobtag)s: %(message)s")


def configure_logging(
    settings: Settings,
    *,
    backend_dir: Path | None = None,
    role: Literal["server", "worker"] = "server",
) -> Path | None:
    """Install handlers on the root logger; returns the log folder in production, else None."""
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
        runtime = logging.handlers.RotatingFileHandler(
            log_dir / "uwsgi.log", maxBytes=settings.log_max_bytes, backupCount=5, encoding="utf-8"
        )
        training = logging.handlers.RotatingFileHandler(
            log_dir / "rq.log", maxBytes=settings.log_max_bytes, backupCount=5, encoding="utf-8"
        )
        if role == "worker":
            handlers.append(training)  # everything a worker says is about training
        else:
            runtime.addFilter(_OnlyTraining(keep=False))
            training.addFilter(_OnlyTraining(keep=True))
            handlers += [runtime, training]
        if settings.debug:
            handlers.append(logging.StreamHandler(sys.stderr))
    else:
        handlers.append(logging.StreamHandler(sys.stderr))
    for handler in handlers:
        handler.setFormatter(formatter)
        handler.addFilter(secret_filter)
        handler._labelbridge = True  # type: ignore[attr-defined]
        root.addHandler(handler)
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access", "gunicorn.error", "rq.worker"):
        logger = logging.getLogger(name)
        logger.handlers.clear()
        logger.propagate = True
    logging.getLogger("uvicorn.access").setLevel(logging.INFO if settings.debug else logging.WARNING)
    logging.getLogger("httpx").setLevel(logging.INFO if settings.debug else logging.WARNING)
    return log_dir
