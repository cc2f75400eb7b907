"""The web console's pages through a real server (the first step of the console: the job list and a
job's page, server-rendered; browser tests come with the live parts)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import httpx

from conftest import DEFAULT_CONFIG, PROJECT, Server, job_body, sdk_client
from helpers import create_id, wait_phase
from security_support import create_key, sdk_for_key


def _rows(html: str) -> list[str]:
    """The job names of a job-list page, in order."""
    return re.findall(r'<td><a href="/console/[^/]+/jobs/[0-9a-f-]+">([^<]+)</a></td>', html)


def test_the_job_list_filters_searches_sorts_and_pages(server: Server) -> None:
    sdk = sdk_client(server)
    ids = [create_id(sdk, job_body(f"c-{i:02d}", command="true")) for i in range(21)]
    odd = create_id(sdk, job_body("odd-one", command="exit 3"))
    for job_id in [*ids, odd]:
        wait_phase(sdk, job_id, timeout=60)
    with httpx.Client(base_url=server.url, timeout=10) as c:
        r = c.get("/console", params={"project": PROJECT})
        assert r.status_code == 303 and r.headers["location"] == f"/console/{PROJECT}/jobs"
        page = c.get(f"/console/{PROJECT}/jobs")
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        assert "22 found" in page.text and "page 1 of 2" in page.text
        assert _rows(page.text)[:2] == ["odd-one", "c-20"]  # newest first
        assert len(_rows(page.text)) == 20
        assert '<span class="count" data-phase="Failed">1</span>' in page.text
        assert '<span class="count" data-phase="Completed">21</span>' in page.text
        second = c.get(f"/console/{PROJECT}/jobs", params={"page": "2"})
        assert _rows(second.text) == ["c-01", "c-00"] and "page 2 of 2" in second.text
        failed = c.get(f"/console/{PROJECT}/jobs", params={"phase": "Failed"})
        assert _rows(failed.text) == ["odd-one"] and "1 found" in failed.text
        by_name = c.get(f"/console/{PROJECT}/jobs", params={"name": "c-1", "sort": "name", "order": "asc"})
        assert _rows(by_name.text) == [f"c-{i}" for i in range(10, 20)]
        assert c.get("/console/static/vendor/htmx.min.js").status_code == 200
        far = c.get(f"/console/{PROJECT}/jobs", params={"page": "99999999999"})  # past the search's reach
        assert far.status_code == 200 and "No job matches." in far.text


def test_a_jobs_page_shows_its_essentials_tasks_attempts_and_events(server: Server) -> None:
    sdk = sdk_client(server)
    body = job_body("c-page", command="echo hi; exit 3")
    body["metadata"]["description"] = "<script>alert(1)</script>"
    job_id = create_id(sdk, body)
    assert wait_phase(sdk, job_id, timeout=60).status.phase == "Failed"
    with httpx.Client(base_url=server.url, timeout=10) as c:
        html = c.get(f"/console/{PROJECT}/jobs/{job_id}").text
        assert "<h1>c-page</h1>" in html and 'class="badge phase-failed" data-testid="phase">Failed<' in html
        assert "Terminate" not in html and "hx-trigger" not in html  # ended: nothing polls, nothing to stop
        assert '">hi\n</pre>' in html  # its log
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html and "<script>alert(1)" not in html  # escaped
        assert "echo hi; exit 3" in html and "modelarts.local.cpu.1u" in html
        assert "<td>worker-0</td><td>3</td>" in html  # the task's exit code
        assert "exit with 3" in html  # the attempt's end reason, and the events
        assert "Job failed" in html
        # another project sees neither the job nor its page
        other = c.get("/console/other-project/jobs")
        assert "c-page" not in other.text and "0 found" in other.text
        r = c.get(f"/console/other-project/jobs/{job_id}")
        assert r.status_code == 404 and "has no training job" in r.text and "c-page" not in r.text, r.text


def test_sign_in_with_an_access_key_pair_on_a_server_with_credentials(make_server: Any, tmp_path: Path) -> None:
    data = tmp_path / "secure"
    data.mkdir()
    alice = create_key(data, PROJECT, "alice")
    server = make_server(DEFAULT_CONFIG, data_dir=data)
    sdk = sdk_for_key(server, alice)
    job_id = create_id(sdk, job_body("c-secure", command="sleep 600; :"))
    with httpx.Client(base_url=server.url, timeout=10) as c:
        r = c.get(f"/console/{PROJECT}/jobs")
        assert r.status_code == 303 and r.headers["location"] == f"/console/signin?next=%2Fconsole%2F{PROJECT}%2Fjobs"
        assert c.get("/console/static/console.css").status_code == 200  # the form's own assets need no session
        assert c.get("/console/signin").status_code == 200
        form = {"project": PROJECT, "access_key": alice.access_key, "secret_key": alice.secret_key + "x",
                "next": f"/console/{PROJECT}/jobs"}
        wrong = c.post("/console/signin", data=form)
        assert wrong.status_code == 401 and "wrong" in wrong.text and "c-secure" not in wrong.text
        signed = c.post("/console/signin", data={**form, "secret_key": alice.secret_key})
        assert signed.status_code == 303 and signed.headers["location"] == f"/console/{PROJECT}/jobs"
        cookie = signed.headers["set-cookie"]
        assert "openarts_session=" in cookie and "HttpOnly" in cookie and "SameSite=strict" in cookie
        page = c.get(f"/console/{PROJECT}/jobs")  # the client keeps the cookie
        assert page.status_code == 200 and "c-secure" in page.text and "Sign out" in page.text
        other = c.get("/console/other-project/jobs")  # the session is for one project
        assert other.status_code == 303 and other.headers["location"].startswith("/console/signin")
        terminate = f"/console/{PROJECT}/jobs/{job_id}/terminate"
        assert c.post(terminate).status_code == 403  # not htmx's: a form posted from anywhere is refused
        assert c.post(terminate, headers={"HX-Request": "true"}).status_code == 200
        assert wait_phase(sdk, job_id, timeout=60).status.phase == "Terminated"
        session = c.cookies["openarts_session"]
        out = c.post("/console/signout")
        assert out.status_code == 303 and not c.cookies.get("openarts_session")
    with httpx.Client(base_url=server.url, timeout=10, cookies={"openarts_session": session}) as stale:
        again = stale.get(f"/console/{PROJECT}/jobs")  # the signed-out session's token was revoked
        assert again.status_code == 303 and again.headers["location"].startswith("/console/signin")
