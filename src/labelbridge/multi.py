"""Several models in one server, each under its own URL prefix.

Label Studio joins its request paths onto whatever backend URL it is given, so
`http://host:9090/ner` works as a backend URL: `labelbridge start ner=examples/ner
sentiment=examples/sentiment` serves both from one process, at `/ner/...` and `/sentiment/...`.

Each backend keeps its own state: its model store and project records in `<MODEL_DIR>/<name>`,
and its own job queue (embedded: `<MODEL_DIR>/<name>/jobs.sqlite3`; RQ: the queue
`<RQ_QUEUE_NAME>-<name>`). `GET /health` at the root sums them up for monitors; Label Studio
only ever calls the prefixed routes.

`mounted_backends` derives each backend's reference, folder and settings; the server
(`build_multi_app`), the production supervisor's job schedulers and `labelbridge worker
ner=examples/ner sentiment=examples/sentiment` (JOB_QUEUE=rq: one worker serving every
backend's queue, each job with its own backend's settings) all call it, so they agree on where
each backend's models and jobs are.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

import typer

from labelbridge.errors import LabelBridgeError
from labelbridge.settings import Settings

if TYPE_CHECKING:  # `labelbridge start` parses its arguments here without loading FastAPI
    from fastapi import FastAPI
    from starlette.requests import Request

__all__ = [
    "Mounted",
    "backend_folder",
    "backend_settings",
    "build_multi_app",
    "check_backends",
    "mounted_backends",
    "parse_backend_args",
]

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
#: names that would hide routes of the app itself
_RESERVED = frozenset({"health", "docs", "redoc", "openapi.json"})
_STATES = ("failed", "loading", "ready")  # worst first


def check_backends(
    first: str, backends: dict[str, str] | None, class_name: str | None, *, isolated: bool
) -> None:
    """Every backend's model class loads, else typer.BadParameter naming it (exit 2), before
    any worker starts. `isolated`: in a child process (the production supervisor must not hold
    the models' imports)."""
    from labelbridge.loader import check_model_class, load_model_class

    check = check_model_class if isolated else load_model_class
    for name, ref in (backends or {"": first}).items():
        try:
            check(ref, None if backends else class_name)
        except LabelBridgeError as exc:
            raise typer.BadParameter(f"{name}={ref}: {exc}" if name else str(exc)) from exc


def parse_backend_args(
    args: Sequence[str] | None, *, command: str = "start"
) -> tuple[str, dict[str, str] | None]:
    """`labelbridge start`'s (and `labelbridge worker`'s) arguments: one backend (folder or
    module:Class), or several NAME=BACKEND pairs. Returns the backend to check and log for, and
    {name: reference} for several (None for one). Bad input raises typer.BadParameter (a usage
    error, exit 2); the model classes are checked by the caller (`check_backends`)."""
    from labelbridge.loader import model_ref_for

    items = list(args or [])
    if not any("=" in item for item in items):
        if len(items) > 1:
            raise typer.BadParameter(
                "several backends need names: NAME=FOLDER for each, e.g. "
                f"`labelbridge {command} ner=examples/ner sentiment=examples/sentiment`"
            )
        return (items[0] if items else "."), None
    backends: dict[str, str] = {}
    for item in items:
        name, sep, target = item.partition("=")
        if not sep or not target:
            raise typer.BadParameter(f"{item!r}: give every backend as NAME=FOLDER")
        if not _NAME.fullmatch(name) or name in _RESERVED:
            raise typer.BadParameter(
                f"{name!r} cannot be a URL prefix: use letters, digits, '_', '-' or '.', "
                f"starting with a letter or digit, and none of {sorted(_RESERVED)}"
            )
        if name in backends:
            raise typer.BadParameter(f"the name {name!r} is given twice")
        backends[name] = model_ref_for(target)
    return next(iter(backends.values())), backends


def backend_settings(settings: Settings, name: str, backend_dir: Path | None = None) -> Settings:
    """The settings of the backend served under /<name>: its own model store and job queue."""
    base = settings.resolved_model_dir(backend_dir)
    return settings.model_copy(
        update={
            "model_dir": (base / name).absolute(),
            "rq_queue_name": f"{settings.rq_queue_name}-{name}",
            # with MODEL_STORE=s3 the backends share a bucket: each gets its own prefix
            "model_store_s3_prefix": f"{settings.model_store_s3_prefix.rstrip('/')}/{name}/",
        }
    )


def backend_folder(ref: str) -> Path | None:
    """The folder of a backend reference (see loader.model_ref_for), None for module:Class."""
    return Path(ref) if Path(ref).is_dir() else None


class Mounted(NamedTuple):
    """One backend of several: what the server mounts at /<name> and a worker runs jobs for."""

    name: str
    #: the folder or module:Class, as loader.model_ref_for makes it (a job's model_ref)
    ref: str
    folder: Path | None
    settings: Settings


def mounted_backends(backends: Mapping[str, str], settings: Settings) -> list[Mounted]:
    """Each {name: folder or module:Class} with its settings (`backend_settings`). `settings`
    are the server's, model_dir resolved (`labelbridge start` and `labelbridge worker` resolve
    it alike: MODEL_DIR, else the first backend's folder's models/). The one derivation the
    server, its job schedulers and `labelbridge worker` share."""
    from labelbridge.loader import model_ref_for

    if not backends:
        raise ValueError("no backends to serve")
    mounted: list[Mounted] = []
    for name, target in backends.items():
        if not _NAME.fullmatch(name) or name in _RESERVED:
            raise ValueError(f"{name!r} cannot be a URL prefix")
        ref = model_ref_for(target)
        mounted.append(Mounted(name, ref, backend_folder(ref), backend_settings(settings, name)))
    return mounted


def build_multi_app(backends: Mapping[str, str], settings: Settings) -> FastAPI:
    """One app serving each {name: folder or module:Class} under /<name>."""
    from labelbridge._gate import ORJSONResponse, authenticated
    from labelbridge.loader import load_model_class
    from labelbridge.server import create_app
    from labelbridge.service import Backend

    mounted: dict[str, Backend] = {
        f"/{one.name}": Backend(
            load_model_class(one.ref), one.settings, model_ref=one.ref, backend_dir=one.folder
        )
        for one in mounted_backends(backends, settings)
    }
    app = create_app(mounted)

    async def health(request: Request) -> ORJSONResponse:
        """Up while the process is; model_state is the worst of the backends'. Anonymous
        callers (auth on) get states only, as from each backend's own /health."""
        details = authenticated(request.scope)
        states = {
            prefix.lstrip("/"): backend.health(details=details).model_dump(
                mode="json", exclude_none=True
            )
            for prefix, backend in mounted.items()
        }
        worst = min(
            (str(s.get("model_state", "ready")) for s in states.values()),
            key=lambda state: _STATES.index(state) if state in _STATES else 0,
        )
        return ORJSONResponse({"status": "UP", "model_state": worst, "backends": states})

    # plain Starlette routes: FastAPI would resolve the `Request` annotation in this module's
    # globals, where FastAPI is not imported (`labelbridge start` parses its arguments here)
    for path in ("/", "/health"):
        app.add_route(path, health, methods=["GET"], include_in_schema=False)
    return app
