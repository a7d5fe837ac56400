"""The Label Studio REST client and its auth, against the fake Label Studio on loopback."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator

import httpx
import pytest

from fakes import FakeLabelStudio, free_port
from labelbridge.errors import LabelStudioError
from labelbridge.labelstudio import (
    DEFAULT_TIMEOUT,
    LabelStudio,
    LabelStudioAuth,
    is_personal_access_token,
    redact_url,
)

WHOAMI = "/api/current-user/whoami"
REFRESH = "/api/token/refresh/"


@pytest.fixture(scope="module")
def server() -> Iterator[FakeLabelStudio]:
    with FakeLabelStudio() as running:
        yield running


@pytest.fixture
def ls(server: FakeLabelStudio) -> FakeLabelStudio:
    server.reset()
    return server


def test_token_kinds_are_told_apart(ls: FakeLabelStudio) -> None:
    assert is_personal_access_token(ls.personal_access_token())
    assert not is_personal_access_token(ls.legacy_token)
    assert not is_personal_access_token("a.b.c")  # three parts but not JSON


def test_legacy_token_is_sent_as_token_header(ls: FakeLabelStudio) -> None:
    with LabelStudio(ls.url, ls.legacy_token) as client:
        assert client.whoami()["email"] == "admin@example.com"
        assert client.auth is not None and client.auth.kind == "legacy"
    assert ls.hits(REFRESH) == 0


def test_legacy_token_refused_when_disabled_says_use_a_pat(ls: FakeLabelStudio) -> None:
    ls.legacy_enabled = False  # the default in new organizations
    with pytest.raises(LabelStudioError) as info:
        LabelStudio(ls.url, ls.legacy_token).whoami()
    err = info.value
    assert err.extra["status"] == 401
    assert f"{ls.url}{WHOAMI}" in err.detail and "401" in err.detail
    assert "disabled" in err.detail  # Label Studio's own explanation is kept
    assert "personal access token" in (err.fix or "") and "LABEL_STUDIO_API_KEY" in (err.fix or "")
    assert ls.legacy_token not in str(err) and ls.legacy_token not in str(err.to_dict())


def test_wrong_token_gives_401_with_url_and_fix(ls: FakeLabelStudio) -> None:
    with pytest.raises(LabelStudioError) as info:
        LabelStudio(ls.url, "0123456789abcdef-wrong").get_project(1)
    assert "Label Studio answered 401 to GET" in info.value.detail
    assert f"{ls.url}/api/projects/1/" in info.value.detail
    assert "LABEL_STUDIO_API_KEY" in (info.value.fix or "")
    assert "wrong" not in str(info.value)


def test_pat_as_bearer_is_refused_by_the_fake(ls: FakeLabelStudio) -> None:
    """The fake is as strict as Label Studio: a PAT must be exchanged first."""
    headers = {"Authorization": f"Bearer {ls.personal_access_token()}"}
    assert httpx.get(f"{ls.url}{WHOAMI}", headers=headers).status_code == 401


def test_pat_is_exchanged_cached_and_refreshed_after_expiry(ls: FakeLabelStudio) -> None:
    ls.access_ttl = 1  # seconds
    client = LabelStudio(ls.url, ls.personal_access_token())
    assert client.auth is not None and client.auth.kind == "personal"
    client.whoami()
    client.get_project(ls.add_project()["id"])
    assert ls.hits(REFRESH) == 1  # cached for the second call
    time.sleep(1.1)  # the access token expired
    client.whoami()
    assert ls.hits(REFRESH) == 2
    assert ls.hits(WHOAMI) == 2  # no failed attempt: refreshed before sending


def test_revoked_access_token_is_refreshed_on_401_and_retried_once(ls: FakeLabelStudio) -> None:
    client = LabelStudio(ls.url, ls.personal_access_token())
    client.whoami()
    ls.revoke_access_tokens()
    assert client.whoami()["id"] == 1
    assert ls.hits(REFRESH) == 2
    assert ls.hits(WHOAMI) == 3  # ok, 401, retried ok


def test_invalid_pat_fails_at_the_exchange(ls: FakeLabelStudio) -> None:
    foreign = FakeLabelStudio().personal_access_token()  # signed with another secret
    with pytest.raises(LabelStudioError) as info:
        LabelStudio(ls.url, foreign).whoami()
    assert f"{ls.url}{REFRESH}" in info.value.detail and "401" in info.value.detail
    assert "create a new one" in (info.value.fix or "")
    assert foreign not in str(info.value)
    assert ls.hits(WHOAMI) == 0


def test_concurrent_requests_refresh_once(ls: FakeLabelStudio) -> None:
    client = LabelStudio(ls.url, ls.personal_access_token())
    barrier = threading.Barrier(16)
    errors: list[BaseException] = []

    def call() -> None:
        barrier.wait()
        try:
            client.whoami()
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=call) for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert ls.hits(REFRESH) == 1 and ls.hits(WHOAMI) == 16


def test_async_clients_use_the_same_auth(ls: FakeLabelStudio) -> None:
    auth = LabelStudioAuth(ls.personal_access_token(), ls.url)

    async def main() -> list[int]:
        async with httpx.AsyncClient(base_url=ls.url, auth=auth) as client:
            first = await client.get(WHOAMI)
            ls.revoke_access_tokens()
            second = await client.get(WHOAMI)  # 401, refreshed, retried
            return [first.status_code, second.status_code]

    assert asyncio.run(main()) == [200, 200]
    assert ls.hits(REFRESH) == 2 and auth.refresh_count == 2


def test_auth_repr_never_shows_the_token(ls: FakeLabelStudio) -> None:
    pat = ls.personal_access_token()
    client = LabelStudio(ls.url, pat)
    assert pat not in repr(client) and pat not in repr(LabelStudioAuth(pat, ls.url))


def test_iter_tasks_pages_until_total(ls: FakeLabelStudio) -> None:
    pid = ls.add_project()["id"]
    other = ls.add_project()["id"]
    ids = [ls.add_task(pid, {"text": str(i)})["id"] for i in range(250)]
    ls.add_task(other, {"text": "elsewhere"})
    client = LabelStudio(ls.url, ls.legacy_token)
    tasks = list(client.iter_tasks(pid, page_size=100))
    assert [t["id"] for t in tasks] == ids
    assert ls.hits("/api/tasks/") == 3
    assert tasks[0]["annotations"] == []  # fields=all by default

    more = [ls.add_task(other, {"text": str(i)})["id"] for i in range(199)]  # 200 in `other`
    assert len(list(client.iter_tasks(other, page_size=100))) == 200 == len(more) + 1
    assert ls.hits("/api/tasks/") == 5  # stopped at `total`, no request for an empty page


def test_iter_tasks_filters_and_selected_ids(ls: FakeLabelStudio) -> None:
    pid = ls.add_project()["id"]
    tasks = [ls.add_task(pid, {"text": str(i)}) for i in range(5)]
    ls.add_annotation(tasks[1]["id"], [{"type": "choices"}])
    client = LabelStudio(ls.url, ls.legacy_token)
    picked = client.iter_tasks(pid, task_ids=[tasks[0]["id"], tasks[3]["id"]])
    assert [t["id"] for t in picked] == [tasks[0]["id"], tasks[3]["id"]]
    annotated = {
        "conjunction": "and",
        "items": [
            {
                "filter": "filter:tasks:total_annotations",
                "operator": "greater",
                "type": "Number",
                "value": 0,
            }
        ],
    }
    assert [t["id"] for t in client.iter_tasks(pid, filters=annotated)] == [tasks[1]["id"]]


def test_get_objects_and_404(ls: FakeLabelStudio) -> None:
    pid = ls.add_project(title="cats")["id"]
    tid = ls.add_task(pid, {"text": "x"})["id"]
    aid = ls.add_annotation(tid, [{"from_name": "sentiment"}])["id"]
    client = LabelStudio(ls.url, ls.legacy_token)
    assert client.get_project(pid)["title"] == "cats"
    assert client.get_task(tid)["annotations"][0]["id"] == aid
    assert client.get_annotation(aid)["task"] == tid
    assert [a["id"] for a in client.list_annotations(tid)] == [aid]
    with pytest.raises(LabelStudioError) as info:
        client.get_task(999)
    assert info.value.extra["status"] == 404 and "/api/tasks/999/" in info.value.detail
    assert "check the id" in (info.value.fix or "")


def test_annotated_tasks_by_export_and_by_paging_agree(ls: FakeLabelStudio) -> None:
    pid = ls.add_project()["id"]
    t = [ls.add_task(pid, {"text": str(i)})["id"] for i in range(4)]
    ls.add_annotation(t[0], [{"v": 1}])
    ls.add_annotation(t[1], [], was_cancelled=True)  # skipped only: not training data
    ls.add_annotation(t[2], [{"v": 2}])
    cancelled = ls.add_annotation(t[2], [], was_cancelled=True)["id"]
    client = LabelStudio(ls.url, ls.legacy_token)
    exported = client.annotated_tasks(pid)
    assert ls.hits(f"/api/projects/{pid}/export") == 1
    paged = client.annotated_tasks(pid, via="tasks")
    for result in (exported, paged):
        assert [task["id"] for task in result] == [t[0], t[2]]
        assert cancelled not in [a["id"] for task in result for a in task["annotations"]]


def test_predictions_one_by_one_and_in_bulk(ls: FakeLabelStudio) -> None:
    pid = ls.add_project()["id"]
    t = [ls.add_task(pid, {"text": str(i)})["id"] for i in range(3)]
    client = LabelStudio(ls.url, ls.legacy_token)
    item = {"result": [{"from_name": "sentiment"}], "score": 0.5, "model_version": "v1"}
    created = client.create_prediction({**item, "task": t[0]})
    assert created["id"] and created["task"] == t[0]
    assert client.create_predictions([{**item, "task": t[1]}]) == 1
    assert ls.hits("/api/predictions/") == 2
    bulk = [{**item, "task": tid, "model_version": "v2"} for tid in t]
    assert client.create_predictions(bulk, project=pid) == 3
    assert ls.hits(f"/api/projects/{pid}/import/predictions") == 1
    assert len(client.list_predictions(project=pid)) == 5
    assert {p["model_version"] for p in client.list_predictions(task=t[2])} == {"v2"}
    with pytest.raises(LabelStudioError) as info:
        client.create_predictions([{**item, "task": 999}], project=pid)
    assert info.value.extra["status"] == 400 and "Validation error" in info.value.detail


def test_presign_returns_the_redirect_or_the_bytes(ls: FakeLabelStudio) -> None:
    tid = ls.add_task(ls.add_project()["id"], {"image": "s3://bucket/a.png"})["id"]
    seen: list[str] = []

    def redirect(uri: str) -> str:
        seen.append(uri)
        return "https://bucket.example/a.png?X-Amz-Signature=s"

    ls.presign_handler = redirect
    client = LabelStudio(ls.url, ls.legacy_token)
    assert (
        client.presign(tid, "s3://bucket/a.png") == "https://bucket.example/a.png?X-Amz-Signature=s"
    )
    assert seen == ["s3://bucket/a.png"]
    ls.presign_handler = lambda uri: b"proxied bytes"
    assert client.presign(tid, "s3://bucket/a.png") == b"proxied bytes"


def test_unreachable_label_studio_names_the_setting_and_docker() -> None:
    url = f"http://localhost:{free_port()}"
    with pytest.raises(LabelStudioError) as info:
        LabelStudio(url, "token").whoami()
    fix = info.value.fix or ""
    assert "LABEL_STUDIO_URL" in fix and url in fix and "Docker" in fix
    assert "cannot reach Label Studio" in info.value.detail


def test_timeouts_are_on_by_default_and_enforced(ls: FakeLabelStudio) -> None:
    assert DEFAULT_TIMEOUT.read and DEFAULT_TIMEOUT.connect
    ls.delays[WHOAMI] = 0.8
    started = time.monotonic()
    with pytest.raises(LabelStudioError) as info:
        LabelStudio(ls.url, ls.legacy_token, timeout=0.2).whoami()
    assert time.monotonic() - started < 0.6
    assert "did not answer" in info.value.detail


def test_missing_url_says_set_label_studio_url() -> None:
    with pytest.raises(LabelStudioError) as info:
        LabelStudio("", "token")
    assert "LABEL_STUDIO_URL" in (info.value.fix or "")


def test_redact_url_masks_signatures_and_user_info() -> None:
    url = "https://user:pw@b.s3.amazonaws.com/a.png?X-Amz-Signature=abc&X-Amz-Credential=k&v=1"
    redacted = redact_url(url)
    assert "abc" not in redacted and "pw" not in redacted and "v=1" in redacted
