"""Write examples/*/Dockerfile and Dockerfile.dockerignore from `labelbridge init`'s template.

    .venv/bin/python scripts/gen_example_dockerfiles.py           # (re)write them
    .venv/bin/python scripts/gen_example_dockerfiles.py --check   # exit 1 with a diff if stale

Every folder of examples/ with a model.py gets src/labelbridge/templates/Dockerfile.tmpl rendered
by `labelbridge.cli.init.render_dockerfile`, with labelbridge installed from this repository (the
build context is its root). What differs between examples is read from the folder: its one
requirements*.txt, and a torch it pins (torch==X), which the Dockerfile installs first from
PyTorch's CPU index. What no file tells is in OPTIONS. tests/test_docker_files.py runs --check.
"""

from __future__ import annotations

import argparse
import difflib
import re
import sys
from pathlib import Path
from typing import Any

from labelbridge.cli.init import DockerOptions, render_dockerfile

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"

#: example folder -> DockerOptions fields that its files do not tell
OPTIONS: dict[str, dict[str, Any]] = {
    "zeroshot": {
        # PyTorch and the embedding model make it start slower than the others
        "start_period": 60,
        "notes": ("The image is large (PyTorch): about 1.5 GB more than the other examples'.",),
    },
}

#: BuildKit reads examples/X/Dockerfile.dockerignore for examples/X/Dockerfile
DOCKERIGNORE = """\
# Used by BuildKit for this Dockerfile (the build context is the repository root).
**/.venv
**/__pycache__
**/*.pyc
.git
**/.mypy_cache
**/.ruff_cache
**/.pytest_cache
examples/*/models
examples/*/logs
tests
bench
"""


def options(folder: Path) -> DockerOptions:
    """The Dockerfile options of one example folder."""
    requirements = sorted(folder.glob("requirements*.txt"))
    if len(requirements) != 1:
        names = ", ".join(p.name for p in requirements) or "none"
        raise SystemExit(f"{folder}: needs exactly one requirements*.txt (found {names})")
    torch = re.search(r"(?m)^torch==([^\s;#]+)", requirements[0].read_text(encoding="utf-8"))
    return DockerOptions(
        labelbridge="checkout",
        folder=folder.relative_to(ROOT).as_posix(),
        requirements=requirements[0].name,
        torch_cpu=torch.group(1) if torch else None,
        **OPTIONS.get(folder.name, {}),
    )


def example_files() -> dict[Path, str]:
    """Every generated file of the examples, by path."""
    folders = sorted(path.parent for path in EXAMPLES.glob("*/model.py"))
    unknown = set(OPTIONS) - {folder.name for folder in folders}
    if unknown:
        raise SystemExit(f"OPTIONS names examples that do not exist: {', '.join(sorted(unknown))}")
    files = {}
    for folder in folders:
        files[folder / "Dockerfile"] = render_dockerfile(folder.name, options(folder))
        files[folder / "Dockerfile.dockerignore"] = DOCKERIGNORE
    return files


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="change nothing; exit 1 if stale")
    args = parser.parse_args(argv)
    stale = []
    for path, text in example_files().items():
        old = path.read_text(encoding="utf-8") if path.exists() else ""
        if old == text:
            continue
        name = path.relative_to(ROOT).as_posix()
        stale.append(name)
        if args.check:
            diff = difflib.unified_diff(
                old.splitlines(keepends=True), text.splitlines(keepends=True), name, "generated"
            )
            sys.stdout.writelines(diff)
        else:
            path.write_text(text, encoding="utf-8")
            print(f"wrote {name}")
    if args.check and stale:
        print(
            f"stale: {', '.join(stale)}; run: .venv/bin/python scripts/gen_example_dockerfiles.py"
        )
        return 1
    if not stale:
        print("the examples' Docker files are up to date")
    return 0


if __name__ == "__main__":
    sys.exit(main())
