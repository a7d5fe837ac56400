"""examples/sentiment over real HTTP: predicts before any annotation, learns from annotations."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from examples_harness import EXAMPLES, accuracy, annotated, run_example

from labelbridge.results import choice_result

DATA = EXAMPLES / "sentiment" / "data"


def _rows(name: str) -> list[dict[str, Any]]:
    lines = (DATA / f"{name}.jsonl").read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines if line.strip()]


def test_sentiment_learns_from_annotations(tmp_path: Path) -> None:
    holdout, train = _rows("holdout"), _rows("train")[:120]
    truth = [row["label"] for row in holdout]
    tasks = [{"id": 1000 + i, "data": {"text": row["text"]}} for i, row in enumerate(holdout)]
    with run_example("sentiment", tmp_path) as example:
        assert example.setup() == "sentiment-v0"
        before, version = example.predict(tasks)
        assert version == "sentiment-v0"
        match = example.config.first("Choices")
        annotations = [
            annotated(i + 1, {"text": row["text"]}, [choice_result(match, row["label"])])
            for i, row in enumerate(train)
        ]
        status = example.train(annotations)
        new_version = status["model_version"]
        assert new_version == "sentiment-v1"
        after, version = example.predict(tasks)
        assert version == new_version
        assert all(p["model_version"] == new_version for p in after)
        metrics = example.version_metrics(new_version)

    score_before, score_after = accuracy(before, truth), accuracy(after, truth)
    assert score_after > score_before, (score_before, score_after)
    assert score_after >= 0.9
    assert metrics["trained_on"] == len(train)
    assert metrics["holdout_accuracy"] == score_after
    assert metrics["baseline_accuracy"] == score_before
    print(f"sentiment held-out accuracy {score_before:.3f} -> {score_after:.3f}")
