"""examples/ner over real HTTP: character spans that Label Studio highlights exactly (Unicode
included), and entity-level F1 on held-out sentences that rises with annotations."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from examples_harness import EXAMPLES, annotated, run_example

from labelbridge.results import Span, span_result

DATA = EXAMPLES / "ner" / "data"
# Offsets are code points: after an emoji, JavaScript's UTF-16 positions would be one more.
UNICODE = [
    ("🎉 Congratulations to Zoë Dubois on the new role at Café Lumière!",
     {("Zoë Dubois", "PER"), ("Café Lumière", "ORG")}),
    ("📍 São Paulo: Grünfeld AG is hiring.", {("São Paulo", "LOC"), ("Grünfeld AG", "ORG")}),
    ("王芳 was born in 東京.", {("王芳", "PER"), ("東京", "LOC")}),
]  # fmt: skip


def _rows(name: str) -> list[dict[str, Any]]:
    lines = (DATA / f"{name}.jsonl").read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines if line.strip()]


def _spans(task: dict[str, Any], prediction: dict[str, Any]) -> set[Span]:
    """The predicted spans, checking each one highlights exactly its own `text`."""
    text = task["data"]["text"]
    found = set()
    for item in prediction["result"]:
        value = item["value"]
        assert value["text"] == text[value["start"] : value["end"]], (text, value)
        assert 0.0 <= item["score"] <= 1.0
        found.add(Span(value["start"], value["end"], value["labels"][0]))
    return found


def _f1(gold: list[set[Span]], predicted: list[set[Span]]) -> float:
    hits = sum(len(g & p) for g, p in zip(gold, predicted, strict=True))
    n_gold, n_pred = sum(map(len, gold)), sum(map(len, predicted))
    if not hits:
        return 0.0
    precision, recall = hits / n_pred, hits / n_gold
    return 2 * precision * recall / (precision + recall)


def test_ner_learns_spans_with_exact_unicode_offsets(tmp_path: Path) -> None:
    holdout, train = _rows("holdout"), _rows("train")[:120]
    gold = [{Span(s["start"], s["end"], s["label"]) for s in row["spans"]} for row in holdout]
    tasks = [{"id": 1000 + i, "data": {"text": row["text"]}} for i, row in enumerate(holdout)]
    unicode_tasks = [
        {"id": 2000 + i, "data": {"text": text}} for i, (text, _) in enumerate(UNICODE)
    ]
    with run_example("ner", tmp_path) as example:
        assert example.setup() == "ner-v0"
        before, version = example.predict(tasks)
        assert version == "ner-v0"
        match = example.config.first("Labels")
        annotations = [
            annotated(
                i + 1,
                {"text": row["text"]},
                [
                    span_result(match, row["text"], s["start"], s["end"], s["label"])
                    for s in row["spans"]
                ],
            )
            for i, row in enumerate(train)
        ]
        new_version = example.train(annotations)["model_version"]
        assert new_version == "ner-v1"
        after, version = example.predict(tasks)
        assert version == new_version and all(p["model_version"] == new_version for p in after)
        unicode_after, _ = example.predict(unicode_tasks)
        metrics = example.version_metrics(new_version)

    f1_before = _f1(gold, [_spans(t, p) for t, p in zip(tasks, before, strict=True)])
    f1_after = _f1(gold, [_spans(t, p) for t, p in zip(tasks, after, strict=True)])
    assert f1_after > f1_before, (f1_before, f1_after)
    assert f1_after >= 0.9
    assert metrics["holdout_f1"] == f1_after and metrics["baseline_f1"] == f1_before
    assert metrics["trained_on"] == len(train)
    for task, prediction, (text, expected) in zip(
        unicode_tasks, unicode_after, UNICODE, strict=True
    ):
        spans = _spans(task, prediction)
        assert {(text[s.start : s.end], s.label) for s in spans} == expected
        for entity, label in expected:  # Python's str.index counts code points, like Label Studio
            start = text.index(entity)
            assert Span(start, start + len(entity), label) in spans
    print(f"ner held-out entity F1 {f1_before:.3f} -> {f1_after:.3f}")
