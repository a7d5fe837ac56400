"""labelbridge's benchmark (issue 9): one command, one table.

    .venv/bin/python bench/run.py            # full: 10 s per load point (~3-4 minutes)
    .venv/bin/python bench/run.py --quick    # 3 s per point (~2-3 minutes)
    .venv/bin/python bench/run.py --profile  # py-spy profiles of the hot paths instead

Servers run on core 0, the load generator (wrk) and the clients on core 1, everything on
loopback. Every process started is stopped in a finally (process groups, then every
descendant). See bench/README.md for what each figure means.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import copy
import gc
import json
import os
import platform
import signal
import statistics
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import httpx
from _inputs import CAPTURES, SENTIMENT, dumps, ls_requests, text_tasks, train_body
from _load import (
    LS_USER_AGENT,
    LoadResult,
    ensure_wrk,
    finish_wrk,
    lua_script,
    run_python,
    start_wrk,
    wrk_version,
)
from _proc import Proc, Procs, cmdline, core_busy_seconds, cpu_seconds, rss_mb
from _systems import (
    BENCH,
    EXTRA_ENV,
    LOAD_CPU,
    ROOT,
    SDK_ANCHOR_VERSION,
    SERVER_CPU,
    Server,
    newest_sdk_version,
    sdk_gunicorn_version,
    start_floor,
    start_labelbridge,
    start_sdk,
)

TRIVIAL = BENCH / "backends" / "trivial"
OUT = BENCH / ".out"
CONCURRENCIES = (1, 8, 64)
BATCH_TASKS = 10_000
BATCH_SIZE = 64  # labelbridge predict's default --batch-size (and predict_batches')
BATCH_CHUNK = 1_250  # tasks per way and round in the batch section
CLI_CONCURRENCY = 3  # labelbridge predict's default --concurrency
SLOW_SETUP_SECONDS = 20.0
RAMP_UP = 1.0  # seconds of /predict load before /health is measured under it


# --- measuring -------------------------------------------------------------------------------
@dataclass
class Mode:
    quick: bool
    seconds: float
    warmup: float
    rounds: int

    @property
    def name(self) -> str:
        return "quick" if self.quick else "full"


class LoadGen:
    """wrk when there is one, else the Python fallback; either pinned to the load core."""

    def __init__(self, work: Path, bodies: dict[str, bytes], allow_install: bool) -> None:
        self.wrk = ensure_wrk(install=allow_install)
        self.tool = wrk_version(self.wrk) if self.wrk else "python (asyncio) fallback"
        self.bodies = bodies
        self.paths = {}
        for name, data in bodies.items():
            path = work / f"{name}.json"
            path.write_bytes(data)
            self.paths[name] = path
        self.scripts: dict[str | None, Path] = {}
        if self.wrk:
            self.scripts[None] = lua_script(work, "GET", None)
            for name, path in self.paths.items():
                self.scripts[name] = lua_script(work, "POST", path)

    def start(
        self, url: str, body: str | None, *, conns: int, seconds: float
    ) -> Callable[[], LoadResult]:
        """Start a load run in the background; the returned function waits for its result."""
        if self.wrk:
            proc = start_wrk(
                self.wrk, url, self.scripts[body], conns=conns, seconds=seconds, cpu=LOAD_CPU
            )
            return lambda: finish_wrk(proc, seconds)
        box: list[LoadResult] = []
        method, data = ("POST", self.bodies[body]) if body else ("GET", None)

        def work() -> None:
            box.append(run_python(url, method, data, conns=conns, seconds=seconds))

        thread = threading.Thread(target=work, daemon=True)
        thread.start()

        def wait() -> LoadResult:
            thread.join()
            return box[0]

        return wait

    def run(self, url: str, body: str | None, *, conns: int, seconds: float) -> LoadResult:
        return self.start(url, body, conns=conns, seconds=seconds)()


def timed(method: str, url: str, body: bytes | None = None, timeout: float = 30) -> float:
    """Seconds for one request on a new connection (as Label Studio makes them)."""
    return timed_json(method, url, body, timeout)[0]


def timed_json(
    method: str, url: str, body: bytes | None = None, timeout: float = 30
) -> tuple[float, Any]:
    """timed(), and the answer's JSON. This process's garbage collector is off while the
    request is timed: measured under load (wrk beside it on the client core), a collection in
    the middle of one request added 20-60 ms to it (bench/NOTES.md item 32), time the server
    had nothing to do with."""
    headers = {"User-Agent": LS_USER_AGENT}
    if body is not None:
        headers["Content-Type"] = "application/json"
    collecting = gc.isenabled()
    with httpx.Client(timeout=timeout) as client:
        gc.disable()
        try:
            began = time.perf_counter()
            answer = client.request(method, url, content=body, headers=headers)
            elapsed = time.perf_counter() - began
        finally:
            if collecting:
                gc.enable()
    if answer.status_code >= 300:
        raise RuntimeError(f"{method} {url} answered {answer.status_code}: {answer.text[:300]}")
    return elapsed, answer.json()


def post_json(url: str, body: bytes, timeout: float = 60) -> Any:
    headers = {"User-Agent": LS_USER_AGENT, "Content-Type": "application/json"}
    answer = httpx.post(url, content=body, headers=headers, timeout=timeout)
    if answer.status_code >= 300:
        raise RuntimeError(f"POST {url} answered {answer.status_code}: {answer.text[:300]}")
    return answer.json()


def roles(proc: Proc) -> dict[str, list[int]]:
    """The server's processes by role: the one started, workers, helpers, training jobs."""
    out: dict[str, list[int]] = {"root": [], "worker": [], "helper": [], "job": []}
    tree = proc.tree()
    for pid in tree:
        line = cmdline(pid)
        if pid == proc.pid:
            out["root"].append(pid)
        elif "resource_tracker" in line:
            out["helper"].append(pid)
        elif "labelbridge.jobs" in line or "_child" in line:
            out["job"].append(pid)
        else:
            out["worker"].append(pid)
    if not out["worker"]:  # a single process serves
        out["worker"] = out["root"]
    return out


