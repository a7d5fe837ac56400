"""`labelbridge start`: serve a backend folder to Label Studio.

Development (default): one process, logs on the console. Production (`--production` or
PRODUCTION=true): uvicorn's own supervisor runs WORKERS worker processes on one socket.

Why uvicorn's supervisor rather than gunicorn with uvicorn workers:
- `uvicorn.workers.UvicornWorker` is deprecated in the installed uvicorn (it warns and points
  to the separate `uvicorn-worker` package); gunicorn would be a second server stack to keep in
  step with the one development uses.
- Gunicorn's worker timeout counts on a heartbeat that a uvicorn worker only sends from its
  main loop, after startup: a replacement worker that holds its startup until its model is
  loaded (below) would be killed as hung unless the timeout is turned off. Uvicorn's supervisor
  pings workers through a pipe answered by a thread of their own, so a long load is not a hang.
- Uvicorn (>= 0.30) already restarts a worker that died, recycles workers after
  `limit_max_requests` (with jitter, so they don't all go at once), gives each worker
  `timeout_graceful_shutdown` to finish requests in flight, and on SIGHUP replaces workers one
  by one, each only once the new one has finished its startup.
What we add (`_Supervisor`): replacement workers are marked (see the model load gating in
`labelbridge.server`), the wait for workers at shutdown is bounded, and a shared folder for
metrics across workers (see `labelbridge.metrics`) lives as long as the server.

Training jobs (embedded queue) are run by ONE scheduler thread in this supervisor, not by the
workers: a worker is recycled (MAX_REQUESTS) or killed at any moment, and the job processes it
had started would be failed or die with it. The workers only submit and read job records
(SCHEDULER_ENV); the job processes are children of the supervisor, which lives as long as the
server. On SIGTERM the scheduler claims nothing more and gives running jobs GRACEFUL_TIMEOUT
seconds (while the workers finish their requests), then stops and fails them. Development mode
is one process, which runs its own scheduler.

The model is loaded once per worker: the app factory builds one `Backend` per process, which
runs setup() in a background thread at startup.

The supervisor serves no HTTP: it imports neither the server (FastAPI) nor the HTTP client, rich
or the other commands' libraries (idle RSS; tests/test_import_footprint.py). Keep what this
module and the scheduler import at the top light; the server-side names it needs are in
`labelbridge._environ`.
"""

from __future__ import annotations

import inspect
import json
import logging
import math
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Annotated, Any

import typer

from labelbridge._environ import METRICS_DIR_ENV, REPLACEMENT_ENV
from labelbridge._environ import SERVE_ENV as SERVE_ENV  # how the CLI hands its choices on
from labelbridge.cli._app import app
from labelbridge.jobs import SCHEDULER_ENV, EmbeddedJobQueue, resolve_dirs
from labelbridge.settings import JobQueueKind, Settings

log = logging.getLogger("labelbridge.server")

APP_FACTORY = "labelbridge.server:app_from_env"


def _overrides(**flags: Any) -> dict[str, Any]:
    return {k: v for k, v in flags.items() if v is not None}


def _http_protocol() -> str:
    """uvicorn's httptools protocol with labelbridge's /predict fast path (labelbridge._http),
    where httptools is installed and uvicorn has what it builds on; else uvicorn's choice."""
    try:
        from labelbridge._http import supported
    except ImportError:  # no httptools, or a uvicorn without its httptools protocol
        return "auto"
    if not supported():
        log.warning("this uvicorn lacks what the /predict fast path needs: serving without it")
        return "auto"
    return "labelbridge._http:PredictProtocol"


