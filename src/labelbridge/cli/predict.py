"""`labelbridge predict`: pre-annotate a whole data set through any ML backend, resumably.

Why: Label Studio's "Retrieve predictions" sends every selected task in one request under a
100 s limit, which large data sets cannot meet. This command sends bounded, concurrent batches,
journals each finished batch (fsynced) so an interruption costs no finished work, and writes
Label Studio's import format: the input tasks, each with `predictions`.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from labelbridge.cli._app import app
from labelbridge.errors import BackendUnreachable, LabelBridgeError

if TYPE_CHECKING:
    from rich.console import Console
    from rich.progress import ProgressColumn

    from labelbridge.client import AsyncMLBackendClient, Predictions

# rich and labelbridge.client (httpx) are imported by the command when it runs: every command
# module is imported by every `labelbridge` run, `labelbridge start` included

#: used when neither setup nor predict gives a model_version: Label Studio refuses null
FALLBACK_VERSION = "unknown"
JOURNAL_FORMAT = 1
#: a backend that failed this many batches in a row is broken: stop instead of hammering it
MAX_FAILURES_IN_A_ROW = 5
SHOWN_FAILURES = 10


def journal_path(out: Path) -> Path:
    return out.with_name(out.name + ".partial.jsonl")


def data_hash(task: dict[str, Any]) -> str:
    """Identifies a task's data, so a changed input is predicted again, not reused."""
    text = json.dumps(task["data"], sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:20]


def config_hash(label_config: str) -> str:
    return hashlib.sha256(label_config.encode("utf-8")).hexdigest()[:20]


def load_tasks(path: Path) -> list[dict[str, Any]]:
    """Tasks as Label Studio imports them: `{"data": {...}, ...}` objects or bare data dicts."""
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".jsonl":
        items: Any = [json.loads(line) for line in text.splitlines() if line.strip()]
    else:
        items = json.loads(text)
    if isinstance(items, dict):
        items = [items]
    if not isinstance(items, list):
        raise ValueError(f"{path} must hold a JSON list of tasks")
    tasks = []
    for index, item in enumerate(items):
        if not isinstance(item, dict):
            raise ValueError(f"{path}: task {index} is a {type(item).__name__}, not an object")
        tasks.append(dict(item) if isinstance(item.get("data"), dict) else {"data": item})
    return tasks


