"""`TaskFilter`, public as `labelbridge.prelabel.TaskFilter`.

Defined apart from labelbridge.prelabel (which imports httpx and the Label Studio client) so that
the `labelbridge prelabel` command can declare its --filter option without importing them: every
command module is imported by every `labelbridge` run, the production server's included.
"""

from __future__ import annotations

from enum import Enum

__all__ = ["TaskFilter"]


class TaskFilter(str, Enum):
    """Which tasks a run predicts. Every filter skips tasks that already have a prediction of
    the run's model version: that is what makes a run idempotent."""

    #: tasks without annotations (Label Studio's `total_annotations` = 0): the usual target
    unlabeled = "unlabeled"
    #: every task, annotated ones too; already predicted ones are counted as skipped
    all = "all"
    #: tasks without this version's prediction, selected by Label Studio itself, so that a
    #: resumed run of a large project does not even transfer the finished tasks
    no_prediction = "no-prediction-for-version"