def _uvicorn_config(settings: Settings, *, workers: int) -> Any:
    """The uvicorn Config for this run; options the installed uvicorn lacks are left out."""
    import uvicorn

    options: dict[str, Any] = {
        "factory": True,
        "host": settings.host,
        "port": settings.port,
        "workers": workers,
        "log_config": None,
        "access_log": settings.debug,
        "http": _http_protocol(),
        "timeout_graceful_shutdown": max(1, math.ceil(settings.graceful_timeout)),
    }
    if settings.production and settings.max_requests:
        options["limit_max_requests"] = settings.max_requests
        options["limit_max_requests_jitter"] = settings.max_requests // 10
    accepted = inspect.signature(uvicorn.Config).parameters
    return uvicorn.Config(APP_FACTORY, **{k: v for k, v in options.items() if k in accepted})


def _start_schedulers(settings: Settings) -> list[EmbeddedJobQueue]:
    """The job schedulers of what the workers serve (one per backend's queue), started here.

    The queues are opened from the same spec and settings the workers' app factory reads
    (LABELBRIDGE_SERVE), so that the supervisor runs exactly the database they submit to."""
    from labelbridge.jobs import open_queue

    if settings.job_queue is not JobQueueKind.embedded:
        return []  # RQ: `labelbridge worker` processes run the jobs
    spec = json.loads(os.environ[SERVE_ENV])
    served = Settings(**spec["overrides"])
    targets: list[tuple[Settings, Path | None]] = []
    if spec.get("backends"):  # several backends, each with its own queue (labelbridge.multi)
        from labelbridge.multi import mounted_backends

        for one in mounted_backends(spec["backends"], served):
            targets.append((one.settings, one.folder))
    else:
        backend_dir = Path(spec["backend_dir"]) if spec.get("backend_dir") else None
        targets.append((served, backend_dir))
    queues: list[EmbeddedJobQueue] = []
    try:
        for own, folder in targets:
            queue = open_queue(own, folder, run_scheduler=True)
            assert isinstance(queue, EmbeddedJobQueue)
            queues.append(queue)
            queue.start()
    except BaseException:
        _stop_schedulers(queues, 0.0)
        raise
    return queues


def _stop_schedulers(queues: list[EmbeddedJobQueue], wait: float) -> None:
    """Begin stopping every scheduler at once (their grace periods overlap), then wait."""
    for queue in queues:
        queue.shutdown(wait)
    for queue in queues:
        queue.close(wait=wait)


def _supervise(settings: Settings) -> None:
    """Production: WORKERS processes under uvicorn's supervisor (see the module docstring)."""
    from uvicorn.supervisors import Multiprocess

    schedulers: list[EmbeddedJobQueue] = []

    class _Supervisor(Multiprocess):
        def init_processes(self) -> None:
            super().init_processes()
            # every worker started from now on replaces one: it waits for its model. With a
            # single worker there is nobody to cover for it, so it answers /health at once.
            if settings.workers > 1:
                os.environ[REPLACEMENT_ENV] = "1"

        def terminate_all(self) -> None:
            """Shutdown: running jobs get GRACEFUL_TIMEOUT from now, as requests do."""
            for queue in schedulers:
                queue.shutdown(settings.graceful_timeout)
            super().terminate_all()

        def join_all(self) -> None:
            """Wait for workers to finish their requests, but not forever."""
            deadline = time.monotonic() + settings.graceful_timeout + 10
            for process in self.processes:
                process.process.join(max(0.0, deadline - time.monotonic()))
                if process.process.is_alive():
                    log.error("worker %s did not stop in time: killed", process.pid)
                    process.process.kill()
                    process.process.join(5)

    config = _uvicorn_config(settings, workers=settings.workers)
    metrics_dir = tempfile.mkdtemp(prefix="labelbridge-metrics-")
    os.environ[METRICS_DIR_ENV] = metrics_dir
    os.environ.pop(REPLACEMENT_ENV, None)
    sock = config.bind_socket()
    try:
        # before the workers: the scheduler's first heartbeat is in when they answer /health
        schedulers.extend(_start_schedulers(settings))
        if schedulers:
            os.environ[SCHEDULER_ENV] = "external"
        _Supervisor(config, sockets=[sock]).run()
    finally:
        sock.close()
        _stop_schedulers(schedulers, settings.graceful_timeout)
        shutil.rmtree(metrics_dir, ignore_errors=True)
        for name in (METRICS_DIR_ENV, SCHEDULER_ENV):
            os.environ.pop(name, None)


