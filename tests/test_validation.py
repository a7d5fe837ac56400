"""Predictions are checked against the labeling config: a valid and an invalid case per rule."""

from __future__ import annotations

import copy
import itertools
import json
import math
from pathlib import Path
from typing import Any

import pytest

from labelbridge.label_config import LabelConfig
from labelbridge.validation import Problem, split_valid, validate_prediction, validate_result_item

# CI puts a copy of shared/ beside the clone: <clone>/../shared/
CAPTURES = (
    Path(__file__).resolve().parents[1].parent
    / "shared"
    / "protocol"
    / "label-studio-1.23.2-captures.json"
)

SENTIMENT = (
    '<View><Text name="text" value="$text"/><Choices name="sentiment" toName="text" '
    'choice="single"><Choice value="Positive"/><Choice value="Negative"/></Choices></View>'
)
EVERYTHING = """
<View>
  <Text name="text" value="$text"/>
  <Choices name="sentiment" toName="text">
    <Choice value="Positive"/><Choice value="Negative"/>
  </Choices>
  <Choices name="topics" toName="text" choice="multiple">
    <Choice value="Sport"/><Choice value="Politics" alias="POL"/>
  </Choices>
  <Choices name="dyn" toName="text" value="$options"/>
  <Labels name="ner" toName="text"><Label value="PER"/><Label value="ORG"/></Labels>
  <Relations><Relation value="works_for"/></Relations>
  <TextArea name="summary" toName="text"/>
  <Rating name="stars" toName="text" maxRating="5"/>
  <Number name="count" toName="text" min="0" max="10"/>
  <DateTime name="when" toName="text" only="date"/>
  <Taxonomy name="tax" toName="text">
    <Choice value="Animal"><Choice value="Cat"/></Choice><Choice value="Plant"/>
  </Taxonomy>
  <Image name="image" value="$image"/>
  <RectangleLabels name="box" toName="image">
    <Label value="Cat"/><Label value="Dog"/>
  </RectangleLabels>
  <PolygonLabels name="poly" toName="image"><Label value="Road"/></PolygonLabels>
  <KeyPointLabels name="kp" toName="image"><Label value="Eye"/></KeyPointLabels>
  <EllipseLabels name="ell" toName="image"><Label value="Ball"/></EllipseLabels>
  <BrushLabels name="brush" toName="image"><Label value="Sky"/></BrushLabels>
  <Rectangle name="rect" toName="image"/>
  <Labels name="tags" toName="image"><Label value="Tree"/></Labels>
  <HyperText name="html" value="$html"/>
  <HyperTextLabels name="quote" toName="html"><Label value="Quote"/></HyperTextLabels>
  <Paragraphs name="dialog" value="$dialog"/>
  <ParagraphLabels name="turn" toName="dialog"><Label value="Question"/></ParagraphLabels>
  <Audio name="audio" value="$audio"/>
  <Labels name="speech" toName="audio"><Label value="Speaker"/></Labels>
  <TimeSeries name="ts" value="$ts"><Channel column="v"/></TimeSeries>
  <TimeSeriesLabels name="events" toName="ts"><Label value="Spike"/></TimeSeriesLabels>
  <Text name="left" value="$left"/><Text name="right" value="$right"/>
  <Pairwise name="pick" toName="left,right"/>
</View>
"""
CONFIG = LabelConfig.parse(EVERYTHING)
BOX = {"x": 10, "y": 20.5, "width": 30, "height": 40}


def item(from_name: str, to_name: str, rtype: str, **value: Any) -> dict[str, Any]:
    return {"from_name": from_name, "to_name": to_name, "type": rtype, "value": value}


def problems_of(result_item: Any, config: LabelConfig = CONFIG) -> list[tuple[str, str]]:
    return [(p.field, p.message) for p in validate_result_item(config, result_item)]


