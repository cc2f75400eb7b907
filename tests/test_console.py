"""The web console's pages through a real server (the first step of the console: the job list and a
job's page, server-rendered; browser tests come with the live parts)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import httpx

from conftest import DEFAULT_CONFIG, PROJECT, Server, job_body, sdk_client, wait_for
from helpers import ONE_CORE, create_id, wait_phase
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
        assert '">\nhi\n</pre>' in html  # its log (a newline right after <pre> is not part of its text)
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
        rows = c.get(f"/console/{PROJECT}/jobs/rows", headers={  # a poll of a signed-out page: the page goes
            "HX-Request": "true", "HX-Current-URL": f"{server.url}/console/{PROJECT}/jobs?phase=Running"})
        assert rows.status_code == 401 and not rows.text  # to the sign-in form; no form swapped into it
        assert rows.headers["hx-redirect"] == \
            f"/console/signin?next=%2Fconsole%2F{PROJECT}%2Fjobs%3Fphase%3DRunning"
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


HX = {"HX-Request": "true"}


def _submit(c: httpx.Client, text: str, headers: dict[str, str] | None = None) -> httpx.Response:
    return c.post(f"/console/{PROJECT}/jobs/new", data={"body": text}, headers=HX if headers is None else headers)


def test_submit_from_the_page_runs_the_job_and_refuses_a_bad_body_as_the_api_does(server: Server) -> None:
    from markupsafe import escape

    sdk = sdk_client(server)
    yaml_body = ("kind: job\nmetadata:\n  name: c-submitted\n  description: from the page\nalgorithm:\n"
                 "  command: echo submitted from the page\nspec:\n  resource:\n"
                 "    flavor_id: modelarts.local.cpu.1u\n    node_count: 1\n")
    bad_flavor = json.dumps(job_body("c-bad", command="true") | {
        "spec": {"resource": {"flavor_id": "modelarts.nope", "node_count": 1}}}, indent=1)
    with httpx.Client(base_url=server.url, timeout=10) as c:
        assert f'href="/console/{PROJECT}/jobs/new"' in c.get(f"/console/{PROJECT}/jobs").text  # the list links it
        form = c.get(f"/console/{PROJECT}/jobs/new")
        assert form.status_code == 200 and 'name="body"' in form.text and "modelarts.local.cpu.1u" in form.text
        assert _submit(c, yaml_body, headers={}).status_code == 403  # not htmx's: another site's form is refused
        r = _submit(c, yaml_body)
        assert r.status_code == 201, r.text
        where = r.headers["hx-redirect"]
        assert re.fullmatch(f"/console/{PROJECT}/jobs/[0-9a-f-]{{36}}", where)
        job_id = where.rsplit("/", 1)[1]
        assert wait_phase(sdk, job_id, timeout=60).status.phase == "Completed"
        assert "submitted from the page" in c.get(where).text  # its page, with its log
        # refused bodies: the API's own status, error code and message, and the text kept
        for text in (bad_flavor, '{"kind": "job", "metadata": {', yaml_body):
            api = c.post(f"/v2/{PROJECT}/training-jobs", content=text.encode(),
                         headers={"Content-Type": "application/json"}) if text.startswith("{") else None
            page = _submit(c, text)
            assert page.status_code == 400 and page.headers["content-type"].startswith("text/html"), page.text
            assert 'id="submit-form"' in page.text and f">{escape(text)}</textarea>" in page.text
            if api is not None:
                assert api.status_code == 400
                error = api.json()
                assert f"<code>{error['error_code']}</code> {escape(error['error_msg'])}" in page.text
        aliases = _submit(c, "kind: job\nmetadata: &m {name: x}\nspec: *m\n")
        assert aliases.status_code == 400 and "<code>ModelArts.2787</code>" in aliases.text
        assert "aliases" in aliases.text
        for deep in ("- " * 3000 + "x", "a: " + "1" * 5000):  # PyYAML's own limits: a 400, never a 500
            refused = _submit(c, deep)
            assert refused.status_code == 400 and "<code>ModelArts.2787</code>" in refused.text
        empty = _submit(c, "  ")
        assert empty.status_code == 400 and "The request body is empty" in empty.text


def test_delete_from_the_page_goes_through_the_api_service(server: Server) -> None:
    sdk = sdk_client(server)
    running = create_id(sdk, job_body("c-doomed", command="sleep 600; :"))
    wait_phase(sdk, running, "Running", timeout=60)
    with httpx.Client(base_url=server.url, timeout=10) as c:
        page = c.get(f"/console/{PROJECT}/jobs/{running}").text
        assert f'hx-post="/console/{PROJECT}/jobs/{running}/delete"' in page
        assert "It is Running: it is terminated first." in page  # the confirmation says so
        delete = f"/console/{PROJECT}/jobs/{running}/delete"
        assert c.post(delete).status_code == 403  # not htmx's
        assert c.post(f"/console/other-project/jobs/{running}/delete", headers=HX).status_code == 400  # not its
        r = c.post(delete, headers=HX)
        assert r.status_code == 200 and r.headers["hx-redirect"] == f"/console/{PROJECT}/jobs"
        assert "c-doomed" not in c.get(f"/console/{PROJECT}/jobs").text
        assert c.get(f"{server.api}/training-jobs/{running}").json()["error_code"] == "ModelArts.2775"
        again = c.post(delete, headers=HX)  # as DELETE answers a job that is gone
        assert again.status_code == 400 and "<code>ModelArts.2775</code>" in again.text


def test_the_queue_page_shows_nodes_flavors_quotas_and_why_each_job_waits(make_server: Any, tmp_path: Path) -> None:
    server = make_server(ONE_CORE)
    sdk = sdk_client(server)
    gate = tmp_path / "gate"
    hold = f'while [ ! -e "{gate}" ]; do sleep 0.05; done'
    holder = create_id(sdk, job_body("c-holder", command=hold))
    wait_phase(sdk, holder, "Running", timeout=60)
    first = create_id(sdk, job_body("c-waiter", command="true"))
    second = create_id(sdk, job_body("c-behind", command="true"))
    with httpx.Client(base_url=server.url, timeout=10) as c:
        assert c.put(f"{server.api}/training-quotas",
                     json={"quotas": [{"resource": "running_jobs", "quota": 5}]}).status_code == 200

        def queue() -> str:
            html = c.get(f"/console/{PROJECT}/queue").text
            return html if "insufficient resources in pool" in html and "queued behind job" in html else ""

        html = wait_for(queue, timeout=30, message="both waiting jobs' reasons on the queue page")
        assert html.index("c-waiter") < html.index("c-behind")  # in queue order
        assert f"queued behind job {first}" in html and "1 <small>of 2 in pool-local</small>" in html
        assert "c-holder" not in html.split('data-testid="nodes"')[0]  # running: not waiting
        assert "<td>0 / 1</td>" in html  # the node's one core, held by c-holder
        assert "<code>modelarts.local.cpu.1u</code>" in html  # the catalog's flavors
        assert "<tr><td>Running jobs</td><td>1</td><td>5</td></tr>" in html  # the quota, and its use
        other = c.get("/console/other-project/queue").text
        assert "No job of this project is waiting." in other and "c-waiter" not in other
        gate.touch()
        for job_id in (holder, first, second):
            assert wait_phase(sdk, job_id, timeout=60).status.phase == "Completed"
        assert "No job of this project is waiting." in c.get(f"/console/{PROJECT}/queue").text


def test_the_project_switcher_and_the_live_rows_keep_the_page(server: Server) -> None:
    sdk = sdk_client(server)
    job_id = create_id(sdk, job_body("c-live", command="true"))
    wait_phase(sdk, job_id, timeout=60)
    with httpx.Client(base_url=server.url, timeout=10) as c:
        r = c.get("/console", params={"project": "other-project", "section": "queue"})
        assert r.status_code == 303 and r.headers["location"] == "/console/other-project/queue"
        assert c.get("/console", params={"project": "../x"}).headers["location"] == "/console/default/jobs"
        other = c.get("/console/other-project/jobs")  # opened: remembered
        assert "0 found" in other.text and "c-live" not in other.text
        assert 'name="section" value="jobs"' in other.text
        assert c.get("/console").headers["location"] == "/console/other-project/jobs"
        page = c.get(f"/console/{PROJECT}/jobs", params={"phase": "Completed", "name": "live", "page": "1"})
        polled = f'hx-get="/console/{PROJECT}/jobs/rows?phase=Completed&amp;name=live&amp;sort=create_time&amp;' \
                 'order=desc&amp;page=1" hx-trigger="every 3s"'
        assert polled in page.text
        rows = c.get(f"/console/{PROJECT}/jobs/rows", params={"phase": "Completed", "name": "live"})
        assert rows.status_code == 200 and _rows(rows.text) == ["c-live"] and polled in rows.text
        assert '<small id="found" hx-swap-oob="true">1 found</small>' in rows.text
        assert '''hx-swap-oob="outerHTML:.count[data-phase='Completed']">1</span>''' in rows.text
        assert _rows(c.get(f"/console/{PROJECT}/jobs/rows", params={"phase": "Failed"}).text) == []


RETRIED_TICKER = ('if [ -e "$MA_HOME/again" ]; then echo "second try"; i=0; while [ ! -e "{gate}" ]; do i=$((i+1)); '
                  'echo "tick $i"; sleep 0.1; done; echo "Done OK"; exit 0; fi; '
                  'touch "$MA_HOME/again"; echo "first try"; echo "NCCL timeout" >&2; exit 4')


def retried_ticker(sdk: Any, name: str, gate: Path) -> str:
    """A job whose first attempt fails and is retried once; the retry ticks until `gate` exists."""
    body = job_body(name, command=RETRIED_TICKER.format(gate=gate))
    body["metadata"]["annotations"] = {"fault-tolerance/job-retry-num": "1",
                                       "fault-tolerance/job-unconditional-retry": "true"}
    return create_id(sdk, body)


def _follow_url(html: str) -> str:
    """The log poller's URL in a page or fragment ('' when it does not poll)."""
    m = re.search(r'id="log-follow"[^>]*hx-get="([^"]+)" hx-trigger="every 2s"', html)
    return m.group(1).replace("&amp;", "&") if m else ""


