"""A word-count text classifier for label-studio-ml 1.x, the API PyPI's release (1.0.9) has.

In 1.x, fit(tasks, workdir) trains on annotated tasks and returns `train_output`, which the SDK
hands to the next model object's constructor; predict(tasks, **kwargs) returns a list of dicts.
This backend only runs with that package installed (tests/compat/test_real_sdk.py).
"""

import json
import os
from typing import Any

from label_studio_ml.model import LabelStudioMLBase


class SimpleWordClassifier(LabelStudioMLBase):
    """Picks the label whose annotated texts share the most words with the task's text."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        # one Choices on one Text
        self.from_name, info = next(iter(self.parsed_label_config.items()))
        self.to_name = info["to_name"][0]
        self.value = info["inputs"][0]["value"]
        self.labels = info["labels"]
        if self.train_output:
            with open(self.train_output["model_file"]) as f:
                self.counts = json.load(f)
        else:
            self.counts = {}

    def predict(self, tasks: list[dict], **kwargs: Any) -> list[dict]:
        predictions = []
        for task in tasks:
            text_words = task["data"][self.value].lower().split()
            votes = {
                label: sum(self.counts.get(label, {}).get(w, 0) for w in text_words)
                for label in self.labels
            }
            total = sum(votes.values())
            label = max(votes, key=lambda name: votes[name]) if total else self.labels[0]
            predictions.append(
                {
                    "result": [
                        {
                            "from_name": self.from_name,
                            "to_name": self.to_name,
                            "type": "choices",
                            "value": {"choices": [label]},
                        }
                    ],
                    "score": votes[label] / total if total else 1.0 / len(self.labels),
                }
            )
        return predictions

    def fit(self, tasks: Any, workdir: str | None = None, **kwargs: Any) -> dict:
        counts: dict[str, dict[str, int]] = {}
        for task in tasks:
            for annotation in task["annotations"]:
                if annotation.get("was_cancelled"):
                    continue
                for item in annotation["result"]:
                    for label in item["value"].get("choices", []):
                        label_counts = counts.setdefault(label, {})
                        for word in task["data"][self.value].lower().split():
                            label_counts[word] = label_counts.get(word, 0) + 1
        model_file = os.path.join(workdir or ".", "counts.json")
        with open(model_file, "w") as f:
            json.dump(counts, f)
        return {"model_file": model_file, "labels": sorted(counts)}
