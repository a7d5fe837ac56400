"""`labelbridge worker`: run training jobs from Redis (JOB_QUEUE=rq), on this or another machine."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from labelbridge.cli._app import app
from labelbridge.settings import Settings


@app.command()
def worker(
    backend: Annotated[
        list[str] | None,
        typer.Argument(
            help="Backend folder: its models/ and logs/ are used unless MODEL_DIR/LOG_DIR are "
            "set. Or NAME=FOLDER ... as given to `labelbridge start`: the jobs of each."
        ),
    ] = None,
    redis_url: Annotated[
        str | None, typer.Option("--redis-url", help="Redis URL [env REDIS_URL].")
    ] = None,
    queue: Annotated[
        str | None,
        typer.Option(
            "--queue",
            help="RQ queue name [env RQ_QUEUE_NAME]; with NAME=FOLDER, each backend's queue "
            "is <queue>-<NAME>.",
        ),
    ] = None,
    burst: Annotated[bool, typer.Option("--burst", help="Run the queued jobs, then exit.")] = False,
    workers: Annotated[
        int,
        typer.Option(
            "--workers",
            min=1,
            max=32,
            help="Worker processes (jobs at once); with NAME=FOLDER each serves every backend.",
        ),
    ] = 1,
) -> None:
    """Run RQ workers for the scale-out mode; servers started with JOB_QUEUE=rq queue jobs here.

    Several models (`labelbridge start a=FOLDER b=FOLDER`): give the worker the same arguments.
    """
    from labelbridge.multi import backend_folder, check_backends, parse_backend_args

    try:
        from labelbridge.jobs.rq import run_workers
    except ModuleNotFoundError as exc:
        typer.secho(
            f"error: the worker needs {exc.name!r}: pip install 'labelbridge[rq]'",
            fg="red",
            err=True,
        )
        raise typer.Exit(2) from exc
    try:
        first, backends = parse_backend_args(backend, command="worker")
        if backends:  # several, as `labelbridge start` serves them: each must load
            check_backends(first, backends, None, isolated=True)
    except typer.BadParameter as exc:
        typer.secho(f"error: {exc}", fg="red", err=True)
        raise typer.Exit(2) from exc
    backend_dir: Path | None = None
    if backends:
        backend_dir = backend_folder(first)  # where MODEL_DIR defaults to, as for the server
    elif backend:
        backend_dir = Path(first).resolve()
        if not backend_dir.is_dir():
            typer.secho(f"error: {first} is not a folder", fg="red", err=True)
            raise typer.Exit(2)
    overrides: dict[str, Any] = {}
    if redis_url is not None:
        overrides["redis_url"] = redis_url
    if queue is not None:
        overrides["rq_queue_name"] = queue
    settings = Settings(**overrides)
    code = run_workers(settings, backend_dir, burst=burst, count=workers, backends=backends)
    raise typer.Exit(code)
