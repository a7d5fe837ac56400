"""The `labelbridge` command line: one module per command, registered on one typer app."""

from __future__ import annotations

from labelbridge.cli._app import app

__all__ = ["app", "main"]


def main() -> None:
    """Entry point of the `labelbridge` console script."""
    from labelbridge.cli import _commands  # noqa: F401  (registers the commands)

    app()
