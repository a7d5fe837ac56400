"""A keyword classifier that answers with a ModelResponse, written for the label-studio-ml SDK.

Labeling config: one <Choices> on one <Text> with "Urgent" and "Normal". A text is urgent when it
has one of the keywords. Each training run adds the words of the texts annotated "Urgent" to the
keywords and moves the model version on (1.0.0, 1.1.0, ...), which predictions carry.
"""

import json
from typing import Any

from label_studio_ml.model import LabelStudioMLBase
from label_studio_ml.response import ModelResponse

START_KEYWORDS = ["asap", "urgent"]


class UrgencyClassifier(LabelStudioMLBase):
    """Urgent or Normal, by keywords learned from annotations."""

    def setup(self) -> None:
        if not self.get("keywords"):
            self.set("keywords", json.dumps(START_KEYWORDS))
            self.set("model_version", "1.0.0")

    def predict(
        self, tasks: list[dict], context: dict | None = None, **kwargs: Any
    ) -> ModelResponse:
        """
        :param tasks: Label Studio tasks in JSON format
        :param context: the labeling UI's context (interactive pre-annotation), unused here
        :return: ModelResponse(model_version=..., predictions=[...])
        """
        from_name, to_name, value = self.get_first_tag_occurence("Choices", "Text")
        keywords = set(json.loads(self.get("keywords")))
        predictions = []
        for task in tasks:
            found = keywords & set(task["data"][value].lower().split())
            predictions.append(
                {
                    "result": [
                        {
                            "from_name": from_name,
                            "to_name": to_name,
                            "type": "choices",
                            "value": {"choices": ["Urgent" if found else "Normal"]},
                        }
                    ],
                    "score": 0.9 if found else 0.6,
                    "model_version": self.get("model_version"),
                }
            )
        return ModelResponse(model_version=self.get("model_version"), predictions=predictions)

    def fit(self, event: str, data: dict, **kwargs: Any) -> None:
        """Learn keywords from the annotations this event brings.

        :param event: START_TRAINING or an annotation event
        :param data: the webhook payload; labelbridge adds `tasks`, the annotated tasks
        """
        from_name, _, value = self.get_first_tag_occurence("Choices", "Text")
        if "annotation" in data:
            pairs = [(data["task"], data["annotation"])]
        else:
            pairs = [(t, a) for t in data.get("tasks", []) for a in t.get("annotations", [])]
        keywords = set(json.loads(self.get("keywords")))
        for task, annotation in pairs:
            for item in annotation["result"]:
                if item["from_name"] == from_name and "Urgent" in item["value"]["choices"]:
                    keywords.update(task["data"][value].lower().split())
        major, minor, _ = self.get("model_version").split(".")
        self.set("keywords", json.dumps(sorted(keywords)))
        self.set("model_version", f"{major}.{int(minor) + 1}.0")
