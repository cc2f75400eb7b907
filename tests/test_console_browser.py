"""The console in a real headless browser (Debian's chromium, driven by Playwright; no browser is
downloaded): find a job by name, watch its log tail grow while it runs, terminate it from its page
and see it reach Terminated. It takes the pages' screenshots: into docs/ (which docs/CONSOLE.md shows)
with OPENARTS_SCREENSHOTS=docs, else into the test's temporary directory (a run changes no tracked file)."""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from conftest import DEFAULT_CONFIG, PROJECT, Server, job_body, sdk_client
from helpers import create_id, wait_phase
from security_support import create_key, sdk_for_key

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
DOCS = Path(__file__).resolve().parents[1] / "docs"

pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed (scripts/test.sh does)")


def in_browser(check: Callable[[Any], None]) -> None:
    """Run `check(page)` in a fresh headless chromium, in a thread of its own: Playwright's sync API keeps
    an event loop running in the thread that uses it, which would break every later test that calls
    asyncio.run() (pytest-playwright's fixtures do that to the main thread, so they are not used)."""
    from playwright.sync_api import sync_playwright

    def run() -> None:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
            try:
                check(browser.new_page(viewport={"width": 1200, "height": 800}))
            finally:
                browser.close()

    with ThreadPoolExecutor(1) as pool:
        pool.submit(run).result()


def test_find_a_job_watch_its_log_grow_and_terminate_it(server: Server, tmp_path: Path) -> None:
    shots = DOCS if os.environ.get("OPENARTS_SCREENSHOTS") == "docs" else tmp_path
    sdk = sdk_client(server)
    for i in range(3):
        wait_phase(sdk, create_id(sdk, job_body(f"warmup-{i}", command="true")), timeout=60)
    failed = create_id(sdk, job_body("broken-run", command="echo loading data; echo 'CUDA error' >&2; exit 3"))
    wait_phase(sdk, failed, timeout=60)
    create_id(sdk, job_body("ticker", command='i=0; while true; do i=$((i+1)); echo "tick $i"; sleep 0.2; done; :'))

    def check(page: Any) -> None:
        from playwright.sync_api import expect

        page.goto(f"{server.url}/console?project={PROJECT}")
        expect(page.locator("h1")).to_contain_text("5 found")
        page.screenshot(path=str(shots / "console-jobs.png"))
        page.get_by_label("name").fill("tick")
        page.get_by_role("button", name="Apply").click()
        expect(page.locator("h1")).to_contain_text("1 found")
        page.get_by_role("link", name="ticker").click()

        log = page.get_by_test_id("log")
        expect(log).to_contain_text("tick 3", timeout=20_000)
        expect(log).to_contain_text("tick 25", timeout=30_000)  # the tail follows the running job
        expect(page.get_by_test_id("phase")).to_have_text("Running")
        page.screenshot(path=str(shots / "console-job.png"), full_page=True)

        page.once("dialog", lambda dialog: dialog.accept())  # "Terminate job ticker?"
        page.get_by_role("button", name="Terminate").click()
        expect(page.get_by_test_id("phase")).to_have_text("Terminated", timeout=30_000)
        expect(page.get_by_role("button", name="Terminate")).to_have_count(0)

    in_browser(check)
    assert (shots / "console-job.png").stat().st_size > 10_000


def test_sign_in_on_a_server_with_credentials(make_server: Any, tmp_path: Path) -> None:
    data = tmp_path / "secure"
    data.mkdir()
    alice = create_key(data, PROJECT, "alice")
    bob = create_key(data, "other-project", "bob")
    server = make_server(DEFAULT_CONFIG, data_dir=data)
    create_id(sdk_for_key(server, alice), job_body("alices-job", command="true"))
    create_id(sdk_for_key(server, bob, "other-project"), job_body("bobs-job", command="true"))

    def check(page: Any) -> None:
        from playwright.sync_api import expect

        page.goto(f"{server.url}/console/{PROJECT}/jobs")
        expect(page).to_have_url(re.compile(r"/console/signin\?next="))
        page.get_by_label("Project").last.fill(PROJECT)
        page.get_by_label("Access key").fill(alice.access_key)
        page.get_by_label("Secret key").fill(alice.secret_key)
        page.get_by_role("button", name="Sign in").click()
        expect(page).to_have_url(re.compile(f"/console/{PROJECT}/jobs$"))
        expect(page.get_by_role("link", name="alices-job")).to_be_visible()
        expect(page.get_by_text("bobs-job")).to_have_count(0)
        page.goto(f"{server.url}/console/other-project/jobs")  # not alice's: back to the sign-in form
        expect(page).to_have_url(re.compile(r"/console/signin"))
        expect(page.get_by_text("bobs-job")).to_have_count(0)

    in_browser(check)


def test_a_failed_attempt_and_its_retry_on_the_timeline_and_the_node_chart(server: Server, tmp_path: Path) -> None:
    shots = DOCS if os.environ.get("OPENARTS_SCREENSHOTS") == "docs" else tmp_path
    sdk = sdk_client(server)
    body = job_body("retried", command='echo step; sleep 1; [ -e "$MA_HOME/again" ] && exit 0; '
                    'touch "$MA_HOME/again"; echo "NCCL timeout" >&2; exit 4')
    body["metadata"]["annotations"] = {"fault-tolerance/job-retry-num": "1",
                                       "fault-tolerance/job-unconditional-retry": "true"}
    job_id = create_id(sdk, body)
    assert wait_phase(sdk, job_id, timeout=60).status.phase == "Completed"

    def check(page: Any) -> None:
        from playwright.sync_api import expect

        page.goto(f"{server.url}/console/{PROJECT}/jobs/{job_id}")
        bars = page.get_by_test_id("attempt")
        expect(bars).to_have_count(2)
        expect(bars.first).to_contain_text("#1 → ")  # ended, and how it was recovered
        expect(bars.nth(1)).to_have_class(re.compile(r"\bok\b"))  # the retry completed
        expect(page.locator("#node-chart canvas").first).to_be_visible()  # uPlot drew the node counts
        page.screenshot(path=str(shots / "console-retried-job.png"), full_page=True)

    in_browser(check)
