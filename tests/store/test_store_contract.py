"""One contract, two stores: every test here runs against LocalModelStore (a folder) and
S3ModelStore (moto's S3 server on loopback, a fresh bucket per test)."""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

from labelbridge.errors import CorruptModelVersion, StoreError, UnknownProject
from labelbridge.logs import mask_secrets
from labelbridge.store import LocalModelStore, ModelStore, ProjectRecord, S3ModelStore
from labelbridge.store.s3 import UNFINISHED_MAX_AGE

CONFIG = '<View><Text name="text" value="$text"/></View>'
TOKEN = "tok-3f9a1c77e2b04d5e"

StoreFactory = Callable[[], ModelStore]  # the `make_store` fixture (conftest.py)


def publish(store: ModelStore, project: str = "1", **files: str) -> str:
    """A version with the given files (`sub__name` writes `sub/name`); returns its name."""
    with store.new_version(project, "m", event="TRAIN") as staging:
        for name, text in (files or {"weights.txt": "w"}).items():
            target = staging.path / name.replace("__", "/")
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(text)
        staging.metrics = {"score": 0.5}
    return staging.version


def names(store: ModelStore, project: str = "1") -> list[str]:
    return [meta.version for meta in store.versions(project)]


def flip_a_byte(store: ModelStore, project: str, version: str, rel: str) -> None:
    """Corrupt one stored file where it lives: the folder, or the S3 object."""
    if isinstance(store, LocalModelStore):
        path = store.root / "projects" / project / "versions" / version / rel
        data = bytearray(path.read_bytes())
        data[0] ^= 0xFF
        path.write_bytes(bytes(data))
        return
    assert isinstance(store, S3ModelStore)
    client: Any = store._client
    key = f"{store.prefix}projects/{project}/versions/{version}/{rel}"
    data = bytearray(client.get_object(Bucket=store.bucket, Key=key)["Body"].read())
    data[0] ^= 0xFF
    client.put_object(Bucket=store.bucket, Key=key, Body=bytes(data))
    shutil.rmtree(store.cache_dir, ignore_errors=True)  # else the verified copy is served


KILLED_WRITER = """
import json, os, signal, sys

from labelbridge.store import LocalModelStore, S3ModelStore

where = json.loads(sys.argv[1])


class DiesUploadingTheSecondFile:
    def __init__(self):
        import boto3

        self.client, self.uploads = boto3.client("s3"), 0

    def __getattr__(self, name):
        return getattr(self.client, name)

    def upload_file(self, *args):
        self.uploads += 1
        if self.uploads == 2:
            os.kill(os.getpid(), signal.SIGKILL)
        return self.client.upload_file(*args)


if "root" in where:
    store = LocalModelStore(where["root"])
else:
    client = DiesUploadingTheSecondFile()
    store = S3ModelStore(where["bucket"], where["prefix"], cache_dir=where["cache"], client=client)
with store.new_version("1", "m") as staging:
    for name in ("a.bin", "b.bin", "c.bin"):
        (staging.path / name).write_bytes(name.encode() * 1000)
    if "root" in where:
        os.kill(os.getpid(), signal.SIGKILL)
"""


