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


def _shots(tmp_path: Path) -> Path:
    return DOCS if os.environ.get("OPENARTS_SCREENSHOTS") == "docs" else tmp_path


def _yaml_job(name: str, command: str, flavor: str = "modelarts.local.cpu.1u") -> str:
    return (f"kind: job\nmetadata:\n  name: {name}\n  description: submitted from the console\nalgorithm:\n"
            f"  command: {command}\nspec:\n  resource:\n    flavor_id: {flavor}\n    node_count: 1\n")


def test_submit_a_job_from_the_page_a_refused_body_kept_then_a_file_uploaded(server: Server, tmp_path: Path) -> None:
    shots = _shots(tmp_path)
    refused = _yaml_job("from-the-page", "echo hello from the page", flavor="modelarts.local.cpu.3000u")
    good = _yaml_job("from-the-page", "echo hello from the page")
    upload = tmp_path / "train-job.yaml"
    upload.write_text(good)

    def check(page: Any) -> None:
        from playwright.sync_api import expect

        page.goto(f"{server.url}/console/{PROJECT}/jobs")
        page.get_by_role("link", name="New job").click()
        expect(page).to_have_url(re.compile(f"/console/{PROJECT}/jobs/new$"))
        body = page.get_by_label("job body")
        body.fill(refused)
        page.get_by_role("button", name="Submit").click()
        expect(page.get_by_test_id("error")).to_contain_text("ModelArts.2781")  # the API's FlavorNotFound
        expect(page.get_by_test_id("error")).to_contain_text("modelarts.local.cpu.3000u")
        expect(body).to_have_value(refused)  # the text kept, to be corrected
        page.screenshot(path=str(shots / "console-submit.png"), full_page=True)
        page.get_by_label("job file").set_input_files(str(upload))  # read into the text box
        expect(body).to_have_value(good)
        page.get_by_role("button", name="Submit").click()
        expect(page).to_have_url(re.compile(f"/console/{PROJECT}/jobs/[0-9a-f-]{{36}}$"))
        expect(page.locator("h1")).to_have_text("from-the-page")
        expect(page.get_by_test_id("phase")).to_have_text("Completed", timeout=60_000)

    in_browser(check)


def test_delete_a_job_from_its_page_after_a_confirmation(server: Server) -> None:
    sdk = sdk_client(server)
    job_id = create_id(sdk, job_body("short-lived", command="true"))
    wait_phase(sdk, job_id, timeout=60)
    create_id(sdk, job_body("bystander", command="true"))

    def check(page: Any) -> None:
        from playwright.sync_api import expect

        page.goto(f"{server.url}/console/{PROJECT}/jobs/{job_id}")
        questions: list[str] = []

        def answer(accept: bool) -> Callable[[Any], None]:
            def on(dialog: Any) -> None:
                questions.append(dialog.message)
                dialog.accept() if accept else dialog.dismiss()
            return on

        page.once("dialog", answer(False))  # "Delete job short-lived?": no
        page.get_by_role("button", name="Delete").click()
        expect(page.locator("h1")).to_have_text("short-lived")
        page.reload()  # still there
        expect(page.locator("h1")).to_have_text("short-lived")
        page.once("dialog", answer(True))
        page.get_by_role("button", name="Delete").click()
        expect(page).to_have_url(re.compile(f"/console/{PROJECT}/jobs$"))
        expect(page.get_by_role("link", name="bystander")).to_be_visible()
        expect(page.get_by_role("link", name="short-lived")).to_have_count(0)
        assert questions[0].startswith("Delete job short-lived?"), questions

    in_browser(check)