# (valid item, invalid item, field at fault, words of the message)
CASES: dict[str, tuple[dict[str, Any], dict[str, Any], str, str]] = {
    "choice not a label": (
        item("sentiment", "text", "choices", choices=["Positive"]),
        item("sentiment", "text", "choices", choices=["Neutral"]),
        "value.choices",
        "'Neutral' is not a label of Choices 'sentiment' (labels: Positive, Negative)",
    ),
    "choices empty": (
        item("sentiment", "text", "choices", choices=["Negative"]),
        item("sentiment", "text", "choices", choices=[]),
        "value.choices",
        "empty",
    ),
    "single choice given two": (
        item("topics", "text", "choices", choices=["Sport", "POL"]),  # multiple, alias
        item("sentiment", "text", "choices", choices=["Positive", "Negative"]),
        "value.choices",
        "takes one choice, got 2",
    ),
    "choices not a list": (
        item("topics", "text", "choices", choices=["Politics"]),
        item("topics", "text", "choices", choices="Sport"),
        "value.choices",
        "must be a list of strings",
    ),
    "dynamic choices take any string": (
        item("dyn", "text", "choices", choices=["whatever the task offers"]),
        item("dyn", "text", "choices", choices=[1]),
        "value.choices",
        "item 0 must be a string",
    ),
    "span end before start": (
        item("ner", "text", "labels", start=0, end=3, text="Zoë", labels=["PER"]),
        item("ner", "text", "labels", start=5, end=2, labels=["PER"]),
        "value.end",
        "greater than start",
    ),
    "span offsets are integers": (
        item("ner", "text", "labels", start=7, end=9, text="東京", labels=["ORG"]),
        item("ner", "text", "labels", start=1.5, end=3, labels=["ORG"]),
        "value.start",
        "must be an integer",
    ),
    "span label unknown": (
        item("ner", "text", "labels", start=0, end=1, labels=["ORG"]),
        item("ner", "text", "labels", start=0, end=1, labels=["LOC"]),
        "value.labels",
        "'LOC' is not a label of Labels 'ner' (labels: PER, ORG)",
    ),
    "span text is a string": (
        item("ner", "text", "labels", start=0, end=2, text="Zo", labels=["PER"]),
        item("ner", "text", "labels", start=0, end=2, text=["Zo"], labels=["PER"]),
        "value.text",
        "must be a string",
    ),
    "textarea": (
        item("summary", "text", "textarea", text=["one", "two"]),
        item("summary", "text", "textarea", text=5),
        "value.text",
        "must be a string or a non-empty list",
    ),
    "rating range": (
        item("stars", "text", "rating", rating=5),
        item("stars", "text", "rating", rating=6),
        "value.rating",
        "outside 0..5",
    ),
    "rating whole": (
        item("stars", "text", "rating", rating=0),
        item("stars", "text", "rating", rating=3.5),
        "value.rating",
        "whole number",
    ),
    "number range": (
        item("count", "text", "number", number=9.5),
        item("count", "text", "number", number=11),
        "value.number",
        "outside 0..10",
    ),
    "datetime": (
        item("when", "text", "datetime", datetime="2024-05-01"),
        item("when", "text", "datetime", datetime=""),
        "value.datetime",
        "date/time string",
    ),
    "taxonomy path": (
        item("tax", "text", "taxonomy", taxonomy=[["Animal", "Cat"], ["Plant"]]),
        item("tax", "text", "taxonomy", taxonomy=[["Cat"]]),
        "value.taxonomy[0]",
        "'Cat' is not in Taxonomy 'tax'",
    ),
    "box past the edge": (
        item("box", "image", "rectanglelabels", **BOX, rectanglelabels=["Cat"]),
        item("box", "image", "rectanglelabels", **{**BOX, "x": 80}, rectanglelabels=["Cat"]),
        "value.width",
        "x + width = 110 goes past the image",
    ),
    "box negative": (
        item("box", "image", "rectanglelabels", **BOX, rotation=45, rectanglelabels=["Dog"]),
        item("box", "image", "rectanglelabels", **{**BOX, "y": -3}, rectanglelabels=["Dog"]),
        "value.y",
        "-3 is outside 0..100",
    ),
    "box not a number": (
        item(
            "box",
            "image",
            "rectanglelabels",
            **{**BOX, "x": 99.9999999, "width": 1e-7},
            rectanglelabels=["Dog"],
        ),
        item(
            "box", "image", "rectanglelabels", **{**BOX, "width": math.nan}, rectanglelabels=["Dog"]
        ),
        "value.width",
        "must be a finite number",
    ),
    "box needs its labels": (
        item("box", "image", "rectanglelabels", **BOX, rectanglelabels=["Cat", "Dog"]),
        item("box", "image", "rectanglelabels", **BOX),
        "value.rectanglelabels",
        "must be a list of strings, got nothing (missing)",
    ),
    "rectangle type for RectangleLabels": (
        item("box", "image", "rectanglelabels", **BOX, rectanglelabels=["Cat"]),
        item("box", "image", "rectangle", **BOX, rectanglelabels=["Cat"]),
        "type",
        "must be 'rectanglelabels' for RectangleLabels 'box', got string 'rectangle'",
    ),
    "bare tool takes labels from <Labels>": (
        item("rect", "image", "rectangle", **BOX, labels=["Tree"]),
        item("rect", "image", "rectangle", **BOX, labels=["Cat"]),
        "value.labels",
        "'Cat' is not a label of the <Labels> of 'image' (labels: Tree)",
    ),
    "merged labels need a matching tool": (
        item("tags", "image", "rectanglelabels", **BOX, rectanglelabels=["Tree"]),
        item("tags", "image", "ellipselabels", x=5, y=5, radiusX=2, radiusY=2, labels=["Tree"]),
        "type",
        "must be 'labels' for Labels 'tags'",
    ),
    "polygon points": (
        item(
            "poly",
            "image",
            "polygonlabels",
            points=[[0, 0], [50, 0], [50, 50]],
            polygonlabels=["Road"],
        ),
        item("poly", "image", "polygonlabels", points=[[0, 0], [50, 0]], polygonlabels=["Road"]),
        "value.points",
        "at least 3 points, got 2",
    ),
    "polygon point range": (
        item(
            "poly",
            "image",
            "polygonlabels",
            points=[(1, 1), (2, 2), (3, 3), (100, 100)],
            polygonlabels=["Road"],
        ),
        item(
            "poly",
            "image",
            "polygonlabels",
            points=[[1, 1], [101, 2], [3, 3]],
            polygonlabels=["Road"],
        ),
        "value.points[1]",
        "[101, 2] is outside 0..100",
    ),
    "keypoint": (
        item("kp", "image", "keypointlabels", x=50, y=50, width=0.5, keypointlabels=["Eye"]),
        item("kp", "image", "keypointlabels", x=50, y=100.5, keypointlabels=["Eye"]),
        "value.y",
        "outside 0..100",
    ),
    "ellipse": (
        item(
            "ell",
            "image",
            "ellipselabels",
            x=50,
            y=50,
            radiusX=10,
            radiusY=5,
            ellipselabels=["Ball"],
        ),
        item(
            "ell",
            "image",
            "ellipselabels",
            x=50,
            y=50,
            radiusX=0,
            radiusY=5,
            ellipselabels=["Ball"],
        ),
        "value.radiusX",
        "greater than 0",
    ),
    "brush bytes": (
        item("brush", "image", "brushlabels", format="rle", rle=[0, 12, 255], brushlabels=["Sky"]),
        item("brush", "image", "brushlabels", format="rle", rle=[0, 256], brushlabels=["Sky"]),
        "value.rle",
        "from 0 to 255",
    ),
    "brush format": (
        item("brush", "image", "brushlabels", format="rle", rle=[1], brushlabels=["Sky"]),
        item("brush", "image", "brushlabels", rle=[1], brushlabels=["Sky"]),
        "value.format",
        "must be 'rle'",
    ),
    "hypertext offsets": (
        item(
            "quote",
            "html",
            "hypertextlabels",
            start="/p[1]/text()[1]",
            end="/p[1]/text()[1]",
            startOffset=0,
            endOffset=5,
            hypertextlabels=["Quote"],
        ),
        item(
            "quote",
            "html",
            "hypertextlabels",
            start="/p[1]",
            end="/p[1]",
            startOffset=5,
            endOffset=5,
            hypertextlabels=["Quote"],
        ),
        "value.endOffset",
        "greater than startOffset (5)",
    ),
    "paragraph span": (
        item(
            "turn",
            "dialog",
            "paragraphlabels",
            start="0",
            end="2",
            startOffset=0,
            endOffset=4,
            paragraphlabels=["Question"],
        ),
        item("turn", "dialog", "paragraphlabels", end="2", paragraphlabels=["Question"]),
        "value.start",
        "must be a path or an index, got nothing (missing)",
    ),
    "audio segment": (
        item("speech", "audio", "labels", start=1.25, end=3, labels=["Speaker"]),
        item("speech", "audio", "labels", start=3, end=1.25, labels=["Speaker"]),
        "value.end",
        "must not be before start",
    ),
    "timeseries range": (
        item(
            "events",
            "ts",
            "timeserieslabels",
            start=1,
            end=5,
            instant=False,
            timeserieslabels=["Spike"],
        ),
        item("events", "ts", "timeserieslabels", start=None, end=5, timeserieslabels=["Spike"]),
        "value.start",
        "number or a time string",
    ),
    "pairwise": (
        item("pick", "pick", "pairwise", selected="left"),
        item("pick", "left", "pairwise", selected="middle"),
        "value.selected",
        "'left' or 'right'",
    ),
    "from_name unknown": (
        item("sentiment", "text", "choices", choices=["Positive"]),
        item("nope", "text", "choices", choices=["Positive"]),
        "from_name",
        "'nope' is not a control tag",
    ),
    "to_name unknown": (
        item("sentiment", "text", "choices", choices=["Positive"]),
        item("sentiment", "txt", "choices", choices=["Positive"]),
        "to_name",
        "'txt' is not an object tag",
    ),
    "to_name not connected": (
        item("box", "image", "rectanglelabels", **BOX, rectanglelabels=["Cat"]),
        item("sentiment", "image", "choices", choices=["Positive"]),
        "to_name",
        "'image' is not connected to Choices 'sentiment' (text)",
    ),
    "value not an object": (
        item("sentiment", "text", "choices", choices=["Positive"]),
        {"from_name": "sentiment", "to_name": "text", "type": "choices", "value": ["Positive"]},
        "value",
        "must be an object, got list",
    ),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_rule(case: str) -> None:
    good, bad, field, words = CASES[case]
    assert problems_of(good) == []
    found = problems_of(bad)
    assert [f for f, _ in found] == [field], found
    assert words in found[0][1]


def test_item_must_be_an_object() -> None:
    problems = validate_prediction(CONFIG, {"result": ["choices"]}, task_index=0, task_id=1)
    assert [(p.item_index, p.field) for p in problems] == [(0, "result[0]")]
    assert (
        str(problems[0]) == "task 1 (index 0), result[0]: must be an object, got string 'choices'"
    )


def test_a_single_item_can_be_placed_in_its_task() -> None:
    assert [p.field for p in validate_result_item(CONFIG, 5)] == ["item"]
    bad = item("sentiment", "text", "choices", choices=["Neutral"])
    (problem,) = validate_result_item(CONFIG, bad, item_index=2, task_index=3, task_id=17)
    assert (problem.field, problem.item_index) == ("result[2].value.choices", 2)
    assert str(problem).startswith("task 17 (index 3), result[2]: value.choices: 'Neutral'")
    lonely = relation("a", "b")  # its regions are elsewhere: ids are checked only when given
    assert validate_result_item(CONFIG, lonely) == []
    assert [p.field for p in validate_result_item(CONFIG, lonely, region_ids={"a"})] == ["to_id"]


def test_unknown_extra_keys_are_fine() -> None:
    extra = {
        **item("sentiment", "text", "choices", choices=["Positive"]),
        "id": "r1",
        "origin": "prediction",
        "readonly": False,
        "hidden": False,
        "meta": {"text": ["a note"]},
        "parentID": "p0",
        "score": 0.5,
    }
    assert problems_of(extra) == []


@pytest.mark.parametrize("score", [math.nan, math.inf, -math.inf, True, "0.9", [0.9]])
def test_item_score_must_be_a_finite_number(score: Any) -> None:
    bad = {**item("sentiment", "text", "choices", choices=["Positive"]), "score": score}
    found = problems_of(bad)
    assert [f for f, _ in found] == ["score"] and "finite number" in found[0][1]
    assert problems_of({**bad, "score": 0.25}) == [] and problems_of({**bad, "score": 7}) == []


@pytest.mark.parametrize(
    ("score", "words"),
    [
        (math.nan, "finite"),
        (math.inf, "finite"),
        (False, "finite"),
        ("high", "finite"),
        (1.5, "0..1"),
    ],
)
def test_prediction_score_must_be_a_finite_number_in_0_1(score: Any, words: str) -> None:
    prediction = {"result": [], "score": score, "model_version": "v1"}
    problems = validate_prediction(CONFIG, prediction, task_index=0, task_id=None)
    assert [p.field for p in problems] == ["score"] and words in problems[0].message
    assert validate_prediction(CONFIG, {**prediction, "score": 0.9}) == []
    assert validate_prediction(CONFIG, {**prediction, "score": None}) == []


def test_prediction_result_must_be_a_list() -> None:
    problems = validate_prediction(
        CONFIG, {"result": {"from_name": "sentiment"}}, task_index=2, task_id=8
    )
    assert [(p.field, p.item_index) for p in problems] == [("result", None)]
    assert str(problems[0]) == (
        "task 8 (index 2): result: must be a list of result items, "
        "got object {'from_name': 'sentiment'}"
    )
    assert [p.field for p in validate_prediction(CONFIG, "nope")] == ["prediction"]
    assert [p.field for p in validate_prediction(CONFIG, {"score": 0.5})] == ["result"]


def test_problem_reads_naturally() -> None:
    config = LabelConfig.parse(SENTIMENT)
    result = [item("sentiment", "text", "choices", choices=["Positive"])] * 2
    result.append(item("sentiment", "text", "choices", choices=["Neutral"]))
    problems = validate_prediction(config, {"result": result}, task_index=3, task_id=17)
    assert problems == [
        Problem(3, 17, 2, "result[2].value.choices", problems[0].message),
    ]
    assert str(problems[0]) == (
        "task 17 (index 3), result[2]: value.choices: 'Neutral' is not a label of Choices "
        "'sentiment' (labels: Positive, Negative)"
    )
    assert str(Problem(None, None, None, "score", "bad")) == "score: bad"
    assert (
        str(Problem(4, None, 0, "result[0].type", "bad")) == "task at index 4, result[0]: type: bad"
    )


@pytest.mark.skipif(not CAPTURES.is_file(), reason=f"captures not found at {CAPTURES}")
def test_the_captured_label_studio_config() -> None:
    steps = {s["step"]: s for s in json.loads(CAPTURES.read_text(encoding="utf-8"))["steps"]}
    config = LabelConfig.parse(steps["create_project"]["label_studio_call"]["body"]["label_config"])
    good = item("sentiment", "text", "choices", choices=["Negative"])
    bad = item("sentiment", "text", "choices", choices=["Neutral"])
    clean, problems = split_valid(config, [{"result": [good, bad], "score": 0.8}], [17])
    assert clean == [{"result": [good], "score": 0.8}]
    assert [str(p) for p in problems] == [
        "task 17 (index 0), result[1]: value.choices: 'Neutral' is not a label of Choices "
        "'sentiment' (labels: Positive, Negative)"
    ]


# --- relations ----------------------------------------------------------------------------
def span(region_id: str, start: int, end: int, label: str) -> dict[str, Any]:
    return {"id": region_id, **item("ner", "text", "labels", start=start, end=end, labels=[label])}


def relation(from_id: Any, to_id: Any, **extra: Any) -> dict[str, Any]:
    return {"type": "relation", "from_id": from_id, "to_id": to_id, **extra}


def test_relations_between_regions_of_the_result_are_accepted() -> None:
    result = [
        span("a", 0, 4, "PER"),
        span("b", 10, 14, "ORG"),
        relation("a", "b", direction="right", labels=["works_for"]),
        relation("b", "a"),
    ]
    assert validate_prediction(CONFIG, {"result": result}) == []


@pytest.mark.parametrize(
    ("bad", "field", "words"),
    [
        (relation("a", "zzz"), "to_id", "'zzz' is not the id of a valid region"),
        (relation(None, "a"), "from_id", "must be the id of a region"),
        (relation("a", "b", direction="up"), "direction", "left, right or bi"),
        (relation("a", "b", labels=["knows"]), "labels", "'knows' is not a relation label"),
    ],
)
def test_bad_relations_are_refused(bad: dict[str, Any], field: str, words: str) -> None:
    result = [span("a", 0, 4, "PER"), span("b", 10, 14, "ORG"), bad]
    problems = validate_prediction(CONFIG, {"result": result})
    assert [(p.item_index, p.field) for p in problems] == [(2, f"result[2].{field}")]
    assert words in problems[0].message


def test_a_relation_to_a_dropped_region_is_dropped_too() -> None:
    result = [span("a", 0, 4, "PER"), span("b", 10, 14, "LOC"), relation("a", "b")]
    clean, problems = split_valid(CONFIG, [{"result": result}], [1])
    assert [p.item_index for p in problems] == [1, 2]
    assert clean[0]["result"] == [result[0]]


# --- split_valid --------------------------------------------------------------------------
def test_split_valid_keeps_the_valid_items_of_each_prediction() -> None:
    good = item("sentiment", "text", "choices", choices=["Positive"])
    box = item("box", "image", "rectanglelabels", **BOX, rectanglelabels=["Cat"])
    bad = item("sentiment", "text", "choices", choices=["Maybe"])
    clean_prediction = {"result": [good], "score": 0.4, "model_version": "v2"}
    mixed = {"result": [good, bad, box], "score": 0.7, "model_version": "v2"}
    before = copy.deepcopy(mixed)
    several = [{"result": [bad]}, {"result": [box], "score": math.nan}]
    clean, problems = split_valid(
        CONFIG, [clean_prediction, mixed, several, None], [10, 11, 12, 13]
    )
    assert clean[0] is clean_prediction  # nothing to fix: not copied
    assert clean[1] == {"result": [good, box], "score": 0.7, "model_version": "v2"}
    assert mixed == before  # the input is not changed
    assert clean[2] == [{"result": []}, {"result": [box], "score": None}]
    assert clean[3] == {"result": []}
    assert [(p.task_id, p.task_index, p.item_index, p.field) for p in problems] == [
        (11, 1, 1, "result[1].value.choices"),
        (12, 2, 0, "result[0].value.choices"),
        (12, 2, None, "score"),
        (13, 3, None, "prediction"),
    ]


def test_split_valid_finds_the_one_bad_item_among_ten_thousand_tasks() -> None:
    result = [
        item("sentiment", "text", "choices", choices=["Positive"]),
        span("s1", 0, 5, "PER"),
        item("box", "image", "rectanglelabels", **BOX, rectanglelabels=["Dog"]),
    ]
    predictions: list[dict[str, Any]] = [
        {"result": list(result), "score": 0.5, "model_version": "v"} for _ in range(10_000)
    ]
    predictions[5000]["result"].append(item("sentiment", "text", "choices", choices=["?"]))
    clean, problems = split_valid(CONFIG, predictions, list(range(10_000)))
    assert [(p.task_id, p.item_index) for p in problems] == [(5000, 3)]
    assert len(clean[5000]["result"]) == 3 and clean[1] is predictions[1]


# --- the shortcut for plain Choices items ---------------------------------------------------
def _choice_items() -> list[Any]:
    """Choices items of every control of CONFIG, each field in turn set to odd values."""
    odd: list[Any] = [None, "", "Positive", "POL", "Sport", 1, 0.5, 2.0, math.nan, True, [], {}]
    odd += [["Positive"], ["Sport", "POL"], ["Sport", "Sport"], ["Cat"], ["Animal", "Cat"], [1]]
    items: list[Any] = []
    names = [*CONFIG.controls, "nope"]
    for name in names:
        for value in (["Positive"], ["Sport", "POL"], ["Politics"], ["x"], ["Animal"]):
            base = {
                "from_name": name,
                "to_name": "text",
                "type": "choices",
                "value": {"choices": value},
                "score": 0.5,
            }
            items.append(base)
            for key in ("from_name", "to_name", "type", "score", "value", "id"):
                for bad in odd:
                    items.append({**base, key: bad})
                items.append({k: v for k, v in base.items() if k != key})
            for bad in odd:
                items.append({**base, "value": {"choices": bad}})
                items.append({**base, "value": {"choices": value, "other": bad}})
    return items


def test_the_plain_choices_shortcut_never_passes_an_item_the_full_check_refuses() -> None:
    from labelbridge.validation import _check_item, _plain_choices

    passed = 0
    for item in _choice_items():
        issues: list[tuple[str, str]] = []
        _check_item(CONFIG, item, issues)
        if _plain_choices(CONFIG, item):
            passed += 1
            assert issues == [], item
    assert passed > 20  # the shortcut is taken (single, multiple, aliases, dynamic labels)


def test_split_valid_gives_the_same_answer_with_and_without_the_shortcut(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from labelbridge import validation

    items = _choice_items()
    predictions: list[Any] = [{"result": [item], "score": 0.5} for item in items]
    good = {"result": [items[0]], "score": 0.5, "model_version": "v1"}
    for key, value in itertools.product(
        ["result", "score", "model_version"], [None, 2.0, -0.1, math.inf, 1, "v", [], {}]
    ):
        predictions.append({**good, key: value})
    predictions += [good, [good, {**good, "score": 3.0}], None, [], {"result": items[:9]}]
    ids = list(range(len(predictions)))
    fast = split_valid(CONFIG, copy.deepcopy(predictions), ids)
    assert validation._plain_prediction(CONFIG, good)
    monkeypatch.setattr(validation, "_plain_choices", lambda config, item: False)
    monkeypatch.setattr(validation, "_plain_prediction", lambda config, prediction: False)
    full = split_valid(CONFIG, copy.deepcopy(predictions), ids)
    assert [str(p) for p in fast[1]] == [str(p) for p in full[1]]
    assert fast[0] == full[0]
