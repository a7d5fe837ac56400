"""Helpers both stores share: name checks, checksums, the staging object, whose process."""

from __future__ import annotations

import hashlib
import os
import re
import socket
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from labelbridge.errors import StoreError

__all__ = ["HOST", "META", "SAFE_NAME", "StagingFolder", "check_name", "pid_gone", "sha256_file"]

#: a version's metadata file; never listed in its own checksums
META = "_meta.json"
#: project ids and version names become folder names and S3 key parts: keep them boring
SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,127}$")
#: this machine, as writers record it next to their pid (staging leftovers are swept by pid)
HOST = socket.gethostname()


def pid_gone(pid: int) -> bool:
    """No process has this pid on this machine (a writer that was killed, say)."""
    if pid <= 0:  # kill(0) and kill(-n) address process groups: never a writer
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


def check_name(kind: str, value: str) -> str:
    """Refuse names that could escape a folder or a key prefix."""
    if not SAFE_NAME.match(value) or ".." in value:
        raise StoreError(f"{kind} {value[:80]!r} is not a valid name", field=kind)
    return value


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


@dataclass
class StagingFolder:
    """A version being written (the `Staging` protocol): fit() fills `path`."""

    path: Path
    version: str
    metrics: dict[str, Any] = field(default_factory=dict)

    def files(self) -> Iterator[Path]:
        for item in sorted(self.path.rglob("*")):
            if item.is_file() and item.name != META:
                yield item
