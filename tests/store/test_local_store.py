"""What only the local store has: its sweep of killed writers goes by pid, on this host only."""

from __future__ import annotations

import subprocess
from pathlib import Path

from labelbridge.store import LocalModelStore
from labelbridge.store._common import HOST


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
