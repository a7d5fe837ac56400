"""Backends written for the public SDK run on labelbridge with only their imports changed.

Each backend in tests/compat_backends is copied, its `label_studio_ml` import lines (and nothing
else) rewritten to `labelbridge.compat`, and served by `labelbridge start` in a subprocess; the
tests speak to it as Label Studio does (/setup, /predict, /webhook, /train, /job_status) against
a fake Label Studio on loopback for annotations and uploads.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import pytest
from compat_harness import (
    BACKENDS,
    PROJECT,
    changed_lines,
    check_text_classifier,
    choice,
    chosen,
    rewrite_imports,
    serve,
)
from PIL import Image

from fakes import FakeLabelStudio

pytestmark = pytest.mark.timeout(120)

SDK_STYLE = ["text_classifier", "ner", "image_boxes", "versioned_response"]


@pytest.mark.parametrize("name", SDK_STYLE)
def test_only_the_import_lines_differ(name: str, tmp_path: Path) -> None:
    original = BACKENDS / name
    rewritten = rewrite_imports(name, tmp_path / name)
    diff = changed_lines(original, rewritten)
    assert diff, "the backend must import from label_studio_ml"
    removed = [line[1:] for line in diff if line.startswith("-")]
    added = [line[1:] for line in diff if line.startswith("+")]
    assert len(removed) == len(added)
    assert all(line.startswith("from label_studio_ml.") for line in removed), diff
    assert all(line.startswith("from labelbridge.compat import ") for line in added), diff
    text = (rewritten / "model.py").read_text()
    assert "label_studio_ml" not in text.replace("label-studio-ml", "")


def test_text_classifier_learns_with_get_and_set(captures: dict[str, Any], tmp_path: Path) -> None:
    """START_TRAINING as Label Studio sends it: fit() downloads the project's annotations from
    Label Studio and stores word counts with self.set; predict() reads them with self.get in
    the server process. An ANNOTATION_CREATED event then teaches one more annotation, read
    from the webhook payload, on top of the counts the previous version stored."""
    backend = rewrite_imports("text_classifier", tmp_path / "text_classifier")
    check_text_classifier(backend, tmp_path, captures)


NER_CONFIG = (
    '<View><Labels name="ner" toName="text"><Label value="Person"/><Label value="Location"/>'
    '<Label value="Organization"/></Labels><Text name="text" value="$document"/></View>'
)


def test_ner_returns_spans(tmp_path: Path) -> None:
    backend = rewrite_imports("ner", tmp_path / "ner")
    text = "Ada Lovelace met Alan Turing in London, far from Acme Corp."
    tasks = [{"id": 1, "data": {"document": text}}, {"id": 2, "data": {"document": "nothing"}}]
    with serve(backend, tmp_path) as server:
        version = server.setup(NER_CONFIG)
        assert version == "gazetteerner-v0"
        (found, empty), answered = server.predict(NER_CONFIG, tasks)
    assert answered == version and found["model_version"] == version
    spans = [(r["value"]["text"], r["value"]["labels"][0]) for r in found["result"]]
    assert spans == [
        ("Ada Lovelace", "Person"),
        ("Alan Turing", "Person"),
        ("London", "Location"),
        ("Acme Corp", "Organization"),
    ]
    for item in found["result"]:
        value = item["value"]
        assert text[value["start"] : value["end"]] == value["text"]
    assert empty["result"] == [] and empty["model_version"] == version


IMAGE_CONFIG = (
    '<View><Image name="image" value="$image"/><RectangleLabels name="box" toName="image">'
    '<Label value="Red"/><Label value="Blue"/></RectangleLabels></View>'
)


def _png(size: tuple[int, int], boxes: dict[tuple[int, int, int, int], str]) -> bytes:
    picture = Image.new("RGB", size, "white")
    for box, colour in boxes.items():
        picture.paste(colour, box)
    out = io.BytesIO()
    picture.save(out, format="PNG")
    return out.getvalue()


def test_image_boxes_read_an_upload_with_setup_credentials(tmp_path: Path) -> None:
    """self.get_local_path(url, task_id=...) reads a Label Studio upload with the URL and
    token /setup sent (no LABEL_STUDIO_URL in the environment), once, then from the cache."""
    backend = rewrite_imports("image_boxes", tmp_path / "image_boxes")
    with FakeLabelStudio() as ls:
        project = ls.add_project("boxes", IMAGE_CONFIG)["id"]
        url = ls.add_upload(project, "blobs.png", _png((200, 100), {(20, 10, 60, 50): "red"}))
        tasks = [{"id": 7, "data": {"image": url}}]
        with serve(backend, tmp_path) as server:
            version = server.setup(IMAGE_CONFIG, hostname=ls.url, access_token=ls.legacy_token)
            (prediction,), answered = server.predict(IMAGE_CONFIG, tasks)
            server.predict(IMAGE_CONFIG, tasks)
        assert ls.hits(url) == 1
    assert answered == version == prediction["model_version"] == "colorboxes-v0"
    (box,) = prediction["result"]
    assert box["value"]["rectanglelabels"] == ["Red"]
    assert (box["original_width"], box["original_height"]) == (200, 100)
    expected = {"x": 10.0, "y": 10.0, "width": 20.0, "height": 40.0}
    assert {k: round(box["value"][k], 3) for k in expected} == expected


URGENCY = (
    '<View><Text name="text" value="$text"/><Choices name="urgency" toName="text" '
    'choice="single"><Choice value="Urgent"/><Choice value="Normal"/></Choices></View>'
)


def test_model_response_versions_are_the_published_ones(tmp_path: Path) -> None:
    """predict() answers a ModelResponse with its own model_version ("1.0.0", then what fit()
    set); /setup and every prediction report the version labelbridge published instead, and
    the SDK's own shows in the version's metrics."""
    backend = rewrite_imports("versioned_response", tmp_path / "versioned_response")
    tasks = [
        {"id": 1, "data": {"text": "server down tonight"}},
        {"id": 2, "data": {"text": "reply asap please"}},
    ]
    with serve(backend, tmp_path) as server:
        v0 = server.setup(URGENCY)
        before, answered = server.predict(URGENCY, tasks)
        assert answered == v0 == "urgencyclassifier-v0"
        assert [p["model_version"] for p in before] == [v0, v0]
        assert [chosen(p) for p in before] == ["Normal", "Urgent"]
        annotated = [
            {
                "id": 10,
                "data": {"text": "server down again"},
                "annotations": [{"id": 1, "result": choice("urgency", "Urgent")}],
            }
        ]
        body = {"annotations": annotated, "project": PROJECT, "label_config": URGENCY}
        v1 = server.wait_job(server.post("/train", body)["job"])["model_version"]
        assert v1 == "urgencyclassifier-v1"
        assert server.setup(URGENCY) == v1
        after, answered = server.predict(URGENCY, tasks)
        assert answered == v1 and [p["model_version"] for p in after] == [v1, v1]
        assert [chosen(p) for p in after] == ["Urgent", "Urgent"]
        assert server.version_metrics(v1)["sdk_model_version"] == "1.1.0"
