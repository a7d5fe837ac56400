"""labelbridge: connect machine-learning models to Label Studio.

Subclass `Model`, run `labelbridge start ./my_backend`, add http://localhost:9090 to a Label
Studio project. See the README for the rest.
"""

from __future__ import annotations

__version__ = "0.1.0"

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
