"""What importing labelbridge loads: the production supervisor (`labelbridge start --production`)
never serves HTTP and the workers never run the CLI, so each keeps out what it has no use for
(idle RSS, bench/run.py). Each check runs in a fresh interpreter: this one has it all loaded."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

import labelbridge

#: served HTTP, HTTP client, terminal output: none of it in the supervisor
SERVING_ONLY = ("fastapi", "starlette", "httpx", "rich", "labelbridge.server", "labelbridge.client")


def _loaded(code: str) -> set[str]:
    """The top-level packages and labelbridge modules loaded after running `code`."""
    script = (
        f"{code}\nimport json, sys\n"
        "print(json.dumps(sorted({m for m in sys.modules if m.startswith('labelbridge')}"
        " | {m.split('.')[0] for m in sys.modules})))"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=60
    )
    return set(json.loads(done.stdout))


def test_the_supervisor_imports_no_http_stack() -> None:
    # what `labelbridge start` imports before it runs uvicorn's supervisor and the scheduler
    loaded = _loaded(
        "import labelbridge.cli._commands, labelbridge.cli.start, labelbridge.multi\n"
        "import labelbridge.loader, labelbridge.logs, uvicorn.supervisors\n"
        "assert labelbridge.cli.start._http_protocol() != 'auto'  # the check of the protocol"
    )
    assert not loaded & set(SERVING_ONLY)


def test_the_console_script_module_imports_no_cli_framework() -> None:
    # every production worker re-imports the console script (multiprocessing's spawn)
    assert not _loaded("import labelbridge.cli") & {"typer", "click", "rich", "httpx"}


def test_the_package_root_imports_nothing_heavy() -> None:
    assert not _loaded("import labelbridge") & {"pydantic", "httpx", "fastapi"}


@pytest.mark.parametrize("name", labelbridge.__all__)
def test_every_public_name_resolves(name: str) -> None:
    assert getattr(labelbridge, name) is not None
    assert name in dir(labelbridge)


def test_an_unknown_name_is_an_attribute_error() -> None:
    with pytest.raises(AttributeError):
        labelbridge.NoSuchThing  # noqa: B018
    assert not hasattr(labelbridge, "no_such_thing")


def test_star_import_gives_the_public_names() -> None:
    namespace: dict[str, object] = {}
    exec("from labelbridge import *", namespace)
    assert set(labelbridge.__all__) <= set(namespace)


def test_task_filter_is_still_public_in_prelabel() -> None:
    from labelbridge._task_filter import TaskFilter
    from labelbridge.prelabel import TaskFilter as Public

    assert Public is TaskFilter and Public("all") is TaskFilter.all
