"""`GET .../tasks/{task_id}/logs/url` (documented by ModelArts, not in the SDK): a link to a task's log,
valid for 5 minutes, that opens without AK/SK (a browser, curl). On a server that requires credentials:
asking for a link needs them, following it does not; a tampered or expired link, or one for another
task, is refused."""

from __future__ import annotations

import time
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx

from conftest import PROJECT, Server, job_body
from helpers import create_id, wait_phase
from openarts.security.log_links import LogLinks
from openarts.security.secretbox import load_master_key
from security_support import create_key, sdk_for_key, signed_client


def test_a_log_link_opens_the_log_without_credentials_and_only_that_log(make_server: Any) -> None:
    server: Server = make_server()
    key = create_key(server.data_dir)
    sdk = sdk_for_key(server, key)
    job_id = create_id(sdk, job_body("linked", command="echo line-one; echo line-two"))
    assert wait_phase(sdk, job_id, timeout=30).status.phase == "Completed"
    path = f"/training-jobs/{job_id}/tasks/worker-0/logs/url"
    assert httpx.get(f"{server.api}{path}").status_code == 401  # asking for a link needs credentials
    with signed_client(server, key) as client:
        view = client.get(path, headers={"Content-Type": "text/plain"})
        download = client.get(path, params={"Content-Type": "application/octet-stream"})
    assert view.status_code == 200, view.text
    url = view.json()["obs_url"]
    assert url.startswith(server.url + f"/v2/{PROJECT}/training-jobs/{job_id}/tasks/worker-0/logs/download?")
    page = httpx.get(url)  # no AK/SK
    assert page.status_code == 200 and page.text == "line-one\nline-two\n"
    assert page.headers["content-disposition"].startswith("inline")
    got = httpx.get(download.json()["obs_url"])
    assert got.status_code == 200 and got.headers["content-disposition"].startswith("attachment")
    assert f'filename="{job_id}-worker-0.log"' in got.headers["content-disposition"]

    q = {k: v[0] for k, v in parse_qs(urlsplit(url).query).items()}
    base = url.split("?", 1)[0]
    for changed in ({"signature": "0" * 64}, {"attempt": "2"}, {"disposition": "attachment"},
                    {"expires": str(int(q["expires"]) + 3600)}):
        r = httpx.get(base, params={**q, **changed})
        assert r.status_code == 401 and r.json()["error_code"] == "APIGW.0301", (changed, r.text)
    assert httpx.get(base.replace("worker-0", "worker-1"), params=q).status_code in (400, 401)
    links = LogLinks(load_master_key(server.data_dir, create=False))
    past = int(time.time()) - 1
    expired = {**q, "expires": str(past), "signature": links.sign(PROJECT, job_id, "worker-0", 1, "inline", past)}
    assert httpx.get(base, params=expired).status_code == 401  # signed, but expired
