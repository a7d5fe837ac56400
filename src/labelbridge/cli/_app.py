"""The typer app every command module registers on."""

from __future__ import annotations

import typer

app = typer.Typer(
    name="labelbridge",
    help="Connect machine-learning models to Label Studio.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    # help texts are plain: with rich markup, "[env REDIS_URL]" was taken for a style and vanished
    rich_markup_mode=None,
)
