"""Whose process: this machine's name and whether a pid lives (one definition for the job
runners, the metrics' worker snapshots and the model stores' writer records)."""

from __future__ import annotations

import os
import socket

__all__ = ["HOSTNAME", "pid_alive"]

#: this machine's name, as records of a process (a job's owner, a writer) name it
HOSTNAME = socket.gethostname()


def pid_alive(pid: int) -> bool:
    """A process has this pid in this PID namespace (or one we may not signal).

    pid <= 0 names a process group (kill(0), kill(-n)), never one process: taken as alive, so
    that no caller removes what such a record names. A pid of another PID namespace (another
    container sharing the hostname) is not seen from here: a caller must not take "not alive"
    for "dead" without another check (see the model stores' writer locks)."""
    if pid <= 0:
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
