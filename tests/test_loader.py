"""Loading a backend's model class: mistakes in its class attributes fail at start-up."""

from __future__ import annotations

from pathlib import Path

import pytest

from labelbridge.errors import BadRequest
from labelbridge.loader import check_model_class, load_model_class

MODEL = """
from labelbridge import Model


class Counted(Model):
    min_annotations = {value}

    def predict(self, tasks, context):
        return [None for _ in tasks]
"""


def _backend(tmp_path: Path, value: str) -> Path:
    folder = tmp_path / "backend"
    folder.mkdir()
    (folder / "model.py").write_text(MODEL.format(value=value))
    return folder


@pytest.mark.parametrize("value", ["'ten'", "2.5", "True", "-1"])
def test_a_malformed_min_annotations_is_refused_when_the_class_loads(
    tmp_path: Path, value: str
) -> None:
    folder = _backend(tmp_path, value)
    with pytest.raises(BadRequest) as caught:
        load_model_class(folder)
    assert caught.value.field == "min_annotations"
    assert caught.value.detail.startswith("Counted.min_annotations must be a whole number")
    assert repr(eval(value)) in caught.value.detail
    # the production supervisor's check (in a child process) says the same
    with pytest.raises(BadRequest) as checked:
        check_model_class(folder)
    assert checked.value.detail == caught.value.detail


@pytest.mark.parametrize("value", ["None", "0", "12"])
def test_a_valid_min_annotations_loads(tmp_path: Path, value: str) -> None:
    assert load_model_class(_backend(tmp_path, value)).min_annotations == eval(value)
