"""/metrics through a real server: real jobs move the counters and histograms (starts, ends by phase and
reason, recoveries, queue wait, pass latency, transfers, requests by route), jobs by phase are read from
the store, and the endpoint is authenticated like the API unless `metrics_public` opens it."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families

from conftest import DEFAULT_CONFIG, PROJECT, Server, job_body, sdk_client, wait_for
from helpers import create_id, wait_phase
from security_support import create_key, signed_headers

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(url: str, headers: dict[str, str] | None = None) -> Samples:
    r = httpx.get(url + "/metrics", headers=headers, timeout=10)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/plain; version=")
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(r.text) for s in family.samples}


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def test_real_jobs_move_the_counters_and_histograms(server: Server) -> None:
    sdk = sdk_client(server)
    before = scrape(server.url)
    assert value(before, "process_resident_memory_bytes") > 0
    assert value(before, "openarts_scheduling_pass_seconds_count") > 0  # the adoption pass, at least
    ok = create_id(sdk, job_body("m-ok", command='echo saved > "${1#--train_url=}/model"; :',
                                 outputs=[{"name": "train_url", "remote": {"obs": {"obs_url": "obs://bkt/m/"}}}]))
    failed = create_id(sdk, job_body("m-failed", command="exit 3"))
    retried_body = job_body("m-retried", command='[ -e "$MA_HOME/again" ] && exit 0; touch "$MA_HOME/again"; exit 4')
    retried_body["metadata"]["annotations"] = {"fault-tolerance/job-retry-num": "1",
                                               "fault-tolerance/job-unconditional-retry": "true"}
    retried = create_id(sdk, retried_body)
    phases = {j: wait_phase(sdk, j, timeout=60).status.phase for j in (ok, failed, retried)}
    assert phases == {ok: "Completed", failed: "Failed", retried: "Completed"}, phases

    after = scrape(server.url)

    def delta(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert delta("openarts_attempt_starts_total") == 4  # the retried job twice
    assert delta("openarts_jobs_finished_total", phase="Completed") == 2
    assert delta("openarts_jobs_finished_total", phase="Failed") == 1
    assert delta("openarts_attempt_failures_total", reason="user_exit") == 2  # the failed one, the first try
    assert sum(v for (n, _), v in after.items() if n == "openarts_recoveries_total") \
        - sum(v for (n, _), v in before.items() if n == "openarts_recoveries_total") == 1
    assert delta("openarts_queue_wait_seconds_count") == 3  # each job's first placement
    assert delta("openarts_scheduling_pass_seconds_count") > 0
    assert delta("openarts_transfers_total", kind="final", outcome="ok") >= 1  # m-ok's output went up
    assert delta("openarts_transfer_seconds_count", kind="final") >= 1
    # requests by route template, never by raw path
    route = "/v2/{project_id}/training-jobs"
    assert delta("openarts_http_requests_total", method="POST", route=route, status="201") == 3
    detail = "/v2/{project_id}/training-jobs/{job_id}"
    assert delta("openarts_http_requests_total", method="GET", route=detail, status="200") >= 3
    assert delta("openarts_http_request_duration_seconds_count", method="GET", route=detail) >= 3
    assert not any(ok in dict(labels).get("route", "") for (_, labels) in after)
    # jobs by phase: the stored state, every phase present
    assert value(after, "openarts_jobs", phase="Completed") == 2
    assert value(after, "openarts_jobs", phase="Failed") == 1
    assert value(after, "openarts_jobs", phase="Running") == 0
    assert value(after, "openarts_queue_depth") == 0


def test_queue_depth_and_a_refusal_are_counted(make_server: Callable[..., Server]) -> None:
    server = make_server(DEFAULT_CONFIG.replace("cpu_cores = 64", "cpu_cores = 1"))
    sdk = sdk_client(server)
    holder = create_id(sdk, job_body("m-holder", command="sleep 600"))
    wait_for(lambda: value(scrape(server.url), "openarts_jobs", phase="Running") == 1, timeout=30,
             message="the holder running")
    waiting = create_id(sdk, job_body("m-waiting", command="true"))  # no core left: it waits in the queue
    wait_for(lambda: value(scrape(server.url), "openarts_queue_depth") == 1, timeout=30, message="queued")
    assert value(scrape(server.url), "openarts_jobs", phase="Pending") == 1
    r = httpx.post(f"{server.api}/training-jobs", json={"kind": "job"}, timeout=10)
    assert r.status_code == 400
    samples = scrape(server.url)
    assert value(samples, "openarts_http_requests_total", method="POST", route="/v2/{project_id}/training-jobs",
                 status="400") == 1
    for job_id in (waiting, holder):
        httpx.post(f"{server.api}/training-jobs/{job_id}/actions", json={"action_type": "terminate"}, timeout=10)
    wait_for(lambda: value(scrape(server.url), "openarts_jobs", phase="Terminated") == 2, timeout=30,
             message="both terminated")
    assert value(scrape(server.url), "openarts_jobs_finished_total", phase="Terminated") == 2


def test_metrics_are_authenticated_like_the_api_unless_public(make_server: Callable[..., Server],
                                                               tmp_path: Path) -> None:
    closed_dir, open_dir = tmp_path / "closed", tmp_path / "open"
    closed_dir.mkdir()
    open_dir.mkdir()
    key = create_key(closed_dir, PROJECT, "alice")
    create_key(open_dir, PROJECT, "alice")
    closed = make_server(DEFAULT_CONFIG, data_dir=closed_dir)
    r = httpx.get(closed.url + "/metrics", timeout=10)
    assert r.status_code == 401, r.text
    assert "openarts_" not in r.text
    samples = scrape(closed.url, signed_headers("GET", closed.url + "/metrics", key))
    # the refused scrape was counted, under its route
    assert value(samples, "openarts_http_requests_total", method="GET", route="/metrics", status="401") == 1
    public = make_server(DEFAULT_CONFIG.replace("[server]", "[server]\nmetrics_public = true", 1), data_dir=open_dir)
    assert value(scrape(public.url), "openarts_queue_depth") == 0
    assert httpx.get(public.api + "/training-jobs/none", timeout=10).status_code == 401  # the API stays closed


def test_json_logs_carry_the_request_id(tmp_path: Path) -> None:
    """`log_format = "json"`: every line the server logs is one JSON object; with `access_log`, each
    request has a line whose request_id is the X-Request-Id its client got."""
    (tmp_path / "data").mkdir()
    server = Server(tmp_path / "data", DEFAULT_CONFIG.replace("[server]", '[server]\nlog_format = "json"\n'
                    'access_log = true', 1), tmp_path / "server.log", flags=["--log-level", "info"]).start()
    try:
        _check_json_log(server)
    finally:
        server.stop()


def _check_json_log(server: Server) -> None:
    r = httpx.post(f"{server.api}/training-jobs", content=b"{not json", timeout=10,
                   headers={"Content-Type": "application/json"})
    assert r.status_code == 400
    rid = r.headers["x-request-id"]

    def records() -> list[dict[str, object]]:
        lines = [ln for ln in server.log_path.read_text().splitlines() if ln.startswith("{")]
        return [json.loads(ln) for ln in lines]

    wait_for(lambda: any(rec.get("request_id") == rid for rec in records()), timeout=10, message="the access line")
    access = next(rec for rec in records() if rec.get("request_id") == rid and rec["logger"] == "openarts.access")
    assert (access["method"], access["route"], access["status"]) == ("POST", "/v2/{project_id}/training-jobs", 400)
    assert isinstance(access["duration_ms"], float) and access["level"] == "INFO"
    assert any(rec["logger"] == "openarts" and "ready" in str(rec["message"]) for rec in records())
    text = server.log_path.read_text()
    assert not [ln for ln in text.splitlines() if " INFO " in ln and not ln.startswith("{")], text[-2000:]
