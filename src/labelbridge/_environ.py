"""Environment variables through which `labelbridge start --production` (the supervisor) hands
its choices to its worker processes.

A module of its own, with no imports, so that the supervisor, which never serves HTTP, can name
them without importing the server (FastAPI and all it pulls in; see labelbridge.cli.start).
"""

from __future__ import annotations

__all__ = ["METRICS_DIR_ENV", "REPLACEMENT_ENV", "SERVE_ENV"]

#: the CLI's choices (backend, class, setting overrides) as JSON, read by `app_from_env`
SERVE_ENV = "LABELBRIDGE_SERVE"
#: set by the production supervisor in the environment of workers that replace another
REPLACEMENT_ENV = "LABELBRIDGE_REPLACEMENT"
#: the supervisor's shared folder for metrics across workers
METRICS_DIR_ENV = "LABELBRIDGE_METRICS_DIR"
