"""Auth with credentials configured: what answers without them, what leaks, how they compare.

Review note on `Gate._authorized` (server.py): basic credentials are base64-decoded and the
whole `user:password` is compared with `hmac.compare_digest` against the configured pair (the
user is not compared first, so a right user with a wrong password takes the same path); the
bearer token is compared with `hmac.compare_digest` too. compare_digest takes time that depends
on the length of the inputs, never on where they differ; only the length of the secret can be
learnt by timing (an accepted, documented property of compare_digest). The timing test below
checks this behaviour, with a deliberately leaky comparison as a control so that it can fail.
"""

from __future__ import annotations

import base64
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from reliability_harness import (
    CONFIG,
    PASSWORD,
    TOKEN,
    USER,
    Backend,
    Server,
    annotated_tasks,
    basic_header,
    running,
    wait_until,
)

from labelbridge import __version__
from labelbridge._gate import Gate
from labelbridge.multi import build_multi_app
from labelbridge.server import create_app
from labelbridge.service import Backend as Service
from labelbridge.settings import Settings
from support import serve

LS_KEY = "ls-api-key-0123456789abcdef"
ACCESS_TOKEN = "setup-access-token-fedcba9876543210"
PREDICT_PASSWORD = "predict-param-password-777"
#: routes kept out of the OpenAPI schema, which must be closed too
HIDDEN = [("GET", "/status"), ("GET", "/openapi.json"), ("GET", "/docs"), ("GET", "/nope")]
OPEN = {("GET", "/"), ("GET", "/health")}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    root = tmp_path_factory.mktemp("auth")
    env = {
        "BASIC_AUTH_USER": USER,
        "BASIC_AUTH_PASS": PASSWORD,
        "API_TOKEN": TOKEN,
        "LABEL_STUDIO_API_KEY": LS_KEY,
        "DEBUG": "true",
    }
    with running(Server(root, Backend(root), env=env)) as server:
        server.setup_project("1")
        yield server


def _routes(server: Server) -> list[tuple[str, str]]:
    with server.client() as client:
        schema = client.get("/openapi.json").json()
    found = [(m.upper(), p) for p, ops in schema["paths"].items() for m in ops]
    assert len(found) >= 11, found
    return found + HIDDEN


def test_no_route_but_health_answers_without_credentials(server: Server) -> None:
    anonymous = httpx.Client(base_url=server.url, timeout=10)
    wrong = {"Authorization": "Basic " + base64.b64encode(f"{USER}:nope".encode()).decode()}
    with anonymous:
        for method, path in _routes(server):
            if (method, path) in OPEN:
                continue
            for headers in ({}, wrong, {"Authorization": "Bearer nope"}):
                answer = anonymous.request(method, path, headers=headers, json={})
                if path == "/webhook":
                    # Label Studio sends webhooks without credentials: a hint, nothing more
                    assert answer.status_code in (200, 400, 422), answer.text
                    continue
                assert answer.status_code == 401, (method, path, headers, answer.status_code)
                assert answer.json()["error"] == "AuthenticationRequired"
                assert answer.headers["www-authenticate"].startswith("Basic")
        for method, path in OPEN:
            assert anonymous.request(method, path).status_code == 200


def test_an_anonymous_webhook_never_trains_an_unknown_project(server: Server) -> None:
    with httpx.Client(base_url=server.url, timeout=10) as anonymous:
        for project in ("777", "778"):
            answer = anonymous.post(
                "/webhook", json={"action": "START_TRAINING", "project": project}
            )
            assert answer.json() == {
                "status": "ignored",
                "detail": f"START_TRAINING: unknown project {project}",
            }