@dataclass
class Memory:
    total_mb: float
    worker_mb: float
    processes: int

    @classmethod
    def of(cls, proc: Proc) -> Memory:
        parts = roles(proc)
        serving = parts["root"] + parts["worker"] + parts["helper"]
        total = sum(rss_mb(pid) for pid in set(serving))
        worker = max((rss_mb(pid) for pid in parts["worker"]), default=0.0)
        return cls(round(total, 1), round(worker, 1), len(set(serving)))


@dataclass
class Point:
    conns: int
    load: LoadResult
    cpu: float  # server CPU used, in cores
    others: float  # the server core's time taken by other processes, in cores

    @property
    def per_cpu_second(self) -> float:
        """Requests per second of server CPU: its capacity, whatever else runs."""
        return self.load.rps / self.cpu if self.cpu else 0.0


@dataclass
class Protocol:
    system: str
    command: str
    points: dict[int, Point] = field(default_factory=dict)
    idle: Memory | None = None
    after_load: Memory | None = None
    big_predict_s: float | None = None
    answer: Any = None
    startup_s: float = 0.0
    #: req/s of each round, by concurrency (ratios between systems are taken per round)
    rounds: dict[int, list[float]] = field(default_factory=dict)


def prepare_protocol(server: Server, lg: LoadGen, mode: Mode, bodies: dict[str, bytes]) -> Protocol:
    """/setup, one checked /predict, idle memory, a warm-up at c=64."""
    base = server.url
    post_json(f"{base}/setup", bodies["setup"])
    answer = post_json(f"{base}/predict", bodies["predict"])
    results = answer.get("results") if isinstance(answer, dict) else None
    if not isinstance(results, list) or len(results) != 1:
        raise RuntimeError(f"{server.name}: /predict answered {answer!r}, not one result")
    result = Protocol(server.name, server.command, answer=answer, startup_s=server.startup_s)
    time.sleep(0.5)
    result.idle = Memory.of(server.proc)
    lg.run(f"{base}/predict", "predict", conns=64, seconds=mode.warmup)
    return result


def measure_point(server: Server, lg: LoadGen, mode: Mode, conns: int) -> Point:
    pids = server.proc.tree()
    busy0, cpu0, t0 = core_busy_seconds(SERVER_CPU), cpu_seconds(pids), time.monotonic()
    load = lg.run(f"{server.url}/predict", "predict", conns=conns, seconds=mode.seconds)
    wall = time.monotonic() - t0
    used = cpu_seconds(server.proc.tree()) - cpu0
    others = max(0.0, core_busy_seconds(SERVER_CPU) - busy0 - used) / wall
    return Point(conns, load, used / wall, others)


def measure_protocols(
    servers: list[Server], lg: LoadGen, mode: Mode, bodies: dict[str, bytes]
) -> list[Protocol]:
    """Every server started at once (idle ones cost nothing), then rounds: in each round every
    concurrency, every server back to back. This machine's speed drifts by up to 2x within a
    minute, so figures of one system measured minutes apart from another's would compare the
    drift; ratios are taken within a round (`Protocol.rounds`), and each point keeps its best
    round."""
    results = [prepare_protocol(server, lg, mode, bodies) for server in servers]
    for round_no in range(mode.rounds):
        for conns in CONCURRENCIES:
            for server, result in zip(servers, results, strict=True):
                print(f"bench:   round {round_no + 1}, c={conns}, {server.name}", flush=True)
                point = measure_point(server, lg, mode, conns)
                result.rounds.setdefault(conns, []).append(point.load.rps)
                best = result.points.get(conns)
                if best is None or point.load.rps > best.load.rps:
                    result.points[conns] = point
    for server, result in zip(servers, results, strict=True):
        result.after_load = Memory.of(server.proc)
        times = [
            timed("POST", f"{server.url}/predict", bodies["predict_10k"], timeout=120)
            for _ in range(3)
        ]
        result.big_predict_s = statistics.median(times)
    return results


# --- batch throughput ------------------------------------------------------------------------
@dataclass
class Batch:
    inproc_batch_tps: float = 0.0  # the model's own predict(), batches of BATCH_SIZE (median)
    inproc_batch_cpu_tps: float = 0.0  # the same, tasks per CPU-second
    inproc_one_call_tps: float = 0.0
    #: the in-process chunk run just before each way's chunk, per round
    inproc_runs: list[dict[str, float]] = field(default_factory=list)
    #: per way: tasks/s of each round's chunk
    rates: dict[str, list[float]] = field(default_factory=dict)
    #: per way: each round's chunk tasks/s divided by the in-process chunk just before it
    shares: dict[str, list[float]] = field(default_factory=dict)
    #: per way: tasks per second of server CPU, over all rounds
    cpu_tps: dict[str, float] = field(default_factory=dict)
    rounds: int = 0
    chunk: int = 0
    bulk_concurrency: int = 0  # predict_batches' default requests in flight
    memory_ready: Memory | None = None
    memory_after: Memory | None = None

    def rate(self, way: str) -> float:
        return statistics.median(self.rates[way]) if self.rates.get(way) else 0.0

    def share(self, way: str) -> float:
        return statistics.median(self.shares[way]) if self.shares.get(way) else 0.0


