"""Load generation: `wrk` with a Lua script (Debian package), or a Python fallback.

wrk is a closed loop: `conns` connections, each sends its next request as soon as the previous
answer arrived, for `seconds`. Latency percentiles are wrk's own (microsecond histogram). The
fallback does the same with asyncio streams; it is much slower than wrk, so with it a fast
server's req/s measures the load generator, and the table says so.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

LS_USER_AGENT = "heartex/1.23.2+0.gdf96d79.dirty"

_LUA_HEAD = """
wrk.method = "{method}"
wrk.headers["User-Agent"] = "{agent}"
"""
_LUA_BODY = """
local handle = assert(io.open("{path}", "rb"))
wrk.body = handle:read("*a")
handle:close()
wrk.headers["Content-Type"] = "application/json"
"""
_LUA_DONE = """
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("BENCH_RESULT %d %d %d %d %d %d %d %.1f %.1f %.1f %.1f\\n",
    summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max))
end
"""


@dataclass
class LoadResult:
    requests: int
    seconds: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    errors: int  # connect/read/write/timeout errors and non-2xx answers
    tool: str

    @property
    def rps(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0


def ensure_wrk(install: bool = True) -> str | None:
    """wrk's path; installs the Debian package when absent (as root), else None."""
    found = shutil.which("wrk")
    if found or not install or os.geteuid() != 0 or not shutil.which("apt-get"):
        return found
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install_cmd = ["apt-get", "install", "-y", "-qq", "wrk"]
    for steps in ([install_cmd], [["apt-get", "update", "-qq"], install_cmd]):
        for cmd in steps:
            with contextlib.suppress(subprocess.SubprocessError, OSError):
                subprocess.run(cmd, env=env, capture_output=True, timeout=300, check=False)
        if shutil.which("wrk"):
            break
    return shutil.which("wrk")


def wrk_version(path: str) -> str:
    try:
        out = subprocess.run([path, "-v"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return "wrk"
    match = re.search(r"wrk (\S+)", out)
    return f"wrk {match.group(1)}" if match else "wrk"


def lua_script(directory: Path, method: str, body_path: Path | None) -> Path:
    text = _LUA_HEAD.format(method=method, agent=LS_USER_AGENT)
    if body_path is not None:
        text += _LUA_BODY.format(path=str(body_path).replace("\\", "\\\\").replace('"', '\\"'))
    text += _LUA_DONE
    name = f"{method.lower()}-{body_path.stem if body_path else 'nobody'}.lua"
    path = directory / name
    path.write_text(text, encoding="utf-8")
    return path


def start_wrk(
    wrk: str, url: str, script: Path, *, conns: int, seconds: float, cpu: int | None
) -> subprocess.Popen[str]:
    argv = [
        *(["taskset", "-c", str(cpu)] if cpu is not None else []),
        wrk,
        "-t1",
        f"-c{conns}",
        f"-d{max(1, round(seconds))}s",
        "--timeout",
        "10s",
        "-s",
        str(script),
        url,
    ]
    return subprocess.Popen(
        argv,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )


def finish_wrk(proc: subprocess.Popen[str], seconds: float) -> LoadResult:
    try:
        out, _ = proc.communicate(timeout=seconds + 60)
    finally:
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, 9)
            proc.wait()
    match = re.search(r"BENCH_RESULT ((?:[\d.]+ ?){11})", out)
    if not match:
        raise RuntimeError(f"wrk gave no result:\n{out[-2000:]}")
    v = [float(x) for x in match.group(1).split()]
    return LoadResult(
        requests=int(v[0]),
        seconds=v[1] / 1e6,
        errors=int(sum(v[2:7])),
        p50_ms=v[7] / 1000,
        p90_ms=v[8] / 1000,
        p99_ms=v[9] / 1000,
        max_ms=v[10] / 1000,
        tool="wrk",
    )


def run_wrk(
    wrk: str, url: str, script: Path, *, conns: int, seconds: float, cpu: int | None
) -> LoadResult:
    return finish_wrk(start_wrk(wrk, url, script, conns=conns, seconds=seconds, cpu=cpu), seconds)


# --- the Python fallback --------------------------------------------------------------------
def _percentile(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return 0.0
    index = min(len(sorted_values) - 1, max(0, round(q / 100 * len(sorted_values)) - 1))
    return sorted_values[index]


async def _one_connection(
    host: str,
    port: int,
    request: bytes,
    deadline: float,
    latencies: list[float],
    errors: list[int],
) -> None:
    reader, writer = await asyncio.open_connection(host, port)
    try:
        while time.perf_counter() < deadline:
            began = time.perf_counter()
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            status = int(head.split(b" ", 2)[1])
            length = 0
            for line in head.split(b"\r\n"):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":", 1)[1])
            if length:
                await reader.readexactly(length)
            latencies.append(time.perf_counter() - began)
            if not 200 <= status < 300:
                errors[0] += 1
    except (OSError, asyncio.IncompleteReadError, ValueError):
        errors[0] += 1
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


def run_python(
    url: str, method: str, body: bytes | None, *, conns: int, seconds: float
) -> LoadResult:
    """The fallback load generator: keep-alive HTTP/1.1 over asyncio streams, in process."""
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    head = (
        f"{method} {parts.path or '/'} HTTP/1.1\r\nHost: {host}:{port}\r\n"
        f"User-Agent: {LS_USER_AGENT}\r\n"
    )
    if body is not None:
        head += f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
    request = (head + "\r\n").encode() + (body or b"")
    latencies: list[float] = []
    errors = [0]

    async def main() -> float:
        began = time.perf_counter()
        deadline = began + seconds
        await asyncio.gather(
            *(
                _one_connection(host, port, request, deadline, latencies, errors)
                for _ in range(conns)
            )
        )
        return time.perf_counter() - began

    elapsed = asyncio.run(main())
    ordered = sorted(latencies)
    return LoadResult(
        requests=len(latencies),
        seconds=elapsed,
        p50_ms=_percentile(ordered, 50) * 1000,
        p90_ms=_percentile(ordered, 90) * 1000,
        p99_ms=_percentile(ordered, 99) * 1000,
        max_ms=(ordered[-1] * 1000) if ordered else 0.0,
        errors=errors[0],
        tool="python",
    )
