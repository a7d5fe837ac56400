"""Building prediction results and reading labels back from annotations.

Every model repeats the same two chores: turn its output into Label Studio result items in
predict(), and pull `(input, label)` pairs out of annotations in fit(). Both are easy to get
subtly wrong (a span whose `text` is not `data[start:end]`, a score outside 0..1 that Label
Studio refuses, labels of another control or a cancelled annotation used for training), so they
are written once here.

Text offsets are Python `str` indices, i.e. Unicode code points: what Label Studio stores for
`<Text>` spans (its editor converts from the browser's UTF-16 positions), so a span computed
with `text[start:end]` is highlighted where the model meant, accents, CJK and emoji included.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NamedTuple

from labelbridge.label_config import ControlMatch
from labelbridge.model import TrainingData

if TYPE_CHECKING:
    from labelbridge.assets import AssetResolver

__all__ = [
    "ChoiceExample",
    "Span",
    "SpanExample",
    "choice_examples",
    "choice_pairs",
    "choice_result",
    "choices_prediction",
    "prediction",
    "rectangle_result",
    "span_examples",
    "span_result",
    "task_value",
]

Task = dict[str, Any]
Annotated = TrainingData | Iterable[Task]


# --- building results -----------------------------------------------------------------------
def _score(score: float | None) -> float | None:
    """A plain float in 0..1, or None. Label Studio refuses predictions scored outside 0..1;
    numpy scalars would not serialize everywhere; NaN is a model bug worth an error here."""
    if score is None:
        return None
    value = float(score)
    if not math.isfinite(value):
        raise ValueError(f"score must be a finite number, got {score!r}")
    return min(1.0, max(0.0, value))


def _item(
    match: ControlMatch,
    rtype: str,
    value: dict[str, Any],
    score: float | None,
    region_id: str | None = None,
) -> dict[str, Any]:
    item: dict[str, Any] = {
        "from_name": match.control.name,
        "to_name": match.object.name,
        "type": rtype,
        "value": value,
    }
    if region_id is not None:
        item["id"] = region_id
    checked = _score(score)
    if checked is not None:
        item["score"] = checked
    return item


def prediction(result: Sequence[dict[str, Any]], score: float | None = None) -> dict[str, Any]:
    """`{"result": [...], "score": ...}`: the task-level score is what Label Studio's data
    manager sorts by, so give the model's confidence there (lowest = ask a human first)."""
    return {"result": list(result), "score": _score(score)}


def choice_result(
    match: ControlMatch, choices: str | Sequence[str], *, score: float | None = None
) -> dict[str, Any]:
    """A `<Choices>` result item choosing `choices` (one label, or several for choice="multiple")."""
    picked = [str(choices)] if isinstance(choices, str) else [str(c) for c in choices]
    return _item(match, match.control.type, {"choices": picked}, score)


def choices_prediction(match: ControlMatch, scores: Mapping[str, float]) -> dict[str, Any]:
    """A whole prediction from per-label probabilities: the most probable label the control
    offers, scored with its probability. Labels the config no longer has are ignored (a model
    trained before the config changed); with none left, the prediction is empty."""
    control = match.control
    ranked = sorted(
        (
            (float(p), label)
            for label, p in scores.items()
            if control.dynamic_labels or label in control.label_set
        ),
        key=lambda pair: -pair[0],
    )
    if not ranked:
        return prediction([], None)
    top, label = ranked[0]
    return prediction([choice_result(match, label, score=top)], top)


def span_result(
    match: ControlMatch,
    text: str,
    start: int,
    end: int,
    label: str,
    *,
    score: float | None = None,
    region_id: str | None = None,
) -> dict[str, Any]:
    """A `<Labels>` span over `text[start:end]` (code point offsets, as Label Studio stores).

    `text` is the whole task text: the item's `text` is sliced from it, so it always equals
    what Label Studio highlights. Offsets outside the text raise ValueError.
    """
    if not (0 <= start < end <= len(text)):
        raise ValueError(f"span {start}..{end} is not inside a text of {len(text)} characters")
    value = {"start": int(start), "end": int(end), "text": text[start:end], "labels": [str(label)]}
    return _item(match, match.control.type, value, score, region_id)


def rectangle_result(
    match: ControlMatch,
    label: str,
    *,
    x: float,
    y: float,
    width: float,
    height: float,
    score: float | None = None,
    rotation: float = 0.0,
    image_size: tuple[int, int] | None = None,
    region_id: str | None = None,
) -> dict[str, Any]:
    """A labeled box, in percent of the image (0..100) as Label Studio stores boxes.

    The box is clipped to the image (detectors often overshoot an edge by a pixel); a box with
    nothing left inside raises ValueError. Works for `<RectangleLabels>` and for a `<Labels>`
    used with `<Rectangle>` (the merged "rectanglelabels" type the editor saves).
    `image_size` (width, height in pixels) adds original_width/original_height.
    """
    x0, y0 = max(0.0, float(x)), max(0.0, float(y))
    x1, y1 = min(100.0, float(x) + float(width)), min(100.0, float(y) + float(height))
    if rotation == 0 and (x1 <= x0 or y1 <= y0):
        raise ValueError(f"box x={x} y={y} width={width} height={height} is outside the image")
    value: dict[str, Any] = {
        "x": x0,
        "y": y0,
        "width": x1 - x0 if rotation == 0 else float(width),
        "height": y1 - y0 if rotation == 0 else float(height),
        "rotation": float(rotation),
        "rectanglelabels": [str(label)],
    }
    item = _item(match, "rectanglelabels", value, score, region_id)
    if image_size is not None:
        item["original_width"], item["original_height"] = int(image_size[0]), int(image_size[1])
    return item


