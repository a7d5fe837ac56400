"""Finding the model class of a backend: a folder with `model.py`, or `module:Class`.

Job workers (embedded or RQ, on other machines) load the class from the same reference, so a
reference is a plain string that survives being sent through a queue.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import sys
from pathlib import Path
from types import ModuleType

from labelbridge.errors import BadRequest, MissingDependency
from labelbridge.model import Model

__all__ = ["describe_missing_requirements", "load_model_class", "model_ref_for"]

_MODULE_FILES = ("model.py", "_wsgi.py")


def model_ref_for(target: str | Path) -> str:
    """A stable reference for a folder or `module:Class` (folders are made absolute)."""
    text = str(target)
    if ":" in text and not Path(text).exists():
        return text
    return str(Path(text).resolve())


def _import_file(path: Path) -> ModuleType:
    folder = str(path.parent)
    if folder not in sys.path:
        sys.path.insert(0, folder)
    name = f"labelbridge_backend_{abs(hash(str(path)))}"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise BadRequest(f"cannot import {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except ModuleNotFoundError as exc:
        del sys.modules[name]
        raise MissingDependency(
            f"{path} imports {exc.name!r}, which is not installed",
            fix=f"add {exc.name} to {path.parent / 'requirements.txt'} and pip install -r it",
        ) from exc
    except BaseException:
        del sys.modules[name]
        raise
    return module


def _model_classes(module: ModuleType) -> list[type]:
    """Model subclasses (ours, or the public SDK's LabelStudioMLBase) defined in the module."""
    found: list[type] = []
    for _, obj in inspect.getmembers(module, inspect.isclass):
        if obj.__module__ != module.__name__:
            continue
        if (issubclass(obj, Model) and obj is not Model) or any(
            base.__name__ == "LabelStudioMLBase" for base in obj.__mro__[1:]
        ):
            found.append(obj)
    return found


def load_model_class(ref: str | Path, class_name: str | None = None) -> type[Model]:
    """Import the backend's model class; SDK-style classes come back wrapped for our server."""
    text = str(ref)
    if ":" in text and not Path(text).exists():
        module_name, _, attr = text.partition(":")
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            raise MissingDependency(f"cannot import {module_name!r}: {exc}") from exc
        try:
            cls = getattr(module, attr)
        except AttributeError as exc:
            raise BadRequest(f"{module_name} has no class {attr!r}") from exc
        return _as_model(cls)
    path = Path(text)
    if path.is_dir():
        for candidate in _MODULE_FILES:
            if (path / candidate).is_file():
                path = path / candidate
                break
        else:
            raise BadRequest(
                f"{path} has no model.py",
                fix="put your Model subclass in model.py, or run `labelbridge init NAME`",
            )
    if not path.is_file():
        raise BadRequest(f"{path} does not exist", fix="give the backend folder or module:Class")
    module = _import_file(path)
    classes = _model_classes(module)
    if class_name:
        classes = [c for c in classes if c.__name__ == class_name]
    if not classes:
        raise BadRequest(
            f"{path} defines no Model subclass" + (f" named {class_name}" if class_name else ""),
            fix="subclass labelbridge.Model (or label_studio_ml's LabelStudioMLBase)",
        )
    if len(classes) > 1:
        names = ", ".join(sorted(c.__name__ for c in classes))
        raise BadRequest(
            f"{path} defines several model classes ({names})",
            fix="choose one with MODEL_CLASS or --model-class",
        )
    return _as_model(classes[0])


def check_model_class(ref: str | Path, class_name: str | None = None) -> None:
    """load_model_class in a short-lived child process: the same errors, without the model's
    imports (torch and the like: hundreds of MB) staying in the caller for its whole life.
    The production supervisor checks this way; it never serves a request itself."""
    import json
    import subprocess

    argv = [
        sys.executable,
        "-m",
        "labelbridge.loader",
        str(ref),
        *([class_name] if class_name else []),
    ]
    done = subprocess.run(argv, capture_output=True, text=True, stdin=subprocess.DEVNULL)
    if done.returncode == 0:
        return
    try:
        error = json.loads(done.stdout)
    except ValueError:
        # not one of ours (model.py raised at import): its traceback's last lines say why
        tail = "\n".join(done.stderr.strip().splitlines()[-5:])
        raise BadRequest(f"importing {ref} failed:\n{tail}") from None
    raise (MissingDependency if error["error"] == "MissingDependency" else BadRequest)(
        error["detail"], fix=error.get("fix")
    )


def _as_model(cls: type) -> type[Model]:
    if isinstance(cls, type) and issubclass(cls, Model):
        _check_class_settings(cls)
        return cls
    if any(base.__name__ == "LabelStudioMLBase" for base in cls.__mro__):
        from labelbridge.compat import wrap_sdk_model

        return wrap_sdk_model(cls)
    raise BadRequest(f"{cls!r} is not a labelbridge Model")


def _check_class_settings(cls: type[Model]) -> None:
    """Class attributes the server reads later (a training job, /health): wrong ones fail at
    start-up with the attribute named, not inside the first training job."""
    needed = cls.min_annotations
    if needed is not None and (
        not isinstance(needed, int) or isinstance(needed, bool) or needed < 0
    ):
        raise BadRequest(
            f"{cls.__name__}.min_annotations must be a whole number >= 0 or None, got {needed!r}",
            field="min_annotations",
            fix="set min_annotations = 10 (say) on the class, or leave it out to use "
            "MIN_ANNOTATIONS_TO_TRAIN",
        )


def describe_missing_requirements(backend_dir: Path) -> list[str]:
    """Names from the folder's requirements.txt that are not installed (for the doctor)."""
    from importlib import metadata

    requirements = backend_dir / "requirements.txt"
    if not requirements.is_file():
        return []
    missing = []
    for raw in requirements.read_text(encoding="utf-8").splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line or line.startswith(("-", "git+", "http")):
            continue
        name = line
        for sep in ("[", "=", "<", ">", "!", "~", ";", " "):
            name = name.split(sep, 1)[0]
        try:
            metadata.version(name)
        except metadata.PackageNotFoundError:
            missing.append(name)
    return missing


if __name__ == "__main__":  # check_model_class's child: exit 0, or 2 with the error as JSON
    import json

    from labelbridge.errors import LabelBridgeError

    try:
        load_model_class(sys.argv[1], sys.argv[2] if len(sys.argv) > 2 else None)
    except LabelBridgeError as exc:
        print(json.dumps(exc.to_dict()))
        sys.exit(2)
