"""Run backends written for the public SDK (`label_studio_ml`) on labelbridge.

Change `from label_studio_ml.model import LabelStudioMLBase` to
`from labelbridge.compat import LabelStudioMLBase` (and `label_studio_ml.response` to
`labelbridge.compat`), or leave the imports alone when `label-studio-ml` is installed: the
loader wraps any subclass of either base into a `labelbridge.Model` (`wrap_sdk_model`), for
the 2.x API (get/set, setup, `fit(event, data)`) and for the 1.x API that PyPI ships
(`fit(tasks, workdir)` returning `train_output`).

What differs on purpose:
- the SDK builds a model object per request; we build one per (project, label config, model
  version) and keep it, so setup() runs once per version, not per request;
- fit() runs in a training job; the keys it sets with `self.set` (and what it returns) are saved
  with the version the job publishes, and predictions under that version see them. A failed
  job changes nothing. Keys set outside fit() are shared by the project's processes at once;
- model versions are labelbridge's (`<class name>-v<n>`): /setup and every prediction report
  the version whose state was used. A `model_version` in predictions or a `ModelResponse` is
  replaced; the SDK object's own version shows as the `sdk_model_version` metric;
- fit() gets the webhook payload rebuilt from the job (see `fit_event_and_data`), plus `tasks`.
"""

from __future__ import annotations

from labelbridge.compat._base import LabelStudioMLBase, ModelResponse
from labelbridge.compat._wrap import wrap_sdk_model

__all__ = ["LabelStudioMLBase", "ModelResponse", "wrap_sdk_model"]
