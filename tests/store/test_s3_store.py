"""What only the S3 store has: the order of writes, the cached `current`, the download cache,
the conditional-write check, choosing the store from settings, and a training job that
publishes into S3 while a Backend serves predictions from it."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from labelbridge.errors import MissingDependency, StoreError
from labelbridge.settings import Settings
from labelbridge.store import LocalModelStore, S3ModelStore, open_store
from labelbridge.store.s3 import UNFINISHED_MAX_AGE


class Recording:
    """A boto3 client that records the keys written, in order; `conditional=False` plays an
    S3 clone that ignores If-None-Match."""

    def __init__(self, client: Any, *, conditional: bool = True) -> None:
        self._client = client
        self.conditional = conditional
        self.writes: list[str] = []
        self.gets: list[str] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)

    def put_object(self, **kwargs: Any) -> Any:
        if not self.conditional:
            kwargs.pop("IfNoneMatch", None)
        self.writes.append(kwargs["Key"])
        return self._client.put_object(**kwargs)

    def upload_file(self, filename: str, bucket: str, key: str) -> Any:
        self.writes.append(key)
        return self._client.upload_file(filename, bucket, key)

    def get_object(self, **kwargs: Any) -> Any:
        self.gets.append(kwargs["Key"])
        return self._client.get_object(**kwargs)


def s3_store(bucket: str, tmp_path: Path, client: Any = None, **kw: Any) -> S3ModelStore:
    return S3ModelStore(bucket, "lb", cache_dir=tmp_path / "cache", client=client, **kw)


def test_files_then_metadata_then_current(s3_client: Any, bucket: str, tmp_path: Path) -> None:
    recording = Recording(s3_client)
    store = s3_store(bucket, tmp_path, recording)
    with store.new_version("1", "m") as staging:
        (staging.path / "a.bin").write_bytes(b"a")
        (staging.path / "b.bin").write_bytes(b"b")
    writes = [key for key in recording.writes if "/.probe/" not in key]
    base = "lb/projects/1/"
    assert writes == [
        base + "reserved/m-v1",
        base + "versions/m-v1/a.bin",
        base + "versions/m-v1/b.bin",
        base + "versions/m-v1/_meta.json",
        base + "current",
    ]
    assert store.prefix == "lb/" and repr(store) == f"S3ModelStore('s3://{bucket}/lb/')"


def test_a_failed_upload_leaves_nothing_behind(s3_client: Any, bucket: str, tmp_path: Path) -> None:
    class FailingSecondUpload(Recording):
        def upload_file(self, filename: str, bucket: str, key: str) -> Any:
            if len(self.writes) > 3:  # probe twice, marker, first file: then S3 "fails"
                raise StoreError("S3 PUT failed: SlowDown")
            return super().upload_file(filename, bucket, key)

    store = s3_store(bucket, tmp_path, FailingSecondUpload(s3_client))
    with pytest.raises(StoreError, match="SlowDown"), store.new_version("1", "m") as staging:
        (staging.path / "a.bin").write_bytes(b"a")
        (staging.path / "b.bin").write_bytes(b"b")
    listed = s3_client.list_objects_v2(Bucket=bucket).get("Contents", [])
    assert [item["Key"] for item in listed] == []  # uploaded file and marker removed
    assert store.current_name("1") is None and store.versions("1") == []


def test_current_name_is_cached_for_its_ttl(
    s3_client: Any, bucket: str, tmp_path: Path, wait_for: Callable[..., Any]
) -> None:
    recording = Recording(s3_client)
    reader = s3_store(bucket, tmp_path / "r", recording, current_ttl=0.3)
    writer = s3_store(bucket, tmp_path / "w")
    assert all(reader.current_name("1") is None for _ in range(200))
    assert recording.gets.count("lb/projects/1/current") == 1  # one GET, not one per request
    with writer.new_version("1", "m"):
        pass
    assert writer.current_name("1") == "m-v1"  # a process sees its own publish at once
    began = time.monotonic()
    wait_for(lambda: reader.current_name("1") == "m-v1", timeout=3, interval=0.02)
    assert time.monotonic() - began < 1.0


def test_a_corrupt_cached_copy_is_downloaded_again(
    s3_client: Any, bucket: str, tmp_path: Path
) -> None:
    store = s3_store(bucket, tmp_path)
    with store.new_version("1", "m") as staging:
        (staging.path / "weights.bin").write_bytes(b"\x00" * 1000)
    folder = store.open_version("1", "m-v1")
    assert store.open_version("1", "m-v1") == folder
    (folder / "weights.bin").write_bytes(b"\x01" * 1000)  # damaged on this machine only
    assert (store.open_version("1", "m-v1") / "weights.bin").read_bytes() == b"\x00" * 1000


def test_killed_downloads_are_swept(s3_client: Any, bucket: str, tmp_path: Path) -> None:
    import fcntl

    store = s3_store(bucket, tmp_path)
    for _ in range(2):
        with store.new_version("1", "m") as staging:
            (staging.path / "weights.bin").write_bytes(b"\x00" * 100)
    cached = store.open_version("1", "m-v1").parent
    killed = [cached / ".m-v1.download-0000abcd", cached / ".m-v1.stale-0000abcd"]
    busy = cached / ".m-v2.download-1111abcd"  # a download of m-v2 runs now
    for folder in (*killed, busy):
        folder.mkdir()
        (folder / "weights.bin").write_bytes(b"half")
    with (cached / ".m-v2.lock").open("a") as held:
        fcntl.flock(held.fileno(), fcntl.LOCK_EX)
        assert store.prune("1", keep=5) == []
        assert [p.name for p in cached.glob(".*-*") if p.is_dir()] == [busy.name]
    killed[0].mkdir()
    # opening a version (under its lock) removes that version's killed downloads, no other's
    assert (store.open_version("1", "m-v2") / "weights.bin").read_bytes() == b"\x00" * 100
    assert not busy.exists() and killed[0].exists()


def test_an_endpoint_without_conditional_writes_is_refused(
    s3_client: Any, bucket: str, tmp_path: Path
) -> None:
    store = s3_store(bucket, tmp_path, Recording(s3_client, conditional=False))
    with pytest.raises(StoreError, match="ignores conditional writes"), store.new_version("1", "m"):
        pass
    assert store.current_name("1") is None
    listed = s3_client.list_objects_v2(Bucket=bucket).get("Contents", [])
    assert listed == []  # the probe cleaned up after itself


# --- what dead writers leave: swept by prune once older than UNFINISHED_MAX_AGE ------------
def bucket_keys(client: Any, bucket: str) -> set[str]:
    return {item["Key"] for item in client.list_objects_v2(Bucket=bucket).get("Contents", [])}


def test_unfinished_versions_and_markers_are_swept_once_stale(
    s3_client: Any, bucket: str, tmp_path: Path
) -> None:
    now = [time.time()]
    store = s3_store(bucket, tmp_path, clock=lambda: now[0])
    with store.new_version("1", "m") as staging:
        (staging.path / "a.bin").write_bytes(b"1")
    base = "lb/projects/1/"
    # a writer killed uploading m-v2 (files, no _meta.json), one killed training m-v3 (marker)
    dead = {base + "reserved/m-v2", base + "versions/m-v2/a.bin", base + "versions/m-v2/b.bin"}
    dead.add(base + "reserved/m-v3")
    for key in sorted(dead):
        s3_client.put_object(Bucket=bucket, Key=key, Body=b"x")
    with store.new_version("1", "m") as staging:
        (staging.path / "a.bin").write_bytes(b"4")
    assert staging.version == "m-v4"
    before = bucket_keys(s3_client, bucket)

    now[0] = time.time() + UNFINISHED_MAX_AGE - 60  # as likely a writer still uploading
    assert store.prune("1", keep=5) == [] and bucket_keys(s3_client, bucket) == before

    now[0] = time.time() + UNFINISHED_MAX_AGE + 60
    assert store.prune("1", keep=5) == []
    assert bucket_keys(s3_client, bucket) == before - dead  # published versions' markers stay
    reader = s3_store(bucket, tmp_path / "reader")
    assert [meta.version for meta in reader.versions("1")] == ["m-v4", "m-v1"]
    assert (reader.open_version("1", "m-v1") / "a.bin").read_bytes() == b"1"
    assert reader.current_name("1") == "m-v4"
    with store.new_version("1", "m") as staging:
        pass
    assert staging.version == "m-v5"


def test_the_highest_marker_of_a_dead_writer_stays(
    s3_client: Any, bucket: str, tmp_path: Path
) -> None:
    store = s3_store(bucket, tmp_path, clock=lambda: time.time() + UNFINISHED_MAX_AGE + 60)
    base = "lb/projects/1/"
    for key in ("reserved/m-v1", "versions/m-v1/a.bin"):
        s3_client.put_object(Bucket=bucket, Key=base + key, Body=b"x")
    assert store.prune("1", keep=5) == []
    assert bucket_keys(s3_client, bucket) == {base + "reserved/m-v1"}  # numbers keep growing
    with store.new_version("1", "m") as staging:
        pass
    assert staging.version == "m-v2"


def test_stale_multipart_uploads_are_aborted(s3_client: Any, bucket: str, tmp_path: Path) -> None:
    """A writer killed uploading a big file leaves an invisible, billed multipart upload."""
    key = "lb/projects/1/versions/m-v1/big.bin"
    upload = s3_client.create_multipart_upload(Bucket=bucket, Key=key)
    s3_client.upload_part(
        Bucket=bucket, Key=key, UploadId=upload["UploadId"], PartNumber=1, Body=b"x" * 1024
    )

    def uploads() -> list[str]:
        return [
            u["Key"] for u in s3_client.list_multipart_uploads(Bucket=bucket).get("Uploads", [])
        ]

    (listed,) = s3_client.list_multipart_uploads(Bucket=bucket)["Uploads"]
    initiated = listed["Initiated"].timestamp()  # moto's is a fixed date: go by it
    store = s3_store(bucket, tmp_path, clock=lambda: initiated + UNFINISHED_MAX_AGE - 60)
    assert store.prune("1", keep=5) == [] and uploads() == [key]
    store.clock = lambda: initiated + UNFINISHED_MAX_AGE + 60
    assert store.prune("1", keep=5) == [] and uploads() == []


def test_prune_works_without_multipart_permissions(
    s3_client: Any, bucket: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from botocore.exceptions import ClientError

    class NoMultipartRights(Recording):
        def get_paginator(self, name: str) -> Any:
            if name == "list_multipart_uploads":
                error = {"Error": {"Code": "AccessDenied", "Message": "denied"}}
                raise ClientError(error, "ListMultipartUploads")
            return self._client.get_paginator(name)

    later = time.time() + UNFINISHED_MAX_AGE + 60
    store = s3_store(bucket, tmp_path, NoMultipartRights(s3_client), clock=lambda: later)
    for _ in range(3):
        with store.new_version("1", "m"):
            pass
    s3_client.put_object(Bucket=bucket, Key="lb/projects/1/versions/m-v9/a.bin", Body=b"x")
    with caplog.at_level("WARNING", logger="labelbridge.store"):
        assert store.prune("1", keep=1) == ["m-v2", "m-v1"]
        assert store.prune("1", keep=1) == []
    assert not [key for key in bucket_keys(s3_client, bucket) if "/m-v9/" in key]
    warned = [r.getMessage() for r in caplog.records if "multipart" in r.getMessage()]
    assert len(warned) == 1 and "s3:AbortMultipartUpload" in warned[0]  # once, with the fix


class PrunedMidUpload(Recording):
    """Another machine prunes the project while this writer uploads its second file."""

    def __init__(self, client: Any, pruner: S3ModelStore) -> None:
        super().__init__(client)
        self.pruner = pruner

    def upload_file(self, filename: str, bucket: str, key: str) -> Any:
        if key.endswith("/b.bin"):
            assert self.pruner.prune("1", keep=5) == []
        return super().upload_file(filename, bucket, key)


def test_a_writer_still_uploading_keeps_its_objects(
    s3_client: Any, bucket: str, tmp_path: Path
) -> None:
    pruner = s3_store(bucket, tmp_path / "p")
    writer = s3_store(bucket, tmp_path / "w", PrunedMidUpload(s3_client, pruner))
    with writer.new_version("1", "m") as staging:
        (staging.path / "a.bin").write_bytes(b"a")
        (staging.path / "b.bin").write_bytes(b"b")
    folder = pruner.open_version("1", "m-v1")  # whole: a.bin was not taken for a leftover
    assert (folder / "a.bin").read_bytes() == b"a" and (folder / "b.bin").read_bytes() == b"b"


def test_a_writer_stalled_past_the_age_fails_rather_than_publish_a_hole(
    s3_client: Any, bucket: str, tmp_path: Path
) -> None:
    pruner = s3_store(bucket, tmp_path / "p", clock=lambda: time.time() + UNFINISHED_MAX_AGE + 60)
    writer = s3_store(bucket, tmp_path / "w", PrunedMidUpload(s3_client, pruner))
    vanished = pytest.raises(StoreError, match=r"a\.bin vanished during the upload")
    with vanished, writer.new_version("1", "m") as staging:
        (staging.path / "a.bin").write_bytes(b"a")
        (staging.path / "b.bin").write_bytes(b"b")
    assert pruner.current_name("1") is None and pruner.versions("1") == []
    assert [key for key in bucket_keys(s3_client, bucket) if "/versions/" in key] == []


def test_missing_boto3_names_the_extra(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setitem(sys.modules, "boto3", None)  # import boto3 -> ImportError
    with pytest.raises(MissingDependency) as info:
        S3ModelStore("bucket", cache_dir=tmp_path)
    assert "labelbridge[s3]" in info.value.detail and "labelbridge[s3]" in (info.value.fix or "")


def test_open_store_follows_the_settings(
    aws_env: str, bucket: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert isinstance(open_store(Settings(), tmp_path / "local"), LocalModelStore)
    monkeypatch.setenv("MODEL_STORE", "s3")
    with pytest.raises(StoreError, match="MODEL_STORE_S3_BUCKET"):
        open_store(Settings(), tmp_path)
    monkeypatch.setenv("MODEL_STORE_S3_BUCKET", bucket)
    store = open_store(Settings(), tmp_path)
    assert isinstance(store, S3ModelStore)
    assert store.prefix == "labelbridge/" and store.current_ttl == 1.0
    assert store.cache_dir.parent == tmp_path / "models" / ".s3-cache"
    with store.new_version("1", "m"):
        pass
    assert not (tmp_path / "models" / "projects").exists()  # versions live in the bucket


# --- a training job publishes into S3; a Backend serves it ---------------------------------
MODEL_PY = '''
from collections import Counter

from labelbridge import Model


class Majority(Model):
    """Learns the most frequent choice; predicts it for every task."""

    name = "majority"

    def fit(self, event, data):
        seen = Counter(
            item["value"]["choices"][0]
            for task in data.tasks
            for annotation in task["annotations"]
            for item in annotation["result"]
        )
        (data.output_dir / "label.txt").write_text(seen.most_common(1)[0][0])
        return {"labels": len(seen)}

    def load(self, path):
        return (path / "label.txt").read_text()

    def predict(self, tasks, context):
        label = context.state or "a"
        result = {"from_name": "label", "to_name": "text", "type": "choices",
                  "value": {"choices": [label]}}
        return [{"result": [result], "score": 0.5} for _ in tasks]
'''
CONFIG = (
    '<View><Text name="text" value="$text"/>'
    '<Choices name="label" toName="text"><Choice value="a"/><Choice value="b"/></Choices></View>'
)


def annotated(label: str, count: int) -> list[dict[str, Any]]:
    value = {"choices": [label]}
    result = [{"from_name": "label", "to_name": "text", "type": "choices", "value": value}]
    return [
        {"id": i, "data": {"text": f"t{i}"}, "annotations": [{"id": i, "result": result}]}
        for i in range(1, count + 1)
    ]


def test_a_training_job_publishes_to_s3_and_the_backend_serves_it(
    aws_env: str, bucket: str, tmp_path: Path, wait_for: Callable[..., Any]
) -> None:
    from labelbridge.jobs import EmbeddedJobQueue, JobState
    from labelbridge.loader import load_model_class
    from labelbridge.protocol import PredictRequest, SetupRequest, TrainRequest
    from labelbridge.service import Backend

    backend_dir = tmp_path / "backend"
    backend_dir.mkdir()
    (backend_dir / "model.py").write_text(MODEL_PY)
    settings = Settings(
        model_dir=tmp_path / "models",
        log_dir=tmp_path / "logs",
        model_store="s3",
        model_store_s3_bucket=bucket,
        model_store_s3_prefix="e2e/",
        model_store_s3_current_ttl=0.2,
    )
    queue = EmbeddedJobQueue(settings, tmp_path / "jobs.sqlite3", inline=True)
    backend = Backend(
        load_model_class(backend_dir),
        settings,
        model_ref=str(backend_dir),
        backend_dir=backend_dir,
        queue=queue,
    )
    backend.start(wait=True)
    try:
        assert isinstance(backend.store, S3ModelStore)
        backend.setup(SetupRequest(project="3", schema=CONFIG, access_token="tok-e2e"))
        ask = PredictRequest(project="3", tasks=[{"id": 9, "data": {"text": "x"}}])
        before = backend.predict(ask)
        assert before["model_version"] == "majority-v0"

        job = backend.train(TrainRequest(project="3", annotations=annotated("b", 3)))
        status = backend.job_status(job.job)
        assert status.job_status is JobState.finished, status

        # another machine's view: the version is in the bucket, not in the local folder
        other = S3ModelStore(bucket, "e2e/", cache_dir=tmp_path / "elsewhere")
        assert other.current_name("3") == "majority-v1"
        meta = other.current("3")
        assert meta is not None and meta.metrics["labels"] == 1 and meta.job == job.job
        record = other.get_project("3")
        assert record is not None and record.label_config == CONFIG
        assert not (tmp_path / "models" / "projects").exists()

        after = wait_for(
            lambda: (r := backend.predict(ask))["model_version"] == "majority-v1" and r,
            timeout=5,
        )
        assert after["results"][0]["result"][0]["value"]["choices"] == ["b"]
    finally:
        backend.close()


class PublishedWhileSweeping(Recording):
    """A writer stalled past the age publishes its _meta.json between the sweep's listing and
    its delete (played at the sweep's HEAD of that _meta.json)."""

    def head_object(self, **kwargs: Any) -> Any:
        if kwargs["Key"].endswith("/m-v1/_meta.json"):
            self._client.put_object(Bucket=kwargs["Bucket"], Key=kwargs["Key"], Body=b"{}")
        return self._client.head_object(**kwargs)


def test_the_sweep_spares_a_version_published_after_its_listing(
    s3_client: Any, bucket: str, tmp_path: Path
) -> None:
    later = time.time() + UNFINISHED_MAX_AGE + 60
    store = s3_store(bucket, tmp_path, PublishedWhileSweeping(s3_client), clock=lambda: later)
    base = "lb/projects/1/"
    for key in ("reserved/m-v1", "versions/m-v1/a.bin", "reserved/m-v2", "versions/m-v2/a.bin"):
        s3_client.put_object(Bucket=bucket, Key=base + key, Body=b"x")
    assert store.prune("1", keep=5) == []
    assert bucket_keys(s3_client, bucket) == {
        base + "reserved/m-v1",
        base + "versions/m-v1/a.bin",
        base + "versions/m-v1/_meta.json",
        base + "reserved/m-v2",  # the highest marker stays
    }


class SweptAfterPublish(Recording):
    """A sweep that listed the version before its _meta.json deletes its file right after."""

    def put_object(self, **kwargs: Any) -> Any:
        answer = super().put_object(**kwargs)
        if kwargs["Key"].endswith("/current") and kwargs["Body"] == b"m-v2":
            self._client.delete_object(
                Bucket=kwargs["Bucket"], Key="lb/projects/1/versions/m-v2/a.bin"
            )
        return answer


def test_a_writer_whose_files_vanish_after_its_publish_takes_current_back(
    s3_client: Any, bucket: str, tmp_path: Path
) -> None:
    store = s3_store(bucket, tmp_path, SweptAfterPublish(s3_client))
    with store.new_version("1", "m") as staging:
        (staging.path / "a.bin").write_bytes(b"1")
    vanished = pytest.raises(StoreError, match=r"a\.bin vanished after the publish")
    with vanished, store.new_version("1", "m") as staging:
        (staging.path / "a.bin").write_bytes(b"2")
    reader = s3_store(bucket, tmp_path / "reader")
    assert reader.current_name("1") == "m-v1" and store.current_name("1") == "m-v1"
    assert [meta.version for meta in reader.versions("1")] == ["m-v1"]
    assert not [key for key in bucket_keys(s3_client, bucket) if "/versions/m-v2/" in key]


def test_a_live_writers_staging_is_not_swept_though_its_pid_looks_dead(
    s3_client: Any, bucket: str, tmp_path: Path
) -> None:
    import subprocess

    from labelbridge.store import s3 as s3_module
    from labelbridge.store._common import writer_lock

    finished = subprocess.Popen(["true"])
    finished.wait()
    store = s3_store(bucket, tmp_path)
    folder = store.cache_dir / ".staging" / f"1.m-v1.0000abcd.{finished.pid}@{s3_module._HOST_TAG}"
    folder.parent.mkdir(parents=True)
    with writer_lock(folder.with_name(folder.name + ".lock")):
        folder.mkdir()
        (folder / "w.bin").write_bytes(b"training")
        with store.new_version("1", "m"):
            pass
        store.prune("1", keep=5)
        assert (folder / "w.bin").read_bytes() == b"training"
    store.prune("1", keep=5)  # its lock is free now: a killed writer's
    assert not folder.exists() and not list(folder.parent.glob("*.lock"))
