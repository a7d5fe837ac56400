"""Processes the benchmark starts: each in its own session, pinned to a core, always cleaned up.

Every process is started with `start_new_session=True` (its own process group) under `taskset`,
registered in a `Procs` registry, and stopped in a `finally`: SIGTERM to its group, then SIGKILL
to the group and to every descendant seen (job processes that made their own sessions too).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import httpx

PAGE_KB = os.sysconf("SC_PAGE_SIZE") // 1024
TICKS = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    """A TCP port on loopback that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _stat(pid: int) -> list[str] | None:
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # the command name may hold spaces and parentheses: split after its closing one
    return raw[raw.rfind(")") + 2 :].split()


def children_map() -> dict[int, list[int]]:
    """Parent pid -> child pids, for every process on the machine."""
    tree: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            fields = _stat(int(entry))
            if fields is not None:
                tree.setdefault(int(fields[1]), []).append(int(entry))
    return tree


def descendants(pid: int) -> list[int]:
    """pid and all its descendants, parents first."""
    tree = children_map()
    out, todo = [], [pid]
    while todo:
        current = todo.pop(0)
        out.append(current)
        todo.extend(tree.get(current, []))
    return out


def rss_mb(pid: int) -> float:
    """Resident set size of one process, MB (MiB)."""
    try:
        pages = int(Path(f"/proc/{pid}/statm").read_text().split()[1])
    except (OSError, IndexError, ValueError):
        return 0.0
    return pages * PAGE_KB / 1024


def cpu_seconds(pids: Sequence[int]) -> float:
    """User + system CPU time of these processes, seconds."""
    total = 0
    for pid in pids:
        fields = _stat(pid)
        if fields is not None:
            total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / TICKS


def core_busy_seconds(cpu: int) -> float:
    """Seconds core `cpu` spent busy (any process) since boot, from /proc/stat."""
    for line in Path("/proc/stat").read_text().splitlines():
        if line.startswith(f"cpu{cpu} "):
            ticks = [int(x) for x in line.split()[1:]]
            idle = ticks[3] + (ticks[4] if len(ticks) > 4 else 0)  # idle + iowait
            return (sum(ticks[:8]) - idle) / TICKS
    return 0.0


def cmdline(pid: int) -> str:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return ""
    return raw.replace(b"\0", b" ").decode(errors="replace").strip()


@dataclass
class Proc:
    name: str
    popen: subprocess.Popen[bytes]
    log: Path
    seen: set[int] = field(default_factory=set)
    cleanup: list[Path] = field(default_factory=list)  # folders removed once it stopped

    @property
    def pid(self) -> int:
        return self.popen.pid

    def tree(self) -> list[int]:
        pids = descendants(self.pid) if self.popen.poll() is None else []
        self.seen.update(pids)
        return pids

    def tree_rss(self) -> dict[int, float]:
        return {pid: rss_mb(pid) for pid in self.tree()}

    def alive(self) -> bool:
        return self.popen.poll() is None

    def tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self, grace: float = 10.0) -> None:
        """SIGTERM the group, wait, then SIGKILL the group and every descendant seen."""
        self.tree()
        if self.popen.poll() is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.pid, signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.popen.wait(grace)
        for pid in sorted(self.seen):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                if os.getpgid(pid) == pid:  # a leader of its own group: kill the group
                    os.killpg(pid, signal.SIGKILL)
                os.kill(pid, signal.SIGKILL)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.popen.wait(5)
        for folder in self.cleanup:
            shutil.rmtree(folder, ignore_errors=True)


class Procs:
    """The registry: `start()` processes, `close()` (in a finally) stops them all."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self.procs: list[Proc] = []

    def start(
        self,
        name: str,
        cmd: Sequence[str],
        *,
        cpu: int | None,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
    ) -> Proc:
        full_env = dict(os.environ)
        full_env.update(env or {})
        log = self.log_dir / f"{name}.log"
        argv = [*(["taskset", "-c", str(cpu)] if cpu is not None else []), *cmd]
        with log.open("ab") as handle:
            handle.write(f"$ {' '.join(argv)}\n".encode())
            handle.flush()
            popen = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=handle,
                stderr=subprocess.STDOUT,
                env=full_env,
                cwd=cwd,
                start_new_session=True,
            )
        proc = Proc(name, popen, log)
        self.procs.append(proc)
        return proc

    def stop(self, proc: Proc) -> None:
        proc.stop()
        if proc in self.procs:
            self.procs.remove(proc)

    def close(self) -> None:
        while self.procs:
            self.stop(self.procs[-1])

    @contextlib.contextmanager
    def running(
        self,
        name: str,
        cmd: Sequence[str],
        *,
        cpu: int | None,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
    ) -> Iterator[Proc]:
        proc = self.start(name, cmd, cpu=cpu, env=env, cwd=cwd)
        try:
            yield proc
        finally:
            self.stop(proc)


def wait_http(
    url: str, proc: Proc, *, timeout: float, ready: str | None = None, poll: float = 0.05
) -> float:
    """Seconds until `url` answers 200 (and, if `ready`, its JSON has model_state == ready)."""
    began = time.monotonic()
    with httpx.Client(timeout=2.0) as client:
        while time.monotonic() - began < timeout:
            if not proc.alive():
                raise RuntimeError(f"{proc.name} exited:\n{proc.tail()}")
            try:
                answer = client.get(url)
                if answer.status_code == 200 and (
                    ready is None or answer.json().get("model_state") == ready
                ):
                    return time.monotonic() - began
            except (httpx.HTTPError, ValueError):
                pass
            time.sleep(poll)
    raise RuntimeError(f"{proc.name}: {url} not ready after {timeout:.0f} s:\n{proc.tail()}")
