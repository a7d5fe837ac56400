"""Logs where the troubleshooting guide says: uwsgi.log (runtime, inference) and rq.log
(training) in production, rotated safely with many writers; the console in development."""

from __future__ import annotations

import itertools
import json
import logging
import multiprocessing
import re
from pathlib import Path

import httpx
import pytest

from _serving import CONFIG, make_backend, running
from labelbridge.logs import SharedRotatingFileHandler, configure_logging
from labelbridge.settings import Settings

pytestmark = pytest.mark.timeout(120)

SECRET = "s3cr3t-TOKEN-value-42"


def test_production_logs_in_uwsgi_and_rq_with_job_ids_and_masked_debug_bodies(
    tmp_path: Path,
) -> None:
    """One production server (2 workers, --debug, LOG_DIR set): a setup carrying a token, a
    predict, and trains of three projects with JOB_WORKERS=1, submitted through either worker.
    Also checks that the jobs ran once each and never two at a time."""
    backend = make_backend(tmp_path / "b")
    log_dir = tmp_path / "elsewhere"
    trace = tmp_path / "trace.txt"
    env = {
        "LOG_DIR": str(log_dir),
        "JOB_WORKERS": "1",
        "SLEEPY_TRACE": str(trace),
        "SLEEPY_FIT": "0.2",
    }
    with running(backend, "--production", "--workers", "2", "--debug", env=env) as server:
        setup = {"project": "1.1", "schema": CONFIG, "access_token": SECRET}
        assert httpx.post(f"{server.url}/setup", json=setup, timeout=5).status_code == 200
        assert server.predict().status_code == 200
        jobs = [server.train(2 + p, project=f"{p}.1") for p in range(1, 4)]
        states = [server.wait_job(job, timeout=40)["job_status"] for job in jobs]
        assert states == ["finished"] * 3, server.out()
        metrics = httpx.get(f"{server.url}/metrics", timeout=5).text
        assert 'labelbridge_jobs{state="finished"} 3' in metrics, metrics
        # each worker took its heap out of garbage collection once the model loaded (_gc)
        frozen = re.findall(r"^labelbridge_gc_frozen_objects\{worker=.*\} (\S+)$", metrics, re.M)
        assert len(frozen) == 2 and all(float(n) > 10_000 for n in frozen), metrics
    assert not (backend / "logs").exists(), "LOG_DIR must override <backend>/logs"
    runtime = (log_dir / "uwsgi.log").read_text()
    training = (log_dir / "rq.log").read_text()
    # runtime and inference: the server's lines, each request with its (masked) body in debug
    assert "Application startup complete" in runtime
    assert re.search(r"POST /predict -> 200 in [\d.]+ ms body: .*\"tasks\"", runtime), runtime
    assert "POST /setup -> 200" in runtime and "access_token" in runtime
    assert SECRET not in runtime + training + server.out()
    assert "labelbridge.train" not in runtime and "fitting on" not in runtime
    # training: every line a job process wrote carries the job id
    for job in jobs:
        assert f"[job {job}]: fitting on" in training
        assert re.search(rf"\[job {job}\]: published sleepy-v\d", training), training
    child_lines = [
        line
        for line in training.splitlines()
        if re.search(r" labelbridge\.(train|jobs\.runner|jobs\.child)", line)
    ]
    assert child_lines and all("[job " in line for line in child_lines)
    # the jobs: each ran exactly once, one at a time (JOB_WORKERS=1 across both workers)
    runs = [line.split() for line in trace.read_text().splitlines()]
    assert sorted(r[0] for r in runs) == ["1", "2", "3"]
    spans = sorted((float(r[2]), float(r[3])) for r in runs)
    for (_, end), (start, _) in itertools.pairwise(spans):
        assert start >= end, f"two jobs ran at once with JOB_WORKERS=1: {spans}"


