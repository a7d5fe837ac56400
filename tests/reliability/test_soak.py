"""A soak: predictions, annotation webhooks and training jobs mixed, against one server process.

Bounded in time (LABELBRIDGE_SOAK_SECONDS, default 30; `scripts/soak.sh` runs 600) and in
requests (LABELBRIDGE_SOAK_MAX_REQUESTS), on loopback only; it stops by itself. After a
warm-up (imports, caches, the first trainings, the thread pool filling), the server's RSS and
open descriptors are sampled each second: their growth must stay under the bounds, no request
may fail, and no job process may be left behind. The figures are printed, and written as JSON
to LABELBRIDGE_SOAK_REPORT when set.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import statistics
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
from reliability_harness import (
    CONFIG,
    Backend,
    Server,
    annotated_tasks,
    children_of,
    running,
    wait_until,
)

from fakes.labelstudio import FakeLabelStudio

SECONDS = float(os.environ.get("LABELBRIDGE_SOAK_SECONDS", "30"))
MAX_REQUESTS = int(os.environ.get("LABELBRIDGE_SOAK_MAX_REQUESTS", str(int(SECONDS * 3000))))
CLIENTS = 4
WARMUP = min(10.0, SECONDS / 3)
RSS_BOUND_MB = 50.0
FD_BOUND = 20
PROJECTS = ("1", "2", "3")
EXPECTED = {"predict": 200, "webhook": 200, "train": 201, "job_status": 200, "health": 200}


def _proc_status(pid: int, key: str) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) / 1024
    raise AssertionError(f"no {key} for {pid}")


class Load:
    """The clients: each picks an action at random (mostly predictions), until told to stop."""

    def __init__(self, server: Server) -> None:
        self.server = server
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.count = 0
        self.outcomes: Counter[str] = Counter()
        self.failures: list[str] = []
        self.latency: dict[str, list[float]] = {name: [] for name in EXPECTED}
        self.jobs: list[str] = []

    def _one(self, client: httpx.Client, rng: random.Random) -> None:
        project = rng.choice(PROJECTS)
        roll = rng.random()
        if roll < 0.70:
            action = "predict"
            size = rng.choice((1, 1, 1, 8, 64))
            tasks = [{"data": {"text": f"t{i}"}} for i in range(size)]
            request = ("POST", "/predict", {"project": project, "tasks": tasks})
        elif roll < 0.90:
            action = "webhook"
            annotation = {"id": rng.randrange(10**6), "project": int(project), "result": []}
            request = (
                "POST",
                "/webhook",
                {
                    "action": "ANNOTATION_CREATED",
                    "annotation": annotation,
                    "project": {"id": int(project)},
                },
            )
        elif roll < 0.93:
            action = "train"
            request = ("POST", "/train", {"project": project, "annotations": annotated_tasks(5)})
        elif roll < 0.97 and self.jobs:
            action = "job_status"
            request = ("POST", "/job_status", {"job": rng.choice(self.jobs[-50:])})
        else:
            action = "health"
            request = ("GET", "/health", None)
        method, path, body = request
        began = time.perf_counter()
        try:
            answer = client.request(method, path, json=body)
            status = str(answer.status_code)
            ok = answer.status_code == EXPECTED[action]
            if ok and action in ("train", "webhook") and answer.json().get("job"):
                with self.lock:
                    self.jobs.append(answer.json()["job"])
        except httpx.HTTPError as exc:
            status, ok = type(exc).__name__, False
        elapsed = time.perf_counter() - began
        with self.lock:
            self.outcomes[f"{action} {status}"] += 1
            self.latency[action].append(elapsed)
            if not ok and len(self.failures) < 20:
                self.failures.append(f"{action} {path}: {status}")

    def client(self, seed: int) -> None:
        rng = random.Random(seed)
        with self.server.client(timeout=30) as client:
            while not self.stop.is_set():
                with self.lock:
                    if self.count >= MAX_REQUESTS:
                        return
                    self.count += 1
                self._one(client, rng)


def _percentile(values: list[float], share: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


def _label_studio() -> FakeLabelStudio:
    """Where annotation-triggered jobs read their annotations (as they would from the real one)."""
    ls = FakeLabelStudio().start()
    value = {"choices": ["Positive"]}
    result = [{"from_name": "sentiment", "to_name": "text", "type": "choices", "value": value}]
    for _ in PROJECTS:
        project = ls.add_project(label_config=CONFIG)
        for index in range(5):
            task = ls.add_task(project["id"], {"text": f"t{index}"})
            ls.add_annotation(task["id"], result)
    return ls


def test_soak(tmp_path: Path) -> None:
    backend = Backend(tmp_path)
    backend.behave(**{p: {"sleep": 0.2} for p in PROJECTS})  # training takes a moment
    ls = _label_studio()
    env = {
        "TRAIN_ON_ANNOTATIONS": "every",
        "TRAIN_EVERY_N": "25",
        "KEEP_VERSIONS": "3",
        "LABEL_STUDIO_URL": ls.url,
        "LABEL_STUDIO_API_KEY": ls.personal_access_token(),
    }
    server = Server(tmp_path, backend, env=env)
    with contextlib.ExitStack() as cleanup, running(server):
        cleanup.callback(ls.stop)
        for project in PROJECTS:
            server.setup_project(project, CONFIG)
        load = Load(server)
        threads = [threading.Thread(target=load.client, args=(seed,)) for seed in range(CLIENTS)]
        began = time.monotonic()
        for thread in threads:
            thread.start()
        samples: list[tuple[float, float, int]] = []
        try:
            while time.monotonic() - began < SECONDS and any(t.is_alive() for t in threads):
                time.sleep(1.0)
                samples.append((time.monotonic() - began, server.rss_mb(), server.fds()))
        finally:
            load.stop.set()
            for thread in threads:
                thread.join(60)
        duration = time.monotonic() - began

        def jobs_settled() -> bool:
            with server.client() as client:
                states = [
                    client.post("/job_status", json={"job": job}).json()["job_status"]
                    for job in load.jobs[-20:]
                ]
            return all(s in ("finished", "failed", "canceled") for s in states)

        wait_until(jobs_settled, 60, "the last jobs ended")
        time.sleep(0.5)
        leftover = [p for p in children_of(server.pid) if Path(f"/proc/{p}").exists()]
        with server.client() as client:
            finals = Counter(
                client.post("/job_status", json={"job": job}).json()["job_status"]
                for job in load.jobs
            )
        peak = _proc_status(server.pid, "VmHWM")

    warm = [s for s in samples if s[0] >= WARMUP] or samples
    rss_growth = warm[-1][1] - warm[0][1]
    fd_growth = warm[-1][2] - warm[0][2]
    total = sum(load.outcomes.values())
    failed = total - sum(
        n for k, n in load.outcomes.items() if k.split()[1] == str(EXPECTED[k.split()[0]])
    )
    report: dict[str, Any] = {
        "seconds": round(duration, 1),
        "requests": total,
        "requests_per_second": round(total / duration, 1),
        "error_rate": round(failed / max(total, 1), 5),
        "outcomes": dict(sorted(load.outcomes.items())),
        "jobs": dict(finals),
        "latency_ms": {
            action: {
                "p50": round(statistics.median(values) * 1000, 1) if values else None,
                "p99": round(_percentile(values, 0.99) * 1000, 1),
            }
            for action, values in load.latency.items()
        },
        "rss_mb": {
            "after_warmup": round(warm[0][1], 1),
            "end": round(warm[-1][1], 1),
            "growth": round(rss_growth, 1),
            "peak": round(peak, 1),
        },
        "fds": {"after_warmup": warm[0][2], "end": warm[-1][2], "growth": fd_growth},
    }
    print("\nsoak:", json.dumps(report, indent=2))
    target = os.environ.get("LABELBRIDGE_SOAK_REPORT")
    if target:
        Path(target).write_text(json.dumps(report, indent=2))
    assert failed == 0, load.failures
    assert total >= 50, f"only {total} requests in {duration:.0f} s"
    assert finals["finished"] >= 1, finals
    assert set(finals) <= {"finished", "canceled"}, finals  # canceled: superseded in a burst
    assert not leftover, f"job processes left behind: {leftover}"
    assert rss_growth < RSS_BOUND_MB, f"RSS grew by {rss_growth:.1f} MB after warm-up"
    assert fd_growth < FD_BOUND, f"open descriptors grew by {fd_growth} after warm-up"
