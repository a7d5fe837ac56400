"""What only the local store has: its sweep of killed writers goes by pid, on this host only."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from labelbridge._proc_util import HOSTNAME as HOST
from labelbridge.store import LocalModelStore


def test_prune_sweeps_dead_writers_of_this_host_only(tmp_path: Path) -> None:
    store = LocalModelStore(tmp_path)
    with store.new_version("1", "m") as staging:
        (staging.path / "w.txt").write_text("1")
    finished = subprocess.Popen(["true"])
    finished.wait()  # its pid is gone: a killed writer's
    project = tmp_path / "projects" / "1"
    for version, host in (("m-v2", HOST), ("m-v3", "another-host")):
        folder = project / ".staging" / f"{version}.0000abcd"
        folder.mkdir()
        (folder / "w.txt").write_text("half")
        marker = project / "versions" / f".reserved-{version}"
        marker.write_text(f"{host}\n{finished.pid}\n{folder}", encoding="utf-8")
    assert store.prune("1", keep=5) == []
    # whether a writer on another host sharing the folder lives cannot be told from here
    assert [p.name for p in (project / ".staging").iterdir()] == ["m-v3.0000abcd"]
    assert [p.name for p in (project / "versions").glob(".reserved-*")] == [".reserved-m-v3"]
    assert [meta.version for meta in store.versions("1")] == ["m-v1"]


def test_a_live_writer_whose_pid_looks_dead_keeps_its_staging(tmp_path: Path) -> None:
    """Another container sharing this hostname: its pid means nothing here, its lock does."""
    from labelbridge.store._common import writer_lock

    store = LocalModelStore(tmp_path)
    finished = subprocess.Popen(["true"])
    finished.wait()
    project = tmp_path / "projects" / "1"
    (project / "versions").mkdir(parents=True)
    folder = project / ".staging" / "m-v1.0000abcd"
    folder.parent.mkdir()
    with writer_lock(folder.with_name(folder.name + ".lock")):
        folder.mkdir()
        (folder / "w.txt").write_text("training")
        marker = project / "versions" / ".reserved-m-v1"
        marker.write_text(f"{HOST}\n{finished.pid}\n{folder}", encoding="utf-8")
        assert store.prune("1", keep=5) == []
        with store.new_version("1", "m") as staging:
            pass
        assert staging.version == "m-v2"
        assert (folder / "w.txt").read_text() == "training" and marker.exists()
    assert store.prune("1", keep=5) == []  # its lock is free now: a killed writer's
    assert not folder.exists() and not marker.exists()


def test_a_marker_naming_a_folder_outside_staging_is_not_followed(tmp_path: Path) -> None:
    store = LocalModelStore(tmp_path)
    finished = subprocess.Popen(["true"])
    finished.wait()
    victim = tmp_path / "precious"
    victim.mkdir()
    project = tmp_path / "projects" / "1"
    (project / "versions").mkdir(parents=True)
    marker = project / "versions" / ".reserved-m-v1"
    marker.write_text(f"{HOST}\n{finished.pid}\n{victim}", encoding="utf-8")
    assert store.prune("1", keep=5) == []
    assert victim.is_dir() and marker.exists()


def test_prune_sweeps_a_killed_delete_and_an_abandoned_copy(tmp_path: Path) -> None:
    import os
    import time

    from labelbridge.store import local

    store = LocalModelStore(tmp_path)
    with store.new_version("1", "m") as staging:
        (staging.path / "w.txt").write_text("1")
    root = tmp_path / "projects"
    trash = root / ".1.deleted-0000abcd"  # a delete killed during its rmtree
    old_copy = root / ".1.copy-0000abcd"  # a duplicate killed mid-copy, an hour ago
    live_copy = root / ".1.copy-1111abcd"  # a duplicate copying now
    other = root / ".12.deleted-0000abcd"  # another project's: its own prune sweeps it
    for folder in (trash, old_copy, live_copy, other):
        (folder / "versions").mkdir(parents=True)
    stale = time.time() - local.COPY_ABANDONED_SECONDS - 60
    os.utime(old_copy, (stale, stale))
    assert store.prune("1", keep=5) == []
    left = sorted(p.name for p in root.iterdir())
    assert left == [".1.copy-1111abcd", ".12.deleted-0000abcd", "1"]
    assert [meta.version for meta in store.versions("1")] == ["m-v1"]


def test_the_event_loops_look_up_sees_another_process_publish_within_the_interval(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import time

    from labelbridge.store import local

    reader, writer = LocalModelStore(tmp_path), LocalModelStore(tmp_path)  # as two processes
    with writer.new_version("1", "m"):
        pass
    assert reader.current_name_nowait("1") == (True, "m-v1")
    with writer.new_version("1", "m"):
        pass
    assert writer.current_name_nowait("1") == (True, "m-v2")  # its own publish: at once
    assert reader.current_name("1") == "m-v2"  # the blocking look-up: always fresh
    time.sleep(local.CURRENT_RECHECK_SECONDS * 2)
    assert reader.current_name_nowait("1") == (True, "m-v2")  # after at most the interval
    calls: list[str] = []
    real_stat = local.os.stat

    def counting_stat(path: str) -> object:
        calls.append(path)
        return real_stat(path)

    monkeypatch.setattr(local.os, "stat", counting_stat)
    for _ in range(100):
        reader.current_name_nowait("1")
    monkeypatch.undo()
    assert len(calls) < 10, f"{len(calls)} stat() calls for 100 back-to-back look-ups"
