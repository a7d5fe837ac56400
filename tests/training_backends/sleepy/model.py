"""A model whose training takes FIT_SECONDS (default 20): a stand-in for a slow real fit()."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from labelbridge import Model, PredictContext, TrainingData


class Sleepy(Model):
    name = "sleepy"
    min_annotations = 1

    def load(self, path: Path) -> dict[str, Any]:
        return json.loads((path / "state.json").read_text())

    def predict(self, tasks: list[dict[str, Any]], context: PredictContext) -> list[Any]:
        pick = context.label_config.first("Choices")
        label = (context.state or {}).get("label", pick.labels[0])
        item = {
            "from_name": pick.control.name,
            "to_name": pick.object.name,
            "type": "choices",
            "value": {"choices": [label]},
        }
        return [{"result": [item], "score": 0.5} for _ in tasks]

    def fit(self, event: str, data: TrainingData) -> dict[str, Any]:
        runs = Path(os.environ["SLEEPY_RUNS_DIR"])
        (runs / f"{time.time_ns()}-{event}").write_text(str(data.annotation_count))
        time.sleep(float(os.environ.get("FIT_SECONDS", "20")))
        labels = [
            item["value"]["choices"][0]
            for _, annotation in data.annotations()
            for item in annotation["result"]
        ]
        (data.output_dir / "state.json").write_text(json.dumps({"label": labels[-1]}))
        return {"trained_on": len(labels)}
