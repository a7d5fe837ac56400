"""A gazetteer NER model, written for the label-studio-ml SDK.

Labeling config: one <Labels> on one <Text>. Every known name found in the text becomes a span
labelled with the first of its label's names that the config has (PER/Person, LOC/Location,
ORG/Organization).
"""

import re
from typing import Any

from label_studio_ml.model import LabelStudioMLBase

GAZETTEER = {
    ("PER", "Person"): ["Ada Lovelace", "Alan Turing", "Grace Hopper"],
    ("LOC", "Location"): ["London", "Paris", "New York"],
    ("ORG", "Organization"): ["Acme Corp", "United Nations"],
}


class GazetteerNER(LabelStudioMLBase):
    """Finds known people, places and organizations."""

    def predict(self, tasks: list[dict], context: dict | None = None, **kwargs: Any) -> list[dict]:
        """One prediction per task, with a `labels` span per name found.

        :param tasks: Label Studio tasks in JSON format
        :param context: the labeling UI's context (interactive pre-annotation), unused here
        """
        assert self.label_config, "the labeling config is known after /setup"
        from_name, to_name, value = self.get_first_tag_occurence("Labels", "Text")
        config_labels = set(self.parsed_label_config[from_name]["labels"])
        patterns = []
        for names, entities in GAZETTEER.items():
            label = next((name for name in names if name in config_labels), None)
            if label is not None:
                patterns += [(re.compile(re.escape(entity)), label) for entity in entities]
        predictions = []
        for task in tasks:
            text = task["data"][value]
            results = []
            for pattern, label in patterns:
                for found in pattern.finditer(text):
                    results.append(
                        {
                            "id": f"{task.get('id')}-{found.start()}",
                            "from_name": from_name,
                            "to_name": to_name,
                            "type": "labels",
                            "value": {
                                "start": found.start(),
                                "end": found.end(),
                                "text": found.group(),
                                "labels": [label],
                            },
                            "score": 0.9,
                        }
                    )
            results.sort(key=lambda item: item["value"]["start"])
            predictions.append({"result": results, "score": 0.9 if results else 0.0})
        return predictions
