"""Predictions are checked against the project's config before Label Studio sees them."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from _backends import BBOX_CONFIG, CHOICES_CONFIG, NER_CONFIG, Scripted
from labelbridge.server import create_app
from labelbridge.service import Backend
from labelbridge.settings import Settings
from support import serve


def choice(label: str) -> dict[str, Any]:
    return {
        "from_name": "sentiment",
        "to_name": "text",
        "type": "choices",
        "value": {"choices": [label]},
    }


def span(start: int, end: int, label: str, text: str) -> dict[str, Any]:
    value = {"start": start, "end": end, "text": text, "labels": [label]}
    return {"from_name": "label", "to_name": "text", "type": "labels", "value": value}


def box(x: float, y: float, w: float, h: float, label: str) -> dict[str, Any]:
    value = {"x": x, "y": y, "width": w, "height": h, "rectanglelabels": [label]}
    return {"from_name": "box", "to_name": "image", "type": "rectanglelabels", "value": value}


CASES = {
    "choices": (
        CHOICES_CONFIG,
        "text",
        [choice("Positive")],
        [choice("Neutral"), {**choice("Positive"), "from_name": "nope"}],
    ),
    "ner": (
        NER_CONFIG,
        "text",
        [span(0, 5, "PER", "Zoë "), span(10, 14, "ORG", "ACME")],
        [span(5, 2, "PER", "bad"), span(0, 3, "LOC", "abc")],
    ),
    "bbox": (
        BBOX_CONFIG,
        "image",
        [box(10, 10, 20.5, 30, "Cat")],
        [box(90, 10, 20, 20, "Cat"), {**box(1, 1, 1, 1, "Dog"), "type": "choices"}],
    ),
}


@pytest.fixture
def backends(tmp_path: Path) -> Iterator[dict[bool, str]]:
    urls = {}
    with (
        serve(
            create_app(Backend(Scripted, Settings(model_dir=tmp_path / "p"), model_ref="x"))
        ) as prod,
        serve(
            create_app(
                Backend(Scripted, Settings(model_dir=tmp_path / "d", debug=True), model_ref="x")
            )
        ) as dbg,
    ):
        urls[False], urls[True] = prod, dbg
        yield urls


@pytest.mark.parametrize("kind", sorted(CASES))
def test_valid_predictions_pass_untouched(
    kind: str, backends: dict[bool, str], http: httpx.Client
) -> None:
    config, field, good, _ = CASES[kind]
    task = {"id": 5, "data": {field: "x", "answer": {"result": good, "score": 0.7}}}
    for url in backends.values():
        answer = http.post(f"{url}/predict", json={"tasks": [task], "label_config": config})
        assert answer.status_code == 200, answer.text
        assert answer.json()["results"][0]["result"] == good


@pytest.mark.parametrize("kind", sorted(CASES))
def test_invalid_items_are_dropped_in_production(
    kind: str, backends: dict[bool, str], http: httpx.Client
) -> None:
    config, field, good, bad = CASES[kind]
    task = {"id": 5, "data": {field: "x", "answer": {"result": good + bad}}}
    answer = http.post(f"{backends[False]}/predict", json={"tasks": [task], "label_config": config})
    assert answer.status_code == 200, answer.text
    assert answer.json()["results"][0]["result"] == good


@pytest.mark.parametrize("kind", sorted(CASES))
def test_invalid_items_are_an_error_naming_task_and_field_in_debug(
    kind: str, backends: dict[bool, str], http: httpx.Client
) -> None:
    config, field, good, bad = CASES[kind]
    tasks = [
        {"id": 4, "data": {field: "x", "answer": {"result": good}}},
        {"id": 5, "data": {field: "x", "answer": {"result": good + bad}}},
    ]
    answer = http.post(f"{backends[True]}/predict", json={"tasks": tasks, "label_config": config})
    assert answer.status_code == 500
    body = answer.json()
    assert body["error"] == "InvalidPrediction"
    assert len(body["problems"]) == len(bad)
    assert all("task 5" in line for line in body["problems"])
    assert f"result[{len(good)}]" in body["problems"][0]


def test_non_finite_and_non_numeric_scores_are_refused(
    backends: dict[bool, str], http: httpx.Client
) -> None:
    answer = {"result": [{**choice("Positive"), "score": "high"}], "score": 0.5}
    task = {"id": 9, "data": {"text": "x", "answer": answer}}
    reply = http.post(
        f"{backends[True]}/predict", json={"tasks": [task], "label_config": CHOICES_CONFIG}
    )
    assert reply.status_code == 500 and "score" in reply.json()["detail"]
