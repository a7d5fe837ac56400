"""Named entities (any `<Labels>` on `<Text>`): a per-token classifier over BIO tags.

Each token gets features (the word, its shape, prefixes and suffixes, its neighbours) and a
logistic regression predicts its tag (B-PER, I-PER, O ...); consecutive tags become spans.
Tokens keep their offsets in the original string, so a predicted span is exactly
`text[start:end]` in code points, which is what Label Studio highlights, for accented, CJK and
emoji text alike. Before the first annotation it predicts from ten seed sentences shipped in
data/; every training job refits on the project's annotations (plus the seed) and reports the
entity-level F1 on a held-out set, so /versions shows the model getting better.
"""

from __future__ import annotations

import json
import pickle
import re
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.feature_extraction import DictVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline, make_pipeline

from labelbridge import Model, PredictContext, TooFewAnnotations, TrainingData
from labelbridge.label_config import ControlMatch
from labelbridge.results import Span, prediction, span_examples, span_result, task_value

DATA = Path(__file__).parent / "data"
# Words (with inner hyphens or apostrophes), or any single other non-space character: emoji
# and punctuation are tokens of their own, so they never end up inside an entity.
TOKEN = re.compile(r"\w+(?:[-'\u2019]\w+)*|[^\w\s]")


def tokenize(text: str) -> list[tuple[int, int]]:
    """(start, end) of every token, as code point offsets into `text`."""
    return [m.span() for m in TOKEN.finditer(text)]


def _shape(word: str) -> str:
    """'Zoë' -> 'Xx', 'GmbH' -> 'XxXx', '2026' -> 'd', '東京' -> 'C': runs collapsed."""
    out: list[str] = []
    for char in word:
        if char.isupper():
            kind = "X"
        elif char.islower():
            kind = "x"
        elif char.isdigit():
            kind = "d"
        elif char.isalpha():
            kind = "C"  # letters without case: CJK and others
        else:
            kind = char
        if not out or out[-1] != kind:
            out.append(kind)
    return "".join(out)


def _features(words: Sequence[str], i: int) -> dict[str, Any]:
    word = words[i]
    lower = word.lower()

    def near(offset: int) -> str:
        j = i + offset
        return words[j].lower() if 0 <= j < len(words) else ("<s>" if j < 0 else "</s>")

    def near_shape(offset: int) -> str:
        j = i + offset
        return _shape(words[j]) if 0 <= j < len(words) else "-"

    return {
        "w": lower,
        "shape": _shape(word),
        "pre2": lower[:2],
        "suf2": lower[-2:],
        "suf3": lower[-3:],
        "title": word[:1].isupper(),
        "upper": word.isupper() and len(word) > 1,
        "ascii": word.isascii(),
        "first": i == 0,
        "-1w": near(-1),
        "-2w": near(-2),
        "+1w": near(1),
        "+2w": near(2),
        "-1shape": near_shape(-1),
        "+1shape": near_shape(1),
        "-1w|shape": f"{near(-1)}|{_shape(word)}",
    }


def sentence_features(text: str) -> tuple[list[tuple[int, int]], list[dict[str, Any]]]:
    offsets = tokenize(text)
    words = [text[s:e] for s, e in offsets]
    return offsets, [_features(words, i) for i in range(len(words))]


def bio_tags(offsets: Sequence[tuple[int, int]], spans: Iterable[Span]) -> list[str]:
    """One tag per token; a token touching a span belongs to it (spans drawn mid-word too)."""
    tags = ["O"] * len(offsets)
    for span in spans:
        inside = [i for i, (s, e) in enumerate(offsets) if s < span.end and e > span.start]
        for n, i in enumerate(inside):
            if tags[i] == "O":  # overlapping spans: the first one wins
                tags[i] = f"{'B' if n == 0 else 'I'}-{span.label}"
    return tags


def decode(
    offsets: Sequence[tuple[int, int]], tags: Sequence[str], confidence: Sequence[float]
) -> list[tuple[Span, float]]:
    """Spans from token tags (an I- after O or another label starts a span too), each scored
    with the mean confidence of its tokens."""
    spans: list[tuple[Span, float]] = []
    current: tuple[int, int, str, list[float]] | None = None
    for (start, end), tag, p in zip(offsets, tags, confidence, strict=True):
        kind, _, label = tag.partition("-")
        if current is not None and kind == "I" and label == current[2]:
            current = (current[0], end, label, [*current[3], p])
            continue
        if current is not None:
            spans.append((Span(current[0], current[1], current[2]), float(np.mean(current[3]))))
            current = None
        if kind in ("B", "I"):
            current = (start, end, label, [p])
    if current is not None:
        spans.append((Span(current[0], current[1], current[2]), float(np.mean(current[3]))))
    return spans


def _pipeline() -> Pipeline:
    return make_pipeline(DictVectorizer(), LogisticRegression(C=5.0, max_iter=2000))


