"""labelbridge.results: result items that validate, and labels read back from annotations."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from labelbridge.label_config import LabelConfig
from labelbridge.model import TrainingData
from labelbridge.results import (
    ChoiceExample,
    Span,
    choice_examples,
    choice_pairs,
    choice_result,
    choices_prediction,
    prediction,
    rectangle_result,
    span_examples,
    span_result,
    task_value,
)
from labelbridge.validation import validate_prediction

CHOICES = LabelConfig.parse(
    '<View><Text name="text" value="$text"/><Choices name="mood" toName="text">'
    '<Choice value="Positive"/><Choice value="Negative" alias="neg"/></Choices>'
    '<Choices name="topic" toName="text" choice="multiple"><Choice value="A"/><Choice value="B"/>'
    "</Choices></View>"
)
NER = LabelConfig.parse(
    '<View><Labels name="label" toName="text"><Label value="PER"/><Label value="LOC"/></Labels>'
    '<Text name="text" value="$text"/></View>'
)
BOXES = LabelConfig.parse(
    '<View><Image name="image" value="$image"/><RectangleLabels name="box" toName="image">'
    '<Label value="Cat"/></RectangleLabels></View>'
)
MERGED = LabelConfig.parse(
    '<View><Image name="image" value="$image"/><Labels name="kind" toName="image">'
    '<Label value="Cat"/></Labels><Rectangle name="rect" toName="image"/></View>'
)
EMOJI = "🎉 Zoë met 王芳 in Zürich 👋 today"


def _valid(config: LabelConfig, pred: dict[str, Any]) -> None:
    assert validate_prediction(config, pred) == [], validate_prediction(config, pred)


def _task(text: str, *annotations: list[dict[str, Any]], cancelled: bool = False) -> dict:
    return {
        "id": 7,
        "data": {"text": text},
        "annotations": [{"result": r, "was_cancelled": cancelled} for r in annotations],
    }


def _choice(control: str, *labels: Any) -> dict[str, Any]:
    return {
        "from_name": control,
        "to_name": "text",
        "type": "choices",
        "value": {"choices": list(labels)},
    }


def _span(start: int, end: int, label: str, control: str = "label") -> dict[str, Any]:
    value = {"start": start, "end": end, "labels": [label]}
    return {"from_name": control, "to_name": "text", "type": "labels", "value": value}


# --- building -------------------------------------------------------------------------------
def test_choice_result_and_prediction_validate() -> None:
    match = CHOICES.first("Choices")
    item = choice_result(match, "Positive", score=np.float32(0.75))
    assert item == {
        "from_name": "mood",
        "to_name": "text",
        "type": "choices",
        "value": {"choices": ["Positive"]},
        "score": 0.75,
    }
    assert type(item["score"]) is float  # numpy scalars become plain floats
    _valid(CHOICES, prediction([item], 0.75))
    assert "score" not in choice_result(match, "Negative")


def test_scores_are_clamped_and_nan_is_an_error() -> None:
    match = CHOICES.first("Choices")
    assert choice_result(match, "Positive", score=1.0000001)["score"] == 1.0
    assert prediction([], -0.2)["score"] == 0.0
    assert prediction([])["score"] is None
    with pytest.raises(ValueError, match="finite"):
        prediction([], math.nan)


def test_choices_prediction_takes_the_top_label_the_config_offers() -> None:
    match = CHOICES.first("Choices")
    pred = choices_prediction(match, {"Negative": 0.3, "Positive": 0.6, "Gone": 0.9})
    assert pred["result"][0]["value"]["choices"] == ["Positive"]
    assert pred["score"] == pytest.approx(0.6) and pred["result"][0]["score"] == pytest.approx(0.6)
    _valid(CHOICES, pred)
    assert choices_prediction(match, {"Gone": 1.0}) == {"result": [], "score": None}


def test_multiple_choices() -> None:
    match = CHOICES.first("Choices", object_tag="Text")
    topic = CHOICES.controls["topic"]
    multi = match._replace(control=topic, labels=topic.labels)
    _valid(CHOICES, prediction([choice_result(multi, ["A", "B"], score=0.5)]))


def test_span_result_slices_the_text_in_code_points() -> None:
    match = NER.first("Labels")
    start = EMOJI.index("王芳")
    item = span_result(match, EMOJI, start, start + 2, "PER", score=0.9, region_id="r1")
    # code points: the emoji counts 1 (JavaScript's UTF-16 length would make this 11..13)
    assert item["value"] == {"start": 10, "end": 12, "text": "王芳", "labels": ["PER"]}
    assert item["id"] == "r1"
    _valid(NER, prediction([item], 0.9))
    zurich = EMOJI.index("Zürich")
    assert span_result(match, EMOJI, zurich, zurich + 6, "LOC")["value"]["text"] == "Zürich"
    for start, end in [(-1, 2), (3, 3), (0, len(EMOJI) + 1)]:
        with pytest.raises(ValueError, match="not inside"):
            span_result(match, EMOJI, start, end, "PER")


def test_rectangle_result_is_clipped_to_the_image() -> None:
    match = BOXES.first("RectangleLabels")
    item = rectangle_result(
        match, "Cat", x=-2, y=90, width=30, height=20, score=0.8, image_size=(640, 480)
    )
    assert item["type"] == "rectanglelabels"
    assert item["value"]["x"] == 0 and item["value"]["width"] == 28
    assert item["value"]["y"] == 90 and item["value"]["height"] == 10
    assert (item["original_width"], item["original_height"]) == (640, 480)
    _valid(BOXES, prediction([item], 0.8))
    with pytest.raises(ValueError, match="outside"):
        rectangle_result(match, "Cat", x=101, y=0, width=5, height=5)


def test_rectangle_result_with_labels_and_rectangle_tools() -> None:
    match = MERGED.first("Labels")
    item = rectangle_result(match, "Cat", x=10, y=10, width=20, height=20)
    assert item["from_name"] == "kind" and item["type"] == "rectanglelabels"
    _valid(MERGED, prediction([item]))


# --- reading --------------------------------------------------------------------------------
def test_choice_examples_from_tasks() -> None:
    match = CHOICES.first("Choices")
    tasks = [
        _task("good", [_choice("mood", "Positive")]),
        _task("bad", [_choice("topic", "A"), _choice("mood", "neg")]),  # an alias is a label
        _task("skipped", [_choice("mood", "Positive")], cancelled=True),
        _task("renamed", [_choice("mood", "Neutral")]),  # no longer in the config
        _task("empty", []),
        {"id": 9, "data": {}, "annotations": [{"result": [_choice("mood", "Positive")]}]},
    ]
    examples = choice_examples(tasks, match)
    assert [(e.value, e.label) for e in examples] == [("good", "Positive"), ("bad", "neg")]
    assert isinstance(examples[0], ChoiceExample) and examples[0].task is tasks[0]
    assert choice_pairs(tasks, match) == [("good", "Positive"), ("bad", "neg")]
    everything = choice_pairs(tasks, match, known_only=False)
    assert ("renamed", "Neutral") in everything


def test_choice_examples_keep_every_choice_of_a_multiple_control() -> None:
    topic = CHOICES.controls["topic"]
    match = CHOICES.first("Choices")._replace(control=topic, labels=topic.labels)
    [example] = choice_examples([_task("x", [_choice("topic", "B", "A")])], match)
    assert example.label == "B" and example.choices == ("B", "A")


def test_choice_examples_from_training_data(tmp_path: Path) -> None:
    match = CHOICES.first("Choices")
    data = TrainingData(
        project="1",
        label_config=CHOICES,
        tasks=[_task("good", [_choice("mood", "Positive")]), _task("x", [], cancelled=True)],
        output_dir=tmp_path,
        model_version="m-v1",
    )
    assert choice_pairs(data, match) == [("good", "Positive")]


def test_span_examples() -> None:
    match = NER.first("Labels")
    zoe, zurich = EMOJI.index("Zoë"), EMOJI.index("Zürich")
    tasks = [
        _task(
            EMOJI,
            [
                _span(zurich, zurich + 6, "LOC"),
                _span(zoe, zoe + 3, "PER"),
                _span(5, 500, "PER"),  # past the end: not trusted
                _span(2, 4, "ORG"),  # not a label of this config
            ],
        ),
        _task("nothing here", []),  # no entity is a label too
        _task("skipped", [_span(0, 2, "PER")], cancelled=True),
    ]
    first, second = span_examples(tasks, match)
    assert first.text == EMOJI
    assert first.spans == (Span(zoe, zoe + 3, "PER"), Span(zurich, zurich + 6, "LOC"))
    assert [EMOJI[s.start : s.end] for s in first.spans] == ["Zoë", "Zürich"]
    assert second.spans == ()
    loose = span_examples(tasks, match, known_only=False)[0]
    assert Span(2, 4, "ORG") in loose.spans


def test_span_examples_read_url_texts_through_the_assets_layer() -> None:
    config = LabelConfig.parse(
        '<View><Labels name="label" toName="text"><Label value="PER"/></Labels>'
        '<Text name="text" value="$doc" valueType="url"/></View>'
    )

    class Assets:
        def read_text(self, value: str, *, task_id: int | None = None) -> str:
            assert (value, task_id) == ("/data/upload/1/a.txt", 7)
            return "Hi Zoë"

    task = {"id": 7, "data": {"doc": "/data/upload/1/a.txt"}}
    task["annotations"] = [{"result": [_span(3, 6, "PER")]}]
    [example] = span_examples([task], config.first("Labels"), assets=Assets())  # type: ignore[arg-type]
    assert example.text == "Hi Zoë" and example.spans == (Span(3, 6, "PER"),)


def test_task_value() -> None:
    match = CHOICES.first("Choices")
    assert task_value({"data": {"text": "hi"}}, match) == "hi"
    assert task_value({"data": {}}, match) is None
    assert task_value({}, match) is None
