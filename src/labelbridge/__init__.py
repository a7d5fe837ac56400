"""labelbridge: connect machine-learning models to Label Studio.

Subclass `Model`, run `labelbridge start ./my_backend`, add http://localhost:9090 to a Label
Studio project. See the README for the rest.
"""

from __future__ import annotations

__version__ = "0.1.0"

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from labelbridge.client import AsyncMLBackendClient, MLBackendClient
    from labelbridge.errors import (
        AssetError,
        BackendError,
        BackendTimeout,
        BackendUnreachable,
        InvalidLabelConfig,
        InvalidPrediction,
        LabelBridgeError,
        ModelError,
        TooFewAnnotations,
    )
    from labelbridge.label_config import ControlMatch, LabelConfig
    from labelbridge.model import Model, PredictContext, TrainingData
    from labelbridge.protocol import PredictionValue, ResultItem
    from labelbridge.results import (
        ChoiceExample,
        Span,
        SpanExample,
        choice_examples,
        choice_pairs,
        choice_result,
        choices_prediction,
        rectangle_result,
        span_examples,
        span_result,
    )
    from labelbridge.settings import ConnectorSettings, Settings

__all__ = [
    "AssetError",
    "AsyncMLBackendClient",
    "BackendError",
    "BackendTimeout",
    "BackendUnreachable",
    "ChoiceExample",
    "ConnectorSettings",
    "ControlMatch",
    "InvalidLabelConfig",
    "InvalidPrediction",
    "LabelBridgeError",
    "LabelConfig",
    "MLBackendClient",
    "Model",
    "ModelError",
    "PredictContext",
    "PredictionValue",
    "ResultItem",
    "Settings",
    "Span",
    "SpanExample",
    "TooFewAnnotations",
    "TrainingData",
    "__version__",
    "choice_examples",
    "choice_pairs",
    "choice_result",
    "choices_prediction",
    "rectangle_result",
    "span_examples",
    "span_result",
]

# The public names are imported on first use (PEP 562), not here: `import labelbridge.x`
# runs this file first, and the production supervisor (`labelbridge start --production`),
# which serves no HTTP, should not hold the HTTP client, the protocol models and what they
# import (see labelbridge.cli.start).
_LAZY: dict[str, str] = {
    "AsyncMLBackendClient": "labelbridge.client",
    "MLBackendClient": "labelbridge.client",
    "AssetError": "labelbridge.errors",
    "BackendError": "labelbridge.errors",
    "BackendTimeout": "labelbridge.errors",
    "BackendUnreachable": "labelbridge.errors",
    "InvalidLabelConfig": "labelbridge.errors",
    "InvalidPrediction": "labelbridge.errors",
    "LabelBridgeError": "labelbridge.errors",
    "ModelError": "labelbridge.errors",
    "TooFewAnnotations": "labelbridge.errors",
    "ControlMatch": "labelbridge.label_config",
    "LabelConfig": "labelbridge.label_config",
    "Model": "labelbridge.model",
    "PredictContext": "labelbridge.model",
    "TrainingData": "labelbridge.model",
    "PredictionValue": "labelbridge.protocol",
    "ResultItem": "labelbridge.protocol",
    "ChoiceExample": "labelbridge.results",
    "Span": "labelbridge.results",
    "SpanExample": "labelbridge.results",
    "choice_examples": "labelbridge.results",
    "choice_pairs": "labelbridge.results",
    "choice_result": "labelbridge.results",
    "choices_prediction": "labelbridge.results",
    "rectangle_result": "labelbridge.results",
    "span_examples": "labelbridge.results",
    "span_result": "labelbridge.results",
    "ConnectorSettings": "labelbridge.settings",
    "Settings": "labelbridge.settings",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