def test_health_reveals_nothing_to_anonymous_callers(tmp_path: Path) -> None:
    """Even when something is wrong (model setup fails naming a file, Redis unreachable),
    anonymous health says only states: no paths, hosts, versions or secret settings. The
    annotations training needs is there for everyone: a public number the doctor compares."""
    backend = Backend(tmp_path)
    (backend.dir / "model.py").write_text(
        "from labelbridge import Model\n"
        "class Broken(Model):\n"
        "    def setup(self):\n"
        "        raise FileNotFoundError('/srv/secret/weights/model.pt is missing')\n"
        "    def predict(self, tasks, context):\n"
        "        return [None for _ in tasks]\n"
    )
    env = {
        "BASIC_AUTH_USER": USER,
        "BASIC_AUTH_PASS": PASSWORD,
        "JOB_QUEUE": "rq",
        "REDIS_URL": "redis://:redispass@127.0.0.1:1/0",
    }
    server = Server(tmp_path, backend, env=env)
    try:
        server.start(until="failed")  # its setup() raises
        anonymous = httpx.get(f"{server.url}/health", timeout=5)
        assert anonymous.status_code == 200
        body = anonymous.json()
        assert body == {
            "status": "UP",
            "model_class": "Broken",
            "model_state": "failed",
            "queue": "degraded",
            "min_annotations": 1,
            "v2": True,
        }
        text = anonymous.text
        for needle in ("/", "redis", "127.0.0.1", __version__, str(tmp_path), USER, PASSWORD):
            assert needle not in text, needle
        # with credentials, the details are there for whoever runs the backend
        detailed = httpx.get(f"{server.url}/health", headers=basic_header(), timeout=5).json()
        assert "/srv/secret/weights/model.pt" in detailed["model_error"]
        assert "redispass" not in detailed["queue_error"]
    finally:
        server.stop()


def test_the_multi_backend_health_reveals_nothing_to_anonymous_callers(tmp_path: Path) -> None:
    """The root /health of several backends nests each one's health: reduced the same way."""
    folder = tmp_path / "broken"
    folder.mkdir()
    (folder / "model.py").write_text(
        "from labelbridge import Model\n"
        "class Broken(Model):\n"
        "    min_annotations = 4\n"
        "    def setup(self):\n"
        "        raise FileNotFoundError('/srv/secret/weights/model.pt is missing')\n"
        "    def predict(self, tasks, context):\n"
        "        return [None for _ in tasks]\n"
    )
    settings = Settings(
        model_dir=tmp_path / "models", basic_auth_user=USER, basic_auth_pass=PASSWORD
    )
    app = build_multi_app({"a": str(folder)}, settings)
    with serve(app) as url:
        wait_until(lambda: httpx.get(f"{url}/a/health").json()["model_state"] == "failed", 10)
        for path in ("/health", "/"):
            anonymous = httpx.get(f"{url}{path}", timeout=5)
            assert anonymous.status_code == 200
            assert anonymous.json() == {
                "status": "UP",
                "model_state": "failed",
                "backends": {
                    "a": {
                        "status": "UP",
                        "model_class": "Broken",
                        "model_state": "failed",
                        "queue": "ok",
                        "min_annotations": 4,
                        "v2": True,
                    }
                },
            }
        detailed = httpx.get(f"{url}/health", headers=basic_header(), timeout=5).json()
        assert "/srv/secret/weights/model.pt" in detailed["backends"]["a"]["model_error"]


def test_credentials_never_appear_in_debug_logs(server: Server) -> None:
    bearer = {"Authorization": f"Bearer {TOKEN}"}
    with server.client() as client:
        setup = client.post(
            "/setup",
            json={
                "project": "5.1700000000",
                "schema": CONFIG,
                "hostname": "http://127.0.0.1:9",
                "access_token": ACCESS_TOKEN,
                "extra_params": {"password": PREDICT_PASSWORD},
            },
        )
        assert setup.status_code == 200
        predict = client.post(
            "/predict",
            json={
                "project": "5",
                "tasks": [{"data": {"text": "a"}}],
                "params": {"login": USER, "password": PREDICT_PASSWORD},
            },
            headers=bearer,
        )
        assert predict.status_code == 200, predict.text
        train = client.post("/train", json={"project": "5", "annotations": annotated_tasks()})
        job = train.json()["job"]

        def done() -> bool:
            status = client.post("/job_status", json={"job": job}).json()
            return status["job_status"] in ("finished", "failed")

        wait_until(done, 30, "the training job ended")
        client.get("/versions", params={"project": "5", "access_token": ACCESS_TOKEN})
        client.post("/webhook", json={"action": "ANNOTATION_CREATED", "project": {"id": 5}})
    for path in (server.root / "logs").rglob("*"):
        assert not path.is_file() or "in.json" not in path.name
    time.sleep(0.5)  # let the last lines reach the file
    logs = server.output() + "".join(
        p.read_text(errors="replace") for p in (server.root / "logs").rglob("*.log*")
    )
    assert "DEBUG" in logs and "POST /predict" in logs  # the capture works
    encoded = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
    for secret in (PASSWORD, TOKEN, encoded, LS_KEY, ACCESS_TOKEN, PREDICT_PASSWORD):
        assert secret not in logs, f"{secret[:6]}... appears in the log"
    leftovers = [p for p in server.model_dir.rglob("in.json")]
    assert not leftovers, f"job input files with secrets left behind: {leftovers}"


