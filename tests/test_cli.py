"""The command line as a user runs it: init a backend, start it, talk to it over HTTP."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

from support import free_port

LABELBRIDGE = str(Path(sys.executable).with_name("labelbridge"))


@contextmanager
def started(backend: Path, tmp: Path, *extra: str) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    port = free_port()
    env = {**os.environ, "MODEL_DIR": str(tmp / "models"), "LOG_DIR": str(tmp / "logs")}
    proc = subprocess.Popen(
        [LABELBRIDGE, "start", str(backend), "--host", "127.0.0.1", "--port", str(port), *extra],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"{url}/health", timeout=1).json()["model_state"] == "ready":
                    break
            except httpx.HTTPError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                out = proc.stdout.read().decode() if proc.stdout else ""
                raise AssertionError(f"server did not become ready:\n{out}")
            time.sleep(0.1)
        yield url, proc
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


def test_init_scaffolds_a_backend_that_starts_and_predicts(tmp_path: Path) -> None:
    folder = tmp_path / "my-backend"
    done = subprocess.run(
        [LABELBRIDGE, "init", str(folder)], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr
    names = {p.name for p in folder.iterdir()}
    assert {
        "model.py",
        "requirements.txt",
        "README.md",
        "Dockerfile",
        "docker-compose.yml",
    } <= names
    again = subprocess.run(
        [LABELBRIDGE, "init", str(folder)], capture_output=True, text=True, check=False
    )
    assert again.returncode == 2 and "already has" in again.stderr
    config = (folder / "label_config.xml").read_text()
    with started(folder, tmp_path) as (url, _):
        health = httpx.get(f"{url}/health").json()
        assert health["status"] == "UP" and health["model_class"] == "MyBackend"
        setup = httpx.post(f"{url}/setup", json={"project": "1.1", "schema": config}).json()
        assert setup == {"model_version": "my-backend-v0"}
        tasks = [{"id": 1, "data": {"text": "hello"}}]
        answer = httpx.post(f"{url}/predict", json={"tasks": tasks, "project": "1.1"})
        assert answer.status_code == 200, answer.text
        assert answer.json()["results"][0]["result"][0]["value"]["choices"] == ["Yes"]


def test_start_refuses_a_folder_without_a_model(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    done = subprocess.run(
        [LABELBRIDGE, "start", str(tmp_path / "empty"), "--port", str(free_port())],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2
    assert "has no model.py" in done.stderr and "labelbridge init" in done.stderr


def test_start_reports_a_missing_requirement_by_name(tmp_path: Path) -> None:
    folder = tmp_path / "needs"
    folder.mkdir()
    (folder / "model.py").write_text("import surely_not_installed_pkg\n")
    done = subprocess.run(
        [LABELBRIDGE, "start", str(folder), "--port", str(free_port())],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2
    assert "surely_not_installed_pkg" in done.stderr and "requirements.txt" in done.stderr


def test_sigterm_stops_the_server_cleanly(tmp_path: Path) -> None:
    folder = tmp_path / "b"
    subprocess.run([LABELBRIDGE, "init", str(folder)], check=True, capture_output=True)
    with started(folder, tmp_path) as (_, proc):
        os.killpg(proc.pid, signal.SIGTERM)
        # uvicorn finishes in-flight work, then re-raises the signal so the exit status tells
        assert proc.wait(15) in (0, -signal.SIGTERM)
        output = proc.stdout.read().decode() if proc.stdout else ""
        assert "Application shutdown complete" in output


def test_settings_table_lists_every_setting() -> None:
    done = subprocess.run(
        [LABELBRIDGE, "settings", "--markdown"], capture_output=True, text=True, check=True
    )
    for name in (
        "`MODEL_DIR`",
        "`BASIC_AUTH_USER`",
        "`JOB_QUEUE`",
        "`ML_TIMEOUT_SETUP`",
        "`ASSET_MAX_BYTES`",
    ):
        assert name in done.stdout
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    assert done.stdout.strip() in readme, (
        "README's settings table is stale: labelbridge settings --markdown"
    )


def test_start_serves_several_backends_under_their_prefixes(tmp_path: Path) -> None:
    for name in ("yes-no", "other"):
        subprocess.run([LABELBRIDGE, "init", str(tmp_path / name)], check=True, capture_output=True)
    config = (tmp_path / "yes-no" / "label_config.xml").read_text()
    port = free_port()
    env = {**os.environ, "MODEL_DIR": str(tmp_path / "models"), "LOG_DIR": str(tmp_path / "logs")}
    args = [f"a={tmp_path / 'yes-no'}", f"b={tmp_path / 'other'}"]
    proc = subprocess.Popen(
        [LABELBRIDGE, "start", *args, "--host", "127.0.0.1", "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"{url}/b/health", timeout=1).json()["model_state"] == "ready":
                    break
            except httpx.HTTPError:
                pass
            assert proc.poll() is None and time.monotonic() < deadline, "server did not start"
            time.sleep(0.1)
        assert httpx.get(f"{url}/a/health").json()["model_class"] == "YesNo"
        assert httpx.get(f"{url}/b/health").json()["model_class"] == "Other"
        for name, version in (("a", "yes-no-v0"), ("b", "other-v0")):
            body = {"project": "3.1", "schema": config}
            assert httpx.post(f"{url}/{name}/setup", json=body).json() == {"model_version": version}
        assert (tmp_path / "models" / "a").is_dir() and (tmp_path / "models" / "b").is_dir()
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(15)