def test_the_queue_page_shows_a_waiting_job_and_why(make_server: Any, tmp_path: Path) -> None:
    from helpers import ONE_CORE

    shots = _shots(tmp_path)
    server = make_server(ONE_CORE)
    sdk = sdk_client(server)
    gate = tmp_path / "gate"
    holder = create_id(sdk, job_body("holds-the-core", command=f'while [ ! -e "{gate}" ]; do sleep 0.05; done'))
    wait_phase(sdk, holder, "Running", timeout=60)
    waiter = create_id(sdk, job_body("waits-for-a-core", command="true"))

    def check(page: Any) -> None:
        from playwright.sync_api import expect

        page.goto(f"{server.url}/console/{PROJECT}/jobs")
        page.get_by_role("link", name="Queue").click()
        expect(page).to_have_url(re.compile(f"/console/{PROJECT}/queue$"))
        row = page.get_by_test_id("waiting-job")
        expect(row).to_have_count(1)
        expect(row).to_contain_text("waits-for-a-core")
        # the scheduler's verdict, shown as it comes (the page refreshes every 5 s)
        expect(row.get_by_test_id("reason")).to_contain_text("insufficient resources in pool pool-local",
                                                             timeout=30_000)
        expect(page.get_by_test_id("nodes")).to_contain_text("0 / 1")  # its one core is held
        expect(page.get_by_test_id("flavors")).to_contain_text("modelarts.local.cpu.1u")
        page.screenshot(path=str(shots / "console-queue.png"), full_page=True)
        gate.touch()  # the holder ends, the waiter runs: the page follows
        expect(page.get_by_test_id("waiting")).to_contain_text("No job of this project is waiting.", timeout=60_000)

    in_browser(check)
    assert wait_phase(sdk, waiter, timeout=60).status.phase == "Completed"


def test_the_project_switcher_and_the_live_job_list(server: Server, tmp_path: Path) -> None:
    sdk = sdk_client(server)
    gate = tmp_path / "gate"
    create_id(sdk, job_body("done-before", command="true"))
    gated = create_id(sdk, job_body("gated-run", command=f'while [ ! -e "{gate}" ]; do sleep 0.05; done'))
    wait_phase(sdk, gated, "Running", timeout=60)

    def check(page: Any) -> None:
        from playwright.sync_api import expect

        page.goto(f"{server.url}/console/{PROJECT}/jobs?name=gated")
        row = page.get_by_role("row").filter(has_text="gated-run")
        expect(row.get_by_test_id("row-phase")).to_have_text("Running")
        gate.touch()  # no reload: the rows are polled, with the page's filter
        expect(row.get_by_test_id("row-phase")).to_have_text("Completed", timeout=30_000)
        expect(page.get_by_text("done-before")).to_have_count(0)  # the filter still applies
        expect(page.get_by_label("name")).to_have_value("gated")
        expect(page.locator(".count[data-phase=Running]")).to_have_text("0")
        expect(page.locator(".count[data-phase=Completed]")).to_have_text("2")
        switcher = page.get_by_test_id("project-switcher")
        switcher.get_by_label("project").fill("other-project")
        switcher.get_by_role("button", name="Open").click()
        expect(page).to_have_url(re.compile(r"/console/other-project/jobs$"))
        expect(page.locator("h1")).to_contain_text("0 found")
        expect(page.get_by_text("gated-run")).to_have_count(0)
        page.goto(f"{server.url}/console")  # the project opened last is remembered
        expect(page).to_have_url(re.compile(r"/console/other-project/jobs$"))

    in_browser(check)