# --- reading annotations --------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Span:
    """One labeled span: `text[start:end]` in code points, and its label."""

    start: int
    end: int
    label: str


class ChoiceExample(NamedTuple):
    """One annotation of a `<Choices>` control: the task's value (the text, or the image URL
    to read through the assets layer), the first chosen label, the task, and all choices."""

    value: Any
    label: str
    task: Task
    choices: tuple[str, ...]


class SpanExample(NamedTuple):
    """One annotation of a `<Labels>` control on text: the text and its spans, sorted.

    An annotation with no span of this control is kept: "nothing to label here" is a label too.
    """

    text: str
    spans: tuple[Span, ...]
    task: Task


def task_value(task: Mapping[str, Any], match: ControlMatch) -> Any:
    """The task data the matched object shows (`data[<value field>]`), or None."""
    data = task.get("data")
    if match.value_field is None or not isinstance(data, Mapping):
        return None
    return data.get(match.value_field)


def _annotations(source: Annotated) -> Iterator[tuple[Task, dict[str, Any]]]:
    """(task, annotation) pairs, cancelled (skipped) annotations left out."""
    if isinstance(source, TrainingData):
        yield from source.annotations()
        return
    for task in source:
        for annotation in task.get("annotations") or []:
            if isinstance(annotation, dict) and not annotation.get("was_cancelled"):
                yield task, annotation


def _values(annotation: Mapping[str, Any], match: ControlMatch) -> Iterator[dict[str, Any]]:
    """The `value`s of the annotation's result items made with this control on this object."""
    for item in annotation.get("result") or []:
        if not isinstance(item, dict) or item.get("from_name") != match.control.name:
            continue
        if item.get("to_name") not in (None, match.object.name):
            continue
        value = item.get("value")
        if isinstance(value, dict):
            yield value


def _labels(values: Any, match: ControlMatch, known_only: bool) -> list[str]:
    if not isinstance(values, list):
        return []
    found = [v for v in values if isinstance(v, str)]  # nested choices are lists: skipped
    if known_only and not match.control.dynamic_labels:
        found = [v for v in found if v in match.control.label_set]
    return found


def choice_examples(
    source: Annotated, match: ControlMatch, *, known_only: bool = True
) -> list[ChoiceExample]:
    """Labeled examples for a `<Choices>` control, one per annotation that chose something.

    `source` is the job's TrainingData or plain tasks with "annotations". With `known_only`,
    labels the config no longer offers are dropped, so a model never learns to predict them.
    """
    out: list[ChoiceExample] = []
    for task, annotation in _annotations(source):
        value = task_value(task, match)
        if value is None:
            continue
        for item in _values(annotation, match):
            picked = _labels(item.get("choices"), match, known_only)
            if picked:
                out.append(ChoiceExample(value, picked[0], task, tuple(picked)))
                break
    return out


def choice_pairs(
    source: Annotated, match: ControlMatch, *, known_only: bool = True
) -> list[tuple[Any, str]]:
    """`(value, label)` pairs for a `<Choices>` control: e.g. (text, label) to fit a classifier."""
    return [(e.value, e.label) for e in choice_examples(source, match, known_only=known_only)]


def span_examples(
    source: Annotated,
    match: ControlMatch,
    *,
    known_only: bool = True,
    assets: AssetResolver | None = None,
) -> list[SpanExample]:
    """Texts and their labeled spans for a `<Labels>` control on `<Text>`.

    Spans whose offsets fall outside the text are skipped, not trusted. For a `<Text
    valueType="url">` the text is read through the assets layer (the job's, or `assets`).
    """
    if assets is None and match.object.value_type == "url" and isinstance(source, TrainingData):
        assets = source.assets
    key = match.control.type
    out: list[SpanExample] = []
    for task, annotation in _annotations(source):
        text = task_value(task, match)
        if isinstance(text, str) and assets is not None and match.object.value_type == "url":
            text = assets.read_text(text, task_id=task.get("id"))
        if not isinstance(text, str):
            continue
        spans = []
        for item in _values(annotation, match):
            start, end = item.get("start"), item.get("end")
            if type(start) is not int or type(end) is not int or not 0 <= start < end <= len(text):
                continue
            labels = _labels(item.get(key, item.get("labels")), match, known_only)
            if labels:
                spans.append(Span(start, end, labels[0]))
        spans.sort(key=lambda s: (s.start, s.end))
        out.append(SpanExample(text, tuple(spans), task))
    return out
