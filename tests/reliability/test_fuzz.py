"""Fuzzing the API from its own OpenAPI schema (schemathesis) against a real server process.

Every operation the server publishes at /openapi.json gets generated requests, valid and
invalid per the schema, with and without credentials (basic auth configured). The model never
raises, so any 5xx is the server's own fault. Each answer must match the schema (status code,
content type, body), and every error must be JSON `{"error", "detail", ...}`.

Examples per operation: LABELBRIDGE_FUZZ_EXAMPLES (default 120). In CI (CI set) the generation
is derandomized, so a run is reproducible; locally each run explores new inputs.

Why not schemathesis' pytest plugin: its lazy fixture loader fails on pytest 9 (it reads a
removed `Function._nodeid`); driving Hypothesis with `operation.as_strategy()` is the
documented alternative, and lets one test report every operation's failures at once.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

pytest.importorskip("schemathesis")

import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from reliability_harness import PASSWORD, USER, Backend, Server, basic_header, running
from schemathesis import GenerationMode
from schemathesis import checks as st_checks

EXAMPLES = int(os.environ.get("LABELBRIDGE_FUZZ_EXAMPLES", "120"))
DERANDOMIZE = bool(os.environ.get("CI"))
#: answer without credentials (health by design; webhook as a hint, see the protocol notes)
OPEN_OPERATIONS = {"GET /health", "POST /webhook"}
#: must be in the schema: a route that disappears from it would silently escape the fuzzer
CORE_OPERATIONS = {
    "GET /health",
    "POST /setup",
    "POST /predict",
    "POST /webhook",
    "POST /train",
    "GET /versions",
    "POST /job_status",
    "POST /duplicate_model",
    "POST /delete",
    "POST /validate",
    "GET /metrics",
}

Check = Callable[..., Any]
_STATS: dict[str, int] = {}


@pytest.fixture(scope="module")
def fuzz_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    root = tmp_path_factory.mktemp("fuzz")
    env = {
        "BASIC_AUTH_USER": USER,
        "BASIC_AUTH_PASS": PASSWORD,
        "JOB_TIMEOUT": "10",
        "TRAIN_ON_ANNOTATIONS": "every",
        "MAX_BODY_BYTES": str(1 << 20),
    }
    with running(Server(root, Backend(root), env=env)) as server:
        server.setup_project("1")  # so that generated ids sometimes hit a known project
        yield server


@pytest.fixture(scope="module")
def api_schema(fuzz_server: Server) -> Any:
    return schemathesis.openapi.from_url(f"{fuzz_server.url}/openapi.json", headers=basic_header())


def _error_body_is_ours(ctx: Any, response: Any, case: Any) -> bool | None:
    """Every 4xx/5xx is JSON with string `error` and `detail` (what Label Studio users read)."""
    if response.status_code < 400:
        return None
    assert response.headers.get("content-type", [""])[0].startswith("application/json"), (
        f"error answer is not JSON: {response.headers.get('content-type')}"
    )
    body = json.loads(response.content)
    assert isinstance(body, dict), f"error answer is not an object: {body!r}"
    assert isinstance(body.get("error"), str) and body["error"], f"no 'error' in {body!r}"
    assert isinstance(body.get("detail"), str), f"no 'detail' in {body!r}"
    return True


CHECKS: list[Check] = [
    st_checks.not_a_server_error,
    st_checks.status_code_conformance,
    st_checks.content_type_conformance,
    st_checks.response_schema_conformance,
    st_checks.response_headers_conformance,
    _error_body_is_ours,
]


def _fuzz_operation(
    operation: Any,
    mode: GenerationMode,
    base_url: str,
    headers: dict[str, str] | None,
    examples: int,
) -> BaseException | None:
    """Run one operation's generated cases; return the failure (shrunk by Hypothesis) or None."""
    label = operation.label
    checks = CHECKS + (
        [st_checks.negative_data_rejection] if mode is GenerationMode.NEGATIVE else []
    )

    @settings(
        max_examples=examples,
        derandomize=DERANDOMIZE,
        deadline=None,
        database=None,
        phases=[Phase.explicit, Phase.generate, Phase.target, Phase.shrink],
        suppress_health_check=list(HealthCheck),
        print_blob=True,
    )
    @given(case=operation.as_strategy(generation_mode=mode))
    def run(case: Any) -> None:
        _STATS[label] = _STATS.get(label, 0) + 1
        if headers is None:
            case.headers = {
                k: v for k, v in (case.headers or {}).items() if k.lower() != "authorization"
            }
        response = case.call(base_url=base_url, headers=headers, timeout=30)
        if headers is None and label not in OPEN_OPERATIONS:
            assert response.status_code == 401, (
                f"{label} answered {response.status_code} without credentials"
            )
        case.validate_response(response, checks=checks)

    try:
        run()
    except (KeyboardInterrupt, SystemExit):
        raise
    except BaseException as exc:  # schemathesis' FailureGroup is a BaseExceptionGroup
        return exc
    return None


def _has_input(operation: Any) -> bool:
    definition = operation.definition.raw
    return bool(definition.get("parameters") or definition.get("requestBody"))


@pytest.mark.parametrize("credentials", [True, False], ids=["with-credentials", "without"])
def test_fuzz_every_operation(api_schema: Any, fuzz_server: Server, credentials: bool) -> None:
    headers = basic_header() if credentials else None
    # without credentials every answer but two is the same 401: fewer cases say as much
    examples = EXAMPLES if credentials else max(EXAMPLES // 3, 10)
    operations = [result.ok() for result in api_schema.get_all_operations()]
    labels = {op.label for op in operations}
    assert labels >= CORE_OPERATIONS, f"missing from /openapi.json: {CORE_OPERATIONS - labels}"
    before = sum(_STATS.values())
    began = time.perf_counter()
    failures: dict[str, BaseException] = {}
    for operation in operations:
        modes = [GenerationMode.POSITIVE]
        if credentials and _has_input(operation):
            modes.append(GenerationMode.NEGATIVE)
        for mode in modes:
            failure = _fuzz_operation(operation, mode, fuzz_server.url, headers, examples)
            if failure is not None:
                failures[f"{operation.label} [{mode.value}]"] = failure
    cases = sum(_STATS.values()) - before
    print(
        f"\nfuzz {'with' if credentials else 'without'} credentials: {cases} cases over "
        f"{len(operations)} operations in {time.perf_counter() - began:.1f} s"
    )
    report = "\n\n".join(f"=== {name}\n{exc}" for name, exc in failures.items())
    assert not failures, f"{len(failures)} operation(s) failed:\n{report[:20000]}"
    assert httpx.get(f"{fuzz_server.url}/health", timeout=5).status_code == 200


def test_undeclared_methods_get_a_json_405_with_allow(fuzz_server: Server) -> None:
    """What schemathesis' unsupported_method check asks: 405, an Allow header, our JSON."""
    with fuzz_server.client() as client:
        for method, path in [("DELETE", "/health"), ("GET", "/predict"), ("PUT", "/setup")]:
            answer = client.request(method, path)
            assert answer.status_code == 405, (method, path, answer.status_code)
            assert answer.json()["error"] == "MethodNotAllowed"
            assert answer.headers.get("allow"), f"{method} {path}: no Allow header"
