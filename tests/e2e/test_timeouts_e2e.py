"""A backend that is too slow, seen by the real Label Studio and by our doctor: the doctor's
verdict and fix must match what Label Studio itself stores."""

from __future__ import annotations

import pytest
from _labelstudio import LabelStudio

from fakes.stub_backend import StubBackend
from labelbridge.doctor import run_checks

pytestmark = [pytest.mark.labelstudio, pytest.mark.timeout(600)]

CONFIG = (
    '<View><Text name="text" value="$text"/><Choices name="sentiment" toName="text" '
    'choice="single"><Choice value="Positive"/><Choice value="Negative"/></Choices></View>'
)


def by_name(checks: list, name: str):  # type: ignore[no-untyped-def]
    return next(c for c in checks if c.name == name)


def test_slow_setup_is_refused_by_label_studio_and_named_by_the_doctor(
    label_studio: LabelStudio,
) -> None:
    with StubBackend(delays={"/setup": 4.0}) as stub:  # Label Studio gives /setup 3 s
        api = label_studio.api
        project = api.create_project(CONFIG, title="slow setup")
        answer = api.add_ml_backend(project["id"], stub.url)
        assert answer.status_code == 400, answer.text
        message = " ".join(answer.json()["validation_errors"]["non_field_errors"])
        assert "Read timed out" in message and "read timeout=3" in message, message
        checks = run_checks(
            stub.url, label_config=CONFIG, tasks=[{"data": {"text": "hi"}}], train=False
        )
        setup = by_name(checks, "setup")
        assert setup.status == "fail", setup
        assert "ML_TIMEOUT_SETUP" in setup.measured + (setup.fix or "")


def test_slow_health_shows_disconnected_and_the_doctor_says_why(label_studio: LabelStudio) -> None:
    with StubBackend() as stub:
        api = label_studio.api
        project = api.create_project(CONFIG, title="slow health")
        answer = api.add_ml_backend(project["id"], stub.url)
        assert answer.status_code == 201 and answer.json()["state"] == "CO", answer.text
        stub.delays["/health"] = 1.5  # Label Studio gives /health 1 s (and retries it)
        ml = api.get_ml_backend(answer.json()["id"])
        assert ml["state"] == "DI" and ml["readable_state"] == "Disconnected", ml
        checks = run_checks(stub.url, train=False)
        health = by_name(checks, "health")
        assert health.status == "fail", health
        assert "ML_TIMEOUT_HEALTH" in health.measured + (health.fix or "")