def test_a_tasks_log_by_attempt_followed_searched_and_its_usage(server: Server, tmp_path: Path) -> None:
    sdk = sdk_client(server)
    gate = tmp_path / "gate"
    job_id = retried_ticker(sdk, "c-logs", gate)
    base = f"/console/{PROJECT}/jobs/{job_id}"
    with httpx.Client(base_url=server.url, timeout=10) as c:
        def ticking() -> str:
            view = c.get(f"{base}/log").text  # the latest attempt's tail
            return view if "tick 3\n" in view else ""

        view = wait_for(ticking, timeout=60, message="the retry's log ticking")
        assert "attempt #2" in view and "first try" not in view and "second try" in view
        # an earlier attempt's log, when chosen (the page itself takes the same choice)
        first = c.get(f"{base}/log", params={"attempt": "1"}).text
        assert "first try" in first and "NCCL timeout" in first and "tick" not in first
        assert "(of 2)" in first and _follow_url(first) == ""  # it ended: nothing to follow
        page = c.get(base, params={"attempt": "1"}).text
        assert '<option value="1" selected>#1</option>' in page and "first try" in page
        # following: the lines after the last one shown, and a poller that asks after the new last line
        url = _follow_url(view)
        after = int(url.rsplit("after=", 1)[1])
        assert url.startswith(f"{base}/log/follow?task=worker-0&attempt=2&follow=1&after=") and after >= 4

        def more() -> httpx.Response | None:
            r = c.get(url)
            return r if r.status_code == 200 else None  # 204: nothing new yet

        r = wait_for(more, timeout=30, message="new lines to follow")
        chunk = re.search(r'<pre hx-swap-oob="beforeend:#log-lines"><span>(.*?)</span></pre>', r.text, re.S)
        assert chunk is not None, r.text
        lines = chunk.group(1).splitlines()
        assert lines[0] == f"tick {after}"  # line after+1: "second try" is line 1, "tick k" line k+1
        assert [int(x.split()[1]) for x in lines] == list(range(after, after + len(lines)))
        assert _follow_url(r.text).endswith(f"after={after + len(lines)}")
        # a search: matching lines with their numbers, case-insensitive
        found = c.get(f"{base}/log", params={"q": "TICK 1"}).text
        matches = re.findall(r'<span class="ln">(\d+)</span>([^\n]*)\n', found)
        assert matches[0] == ("2", "tick 1") and all(t.startswith("tick 1") and int(n) == int(t[5:]) + 1
                                                     for n, t in matches)
        assert "second try" not in found and _follow_url(found) == ""
        earlier = c.get(f"{base}/log", params={"attempt": "1", "q": "nccl"}).text
        assert re.search(r'1 line\s+of worker-0\'s log, attempt #1, contains “nccl”', earlier)
        assert re.search(r'<span class="ln">\d</span>NCCL timeout\n', earlier)
        assert "No line\n" in c.get(f"{base}/log", params={"q": "no such line"}).text

        def sampled() -> dict[str, Any] | None:
            data = c.get(f"{base}/usage").json()
            return data if data["tasks"] == ["worker-0"] and any(v is not None for v in data["cpu"][1]) else None

        wait_for(sampled, timeout=30, message="a CPU sample of the running task")
        gate.touch()
        assert wait_phase(sdk, job_id, timeout=60).status.phase == "Completed"
        # the job ended: a last poll brings the rest, and the poller stops
        last = c.get(_follow_url(r.text))
        assert last.status_code == 200 and "Done OK" in last.text and _follow_url(last.text) == ""
        assert "the job has ended" in last.text
        # CPU and memory, kept after the end: a point a minute from the first start, a line per task
        data = c.get(f"{base}/usage").json()
        assert data["final"] is True and data["tasks"] == ["worker-0"]
        times, cpu, mem = data["cpu"][0], data["cpu"][1], data["mem"][1]
        assert times and len(cpu) == len(times) == len(mem) and data["mem"][0] == times
        assert any(v is not None and v >= 0 for v in cpu) and any(v is not None and v > 0 for v in mem)
        page = c.get(base).text
        assert 'id="usage"' in page and "&#34;worker-0&#34;" in page  # the charts' columns, in the page


