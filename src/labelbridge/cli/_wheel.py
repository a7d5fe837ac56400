"""A wheel of the labelbridge that runs this code, for `labelbridge init` to put beside a backend.

labelbridge is not on PyPI, so the Dockerfile that `init` writes installs it from this wheel: the
image gets the very version the backend was made with, and `docker build` needs no index for
labelbridge itself (its dependencies still come from PyPI).

The wheel is packed from what is installed, with no build tools and no network: the package's
folder (a regular or an editable install alike), restricted to what a build ships (see
`_shipped`), and its installed metadata (METADATA, entry points, licence files). labelbridge is
pure Python, so the tag is py3-none-any. The bytes depend only on the files' contents: zip
entries carry a fixed timestamp and are sorted, so writing the wheel again leaves Docker's layer
cache valid.

Code and metadata come from two places (`labelbridge.__file__`, `importlib.metadata`), so before
packing, `source` checks they are one installation and one version (see `WheelError`).
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import zipfile
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path, PurePosixPath

DIST = "labelbridge"
#: the zip format's earliest date: no build time in the bytes
EPOCH = (1980, 1, 1, 0, 0, 0)
#: installed-metadata files that describe the installation, not the package
INSTALL_ONLY = {"RECORD", "INSTALLER", "REQUESTED", "WHEEL", "direct_url.json"}
#: what a build ships besides the *.py files: pyproject.toml's [tool.setuptools.package-data]
PACKAGE_DATA = ("py.typed", "templates/*.tmpl", "static/*")
#: editors' and patch tools' leftovers, never shipped even where PACKAGE_DATA's globs match them
LEFTOVERS = ("*~", "*.orig", "*.rej", "*.bak", "*.swp", "*.swo", "#*#")
#: how to make code and metadata one installation again
FIX = (
    "reinstall labelbridge from the code you run (scripts/bootstrap.sh, or `pip install -e .` "
    "in its checkout), or run the labelbridge that is installed (no PYTHONPATH pointing elsewhere)"
)


class WheelError(RuntimeError):
    """labelbridge's wheel cannot be packed from this installation (the message says why)."""


@dataclass(frozen=True)
class Source:
    """What the wheel is packed from: the imported package and its installed metadata."""

    package: Path
    dist: metadata.Distribution
    version: str


def _distribution() -> metadata.Distribution:
    try:
        return metadata.distribution(DIST)
    except metadata.PackageNotFoundError:
        raise WheelError(f"labelbridge has no installed metadata: {FIX}") from None


def _dist_info(dist: metadata.Distribution) -> str:
    """Where `dist`'s metadata lives, for messages."""
    path = getattr(dist, "_path", None)
    return str(path) if path is not None else str(dist.locate_file(""))


def _locations(dist: metadata.Distribution) -> list[Path]:
    """The package folders `dist` installed: its RECORD's labelbridge/__init__.py, or, for an
    editable install, the folder its .pth file (or setuptools' editable finder) points at."""
    found: list[Path] = []
    init = dist.locate_file(f"{DIST}/__init__.py")
    if Path(str(init)).is_file():
        found.append(Path(str(init)).resolve().parent)
    for file in dist.files or ():
        path = Path(str(file.locate()))
        if file.parts == (DIST, "__init__.py"):
            found.append(path.resolve().parent)
        elif file.suffix == ".pth" and path.is_file():
            for line in path.read_text(encoding="utf-8").splitlines():
                line = line.strip()
                if line and not line.startswith(("#", "import ", "import\t")):
                    found.append((path.parent / line / DIST).resolve())
        elif file.name.startswith("__editable__") and file.suffix == ".py" and path.is_file():
            mapping = re.search(
                rf"""['"]{DIST}['"]\s*:\s*['"]([^'"]+)['"]""",
                path.read_text(encoding="utf-8"),
            )
            if mapping:
                found.append(Path(mapping.group(1)).resolve())
    if not found:
        # an editable install that names only its project folder
        direct_url = dist.read_text("direct_url.json")
        info = json.loads(direct_url) if direct_url else {}
        url = info.get("url", "")
        if info.get("dir_info", {}).get("editable") and url.startswith("file://"):
            project = Path(url[len("file://") :]).resolve()
            found += [project / DIST, project / "src" / DIST]
    return list(dict.fromkeys(found))


