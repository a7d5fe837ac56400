"""The benchmark's trivial backend: one fixed Choices result per task, no model work.

Knobs (environment, read in the server process):
- BENCH_SETUP_SECONDS: setup() sleeps this long (a model with a slow load), default 0.
- BENCH_FIT_SECONDS: fit() burns one core this long (a training job), default 0.
"""

from __future__ import annotations

import os
import time
from typing import Any

from labelbridge import Model, PredictContext, TrainingData

RESULT: dict[str, Any] = {
    "from_name": "sentiment",
    "to_name": "text",
    "type": "choices",
    "value": {"choices": ["Positive"]},
    "score": 0.9,
}


class TrivialModel(Model):
    name = "trivial"
    min_annotations = 1

    def setup(self) -> None:
        time.sleep(float(os.environ.get("BENCH_SETUP_SECONDS", "0")))

    def predict(self, tasks: list[dict[str, Any]], context: PredictContext) -> list[dict[str, Any]]:
        return [{"result": [RESULT], "score": 0.9} for _ in tasks]

    def fit(self, event: str, data: TrainingData) -> dict[str, Any]:
        deadline = time.monotonic() + float(os.environ.get("BENCH_FIT_SECONDS", "0"))
        spins = 0
        while time.monotonic() < deadline:
            spins += sum(range(10_000)) & 1
        (data.output_dir / "weights.txt").write_text("trivial\n", encoding="utf-8")
        return {"score": 0.5, "spins": spins}
