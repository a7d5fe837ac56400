"""Model store integrity: versions are published whole by one rename, checked on load, and a
corrupted version is refused, reported, and replaced by the previous one."""

from __future__ import annotations

import hashlib
import json
import os
import threading
from pathlib import Path
from typing import Any

import httpx
import pytest
from reliability_harness import Backend, Server, annotated_tasks, running, wait_until

from labelbridge.errors import CorruptModelVersion
from labelbridge.store import LocalModelStore
from labelbridge.store import local as local_store


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_a_version_is_staged_then_published_by_one_rename(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = LocalModelStore(tmp_path)
    renames: list[tuple[Path, Path, dict[str, Any]]] = []
    real_replace = os.replace

    def watching_replace(src: Any, dst: Any) -> None:
        src, dst = Path(src), Path(dst)
        if src.is_dir():  # the publication: look at what is about to appear
            meta = json.loads((src / "_meta.json").read_text())
            assert not dst.exists(), "a published version would be overwritten"
            for rel, digest in meta["files"].items():
                assert _sha(src / rel) == digest, f"{rel} renamed with a wrong checksum"
            renames.append((src, dst, meta))
        real_replace(src, dst)

    monkeypatch.setattr(local_store.os, "replace", watching_replace)
    versions = tmp_path / "projects" / "1" / "versions"
    with store.new_version("1", "m") as staging:
        assert ".staging" in staging.path.parts
        (staging.path / "weights.bin").write_bytes(os.urandom(4096))
        (staging.path / "sub").mkdir()
        (staging.path / "sub" / "vocab.txt").write_text("a\nb\n")
        assert not (versions / staging.version).exists()  # nothing visible while writing
        assert store.current_name("1") is None
    assert len(renames) == 1, renames
    src, dst, meta = renames[0]
    assert dst == versions / "m-v1" and not src.exists()
    assert set(meta["files"]) == {"weights.bin", "sub/vocab.txt"}
    assert store.current_name("1") == "m-v1"
    assert store.open_version("1", "m-v1") == dst

    with pytest.raises(RuntimeError), store.new_version("1", "m") as staging:
        (staging.path / "weights.bin").write_bytes(b"half")
        raise RuntimeError("fit() failed")
    assert store.current_name("1") == "m-v1"
    assert sorted(p.name for p in versions.iterdir()) == ["m-v1"]
    assert not list((tmp_path / "projects" / "1" / ".staging").iterdir())


def test_readers_never_see_half_a_version(tmp_path: Path) -> None:
    store = LocalModelStore(tmp_path)
    reader_store = LocalModelStore(tmp_path)  # another process would have its own object
    errors: list[BaseException] = []
    reads = 0
    done = threading.Event()

    def read() -> None:
        nonlocal reads
        while not done.is_set():
            name = reader_store.current_name("1")
            if name is None:
                continue
            try:
                folder = reader_store.open_version("1", name)  # checksums verified
                assert len(list(folder.glob("part-*"))) == 8
                reads += 1
            except BaseException as exc:  # pragma: no cover - reported below
                errors.append(exc)
                return

    reader = threading.Thread(target=read)
    reader.start()
    try:
        for _ in range(30):
            with store.new_version("1", "m") as staging:
                for index in range(8):
                    (staging.path / f"part-{index}").write_bytes(os.urandom(64 * 1024))
            store.prune("1", 3)
    finally:
        done.set()
        reader.join(10)
    assert not errors, errors[0]
    assert reads > 30, reads


@pytest.mark.parametrize("damage", ["flip a byte", "truncate", "delete", "bad metadata"])
def test_open_version_refuses_a_damaged_version(tmp_path: Path, damage: str) -> None:
    store = LocalModelStore(tmp_path)
    with store.new_version("1", "m") as staging:
        (staging.path / "weights.bin").write_bytes(b"\x01" * 1000)
    folder = tmp_path / "projects" / "1" / "versions" / "m-v1"
    target = folder / "weights.bin"
    if damage == "flip a byte":
        data = bytearray(target.read_bytes())
        data[500] ^= 0x01
        target.write_bytes(bytes(data))
    elif damage == "truncate":
        target.write_bytes(target.read_bytes()[:999])
    elif damage == "delete":
        target.unlink()
    else:
        (folder / "_meta.json").write_text("{not json")
    with pytest.raises(CorruptModelVersion):
        store.open_version("1", "m-v1")


def _flip_a_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x20
    path.write_bytes(bytes(data))


def test_a_corrupted_version_is_refused_reported_and_the_previous_one_serves(
    tmp_path: Path,
) -> None:
    backend = Backend(tmp_path)

    def train(label: str) -> None:
        backend.behave(**{"1": {"label": label}})
        job = client.post("/train", json={"project": "1", "annotations": annotated_tasks()})
        assert job.status_code == 201, job.text

        def finished() -> bool:
            status = client.post("/job_status", json={"job": job.json()["job"]}).json()
            assert status["job_status"] != "failed", status
            return status["job_status"] == "finished"

        wait_until(finished, 30, "training finished")

    def label() -> str:
        answer = client.post("/predict", json={"project": "1", "tasks": [{"data": {"text": "x"}}]})
        assert answer.status_code == 200, answer.text
        result = answer.json()["results"][0]
        return f"{result['result'][0]['value']['choices'][0]} ({result['model_version']})"

    server = Server(tmp_path, backend)
    with running(server), server.client() as client:
        server.setup_project("1")
        train("Negative")
        train("Positive")
        assert label() == "Positive (steady-v2)"
    _flip_a_byte(server.model_dir / "projects" / "1" / "versions" / "steady-v2" / "weights.json")

    restarted = Server(tmp_path, backend, port=server.port, name="restarted")
    with running(restarted), restarted.client() as client:
        assert label() == "Negative (steady-v1)"  # the previous version serves
        assert label() == "Negative (steady-v1)"
        metrics = client.get("/metrics").text
        counted = [line for line in metrics.splitlines() if line.startswith("labelbridge_corrupt")]
        assert counted and float(counted[0].split()[-1]) >= 1, metrics
        assert httpx.get(f"{restarted.url}/health").json()["status"] == "UP"
    log = restarted.output()
    assert "refusing version steady-v2 of project 1" in log
    assert "weights.json does not match its checksum" in log
