"""One exception tree for labelbridge; the server maps it to HTTP answers in one place.

Every error carries an HTTP status, a short message (`detail`), optionally the name of the
field at fault, and optionally a `fix`: the one line that tells a user what to do. The JSON
answer is `{"error": <class name>, "detail": ..., "field": ..., "fix": ...}`.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "AssetError",
    "AssetNotFound",
    "AssetRefused",
    "AssetTooLarge",
    "AssetUnauthorized",
    "AssetUnreachable",
    "AuthenticationRequired",
    "BackendError",
    "BackendHTTPError",
    "BackendTimeout",
    "BackendUnreachable",
    "BadRequest",
    "CorruptModelVersion",
    "InvalidLabelConfig",
    "InvalidPrediction",
    "JobError",
    "LabelBridgeError",
    "LabelStudioError",
    "MissingDependency",
    "ModelError",
    "ModelNotReady",
    "NotFound",
    "PayloadTooLarge",
    "QueueUnavailable",
    "StoreError",
    "TooFewAnnotations",
    "UnknownJob",
    "UnknownProject",
]


class LabelBridgeError(Exception):
    """Base of every error we raise on purpose."""

    status_code: int = 500

    def __init__(
        self, detail: str, *, field: str | None = None, fix: str | None = None, **extra: Any
    ) -> None:
        super().__init__(detail)
        self.detail = detail
        self.field = field
        self.fix = fix
        self.extra = extra

    @property
    def error(self) -> str:
        return type(self).__name__

    def to_dict(self) -> dict[str, Any]:
        body: dict[str, Any] = {"error": self.error, "detail": self.detail}
        if self.field is not None:
            body["field"] = self.field
        if self.fix is not None:
            body["fix"] = self.fix
        body.update({k: v for k, v in self.extra.items() if v is not None})
        return body

    def __str__(self) -> str:
        text = self.detail
        if self.fix:
            text = f"{text} (fix: {self.fix})"
        return text


# --- request errors (4xx)
class BadRequest(LabelBridgeError):
    status_code = 400


class InvalidLabelConfig(BadRequest):
    status_code = 422


class AuthenticationRequired(LabelBridgeError):
    status_code = 401


class NotFound(LabelBridgeError):
    status_code = 404


class UnknownProject(NotFound):
    pass


class UnknownJob(NotFound):
    pass


class PayloadTooLarge(LabelBridgeError):
    status_code = 413


# --- model errors
class ModelNotReady(LabelBridgeError):
    status_code = 503


class ModelError(LabelBridgeError):
    """The user's model raised; the traceback goes to the log (and the answer in debug mode)."""

    status_code = 500


class InvalidPrediction(LabelBridgeError):
    """A predicted result does not match the project's labeling config."""

    status_code = 500


# --- jobs and storage
class JobError(LabelBridgeError):
    status_code = 500


class TooFewAnnotations(JobError):
    status_code = 400


class QueueUnavailable(JobError):
    status_code = 503


class StoreError(LabelBridgeError):
    status_code = 500


class CorruptModelVersion(StoreError):
    pass


class MissingDependency(LabelBridgeError):
    """An optional package is needed for this feature; the message names it."""

    status_code = 500


# --- assets (reading task data)
class AssetError(LabelBridgeError):
    status_code = 422


class AssetNotFound(AssetError):
    pass


class AssetUnauthorized(AssetError):
    pass


class AssetRefused(AssetError):
    """Refused by our own safety rules: path escape, private address, host not allowed."""


class AssetTooLarge(AssetError):
    pass


class AssetUnreachable(AssetError):
    pass


# --- talking to other services (connector side)
class BackendError(LabelBridgeError):
    """A call from the connector to an ML backend failed."""

    status_code = 502


class BackendUnreachable(BackendError):
    pass


class BackendTimeout(BackendError):
    status_code = 504


class BackendHTTPError(BackendError):
    pass


class LabelStudioError(LabelBridgeError):
    """A call to Label Studio's REST API failed."""

    status_code = 502
