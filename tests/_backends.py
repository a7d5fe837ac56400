"""Small models used by the server tests (importable by reference, for job workers too)."""

from __future__ import annotations

import time
from typing import Any

from labelbridge import Model, PredictContext

CHOICES_CONFIG = (
    '<View><Text name="text" value="$text"/><Choices name="sentiment" toName="text" '
    'choice="single"><Choice value="Positive"/><Choice value="Negative"/></Choices></View>'
)
NER_CONFIG = (
    '<View><Labels name="label" toName="text"><Label value="PER"/><Label value="ORG"/></Labels>'
    '<Text name="text" value="$text"/></View>'
)
BBOX_CONFIG = (
    '<View><Image name="image" value="$image"/><RectangleLabels name="box" toName="image">'
    '<Label value="Cat"/><Label value="Dog"/></RectangleLabels></View>'
)


class Echo(Model):
    """Predicts 'Positive' when the text has 'love', else 'Negative'; score by length."""

    name = "echo"

    def predict(self, tasks: list[dict[str, Any]], context: PredictContext) -> list[Any]:
        pick = context.label_config.first("Choices")
        out = []
        for task in tasks:
            text = str(task["data"].get(pick.value_field, ""))
            label = "Positive" if "love" in text.lower() else "Negative"
            out.append(
                {
                    "result": [
                        {
                            "from_name": pick.control.name,
                            "to_name": pick.object.name,
                            "type": "choices",
                            "value": {"choices": [label]},
                            "score": 0.9,
                        }
                    ]
                }
            )
        return out


class SlowSetup(Echo):
    """setup() takes a while: health and /setup must not wait for it."""

    name = "slow"

    def setup(self) -> None:
        time.sleep(2.0)


class Raises(Model):
    def predict(self, tasks: list[dict[str, Any]], context: PredictContext) -> list[Any]:
        raise RuntimeError("boom in predict")


class Scripted(Model):
    """Returns whatever the task's data says under `answer` (to test validation)."""

    def predict(self, tasks: list[dict[str, Any]], context: PredictContext) -> list[Any]:
        return [task["data"].get("answer") for task in tasks]


class WrongCount(Model):
    def predict(self, tasks: list[dict[str, Any]], context: PredictContext) -> list[Any]:
        return [None]


class FailsToLoad(Echo):
    """setup() raises: health stays UP (with the error), /setup fails so Label Studio says Error."""

    def setup(self) -> None:
        raise FileNotFoundError("weights missing")
