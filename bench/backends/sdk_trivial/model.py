"""The same trivial model for the public SDK (`label_studio_ml`), imported only in its own venv
under bench/.venvs/: one fixed Choices result per task, no model work.

Knobs, as for bench/backends/trivial: BENCH_SETUP_SECONDS makes the model's load (its
__init__, where SDK 1.0.9 models load weights) that slow; BENCH_FIT_SECONDS makes fit() burn
one core that long.
"""

from __future__ import annotations

import os
import time
from typing import Any

from label_studio_ml.model import LabelStudioMLBase

RESULT: dict[str, Any] = {
    "from_name": "sentiment",
    "to_name": "text",
    "type": "choices",
    "value": {"choices": ["Positive"]},
    "score": 0.9,
}


class TrivialModel(LabelStudioMLBase):
    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        time.sleep(float(os.environ.get("BENCH_SETUP_SECONDS", "0")))

    def predict(self, tasks: list[dict[str, Any]], **kwargs: Any) -> list[dict[str, Any]]:
        return [{"result": [RESULT], "score": 0.9, "model_version": "trivial-v0"} for _ in tasks]

    def fit(self, tasks: Any, workdir: str | None = None, **kwargs: Any) -> dict[str, Any]:
        deadline = time.monotonic() + float(os.environ.get("BENCH_FIT_SECONDS", "0"))
        spins = 0
        while time.monotonic() < deadline:
            spins += sum(range(10_000)) & 1
        return {"score": 0.5, "spins": spins}
