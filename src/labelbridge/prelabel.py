"""Pre-annotate a whole Label Studio project: tasks page by page, predictions in batches, stored
through Label Studio's API under one model version. No printing here: the CLI and the job
runner show `PrelabelStats` their own way.

Why: Label Studio's "Retrieve predictions" sends every selected task in one /predict call with
a 100 s limit, so on real projects it times out and stores nothing. Here each batch is bounded,
and a run is idempotent per model version: tasks that already have a prediction of that version
are skipped, so an interrupted run is simply started again.

Label Studio endpoints (checked against the real 1.23.2):
- `GET /api/projects/<id>/`: the labeling config (every prediction is validated against it,
  since Label Studio's own check is off by default and, when on, rejects a whole batch).
- `GET /api/projects/<id>/model-versions/` -> `{version: count}`: whether the version already
  has predictions (a fresh version costs nothing more to resume-check).
- `GET /api/predictions/?project=<id>`: every prediction of the project, unpaginated; it has
  no model_version filter (the parameter is ignored), so the version is matched here, exactly.
- `GET /api/tasks/?project=&page=1&page_size=&fields=task_only&include=id,data,...&query=`
  with the Data Manager filter `id > <last id>`: keyset paging, which stays correct while
  predictions are written (page numbers shift under filters that depend on what a run writes);
  `include` skips the aggregates Label Studio computes otherwise (~10x the cost of a page).
- `POST /api/projects/<id>/import/predictions` with a list: the bulk write (`{"created": n}`).
  In 1.23 (default flags) each call recounts every task of the project (~3 s at 2,000
  tasks), so predictions are gathered into large writes (`write_batch`). `POST
  /api/predictions/` takes one object only (a list answers 400; ~0.2 s each): used one by one
  only where the bulk endpoint is missing (404/405).
- After a write that failed unclearly (timeout, 5xx), `GET /api/tasks/` with `selectedItems`
  and `fields=all&include=id,predictions` tells which tasks got stored before writing again.
"""

from __future__ import annotations

import json
import logging
import math
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Any

import httpx

from labelbridge._task_filter import TaskFilter
from labelbridge.client import CallHTTPError, CallUnreachable
from labelbridge.errors import (
    InvalidLabelConfig,
    LabelBridgeError,
    LabelStudioError,
    ModelNotReady,
)
from labelbridge.label_config import LabelConfig
from labelbridge.labelstudio import LabelStudio
from labelbridge.predictors import Predictor
from labelbridge.validation import split_valid

__all__ = [
    "Failure",
    "PrelabelOptions",
    "PrelabelStats",
    "Prelabeler",
    "TaskFilter",
]

log = logging.getLogger("labelbridge.prelabel")

_REASON_CHARS = 300


