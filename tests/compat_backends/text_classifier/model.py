"""A word-count text classifier, written for the label-studio-ml SDK.

Labeling config: one <Choices> on one <Text>. Training counts the words of each annotated text
per chosen label and keeps the counts in the model's cache (self.set), where predict() reads
them (self.get). Project settings may pass extra params: {"default_label": ..., "min_words": N}.

Environment: LABEL_STUDIO_URL and LABEL_STUDIO_API_KEY, to download the project's annotations
when training starts from the "Start Training" button.
"""

import json
import os
import re
from typing import Any
from urllib.request import Request, urlopen

from label_studio_ml.model import LabelStudioMLBase

LABEL_STUDIO_URL = os.getenv("LABEL_STUDIO_URL", "http://localhost:8080")
LABEL_STUDIO_API_KEY = os.getenv("LABEL_STUDIO_API_KEY", "")

WORD = re.compile(r"[a-z']+")


def words(text: str) -> list[str]:
    return WORD.findall(text.lower())


class WordCountClassifier(LabelStudioMLBase):
    """Picks the label whose annotated texts share the most words with the task's text."""

    def setup(self) -> None:
        """Read which tags to use from the labeling config."""
        self.from_name, self.to_name, self.value = self.get_first_tag_occurence("Choices", "Text")
        self.labels = self.parsed_label_config[self.from_name]["labels"]

    def _counts(self) -> dict[str, dict[str, int]]:
        """Word counts per label, as the last fit() stored them."""
        stored = self.get("word_counts")
        return json.loads(stored) if stored else {}

    def predict(self, tasks: list[dict], context: dict | None = None, **kwargs: Any) -> list[dict]:
        """One prediction per task: the best label and its share of the matching words.

        :param tasks: Label Studio tasks in JSON format
        :param context: the labeling UI's context (interactive pre-annotation), unused here
        :return: predictions in Label Studio's JSON format
        """
        counts = self._counts()
        default_label = self.extra_params.get("default_label", self.labels[0])
        predictions = []
        for task in tasks:
            text_words = words(task["data"][self.value])
            votes = {
                label: sum(counts.get(label, {}).get(word, 0) for word in text_words)
                for label in self.labels
            }
            total = sum(votes.values())
            if total:
                label = max(votes, key=lambda name: votes[name])
                score = votes[label] / total
            else:
                label, score = default_label, 1.0 / len(self.labels)
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
                    "score": score,
                    "model_version": str(self.model_version),
                }
            )
        return predictions

    def _download_annotated_tasks(self, project_id: int) -> list[dict]:
        """The project's annotated tasks, from Label Studio's JSON export."""
        url = f"{LABEL_STUDIO_URL.rstrip('/')}/api/projects/{project_id}/export?exportType=JSON"
        request = Request(url, headers={"Authorization": f"Token {LABEL_STUDIO_API_KEY}"})
        with urlopen(request, timeout=30) as response:
            return json.loads(response.read())

    def fit(self, event: str, data: dict, **kwargs: Any) -> dict | None:
        """Update the word counts.

        :param event: ANNOTATION_CREATED or ANNOTATION_UPDATED (learn the one annotation on top
            of the counts so far), or START_TRAINING (count every annotation of the project)
        :param data: the webhook payload of the event
        """
        min_words = int(self.extra_params.get("min_words", 1))
        if event in ("ANNOTATION_CREATED", "ANNOTATION_UPDATED"):
            counts = self._counts()
            pairs = [(data["task"], data["annotation"])]
        elif event == "START_TRAINING":
            counts = {}
            pairs = [
                (task, annotation)
                for task in self._download_annotated_tasks(data["project"]["id"])
                for annotation in task["annotations"]
                if not annotation.get("was_cancelled")
            ]
        else:
            return None
        learned = 0
        for task, annotation in pairs:
            text_words = words(task["data"][self.value])
            if len(text_words) < min_words:
                continue
            for item in annotation["result"]:
                if item["from_name"] != self.from_name:
                    continue
                for label in item["value"]["choices"]:
                    label_counts = counts.setdefault(label, {})
                    for word in text_words:
                        label_counts[word] = label_counts.get(word, 0) + 1
                learned += 1
        runs = int(self.get("fit_runs") or 0) + 1
        self.set("word_counts", json.dumps(counts))
        self.set("fit_runs", str(runs))
        self.set("model_version", f"wordcount-{runs}")
        return {"learned": learned, "vocabulary": len({w for c in counts.values() for w in c})}
