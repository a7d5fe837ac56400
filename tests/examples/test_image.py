"""examples/image over real HTTP: every picture is a Label Studio upload read with the token
through the assets layer; held-out accuracy rises after training on annotations."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from types import ModuleType

from examples_harness import EXAMPLES, accuracy, annotated, run_example

from fakes import FakeLabelStudio
from labelbridge.results import choice_result

FOLDER = EXAMPLES / "image"


def _shapes() -> ModuleType:
    """The example's own generator: the test's held-out pictures are the model's."""
    spec = importlib.util.spec_from_file_location("image_example_shapes", FOLDER / "shapes.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_image_classifier_reads_uploads_and_learns(tmp_path: Path) -> None:
    shapes = _shapes()
    pool = json.loads((FOLDER / "images" / "labels.json").read_text(encoding="utf-8"))
    with FakeLabelStudio() as ls:
        project = ls.add_project("shapes", (FOLDER / "label_config.xml").read_text())["id"]
        train = [
            (ls.add_upload(project, name, (FOLDER / "images" / name).read_bytes()), label)
            for name, label in sorted(pool.items())
        ]
        holdout = [
            (ls.add_upload(project, f"holdout_{i:03d}.png", shapes.png_bytes(image)), label)
            for i, (image, label) in enumerate(shapes.holdout_set())
        ]
        truth = [label for _, label in holdout]
        tasks = [{"id": 1000 + i, "data": {"image": url}} for i, (url, _) in enumerate(holdout)]
        env = {"LABEL_STUDIO_URL": ls.url, "LABEL_STUDIO_API_KEY": ls.personal_access_token()}
        with run_example("image", tmp_path, env=env) as example:
            assert example.setup(hostname=ls.url, access_token=ls.legacy_token) == "shapes-v0"
            before, version = example.predict(tasks)
            assert version == "shapes-v0"
            assert all(ls.hits(url) == 1 for url, _ in holdout)  # read once, then cached
            match = example.config.first("Choices")
            annotations = [
                annotated(i + 1, {"image": url}, [choice_result(match, label)])
                for i, (url, label) in enumerate(train)
            ]
            new_version = example.train(annotations)["model_version"]
            assert new_version == "shapes-v1"
            assert all(ls.hits(url) >= 1 for url, _ in train)
            after, version = example.predict(tasks)
            assert version == new_version and all(p["model_version"] == new_version for p in after)
            metrics = example.version_metrics(new_version)

    score_before, score_after = accuracy(before, truth), accuracy(after, truth)
    assert score_after > score_before, (score_before, score_after)
    assert score_after >= 0.85
    assert metrics["holdout_accuracy"] == score_after
    assert metrics["baseline_accuracy"] == score_before
    assert metrics["trained_on"] == len(train) and metrics["unreadable"] == 0
    print(f"image held-out accuracy {score_before:.3f} -> {score_after:.3f}")