def _batches(items: list[Any], size: int) -> Iterator[list[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def inprocess_rates(count: int) -> dict[str, float]:
    """The sentiment model's predict() in its own process, pinned to the server's core."""
    import subprocess

    out = subprocess.run(
        [
            "taskset",
            "-c",
            str(SERVER_CPU),
            sys.executable,
            str(BENCH / "_inproc.py"),
            "--tasks",
            str(count),
            "--batch-size",
            str(BATCH_SIZE),
        ],
        capture_output=True,
        text=True,
        timeout=600,
        check=True,
    ).stdout
    return dict(json.loads(out.strip().splitlines()[-1]))


def client_sync(url: str, tasks: list[dict[str, Any]], project: str, config_text: str) -> float:
    """tasks/s through MLBackendClient.predict, one batch after the other."""
    from labelbridge.client import MLBackendClient

    options: dict[str, Any] = {"project": project, "label_config": config_text}
    with MLBackendClient(url, user_agent=LS_USER_AGENT) as client:
        client.health()
        client.setup(project, config_text)
        client.predict(tasks[:BATCH_SIZE], **options)  # warm
        began = time.perf_counter()
        done = 0
        for batch in _batches(tasks, BATCH_SIZE):
            done += len(client.predict(batch, **options).results)
        rate = done / (time.perf_counter() - began)
    if done != len(tasks):
        raise RuntimeError(f"the connector got {done} results for {len(tasks)} tasks")
    return rate


def client_cli(url: str, tasks: list[dict[str, Any]], project: str, config_text: str) -> float:
    """tasks/s the way `labelbridge predict` sends them: AsyncMLBackendClient.predict_exact,
    its default batch size, CLI_CONCURRENCY batches in flight."""
    from labelbridge.client import AsyncMLBackendClient

    options: dict[str, Any] = {"project": project, "label_config": config_text}

    async def main() -> float:
        queue = list(_batches(tasks, BATCH_SIZE))
        got = 0
        async with AsyncMLBackendClient(url, user_agent=LS_USER_AGENT) as client:
            await client.predict_exact(tasks[:BATCH_SIZE], **options)  # warm

            async def worker() -> None:
                nonlocal got
                while queue:
                    batch = queue.pop(0)
                    answer = await client.predict_exact(batch, **options)
                    got += len(answer.results)  # not `got += await ...`: that reads got first

            began = time.perf_counter()
            await asyncio.gather(*(worker() for _ in range(CLI_CONCURRENCY)))
            rate = got / (time.perf_counter() - began)
        if got != len(tasks):
            raise RuntimeError(f"the connector got {got} results for {len(tasks)} tasks")
        return rate

    return asyncio.run(main())


def client_bulk(url: str, tasks: list[dict[str, Any]], project: str, config_text: str) -> float:
    """tasks/s through MLBackendClient.predict_batches, its defaults but the batch size: the
    connector's bulk API, its default number of requests in flight (a thread pool)."""
    from labelbridge.client import MLBackendClient

    options: dict[str, Any] = {"project": project, "label_config": config_text}
    with MLBackendClient(url, user_agent=LS_USER_AGENT) as client:
        client.predict(tasks[:BATCH_SIZE], **options)  # warm
        began = time.perf_counter()
        done = 0
        for _, answer in client.predict_batches(tasks, batch_size=BATCH_SIZE, **options):
            done += len(answer.results)
        rate = done / (time.perf_counter() - began)
    if done != len(tasks):
        raise RuntimeError(f"the connector got {done} results for {len(tasks)} tasks")
    return rate


def client_abulk(url: str, tasks: list[dict[str, Any]], project: str, config_text: str) -> float:
    """tasks/s through AsyncMLBackendClient.predict_batches, its defaults but the batch size."""
    from labelbridge.client import AsyncMLBackendClient

    options: dict[str, Any] = {"project": project, "label_config": config_text}

    async def main() -> float:
        async with AsyncMLBackendClient(url, user_agent=LS_USER_AGENT) as client:
            await client.predict(tasks[:BATCH_SIZE], **options)  # warm
            began = time.perf_counter()
            done = 0
            async for _, answer in client.predict_batches(tasks, batch_size=BATCH_SIZE, **options):
                done += len(answer.results)
            rate = done / (time.perf_counter() - began)
        if done != len(tasks):
            raise RuntimeError(f"the connector got {done} results for {len(tasks)} tasks")
        return rate

    return asyncio.run(main())


class InProcess:
    """bench/_inproc.py --serve, pinned to the server's core: the model's rate on a chunk."""

    def __init__(self, count: int) -> None:
        import subprocess

        command = ["taskset", "-c", str(SERVER_CPU), sys.executable, str(BENCH / "_inproc.py")]
        command += ["--serve", "--tasks", str(count), "--batch-size", str(BATCH_SIZE)]
        self.proc = subprocess.Popen(
            command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1
        )
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.stdin, self.stdout = self.proc.stdin, self.proc.stdout
        json.loads(self.stdout.readline())  # ready

    def run(self, start: int, count: int) -> dict[str, float]:
        self.stdin.write(f"{start} {count}\n")
        return dict(json.loads(self.stdout.readline()))

    def close(self) -> None:
        self.stdin.close()
        self.proc.wait(timeout=30)


#: the connector's ways, in the order of the table
BATCH_WAYS = ("sync", "bulk", "abulk", "cli")


def measure_batch(procs: Procs, requests: dict[str, Any], rounds: int) -> Batch:
    """Rounds; in each, every way sends a chunk of the tasks right after the model ran the same
    chunk in process. This machine's speed jumps between levels up to 2x apart every few
    seconds (bench/NOTES.md, "Noise"), so a ratio is taken between two runs a fraction of a
    second apart, and the median over rounds is the figure."""
    from labelbridge.client import DEFAULT_CONCURRENCY

    config_text = requests["setup"]["schema"]
    project = requests["setup"]["project"]
    tasks = text_tasks(requests["predict_batch"]["tasks"][0], BATCH_TASKS)
    chunk = BATCH_CHUNK
    result = Batch(bulk_concurrency=DEFAULT_CONCURRENCY, rounds=rounds, chunk=chunk)
    result.inproc_one_call_tps = inprocess_rates(BATCH_TASKS)["one_call_tps"]
    calls = {"sync": client_sync, "bulk": client_bulk, "abulk": client_abulk, "cli": client_cli}
    server = start_labelbridge(procs, SENTIMENT, name="labelbridge-sentiment")
    inproc = InProcess(BATCH_TASKS)
    used = dict.fromkeys(BATCH_WAYS, 0.0)
    try:
        post_json(f"{server.url}/setup", dumps(requests["setup"]))
        time.sleep(0.5)
        result.memory_ready = Memory.of(server.proc)
        client_abulk(server.url, tasks[: BATCH_SIZE * 8], project, config_text)  # warm
        for round_no in range(rounds):
            start = (round_no * chunk) % (BATCH_TASKS - chunk + 1)
            part = tasks[start : start + chunk]
            for way in BATCH_WAYS:
                baseline = inproc.run(start, chunk)
                result.inproc_runs.append(baseline)
                cpu0 = cpu_seconds(server.proc.tree())
                rate = calls[way](server.url, part, project, config_text)
                used[way] += cpu_seconds(server.proc.tree()) - cpu0
                result.rates.setdefault(way, []).append(rate)
                result.shares.setdefault(way, []).append(rate / baseline["batch_tps"])
        result.memory_after = Memory.of(server.proc)
    finally:
        inproc.close()
        procs.stop(server.proc)
    runs = result.inproc_runs
    result.inproc_batch_tps = statistics.median(r["batch_tps"] for r in runs)
    result.inproc_batch_cpu_tps = statistics.median(r["batch_cpu_tps"] for r in runs)
    for way in BATCH_WAYS:
        result.cpu_tps[way] = rounds * chunk / used[way] if used[way] else 0.0
    return result


# --- under pressure --------------------------------------------------------------------------
@dataclass
class Pressure:
    system: str
    train_idle_ms: list[float] = field(default_factory=list)
    train_loaded_ms: list[float] = field(default_factory=list)
    webhook_ms: list[float] = field(default_factory=list)
    health: LoadResult | None = None
    predict: LoadResult | None = None
    job_state: str = ""
    setup_slow_ms: list[float] = field(default_factory=list)
    health_while_loading_ms: list[float] = field(default_factory=list)
    model_state_seen: str = ""
    first_health_s: float = 0.0
    notes: list[str] = field(default_factory=list)


def _job_state(url: str, job: str) -> str:
    try:
        answer = httpx.post(f"{url}/job_status", json={"job": job}, timeout=5).json()
    except (httpx.HTTPError, ValueError):
        return "unknown"
    return str(answer.get("state") or answer.get("job_status") or answer.get("status") or "?")


def _under_load(
    server: Server, lg: LoadGen, seconds: float, during: Callable[[], None]
) -> tuple[LoadResult, LoadResult]:
    """/predict at concurrency 64 and, from RAMP_UP seconds later (once its 64 connections
    are open and serving: the steady load, not the burst of 64 connects), /health at
    concurrency 1 until the end; `during` runs meanwhile in this thread."""
    predict = lg.start(f"{server.url}/predict", "predict", conns=64, seconds=seconds + RAMP_UP)
    time.sleep(RAMP_UP)
    health = lg.start(f"{server.url}/health", None, conns=1, seconds=seconds)
    time.sleep(1.0)
    during()
    return predict(), health()


def measure_pressure_labelbridge(
    procs: Procs, lg: LoadGen, mode: Mode, requests: dict[str, Any]
) -> Pressure:
    out = Pressure("labelbridge")
    seconds = mode.seconds
    env = {"BENCH_FIT_SECONDS": str(seconds + 20)}
    server = start_labelbridge(procs, TRIVIAL, name="labelbridge-pressure", env=env)
    try:
        url = server.url
        post_json(f"{url}/setup", dumps(requests["setup"]))
        webhook = dumps(requests["start_training"])
        for _ in range(3):
            out.webhook_ms.append(timed("POST", f"{url}/webhook", webhook) * 1000)
        # /train last: a submit supersedes the project's *queued* job, never a running one,
        # so the job of the last /train is the one that trains during the load
        body = dumps(train_body(requests))
        job = ""
        for _ in range(5):
            elapsed, answer = timed_json("POST", f"{url}/train", body)
            out.train_idle_ms.append(elapsed * 1000)
            job = str(answer.get("job"))
        deadline = time.monotonic() + 20
        while _job_state(url, job) not in ("running", "started") and time.monotonic() < deadline:
            time.sleep(0.2)
        out.notes.append(f"training job {_job_state(url, job)} when the load started")

        def trains() -> None:
            for _ in range(5):
                out.train_loaded_ms.append(timed("POST", f"{url}/train", body) * 1000)
                time.sleep(max(0.1, (seconds - 2) / 6))

        out.predict, out.health = _under_load(server, lg, seconds, trains)
        out.job_state = _job_state(url, job)
        out.notes.append(f"and {out.job_state} after it")
    finally:
        procs.stop(server.proc)
    return out


def measure_slow_setup_labelbridge(procs: Procs, requests: dict[str, Any]) -> Pressure:
    out = Pressure("labelbridge")
    env = {"BENCH_SETUP_SECONDS": str(SLOW_SETUP_SECONDS)}
    server = start_labelbridge(
        procs, TRIVIAL, name="labelbridge-slow-setup", env=env, wait_ready=False
    )
    try:
        out.first_health_s = server.startup_s
        body = dumps(requests["setup"])
        for _ in range(5):
            out.setup_slow_ms.append(timed("POST", f"{server.url}/setup", body, timeout=30) * 1000)
            out.health_while_loading_ms.append(timed("GET", f"{server.url}/health") * 1000)
        out.model_state_seen = str(httpx.get(f"{server.url}/health").json().get("model_state"))
    finally:
        procs.stop(server.proc)
    return out


def measure_pressure_sdk(
    procs: Procs, lg: LoadGen, mode: Mode, requests: dict[str, Any], version: str, log: list[str]
) -> Pressure:
    """The SDK under the same pressure: a training job (its ANNOTATION_CREATED webhook, which
    runs fit() in a forked process) and the same /predict load; then its /setup with a model
    whose load (its __init__) takes 20 s."""
    out = Pressure(f"label-studio-ml {version}")
    seconds = mode.seconds
    env = {"BENCH_FIT_SECONDS": str(seconds + 20)}
    server = start_sdk(procs, version, log, name=f"sdk-{version}-pressure", env=env)
    try:
        url = server.url
        post_json(f"{url}/setup", dumps(requests["setup"]))
        event = dumps(requests["annotation_created"])
        out.train_idle_ms.append(timed("POST", f"{url}/webhook", event) * 1000)
        out.webhook_ms.append(timed("POST", f"{url}/webhook", dumps(requests["start_training"])))
        out.webhook_ms = [x * 1000 for x in out.webhook_ms]
        time.sleep(0.5)

        def trains() -> None:
            out.train_loaded_ms.append(timed("POST", f"{url}/webhook", event) * 1000)

        out.predict, out.health = _under_load(server, lg, seconds, trains)
    finally:
        procs.stop(server.proc)
    env = {"BENCH_SETUP_SECONDS": str(SLOW_SETUP_SECONDS)}
    server = start_sdk(procs, version, log, name=f"sdk-{version}-slow-setup", env=env)
    try:
        out.first_health_s = server.startup_s
        limit = SLOW_SETUP_SECONDS + 15
        setup = dumps(requests["setup"])
        holder: list[float] = []

        def call_setup() -> None:
            try:
                holder.append(timed("POST", f"{server.url}/setup", setup, timeout=limit) * 1000)
            except (httpx.HTTPError, RuntimeError) as exc:
                out.notes.append(f"the SDK's /setup failed: {exc}")

        thread = threading.Thread(target=call_setup, daemon=True)
        thread.start()
        time.sleep(1.0)
        with contextlib.suppress(httpx.HTTPError):
            out.health_while_loading_ms.append(timed("GET", f"{server.url}/health") * 1000)
        thread.join(limit + 5)
        out.setup_slow_ms = holder
    finally:
        procs.stop(server.proc)
    return out


# --- the report ------------------------------------------------------------------------------
def fmt(value: float | None, digits: int = 0) -> str:
    if value is None:
        return "—"
    return f"{value:,.{digits}f}"


def ratio(ours: float | None, base: float | None) -> str:
    if not ours or not base:
        return "—"
    return f"{ours / base:.2f}x"


@dataclass
class Target:
    name: str
    measured: str
    met: bool | None  # None: not measured


@dataclass
class Report:
    mode: Mode
    tool: str
    started: str
    load_before: str
    sdk_versions: list[str]
    sdk_notes: list[str]
    protocol: list[Protocol] = field(default_factory=list)
    batch: Batch | None = None
    pressure: list[Pressure] = field(default_factory=list)
    slow_setup: Pressure | None = None
    load_after: str = ""
    targets: list[Target] = field(default_factory=list)
    elapsed_s: float = 0.0

    def find(self, prefix: str) -> Protocol | None:
        return next((p for p in self.protocol if p.system.startswith(prefix)), None)


def _rps(p: Protocol | None, conns: int) -> float | None:
    return p.points[conns].load.rps if p and conns in p.points else None


def round_ratio(a: Protocol | None, b: Protocol | None, conns: int) -> float | None:
    """Median over rounds of a's req/s / b's req/s in the same round."""
    if not a or not b or not a.rounds.get(conns) or not b.rounds.get(conns):
        return None
    pairs = zip(a.rounds[conns], b.rounds[conns], strict=True)
    return statistics.median(x / y for x, y in pairs if y)


def evaluate(report: Report) -> list[Target]:
    ours = report.find("labelbridge")
    sdk = report.find(f"label-studio-ml {SDK_ANCHOR_VERSION}") or report.find("label-studio-ml")
    floor = report.find("floor")
    targets: list[Target] = []
    ours64, sdk64, floor64 = _rps(ours, 64), _rps(sdk, 64), _rps(floor, 64)
    vs_sdk, floor_vs = round_ratio(ours, sdk, 64), round_ratio(floor, ours, 64)
    rounds = f"median of {report.mode.rounds} rounds' ratios"
    if ours64 and sdk64 and vs_sdk:
        targets.append(
            Target(
                "/predict req/s at c=64 ≥ 3x the public SDK's",
                f"{vs_sdk:.2f}x ({rounds}; best rounds {fmt(ours64)} vs {fmt(sdk64)})",
                vs_sdk >= 3,
            )
        )
    if ours64 and floor64 and floor_vs:
        targets.append(
            Target(
                "/predict req/s at c=64 within 1.5x of the floor",
                f"floor is {floor_vs:.2f}x ours ({rounds}; best rounds {fmt(floor64)} vs "
                f"{fmt(ours64)})",
                floor_vs <= 1.5,
            )
        )
    if ours and 8 in ours.points:
        p99 = ours.points[8].load.p99_ms
        targets.append(Target("/predict p99 at c=8 < 20 ms", f"{p99:.2f} ms", p99 < 20))
    if report.batch and report.batch.inproc_batch_tps:
        b = report.batch
        share = b.share("abulk")
        spread = statistics.quantiles(b.shares["abulk"]) if len(b.shares["abulk"]) > 1 else []
        quartiles = f", quartiles {spread[0]:.0%}-{spread[2]:.0%}" if spread else ""
        targets.append(
            Target(
                "batch through the connector (AsyncMLBackendClient.predict_batches, "
                f"{b.bulk_concurrency} in flight: what `labelbridge predict` runs) "
                "≥ 70% of in-process predict()",
                f"{share:.0%}: median over {b.rounds} rounds of a chunk's rate against the "
                f"in-process run just before it{quartiles}",
                share >= 0.7,
            )
        )
    lb_pressure = next((p for p in report.pressure if p.system == "labelbridge"), None)
    if lb_pressure and lb_pressure.health:
        p99 = lb_pressure.health.p99_ms
        targets.append(
            Target(
                "/health p99 < 50 ms (training job + /predict at c=64)",
                f"{p99:.2f} ms",
                p99 < 50 and lb_pressure.health.errors == 0,
            )
        )
    if report.slow_setup and report.slow_setup.setup_slow_ms:
        worst = max(report.slow_setup.setup_slow_ms)
        targets.append(
            Target(
                f"/setup < 100 ms while setup() takes {SLOW_SETUP_SECONDS:.0f} s",
                f"max {worst:.1f} ms",
                worst < 100,
            )
        )
    if lb_pressure and lb_pressure.train_idle_ms:
        worst = max(lb_pressure.train_idle_ms + lb_pressure.train_loaded_ms)
        targets.append(
            Target("/train answer < 50 ms (idle and under load)", f"max {worst:.1f} ms", worst < 50)
        )
    if ours and ours.idle:
        targets.append(
            Target(
                "idle RSS < 120 MB (all server processes)",
                f"{ours.idle.total_mb:.0f} MB ({ours.idle.processes} processes; "
                f"worker {ours.idle.worker_mb:.0f} MB)",
                ours.idle.total_mb < 120,
            )
        )
    return targets


def protocol_lines(report: Report, sdk: Protocol | None, floor: Protocol | None) -> list[str]:
    lines = [
        "",
        "### Protocol overhead: POST /predict, one task as Label Studio 1.23.2 sends it",
        "",
        f"Each row: the best of {report.mode.rounds} rounds; the ratios are medians of the "
        "rounds' own ratios (each round measures every system back to back).",
        "",
        "| system | conc. | req/s (best round) | p50 ms | p99 ms | server CPU | others on its "
        "core | req per CPU-s | req/s vs SDK | req/s vs floor | req/s of each round |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for proto in report.protocol:
        for conns, point in proto.points.items():
            load = point.load
            errors = f" ({load.errors} errors)" if load.errors else ""
            vs_sdk, vs_floor = round_ratio(proto, sdk, conns), round_ratio(proto, floor, conns)
            each = ", ".join(fmt(r) for r in proto.rounds.get(conns, []))
            lines.append(
                f"| {proto.system} | {conns} | {fmt(load.rps)}{errors} | {load.p50_ms:.2f} | "
                f"{load.p99_ms:.2f} | {point.cpu:.0%} | {point.others:.0%} | "
                f"{fmt(point.per_cpu_second)} | {f'{vs_sdk:.2f}x' if vs_sdk else '—'} | "
                f"{f'{vs_floor:.2f}x' if vs_floor else '—'} | {each} |"
            )
    lines += [
        "",
        "| one /predict of 10,000 tasks (trivial model) | seconds | vs SDK |",
        "|---|---:|---:|",
    ]
    for proto in report.protocol:
        note = " (answers one fixed result)" if proto.system == "floor" else ""
        lines.append(
            f"| {proto.system}{note} | {fmt(proto.big_predict_s, 3)} | "
            f"{ratio(proto.big_predict_s, sdk.big_predict_s if sdk else None)} |"
        )
    return lines


def render(report: Report) -> str:
    m = report.mode
    lines = [
        f"## labelbridge benchmark ({m.name}: {m.seconds:g} s per point, {m.rounds} rounds "
        f"interleaving the systems, best round shown, ratios per round) — {report.started}",
        "",
        f"{os.cpu_count()} cores ({platform.processor() or platform.machine()}), servers pinned "
        f"to cpu 0, load generator and clients to cpu 1, loopback; load generator: "
        f"{report.tool}; load average before/after: {report.load_before} / {report.load_after}; "
        f"{report.elapsed_s / 60:.1f} min.",
        "",
    ]
    lines += [f"- {p.system}: `{p.command}`" for p in report.protocol]
    lines += [f"- {note}" for note in report.sdk_notes]
    sdk = report.find(f"label-studio-ml {SDK_ANCHOR_VERSION}") or report.find("label-studio-ml")
    floor = report.find("floor")
    if report.protocol:
        lines += protocol_lines(report, sdk, floor)
    if report.batch:
        b = report.batch
        lines += [
            "",
            f"### Batch throughput: text tasks through examples/sentiment, batches of {BATCH_SIZE}",
            "",
            f"{b.rounds} rounds; in each, every way sends {b.chunk:,} tasks right after the model "
            "ran the same tasks in process (this machine's speed jumps every few seconds, so "
            "each ratio is taken between two runs a fraction of a second apart); figures are "
            f"medians over the rounds ({b.rounds * b.chunk:,} tasks per way).",
            "",
            "| path | tasks/s | vs in-process (median of rounds) | tasks per server CPU-s | "
            "vs in-process |",
            "|---|---:|---:|---:|---:|",
            f"| in process: model.predict(), batches of {BATCH_SIZE}, on the server's core "
            f"(the model's limit) | {fmt(b.inproc_batch_tps)} | 1.00x | "
            f"{fmt(b.inproc_batch_cpu_tps)} | 1.00x |",
            f"| in process: model.predict(), all {BATCH_TASKS:,} in one call (one run) | "
            f"{fmt(b.inproc_one_call_tps)} | {ratio(b.inproc_one_call_tps, b.inproc_batch_tps)} "
            "| — | — |",
        ]
        names = {
            "sync": f"connector: MLBackendClient.predict, batches of {BATCH_SIZE}, one at a time",
            "bulk": f"connector: MLBackendClient.predict_batches ({b.bulk_concurrency} in "
            "flight, threads; the bulk API)",
            "abulk": f"connector: AsyncMLBackendClient.predict_batches ({b.bulk_concurrency} "
            "in flight)",
            "cli": f"connector as `labelbridge predict` sends (async, {CLI_CONCURRENCY} in flight)",
        }
        for way in BATCH_WAYS:
            if way in b.rates:
                lines.append(
                    f"| {names[way]} | {fmt(b.rate(way))} | {b.share(way):.2f}x | "
                    f"{fmt(b.cpu_tps[way])} | "
                    f"{ratio(b.cpu_tps[way], b.inproc_batch_cpu_tps)} |"
                )
    lb = next((p for p in report.pressure if p.system == "labelbridge"), None)
    base = next((p for p in report.pressure if p.system != "labelbridge"), None)
    if lb:
        base_name = base.system if base else "SDK"
        lines += [
            "",
            "### Under pressure: a training job running and /predict at concurrency 64",
            "",
            f"| figure | labelbridge | {base_name} | ratio |",
            "|---|---:|---:|---:|",
        ]

        def row(label: str, ours_v: float | None, base_v: float | None, digits: int = 1) -> None:
            lines.append(
                f"| {label} | {fmt(ours_v, digits)} | {fmt(base_v, digits)} | "
                f"{ratio(ours_v, base_v)} |"
            )

        row(
            "/health p99 ms",
            lb.health.p99_ms if lb.health else None,
            base.health.p99_ms if base and base.health else None,
            2,
        )
        row(
            "/health max ms",
            lb.health.max_ms if lb.health else None,
            base.health.max_ms if base and base.health else None,
        )
        row(
            "/predict req/s meanwhile",
            lb.predict.rps if lb.predict else None,
            base.predict.rps if base and base.predict else None,
            0,
        )
        row(
            "/predict p99 ms meanwhile",
            lb.predict.p99_ms if lb.predict else None,
            base.predict.p99_ms if base and base.predict else None,
        )
        row(
            "start training, idle: answer ms (max)",
            max(lb.train_idle_ms, default=None),
            max(base.train_idle_ms, default=None) if base else None,
        )
        row(
            "start training, under load: answer ms (max)",
            max(lb.train_loaded_ms, default=None),
            max(base.train_loaded_ms, default=None) if base else None,
        )
        row(
            "/webhook START_TRAINING answer ms (max)",
            max(lb.webhook_ms, default=None),
            max(base.webhook_ms, default=None) if base else None,
        )
        slow = report.slow_setup
        if slow:
            row(
                f"/setup ms, model setup() of {SLOW_SETUP_SECONDS:.0f} s (max)",
                max(slow.setup_slow_ms, default=None),
                max(base.setup_slow_ms, default=None) if base else None,
            )
            row(
                "/health ms while the model loads (max)",
                max(slow.health_while_loading_ms, default=None),
                max(base.health_while_loading_ms, default=None) if base else None,
            )
        lines.append("")
        lines.append(
            "Start training: labelbridge `POST /train` (legacy body, the job runs fit() in a "
            "worker process); the SDK: its ANNOTATION_CREATED webhook (1.0.9 forks fit() from "
            "the request). " + "; ".join(lb.notes + (base.notes if base else []))
        )
    has_memory = any(p.idle for p in report.protocol) or (
        report.batch is not None and report.batch.memory_ready is not None
    )
    lines += (
        []
        if not has_memory
        else [
            "",
            "### Memory (RSS, MB)",
            "",
            "| server | all processes | largest worker | processes | vs SDK |",
            "|---|---:|---:|---:|---:|",
        ]
    )
    for proto in report.protocol:
        if proto.idle:
            lines.append(
                f"| {proto.system}, idle (trivial model) | {proto.idle.total_mb:.0f} | "
                f"{proto.idle.worker_mb:.0f} | {proto.idle.processes} | "
                f"{ratio(proto.idle.total_mb, sdk.idle.total_mb if sdk and sdk.idle else None)} |"
            )
    if report.batch and report.batch.memory_ready and report.batch.memory_after:
        ready, after = report.batch.memory_ready, report.batch.memory_after
        lines.append(
            f"| labelbridge, examples/sentiment loaded | {ready.total_mb:.0f} | "
            f"{ready.worker_mb:.0f} | {ready.processes} | — |"
        )
        lines.append(
            f"| labelbridge, examples/sentiment after {BATCH_TASKS:,} tasks | "
            f"{after.total_mb:.0f} | {after.worker_mb:.0f} | {after.processes} | — |"
        )
    lines += ["", "### Targets", "", "| target | measured | met |", "|---|---|---|"]
    for target in report.targets:
        verdict = "not measured" if target.met is None else ("met" if target.met else "NOT MET")
        lines.append(f"| {target.name} | {target.measured} | {verdict} |")
    return "\n".join(lines) + "\n"


def _jsonable(value: Any) -> Any:
    if hasattr(value, "__dataclass_fields__"):
        out = {k: _jsonable(getattr(value, k)) for k in value.__dataclass_fields__}
        if isinstance(value, LoadResult):
            out["rps"] = value.rps
        return out
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value


# --- profiling -------------------------------------------------------------------------------
def py_spy() -> Path:
    """py-spy from PyPI in bench/.venvs/tools (made once)."""
    from _systems import VENVS, _run

    venv = VENVS / "tools"
    exe = venv / "bin" / "py-spy"
    if not exe.exists():
        base = Path(getattr(sys, "_base_executable", sys.executable))
        _run([str(base), "-m", "venv", str(venv)])
        _run([str(venv / "bin" / "pip"), "install", "-q", "py-spy"])
    return exe


def summarize_collapsed(path: Path, top: int = 25) -> str:
    """Self and inclusive sample shares per function from py-spy's raw (collapsed) output."""
    self_count: dict[str, int] = {}
    incl: dict[str, int] = {}
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        total += count
        frames = stack.split(";")
        names = [f.split(" (")[0] + " " + f.split("(")[-1].rstrip(")") for f in frames]
        short = []
        for name in names:
            func, _, where = name.partition(" ")
            where = where.split("/site-packages/")[-1].split("/src/")[-1]
            short.append(f"{func} ({where})")
        self_count[short[-1]] = self_count.get(short[-1], 0) + count
        for name in set(short):
            incl[name] = incl.get(name, 0) + count
    if not total:
        return "no samples"
    out = [f"{total} samples", "", "self %  function"]
    for name, count in sorted(self_count.items(), key=lambda kv: -kv[1])[:top]:
        out.append(f"{count / total:6.1%}  {name}")
    out += ["", "incl %  function"]
    for name, count in sorted(incl.items(), key=lambda kv: -kv[1])[:top]:
        out.append(f"{count / total:6.1%}  {name}")
    return "\n".join(out)


def profile(procs: Procs, lg: LoadGen, mode: Mode, requests: dict[str, Any], run: Path) -> None:
    """py-spy on the labelbridge worker: /predict at c=64, then the sentiment batch path."""
    import subprocess

    spy = py_spy()
    seconds = max(mode.seconds, 5)

    def record(server: Server, name: str, load: Callable[[], None]) -> None:
        worker = roles(server.proc)["worker"][0]
        out = run / f"profile-{name}.txt"
        spy_proc = subprocess.Popen(
            [
                str(spy),
                "record",
                "--pid",
                str(worker),
                "--duration",
                str(int(seconds)),
                "--rate",
                "250",
                "--format",
                "raw",
                "--output",
                str(out),
                "--gil",  # only the thread holding the GIL: where CPU goes
                "--nonblocking",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        try:
            load()
            spy_proc.wait(seconds + 30)
        finally:
            if spy_proc.poll() is None:
                os.killpg(spy_proc.pid, signal.SIGKILL)
        summary = summarize_collapsed(out)
        (run / f"profile-{name}-summary.txt").write_text(summary + "\n")
        print(f"\n=== profile: {name} (py-spy on pid {worker}) ===\n{summary}")

    bodies = {"setup": dumps(requests["setup"]), "predict": dumps(requests["predict"])}
    server = start_labelbridge(procs, TRIVIAL, name="labelbridge-profile")
    try:
        post_json(f"{server.url}/setup", bodies["setup"])
        lg.run(f"{server.url}/predict", "predict", conns=64, seconds=mode.warmup)
        record(
            server,
            "predict-c64",
            lambda: print(
                "c=64 under py-spy:",
                fmt(lg.run(f"{server.url}/predict", "predict", conns=64, seconds=seconds).rps),
                "req/s",
            ),
        )
    finally:
        procs.stop(server.proc)
    server = start_labelbridge(procs, SENTIMENT, name="labelbridge-profile-sentiment")
    try:
        tasks = text_tasks(requests["predict_batch"]["tasks"][0], BATCH_TASKS)
        config_text, project = requests["setup"]["schema"], requests["setup"]["project"]
        post_json(f"{server.url}/setup", bodies["setup"])

        def batch_load() -> None:
            import cProfile
            import pstats

            profiler = cProfile.Profile()
            profiler.enable()
            deadline = time.monotonic() + seconds
            while time.monotonic() < deadline:
                client_sync(server.url, tasks[:2000], project, config_text)
            profiler.disable()
            stats = pstats.Stats(profiler)
            with (run / "profile-batch-client.txt").open("w") as handle:
                stats.stream = handle  # type: ignore[attr-defined]
                stats.sort_stats("tottime").print_stats(30)
            print(f"client-side cProfile: {run / 'profile-batch-client.txt'}")

        record(server, "batch-server", batch_load)
    finally:
        procs.stop(server.proc)


# --- main ------------------------------------------------------------------------------------
def loadavg() -> str:
    return Path("/proc/loadavg").read_text().split()[0]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="3 s per load point instead of 10 s")
    parser.add_argument(
        "--rounds",
        type=int,
        default=3,
        help="rounds of every protocol load point over all systems (best kept, ratios per round)",
    )
    parser.add_argument(
        "--only",
        default="protocol,batch,pressure",
        help="sections to run (comma separated): protocol, batch, pressure",
    )
    parser.add_argument(
        "--sdk",
        default="auto",
        help="label-studio-ml versions to compare, comma separated; 'auto': 1.0.9 and the "
        "newest on PyPI; 'none': skip the SDK",
    )
    parser.add_argument("--profile", action="store_true", help="py-spy profiles, no table")
    parser.add_argument("--no-install", action="store_true", help="never apt-get install wrk")
    parser.add_argument("--captures", type=Path, default=CAPTURES)
    parser.add_argument(
        "--lb-env",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="extra environment for every labelbridge server (experiments, e.g. LOG_LEVEL=WARNING)",
    )
    args = parser.parse_args(argv)
    mode = Mode(
        quick=args.quick,
        seconds=3.0 if args.quick else 10.0,
        warmup=1.0 if args.quick else 2.0,
        rounds=max(1, args.rounds),
    )
    sections = {s.strip() for s in args.only.split(",") if s.strip()}
    for pair in args.lb_env:
        key, _, value = pair.partition("=")
        EXTRA_ENV[key] = value
    with contextlib.suppress(OSError):
        os.sched_setaffinity(0, {LOAD_CPU})  # this process (clients) and wrk: the load core
    stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
    run_dir = OUT / stamp
    run_dir.mkdir(parents=True, exist_ok=True)
    requests = ls_requests(args.captures)
    big = copy.deepcopy(requests["predict_batch"])
    big["tasks"] = text_tasks(big["tasks"][0], BATCH_TASKS)
    bodies = {
        "setup": dumps(requests["setup"]),
        "predict": dumps(requests["predict"]),
        "predict_10k": dumps(big),
    }
    lg = LoadGen(run_dir, {"predict": bodies["predict"]}, allow_install=not args.no_install)
    procs = Procs(run_dir)

    def on_signal(signum: int, _frame: Any) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, on_signal)
    began = time.monotonic()
    sdk_log: list[str] = []
    try:
        if args.profile:
            profile(procs, lg, mode, requests, run_dir)
            return 0
        versions: list[str] = []
        if args.sdk == "auto":
            newest = newest_sdk_version()
            versions = [SDK_ANCHOR_VERSION]
            if newest and newest != SDK_ANCHOR_VERSION:
                versions.append(newest)
            sdk_log.append(
                f"label-studio-ml on PyPI: newest is {newest or 'unknown (look-up failed)'}"
                + (" (the same as anchors.md's 1.0.9)" if newest == SDK_ANCHOR_VERSION else "")
            )
        elif args.sdk != "none":
            versions = [v.strip() for v in args.sdk.split(",") if v.strip()]
        report = Report(
            mode=mode,
            tool=lg.tool,
            started=datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            load_before=loadavg(),
            sdk_versions=versions,
            sdk_notes=sdk_log,
        )
        if not lg.wrk:
            sdk_log.append(
                "wrk not available: the Python load generator was used; it saturates before "
                "fast servers do, so their req/s here are a lower bound"
            )
        print(f"bench: {mode.name} run, load generator {lg.tool}, logs in {run_dir}", flush=True)
        if "protocol" in sections:
            starters: list[tuple[str, Callable[[], Server]]] = [
                ("labelbridge", lambda: start_labelbridge(procs, TRIVIAL)),
            ]
            for version in versions:
                starters.append(
                    (
                        f"label-studio-ml {version}",
                        lambda v=version: start_sdk(procs, v, sdk_log),  # type: ignore[misc]
                    )
                )
            starters.append(("floor", lambda: start_floor(procs)))
            servers: list[tuple[str, Server]] = []
            try:
                for label, starter in starters:
                    print(f"bench: protocol overhead, starting {label} ...", flush=True)
                    servers.append((label, starter()))
                results = measure_protocols([srv for _, srv in servers], lg, mode, bodies)
            finally:
                for _, server in servers:
                    procs.stop(server.proc)
            for (label, _), result in zip(servers, results, strict=True):
                result.system = label
                if label.startswith("label-studio-ml"):
                    version = label.split()[-1]
                    result.command += f"  ({sdk_gunicorn_version(version)})"
                report.protocol.append(result)
        if "batch" in sections:
            print("bench: batch throughput ...", flush=True)
            report.batch = measure_batch(procs, requests, rounds=8 if args.quick else 16)
        if "pressure" in sections:
            print("bench: under pressure, labelbridge ...", flush=True)
            report.pressure.append(measure_pressure_labelbridge(procs, lg, mode, requests))
            report.slow_setup = measure_slow_setup_labelbridge(procs, requests)
            if versions:
                print(f"bench: under pressure, label-studio-ml {versions[0]} ...", flush=True)
                report.pressure.append(
                    measure_pressure_sdk(procs, lg, mode, requests, versions[0], sdk_log)
                )
        report.load_after = loadavg()
        report.elapsed_s = time.monotonic() - began
        report.targets = evaluate(report)
        table = render(report)
        (run_dir / "table.md").write_text(table)
        (run_dir / "results.json").write_text(json.dumps(_jsonable(report), indent=1) + "\n")
        print()
        print(table)
        print(f"(also in {run_dir.relative_to(ROOT)}/table.md and results.json)")
        return 0
    finally:
        procs.close()


if __name__ == "__main__":
    sys.exit(main())
