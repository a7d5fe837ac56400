"""Hostile input against a real server process with the default limits.

Each request must be refused with a clear 4xx (our error JSON naming what is wrong) within a
bounded time, without the server's memory running away (RSS and peak RSS read from /proc),
and the server must go on serving: after every case, /health and a normal /predict answer.
The figures of each case are printed (`pytest -s`) for docs/reliability.md.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from time import perf_counter
from typing import Any

import httpx
import pytest
from reliability_harness import CONFIG, Backend, Server, running

MB = 1 << 20
#: the defaults of MAX_BODY_BYTES, MAX_LABEL_CONFIG_BYTES, MAX_TASKS_PER_REQUEST
MAX_BODY = 100 * MB
MAX_TASKS = 50_000

BOMB = (
    '<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol">'
    + "".join(
        f'<!ENTITY lol{i} "{("&lol" + str(i - 1) + ";") * 10 if i > 1 else "&lol;" * 10}">'
        for i in range(1, 10)
    )
    + ']><View><Text name="t" value="$t"/><Choices name="c" toName="t">'
    '<Choice value="&lol9;"/></Choices></View>'
)
XXE = (
    '<?xml version="1.0"?><!DOCTYPE View [<!ENTITY e SYSTEM "file:///etc/passwd">]>'
    '<View><Text name="t" value="$t"/><Choices name="c" toName="t"><Choice value="&e;"/>'
    "</Choices></View>"
)
EXTERNAL_DTD = (
    '<?xml version="1.0"?><!DOCTYPE View SYSTEM "http://127.0.0.1:9/evil.dtd">'
    '<View><Text name="t" value="$t"/></View>'
)
HUGE_ATTRIBUTE = '<View><Text name="t" value="$t" title="' + "A" * (10 * MB) + '"/></View>'
DEEP = "<View>" * 50_000 + '<Text name="t" value="$t"/>' + "</View>" * 50_000


def _setup(schema: str) -> bytes:
    return json.dumps({"project": "2.1700000000", "schema": schema}).encode()


def _predict_with_score(literal: bytes) -> bytes:
    return (
        b'{"project": "1", "tasks": [{"id": 1, "data": {"text": "x"}, '
        b'"predictions": [{"result": [], "score": ' + literal + b"}]}]}"
    )


def _train_with_score(literal: bytes) -> bytes:
    return (
        b'{"project": "1", "annotations": [{"id": 1, "data": {"text": "x"}, '
        b'"annotations": [{"result": [], "score": ' + literal + b"}]}]}"
    )


def _many_tasks(count: int) -> bytes:
    tasks = b",".join(b'{"data": {"text": "x"}}' for _ in range(count))
    return b'{"project": "1", "tasks": [' + tasks + b"]}"


def _streamed(total: int, chunk: int = MB) -> Iterator[bytes]:
    block = b" " * chunk
    for _ in range(total // chunk):
        yield block


@dataclass
class Case:
    name: str
    path: str
    body: Any
    status: int
    error: str
    needle: str = ""  # a word the detail must contain
    seconds: float = 5.0
    headers: dict[str, str] | None = None


CASES = [
    Case("entity bomb (billion laughs)", "/setup", _setup(BOMB), 422, "InvalidLabelConfig", "DTD"),
    Case("external entity (XXE)", "/setup", _setup(XXE), 422, "InvalidLabelConfig", "DTD"),
    Case(
        "XXE in /predict label_config",
        "/predict",
        json.dumps({"label_config": XXE, "tasks": [{"data": {"t": "x"}}]}).encode(),
        422,
        "InvalidLabelConfig",
        "DTD",
    ),
    Case(
        "external DTD",
        "/validate",
        json.dumps({"config": EXTERNAL_DTD}).encode(),
        422,
        "InvalidLabelConfig",
        "DTD",
    ),
    Case("10 MB attribute", "/setup", _setup(HUGE_ATTRIBUTE), 413, "PayloadTooLarge", "schema"),
    Case("50k nested tags", "/setup", _setup(DEEP), 422, "InvalidLabelConfig", "deep"),
    Case(
        "100k nested JSON arrays",
        "/predict",
        b'{"tasks": [{"data": {"t": ' + b"[" * 100_000 + b"]" * 100_000 + b"}}]}",
        400,
        "BadRequest",
        "JSON",
    ),
    Case("100k tasks", "/predict", _many_tasks(100_000), 413, "PayloadTooLarge", "tasks"),
    Case(
        "non-UTF-8 body",
        "/predict",
        '{"project": "1", "tasks": [{"data": {"text": "caf\u00e9"}}]}'.encode("latin-1"),
        400,
        "BadRequest",
        "UTF-8",
    ),
    Case(
        "lone surrogate escape",
        "/setup",
        b'{"project": "2", "schema": "<View><Text name=\\"\\ud800\\" value=\\"$t\\"/></View>"}',
        400,
        "BadRequest",
        "surrogate",
    ),
    Case("score NaN", "/predict", _predict_with_score(b"NaN"), 400, "BadRequest", "JSON"),
    Case("score Infinity", "/predict", _predict_with_score(b"Infinity"), 400, "BadRequest", "JSON"),
    Case("score -Infinity", "/train", _train_with_score(b"-Infinity"), 400, "BadRequest", "JSON"),
    Case("score 1e309", "/train", _train_with_score(b"1e309"), 400, "BadRequest", "JSON"),
    Case(
        "5000-digit number", "/predict", _predict_with_score(b"9" * 5000), 400, "BadRequest", "JSON"
    ),
    Case(
        "non-ASCII project id",
        "/setup",
        json.dumps({"project": "проект", "schema": CONFIG}).encode(),
        400,
        "BadRequest",
        "project",
    ),
    Case(
        "200 MB body, Content-Length",
        "/predict",
        lambda: _streamed(200 * MB),
        413,
        "PayloadTooLarge",
        "104857600",
        seconds=15.0,
        headers={"content-length": str(200 * MB)},
    ),
    Case(
        "200 MB body, chunked",
        "/predict",
        lambda: _streamed(200 * MB),
        413,
        "PayloadTooLarge",
        "104857600",
        seconds=15.0,
    ),
    # the routes FastAPI serves behind the gate: one 413, never a 500 before it
    Case(
        "/setup: 200 MB body, chunked",
        "/setup",
        lambda: _streamed(200 * MB),
        413,
        "PayloadTooLarge",
        "104857600",
        seconds=15.0,
    ),
    Case(
        "/webhook: 200 MB body, chunked",
        "/webhook",
        lambda: _streamed(200 * MB),
        413,
        "PayloadTooLarge",
        "104857600",
        seconds=15.0,
    ),
]


def _peak_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmHWM")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    root = tmp_path_factory.mktemp("hostile")
    with running(Server(root, Backend(root))) as server:
        server.setup_project("1")
        yield server


def _still_serving(client: httpx.Client) -> None:
    assert client.get("/health").json()["status"] == "UP"
    answer = client.post("/predict", json={"project": "1", "tasks": [{"data": {"text": "ok"}}]})
    assert answer.status_code == 200, answer.text
    assert answer.json()["results"][0]["result"][0]["value"]["choices"]


def test_hostile_input_is_refused_quickly_and_the_server_keeps_serving(server: Server) -> None:
    figures: list[str] = []
    with server.client(timeout=60) as client:
        for _ in range(20):  # warm up: imports, caches, the allocator's first arenas
            _still_serving(client)
        baseline = server.rss_mb()
        for case in CASES:
            peak_before = _peak_mb(server.pid)
            body = case.body() if callable(case.body) else case.body
            began = perf_counter()
            answer = client.post(
                case.path,
                content=body,
                headers={"content-type": "application/json", **(case.headers or {})},
            )
            elapsed = perf_counter() - began
            assert answer.status_code == case.status, (case.name, answer.status_code, answer.text)
            error = answer.json()
            assert error["error"] == case.error, (case.name, error)
            assert case.needle.lower() in error["detail"].lower(), (case.name, error)
            assert "root:" not in answer.text  # no file content leaks into an answer
            assert elapsed < case.seconds, f"{case.name}: {elapsed:.2f} s"
            rss = server.rss_mb()
            peak = _peak_mb(server.pid) - peak_before
            figures.append(
                f"{case.name:32} {answer.status_code} {error['error']:19} {elapsed * 1000:7.0f} ms"
                f"  RSS {rss:6.1f} MB  peak +{peak:5.1f} MB"
            )
            _still_serving(client)
        grown = server.rss_mb() - baseline
    print(f"\nbaseline RSS {baseline:.1f} MB, after all cases +{grown:.1f} MB")
    print("\n".join(figures))
    # the largest thing held at once is one body at the limit (the chunked 200 MB case)
    assert _peak_mb(server.pid) < baseline + 2 * MAX_BODY / MB + 100
    assert grown < 100, f"RSS grew by {grown:.1f} MB over the hostile cases"


def test_unicode_names_work_end_to_end(server: Server) -> None:
    """Unicode is not hostile: control names, labels and data keys round-trip intact."""
    config = (
        '<View><Text name="текст😀" value="$текст"/><Choices name="選択" toName="текст😀">'
        '<Choice value="Да ✓"/></Choices></View>'
    )
    with server.client() as client:
        setup = client.post("/setup", json={"project": "3.1700000000", "schema": config})
        assert setup.status_code == 200, setup.text
        answer = client.post(
            "/predict", json={"project": "3", "tasks": [{"data": {"текст": "😀"}}]}
        )
        assert answer.status_code == 200, answer.text
        item = answer.json()["results"][0]["result"][0]
        assert (item["from_name"], item["to_name"], item["value"]["choices"]) == (
            "選択",
            "текст😀",
            ["Да ✓"],
        )


def test_limits_are_settings(tmp_path: Path) -> None:
    """The same refusals at lowered limits: MAX_BODY_BYTES, MAX_LABEL_CONFIG_BYTES, MAX_TASKS."""
    env = {
        "MAX_BODY_BYTES": "65536",
        "MAX_LABEL_CONFIG_BYTES": "2048",
        "MAX_TASKS_PER_REQUEST": "10",
    }
    with running(Server(tmp_path, Backend(tmp_path), env=env)) as server, server.client() as client:
        server.setup_project("1")
        big = client.post(
            "/predict", content=_many_tasks(5000), headers={"content-type": "application/json"}
        )
        assert big.status_code == 413 and "65536" in big.json()["detail"]
        many = client.post(
            "/predict", content=_many_tasks(11), headers={"content-type": "application/json"}
        )
        assert many.status_code == 413 and many.json()["field"] == "tasks"
        config = CONFIG.replace("<View>", "<View>" + "<View></View>" * 200)
        long = client.post("/setup", json={"project": "2", "schema": config})
        assert long.status_code == 413 and "2048" in long.json()["detail"]
        assert client.get("/health").status_code == 200
