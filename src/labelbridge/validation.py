"""Checking predictions against a `LabelConfig`, so Label Studio never receives one it cannot show.

Label Studio stores whatever a backend returns (its own check is off by default, and when on, one
bad item fails the whole batch), and a result it cannot show is silently blank in the editor. So
every predicted item is checked here: the control and object it names, its type, and the shape,
ranges and labels of its value. Rules follow Label Studio's result format and its SDK validator.

The server calls `split_valid` on every /predict (up to 10,000 tasks): checks are dict and
frozenset look-ups on what `LabelConfig.parse` precomputed; messages are built only for problems.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from typing import Any

from labelbridge.label_config import ControlTag, LabelConfig, ObjectTag

__all__ = ["Problem", "split_valid", "validate_prediction", "validate_result_item"]

_EPS = 1e-6  # tolerance on 0..100 percentages, for float rounding
_MISSING: Any = object()
_TEXT_OBJECTS = frozenset({"Text"})
_DOM_OBJECTS = frozenset({"HyperText", "Paragraphs"})
_TIME_OBJECTS = frozenset({"Audio", "AudioPlus", "Video"})
_DIRECTIONS = frozenset({"left", "right", "bi"})
_SHOWN = 20  # labels or names listed in a message

Issues = list[tuple[str, str]]  # (field inside the item, e.g. "value.choices"; message)


@dataclass(frozen=True, slots=True)
class Problem:
    """One thing wrong with a prediction: where (task, result item, field) and what."""

    task_index: int | None
    task_id: Any
    item_index: int | None
    field: str
    message: str

    def __str__(self) -> str:
        where = ""
        if self.task_id is not None:
            where = f"task {self.task_id}"
            if self.task_index is not None:
                where += f" (index {self.task_index})"
        elif self.task_index is not None:
            where = f"task at index {self.task_index}"
        if self.item_index is None:
            head = f"{where}: {self.field}" if where else self.field
            return f"{head}: {self.message}"
        item = f"result[{self.item_index}]"
        head = f"{where}, {item}" if where else item
        inner = self.field.removeprefix(item).lstrip(".")
        return f"{head}: {inner}: {self.message}" if inner else f"{head}: {self.message}"


# --- public API ---------------------------------------------------------------------------
def validate_result_item(
    config: LabelConfig,
    item: Any,
    *,
    item_index: int | None = None,
    task_index: int | None = None,
    task_id: Any = None,
    region_ids: Collection[Any] | None = None,
) -> list[Problem]:
    """Problems of one result item; fields are relative to it ("value.choices") unless
    `item_index` is given ("result[2].value.choices"). A relation's ids are only checked
    against `region_ids` (ids of the valid regions of the same result): alone, it cannot know."""
    issues: Issues = []
    if isinstance(item, dict) and item.get("type") == "relation":
        _check_relation(config, item, region_ids, issues)
    else:
        _check_item(config, item, issues)
    prefix = "" if item_index is None else f"result[{item_index}]"
    return [Problem(task_index, task_id, item_index, _join(prefix, f), m) for f, m in issues]


def validate_prediction(
    config: LabelConfig, prediction: Any, *, task_index: int | None = None, task_id: Any = None
) -> list[Problem]:
    """Problems of one prediction `{"result": [...], "score": ..., "model_version": ...}`."""
    return _check_prediction(config, prediction, task_index, task_id)[0]


def split_valid(
    config: LabelConfig, predictions: Sequence[Any], task_ids: Sequence[Any]
) -> tuple[list[Any], list[Problem]]:
    """The predictions without their invalid items (valid items are kept), and the problems.

    An entry may be a list (several predictions for one task). A prediction without problems
    is returned as is; otherwise as a shallow copy without the bad items, an invalid score set
    to None, a result that is not a list replaced by [].
    """
    clean: list[Any] = []
    problems: list[Problem] = []
    for index, entry in enumerate(predictions):
        if type(entry) is dict and _plain_prediction(config, entry):
            clean.append(entry)
            continue
        task_id = task_ids[index] if index < len(task_ids) else None
        if isinstance(entry, list):
            fixed = []
            for prediction in entry:
                found, kept = _check_prediction(config, prediction, index, task_id, clean=True)
                problems.extend(found)
                fixed.append(kept)
            clean.append(fixed)
        else:
            found, kept = _check_prediction(config, entry, index, task_id, clean=True)
            problems.extend(found)
            clean.append(kept)
    return clean, problems


# --- predictions --------------------------------------------------------------------------
def _check_prediction(
    config: LabelConfig, prediction: Any, task_index: int | None, task_id: Any, clean: bool = False
) -> tuple[list[Problem], Any]:
    problems: list[Problem] = []
    if not isinstance(prediction, dict):
        message = f"must be an object with a result list, got {_show(prediction)}"
        problems.append(Problem(task_index, task_id, None, "prediction", message))
        return problems, {"result": []}
    fixes: dict[str, Any] | None = None
    score = prediction.get("score")
    # the common case first: a float in 0..1 (NaN and infinities fail the comparison)
    if score is not None and not (type(score) is float and 0.0 <= score <= 1.0):
        fixes = {}
        if not _is_number(score):
            fixes["score"] = None
            message = f"must be a finite number, got {_show(score)}"
            problems.append(Problem(task_index, task_id, None, "score", message))
        elif not 0 <= score <= 1:
            fixes["score"] = None
            message = f"{score} is outside 0..1 (Label Studio refuses such predictions)"
            problems.append(Problem(task_index, task_id, None, "score", message))
    version = prediction.get("model_version")
    if version is not None and not isinstance(version, str):
        fixes = fixes if fixes is not None else {}
        fixes["model_version"] = str(version)
        message = f"must be a string, got {_show(version)}"
        problems.append(Problem(task_index, task_id, None, "model_version", message))
    result = prediction.get("result", _MISSING)
    if not isinstance(result, list):
        fixes = fixes if fixes is not None else {}
        fixes["result"] = []
        message = f"must be a list of result items, got {_show(result)}"
        problems.append(Problem(task_index, task_id, None, "result", message))
    else:
        bad = _check_result(config, result, task_index, task_id, problems)
        if bad:
            fixes = fixes if fixes is not None else {}
            fixes["result"] = [item for i, item in enumerate(result) if i not in bad]
    if not clean or not fixes:
        return problems, prediction
    return problems, {**prediction, **fixes}


def _check_result(
    config: LabelConfig,
    result: list[Any],
    task_index: int | None,
    task_id: Any,
    problems: list[Problem],
) -> set[int]:
    """Adds the problems of every item; returns the indexes of the invalid items.

    Relations are checked last, against the ids of the regions that passed: a relation to a
    dropped region would point at nothing."""
    bad: set[int] = set()
    issues: Issues = []
    relations: list[int] = []
    region_ids: set[Any] = set()
    for index, item in enumerate(result):
        if type(item) is dict:
            rtype = item.get("type")
            if rtype == "relation":
                relations.append(index)
                continue
            if not (rtype == "choices" and _plain_choices(config, item)):
                _check_item(config, item, issues)
        else:
            _check_item(config, item, issues)
        if not issues:
            region_id = item.get("id")
            if isinstance(region_id, (str, int)) and not isinstance(region_id, bool):
                region_ids.add(region_id)
            continue
        bad.add(index)
        problems.extend(
            Problem(task_index, task_id, index, _join(f"result[{index}]", f), m) for f, m in issues
        )
        issues.clear()
    for index in relations:
        _check_relation(config, result[index], region_ids, issues)
        if issues:
            bad.add(index)
            problems.extend(
                Problem(task_index, task_id, index, _join(f"result[{index}]", f), m)
                for f, m in issues
            )
            issues.clear()
    return bad


def _plain_prediction(config: LabelConfig, prediction: dict[str, Any]) -> bool:
    """True for a valid prediction of plain Choices items (see _plain_choices) with a float
    score in 0..1 and a string version, checked in one go; False: _check_prediction checks
    it in full."""
    score = prediction.get("score")
    version = prediction.get("model_version")
    result = prediction.get("result")
    if (
        type(result) is not list
        or not (score is None or (type(score) is float and 0.0 <= score <= 1.0))
        or not (version is None or type(version) is str)
    ):
        return False
    for item in result:  # noqa: SIM110 (a loop costs less than all() over a generator)
        if type(item) is not dict or not _plain_choices(config, item):
            return False
    return True


# --- one item -----------------------------------------------------------------------------
def _plain_choices(config: LabelConfig, item: dict[str, Any]) -> bool:
    """True for a valid Choices item of the usual shape (what every text classifier returns),
    checked in one go; False for anything else, which _check_item then checks in full and
    says what is wrong. A shortcut only: it never finds an item valid that _check_item would
    not (tests/test_validation.py holds it to that)."""
    from_name = item.get("from_name")
    to_name = item.get("to_name")
    value = item.get("value")
    score = item.get("score")
    if (
        type(from_name) is not str
        or type(to_name) is not str
        or type(value) is not dict
        or item.get("type") != "choices"
    ):
        return False
    control = config.controls.get(from_name)
    if (
        control is None
        or control.type != "choices"
        or to_name not in control.to_name
        or to_name not in config.objects
        or not (score is None or (type(score) is float and math.isfinite(score)))
        or control.attrs.get("allowNested") == "true"
    ):
        return False
    choices = value.get("choices")
    if type(choices) is not list or not choices:
        return False
    allowed = None if control.dynamic_labels else control.label_set
    if len(choices) == 1:  # the usual case, without a loop
        choice = choices[0]
        return type(choice) is str and (allowed is None or choice in allowed)
    if not control.multiple:
        return False
    for choice in choices:
        if type(choice) is not str or (allowed is not None and choice not in allowed):
            return False
    return True


def _check_item(config: LabelConfig, item: Any, issues: Issues) -> None:
    if not isinstance(item, dict):
        issues.append(("", f"must be an object, got {_show(item)}"))
        return
    score = item.get("score")
    if score is not None and not _is_number(score):
        issues.append(("score", f"must be a finite number, got {_show(score)}"))
    from_name = item.get("from_name", _MISSING)
    control = config.controls.get(from_name) if isinstance(from_name, str) else None
    if control is None:
        if isinstance(from_name, str):
            message = (
                f"{from_name!r} is not a control tag of the config ({_names(config.controls)})"
            )
        else:
            message = f"must be the name of a control tag, got {_show(from_name)}"
        issues.append(("from_name", message))
        return
    to_name = item.get("to_name", _MISSING)
    obj = config.objects.get(to_name) if isinstance(to_name, str) else None
    if not isinstance(to_name, str):
        issues.append(("to_name", f"must be the name of an object tag, got {_show(to_name)}"))
    elif control.type == "pairwise" and to_name == control.name:
        pass  # Pairwise results may point at the control itself
    elif obj is None:
        message = f"{to_name!r} is not an object tag of the config ({_names(config.objects)})"
        issues.append(("to_name", message))
    elif to_name not in control.to_name:
        connected = ", ".join(control.to_name)
        issues.append(("to_name", f"{to_name!r} is not connected to {_tag(control)} ({connected})"))
    rtype = item.get("type", _MISSING)
    merged = rtype != control.type and _is_merged(config, control, rtype, to_name)
    if rtype != control.type and not merged:
        issues.append(("type", f"must be {control.type!r} for {_tag(control)}, got {_show(rtype)}"))
    value = item.get("value", _MISSING)
    if not isinstance(value, dict):
        issues.append(("value", f"must be an object, got {_show(value)}"))
    elif merged:
        ctx = _Ctx(config, control, obj, value, issues)
        _SHAPES[rtype[:-6]](ctx)
        ctx.labels(rtype if rtype in value else "labels")
    elif rtype == control.type:
        _check_value(_Ctx(config, control, obj, value, issues), rtype)


def _is_merged(config: LabelConfig, control: ControlTag, rtype: Any, to_name: Any) -> bool:
    """A `<Labels>` used with a geometry tool on the same object gives one merged region of
    the tool's labeled type (e.g. "rectanglelabels"), as Label Studio's editor saves it."""
    if control.type != "labels" or not isinstance(rtype, str) or not isinstance(to_name, str):
        return False
    if not rtype.endswith("labels"):
        return False
    base = rtype[:-6]
    return base in _SHAPES and base in config.tools_by_object.get(to_name, ())


def _check_relation(
    config: LabelConfig, item: dict[str, Any], region_ids: Collection[Any] | None, issues: Issues
) -> None:
    for key in ("from_id", "to_id"):
        ref = item.get(key, _MISSING)
        if not isinstance(ref, (str, int)) or isinstance(ref, bool):
            issues.append((key, f"must be the id of a region, got {_show(ref)}"))
        elif region_ids is not None and ref not in region_ids:
            issues.append((key, f"{ref!r} is not the id of a valid region of this result"))
    direction = item.get("direction")
    if direction is not None and direction not in _DIRECTIONS:
        issues.append(("direction", f"must be left, right or bi, got {_show(direction)}"))
    labels = item.get("labels")
    if labels is not None and _str_list(labels, "labels", issues, allow_empty=True):
        known = config.relation_labels
        for label in labels:
            if known and label not in known:
                shown = ", ".join(sorted(known)[:_SHOWN])
                issues.append(("labels", f"{label!r} is not a relation label (labels: {shown})"))
    score = item.get("score")
    if score is not None and not _is_number(score):
        issues.append(("score", f"must be a finite number, got {_show(score)}"))


# --- values -------------------------------------------------------------------------------
class _Ctx:
    """One value being checked: its control and object, and where its problems go."""

    __slots__ = ("config", "control", "issues", "obj", "prefix", "value")

    def __init__(
        self,
        config: LabelConfig,
        control: ControlTag,
        obj: ObjectTag | None,
        value: dict[str, Any],
        issues: Issues,
        prefix: str = "value",
    ) -> None:
        self.config, self.control, self.obj = config, control, obj
        self.value, self.issues, self.prefix = value, issues, prefix

    def add(self, key: str, message: str) -> None:
        self.issues.append((f"{self.prefix}.{key}" if key else self.prefix, message))

    def nested(self, key: str, value: dict[str, Any]) -> _Ctx:
        prefix = f"{self.prefix}.{key}" if key[0] != "[" else self.prefix + key
        return _Ctx(self.config, self.control, self.obj, value, self.issues, prefix)

    def get(self, key: str) -> Any:
        return self.value.get(key, _MISSING)

    def number(
        self, key: str, low: float | None = None, high: float | None = None, required: bool = True
    ) -> float | None:
        number = self.value.get(key)
        if number is None:
            if required:
                self.add(key, "is missing")
            return None
        if not _is_number(number):
            self.add(key, f"must be a finite number, got {_show(number)}")
            return None
        if (low is not None and number < low - _EPS) or (high is not None and number > high + _EPS):
            span = f"{'' if low is None else f'{low:g}'}..{'' if high is None else f'{high:g}'}"
            self.add(key, f"{number} is outside {span}")
            return None
        return float(number)

    def coord(self, key: str, high: float = 100.0, positive: bool = False) -> float | None:
        """A required percentage of the image (0..100); sizes must also be above 0."""
        number = self.number(key, 0.0, high)
        if number is not None and positive and number <= 0:
            self.add(key, f"must be greater than 0, got {number}")
            return None
        return number

    def labels(self, key: str, allowed: frozenset[str] | None = None, own: bool = True) -> bool:
        """`value[key]` is a non-empty list of the control's labels (or of `allowed`, None
        meaning any); True when it is at least a list of strings."""
        labels = self.value.get(key, _MISSING)
        well_formed = type(labels) is list and labels and all(type(x) is str for x in labels)
        # the message's field name is built only when there is something to say
        if not well_formed and not _str_list(labels, f"{self.prefix}.{key}", self.issues):
            return False
        control = self.control
        if own:
            if control.dynamic_labels:
                return True
            allowed = control.label_set
        if allowed is None:
            return True
        if not allowed:
            self.add(key, f"{_tag(control)} has no labels in the config")
            return True
        for label in labels:
            if label not in allowed:
                names = control.labels if own else sorted(allowed)
                shown = ", ".join(names[:_SHOWN]) + (", ..." if len(names) > _SHOWN else "")
                owner = _tag(control) if own else f"the <Labels> of {control.to_name[0]!r}"
                self.add(key, f"{label!r} is not a label of {owner} (labels: {shown})")
        return True


def _check_value(ctx: _Ctx, rtype: str) -> None:
    base = rtype[:-6] if rtype.endswith("labels") else rtype
    shape = _SHAPES.get(base)
    if shape is not None:
        shape(ctx)
        if base != rtype:  # RectangleLabels ...: labels of its own, required
            ctx.labels(rtype)
        elif ctx.value.get("labels") is not None:  # a bare tool takes labels from a <Labels>
            name = ctx.obj.name if ctx.obj is not None else ""
            allowed = ctx.config.labels_by_object.get(name, frozenset())
            ctx.labels("labels", allowed, own=False)
        return
    check = _VALUES.get(rtype)
    if check is not None:
        check(ctx)
    elif rtype.endswith("labels"):  # a labeled tag without shape rules here: labels only
        ctx.labels(rtype)


def _choices(ctx: _Ctx) -> None:
    choices = ctx.get("choices")
    nested = ctx.control.attrs.get("allowNested") == "true"
    if nested and isinstance(choices, list) and any(isinstance(c, list) for c in choices):
        _paths(ctx, "choices", choices)
    elif ctx.labels("choices") and not ctx.control.multiple and len(choices) > 1:
        ctx.add("choices", f"{_tag(ctx.control)} takes one choice, got {len(choices)}")


def _span_labels(ctx: _Ctx) -> None:
    """Labels, HyperTextLabels, ParagraphLabels: the labels and the span the object needs."""
    ctx.labels(ctx.control.type)
    kind = ctx.obj.tag if ctx.obj is not None else ""
    if ctx.control.type != "labels" or kind in _DOM_OBJECTS:
        _dom_span(ctx)
    elif kind in _TEXT_OBJECTS:
        _text_span(ctx)
    elif kind in _TIME_OBJECTS:
        _time_span(ctx)


def _text_span(ctx: _Ctx) -> None:
    """Character offsets into the text: 0 <= start < end."""
    start, end = ctx.get("start"), ctx.get("end")
    if _int(ctx, "start", start) & _int(ctx, "end", end):
        if start < 0:
            ctx.add("start", f"must be 0 or more, got {start}")
        elif end <= start:
            ctx.add("end", f"must be greater than start ({start}), got {end}")
    text = ctx.value.get("text")
    if text is not None and not isinstance(text, str):
        ctx.add("text", f"must be a string, got {_show(text)}")


def _dom_span(ctx: _Ctx) -> None:
    """HyperText (xpath + offsets) and Paragraphs (paragraph index + offsets) spans."""
    for key in ("start", "end"):
        ref = ctx.get(key)
        if not (isinstance(ref, str) and ref) and not (_is_int(ref) and ref >= 0):
            ctx.add(key, f"must be a path or an index, got {_show(ref)}")
    offsets = []
    for key in ("startOffset", "endOffset"):
        offset = ctx.value.get(key)
        if offset is not None and (not _is_int(offset) or offset < 0):
            ctx.add(key, f"must be an integer of 0 or more, got {_show(offset)}")
        elif offset is not None:
            offsets.append(offset)
    same_node = "start" in ctx.value and ctx.value.get("start") == ctx.value.get("end")
    if same_node and len(offsets) == 2 and offsets[1] <= offsets[0]:
        ctx.add("endOffset", f"must be greater than startOffset ({offsets[0]}) in one node")
    spans = ctx.value.get("globalOffsets")
    if spans is not None and not isinstance(spans, dict):
        ctx.add("globalOffsets", f"must be an object, got {_show(spans)}")
    elif spans is not None:
        inner = ctx.nested("globalOffsets", spans)
        start, end = spans.get("start", _MISSING), spans.get("end", _MISSING)
        if _int(inner, "start", start) & _int(inner, "end", end) and not 0 <= start < end:
            ctx.add("globalOffsets", f"needs 0 <= start < end, got {start}, {end}")


def _time_span(ctx: _Ctx) -> None:
    """Seconds (Audio, Video) or frames (timeline ranges): 0 <= start <= end."""
    start, end = ctx.number("start", 0.0), ctx.number("end", 0.0)
    if start is not None and end is not None and end < start:
        ctx.add("end", f"must not be before start ({start:g}), got {end:g}")


def _timeseries(ctx: _Ctx) -> None:
    ctx.labels("timeserieslabels")
    bounds = []
    for key in ("start", "end"):
        ref = ctx.get(key)
        if _is_number(ref):
            bounds.append(ref)
        elif not isinstance(ref, str) or not ref:
            ctx.add(key, f"must be a number or a time string, got {_show(ref)}")
    if len(bounds) == 2 and bounds[1] < bounds[0]:
        ctx.add("end", f"must not be before start ({bounds[0]}), got {bounds[1]}")
    instant = ctx.value.get("instant")
    if instant is not None and not isinstance(instant, bool):
        ctx.add("instant", f"must be true or false, got {_show(instant)}")


def _timeline(ctx: _Ctx) -> None:
    ctx.labels("timelinelabels")
    ranges = ctx.get("ranges")
    if not isinstance(ranges, list) or not ranges:
        ctx.add("ranges", f"must be a non-empty list of {{start, end}}, got {_show(ranges)}")
        return
    for index, span in enumerate(ranges):
        if isinstance(span, dict):
            _time_span(ctx.nested(f"ranges[{index}]", span))
        else:
            ctx.add(f"ranges[{index}]", f"must be an object, got {_show(span)}")


def _rectangle(ctx: _Ctx) -> None:
    x, y = ctx.coord("x"), ctx.coord("y")
    width, height = ctx.coord("width", positive=True), ctx.coord("height", positive=True)
    if ctx.number("rotation", 0.0, 360.0, required=False):
        return  # a rotated box is not bounded by x + width
    if x is not None and width is not None and x + width > 100 + _EPS:
        ctx.add("width", f"x + width = {x + width:g} goes past the image (100)")
    if y is not None and height is not None and y + height > 100 + _EPS:
        ctx.add("height", f"y + height = {y + height:g} goes past the image (100)")


def _polygon(ctx: _Ctx) -> None:
    points = ctx.get("points")
    if not isinstance(points, list):
        ctx.add("points", f"must be a list of [x, y] points, got {_show(points)}")
        return
    if len(points) < 3:
        ctx.add("points", f"needs at least 3 points, got {len(points)}")
    for index, point in enumerate(points):
        if not isinstance(point, (list, tuple)) or len(point) != 2:
            ctx.add(f"points[{index}]", f"must be an [x, y] pair, got {_show(point)}")
        elif not all(_is_number(c) and -_EPS <= c <= 100 + _EPS for c in point):
            ctx.add(f"points[{index}]", f"{list(point)} is outside 0..100")


def _keypoint(ctx: _Ctx) -> None:
    ctx.coord("x")
    ctx.coord("y")
    ctx.number("width", 0.0, 100.0, required=False)


def _ellipse(ctx: _Ctx) -> None:
    ctx.coord("x")
    ctx.coord("y")
    ctx.coord("radiusX", high=50.0, positive=True)
    ctx.coord("radiusY", high=50.0, positive=True)
    ctx.number("rotation", 0.0, 360.0, required=False)


def _brush(ctx: _Ctx) -> None:
    if ctx.get("format") != "rle":
        ctx.add("format", f"must be 'rle', got {_show(ctx.get('format'))}")
    rle = ctx.get("rle")
    if not isinstance(rle, list) or not rle:
        ctx.add("rle", f"must be a non-empty list of bytes, got {_show(rle)}")
    elif not all(type(b) is int and 0 <= b <= 255 for b in rle) and not all(
        _is_int(b) and 0 <= b <= 255 for b in rle
    ):
        ctx.add("rle", "must hold integers from 0 to 255 (Label Studio's RLE bytes)")


def _video_rectangle(ctx: _Ctx) -> None:
    frames = ctx.get("framesCount")
    if not _is_int(frames) or frames < 0:
        ctx.add("framesCount", f"must be a frame count, got {_show(frames)}")
    ctx.number("duration", 0.0)
    sequence = ctx.get("sequence")
    if not isinstance(sequence, list) or not sequence:
        ctx.add("sequence", f"must be a non-empty list of frames, got {_show(sequence)}")
        return
    for index, frame in enumerate(sequence):
        if not isinstance(frame, dict):
            ctx.add(f"sequence[{index}]", f"must be an object, got {_show(frame)}")
            continue
        inner = ctx.nested(f"sequence[{index}]", frame)
        number = inner.get("frame")
        if not _is_int(number) or number < 0:
            inner.add("frame", f"must be a frame number, got {_show(number)}")
        for key in ("x", "y", "width", "height"):
            inner.coord(key)
        inner.number("time", 0.0, required=False)
        inner.number("rotation", required=False)
        if frame.get("enabled") is not None and not isinstance(frame["enabled"], bool):
            inner.add("enabled", f"must be true or false, got {_show(frame['enabled'])}")


def _textarea(ctx: _Ctx) -> None:
    text = ctx.get("text")
    if isinstance(text, list) and text:
        _str_list(text, f"{ctx.prefix}.text", ctx.issues)
    elif not isinstance(text, str):
        ctx.add("text", f"must be a string or a non-empty list of strings, got {_show(text)}")


def _rating(ctx: _Ctx) -> None:
    rating, top = ctx.get("rating"), _number_attr(ctx.control, "maxRating") or 5
    if not _is_number(rating) or rating != int(rating):
        ctx.add("rating", f"must be a whole number, got {_show(rating)}")
    elif not 0 <= rating <= top:
        ctx.add("rating", f"{rating} is outside 0..{top:g} (maxRating)")


def _number_value(ctx: _Ctx) -> None:
    control = ctx.control
    ctx.number("number", _number_attr(control, "min"), _number_attr(control, "max"))


def _taxonomy(ctx: _Ctx) -> None:
    paths = ctx.get("taxonomy")
    if isinstance(paths, list) and paths:
        _paths(ctx, "taxonomy", paths)
    else:
        ctx.add("taxonomy", f"must be a non-empty list of label paths, got {_show(paths)}")


def _paths(ctx: _Ctx, key: str, paths: list[Any]) -> None:
    """Taxonomy (and nested Choices) paths: each one must exist in the config's tree."""
    control = ctx.control
    for index, path in enumerate(paths):
        where = f"{key}[{index}]"
        if not isinstance(path, list) or not path or not all(isinstance(p, str) for p in path):
            ctx.add(where, f"must be a non-empty list of strings, got {_show(path)}")
        elif control.dynamic_labels:
            continue
        elif tuple(path) not in control.path_set:
            top = ", ".join(p[0] for p in control.label_paths if len(p) == 1)
            ctx.add(where, f"{' / '.join(path)!r} is not in {_tag(control)} (top level: {top})")
        elif control.attrs.get("leafsOnly") == "true" and tuple(path) not in control.leaf_paths:
            ctx.add(where, f"{' / '.join(path)!r} is not a leaf, and leafsOnly is set")


