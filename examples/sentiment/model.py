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
            return pickle.load(handle)  # noqa: S301 - our own artifact, checksummed by the store

    def predict(self, tasks: list[dict[str, Any]], context: PredictContext) -> list[dict[str, Any]]:
        choices = context.label_config.first("Choices", object_tag="Text")
        clf: Pipeline = context.state if context.state is not None else self.base
        texts = [str(task["data"].get(choices.value_field, "")) for task in tasks]
        probabilities = clf.predict_proba(texts)
        classes = list(clf.classes_)
        allowed = set(choices.labels)
        out = []
        for row in probabilities:
            ranked = sorted(zip(classes, row, strict=True), key=lambda pair: -pair[1])
            label, score = next(((c, p) for c, p in ranked if c in allowed), (None, 0.0))
            if label is None:
                out.append({"result": [], "score": 0.0})
                continue
            out.append(
                {
                    "result": [
                        {
                            "from_name": choices.control.name,
                            "to_name": choices.object.name,
                            "type": "choices",
                            "value": {"choices": [label]},
                            "score": float(score),
                        }
                    ],
                    "score": float(score),
                }
            )
        return out

    def fit(self, event: str, data: TrainingData) -> dict[str, Any]:
        choices = data.label_config.first("Choices", object_tag="Text")
        texts, labels = [], []
        for task, annotation in data.annotations():
            for item in annotation.get("result") or []:
                if item.get("from_name") == choices.control.name and item.get("type") == "choices":
                    picked = item.get("value", {}).get("choices") or []
                    if picked:
                        texts.append(str(task["data"].get(choices.value_field, "")))
                        labels.append(picked[0])
        if len(set(labels)) < 2:
            raise TooFewAnnotations(
                f"{len(labels)} annotation(s) with {len(set(labels))} distinct label(s); "
                "training needs at least 2 annotations covering 2 labels",
                fix="annotate a few more tasks with different labels, then train again",
            )
        usable_seed = [(t, y) for t, y in zip(self.seed_texts, self.seed_labels, strict=True) if y in choices.labels]
        all_texts = texts + [t for t, _ in usable_seed]
        all_labels = labels + [y for _, y in usable_seed]
        clf = _pipeline().fit(all_texts, all_labels)
        with (data.output_dir / "model.pkl").open("wb") as handle:
            pickle.dump(clf, handle)
        metrics: dict[str, Any] = {"trained_on": len(texts), "labels": sorted(set(labels))}
        holdout = [row for row in self.holdout if row["label"] in choices.labels]
        if holdout:
            metrics["holdout_accuracy"] = float(clf.score([r["text"] for r in holdout], [r["label"] for r in holdout]))
            metrics["baseline_accuracy"] = float(
                self.base.score([r["text"] for r in holdout], [r["label"] for r in holdout])
            )
            metrics["score"] = metrics["holdout_accuracy"]
        data.log.info("trained on %d annotations: %s", len(texts), metrics)
        return metrics
