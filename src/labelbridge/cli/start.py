"""`labelbridge start`: serve a backend folder to Label Studio."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated, Any

import typer

from labelbridge.cli._app import app
from labelbridge.errors import LabelBridgeError
from labelbridge.settings import Settings


def _overrides(**flags: Any) -> dict[str, Any]:
    return {k: v for k, v in flags.items() if v is not None}


@app.command()
def start(
    backend: Annotated[str, typer.Argument(help="Backend folder with model.py, or module:Class.")] = ".",
    host: Annotated[str | None, typer.Option(help="Bind address [env HOST].")] = None,
    port: Annotated[int | None, typer.Option(help="Port [env PORT].")] = None,
    debug: Annotated[bool | None, typer.Option("--debug/--no-debug", help="Detailed logs [env DEBUG].")] = None,
    production: Annotated[
        bool | None, typer.Option("--production/--development", help="Worker processes, logs to files [env PRODUCTION].")
    ] = None,
    workers: Annotated[int | None, typer.Option(help="Worker processes in production [env WORKERS].")] = None,
    model_dir: Annotated[Path | None, typer.Option(help="Model store folder [env MODEL_DIR].")] = None,
    log_dir: Annotated[Path | None, typer.Option(help="Log folder [env LOG_DIR].")] = None,
    model_class: Annotated[str | None, typer.Option(help="Class name when model.py defines several.")] = None,
) -> None:
    """Start the ML backend server; Label Studio connects to http://HOST:PORT."""
    import uvicorn

    from labelbridge.loader import load_model_class, model_ref_for
    from labelbridge.logs import configure_logging

    target = model_ref_for(backend)
    backend_dir = Path(target) if Path(target).is_dir() else None
    base = Settings()
    flags = _overrides(
        host=host, port=port, debug=debug, production=production, workers=workers, model_dir=model_dir, log_dir=log_dir
    )
    if base.model_dir is None and model_dir is None:
        flags["model_dir"] = (backend_dir or Path.cwd()) / "models"
    if base.log_dir is None and log_dir is None:
        flags["log_dir"] = (backend_dir or Path.cwd()) / "logs"
    settings = base.model_copy(update=flags)
    settings = Settings.model_validate(settings.model_dump())
    configure_logging(settings, backend_dir=backend_dir)
    try:
        load_model_class(target, model_class)  # fail here, with a clear message, not in a worker
    except LabelBridgeError as exc:
        typer.secho(f"error: {exc}", fg="red", err=True)
        raise typer.Exit(2) from exc
    os.environ["LABELBRIDGE_SERVE"] = json.dumps(
        {
            "target": target,
            "backend_dir": str(backend_dir) if backend_dir else None,
            "class_name": model_class,
            "overrides": {k: str(v) if isinstance(v, Path) else v for k, v in flags.items()},
        }
    )
    workers_n = settings.workers if settings.production else 1
    typer.echo(f"labelbridge: serving {target} on http://{settings.host}:{settings.port} ({workers_n} worker(s))")
    uvicorn.run(
        "labelbridge.server:app_from_env",
        factory=True,
        host=settings.host,
        port=settings.port,
        workers=workers_n,
        log_config=None,
        access_log=settings.debug,
        limit_max_requests=settings.max_requests or None,
        timeout_graceful_shutdown=int(settings.graceful_timeout),
        loop="auto",
        http="auto",
    )