def _datetime(ctx: _Ctx) -> None:
    moment = ctx.get("datetime")
    if not isinstance(moment, str) or not moment:
        ctx.add("datetime", f"must be a date/time string, got {_show(moment)}")


def _pairwise(ctx: _Ctx) -> None:
    if ctx.get("selected") not in ("left", "right"):
        ctx.add("selected", f"must be 'left' or 'right', got {_show(ctx.get('selected'))}")


def _ranker(ctx: _Ctx) -> None:
    ranker = ctx.get("ranker")
    if not isinstance(ranker, dict):
        ctx.add("ranker", f"must be an object of lists of item ids, got {_show(ranker)}")
        return
    for bucket, ids in ranker.items():
        if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
            ctx.add(f"ranker.{bucket}", f"must be a list of item ids, got {_show(ids)}")


_SHAPES: dict[str, Callable[[_Ctx], None]] = {
    "rectangle": _rectangle,
    "polygon": _polygon,
    "keypoint": _keypoint,
    "ellipse": _ellipse,
    "brush": _brush,
    "videorectangle": _video_rectangle,
}
_VALUES: dict[str, Callable[[_Ctx], None]] = {
    "choices": _choices,
    "labels": _span_labels,
    "hypertextlabels": _span_labels,
    "paragraphlabels": _span_labels,
    "timeserieslabels": _timeseries,
    "timelinelabels": _timeline,
    "textarea": _textarea,
    "rating": _rating,
    "number": _number_value,
    "taxonomy": _taxonomy,
    "datetime": _datetime,
    "pairwise": _pairwise,
    "ranker": _ranker,
}


