"""`labelbridge doctor`: run Label Studio's ML troubleshooting checklist against a backend.

The checks live in `labelbridge.doctor`; this module only reads the inputs and prints: one line
per check (coloured on a terminal, plain otherwise) or, with --json, a list of check objects.
Exit status 1 when any check fails, 2 for unusable input.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from labelbridge.cli._app import app

if TYPE_CHECKING:
    from rich.console import Console

    from labelbridge.doctor import Check

# rich and labelbridge.doctor (httpx) are imported by the command when it runs: every command
# module is imported by every `labelbridge` run, `labelbridge start` included

_STYLES = {"pass": "green", "warn": "yellow", "fail": "bold red", "skip": "dim"}


def render(checks: list[Check], console: Console) -> None:
    """One line per check: status, name, what was measured, and the fix when there is one."""
    from rich.text import Text

    from labelbridge.doctor import STATUSES

    width = max((len(c.name) for c in checks), default=0)
    for check in checks:
        line = Text()
        line.append(f"{check.status.upper():<4}", style=_STYLES[check.status])
        line.append(f"  {check.name:<{width}}  ", style="bold")
        line.append(check.measured, style="dim" if check.status == "skip" else "")
        if check.fix and check.status in ("warn", "fail"):
            line.append("  fix: ", style=_STYLES[check.status])
            line.append(check.fix)
        console.print(line)
        for detail in check.details:
            console.print(Text(f"{'':<{width + 6}}- {detail}", style="dim"))
    counts = Counter(c.status for c in checks)
    summary = ", ".join(f"{counts[s]} {s}" for s in STATUSES if counts[s])
    console.print(Text(f"doctor: {summary}", style="bold red" if counts["fail"] else "bold"))


@app.command()
def doctor(
    backend: Annotated[str, typer.Option("--backend", help="The ML backend's URL.")],
    config: Annotated[
        Path | None, typer.Option("--config", help="Labeling config XML (else the project's).")
    ] = None,
    tasks: Annotated[
        Path | None,
        typer.Option("--tasks", help="Sample tasks, JSON or JSONL (else the project's)."),
    ] = None,
    label_studio: Annotated[
        str | None,
        typer.Option("--label-studio", envvar="LABEL_STUDIO_URL", help="Label Studio's URL."),
    ] = None,
    token: Annotated[
        str | None,
        typer.Option(
            "--token", envvar="LABEL_STUDIO_API_KEY", help="Label Studio token (PAT or legacy)."
        ),
    ] = None,
    project: Annotated[int | None, typer.Option("--project", help="Project id.")] = None,
    backend_dir: Annotated[
        Path | None,
        typer.Option("--backend-dir", help="The backend's folder (for requirements.txt)."),
    ] = None,
    sample: Annotated[int, typer.Option("--sample", min=1, help="Tasks sent to /predict.")] = 10,
    train: Annotated[
        bool,
        typer.Option("--train/--no-train", help="Send START_TRAINING (starts a real job)."),
    ] = True,
    as_json: Annotated[bool, typer.Option("--json", help="Print a JSON list of checks.")] = False,
) -> None:
    """Check a backend the way Label Studio uses it, and say how to fix what fails."""
    from rich.console import Console

    from labelbridge.cli.predict import load_tasks
    from labelbridge.doctor import Doctor

    try:
        config_text = config.read_text(encoding="utf-8") if config else None
        task_list = load_tasks(tasks) if tasks else None
    except (OSError, ValueError) as exc:
        typer.secho(f"error: {exc}", fg="red", err=True)
        raise typer.Exit(2) from exc
    checks = Doctor(
        backend,
        label_config=config_text,
        tasks=task_list,
        label_studio=label_studio,
        token=token,
        project=project,
        backend_dir=backend_dir,
        train=train,
        sample=sample,
    ).run()
    if as_json:
        typer.echo(json.dumps([c.to_dict() for c in checks], indent=2, default=str))
    else:
        render(checks, Console(highlight=False, soft_wrap=True))
    if any(c.status == "fail" for c in checks):
        raise typer.Exit(1)
