"""The `labelbridge` command line: one module per command, registered on one typer app."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from labelbridge.cli._app import app

__all__ = ["app", "main"]


def main() -> None:
    """Entry point of the `labelbridge` console script."""
    from labelbridge.cli import _commands  # noqa: F401  (registers the commands)
    from labelbridge.cli._app import app

    app()


def __getattr__(name: str) -> Any:
    # `app` is imported on first use: the console script imports this module, and so does
    # every production worker process (multiprocessing's spawn re-imports the script as
    # __mp_main__), which serves HTTP and has no use for typer
    if name == "app":
        from labelbridge.cli._app import app

        return app
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