def test_a_tasks_log_followed_an_earlier_attempt_chosen_searched_and_the_usage_charts(server: Server,
                                                                                    tmp_path: Path) -> None:
    from test_console import retried_ticker

    shots = _shots(tmp_path)
    sdk = sdk_client(server)
    gate = tmp_path / "gate"
    job_id = retried_ticker(sdk, "logs-run", gate)

    def check(page: Any) -> None:
        from playwright.sync_api import expect

        page.goto(f"{server.url}/console/{PROJECT}/jobs/{job_id}")
        log = page.get_by_test_id("log")
        expect(log).to_contain_text("tick 3", timeout=30_000)
        expect(log).to_contain_text("tick 40", timeout=30_000)  # followed: lines appended while it runs
        expect(page.locator("#log-lines > span").first).to_be_attached()  # appended, not reloaded
        page.get_by_label("attempt").select_option("1")  # the failed first attempt's log, kept
        expect(log).to_contain_text("first try")
        expect(log).not_to_contain_text("tick")
        expect(page.get_by_test_id("log-follow")).to_contain_text("#2 is the latest")
        page.get_by_label("attempt").select_option("")
        page.get_by_label("search the log").fill("TICK 2")
        page.get_by_label("search the log").press("Enter")
        matches = page.get_by_test_id("log-matches")
        expect(matches).to_contain_text("tick 2")
        expect(matches.locator(".ln").first).to_have_text("3")  # "second try" is line 1
        expect(page.get_by_test_id("log-found")).to_contain_text("of worker-0's log, attempt #2")
        gate.touch()
        expect(page.get_by_test_id("phase")).to_have_text("Completed", timeout=30_000)
        page.reload()
        expect(page.get_by_test_id("log")).to_contain_text("Done OK")
        expect(page.locator("#cpu-chart canvas").first).to_be_visible()  # uPlot drew the task's CPU
        expect(page.locator("#mem-chart canvas").first).to_be_visible()
        page.get_by_label("search the log").fill("tick 1")
        page.get_by_label("search the log").press("Enter")
        expect(page.get_by_test_id("log-matches")).to_contain_text("tick 1")
        page.screenshot(path=str(shots / "console-log-search.png"), full_page=True)

    in_browser(check)


def test_a_preempted_job_and_its_waits_on_the_timeline(make_server: Any, tmp_path: Path) -> None:
    import httpx

    from conftest import wait_for
    from test_console import PREEMPTION

    shots = _shots(tmp_path)
    server = make_server(PREEMPTION)
    marker, gate = tmp_path / "resume", tmp_path / "gate"
    with httpx.Client(base_url=server.api, timeout=10) as api:
        def create(name: str, command: str, flavor: str, nodes: int, priority: int) -> str:
            r = api.post("/training-jobs", json={
                "kind": "job", "metadata": {"name": name}, "algorithm": {"command": command},
                "spec": {"resource": {"flavor_id": flavor, "node_count": nodes},
                         "schedule_policy": {"priority": priority, "preemptible": priority == 1}}})
            assert r.status_code == 201, r.text
            return str(r.json()["metadata"]["id"])

        def phase(job_id: str) -> str:
            return str(api.get(f"/training-jobs/{job_id}").json()["status"]["phase"])

        low = create("preemptible-run", f'[ -e "{marker}" ] && {{ sleep 1; exit 0; }}; sleep 600', "t.1u", 2, 1)
        wait_for(lambda: phase(low) == "Running", message="low running")
        high = create("urgent-run", f'while [ ! -e "{gate}" ]; do sleep 0.05; done', "t.2u", 1, 3)
        wait_for(lambda: phase(high) == "Running", message="high preempted its way in")
        marker.touch()
        gate.touch()
        wait_for(lambda: phase(low) == "Completed", timeout=60, message="low resumed")

    def check(page: Any) -> None:
        from playwright.sync_api import expect

        page.goto(f"{server.url}/console/{PROJECT}/jobs/{low}")
        bars = page.get_by_test_id("attempt")
        expect(bars).to_have_count(2)
        expect(bars.first).to_have_class(re.compile(r"\bpreempted\b"))
        expect(bars.first).to_have_text("#1 preempted")
        expect(bars.first).to_have_attribute("title", re.compile(f"preempted by job {high}"))
        expect(bars.nth(1)).to_have_class(re.compile(r"\bok\b"))
        waits = page.get_by_test_id("wait")
        expect(waits).to_have_text(["queued", "requeued"])  # before the first start; after the preemption
        page.screenshot(path=str(shots / "console-preempted-job.png"), full_page=True)

    in_browser(check)