class Journal:
    """`<out>.partial.jsonl`: a header line, then one line per finished task (index, data hash,
    predictions). Appended and fsynced per batch; a torn last line (crash) is cut off."""

    def __init__(self, path: Path, header: dict[str, Any]) -> None:
        self.path = path
        self.header = header
        self.done: dict[int, tuple[str, list[dict[str, Any]]]] = {}

    def load(self) -> str | None:
        """Read what a previous run finished; returns why it was discarded, if it was."""
        if not self.path.exists():
            return None
        raw = self.path.read_bytes()
        good = raw[: raw.rfind(b"\n") + 1]  # a line without its newline was torn by a crash
        lines = good.decode("utf-8").splitlines()
        if not lines:  # torn before its first line ended: nothing was finished
            self.path.unlink()
            return None
        try:
            header = json.loads(lines[0])
            entries = [json.loads(line) for line in lines[1:]]
            done = {int(e["i"]): (str(e["h"]), list(e["p"])) for e in entries}
        except (ValueError, KeyError, TypeError):
            self.path.unlink()
            return "it is not a journal this command can read"
        if header != self.header:
            self.path.unlink()
            return "it was made for another backend, project or labeling config"
        self.done = done
        if len(good) != len(raw):
            with self.path.open("r+b") as handle:
                handle.truncate(len(good))
        return None

    def append(self, entries: list[tuple[int, str, list[dict[str, Any]]]]) -> None:
        new = not self.path.exists()
        lines = [json.dumps(self.header)] if new else []
        lines += [json.dumps({"i": i, "h": h, "p": p}, ensure_ascii=False) for i, h, p in entries]
        with self.path.open("a", encoding="utf-8") as handle:
            handle.write("\n".join(lines) + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        for index, digest, predictions in entries:
            self.done[index] = (digest, predictions)


def write_atomically(path: Path, tasks: list[dict[str, Any]]) -> None:
    """Temp file + fsync + rename: readers see the old file or the whole new one."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    body = ",\n".join(json.dumps(task, ensure_ascii=False) for task in tasks)
    with tmp.open("w", encoding="utf-8") as handle:
        handle.write(f"[\n{body}\n]\n" if tasks else "[]\n")
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def to_import_format(predictions: Predictions, index: int, version: str) -> list[dict[str, Any]]:
    """One task's predictions as Label Studio imports them; never a null model_version."""
    return [
        {"model_version": p.model_version or version, "score": p.score, "result": p.result}
        for p in predictions.results[index]
    ]


@dataclass
class Run:
    """What one invocation did, for the summary."""

    predicted: int = 0
    skipped: int = 0
    failures: list[str] = field(default_factory=list)
    failed_tasks: int = 0
    in_a_row: int = 0
    stopped: str | None = None


def _rate_column() -> ProgressColumn:
    """A progress column with the tasks per second."""
    from rich.progress import ProgressColumn
    from rich.progress import Task as ProgressTask
    from rich.text import Text

    class _Rate(ProgressColumn):
        def render(self, task: ProgressTask) -> Text:
            speed = task.finished_speed or task.speed
            return Text("-- tasks/s" if speed is None else f"{speed:.1f} tasks/s", style="cyan")

    return _Rate()


def _batches(pending: list[int], size: int) -> Iterator[list[int]]:
    for start in range(0, len(pending), size):
        yield pending[start : start + size]


async def predict_all(
    client: AsyncMLBackendClient,
    tasks: list[dict[str, Any]],
    pending: list[int],
    journal: Journal,
    *,
    project: str,
    label_config: str,
    batch_size: int,
    concurrency: int,
    run: Run,
    console: Console,
) -> None:
    """Health and setup once, then the pending tasks in bounded concurrent batches."""
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
    )

    from labelbridge.client import CallHTTPError

    await client.health()
    version = await client.setup(project, label_config) or None
    queue = list(enumerate(_batches(pending, batch_size), start=1))
    columns = (TextColumn("predict"), BarColumn(), MofNCompleteColumn(), _rate_column())
    with Progress(*columns, TimeRemainingColumn(), console=console) as progress:
        bar = progress.add_task("predict", total=len(tasks), completed=len(tasks) - len(pending))

        async def worker() -> None:
            while queue and run.stopped is None:
                number, indices = queue.pop(0)
                batch = [tasks[i] for i in indices]
                where = f"batch {number} (tasks {indices[0]}-{indices[-1]})"
                try:
                    answer = await client.predict_exact(
                        batch, project=project, label_config=label_config
                    )
                except LabelBridgeError as exc:
                    run.failures.append(f"{where}: {exc}")
                    run.failed_tasks += len(indices)
                    run.in_a_row += 1
                    fatal = isinstance(exc, CallHTTPError) and exc.status in (401, 403, 404)
                    if isinstance(exc, BackendUnreachable) or fatal:
                        run.stopped = "the backend cannot serve any batch"
                    elif run.in_a_row >= MAX_FAILURES_IN_A_ROW:
                        run.stopped = f"{run.in_a_row} batches failed in a row"
                    continue
                run.in_a_row = 0
                fallback = version or answer.model_version or FALLBACK_VERSION
                entries = [
                    (i, data_hash(tasks[i]), to_import_format(answer, n, fallback))
                    for n, i in enumerate(indices)
                ]
                journal.append(entries)
                run.predicted += len(indices)
                progress.advance(bar, len(indices))

        await asyncio.gather(*(worker() for _ in range(concurrency)))


def _summary(run: Run, out: Path, journal: Path, total: int) -> str:
    failed = len(run.failures)
    text = (
        f"predicted {run.predicted} tasks, skipped {run.skipped} from journal, "
        f"{failed} failed batch{'es' if failed != 1 else ''}"
    )
    if failed or run.stopped:
        left = total - run.predicted - run.skipped
        stopped = f"; stopped early: {run.stopped}" if run.stopped else ""
        return (
            f"{text}{stopped}; {left} tasks left, kept {journal.name}: run the same command "
            "to resume"
        )
    return f"{text}; wrote {out} ({total} tasks)"


