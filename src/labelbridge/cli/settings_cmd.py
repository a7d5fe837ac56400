"""`labelbridge settings`: the settings in force (secrets masked), or the README's table."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from labelbridge.cli._app import app
from labelbridge.settings import ConnectorSettings, Settings


def settings_table() -> str:
    """One Markdown table of every setting: variable, default, meaning."""
    rows = ["| variable | default | meaning |", "|---|---|---|"]
    for cls, prefix in ((Settings, ""), (ConnectorSettings, "ML_")):
        for name, field in cls.model_fields.items():
            default = field.get_default(call_default_factory=True)
            if hasattr(default, "value"):
                default = default.value
            shown = "" if default in (None, [], "") else f"`{default}`"
            description = field.description or {
                "connection_timeout": "Connect timeout of every call (Label Studio's default).",
            }.get(name, f"Label Studio's timeout for this call, seconds ({prefix}{name.upper()}).")
            rows.append(f"| `{prefix}{name.upper()}` | {shown} | {description} |")
    return "\n".join(rows)


@app.command("settings")
def settings_command(
    markdown: Annotated[
        bool, typer.Option(help="Print the README's table of all settings.")
    ] = False,
) -> None:
    """Show the settings in force, read from the environment (secrets masked)."""
    if markdown:
        typer.echo(settings_table())
        return
    typer.echo(json.dumps(Settings().masked(), indent=2, default=str))
