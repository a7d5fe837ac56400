"""The connector's own cost per batch, apart from any server's: client CPU per /predict of 64.

    .venv/bin/python bench/client_cpu.py [--batches 300]

Records what labelbridge's examples/sentiment answers for a batch of 64 text tasks (one
`labelbridge start`), then serves that answer as fixed bytes from a bare uvicorn app pinned to
the server's core, so the server costs next to nothing and changes in it do not move the
figures. This process (pinned to the other core) then times each connector path: CPU seconds of
this process per batch (time.process_time: every thread, so the sync client's pool counts),
and wall time per batch. Then the pieces of one batch in process: body encoding, answer
decoding, answer validation.
"""

from __future__ import annotations

import argparse
import asyncio
import inspect
import json
import os
import sys
import tempfile
import time
import timeit
from collections.abc import Callable
from pathlib import Path
from typing import Any

from _inputs import CAPTURES, SENTIMENT, ls_requests, text_tasks
from _proc import Procs, free_port, wait_http
from _systems import BENCH, LOAD_CPU, SERVER_CPU, VENV_BIN, start_labelbridge

BATCH = 64
ANSWER_ENV = "CLIENT_CPU_ANSWER"
_answer: bytes | None = None


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """The fixed-answer server (run by uvicorn as `client_cpu:app`)."""
    global _answer
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                _answer = Path(os.environ[ANSWER_ENV]).read_bytes()
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    more = True
    while more:
        message = await receive()
        more = message.get("more_body", False)
    body = b'{"status":"UP"}' if scope["path"] == "/health" else _answer or b"{}"
    if scope["path"] == "/setup":
        body = b'{"model_version":"sentiment-v0"}'
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def per_batch(run: Callable[[], int]) -> tuple[float, float]:
    """(client CPU ms, wall ms) per batch of `run`, which returns how many batches it sent."""
    cpu, wall = time.process_time(), time.perf_counter()
    count = run()
    return (
        (time.process_time() - cpu) * 1000 / count,
        (time.perf_counter() - wall) * 1000 / count,
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--batches", type=int, default=300)
    parser.add_argument("--repeat", type=int, default=3, help="runs per path, best kept")
    args = parser.parse_args()

    from labelbridge import client as connector
    from labelbridge.client import AsyncMLBackendClient, MLBackendClient

    os.sched_setaffinity(0, {LOAD_CPU})
    requests = ls_requests(CAPTURES)
    config, project = requests["setup"]["schema"], requests["setup"]["project"]
    tasks = text_tasks(requests["predict_batch"]["tasks"][0], BATCH * args.batches)
    options: dict[str, Any] = {"project": project, "label_config": config}
    work = Path(tempfile.mkdtemp(prefix="lb-client-cpu-"))
    answer_file = work / "answer.json"
    procs = Procs(work)
    try:
        real = start_labelbridge(procs, SENTIMENT, name="sentiment")
        with MLBackendClient(real.url) as client:
            client.setup(project, config)
            body = connector._predict(tasks[:BATCH], **options).body
            import httpx

            answer = httpx.post(f"{real.url}/predict", json=body, timeout=60).content
        procs.stop(real.proc)
        answer_file.write_bytes(answer)
        port = free_port()
        cmd = [str(VENV_BIN / "python"), "-m", "uvicorn", "client_cpu:app", "--app-dir"]
        cmd += [str(BENCH), "--port", str(port), "--loop", "uvloop", "--http", "httptools"]
        cmd += ["--no-access-log", "--log-level", "warning"]
        proc = procs.start("fixed", cmd, cpu=SERVER_CPU, env={ANSWER_ENV: str(answer_file)})
        url = f"http://127.0.0.1:{port}"
        wait_http(f"{url}/health", proc, timeout=30)

        signature = inspect.signature(MLBackendClient.predict_batches)
        bulk_takes_concurrency = "concurrency" in signature.parameters
        batches = [tasks[i : i + BATCH] for i in range(0, len(tasks), BATCH)]
        rows: list[tuple[str, float, float]] = []

        def sync_loop(method: str) -> Callable[[], int]:
            def run() -> int:
                with MLBackendClient(url) as client:
                    call = getattr(client, method)
                    for batch in batches:
                        call(batch, **options)
                    return len(batches)

            return run

        def sync_bulk(concurrency: int) -> Callable[[], int]:
            def run() -> int:
                with MLBackendClient(url) as client:
                    kw: dict[str, Any] = dict(options)
                    if bulk_takes_concurrency:
                        kw["concurrency"] = concurrency
                    n = 0
                    for _ in client.predict_batches(tasks, batch_size=BATCH, **kw):
                        n += 1
                    return n

            return run

        def async_bulk(concurrency: int) -> Callable[[], int]:
            async def go() -> int:
                async with AsyncMLBackendClient(url) as client:
                    kw: dict[str, Any] = dict(options)
                    if bulk_takes_concurrency:
                        kw["concurrency"] = concurrency
                    n = 0
                    async for _ in client.predict_batches(tasks, batch_size=BATCH, **kw):
                        n += 1
                    return n

            return lambda: asyncio.run(go())

        paths: list[tuple[str, Callable[[], int]]] = [
            ("MLBackendClient.predict, one after the other", sync_loop("predict")),
        ]
        for n in (1, 2, 3) if bulk_takes_concurrency else (1,):
            shown = f", concurrency={n}" if bulk_takes_concurrency else ""
            paths.append((f"MLBackendClient.predict_batches{shown}", sync_bulk(n)))
            paths.append((f"AsyncMLBackendClient.predict_batches{shown}", async_bulk(n)))
        for name, run in paths:
            results = [per_batch(run) for _ in range(args.repeat)]
            cpu, wall = min(r[0] for r in results), min(r[1] for r in results)
            rows.append((name, cpu, wall))
    finally:
        procs.close()

    print(f"\nclient per batch of {BATCH} (fixed-answer server; {len(answer):,} B answer)\n")
    print("| path | client CPU ms/batch | wall ms/batch | tasks/s |")
    print("|---|---:|---:|---:|")
    for name, cpu, wall in rows:
        print(f"| {name} | {cpu:.3f} | {wall:.3f} | {BATCH / wall * 1000:,.0f} |")

    call = connector._predict_exact(batches[0], **options)
    encode = getattr(connector, "_encode", None)
    decoded = json.loads(answer)
    pieces: list[tuple[str, Callable[[], Any]]] = [
        (
            "encode body, stdlib as httpx json=",
            lambda: json.dumps(
                call.body, ensure_ascii=False, separators=(",", ":"), allow_nan=False
            ).encode(),
        ),
        ("decode answer, stdlib json.loads", lambda: json.loads(answer)),
        ("parse + validate answer (call.parse)", lambda: call.parse(decoded)),
        (
            "build the call (_predict_exact)",
            lambda: connector._predict_exact(batches[0], **options),
        ),
    ]
    if encode is not None:
        pieces.insert(1, ("encode body, connector._encode", lambda: encode(call.body)))
    decode = getattr(connector, "_decode", None)
    if decode is not None:
        import httpx

        response = httpx.Response(200, content=answer)
        pieces.insert(3, ("decode answer, connector._decode", lambda: decode(response)))
    print("\n| piece (one batch, in process) | µs |\n|---|---:|")
    for name, fn in pieces:
        best = min(timeit.repeat(fn, number=200, repeat=5)) / 200 * 1e6
        print(f"| {name} | {best:.1f} |")
    print(f"\npython {sys.version.split()[0]}")


if __name__ == "__main__":
    main()