def source() -> Source:
    """The imported labelbridge and its installed metadata, checked to be one installation of
    one version; `WheelError` if they are not (e.g. PYTHONPATH=src over an older install)."""
    import labelbridge

    package = Path(labelbridge.__file__).resolve().parent
    dist = _distribution()
    locations = _locations(dist)
    if package not in locations:
        where = ", ".join(map(str, locations)) or "no package folder"
        raise WheelError(
            f"labelbridge is imported from {package}, but its installed metadata "
            f"({_dist_info(dist)}) belongs to {where}: the wheel would pair this code with "
            f"another installation's dependencies and version. Fix: {FIX}"
        )
    version = dist.version
    if labelbridge.__version__ != version:
        raise WheelError(
            f"labelbridge's code says version {labelbridge.__version__} "
            f"({package / '__init__.py'}) but its installed metadata says {version} "
            f"({_dist_info(dist)}). Fix: make __version__ and pyproject.toml's version agree, "
            f"then {FIX}"
        )
    return Source(package, dist, version)


def wheel_name(version: str | None = None) -> str:
    """The file name of the wheel `build_wheel` writes, e.g. labelbridge-0.1.0-py3-none-any.whl."""
    version = (version or source().version).replace("-", "_")
    return f"{DIST}-{version}-py3-none-any.whl"


def _shipped(relative: PurePosixPath) -> bool:
    """Whether a build ships the file at `relative` (inside the package folder): *.py anywhere
    (every folder is a package: setuptools' find is namespace-aware) and PACKAGE_DATA."""
    if any(part == "__pycache__" or part.startswith(".") for part in relative.parts):
        return False
    if any(relative.match(pattern) for pattern in LEFTOVERS):
        return False
    if relative.suffix == ".py":
        return True
    # a glob of package-data matches within its folder only: static/* is not static/a/b
    return any(
        len(relative.parts) == len(PurePosixPath(pattern).parts) and relative.match(pattern)
        for pattern in PACKAGE_DATA
    )


def _package_files(package: Path) -> list[tuple[str, Path]]:
    """The files of the package folder `package` that a build ships, by name in the wheel."""
    files = []
    for path in sorted(package.rglob("*")):
        relative = PurePosixPath(path.relative_to(package).as_posix())
        if path.is_file() and _shipped(relative):
            files.append((f"{package.name}/{relative}", path))
    if not any(name.endswith("templates/Dockerfile.tmpl") for name, _ in files):
        raise WheelError(f"{package} is not a complete labelbridge package (no templates)")
    return files


def _metadata_files(dist: metadata.Distribution, dist_info: str) -> dict[str, bytes]:
    out: dict[str, bytes] = {}
    for file in dist.files or ():
        parts = file.parts
        if len(parts) < 2 or not parts[0].endswith((".dist-info", ".egg-info")):
            continue
        inner = "/".join(parts[1:])
        if inner in INSTALL_ONLY:
            continue
        name = "METADATA" if inner == "PKG-INFO" else inner
        out[f"{dist_info}/{name}"] = Path(str(file.locate())).read_bytes()
    # no file list (e.g. an egg-info install): the two files that matter, read by name
    if f"{dist_info}/METADATA" not in out:
        text = dist.read_text("METADATA") or dist.read_text("PKG-INFO")
        if not text:
            raise WheelError(f"labelbridge's installed metadata has no METADATA: {FIX}")
        out[f"{dist_info}/METADATA"] = text.encode("utf-8")
    entry_points = dist.read_text("entry_points.txt")
    if f"{dist_info}/entry_points.txt" not in out and entry_points:
        out[f"{dist_info}/entry_points.txt"] = entry_points.encode("utf-8")
    out[f"{dist_info}/WHEEL"] = (
        b"Wheel-Version: 1.0\nGenerator: labelbridge init\nRoot-Is-Purelib: true\n"
        b"Tag: py3-none-any\n"
    )
    return out


def _record_line(name: str, data: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"{name},sha256={digest},{len(data)}"


def build_wheel(folder: Path) -> Path:
    """Write labelbridge's wheel into `folder` (made if missing); return its path.
    `WheelError` if the imported code and the installed metadata disagree (see `source`)."""
    origin = source()
    name = wheel_name(origin.version)
    dist_info = name.split("-py3-")[0] + ".dist-info"
    entries = [(arcname, path.read_bytes()) for arcname, path in _package_files(origin.package)]
    entries += sorted(_metadata_files(origin.dist, dist_info).items())
    record = [_record_line(arcname, data) for arcname, data in entries]
    record.append(f"{dist_info}/RECORD,,")
    entries.append((f"{dist_info}/RECORD", ("\n".join(record) + "\n").encode("utf-8")))
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / name
    partial = target.with_name(f".{name}.partial")
    with zipfile.ZipFile(partial, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for arcname, data in entries:
            info = zipfile.ZipInfo(arcname, date_time=EPOCH)
            info.external_attr = 0o644 << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            archive.writestr(info, data)
    partial.replace(target)
    return target
