"""`labelbridge prelabel`: pre-annotate a whole Label Studio project, resumably.

Why: Label Studio's "Retrieve predictions" sends all selected tasks in one request under a
100 s limit. This reads the project page by page, predicts in bounded batches (through a
running backend, or with a model folder in this process) and stores the predictions through
Label Studio's API. Run it again after an interruption: what is stored is skipped.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer
from pydantic import SecretStr

from labelbridge._task_filter import TaskFilter
from labelbridge.cli._app import app
from labelbridge.errors import LabelBridgeError
from labelbridge.settings import Settings

if TYPE_CHECKING:
    from labelbridge.predictors import Predictor
    from labelbridge.prelabel import PrelabelStats

# rich and the Label Studio client (httpx) are imported by the command when it runs: every
# command module is imported by every `labelbridge` run, `labelbridge start` included

SHOWN_FAILURES = 10


def _eta(stats: PrelabelStats) -> str:
    eta = stats.eta_seconds
    if eta is None:
        return "-:--:--"
    minutes, seconds = divmod(int(eta), 60)
    return f"{minutes // 60}:{minutes % 60:02d}:{seconds:02d}"


@app.command()
def prelabel(
    label_studio: Annotated[
        str,
        typer.Option(
            "--label-studio",
            envvar="LABEL_STUDIO_URL",
            help="Label Studio URL.",
        ),
    ],
    token: Annotated[
        str,
        typer.Option(
            envvar="LABEL_STUDIO_API_KEY",
            help="Legacy token or personal access token (the env var keeps it out of `ps`).",
        ),
    ],
    project: Annotated[int, typer.Option(min=1, help="Label Studio project id.")],
    backend: Annotated[
        str | None, typer.Option(help="A running ML backend, e.g. http://localhost:9090.")
    ] = None,
    model: Annotated[
        str | None, typer.Option(help="A backend folder (or module:Class), run in this process.")
    ] = None,
    task_filter: Annotated[
        TaskFilter, typer.Option("--filter", help="Which tasks to pre-annotate.")
    ] = TaskFilter.unlabeled,
    batch_size: Annotated[int, typer.Option(min=1, help="Tasks per prediction batch.")] = 32,
    concurrency: Annotated[int, typer.Option(min=1, max=64, help="Batches in flight.")] = 2,
    write_batch: Annotated[
        int, typer.Option(min=1, help="Predictions per write to Label Studio (bulk import).")
    ] = 500,
    model_version: Annotated[
        str | None, typer.Option(help="Store under this version (default: the model's).")
    ] = None,
    model_class: Annotated[
        str | None, typer.Option(help="With --model: the class, when several are defined.")
    ] = None,
    user: Annotated[str | None, typer.Option(help="Basic auth user of --backend.")] = None,
    password: Annotated[str | None, typer.Option(help="Basic auth password of --backend.")] = None,
) -> None:
    """Pre-annotate a project's tasks and store the predictions in Label Studio."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    from labelbridge.labelstudio import LabelStudio
    from labelbridge.predictors import BackendPredictor, in_process_predictor
    from labelbridge.prelabel import Prelabeler, PrelabelOptions

    if (backend is None) == (model is None):
        typer.secho("error: give exactly one of --backend and --model", fg="red", err=True)
        raise typer.Exit(2)
    if (user is None) != (password is None):
        typer.secho("error: give both --user and --password", fg="red", err=True)
        raise typer.Exit(2)
    console = Console(stderr=True)
    options = PrelabelOptions(
        filter=task_filter,
        batch_size=batch_size,
        concurrency=concurrency,
        model_version=model_version,
        write_batch=write_batch,
    )
    try:
        if backend is not None:
            auth = (user, password) if user is not None and password is not None else None
            predictor: Predictor = BackendPredictor(backend, auth=auth)
        else:
            assert model is not None
            # predict() reads assets from this Label Studio; debug off: invalid items are
            # dropped and counted rather than failing their batch
            settings = Settings().model_copy(
                update={
                    "label_studio_url": label_studio,
                    "label_studio_api_key": SecretStr(token),
                    "debug": False,
                }
            )
            predictor = in_process_predictor(model, settings, class_name=model_class)
    except (ValueError, LabelBridgeError) as exc:
        typer.secho(f"error: {exc}", fg="red", err=True)
        raise typer.Exit(2) from exc

    columns = (
        TextColumn("prelabel"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("[cyan]{task.fields[rate]}"),
        TextColumn("ETA {task.fields[eta]}"),
        TextColumn("[green]{task.fields[stored]} stored[/] [red]{task.fields[failed]} failed"),
    )
    stats: PrelabelStats | None = None
    with (
        Progress(*columns, console=console, transient=False) as progress,
        LabelStudio(label_studio, token) as client,
    ):
        bar = progress.add_task("prelabel", total=None, rate="-", eta="-", stored=0, failed=0)

        def show(current: PrelabelStats) -> None:
            progress.update(
                bar,
                total=current.total,
                completed=current.done,
                rate=f"{current.tasks_per_second:.1f} tasks/s",
                eta=_eta(current),
                stored=current.stored,
                failed=current.failed,
            )

        runner = Prelabeler(client, predictor, project, options, token=token, on_progress=show)
        try:
            stats = runner.run()
        except KeyboardInterrupt:
            progress.stop()
            typer.secho(f"\ninterrupted: {runner.stats.summary()}", err=True)
            typer.secho("run the same command again to resume", err=True)
            raise typer.Exit(130) from None
        except LabelBridgeError as exc:
            progress.stop()
            typer.secho(f"error: {exc}", fg="red", err=True)
            if exc.fix:
                typer.secho(f"fix: {exc.fix}", err=True)
            raise typer.Exit(1) from exc
        finally:
            predictor.close()
    for failure in stats.failures[:SHOWN_FAILURES]:
        typer.secho(f"failed: task {failure.task}: {failure.reason}", fg="red", err=True)
    if stats.failed > SHOWN_FAILURES:
        typer.secho(f"... and {stats.failed - SHOWN_FAILURES} more", fg="red", err=True)
    typer.echo(stats.summary())
    if not stats.ok:
        raise typer.Exit(1)