def test_json_log_lines_carry_the_job_id(tmp_path: Path) -> None:
    from labelbridge.jobs.runner import job_context

    settings = Settings(production=True, log_format="json", log_dir=tmp_path)
    try:
        configure_logging(settings)
        logging.getLogger("labelbridge.server").info("served with token abcdef123456")
        with job_context("job-1"):
            logging.getLogger("labelbridge.train").info("epoch %d", 3)
    finally:
        configure_logging(Settings())
    runtime = [json.loads(line) for line in (tmp_path / "uwsgi.log").read_text().splitlines()]
    training = [json.loads(line) for line in (tmp_path / "rq.log").read_text().splitlines()]
    assert runtime[-1]["message"] == "served with token ***" and runtime[-1]["level"] == "INFO"
    assert training == [
        {**training[0], "logger": "labelbridge.train", "message": "epoch 3", "job": "job-1"}
    ]


def _write_lines(path: str, writer: int, count: int) -> None:
    handler = SharedRotatingFileHandler(path, max_bytes=16_000, backup_count=10_000)
    handler.setFormatter(logging.Formatter("%(message)s"))
    logger = logging.getLogger(f"rotation-{writer}")
    logger.propagate = False
    logger.addHandler(handler)
    for index in range(count):
        logger.warning("writer=%d line=%05d %s", writer, index, "x" * 60)
    handler.close()


def test_rotation_is_safe_with_several_writer_processes(tmp_path: Path) -> None:
    """Four processes append 1000 lines each with a 16 kB limit: no line is lost, doubled or
    torn, and every rotated file has at least the limit (one rotation per crossing: with
    per-process rotation, as the stdlib does it, files far smaller than the limit appear)."""
    path = tmp_path / "uwsgi.log"
    context = multiprocessing.get_context("fork")
    procs = [context.Process(target=_write_lines, args=(str(path), w, 1000)) for w in range(4)]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join(60)
        assert proc.exitcode == 0
    files = [path, *tmp_path.glob("uwsgi.log.*")]
    files = [f for f in files if not f.name.endswith(".lock")]
    lines = [line for f in files for line in f.read_text().splitlines()]
    pattern = re.compile(r"^writer=(\d) line=(\d{5}) x{60}$")
    assert all(pattern.match(line) for line in lines), [x for x in lines if not pattern.match(x)][
        :3
    ]
    seen = sorted(pattern.match(line).groups() for line in lines)  # type: ignore[union-attr]
    assert seen == sorted((str(w), f"{i:05d}") for w in range(4) for i in range(1000))
    total = sum(f.stat().st_size for f in files)
    assert len(files) - 1 >= total // 32_000  # it rotated, once per crossing
    for rotated in files[1:]:
        assert 16_000 <= rotated.stat().st_size < 32_000, rotated


@pytest.mark.parametrize("access_log", [False, True])
def test_predict_lines_are_opt_in_and_failed_requests_always_logged(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, access_log: bool
) -> None:
    """Thousands of /predict lines a second would rotate the errors out of uwsgi.log: one line
    per /predict only with ACCESS_LOG; a failed request and /train are always logged."""
    from _backends import CHOICES_CONFIG, Echo
    from labelbridge.server import create_app
    from labelbridge.service import Backend
    from support import serve

    settings = Settings(model_dir=tmp_path / "models", access_log=access_log)
    app = create_app(Backend(Echo, settings, model_ref="_backends:Echo"))
    body = {"tasks": [{"id": 1, "data": {"text": "hi"}}], "project": "1.1"}
    with serve(app) as url, httpx.Client(timeout=10) as http:
        assert http.post(
            f"{url}/setup", json={"project": "1.1", "schema": CHOICES_CONFIG}
        ).is_success
        with caplog.at_level(logging.INFO, logger="labelbridge.server"):
            assert http.post(f"{url}/predict", json=body).status_code == 200
            assert http.post(f"{url}/predict", content=b"{").status_code == 400
            http.post(f"{url}/train", json={"project": "1.1", "annotations": []})
    lines = [r.getMessage() for r in caplog.records if r.name == "labelbridge.server"]
    assert any(line.startswith("POST /predict -> 200 in ") for line in lines) is access_log, lines
    assert any(line.startswith("POST /predict -> 400 in ") for line in lines), lines
    assert any(line.startswith("POST /train -> ") for line in lines), lines
