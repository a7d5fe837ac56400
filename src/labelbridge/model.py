"""`Model`: the one class a user subclasses, and the objects handed to it.

A model object lives for the whole process: `setup()` runs once (in the background at start,
so /health and /setup answer at once), `load()` turns a published version's files into what
`predict()` needs and is cached per (project, version), and `fit()` only ever runs inside a
training job, never inside a request.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from labelbridge.label_config import LabelConfig

if TYPE_CHECKING:
    from labelbridge.assets import AssetResolver
    from labelbridge.settings import Settings

__all__ = ["Model", "PredictContext", "TrainingData"]

PredictionLike = Any  # PredictionValue | dict | list[dict] | None, normalized by the server


def annotations_needed(model_cls: type[Model], settings: Settings) -> tuple[int, str]:
    """Usable annotations a training job needs, and where the number comes from: the model
    class's `min_annotations` if it sets one, else the MIN_ANNOTATIONS_TO_TRAIN setting. The job
    runner enforces it and /health reports it (so the doctor can compare), from this one rule."""
    if model_cls.min_annotations is not None:
        return model_cls.min_annotations, "Model.min_annotations"
    return settings.min_annotations_to_train, "MIN_ANNOTATIONS_TO_TRAIN"


class _ReadsAssets:
    """Task data access with the project's Label Studio URL and token (shared per process)."""

    label_studio_url: str | None
    access_token: str | None
    _assets: AssetResolver | None
    _settings: Settings | None

    @property
    def assets(self) -> AssetResolver:
        """Reads task data (uploads, local files, URLs, s3 ...) with this project's credentials."""
        if self._assets is None:
            from labelbridge.assets import shared_resolver

            self._assets = shared_resolver(self._settings, self.label_studio_url, self.access_token)
        return self._assets

    def get_local_path(self, value: str, *, task_id: int | None = None) -> Path:
        return self.assets.get_local_path(value, task_id=task_id)


@dataclass
class PredictContext(_ReadsAssets):
    """What predict() knows besides the tasks: the project, its config and the loaded version."""

    project: str
    label_config: LabelConfig
    model_version: str
    state: Any = None
    interactive: dict[str, Any] | None = None
    params: dict[str, Any] = field(default_factory=dict)
    label_studio_url: str | None = None
    access_token: str | None = field(default=None, repr=False)
    _assets: AssetResolver | None = field(default=None, repr=False)
    _settings: Settings | None = field(default=None, repr=False)


@dataclass
class TrainingData(_ReadsAssets):
    """Everything fit() needs: the annotated tasks, where to write artifacts, what came before."""

    project: str
    label_config: LabelConfig
    tasks: list[dict[str, Any]]
    output_dir: Path
    model_version: str
    event: str = "START_TRAINING"
    previous_dir: Path | None = None
    previous_version: str | None = None
    label_studio_url: str | None = None
    access_token: str | None = field(default=None, repr=False)
    log: logging.Logger = field(default_factory=lambda: logging.getLogger("labelbridge.train"))
    _assets: AssetResolver | None = field(default=None, repr=False)
    _settings: Settings | None = field(default=None, repr=False)

    def annotations(self) -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
        """(task, annotation) pairs to learn from: cancelled (skipped) annotations left out."""
        for task in self.tasks:
            for annotation in task.get("annotations") or []:
                if annotation.get("was_cancelled"):
                    continue
                yield task, annotation

    @property
    def annotation_count(self) -> int:
        return sum(1 for _ in self.annotations())


class Model:
    """Subclass this; override `predict`, and `setup`, `fit`, `load` as your model needs."""

    #: Prefix of model versions ("<name>-v<n>"); the class name in lower case by default.
    name: ClassVar[str | None] = None
    #: Fewer annotations than this fail a training job with a clear message (None: settings).
    min_annotations: ClassVar[int | None] = None

    def __init__(self, settings: Settings | None = None) -> None:
        self.settings = settings
        self.log = logging.getLogger(f"labelbridge.model.{type(self).__name__}")

    @classmethod
    def version_prefix(cls) -> str:
        return (cls.name or cls.__name__).lower()

    def setup(self) -> None:
        """Load heavy, shared resources once per process (runs in the background at start)."""

    def load(self, path: Path) -> Any:
        """Turn a published version's folder into what predict() uses (cached per version)."""
        return path

    def predict(
        self, tasks: list[dict[str, Any]], context: PredictContext
    ) -> Sequence[PredictionLike]:
        """Return one entry per task, in order. See the README for the accepted shapes."""
        raise NotImplementedError(f"{type(self).__name__} does not implement predict()")

    def fit(self, event: str, data: TrainingData) -> dict[str, Any] | None:
        """Train in a job: write files into data.output_dir and return metrics (or None)."""
        raise NotImplementedError(
            f"{type(self).__name__} does not implement fit(): it cannot train"
        )

    @property
    def can_train(self) -> bool:
        return type(self).fit is not Model.fit
