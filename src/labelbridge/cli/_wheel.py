"""A wheel of the labelbridge that runs this code, for `labelbridge init` to put beside a backend.

labelbridge is not on PyPI, so the Dockerfile that `init` writes installs it from this wheel: the
image gets the very version the backend was made with, and `docker build` needs no index for
labelbridge itself (its dependencies still come from PyPI).

The wheel is packed from what is installed, with no build tools and no network: the package's
folder (a regular or an editable install alike; caches left out) and its installed metadata
(METADATA, entry points, licence files). labelbridge is pure Python, so the tag is py3-none-any.
The bytes depend only on the files' contents: zip entries carry a fixed timestamp and are
sorted, so writing the wheel again leaves Docker's layer cache valid.
"""

from __future__ import annotations

import base64
import hashlib
import zipfile
from importlib import metadata
from pathlib import Path

DIST = "labelbridge"
#: the zip format's earliest date: no build time in the bytes
EPOCH = (1980, 1, 1, 0, 0, 0)
#: installed-metadata files that describe the installation, not the package
INSTALL_ONLY = {"RECORD", "INSTALLER", "REQUESTED", "WHEEL", "direct_url.json"}


def wheel_name() -> str:
    """The file name of the wheel `build_wheel` writes, e.g. labelbridge-0.1.0-py3-none-any.whl."""
    version = metadata.version(DIST).replace("-", "_")
    return f"{DIST}-{version}-py3-none-any.whl"


def _package_files() -> list[tuple[str, Path]]:
    import labelbridge

    package = Path(labelbridge.__file__).resolve().parent
    files = []
    for path in sorted(package.rglob("*")):
        relative = path.relative_to(package.parent)
        if not path.is_file() or path.suffix in (".pyc", ".pyo"):
            continue
        if any(part == "__pycache__" or part.startswith(".") for part in relative.parts):
            continue
        files.append((relative.as_posix(), path))
    if not any(name.endswith("templates/Dockerfile.tmpl") for name, _ in files):
        raise RuntimeError(f"{package} is not a complete labelbridge package (no templates)")
    return files


def _metadata_files(dist_info: str) -> dict[str, bytes]:
    dist = metadata.distribution(DIST)
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
            raise RuntimeError("labelbridge's installed metadata has no METADATA")
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
    """Write labelbridge's wheel into `folder` (made if missing); return its path."""
    name = wheel_name()
    dist_info = name.split("-py3-")[0] + ".dist-info"
    entries = [(arcname, path.read_bytes()) for arcname, path in _package_files()]
    entries += sorted(_metadata_files(dist_info).items())
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