@app.command()
def predict(
    backend: Annotated[str, typer.Option(help="ML backend URL, e.g. http://localhost:9090.")],
    config: Annotated[
        Path, typer.Option(exists=True, dir_okay=False, help="Labeling config (XML) file.")
    ],
    tasks: Annotated[
        Path, typer.Option(exists=True, dir_okay=False, help="Tasks: JSON list (or .jsonl).")
    ],
    out: Annotated[Path, typer.Option(help="Output: the tasks with predictions (LS import).")],
    batch_size: Annotated[int, typer.Option(min=1, help="Tasks per /predict request.")] = 64,
    concurrency: Annotated[
        int, typer.Option(min=1, max=64, help="Requests in flight (3: measured best here).")
    ] = 3,
    project: Annotated[
        str, typer.Option(help="Label Studio project id (its trained model); 0: none.")
    ] = "0",
    user: Annotated[str | None, typer.Option(help="Basic auth user of the backend.")] = None,
    password: Annotated[str | None, typer.Option(help="Basic auth password.")] = None,
    resume: Annotated[
        bool, typer.Option("--resume/--no-resume", help="Reuse the journal of a cut-short run.")
    ] = True,
) -> None:
    """Pre-annotate a data set in batches; timeouts come from ML_TIMEOUT_* as in Label Studio."""
    from rich.console import Console

    from labelbridge.client import AsyncMLBackendClient

    console = Console(stderr=True)
    try:
        label_config = config.read_text(encoding="utf-8")
        items = load_tasks(tasks)
    except (OSError, ValueError) as exc:
        typer.secho(f"error: {exc}", fg="red", err=True)
        raise typer.Exit(2) from exc
    if (user is None) != (password is None):
        typer.secho("error: give both --user and --password", fg="red", err=True)
        raise typer.Exit(2)
    header = {
        "labelbridge_predict": JOURNAL_FORMAT,
        "backend": backend,
        "project": project,
        "config": config_hash(label_config),
    }
    journal = Journal(journal_path(out), header)
    if not resume:
        journal.path.unlink(missing_ok=True)
    elif discarded := journal.load():
        typer.secho(f"warning: ignored {journal.path.name}: {discarded}", fg="yellow", err=True)
    run = Run()
    pending = []
    for index, task in enumerate(items):
        entry = journal.done.get(index)
        if entry is not None and entry[0] == data_hash(task):
            run.skipped += 1
        else:
            pending.append(index)

    async def main() -> None:
        auth = (user, password) if user is not None and password is not None else None
        async with AsyncMLBackendClient(backend, auth=auth) as client:
            await predict_all(
                client,
                items,
                pending,
                journal,
                project=project,
                label_config=label_config,
                batch_size=batch_size,
                concurrency=concurrency,
                run=run,
                console=console,
            )

    try:
        if pending:
            asyncio.run(main())
    except ValueError as exc:  # a malformed --backend URL
        typer.secho(f"error: {exc}", fg="red", err=True)
        raise typer.Exit(2) from exc
    except LabelBridgeError as exc:  # health or setup: nothing can be predicted
        typer.secho(f"error: {exc}", fg="red", err=True)
        raise typer.Exit(1) from exc
    except KeyboardInterrupt:
        typer.secho(f"\ninterrupted: {_summary(run, out, journal.path, len(items))}", err=True)
        raise typer.Exit(130) from None
    for failure in run.failures[:SHOWN_FAILURES]:
        typer.secho(f"failed: {failure}", fg="red", err=True)
    if len(run.failures) > SHOWN_FAILURES:
        typer.secho(f"... and {len(run.failures) - SHOWN_FAILURES} more", fg="red", err=True)
    if run.failures or run.stopped:
        typer.echo(_summary(run, out, journal.path, len(items)))
        raise typer.Exit(1)
    results = []
    for index, task in enumerate(items):
        done = dict(task)
        done["predictions"] = list(task.get("predictions") or []) + journal.done[index][1]
        results.append(done)
    write_atomically(out, results)
    journal.path.unlink(missing_ok=True)
    typer.echo(_summary(run, out, journal.path, len(items)))
