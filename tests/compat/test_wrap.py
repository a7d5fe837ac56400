"""The wrapper's rules in process: what a failed or empty fit() leaves behind, and how SDK
answers become labelbridge predictions."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from labelbridge.compat import LabelStudioMLBase, ModelResponse, wrap_sdk_model
from labelbridge.compat._wrap import STATE_FILE, predictions_of
from labelbridge.errors import BadRequest
from labelbridge.label_config import LabelConfig
from labelbridge.model import PredictContext, TrainingData
from labelbridge.protocol import PredictionValue
from labelbridge.settings import Settings

CONFIG = LabelConfig.parse(
    '<View><Text name="text" value="$text"/><Choices name="label" toName="text">'
    '<Choice value="A"/><Choice value="B"/></Choices></View>'
)


class Counter(LabelStudioMLBase):
    """Counts fit() runs in its state; fails when the event says so, after a first write."""

    def predict(self, tasks: list[dict], context: dict | None = None, **kwargs: Any) -> Any:
        return [{"result": [], "runs": self.get("runs")} for _ in tasks]

    def fit(self, event: str, data: dict, **kwargs: Any) -> Any:
        self.set("runs", int(self.get("runs") or 0) + 1)
        if event == "ANNOTATION_DELETED":
            raise RuntimeError("half way through")
        return None


class Idle(LabelStudioMLBase):
    def fit(self, event: str, data: dict, **kwargs: Any) -> Any:
        return None


def _training(tmp_path: Path, event: str, previous: Path | None = None) -> TrainingData:
    out = tmp_path / f"out-{event}-{previous is not None}"
    out.mkdir()
    return TrainingData(
        project="3",
        label_config=CONFIG,
        tasks=[],
        output_dir=out,
        model_version="x-v1",
        event=event,
        previous_dir=previous,
    )


def _runs(model: Any, state: Any, version: str) -> Any:
    context = PredictContext(project="3", label_config=CONFIG, model_version=version, state=state)
    return model.predict([{"id": 1, "data": {"text": "t"}}], context)[0]["runs"]


def test_fit_state_belongs_to_the_version_it_published(tmp_path: Path) -> None:
    model = wrap_sdk_model(Counter)(Settings(model_dir=tmp_path / "models"))
    model.setup()
    first = _training(tmp_path, "START_TRAINING")
    assert model.fit("START_TRAINING", first) == {"sdk_model_version": "0.0.1"}
    assert (first.output_dir / STATE_FILE).is_file()
    assert _runs(model, None, "x-v0") is None  # v0 never sees what a job wrote
    v1 = model.load(first.output_dir)
    assert _runs(model, v1, "x-v1") == 1

    failing = _training(tmp_path, "ANNOTATION_DELETED", previous=first.output_dir)
    with pytest.raises(RuntimeError):
        model.fit("ANNOTATION_DELETED", failing)
    assert _runs(model, v1, "x-v1") == 1  # the failed job's write went nowhere

    second = _training(tmp_path, "ANNOTATION_CREATED", previous=first.output_dir)
    model.fit("ANNOTATION_CREATED", second)
    assert _runs(model, model.load(second.output_dir), "x-v2") == 2


def test_a_fit_that_returns_and_sets_nothing_publishes_nothing(tmp_path: Path) -> None:
    model = wrap_sdk_model(Idle)(Settings(model_dir=tmp_path / "models"))
    model.setup()
    assert model.can_train
    assert model.fit("START_TRAINING", _training(tmp_path, "START_TRAINING")) is None
    assert not wrap_sdk_model(LabelStudioMLBase)(None).can_train


def test_sdk_answers_become_predictions() -> None:
    item = {"from_name": "label", "to_name": "text", "type": "choices", "value": {"choices": ["A"]}}
    response = ModelResponse(predictions=[{"result": [item]}, [{"result": [item]}]])
    response.set_version("sdk-7")  # as in the SDK: each prediction without one gets it
    assert response.predictions[0]["model_version"] == "sdk-7"
    assert predictions_of(response, 2) == [{"result": [item]}, [{"result": [item]}]]
    assert predictions_of({"predictions": [{"result": []}]}, 1) == [{"result": []}]
    assert predictions_of(None, 2) == [None, None]
    assert predictions_of([], 3) == [None, None, None]
    typed = PredictionValue(result=[item], score=0.5, model_version="mine")
    assert predictions_of([typed], 1) == [{"result": [item], "score": 0.5}]


class WrittenFor1x(LabelStudioMLBase):
    def fit(self, tasks: Any, workdir: str | None = None, **kwargs: Any) -> Any:
        return {}


def test_a_1x_backend_on_our_base_is_refused_with_a_fix() -> None:
    with pytest.raises(BadRequest, match=r"written for label-studio-ml 1\.x") as raised:
        wrap_sdk_model(WrittenFor1x)
    assert "label_studio_ml.model" in (raised.value.fix or "")
