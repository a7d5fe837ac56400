"""`labelbridge init NAME`: a new backend folder that starts and answers /health untouched."""

from __future__ import annotations

import re
from importlib import resources
from pathlib import Path
from typing import Annotated

import typer

from labelbridge.cli._app import app

#: template file -> name in the new folder
FILES = {
    "model.py.tmpl": "model.py",
    "requirements.txt.tmpl": "requirements.txt",
    "label_config.xml.tmpl": "label_config.xml",
    "README.md.tmpl": "README.md",
    "Dockerfile.tmpl": "Dockerfile",
    "docker-compose.yml.tmpl": "docker-compose.yml",
    "dockerignore.tmpl": ".dockerignore",
}


def render(name: str) -> dict[str, str]:
    """The new folder's files as text, by file name."""
    slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-") or "backend"
    class_name = "".join(part.capitalize() for part in slug.split("-")) or "Backend"
    if class_name[0].isdigit():
        class_name = f"Model{class_name}"
    templates = resources.files("labelbridge") / "templates"
    from labelbridge import __version__

    values = {"name": name, "slug": slug, "class_name": class_name, "version": __version__}
    return {
        target: (templates / source).read_text(encoding="utf-8").format(**values)
        for source, target in FILES.items()
    }


@app.command()
def init(
    name: Annotated[str, typer.Argument(help="Folder to create (its name names the model).")],
    force: Annotated[bool, typer.Option(help="Overwrite files that exist.")] = False,
) -> None:
    """Scaffold a backend: model.py, requirements.txt, README, Dockerfile, docker-compose.yml."""
    folder = Path(name)
    files = render(folder.name)
    existing = [f for f in files if (folder / f).exists()]
    if existing and not force:
        typer.secho(
            f"error: {folder} already has {', '.join(existing)} (use --force)", fg="red", err=True
        )
        raise typer.Exit(2)
    folder.mkdir(parents=True, exist_ok=True)
    for target, text in files.items():
        (folder / target).write_text(text, encoding="utf-8")
    typer.echo(f"created {folder}/ ({', '.join(files)})")
    typer.echo(f"next: labelbridge start {folder} --port 9090")
