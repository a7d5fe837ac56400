"""The command line as a user runs it: init a backend, start it, talk to it over HTTP."""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

import httpx

from support import LABELBRIDGE, free_port, labelbridge_start


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
    with labelbridge_start(str(folder), tmp=tmp_path) as server:
        url = server.url
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


def test_production_checks_the_model_in_a_child_and_never_imports_it_in_the_supervisor(
    tmp_path: Path,
) -> None:
    """A model.py importing torch would otherwise stay in the supervisor's memory for its whole
    life: the supervisor checks the class in a short-lived process, and only workers import it.
    A bad backend still fails at once with the same clear error, named backends included."""
    folder = tmp_path / "b"
    subprocess.run([LABELBRIDGE, "init", str(folder)], check=True, capture_output=True)
    imports = tmp_path / "imports.txt"
    model = folder / "model.py"
    model.write_text(
        model.read_text()
        + f"\nimport os\nwith open({str(imports)!r}, 'a') as _f:\n    _f.write(f'{{os.getpid()}}\\n')\n"
    )
    with labelbridge_start(str(folder), "--production", tmp=tmp_path) as server:
        importers = {int(line) for line in imports.read_text().split()}
        assert server.process.pid not in importers  # the supervisor
        assert len(importers) == 2  # the check's child, and the one worker
    (tmp_path / "needs").mkdir()
    (tmp_path / "needs" / "model.py").write_text("import surely_not_installed_pkg\n")
    for targets in ([str(tmp_path / "needs")], [f"good={folder}", f"bad={tmp_path / 'needs'}"]):
        done = subprocess.run(
            [LABELBRIDGE, "start", *targets, "--production", "--port", str(free_port())],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert done.returncode == 2, done.stderr
        assert "surely_not_installed_pkg" in done.stderr and "requirements.txt" in done.stderr
        assert "Traceback" not in done.stderr
        assert ("bad=" in done.stderr) is (len(targets) == 2)


def test_sigterm_stops_the_server_cleanly(tmp_path: Path) -> None:
    folder = tmp_path / "b"
    subprocess.run([LABELBRIDGE, "init", str(folder)], check=True, capture_output=True)
    with labelbridge_start(str(folder), tmp=tmp_path) as server:
        os.killpg(server.process.pid, signal.SIGTERM)
        # uvicorn finishes in-flight work, then re-raises the signal so the exit status tells
        assert server.process.wait(15) in (0, -signal.SIGTERM)
        assert "Application shutdown complete" in server.output()


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
    args = [f"a={tmp_path / 'yes-no'}", f"b={tmp_path / 'other'}"]
    with labelbridge_start(*args, tmp=tmp_path, health="/b/health") as server:
        url = server.url
        assert httpx.get(f"{url}/a/health").json()["model_class"] == "YesNo"
        assert httpx.get(f"{url}/b/health").json()["model_class"] == "Other"
        for name, version in (("a", "yes-no-v0"), ("b", "other-v0")):
            body = {"project": "3.1", "schema": config}
            assert httpx.post(f"{url}/{name}/setup", json=body).json() == {"model_version": version}
        assert (tmp_path / "models" / "a").is_dir() and (tmp_path / "models" / "b").is_dir()
