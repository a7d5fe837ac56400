"""`labelbridge init NAME`: a new backend folder that starts and answers /health untouched.

Its Dockerfile installs labelbridge from a wheel that `init` writes into NAME/wheels/ (packed from
the installed labelbridge: see _wheel.py), since labelbridge is not on PyPI. The examples'
Dockerfiles come from the same template (`render_dockerfile` with `labelbridge="checkout"`);
scripts/gen_example_dockerfiles.py writes them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Annotated, Literal

import typer

from labelbridge.cli._app import app
from labelbridge.cli._wheel import WheelError, build_wheel, wheel_name

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
#: where `init` puts labelbridge's wheel, inside the new folder
WHEELS = "wheels"


@dataclass(frozen=True)
class DockerOptions:
    """What differs between the Dockerfiles made from templates/Dockerfile.tmpl."""

    #: where labelbridge comes from: "wheel", the file `init` writes into wheels/ (the build
    #: context is the backend's folder); "checkout", this repository's pyproject.toml and src/
    #: (the build context is the repository's root, the backend is `folder` in it)
    labelbridge: Literal["wheel", "checkout"] = "wheel"
    #: the backend's folder inside the build context, e.g. "examples/sentiment" ("" for ".")
    folder: str = ""
    #: the backend's requirements file, in its folder
    requirements: str = "requirements.txt"
    #: a torch version to install first from PyTorch's CPU index: left to the requirements,
    #: pip on Linux takes a CUDA build of several GB
    torch_cpu: str | None = None
    #: seconds the HEALTHCHECK gives the server to start
    start_period: int = 20
    #: comment lines added to the top of the file
    notes: tuple[str, ...] = ()


def _comment(*lines: str) -> str:
    return "".join(f"# {line}".rstrip() + "\n" for line in lines)


def render_dockerfile(slug: str, options: DockerOptions | None = None) -> str:
    """The Dockerfile of the backend `slug` (the image is named after it)."""
    options = options or DockerOptions()
    folder = f"{options.folder.strip('/')}/" if options.folder.strip("/") else ""
    if options.labelbridge == "wheel":
        image = f"{slug}-ml-backend"
        notes = _comment(
            "Build and run from this folder (or `docker compose up`: backend, RQ worker, Redis):",
            f"  docker build -t {image} .",
            f"  docker run --rm -p 9090:9090 {image}",
        )
        wheel = wheel_name()
        install = _comment(
            f"labelbridge is not on PyPI: its wheel is the one `labelbridge init` put in {WHEELS}/",
            "(after upgrading labelbridge, `labelbridge init . --update-wheel` here replaces it)",
        )
        install += f"COPY {WHEELS}/{wheel} /tmp/wheels/\n"
        install += f'RUN pip install "/tmp/wheels/{wheel}[rq]"\n'
    else:
        image = f"labelbridge-{slug}"
        notes = _comment(
            "Build from the repository root, so that labelbridge itself is installed from src/:",
            f"  docker build -f {folder}Dockerfile -t {image} .",
            f"  docker run --rm -p 9090:9090 {image}",
        )
        install = _comment(
            "labelbridge from this repository's pyproject.toml, README.md, LICENSE and src/"
        )
        install += "COPY pyproject.toml README.md LICENSE /src/labelbridge/\n"
        install += "COPY src /src/labelbridge/src\n"
        install += 'RUN pip install "/src/labelbridge[rq]"\n'
    torch = ""
    if options.torch_cpu:
        torch = _comment(
            "PyTorch's CPU build first: left to resolve it through the requirements, pip on Linux",
            "takes a CUDA build of several GB that this model never uses.",
        )
        torch += "ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu\n"
        torch += f'RUN pip install --index-url "$TORCH_INDEX" "torch=={options.torch_cpu}"\n'
    template = resources.files("labelbridge") / "templates" / "Dockerfile.tmpl"
    return template.read_text(encoding="utf-8").format(
        notes=notes + _comment(*options.notes),
        torch=torch,
        install=install,
        folder=folder,
        requirements=options.requirements,
        code=folder or ".",
        start_period=options.start_period,
    )


def render(name: str) -> dict[str, str]:
    """The new folder's files as text, by file name (labelbridge's wheel aside)."""
    slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-") or "backend"
    class_name = "".join(part.capitalize() for part in slug.split("-")) or "Backend"
    if class_name[0].isdigit():
        class_name = f"Model{class_name}"
    templates = resources.files("labelbridge") / "templates"
    from labelbridge import __version__

    values = {"name": name, "slug": slug, "class_name": class_name, "version": __version__}
    return {
        target: render_dockerfile(slug)
        if target == "Dockerfile"
        else (templates / source).read_text(encoding="utf-8").format(**values)
        for source, target in FILES.items()
    }


#: a labelbridge wheel's name, as the Dockerfile names it
_WHEEL_NAME = re.compile(r"labelbridge-[^/\s\"'\[\]]+-py3-none-any\.whl")


def _update_wheel(folder: Path) -> None:
    """Write the wheel of the labelbridge running now, and point the Dockerfile at it."""
    dockerfile = folder / "Dockerfile"
    if not dockerfile.is_file():
        typer.secho(f"error: {folder} has no Dockerfile (labelbridge init)", fg="red", err=True)
        raise typer.Exit(2)
    wheel = build_wheel(folder / WHEELS)
    text = dockerfile.read_text(encoding="utf-8")
    updated, count = _WHEEL_NAME.subn(wheel.name, text)
    if not count:
        typer.secho(
            f"warning: {dockerfile} names no labelbridge wheel: install {WHEELS}/{wheel.name}",
            fg="yellow",
            err=True,
        )
        return
    if updated != text:
        dockerfile.write_text(updated, encoding="utf-8")
        typer.echo(f"updated {dockerfile}")
    for old in (folder / WHEELS).glob("labelbridge-*.whl"):
        if old.name != wheel.name:
            old.unlink()
            typer.echo(f"removed {old}")
    typer.echo(f"wrote {folder / WHEELS / wheel.name}")


@app.command()
def init(
    name: Annotated[str, typer.Argument(help="Folder to create (its name names the model).")],
    force: Annotated[bool, typer.Option(help="Overwrite files that exist.")] = False,
    update_wheel: Annotated[
        bool,
        typer.Option(
            help="Only write the wheel of this labelbridge into NAME/wheels/ and point "
            "NAME/Dockerfile at it (after upgrading labelbridge); leave the rest alone."
        ),
    ] = False,
) -> None:
    """Scaffold a backend: model.py, requirements.txt, README, Dockerfile, docker-compose.yml,
    and labelbridge's wheel in wheels/ (for the Dockerfile: labelbridge is not on PyPI)."""
    folder = Path(name)
    try:
        if update_wheel:
            _update_wheel(folder)
        else:
            _init(folder, force)
    except WheelError as error:
        typer.secho(f"error: cannot pack labelbridge's wheel: {error}", fg="red", err=True)
        raise typer.Exit(2) from None


def _init(folder: Path, force: bool) -> None:
    files = render(folder.resolve().name)
    existing = [f for f in files if (folder / f).exists()]
    if existing and not force:
        typer.secho(
            f"error: {folder} already has {', '.join(existing)} (use --force)", fg="red", err=True
        )
        raise typer.Exit(2)
    folder.mkdir(parents=True, exist_ok=True)
    for target, text in files.items():
        (folder / target).write_text(text, encoding="utf-8")
    wheel = build_wheel(folder / WHEELS)
    typer.echo(f"created {folder}/ ({', '.join(files)}, {WHEELS}/{wheel.name})")
    typer.echo(f"next: labelbridge start {folder} --port 9090")
