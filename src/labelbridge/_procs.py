"""Finding a `labelbridge start` process on this machine (Linux /proc), and what its Python
lacks from the backend's requirements.txt: the doctor's answer to "missing packages"."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import NamedTuple

__all__ = ["BackendProcess", "find_backend_process", "missing_in"]


class BackendProcess(NamedTuple):
    """A `labelbridge start` process listening on a port: its interpreter and folder."""

    pid: int
    python: str | None
    backend_dir: Path | None


_VALUED_OPTIONS = {"--host", "--port", "--workers", "--model-dir", "--log-dir", "--model-class"}
_MISSING_SCRIPT = (
    "import json, sys\nfrom pathlib import Path\n"
    "from labelbridge.loader import describe_missing_requirements as missing\n"
    "print(json.dumps(missing(Path(sys.argv[1]))))\n"
)


def _listening_sockets(port: int) -> set[str]:
    found: set[str] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            rows = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for cols in (row.split() for row in rows):
            if len(cols) > 9 and cols[3] == "0A" and int(cols[1].rsplit(":", 1)[1], 16) == port:
                found.add(f"socket:[{cols[9]}]")
    return found


def _start_index(argv: list[str]) -> int | None:
    for i, arg in enumerate(argv[:-1]):
        by_module = i > 0 and argv[i - 1] == "-m" and arg in ("labelbridge", "labelbridge.cli")
        if (Path(arg).name == "labelbridge" or by_module) and argv[i + 1] == "start":
            return i + 1
    return None


def _process_target(args: list[str], cwd: Path) -> Path | None:
    target, skip = ".", False
    for arg in args:
        if skip:
            skip = False
        elif arg.startswith("-"):
            skip = arg in _VALUED_OPTIONS  # `--port 9090`; `--port=9090` is one word
        else:
            target = arg
            break
    path = cwd / target  # an absolute target replaces cwd
    return path.resolve() if path.is_dir() else None  # module:Class has no folder


def _process_python(argv: list[str], cwd: Path) -> str | None:
    """argv[0]: the interpreter (for a script, the kernel puts its shebang's Python first)."""
    exe = argv[0] if "python" in Path(argv[0]).name else ""
    exe = exe if not exe or Path(exe).is_absolute() else shutil.which(exe) or str(cwd / exe)
    return exe if exe and os.access(exe, os.X_OK) else None


def find_backend_process(port: int) -> BackendProcess | None:
    """The `labelbridge start` process listening on `port`, found through /proc (Linux)."""
    sockets = _listening_sockets(port)
    for entry in Path("/proc").iterdir() if sockets else ():
        if not entry.name.isdigit():
            continue
        try:
            raw = (entry / "cmdline").read_bytes().split(b"\0")
            argv = [a.decode(errors="replace") for a in raw if a]
            start = _start_index(argv)
            if start is None:
                continue
            links = set()
            for fd in os.listdir(entry / "fd"):
                try:
                    links.add(os.readlink(entry / "fd" / fd))
                except OSError:
                    continue
            cwd = Path(os.readlink(entry / "cwd"))
        except OSError:  # gone, or another user's process
            continue
        if links & sockets:
            target = _process_target(argv[start + 1 :], cwd)
            return BackendProcess(int(entry.name), _process_python(argv, cwd), target)
    return None


def missing_in(python: str, folder: Path) -> list[str]:
    """describe_missing_requirements run by another interpreter (argument list, no shell)."""
    command = [python, "-c", _MISSING_SCRIPT, str(folder)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{python} could not list its packages: {done.stderr.strip()[-300:]}")
    return [str(name) for name in json.loads(done.stdout.strip().splitlines()[-1])]