def kill_a_writer(store: ModelStore) -> None:
    """A process writing version m-v2 into the same storage gets SIGKILL (no `finally` runs):
    the local one while it fills its staging folder, the S3 one uploading its second file."""
    if isinstance(store, LocalModelStore):
        where = {"root": str(store.root)}
    else:
        assert isinstance(store, S3ModelStore)  # the same cache: a process on this machine
        where = {
            "bucket": store.bucket,
            "prefix": store.prefix,
            "cache": str(store.cache_dir.parent),
        }
    done = subprocess.run(
        [sys.executable, "-c", KILLED_WRITER, json.dumps(where)],
        env=os.environ,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == -signal.SIGKILL, done.stderr


def unfinished_objects(store: S3ModelStore, project: str = "1") -> list[str]:
    """Keys of versions without _meta.json in the bucket."""
    client: Any = store._client
    base = f"{store.prefix}projects/{project}/versions/"
    listed = client.list_objects_v2(Bucket=store.bucket, Prefix=base).get("Contents", [])
    keys = [item["Key"] for item in listed]
    published = {key[len(base) :].split("/")[0] for key in keys if key.endswith("/_meta.json")}
    return [key for key in keys if key[len(base) :].split("/")[0] not in published]


def leftovers(store: ModelStore, project: str = "1") -> list[str]:
    """What writers left behind: staging folders, local markers, unfinished S3 objects."""
    if isinstance(store, LocalModelStore):
        folder = store.root / "projects" / project
        found = [*(folder / ".staging").iterdir(), *(folder / "versions").glob(".reserved-*")]
        return sorted(path.name for path in found)
    assert isinstance(store, S3ModelStore)
    staging = store.cache_dir / ".staging"
    found = sorted(path.name for path in staging.iterdir()) if staging.is_dir() else []
    return found + unfinished_objects(store, project)


def test_publish_and_read_back(store: ModelStore) -> None:
    assert store.current_name("1") is None and store.current("1") is None
    first = publish(store, **{"weights.txt": "one", "sub__vocab.txt": "a b"})
    assert first == "m-v1" and store.current_name("1") == first
    meta = store.current("1")
    assert meta is not None and meta.project == "1" and meta.event == "TRAIN"
    assert meta.metrics == {"score": 0.5} and sorted(meta.files) == ["sub/vocab.txt", "weights.txt"]
    folder = store.open_version("1", first)
    assert (folder / "weights.txt").read_text() == "one"
    assert (folder / "sub" / "vocab.txt").read_text() == "a b"
    second = publish(store, **{"weights.txt": "two"})
    assert second == "m-v2" and store.current_name("1") == second
    assert names(store) == [second, first]  # newest first
    assert (store.open_version("1", first) / "weights.txt").read_text() == "one"
    assert store.projects() == ["1"]


def test_current_moves_only_on_a_clean_exit(make_store: StoreFactory) -> None:
    writer, reader = make_store(), make_store()
    first = publish(writer)
    with writer.new_version("1", "m") as staging:
        (staging.path / "weights.txt").write_text("new")
        assert reader.current_name("1") == first and names(reader) == [first]
        assert writer.current_name("1") == first
    assert reader.current_name("1") == staging.version == "m-v2"
    assert names(reader) == ["m-v2", first]


def test_an_exception_inside_publishes_nothing(make_store: StoreFactory) -> None:
    store = make_store()
    first = publish(store)
    with pytest.raises(RuntimeError, match="fit failed"), store.new_version("1", "m") as staging:
        (staging.path / "weights.txt").write_text("half")
        raise RuntimeError("fit failed")
    for view in (store, make_store()):
        assert view.current_name("1") == first and names(view) == [first]
    with pytest.raises(CorruptModelVersion):
        store.open_version("1", staging.version)
    assert not staging.path.exists()
    assert publish(store) == "m-v2"  # nothing of the failed attempt is left, not even its name


def test_concurrent_writers_get_distinct_names(make_store: StoreFactory) -> None:
    writers = [make_store() for _ in range(4)]
    barrier = threading.Barrier(len(writers), timeout=20)
    got: list[str] = []
    errors: list[BaseException] = []

    def write(store: ModelStore, index: int) -> None:
        try:
            barrier.wait()  # reservations race
            with store.new_version("1", "m") as staging:
                (staging.path / "weights.txt").write_text(str(index))
                barrier.wait()  # every name is taken before anyone publishes
            got.append(staging.version)
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(s, i)) for i, s in enumerate(writers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert not errors
    assert sorted(got) == ["m-v1", "m-v2", "m-v3", "m-v4"]
    reader = make_store()
    assert sorted(names(reader)) == sorted(got) and reader.current_name("1") in got
    for version in got:  # each version kept its own files
        index = (reader.open_version("1", version) / "weights.txt").read_text()
        assert got.count(version) == 1 and index.isdigit()


def test_checksum_corruption_is_detected(store: ModelStore) -> None:
    version = publish(store, **{"weights.txt": "precious", "other.txt": "fine"})
    flip_a_byte(store, "1", version, "weights.txt")
    with pytest.raises(CorruptModelVersion, match=r"weights\.txt does not match its checksum"):
        store.open_version("1", version)


def test_duplicate_copies_versions_record_and_current(store: ModelStore) -> None:
    store.put_project(ProjectRecord(project="1", label_config=CONFIG, access_token=TOKEN))
    old = publish(store, **{"weights.txt": "old"})
    new = publish(store, **{"weights.txt": "new"})
    store.set_current("1", old)  # a rollback is what gets duplicated
    publish(store, "3", **{"weights.txt": "replaced"})
    for dst in ("2", "3"):  # a fresh project, and one whose model is replaced
        store.duplicate("1", dst)
        assert store.current_name(dst) == old and names(store, dst) == [new, old]
        assert all(meta.project == dst for meta in store.versions(dst))
        assert (store.open_version(dst, new) / "weights.txt").read_text() == "new"
        record = store.get_project(dst)
        assert record is not None and record.project == dst and record.label_config == CONFIG
    assert names(store) == [new, old] and store.current_name("1") == old  # source untouched
    with pytest.raises(UnknownProject):
        store.duplicate("404", "5")


def test_delete(store: ModelStore) -> None:
    store.put_project(ProjectRecord(project="1", label_config=CONFIG))
    publish(store)
    publish(store, "2")
    assert store.delete("1") is True
    assert store.current_name("1") is None and names(store) == [] and store.get_project("1") is None
    assert store.projects() == ["2"] and store.current_name("2") == "m-v1"
    assert store.delete("1") is False


def test_prune_keeps_the_current_version(store: ModelStore) -> None:
    made = [publish(store, **{"weights.txt": str(i)}) for i in range(4)]
    store.set_current("1", made[0])  # rolled back to the oldest
    assert sorted(store.prune("1", keep=1)) == [made[1], made[2]]
    assert names(store) == [made[3], made[0]] and store.current_name("1") == made[0]
    assert (store.open_version("1", made[0]) / "weights.txt").read_text() == "0"
    assert store.prune("1", keep=1) == []
    assert publish(store) == "m-v5"  # names are never handed out twice


def test_prune_sweeps_what_a_killed_writer_left(make_store: StoreFactory) -> None:
    store, reader = make_store(), make_store()
    first = publish(store, **{"weights.txt": "kept"})
    kill_a_writer(store)
    assert len(leftovers(store)) >= 2, leftovers(store)  # staging + a marker or an object
    for view in (store, reader):  # an unfinished version does not exist for readers
        assert view.current_name("1") == first and names(view) == [first]
        with pytest.raises(CorruptModelVersion):
            view.open_version("1", "m-v2")
    if isinstance(store, S3ModelStore):
        # from S3 alone a dead writer looks like a slow one until UNFINISHED_MAX_AGE has passed
        assert store.prune("1", keep=5) == []
        assert unfinished_objects(store) == ["lb/projects/1/versions/m-v2/a.bin"]
        store.clock = lambda: time.time() + UNFINISHED_MAX_AGE + 60
    assert store.prune("1", keep=5) == []  # only published versions are listed as pruned
    assert leftovers(store) == []
    assert names(reader) == [first] and reader.current_name("1") == first
    assert (reader.open_version("1", first) / "weights.txt").read_text() == "kept"
    with store.new_version("1", "m") as staging:  # a writer at work is left alone
        (staging.path / "weights.txt").write_text("live")
        assert store.prune("1", keep=5) == []
        assert (staging.path / "weights.txt").read_text() == "live"
    assert staging.version != first and reader.current_name("1") == staging.version
    assert (reader.open_version("1", staging.version) / "weights.txt").read_text() == "live"
    assert names(reader) == [staging.version, first]


def test_project_records_round_trip_and_the_token_stays_private(
    store: ModelStore, caplog: pytest.LogCaptureFixture
) -> None:
    assert store.get_project("5") is None
    record = ProjectRecord(
        project="5",
        label_config=CONFIG,
        label_studio_url="http://ls:8080",
        access_token=TOKEN,
        extra_params={"threshold": 0.4},
        kv={"seen": 3},
    )
    with caplog.at_level(logging.DEBUG):
        store.put_project(record)
        back = store.get_project("5")
    assert back == record and back is not None and back.access_token == TOKEN
    assert "5" in store.projects()
    for text in (repr(record), str(record), repr(back), repr(store), str(store)):
        assert TOKEN not in text
    ours = [r for r in caplog.records if r.name.startswith("labelbridge")]
    assert all(TOKEN not in r.getMessage() for r in ours)
    # any library's debug line (botocore logs request bodies) goes through the log handlers'
    # secret filter: nothing reaches a log file with the token in it
    assert all(TOKEN not in mask_secrets(r.getMessage()) for r in caplog.records)


def test_names_that_could_escape_are_refused(store: ModelStore) -> None:
    for bad in ("../x", "a/b", "", ".hidden"):
        with pytest.raises(StoreError):
            store.current_name(bad)


def test_a_staging_folder_removed_under_the_writer_is_not_published(
    make_store: StoreFactory,
) -> None:
    """Swept by mistake (or by anyone) mid-training: refuse, never publish an empty version."""
    store = make_store()
    first = publish(store)
    gone = pytest.raises(StoreError, match="no longer exists")
    with gone, store.new_version("1", "m") as staging:
        (staging.path / "weights.txt").write_text("w")
        shutil.rmtree(staging.path)
    with pytest.raises(StoreError, match="is empty"), store.new_version("1", "m") as staging:
        (staging.path / "weights.txt").write_text("w")
        os.utime(staging.path, ns=(1, 1))  # the folder changed since it was made
        (staging.path / "weights.txt").unlink()
    assert store.current_name("1") == first and names(store) == [first]
