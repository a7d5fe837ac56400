"""Run backends written for the public SDK (`label_studio_ml`) on labelbridge.

Change `from label_studio_ml.model import LabelStudioMLBase` to
`from labelbridge.compat import LabelStudioMLBase` (and `label_studio_ml.response` to
`labelbridge.compat`), or leave the imports alone when `label-studio-ml` is installed: the
loader wraps any subclass of either base into a `labelbridge.Model`.

What differs on purpose: the SDK builds a model object per request; we build one per project
and keep it. Model versions are ours (published by training jobs), so Label Studio sees the
same version in /setup and in predictions.
"""

from __future__ import annotations

from labelbridge.compat._base import LabelStudioMLBase, ModelResponse
from labelbridge.compat._wrap import wrap_sdk_model

__all__ = ["LabelStudioMLBase", "ModelResponse", "wrap_sdk_model"]