@dataclass
class PrelabelOptions:
    filter: TaskFilter = TaskFilter.unlabeled
    batch_size: int = 32
    concurrency: int = 2
    page_size: int = 100
    #: store under this version instead of the one the backend reports
    model_version: str | None = None
    #: extra attempts of a whole batch (with backoff) before it is split in halves
    retries: int = 2
    backoff: float = 0.5
    #: whole batches failing one after the other: the model or backend is broken, stop
    max_failed_batches_in_a_row: int = 5
    #: predictions per write; a write also happens once the oldest waits `flush_seconds`
    write_batch: int = 500
    flush_seconds: float = 5.0

    def __post_init__(self) -> None:
        self.filter = TaskFilter(self.filter)
        for name in ("batch_size", "concurrency", "page_size", "write_batch"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1")


@dataclass(frozen=True)
class Failure:
    task: int
    reason: str


@dataclass
class PrelabelStats:
    """Progress while a run goes, and its summary at the end."""

    project: int
    model_version: str = ""
    filter: str = TaskFilter.unlabeled.value
    total: int | None = None  # tasks the filter selects (known after the first page)
    stored: int = 0  # tasks that got their predictions in this run
    predictions: int = 0  # prediction objects created (a model may give several per task)
    skipped: int = 0  # tasks that already had a prediction of this version
    empty: int = 0  # tasks the model gave no prediction for (nothing to store)
    pending: int = 0  # tasks predicted, their predictions waiting for the next write
    invalid: int = 0  # result items dropped because they do not fit the labeling config
    failures: list[Failure] = field(default_factory=list)
    stopped: str | None = None  # why the run stopped before the end
    write_mode: str = "bulk"
    began: float = field(default_factory=time.monotonic)
    finished: float | None = None

    @property
    def failed(self) -> int:
        return len(self.failures)

    @property
    def done(self) -> int:
        """Tasks handled: stored, skipped, failed, or predicted and about to be stored."""
        return self.stored + self.skipped + self.empty + self.failed + self.pending

    @property
    def elapsed(self) -> float:
        return (self.finished or time.monotonic()) - self.began

    @property
    def tasks_per_second(self) -> float:
        """Tasks predicted (stored, empty or failed) per second; skipped ones cost ~nothing."""
        worked = self.stored + self.empty + self.failed + self.pending
        return worked / self.elapsed if self.elapsed > 0 else 0.0

    @property
    def eta_seconds(self) -> float | None:
        rate = self.tasks_per_second
        if self.total is None or rate <= 0:
            return None
        return max(self.total - self.done, 0) / rate

    @property
    def ok(self) -> bool:
        return not self.failures and self.stopped is None

    def to_dict(self) -> dict[str, Any]:
        """JSON for job_status: progress while running, the result at the end."""
        eta = self.eta_seconds
        return {
            "model_version": self.model_version,
            "filter": self.filter,
            "done": self.done,
            "total": self.total,
            "stored": self.stored,
            "predictions": self.predictions,
            "skipped": self.skipped,
            "empty": self.empty,
            "pending": self.pending,
            "invalid": self.invalid,
            "failed": self.failed,
            "failures": [{"task": f.task, "reason": f.reason} for f in self.failures[:20]],
            "stopped": self.stopped,
            "write_mode": self.write_mode,
            "elapsed_seconds": round(self.elapsed, 2),
            "tasks_per_second": round(self.tasks_per_second, 1),
            "eta_seconds": None if eta is None else round(eta, 1),
        }

    def summary(self) -> str:
        text = (
            f"project {self.project}, model version {self.model_version}: "
            f"stored {self.predictions} prediction(s) for {self.stored} task(s), "
            f"skipped {self.skipped} already predicted, {self.empty} without prediction, "
            f"dropped {self.invalid} invalid item(s), {self.failed} failed "
            f"({self.tasks_per_second:.1f} tasks/s, {self.elapsed:.1f} s, {self.write_mode} writes)"
        )
        if self.stopped:
            text += f"; stopped early: {self.stopped}; run the same command again to resume"
        return text


# --- the run ------------------------------------------------------------------------------
class _UncertainWrite(Exception):
    """A write failed in a way that may have stored it anyway (timeout, 5xx): look first."""

    def __init__(self, cause: BaseException) -> None:
        super().__init__(str(cause))
        self.cause = cause


def _reason(exc: BaseException) -> str:
    exc = exc.cause if isinstance(exc, _UncertainWrite) else exc
    text = str(exc) if isinstance(exc, LabelBridgeError) else f"{type(exc).__name__}: {exc}"
    text = " ".join(text.split()) or type(exc).__name__
    return text[:_REASON_CHARS]


def _fatal(exc: BaseException) -> str | None:
    """Why no other batch can succeed either, or None when it may be this batch's fault."""
    exc = exc.cause if isinstance(exc, _UncertainWrite) else exc
    if isinstance(exc, LabelStudioError):
        status = exc.extra.get("status")
        if status in (401, 403, 404):
            return f"Label Studio refused the request: {_reason(exc)}"
        cause = exc.__cause__
        if isinstance(cause, httpx.TransportError) and not isinstance(
            cause, httpx.TimeoutException
        ):
            return f"Label Studio is unreachable: {_reason(exc)}"
    if isinstance(exc, CallUnreachable):
        return f"the backend is unreachable: {_reason(exc)}"
    if isinstance(exc, CallHTTPError) and exc.status in (401, 403, 404, 405):
        return f"the backend refused the request: {_reason(exc)}"
    if isinstance(exc, (ModelNotReady, InvalidLabelConfig)):  # the same for every task
        return _reason(exc)
    return None


def _score(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None


class Prelabeler:
    """One run over one project.

    This thread reads pages and reports progress; `concurrency` threads predict batches; the
    predictions are stored in large bulk writes (`write_batch`), one at a time: Label Studio
    1.23's import recounts every task of the project on each call, so a few large writes
    beat many small ones by far. A progress callback that raises, or Ctrl-C, stops the run:
    batches in flight finish and what they predicted is still stored.
    """

    def __init__(
        self,
        ls: LabelStudio,
        predictor: Predictor,
        project: int,
        options: PrelabelOptions | None = None,
        *,
        token: str | None = None,
        on_progress: Callable[[PrelabelStats], None] | None = None,
    ) -> None:
        self.ls = ls
        self.token = token  # handed to the backend's /setup, as Label Studio hands its own
        self.predictor = predictor
        self.project = int(project)
        self.options = options or PrelabelOptions()
        self.on_progress = on_progress
        self.stats = PrelabelStats(project=self.project, filter=self.options.filter.value)
        self._lock = threading.Lock()
        self._write_lock = threading.Lock()
        self._stop = threading.Event()
        self._claimed: set[int] = set()
        self._config: LabelConfig | None = None
        self._failed_in_a_row = 0
        self._bulk = True
        self._buffer: list[_Group] = []
        self._buffer_since = 0.0

    # --- reading
    def _existing(self, version: str) -> tuple[set[int], dict[str, int] | None]:
        """Task ids that already have a prediction of `version`, and the project's versions."""
        versions: dict[str, int] | None = None
        try:
            raw = self.ls.request("GET", f"/api/projects/{self.project}/model-versions/").json()
            if isinstance(raw, dict):
                versions = {str(k): int(v) for k, v in raw.items() if isinstance(v, int)}
        except LabelStudioError as exc:  # older versions: read the predictions
            if exc.extra.get("status") not in (404, 405):
                raise
        except ValueError:
            pass
        if versions is not None and not versions.get(version):
            return set(), versions
        rows = self.ls.list_predictions(project=self.project)
        return {int(p["task"]) for p in rows if p.get("model_version") == version}, versions

    def _filters(self, version: str, versions: dict[str, int] | None) -> list[dict[str, Any]]:
        chosen = self.options.filter
        if chosen is TaskFilter.unlabeled:
            return [_filter("total_annotations", "equal", 0)]
        # Label Studio matches versions by substring ("m-v1" also hides tasks of "m-v10"):
        # filter on its side only when no other version contains ours
        if (
            chosen is TaskFilter.no_prediction
            and versions is not None
            and not any(version in other for other in versions if other != version)
        ):
            return [_filter("predictions_model_versions", "not_contains", [version], "List")]
        return []

    def _pages(self, filters: list[dict[str, Any]]) -> Iterator[list[dict[str, Any]]]:
        size = self.options.page_size
        last = 0
        while not self._stop.is_set():
            query = {"filters": {"conjunction": "and", "items": [*filters, _after(last)]}}
            params = {
                "project": self.project,
                "page": 1,
                "page_size": size,
                "fields": "task_only",
                "include": _TASK_FIELDS,  # leaves out aggregates that cost ~10x the read
                "query": json.dumps(query),
            }
            body = _json(self.ls.request("GET", "/api/tasks/", params=params))
            tasks = body if isinstance(body, list) else (body.get("tasks") or [])
            if last == 0 and isinstance(body, dict) and isinstance(body.get("total"), int):
                self.stats.total = body["total"]
            if not tasks:
                return
            yield tasks
            last = max(int(t["id"]) for t in tasks)
            if len(tasks) < size:
                return

    def _stored_now(self, task_ids: list[int]) -> set[int]:
        """Which of these tasks have a prediction of our version now (after an unclear write)."""
        found: set[int] = set()
        for start in range(0, len(task_ids), 100):
            chunk = task_ids[start : start + 100]
            query = {"selectedItems": {"all": False, "included": chunk}}
            params = {
                "project": self.project,
                "page": 1,
                "page_size": len(chunk),
                "fields": "all",
                "include": "id,predictions",
                "query": json.dumps(query),
            }
            body = _json(self.ls.request("GET", "/api/tasks/", params=params))
            rows = body.get("tasks") or [] if isinstance(body, dict) else body
            for task in rows:
                versions = {p.get("model_version") for p in task.get("predictions") or []}
                if self.stats.model_version in versions:
                    found.add(int(task["id"]))
        return found

    # --- predicting (worker threads)
    def _predict(self, tasks: Sequence[dict[str, Any]]) -> tuple[list[_Group], int, int]:
        """Predict and check: (task, items to store) per task, tasks without any, bad items."""
        predictions, dropped = self.predictor.predict(list(tasks))
        if len(predictions) != len(tasks):
            raise LabelBridgeError(
                f"the predictor gave {len(predictions)} answers for {len(tasks)} tasks"
            )
        assert self._config is not None
        ids = [int(t["id"]) for t in tasks]
        clean, problems = split_valid(self._config, predictions, ids)
        for problem in problems[:5]:
            log.warning("dropped invalid prediction: %s", problem)
        groups: list[_Group] = []
        for task_id, entries in zip(ids, clean, strict=True):
            items = [
                {
                    "task": task_id,
                    "result": p.get("result") or [],
                    "score": _score(p.get("score")),
                    "model_version": self.stats.model_version,
                }
                for p in entries
                if isinstance(p, dict)
            ]
            if items:
                groups.append((task_id, items))
        return groups, len(tasks) - len(groups), dropped + len(problems)

    def _attempt(
        self, tasks: list[dict[str, Any]], retries: int
    ) -> tuple[BaseException | None, list[dict[str, Any]]]:
        """Predict, retried with backoff; the last error (None: done) and the tasks left."""
        error: BaseException | None = None
        for attempt in range(retries + 1):
            if attempt:
                time.sleep(self.options.backoff * 2 ** (attempt - 1))
            if self._stop.is_set():
                return None, []  # interrupted: these tasks are simply not done in this run
            try:
                groups, empty, invalid = self._predict(tasks)
            except Exception as exc:
                error = exc
                if _fatal(exc):
                    break
                continue
            with self._lock:
                if not self._buffer:
                    self._buffer_since = time.monotonic()
                self._buffer += groups
                self.stats.pending += len(groups)
                self.stats.empty += empty
                self.stats.invalid += invalid
            return None, []
        return error, tasks

    def _solve(self, tasks: list[dict[str, Any]], retries: int) -> int:
        """Predict what can be predicted: a failing group is split until the bad task is
        alone, and reported with its reason. Returns how many tasks failed."""
        error, left = self._attempt(tasks, retries)
        if error is None:
            return 0
        fatal = _fatal(error)
        if fatal or len(left) == 1:
            if fatal:
                self._halt(fatal)
            self._fail([int(t["id"]) for t in left], _reason(error))
            return len(left)
        half = len(left) // 2
        return self._solve(left[:half], 0) + self._solve(left[half:], 0)

    def _batch(self, tasks: list[dict[str, Any]]) -> None:
        failed = self._solve(tasks, self.options.retries)
        with self._lock:
            self._failed_in_a_row = self._failed_in_a_row + 1 if failed == len(tasks) else 0
            in_a_row = self._failed_in_a_row
        limit = self.options.max_failed_batches_in_a_row
        if in_a_row >= limit:
            last = self.stats.failures[-1].reason if self.stats.failures else "?"
            self._halt(f"{limit} batches in a row failed completely (last: {last})")
        self._flush()

    # --- writing (one write at a time)
    def _flush(self, *, force: bool = False) -> None:
        with self._lock:
            size = sum(len(items) for _, items in self._buffer)
            old = time.monotonic() - self._buffer_since >= self.options.flush_seconds
            if not self._buffer or not (force or size >= self.options.write_batch or old):
                return
            groups, self._buffer = self._buffer, []
        with self._write_lock:
            self._store(groups, self.options.retries)

    def _store(self, groups: list[_Group], retries: int) -> None:
        """Write, retried with backoff; a batch Label Studio rejects is split until the task
        it rejects is alone. An unclear failure is checked first: never written twice."""
        error: BaseException | None = None
        for attempt in range(retries + 1):
            if attempt:
                time.sleep(self.options.backoff * 2 ** (attempt - 1))
            items = [item for _, group in groups for item in group]
            try:
                self._write(items)
            except _UncertainWrite as exc:
                error = exc
                try:
                    done = self._stored_now([task for task, _ in groups])
                except LabelBridgeError as check:
                    reason = f"write outcome unknown ({_reason(exc)}; the check failed: {check})"
                    self._fail([task for task, _ in groups], reason, pending=True)
                    return
                self._stored([g for g in groups if g[0] in done])
                groups = [g for g in groups if g[0] not in done]
                if not groups or _fatal(exc):
                    break
                continue
            except Exception as exc:
                error = exc
                status = exc.extra.get("status") if isinstance(exc, LabelStudioError) else None
                if _fatal(exc) or (isinstance(status, int) and 400 <= status < 500):
                    break  # refused as it is: retrying the same batch cannot help
                continue
            self._stored(groups)
            return
        if not groups or error is None:
            return
        fatal = _fatal(error)
        if fatal or len(groups) == 1:
            if fatal:
                self._halt(fatal)
            self._fail([task for task, _ in groups], _reason(error), pending=True)
            return
        half = len(groups) // 2
        self._store(groups[:half], 0)
        self._store(groups[half:], 0)

    def _write(self, items: list[dict[str, Any]]) -> None:
        try:
            if self._bulk:
                try:
                    self.ls.create_predictions(items, project=self.project)
                    return
                except LabelStudioError as exc:
                    if exc.extra.get("status") not in (404, 405):
                        raise
                    log.warning("this Label Studio has no bulk import: writing one by one")
                    self._bulk = False
                    self.stats.write_mode = "one by one"
            for item in items:
                self.ls.create_prediction(item)
        except LabelStudioError as exc:
            status = exc.extra.get("status")
            if status is None or status >= 500:
                raise _UncertainWrite(exc) from exc
            raise

    # --- bookkeeping
    def _stored(self, groups: list[_Group]) -> None:
        with self._lock:
            self.stats.stored += len(groups)
            self.stats.pending -= len(groups)
            self.stats.predictions += sum(len(items) for _, items in groups)

    def _fail(self, tasks: list[int], reason: str, *, pending: bool = False) -> None:
        with self._lock:
            self.stats.failures += [Failure(task, reason) for task in tasks]
            if pending:  # predicted, but the write failed
                self.stats.pending -= len(tasks)

    def _halt(self, reason: str) -> None:
        with self._lock:
            self.stats.stopped = self.stats.stopped or reason
        self._stop.set()

    def _report(self) -> None:
        if self.on_progress is not None:
            self.on_progress(self.stats)

    # --- the loop (this thread)
    def run(self) -> PrelabelStats:
        """Predict and store every selected task; raises only for setup errors and interrupts."""
        project = self.ls.get_project(self.project)
        self._config = LabelConfig.parse(str(project.get("label_config") or ""))
        version = self.predictor.start(project, self.ls.url, self.token)
        self.stats.model_version = self.options.model_version or version
        self.stats.began = time.monotonic()  # the rate is the run's, not the model's load
        existing, versions = self._existing(self.stats.model_version)
        filters = self._filters(self.stats.model_version, versions)
        log.info(
            "prelabel project %s with %s: %d task(s) already predicted",
            self.project,
            self.stats.model_version,
            len(existing),
        )
        limit = self.options.concurrency * 2
        pending: set[Future[None]] = set()

        def settle(block: bool) -> None:
            nonlocal pending
            if pending:
                done, pending = wait(
                    pending, timeout=None if block else 0, return_when=FIRST_COMPLETED
                )
                for future in done:
                    future.result()  # an error here is a bug of ours: let it out
                if done:
                    self._report()

        try:
            with ThreadPoolExecutor(self.options.concurrency, "prelabel") as pool:
                try:
                    self._report()
                    batch: list[dict[str, Any]] = []
                    for page in self._pages(filters):
                        for task in page:
                            task_id = int(task["id"])
                            if task_id in self._claimed:
                                continue  # one batch per task in a run, whatever the paging
                            self._claimed.add(task_id)
                            if task_id in existing:
                                with self._lock:
                                    self.stats.skipped += 1
                                continue
                            batch.append(task)
                            if len(batch) >= self.options.batch_size:
                                while len(pending) >= limit and not self._stop.is_set():
                                    settle(True)
                                pending.add(pool.submit(self._batch, batch))
                                batch = []
                        settle(False)
                        if self._stop.is_set():
                            break
                    if batch and not self._stop.is_set():
                        pending.add(pool.submit(self._batch, batch))
                    while pending:
                        settle(True)
                except BaseException:
                    self._stop.set()
                    for future in pending:
                        future.cancel()
                    raise
        finally:
            # whatever was predicted is stored, also when interrupted (it is work done)
            try:
                self._flush(force=True)
            except Exception:
                log.exception("storing the last predictions failed")
            self.stats.finished = time.monotonic()
        self._report()
        return self.stats


_Group = tuple[int, list[dict[str, Any]]]
#: the task fields read: cheap model fields only (Label Studio computes aggregates otherwise)
_TASK_FIELDS = "id,data,meta,project,created_at,updated_at,inner_id"


def _filter(name: str, operator: str, value: Any, kind: str = "Number") -> dict[str, Any]:
    return {"filter": f"filter:tasks:{name}", "operator": operator, "type": kind, "value": value}


def _after(task_id: int) -> dict[str, Any]:
    return _filter("id", "greater", task_id)


def _json(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError as exc:
        raise LabelStudioError(
            f"Label Studio's answer to {response.request.url.path} is not JSON",
            fix="check that the URL points at Label Studio itself",
        ) from exc