@app.command()
def start(
    backend: Annotated[
        list[str] | None,
        typer.Argument(
            help="Backend folder with model.py, or module:Class; or NAME=FOLDER ... (each at /NAME)."
        ),
    ] = None,
    host: Annotated[str | None, typer.Option(help="Bind address [env HOST].")] = None,
    port: Annotated[int | None, typer.Option(help="Port [env PORT].")] = None,
    debug: Annotated[
        bool | None, typer.Option("--debug/--no-debug", help="Detailed logs [env DEBUG].")
    ] = None,
    production: Annotated[
        bool | None,
        typer.Option(
            "--production/--development", help="Worker processes, logs to files [env PRODUCTION]."
        ),
    ] = None,
    workers: Annotated[
        int | None, typer.Option(help="Worker processes in production [env WORKERS].")
    ] = None,
    model_dir: Annotated[
        Path | None, typer.Option(help="Model store folder [env MODEL_DIR].")
    ] = None,
    log_dir: Annotated[Path | None, typer.Option(help="Log folder [env LOG_DIR].")] = None,
    model_class: Annotated[
        str | None, typer.Option(help="Class name when model.py defines several.")
    ] = None,
) -> None:
    """Start the ML backend server; Label Studio connects to http://HOST:PORT."""
    import uvicorn

    from labelbridge.loader import model_ref_for
    from labelbridge.logs import configure_logging
    from labelbridge.multi import backend_folder, check_backends, parse_backend_args

    first, backends = parse_backend_args(backend)
    target = model_ref_for(first)
    backend_dir = backend_folder(target)
    base = Settings()
    flags = _overrides(
        host=host,
        port=port,
        debug=debug,
        production=production,
        workers=workers,
        model_dir=model_dir,
        log_dir=log_dir,
    )
    # MODEL_DIR and LOG_DIR, else the (first) backend folder's: `labelbridge worker` resolves
    # them with the same function, so its jobs write where this server reads
    unresolved = base.model_copy(update=flags)
    resolved = resolve_dirs(unresolved, backend_dir)
    for name in ("model_dir", "log_dir"):
        if getattr(unresolved, name) is None:
            flags[name] = getattr(resolved, name)
    settings = base.model_copy(update=flags)
    settings = Settings.model_validate(settings.model_dump())
    configure_logging(settings, backend_dir=backend_dir)
    try:  # fail here, with a clear message, not in a worker
        check_backends(target, backends, model_class, isolated=settings.production)
    except typer.BadParameter as exc:
        typer.secho(f"error: {exc}", fg="red", err=True)
        raise typer.Exit(2) from exc
    os.environ[SERVE_ENV] = json.dumps(
        {
            "target": target,
            "backends": backends,
            "backend_dir": str(backend_dir) if backend_dir else None,
            "class_name": model_class,
            "overrides": {k: str(v) if isinstance(v, Path) else v for k, v in flags.items()},
        }
    )
    workers_n = settings.workers if settings.production else 1
    where = f"http://{settings.host}:{settings.port}"
    if settings.production:
        log_folder = settings.resolved_log_dir(backend_dir)
        typer.echo(
            f"labelbridge: serving {target} on {where} ({workers_n} worker(s)); "
            f"logs in {log_folder}/uwsgi.log and rq.log"
        )
        log.info("serving %s on %s with %d worker(s)", target, where, workers_n)
        _supervise(settings)
        return
    typer.echo(f"labelbridge: serving {target} on {where} (development, 1 process)")
    os.environ.pop(SCHEDULER_ENV, None)  # one process: it runs its own job scheduler
    uvicorn.Server(_uvicorn_config(settings, workers=1)).run()
