"""Where `labelbridge prelabel` gets predictions: a running ML backend over HTTP (called as
Label Studio calls it), or a model class in this process through `Backend.predict` (the same
normalizing and checks as the server, no HTTP). Both give the model version to store under.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from labelbridge.client import MLBackendClient, project_uid
from labelbridge.errors import BadRequest, JobError, ModelNotReady, UnknownJob
from labelbridge.jobs import JobRecord, JobSpec
from labelbridge.protocol import PredictRequest

if TYPE_CHECKING:
    from labelbridge.service import Backend
    from labelbridge.settings import Settings

__all__ = [
    "BackendPredictor",
    "InProcessPredictor",
    "NullQueue",
    "Predictions",
    "Predictor",
    "in_process_predictor",
]

Predictions = list[list[dict[str, Any]]]


class Predictor(Protocol):
    """Where predictions come from: a running backend over HTTP, or a model in this process."""

    def start(self, project: Mapping[str, Any], label_studio_url: str, token: str | None) -> str:
        """Get ready for this project; return the model version predictions are stored under."""
        ...

    def predict(self, tasks: list[dict[str, Any]]) -> tuple[Predictions, int]:
        """For each task, its predictions; and how many invalid items the predictor dropped."""
        ...

    def close(self) -> None: ...


def _as_list(entry: Any) -> list[dict[str, Any]]:
    if entry is None:
        return []
    if isinstance(entry, list):
        return [p for p in entry if isinstance(p, dict)]
    return [entry] if isinstance(entry, dict) else []


class BackendPredictor:
    """A running ML backend, called through the connector exactly as Label Studio calls it:
    /health, then /setup (which gives the model version), then /predict per batch."""

    def __init__(self, url: str, *, auth: tuple[str, str] | None = None, **options: Any) -> None:
        self.client = MLBackendClient(url, auth=auth, **options)
        self._project = ""
        self._config = ""

    def start(self, project: Mapping[str, Any], label_studio_url: str, token: str | None) -> str:
        created = project.get("created_at")
        stamp = None
        if isinstance(created, str):
            with contextlib.suppress(ValueError):
                stamp = datetime.fromisoformat(created.replace("Z", "+00:00"))
        self._project = project_uid(int(project["id"]), stamp)
        self._config = str(project.get("label_config") or "")
        self.client.health()
        version = self.client.setup(
            self._project, self._config, hostname=label_studio_url, access_token=token
        )
        if not version:
            raise BadRequest(
                f"{self.client.base_url}/setup gives no model_version, and Label Studio refuses "
                "predictions without one",
                fix="pass --model-version",
            )
        return version

    def predict(self, tasks: list[dict[str, Any]]) -> tuple[Predictions, int]:
        answer = self.client.predict_exact(tasks, project=self._project, label_config=self._config)
        return [[p.model_dump(exclude_none=True) for p in ps] for ps in answer.results], 0

    def close(self) -> None:
        self.client.close()


class NullQueue:
    """The job queue of a Backend used only to predict (a prelabel run, a prelabel job)."""

    def start(self) -> None:
        return None

    def close(self) -> None:
        return None

    def submit(self, spec: JobSpec, *, delay: float = 0.0) -> JobRecord:
        raise JobError("this backend only predicts: it has no job queue")

    def get(self, job_id: str) -> JobRecord:
        raise UnknownJob(f"job {job_id} is not known", field="job")

    def list(self, project: str | None = None, limit: int = 50) -> list[JobRecord]:
        return []

    def health(self) -> tuple[bool, str | None]:
        return True, None


class InProcessPredictor:
    """A model in this process, through `Backend.predict` (no HTTP): the version it serves for
    the project (trained ones from the model store), the same normalizing and checks."""

    def __init__(self, backend: Backend, *, own: bool = True) -> None:
        self.backend = backend
        self.own = own
        self._project = ""
        self._config = ""

    def start(self, project: Mapping[str, Any], label_studio_url: str, token: str | None) -> str:
        self._project = str(int(project["id"]))
        self._config = str(project.get("label_config") or "")
        self.backend.start(wait=True)
        if self.backend.model is None:
            raise ModelNotReady(
                f"the model failed to load: {self.backend.model_error}", fix="see the log"
            )
        return self.backend.current_version(self._project)

    def predict(self, tasks: list[dict[str, Any]]) -> tuple[Predictions, int]:
        dropped: list[Any] = []
        request = PredictRequest(tasks=tasks, project=self._project, label_config=self._config)
        answer = self.backend.predict(request, dropped=dropped)
        return [_as_list(entry) for entry in answer["results"]], len(dropped)

    def close(self) -> None:
        if self.own:
            self.backend.close()


def in_process_predictor(
    model: str, settings: Settings, *, class_name: str | None = None
) -> InProcessPredictor:
    """A backend folder's (or module:Class's) model behind a Backend of its own: trained
    versions come from its model store (MODEL_DIR, default <folder>/models), as served."""
    from labelbridge.loader import load_model_class, model_ref_for
    from labelbridge.service import Backend

    ref = model_ref_for(model)
    backend_dir = Path(ref) if Path(ref).is_dir() else None
    cls = load_model_class(ref, class_name)
    backend = Backend(cls, settings, model_ref=ref, backend_dir=backend_dir, queue=NullQueue())
    return InProcessPredictor(backend)
