"""labelbridge.protocol: the /predict body read by hand (PredictCall.from_json) must agree with
PredictRequest's validation on every body it takes, and take what Label Studio sends."""

from __future__ import annotations

import copy
import itertools
from typing import Any

import pytest
from pydantic import ValidationError

from labelbridge.protocol import PredictCall, PredictRequest

#: values of the wrong and the right types, put in every field in turn
ODD_VALUES: list[Any] = [
    None,
    "",
    "1.1795541075",
    1,
    -3,
    True,
    False,
    1.5,
    [],
    [1],
    {},
    {"data": {}},
    {"id": 1},
]


def _predict_bodies(captures: dict[str, Any]) -> list[dict[str, Any]]:
    bodies = []
    for step in captures.values():
        for request in step.get("requests_to_ml_backend", []):
            if request["path"] == "/predict":
                bodies.append(request["body"])
    return bodies


def _validated(body: Any) -> PredictCall | None:
    try:
        return PredictCall.of(PredictRequest.model_validate(body))
    except ValidationError:
        return None


def test_what_label_studio_sends_is_read_by_hand_as_the_model_reads_it(
    captures: dict[str, Any],
) -> None:
    bodies = _predict_bodies(captures)
    assert len(bodies) >= 5
    for body in bodies:
        call = PredictCall.from_json(copy.deepcopy(body))
        assert call is not None, body  # the fast path takes every captured body
        assert call == _validated(body)


def _variants(body: dict[str, Any]) -> list[Any]:
    """The body with each field, task field and params field set to every odd value, each
    removed, and a few whole-body oddities."""
    out: list[Any] = [None, [], "text", 1, {}, {"tasks": None}]
    for key, value in itertools.product(
        ["tasks", "project", "label_config", "model_version", "params", "extra"], ODD_VALUES
    ):
        out.append({**body, key: value})
        out.append({k: v for k, v in body.items() if k != key})
    for key, value in itertools.product(["data", "id", "annotations"], ODD_VALUES):
        task = {**body["tasks"][0], key: value}
        out.append({**body, "tasks": [task]})
        out.append({**body, "tasks": [body["tasks"][0], task]})
    out.append({**body, "tasks": [1]})
    out.append({**body, "tasks": ["a"]})
    for key, value in itertools.product(["login", "password", "context", "other"], ODD_VALUES):
        out.append({**body, "params": {**body["params"], key: value}})
    return out


def test_the_hand_reading_never_takes_a_body_the_model_would_refuse_or_read_otherwise(
    captures: dict[str, Any],
) -> None:
    body = _predict_bodies(captures)[0]
    taken = refused = 0
    for variant in _variants(body):
        call = PredictCall.from_json(copy.deepcopy(variant))
        if call is None:
            refused += 1  # PredictRequest validates it instead (and names the bad field)
            continue
        taken += 1
        assert call == _validated(variant), variant
        if isinstance(variant.get("params"), dict):
            assert list(call.params)[:3] == ["login", "password", "context"]
    # both ways are exercised: many variants are valid, many are not
    assert taken > 50 and refused > 50


@pytest.mark.parametrize("params", [None, {}, {"context": None, "extra": [1]}])
def test_params_are_the_models_fields_then_the_extra_ones(params: Any) -> None:
    body = {"tasks": [{"data": {"text": "x"}}], "params": params}
    call = PredictCall.from_json(body)
    assert call is not None and call == _validated(body)