def test_auth_semantics(server: Server) -> None:
    def basic(raw: bytes) -> dict[str, str]:
        return {"Authorization": "Basic " + base64.b64encode(raw).decode()}

    accepted = [
        basic_header(),
        {"Authorization": f"Bearer {TOKEN}"},
        {"Authorization": f"bearer {TOKEN}"},
        {"Authorization": "BASIC " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()},
    ]
    refused = [
        basic(f"{USER}:{PASSWORD}x".encode()),
        basic(f"{USER}:{PASSWORD[:-1]}".encode()),
        basic(f"{USER.upper()}:{PASSWORD}".encode()),
        basic(f"{USER}{PASSWORD}".encode()),
        basic(f":{PASSWORD}".encode()),
        basic(f"{USER}:".encode()),
        basic(b"\xff\xfe:\x00"),
        {"Authorization": "Basic not-base64!!"},
        {"Authorization": "Basic"},
        {"Authorization": f"Bearer {TOKEN[:-1]}"},
        {"Authorization": f"Bearer {TOKEN} {TOKEN}"},
        {"Authorization": f"Token {TOKEN}"},
        {"Authorization": PASSWORD},
    ]
    with httpx.Client(base_url=server.url, timeout=10) as client:
        for headers in accepted:
            assert client.get("/versions", headers=headers).status_code == 200, headers
        for headers in refused:
            assert client.get("/versions", headers=headers).status_code == 401, headers


# --- constant-time comparison ---------------------------------------------------------------
def _gate(settings: Settings, tmp: Path) -> Gate:
    """The real gate instance of an app."""
    from _backends import Echo

    service = Service(Echo, settings.model_copy(update={"model_dir": tmp}), model_ref="x:Echo")
    return create_app(service).gate


def _fastest(check: Callable[[], object], rounds: int = 300) -> float:
    """The minimum of many timings: scheduling noise only ever adds time."""
    best = float("inf")
    for _ in range(rounds):
        began = time.perf_counter_ns()
        check()
        best = min(best, time.perf_counter_ns() - began)
    return best


def _early_over_late(
    authorize: Callable[[list[tuple[bytes, bytes]]], bool], secret: bytes
) -> float:
    """Time to refuse a guess wrong in its first byte, over one wrong only in its last."""
    early = b"X" + secret[1:]
    late = secret[:-1] + b"X"
    headers = {
        name: [(b"authorization", b"Bearer " + guess)]
        for name, guess in (("e", early), ("l", late))
    }
    assert not authorize(headers["e"]) and not authorize(headers["l"])
    ratios = []
    for _ in range(3):  # interleaved, so that a burst of load hits both alike
        t_early = _fastest(lambda: authorize(headers["e"]))
        t_late = _fastest(lambda: authorize(headers["l"]))
        ratios.append(t_early / t_late)
    return sorted(ratios)[1]


def test_token_comparison_time_does_not_depend_on_where_a_guess_differs(tmp_path: Path) -> None:
    secret = (b"s3cr3t" * 400_000)[:2_000_000]  # long, so that a byte-wise leak is measurable
    gate = _gate(Settings(api_token=secret.decode()), tmp_path)

    def leaky(headers: list[tuple[bytes, bytes]]) -> bool:  # the control: `==` stops early
        value = next(v for k, v in headers if k == b"authorization")
        return value.partition(b" ")[2].strip() == secret

    leak = _early_over_late(leaky, secret)
    real = _early_over_late(gate._authorized, secret)
    print(f"\nearly/late refusal time: leaky == {leak:.2f}, Gate._authorized {real:.2f}")
    assert leak < 0.7, f"the control comparison shows no leak ({leak:.2f}): the test is blind"
    assert 0.7 < real < 1.45, f"refusal time depends on where the guess differs ({real:.2f})"
