"""Small pieces both queues share: how failures read, how settings travel to a worker."""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import traceback as tb
from datetime import datetime, timezone
from typing import Any, overload

from pydantic import SecretStr

from labelbridge._proc_util import HOSTNAME, pid_alive
from labelbridge.settings import Settings

__all__ = [
    "HOSTNAME",
    "error_line",
    "exit_reason",
    "format_traceback",
    "killed_reason",
    "pid_alive",
    "read_peak_mb",
    "rusage_peak_mb",
    "settings_from_json",
    "settings_to_json",
    "utc",
]

_MAX_ERROR = 2000


@overload
def utc(timestamp: float) -> datetime: ...
@overload
def utc(timestamp: None) -> None: ...
@overload
def utc(timestamp: float | None) -> datetime | None: ...
def utc(timestamp: float | None) -> datetime | None:
    """A Unix time as an aware UTC datetime (records store floats, JobRecord wants datetimes)."""
    return None if timestamp is None else datetime.fromtimestamp(timestamp, timezone.utc)


def error_line(exc: BaseException, *, memory_limit_mb: int | None = None) -> str:
    """One line a user reads in Label Studio: the exception class and its message."""
    message = " ".join(str(exc).split())
    text = f"{type(exc).__name__}: {message}" if message else type(exc).__name__
    if isinstance(exc, MemoryError):
        limit = f" (JOB_MEMORY_LIMIT_MB={memory_limit_mb})" if memory_limit_mb else ""
        text += f"; the training process ran out of memory{limit}"
    return text[:_MAX_ERROR]


def format_traceback(exc: BaseException) -> str:
    return "".join(tb.format_exception(type(exc), exc, exc.__traceback__))


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def killed_reason(signum: int, peak_mb: float | None) -> str:
    """Why a job died by a signal, in words (SIGKILL nearly always is the kernel's OOM killer)."""
    text = f"the training process was killed by {_signal_name(signum)}"
    if signum == signal.SIGKILL:
        text += " (often: out of memory)"
    if peak_mb is not None:
        text += f"; peak memory {peak_mb:.0f} MB"
    return text


def exit_reason(status: int, peak_mb: float | None) -> str:
    """The reason for a process that ended (waitpid status) without reporting a result."""
    if os.WIFSIGNALED(status):
        return killed_reason(os.WTERMSIG(status), peak_mb)
    code = os.WEXITSTATUS(status) if os.WIFEXITED(status) else status
    text = f"the training process exited with code {code} without reporting a result"
    if peak_mb is not None:
        text += f"; peak memory {peak_mb:.0f} MB"
    return text


def rusage_peak_mb(usage: Any) -> float | None:
    """Peak RSS from a wait4() rusage (kilobytes on Linux, bytes on macOS)."""
    maxrss = getattr(usage, "ru_maxrss", None)
    if not maxrss:
        return None
    return float(maxrss) / (1024 * 1024 if sys.platform == "darwin" else 1024)


def read_peak_mb(pid: int | str = "self") -> float | None:
    """VmHWM (peak resident memory) of a live process, from /proc (Linux only)."""
    with (
        contextlib.suppress(OSError, ValueError),
        open(f"/proc/{pid}/status", encoding="ascii") as handle,
    ):
        for line in handle:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return None


def settings_to_json(settings: Settings) -> dict[str, Any]:
    """The settings with secret values in clear, for the embedded job process: written to a
    0600 file it reads and deletes, never to a command line or to Redis."""
    data = settings.model_dump(mode="json")
    for name in type(settings).model_fields:
        value = getattr(settings, name)
        if isinstance(value, SecretStr):
            data[name] = value.get_secret_value()
    return data


def settings_from_json(data: dict[str, Any]) -> Settings:
    return Settings(**data)
