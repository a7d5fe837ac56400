"""Image classification (any `<Choices>` on `<Image>`): edge orientation features + logistic
regression.

A shape is told by its edges: a circle's run in every direction, a square's in two directions
90 degrees apart, a triangle's in three, 60 degrees apart. So each image becomes a histogram of
gradient orientations (weighted by edge strength) and the magnitudes of its Fourier transform,
which do not change when the shape turns. Every image is read through the assets layer, so
Label Studio uploads, local storage, cloud URLs and data URIs all work, with the project's token.

Before the first annotation it predicts from three seed pictures; every training job refits on
the project's annotations (plus the seed) and reports its accuracy on 90 held-out pictures that
shapes.py generates the same way on every machine.
"""

from __future__ import annotations

import pickle
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from shapes import holdout_set, seed_set
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler

from labelbridge import AssetError, Model, PredictContext, TooFewAnnotations, TrainingData
from labelbridge.assets import AssetResolver
from labelbridge.results import choice_examples, choices_prediction, task_value

BINS = 18  # 10 degrees each, over 0..180 (an edge's direction has no sign)


def features(image: Image.Image) -> np.ndarray:
    """Rotation-invariant edge features of one picture (any size, any mode)."""
    rgb = np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0
    height, width = rgb.shape[:2]
    pad = np.pad(rgb, ((1, 1), (1, 1), (0, 0)), mode="edge")
    blur = sum(pad[i : i + height, j : j + width] for i in range(3) for j in range(3)) / 9.0
    gy, gx = np.gradient(blur, axis=(0, 1))
    strength = np.hypot(gx, gy)
    channel = strength.argmax(axis=2)[..., None]  # the colour channel where the edge is clearest
    gx = np.take_along_axis(gx, channel, axis=2)[..., 0]
    gy = np.take_along_axis(gy, channel, axis=2)[..., 0]
    weight = np.take_along_axis(strength, channel, axis=2)[..., 0] ** 2
    angle = np.mod(np.arctan2(gy, gx), np.pi)
    hist, _ = np.histogram(angle, bins=BINS, range=(0.0, np.pi), weights=weight)
    hist = hist / (hist.sum() + 1e-9)
    spectrum = np.abs(np.fft.rfft(hist))[1:7]  # periodicity: 2 for squares, 3 for triangles
    peaks = np.sort(hist)[::-1][:6]  # how concentrated the directions are, whatever the turn
    return np.concatenate([spectrum, peaks])


def _pipeline() -> Pipeline:
    return make_pipeline(StandardScaler(), LogisticRegression(C=1.0, max_iter=2000))


def _fit(images: Sequence[Image.Image], labels: Sequence[str]) -> Pipeline:
    return _pipeline().fit(np.stack([features(im) for im in images]), list(labels))


def _read(
    assets: AssetResolver, items: list[tuple[str, int | None]]
) -> list[Image.Image | AssetError]:
    """Download (concurrently, cached) and open every image; errors are returned in place."""
    out: list[Image.Image | AssetError] = []
    for found in assets.get_many(items):
        if isinstance(found, AssetError):
            out.append(found)
            continue
        try:
            with Image.open(found) as image:
                out.append(image.convert("RGB"))
        except OSError as exc:
            out.append(AssetError(f"{found.name} is not an image Pillow can read: {exc}"))
    return out


class ShapeClassifier(Model):
    name = "shapes"
    min_annotations = 2

    def setup(self) -> None:
        seed = seed_set()
        self.seed = seed
        self.holdout = holdout_set()
        self.holdout_features = np.stack([features(im) for im, _ in self.holdout])
        self.base = _fit([im for im, _ in seed], [label for _, label in seed])

    def load(self, path: Path) -> Pipeline:
        with (path / "model.pkl").open("rb") as handle:
            return pickle.load(handle)

    def predict(self, tasks: list[dict[str, Any]], context: PredictContext) -> list[Any]:
        match = context.label_config.first("Choices", object_tag="Image")
        clf: Pipeline = context.state if context.state is not None else self.base
        wanted = [(i, task_value(t, match)) for i, t in enumerate(tasks)]
        wanted = [(i, url) for i, url in wanted if isinstance(url, str) and url]
        images = _read(context.assets, [(url, tasks[i].get("id")) for i, url in wanted])
        errors = [im for im in images if isinstance(im, AssetError)]
        if errors and len(errors) == len(images):
            raise errors[0]  # nothing readable: the cause (auth, URL ...) is the answer
        for error in errors:
            self.log.warning("skipped an image: %s", error)
        out: list[Any] = [None] * len(tasks)
        ok = [
            (i, im)
            for (i, _), im in zip(wanted, images, strict=True)
            if isinstance(im, Image.Image)
        ]
        if not ok:
            return out
        probabilities = clf.predict_proba(np.stack([features(im) for _, im in ok]))
        for (i, _), row in zip(ok, probabilities, strict=True):
            out[i] = choices_prediction(match, dict(zip(clf.classes_, row, strict=True)))
        return out

    def fit(self, event: str, data: TrainingData) -> dict[str, Any]:
        match = data.label_config.first("Choices", object_tag="Image")
        examples = choice_examples(data, match)
        images = _read(data.assets, [(e.value, e.task.get("id")) for e in examples])
        usable = [
            (im, e.label)
            for im, e in zip(images, examples, strict=True)
            if isinstance(im, Image.Image)
        ]
        skipped = len(examples) - len(usable)
        if skipped:
            first = next(im for im in images if isinstance(im, AssetError))
            data.log.warning("%d annotated image(s) unreadable, e.g.: %s", skipped, first)
        labels = {label for _, label in usable}
        if len(labels) < 2:
            raise TooFewAnnotations(
                f"{len(usable)} readable annotated image(s) with {len(labels)} distinct label(s); "
                "training needs at least 2 labels",
                fix="annotate a few more images with different labels, then train again",
            )
        seed = [(im, label) for im, label in self.seed if label in match.control.label_set]
        clf = _fit([im for im, _ in usable + seed], [label for _, label in usable + seed])
        with (data.output_dir / "model.pkl").open("wb") as handle:
            pickle.dump(clf, handle)
        keep = [i for i, (_, label) in enumerate(self.holdout) if label in match.control.label_set]
        metrics: dict[str, Any] = {"images": len(usable), "unreadable": skipped}
        metrics["labels"] = sorted(labels)
        if keep:
            x = self.holdout_features[keep]
            y = [self.holdout[i][1] for i in keep]
            metrics["holdout_accuracy"] = float(clf.score(x, y))
            metrics["baseline_accuracy"] = float(self.base.score(x, y))
            metrics["score"] = metrics["holdout_accuracy"]
        data.log.info("trained on %d images: %s", len(usable), metrics)
        return metrics