def test_a_gone_jobs_fragments_answer_a_message_not_json(server: Server) -> None:
    gone = "00000000-0000-4000-8000-000000000000"
    base = f"/console/{PROJECT}/jobs/{gone}"
    with httpx.Client(base_url=server.url, timeout=10, headers={"HX-Request": "true"}) as c:
        for r in (c.get(f"{base}/live"), c.get(f"{base}/log"), c.get(f"{base}/log/follow?after=3"),
                  c.get(f"{base}/usage"), c.post(f"{base}/terminate")):
            assert r.status_code == 404 and r.headers["content-type"].startswith("text/html"), (r.request.url, r.text)
            assert "has no training job" in r.text and gone in r.text and "ModelArts" not in r.text
            assert r.headers["x-openarts-missing"] == "1"  # console/jobview.js lets htmx swap it in


PREEMPTION = DEFAULT_CONFIG.split("[[nodes]]")[0] + """
[[flavors]]
flavor_id = "t.1u"
cpu_cores = 1
memory_gb = 1

[[flavors]]
flavor_id = "t.2u"
cpu_cores = 2
memory_gb = 1

[[nodes]]
name = "n1"
cpu_cores = 2
memory_gb = 64
"""


def test_the_timeline_shows_waits_and_a_preemption(make_server: Any, tmp_path: Path) -> None:
    server = make_server(PREEMPTION)
    marker, gate = tmp_path / "resume", tmp_path / "gate"
    with httpx.Client(base_url=server.api, timeout=10) as api, httpx.Client(base_url=server.url, timeout=10) as c:
        def create(name: str, command: str, flavor: str, nodes: int, priority: int, preemptible: bool) -> str:
            r = api.post("/training-jobs", json={
                "kind": "job", "metadata": {"name": name}, "algorithm": {"command": command},
                "spec": {"resource": {"flavor_id": flavor, "node_count": nodes},
                         "schedule_policy": {"priority": priority, "preemptible": preemptible}}})
            assert r.status_code == 201, r.text
            return str(r.json()["metadata"]["id"])

        def doc(job_id: str) -> dict[str, Any]:
            return dict(api.get(f"/training-jobs/{job_id}").json())

        low = create("c-low", f'[ -e "{marker}" ] && exit 0; sleep 600', "t.1u", 2, 1, True)
        wait_for(lambda: doc(low)["status"]["phase"] == "Running", message="low running")
        high = create("c-high", f'while [ ! -e "{gate}" ]; do sleep 0.05; done', "t.2u", 1, 3, False)
        wait_for(lambda: doc(high)["status"]["phase"] == "Running", message="high preempted its way in")
        assert doc(low)["status"]["phase"] == "Pending"
        page = c.get(f"/console/{PROJECT}/jobs/{low}").text
        preempted = re.findall(r'<div class="bar ended preempted"[^>]*title="attempt #1: preempted by job '
                               rf'{high} \([^)]*\)" data-testid="attempt">#1 preempted</div>', page)
        assert len(preempted) == 1, page
        assert 'data-testid="wait">queued</div>' in page  # before its first start
        assert re.search(r'<div class="bar wait now"[^>]*title="waiting since then \(Queuing\): preempted, back in '
                         r'the queue \([^)]*\)" data-testid="wait">queued</div>', page)  # in the queue again now
        marker.touch()
        gate.touch()
        wait_for(lambda: doc(low)["status"]["phase"] == "Completed", timeout=60, message="low resumed")
        page = c.get(f"/console/{PROJECT}/jobs/{low}").text
        spans = re.findall(r'<div class="bar ([a-z ]+)"[^>]*data-testid="(\w+)">([^<]*)</div>', page)
        assert [(css, kind, label) for css, kind, label in spans if kind != "prep"] == [
            ("wait", "wait", "queued"), ("ended preempted", "attempt", "#1 preempted"),
            ("wait", "wait", "requeued"), ("ok", "attempt", "#2")], spans
        assert "preempted: back in the queue until attempt #2" in page
