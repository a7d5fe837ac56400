"""The status page in a real browser: headless Debian Chromium driven by Playwright.

A development server with basic auth trains two versions; the page must list them, draw the
score chart (an SVG polyline with a point per version, visibly not blank), list the jobs, and
stay behind auth. Also: development mode logs training on the server's console."""

from __future__ import annotations

import io
import shutil
from pathlib import Path

import httpx
import pytest

from _serving import make_backend, running

pytestmark = pytest.mark.timeout(120)

CHROMIUM = Path("/usr/bin/chromium")
USER, PASSWORD = "ann", "pw-status-9"
#: as the machine notes say: no sandbox as root, and no background traffic to a closed network
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def _chromium() -> Path:
    if CHROMIUM.exists():
        return CHROMIUM
    if shutil.which("apt-get") is None:
        pytest.skip("Chromium is not installed and apt-get is unavailable to install it")
    pytest.fail("Chromium is missing: run scripts/ensure_chromium.sh (test.sh does)")


def test_status_page_shows_versions_chart_jobs_and_logs(tmp_path: Path) -> None:
    chromium = _chromium()
    from PIL import Image
    from playwright.sync_api import sync_playwright

    backend = make_backend(tmp_path / "b")
    env = {"BASIC_AUTH_USER": USER, "BASIC_AUTH_PASS": PASSWORD, "ACCESS_LOG": "true"}
    with running(backend, env=env, auth=(USER, PASSWORD)) as server:
        jobs = [server.train(1), server.train(3)]
        for job in jobs:
            assert server.wait_job(job)["job_status"] == "finished", server.out()
        assert server.predict().status_code == 200
        for path in ("/status", "/status.json", "/metrics"):
            assert httpx.get(server.url + path).status_code == 401
        data = httpx.get(f"{server.url}/status.json", auth=server.auth).json()
        versions = data["projects"][0]["versions"]
        assert [v["score"] for v in versions] == [0.5, 0.75]
        assert data["settings"]["basic_auth_pass"] == "********"
        assert any(r["path"] == "/predict" and r["status"] == 200 for r in data["requests"])

        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(
                executable_path=str(chromium), args=CHROMIUM_ARGS, headless=True
            )
            try:
                context = browser.new_context(
                    http_credentials={"username": USER, "password": PASSWORD},
                    viewport={"width": 1200, "height": 900},
                )
                page = context.new_page()
                page.goto(f"{server.url}/status")
                page.wait_for_selector("body[data-loaded=true]", timeout=10_000)
                assert page.locator("#model-class").inner_text() == "Sleepy"
                rows = page.locator("table.versions tr.version-row").all_inner_texts()
                assert len(rows) == 2 and "sleepy-v2 (current)" in rows[0], rows
                assert "sleepy-v1" in rows[1]
                job_rows = page.locator("#jobs tr.job-row")
                assert job_rows.count() == 2
                assert "finished" in job_rows.first.inner_text()
                assert page.locator("#error").inner_text() == ""
                points = page.locator("svg.chart polyline.score-line").get_attribute("points")
                assert points is not None and len(points.split()) == 2
                ys = [float(p.split(",")[1]) for p in points.split()]
                assert ys[1] < ys[0]  # the better second version is drawn higher
                assert "POST" in page.locator("#requests").inner_text()
                # development: the log tail is this server's ring buffer of records
                assert "POST /predict -> 200" in page.locator("#logs").inner_text()
                shot = page.locator("svg.chart").screenshot()
                page.screenshot(path=str(tmp_path / "status.png"), full_page=True)
            finally:
                browser.close()
    image = Image.open(io.BytesIO(shot)).convert("RGB")
    colors = image.getcolors(image.width * image.height) or []
    blue = sum(n for n, (r, g, b) in colors if b > 150 and r < 120 and g < 160)  # line, dots
    drawn = sum(n for n, color in colors if color != (255, 255, 255))
    assert blue > 150, f"the chart's line is not visible ({blue} blue pixels)"
    assert drawn > 400, f"the chart looks blank ({drawn} non-white pixels)"
    # development mode: the job processes' lines appear on the server's console, with job ids
    console = server.out()
    for job in jobs:
        assert f"[job {job}]: fitting on" in console, console