def train(examples: Iterable[tuple[str, Sequence[Span]]]) -> Pipeline:
    features: list[dict[str, Any]] = []
    tags: list[str] = []
    for text, spans in examples:
        offsets, feats = sentence_features(text)
        features.extend(feats)
        tags.extend(bio_tags(offsets, spans))
    return _pipeline().fit(features, tags)


def predict_spans(
    clf: Pipeline, text: str, allowed: frozenset[str] | None
) -> tuple[list[tuple[Span, float]], float | None]:
    """Spans with their scores, and the task's score: the confidence of its least certain
    token, so a sentence with one doubtful word sorts first for review."""
    offsets, feats = sentence_features(text)
    if not offsets:
        return [], None
    classes = list(clf.classes_)
    probabilities = clf.predict_proba(feats)
    if allowed is not None:  # tags of labels the config lacks cannot be predicted
        keep = np.array([c == "O" or c.partition("-")[2] in allowed for c in classes])
        probabilities = probabilities * keep
        probabilities /= probabilities.sum(axis=1, keepdims=True)
    best = probabilities.argmax(axis=1)
    confidence = probabilities.max(axis=1)
    tags = [classes[i] for i in best]
    return decode(offsets, tags, confidence.tolist()), float(confidence.min())


def entity_f1(gold: Sequence[Sequence[Span]], predicted: Sequence[Sequence[Span]]) -> dict:
    """Entity-level precision, recall, F1: a span counts only with exact offsets and label."""
    hits = sum(len(set(g) & set(p)) for g, p in zip(gold, predicted, strict=True))
    n_gold, n_pred = sum(map(len, gold)), sum(map(len, predicted))
    precision = hits / n_pred if n_pred else 0.0
    recall = hits / n_gold if n_gold else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": precision, "recall": recall, "f1": f1}


def load_rows(name: str) -> list[tuple[str, list[Span]]]:
    with (DATA / f"{name}.jsonl").open(encoding="utf-8") as handle:
        rows = [json.loads(line) for line in handle if line.strip()]
    return [(r["text"], [Span(s["start"], s["end"], s["label"]) for s in r["spans"]]) for r in rows]


def _labels_match(match: ControlMatch) -> frozenset[str] | None:
    return None if match.control.dynamic_labels else match.control.label_set


class EntityTagger(Model):
    name = "ner"
    min_annotations = 2

    def setup(self) -> None:
        self.seed = load_rows("seed")
        self.holdout = load_rows("holdout")
        self.base = train(self.seed)

    def load(self, path: Path) -> Pipeline:
        with (path / "model.pkl").open("rb") as handle:
            return pickle.load(handle)

    def predict(self, tasks: list[dict[str, Any]], context: PredictContext) -> list[Any]:
        match = context.label_config.first("Labels", object_tag="Text")
        clf: Pipeline = context.state if context.state is not None else self.base
        allowed = _labels_match(match)
        out: list[Any] = []
        for task in tasks:
            text = task_value(task, match)
            if isinstance(text, str) and match.object.value_type == "url":
                text = context.assets.read_text(text, task_id=task.get("id"))
            if not isinstance(text, str) or not text:
                out.append(None)
                continue
            spans, score = predict_spans(clf, text, allowed)
            result = [span_result(match, text, s.start, s.end, s.label, score=p) for s, p in spans]
            out.append(prediction(result, score))
        return out

    def _score(self, clf: Pipeline, allowed: frozenset[str] | None) -> dict[str, float]:
        rows = [
            (t, [s for s in spans if allowed is None or s.label in allowed])
            for t, spans in self.holdout
        ]
        predicted = [[s for s, _ in predict_spans(clf, t, allowed)[0]] for t, _ in rows]
        return entity_f1([spans for _, spans in rows], predicted)

    def fit(self, event: str, data: TrainingData) -> dict[str, Any]:
        match = data.label_config.first("Labels", object_tag="Text")
        allowed = _labels_match(match)
        examples = span_examples(data, match)
        labels = sorted({s.label for e in examples for s in e.spans})
        if not labels:
            raise TooFewAnnotations(
                f"{len(examples)} annotated text(s) but no labeled span of {match.control.name!r}",
                fix="label a few entities in some tasks, then train again",
            )
        seed: list[tuple[str, Sequence[Span]]] = [
            (t, [s for s in spans if allowed is None or s.label in allowed])
            for t, spans in self.seed
        ]
        clf = train([(e.text, e.spans) for e in examples] + seed)
        with (data.output_dir / "model.pkl").open("wb") as handle:
            pickle.dump(clf, handle)
        after, before = self._score(clf, allowed), self._score(self.base, allowed)
        metrics: dict[str, Any] = {
            "texts": len(examples),
            "spans": sum(len(e.spans) for e in examples),
            "labels": labels,
            "holdout_f1": after["f1"],
            "holdout_precision": after["precision"],
            "holdout_recall": after["recall"],
            "baseline_f1": before["f1"],
            "score": after["f1"],
        }
        data.log.info("trained on %d texts: %s", len(examples), metrics)
        return metrics
