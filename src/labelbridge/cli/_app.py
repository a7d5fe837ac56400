"""The typer app every command module registers on."""

from __future__ import annotations

import typer

app = typer.Typer(
    name="labelbridge",
    help="Connect machine-learning models to Label Studio.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
