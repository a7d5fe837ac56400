"""A backend written for the public SDK, its imports changed to labelbridge.compat, added to
the real Label Studio 1.23.2: it connects, and retrieved predictions are stored with the
version our /setup reported (with Label Studio's own prediction validation on)."""

from __future__ import annotations

from pathlib import Path

import pytest
from _labelstudio import BackendFactory, LabelStudio, RecordingProxy

from compat.compat_harness import rewrite_imports

pytestmark = [pytest.mark.labelstudio, pytest.mark.timeout(600)]

CONFIG = (
    '<View><Text name="text" value="$text"/><Choices name="sentiment" toName="text" '
    'choice="single"><Choice value="Positive"/><Choice value="Negative"/></Choices></View>'
)
TEXTS = ["I love it", "It broke after a day", "A friendly, helpful team"]


def test_sdk_text_classifier_connects_and_predicts(
    label_studio: LabelStudio, start_our_backend: BackendFactory, tmp_path: Path
) -> None:
    backend = start_our_backend(rewrite_imports("text_classifier", tmp_path / "text_classifier"))
    proxy = RecordingProxy(backend.url)
    api = label_studio.api
    try:
        project = api.create_project(CONFIG, title="compat e2e")
        api.import_tasks(project["id"], [{"text": text} for text in TEXTS])
        task_ids = sorted(task["id"] for task in api.list_tasks(project["id"]))
        # extra params reach the SDK object's self.extra_params through /setup
        response = api.add_ml_backend(
            project["id"], proxy.url, title="sdk", extra_params={"default_label": "Negative"}
        )
        assert response.status_code == 201, response.text
        ml = api.get_ml_backend(response.json()["id"])
        assert ml["state"] == "CO" and ml["readable_state"] == "Connected", ml
        setup = proxy.find("/setup")[-1]
        assert setup.status == 200 and setup.request["extra_params"] == {
            "default_label": "Negative"
        }
        version = setup.response["model_version"]
        assert ml["model_version"] == version == "wordcountclassifier-v0"

        answer = api.retrieve_predictions(project["id"])
        assert answer.get("processed_items") == len(TEXTS), answer
        (predict,) = proxy.find("/predict")
        assert predict.status == 200, predict.response
        predictions = api.list_predictions(project["id"])
        assert sorted(p["task"] for p in predictions) == task_ids
        for prediction in predictions:
            assert prediction["model_version"] == version, prediction
            (item,) = prediction["result"]
            assert item["value"]["choices"] == ["Negative"], item  # the extra params' default
        assert api.project_model_versions(project["id"]).get(version) == len(TEXTS)
    finally:
        proxy.close()
