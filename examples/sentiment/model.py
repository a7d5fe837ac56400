"""Sentiment (or any Choices-on-Text) classifier: TF-IDF + logistic regression.

Before the first annotation it predicts from a dozen seed sentences shipped in data/; every
training job refits on the project's annotations (plus the seed) and reports its accuracy on
a held-out set, so /versions shows the model getting better.
"""

from __future__ import annotations

import json
import pickle
from pathlib import Path
from typing import Any

from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline, make_pipeline

from labelbridge import Model, PredictContext, TooFewAnnotations, TrainingData
from labelbridge.results import choice_pairs, choices_prediction, task_value

DATA = Path(__file__).parent / "data"


def _rows(name: str) -> list[dict[str, str]]:
    with (DATA / f"{name}.jsonl").open(encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


def _pipeline() -> Pipeline:
    return make_pipeline(
        TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, min_df=1),
        LogisticRegression(C=4.0, max_iter=1000),
    )


class SentimentClassifier(Model):
    name = "sentiment"
    min_annotations = 2

    def setup(self) -> None:
        seed = _rows("seed")
        self.seed_texts = [row["text"] for row in seed]
        self.seed_labels = [row["label"] for row in seed]
        self.holdout = _rows("holdout")
        self.base = _pipeline().fit(self.seed_texts, self.seed_labels)

    def load(self, path: Path) -> Pipeline:
        with (path / "model.pkl").open("rb") as handle:
            return pickle.load(handle)

    def predict(self, tasks: list[dict[str, Any]], context: PredictContext) -> list[dict[str, Any]]:
        choices = context.label_config.first("Choices", object_tag="Text")
        clf: Pipeline = context.state if context.state is not None else self.base
        texts = [str(task_value(task, choices) or "") for task in tasks]
        return [
            choices_prediction(choices, dict(zip(clf.classes_, row, strict=True)))
            for row in clf.predict_proba(texts)
        ]

    def fit(self, event: str, data: TrainingData) -> dict[str, Any]:
        choices = data.label_config.first("Choices", object_tag="Text")
        pairs = choice_pairs(data, choices)
        texts, labels = [str(text) for text, _ in pairs], [label for _, label in pairs]
        if len(set(labels)) < 2:
            raise TooFewAnnotations(
                f"{len(labels)} annotation(s) with {len(set(labels))} distinct label(s); "
                "training needs at least 2 annotations covering 2 labels",
                fix="annotate a few more tasks with different labels, then train again",
            )
        usable_seed = [
            (t, y)
            for t, y in zip(self.seed_texts, self.seed_labels, strict=True)
            if y in choices.control.label_set
        ]
        all_texts = texts + [t for t, _ in usable_seed]
        all_labels = labels + [y for _, y in usable_seed]
        clf = _pipeline().fit(all_texts, all_labels)
        with (data.output_dir / "model.pkl").open("wb") as handle:
            pickle.dump(clf, handle)
        metrics: dict[str, Any] = {"trained_on": len(texts), "labels": sorted(set(labels))}
        holdout = [row for row in self.holdout if row["label"] in choices.control.label_set]
        if holdout:
            x, y = [r["text"] for r in holdout], [r["label"] for r in holdout]
            metrics["holdout_accuracy"] = float(clf.score(x, y))
            metrics["baseline_accuracy"] = float(self.base.score(x, y))
            metrics["score"] = metrics["holdout_accuracy"]
        data.log.info("trained on %d annotations: %s", len(texts), metrics)
        return metrics
