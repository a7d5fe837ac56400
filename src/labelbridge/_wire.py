"""The connector's side of the wire: request bodies as JSON, and answers read back and
normalized (/setup, /predict, /versions) into what `labelbridge.client` returns.

Kept apart from the client's transport and retry logic (client.py) so each stays small; the
public names (`Predictions`, `project_uid`) are re-exported by labelbridge.client.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import httpx
import orjson
from pydantic import TypeAdapter, ValidationError

from labelbridge.protocol import PredictionValue, VersionInfo, VersionsResponse

__all__ = ["Predictions", "ProjectRef", "Task", "project_uid"]

ProjectRef = str | int
Task = Mapping[str, Any]


class _Malformed(ValueError):
    """Raised by parsers; becomes BadAnswer with the call's facts."""


# --- bodies and answers -------------------------------------------------------------------
def project_uid(project: ProjectRef, created_at: datetime | float | None = None) -> str:
    """The project as Label Studio sends it: "<id>.<created_at unix seconds>".

    A value with a dot is kept as is. Without `created_at` the suffix is 0: stable across runs,
    so a backend that keys on the whole string sees one project.
    """
    text = str(project)
    if "." in text:
        return text
    if isinstance(created_at, datetime):
        created_at = created_at.timestamp()
    return f"{text}.{int(created_at or 0)}"


@dataclass
class Predictions:
    """A /predict answer, normalized: for each `results` item, its list of predictions.

    An item may be a prediction, a list of predictions, a list of bare result items (one
    prediction) or null (none). Predictions without model_version get the answer's.
    """

    results: list[list[PredictionValue]]
    model_version: str | None
    raw: Any


def _as_object(data: Any) -> dict[str, Any]:
    """Label Studio only needs valid JSON here; keep any JSON, as an object."""
    return data if isinstance(data, dict) else {"answer": data}


def _parse_setup(data: Any) -> str | None:
    version = data.get("model_version") if isinstance(data, dict) else None
    return None if version in (None, "") else str(version)


def _prediction_items(item: Any, index: int) -> list[Any]:
    """One `results` item as the list of raw predictions it stands for."""
    if item is None:
        return []
    if isinstance(item, dict):
        return [item] if "result" in item else [{"result": [item]}]
    if isinstance(item, list) and all(isinstance(x, dict) and "result" in x for x in item):
        return item
    if isinstance(item, list) and all(isinstance(x, dict) and "from_name" in x for x in item):
        return [{"result": item}]
    raise _Malformed(f"results[{index}] is neither a prediction nor a list of them")


#: every prediction of an answer validated in one call (not one call per prediction)
_PREDICTION_LIST: TypeAdapter[list[PredictionValue]] = TypeAdapter(list[PredictionValue])


def _validated(raw: list[Any], owners: Sequence[int]) -> list[PredictionValue]:
    """PredictionValue for each raw prediction; `owners[k]` is the results index of raw[k]."""
    try:
        return _PREDICTION_LIST.validate_python(raw)
    except ValidationError as exc:  # the first bad prediction, as validating one by one would
        error = exc.errors()[0]
        raise _Malformed(f"results[{owners[int(error['loc'][0])]}]: {error['msg']}") from exc


def _parse_predict(data: Any, expect: int | None = None) -> Predictions:
    if isinstance(data, list):  # very old backends answered the bare list
        results, version = data, None
    elif isinstance(data, dict) and isinstance(data.get("results"), list):
        results, version = data["results"], data.get("model_version")
    else:
        raise _Malformed('has no "results" list')
    version = None if version in (None, "") else str(version)
    if expect is not None and len(results) != expect:
        raise _Malformed(
            f"has {len(results)} results for {expect} tasks; Label Studio needs exactly one per "
            "task, in order, and stores nothing otherwise"
        )
    raw: list[Any] = results
    owners: Sequence[int] = range(len(results))
    counts: list[int] | None = None
    # the usual answer, one prediction object per task, skips the shape checks per item
    if not all(type(item) is dict and "result" in item for item in results):
        raw, owners, counts = [], [], []
        for index, item in enumerate(results):
            try:
                items = _prediction_items(item, index)
            except _Malformed:
                _validated(raw, owners)  # an invalid prediction before it is reported first
                raise
            raw += items
            owners += [index] * len(items)
            counts.append(len(items))
    values = _validated(raw, owners)
    for value in values:
        if value.model_version is None:
            value.model_version = version
    if counts is None:
        return Predictions([[value] for value in values], version, data)
    items, start = [], 0
    for count in counts:
        items.append(values[start : start + count])
        start += count
    return Predictions(items, version, data)


def _parse_versions(data: Any) -> VersionsResponse:
    if not isinstance(data, dict) or not isinstance(data.get("versions"), list):
        raise _Malformed('has no "versions" list')
    details = []
    for item in data.get("details") or []:  # a labelbridge addition: other shapes are ignored
        try:  # keys another backend adds are dropped
            fields = {k: v for k, v in item.items() if k in VersionInfo.model_fields}
            details.append(VersionInfo.model_validate(fields))
        except (ValidationError, AttributeError):
            continue
    return VersionsResponse(versions=[str(v) for v in data["versions"]], details=details)


# --- JSON on the wire ----------------------------------------------------------------------
_JSON = {"Content-Type": "application/json"}
_ORJSON_STRICT = orjson.OPT_PASSTHROUGH_DATACLASS | orjson.OPT_PASSTHROUGH_DATETIME
#: bytes.translate table: digits stay "0", anything else becomes a space
_DIGIT_RUNS = bytes(48 if 48 <= b <= 57 else 32 for b in range(256))
#: an integer this long may be beyond orjson's 64 bits, which it would read as a float
_LONG_NUMBER = b"0" * 19


def _not_plain(value: Any) -> Any:
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


def _encode(body: Any) -> bytes:
    """A request body: the JSON httpx's json= would send (the stdlib's, compact, UTF-8), made
    by orjson. orjson writes NaN and infinities as null and UUIDs and enums as their values,
    where the stdlib refuses them, so its output is read back and compared: anything that does
    not come back equal goes to the stdlib, which gives the same JSON or the same error."""
    try:
        data = orjson.dumps(body, default=_not_plain, option=_ORJSON_STRICT)
        if orjson.loads(data) == body:
            return data
    except orjson.JSONEncodeError:  # integers beyond 64 bits, keys that are not str, ...
        pass
    return json.dumps(body, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode()


def _decode(response: httpx.Response) -> Any:
    """response.json(), the stdlib's reading, made by orjson where both read the same: orjson
    refuses what the stdlib reads otherwise (NaN, Infinity, lone surrogates, UTF-16 ...) and
    reads integers beyond 64 bits as floats, so those answers go to the stdlib."""
    content = response.content
    if _LONG_NUMBER not in content.translate(_DIGIT_RUNS):
        try:
            return orjson.loads(content)
        except orjson.JSONDecodeError:
            pass
    return response.json()