# --- small helpers ------------------------------------------------------------------------
def _str_list(items: Any, name: str, issues: Issues, allow_empty: bool = False) -> bool:
    if not isinstance(items, list):
        issues.append((name, f"must be a list of strings, got {_show(items)}"))
        return False
    if not items and not allow_empty:
        issues.append((name, "is an empty list"))
        return False
    for index, item in enumerate(items):
        if not isinstance(item, str):
            issues.append((name, f"item {index} must be a string, got {_show(item)}"))
            return False
    return True


def _int(ctx: _Ctx, key: str, number: Any) -> bool:
    if not _is_int(number):
        ctx.add(key, f"must be an integer, got {_show(number)}")
        return False
    return True


def _is_number(value: Any) -> bool:
    """A finite JSON number: not a bool (True is an int in Python), not NaN or infinity."""
    kind = type(value)
    if kind is float:
        return math.isfinite(value)
    if kind is int:
        return True
    if kind is bool or not isinstance(value, numbers.Real):
        return False
    try:  # numpy scalars and other Real types
        return math.isfinite(value)
    except (OverflowError, TypeError, ValueError):
        return False


def _is_int(value: Any) -> bool:
    kind = type(value)
    return kind is int or (kind is not bool and isinstance(value, numbers.Integral))


def _number_attr(control: ControlTag, name: str) -> float | None:
    raw = control.attrs.get(name)
    try:
        number = float(raw) if raw is not None else None
    except ValueError:
        return None
    return number if number is not None and math.isfinite(number) else None


def _tag(control: ControlTag) -> str:
    return f"{control.tag} {control.name!r}"


def _names(tags: Collection[str]) -> str:
    names = list(tags)
    return "names: " + ", ".join(names[:_SHOWN]) + (", ..." if len(names) > _SHOWN else "")


def _join(prefix: str, name: str) -> str:
    if not prefix:
        return name or "item"
    return f"{prefix}.{name}" if name else prefix


def _show(value: Any) -> str:
    """A short, JSON-flavoured description of a bad value for messages."""
    if value is _MISSING:
        return "nothing (missing)"
    if value is None or isinstance(value, bool):
        return {None: "null", True: "true", False: "false"}[value]
    if isinstance(value, str):
        kind = "string"
    elif isinstance(value, dict):
        kind = "object"
    elif isinstance(value, (list, tuple)):
        kind = "list"
    elif isinstance(value, numbers.Number):
        kind = "number"
    else:
        kind = type(value).__name__
    text = repr(value)
    return f"{kind} {text[:60]}{'...' if len(text) > 60 else ''}"
