"""spec.notification through a real server: a job's phase changes are posted to the webhook of its topic
(a receiver this test starts), signed, in order; a failing receiver is retried with backoff and each
try is an event; a topic with no webhook and bad notifications are reported clearly."""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest

from conftest import DEFAULT_CONFIG, Server, job_body, sdk_client, wait_for
from helpers import create_id, expect_error, wait_phase

SECRET = "hook-secret"


class Receiver:
    """An HTTP server on 127.0.0.1 that records every POST; a path in `failing` answers 503 that many
    times first."""

    def __init__(self) -> None:
        self.received: list[tuple[str, dict[str, str], bytes]] = []
        self.failing: dict[str, int] = {}
        self.lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                with outer.lock:
                    left = outer.failing.get(self.path, 0)
                    if left:
                        outer.failing[self.path] = left - 1
                    else:
                        outer.received.append((self.path, dict(self.headers), body))
                self.send_response(503 if left else 204)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def on(self, path: str) -> list[dict[str, Any]]:
        with self.lock:
            return [json.loads(body) for p, _, body in self.received if p == path]

    def headers_of(self, path: str) -> list[tuple[dict[str, str], bytes]]:
        with self.lock:
            return [(h, body) for p, h, body in self.received if p == path]


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.httpd.shutdown()


@pytest.fixture
def notifying(make_server: Callable[..., Server], receiver: Receiver) -> Server:
    return make_server(DEFAULT_CONFIG + f"""
[notifications]
retries = 3

[notifications.topics]
"urn:smn:local:p:signed" = {{ url = "{receiver.url}/signed", secret = "{SECRET}" }}
"urn:smn:local:p:flaky" = "{receiver.url}/flaky"
"urn:smn:local:p:down" = "http://127.0.0.1:9/down"
"urn:smn:local:p:garbled" = "https://exa\u00a0mple/hook"
""")


def _events(server: Server, job_id: str) -> list[dict[str, Any]]:
    return list(httpx.get(f"{server.api}/training-jobs/{job_id}/events", params={"limit": 500}, timeout=10)
                .json()["events"])


def _with(name: str, command: str, topic: str, events: list[str] | None = None) -> dict[str, Any]:
    body = job_body(name, command=command)
    body["spec"]["notification"] = {"topic_urn": topic, **({"events": events} if events is not None else {})}
    return body


def test_a_jobs_events_are_posted_signed_in_order(notifying: Server, receiver: Receiver) -> None:
    """No events listed: all of them. The first attempt fails and is restarted (JobRestarted), the
    second fails for good."""
    sdk = sdk_client(notifying)
    body = _with("n-signed", '[ -e "$MA_HOME/again" ] && exit 3; touch "$MA_HOME/again"; exit 4',
                 "urn:smn:local:p:signed")
    body["metadata"]["annotations"] = {"fault-tolerance/job-retry-num": "1",
                                       "fault-tolerance/job-unconditional-retry": "true"}
    job_id = create_id(sdk, body)
    assert wait_phase(sdk, job_id, timeout=60).status.phase == "Failed"
    wait_for(lambda: len(receiver.on("/signed")) == 3, timeout=30, message="three events posted")
    messages = receiver.on("/signed")  # restarted in place (proc_restart): it stays Running, no second start
    assert [(m["event"], m["phase"]) for m in messages] == [
        ("JobStarted", "Running"), ("JobRestarted", "Running"), ("JobFailed", "Failed")]
    end = messages[-1]
    assert {end["job_id"], end["job_name"], end["topic_urn"]} == {job_id, "n-signed", "urn:smn:local:p:signed"}
    assert "3" in end["message"] and "exit" in messages[1]["message"], messages
    for headers, body in receiver.headers_of("/signed"):
        expected = hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
        assert headers["X-Openarts-Signature"] == f"sha256={expected}"
        assert headers["Content-Type"] == "application/json"
    wait_for(lambda: sum(e["message"].startswith("Notification ") and "delivered" in e["message"]
                         for e in _events(notifying, job_id)) == 3, timeout=30, message="delivery events")


def test_a_failing_receiver_is_retried_with_backoff_and_each_try_is_an_event(notifying: Server,
                                                                             receiver: Receiver) -> None:
    receiver.failing["/flaky"] = 2
    sdk = sdk_client(notifying)
    job_id = create_id(sdk, _with("n-flaky", "true", "urn:smn:local:p:flaky", ["JobCompleted"]))
    assert wait_phase(sdk, job_id, timeout=60).status.phase == "Completed"
    wait_for(lambda: len(receiver.on("/flaky")) == 1, timeout=30, message="delivered at the third try")
    assert receiver.on("/flaky")[0]["event"] == "JobCompleted"  # JobStarted was not asked for
    wait_for(lambda: any("delivered at try 3" in e["message"] for e in _events(notifying, job_id)), timeout=30,
             message="the delivery event")
    tries = [e for e in _events(notifying, job_id) if "failed (try" in e["message"]]
    assert [("try 1 of 4" in e["message"], e["level"], e["source"]) for e in tries][:1] == \
        [(True, "Warning", "Notification")], tries
    assert len(tries) == 2 and "HTTP 503" in tries[0]["message"] and "tried again in 1 s" in tries[0]["message"]


def test_an_unreachable_receiver_is_given_up_after_its_retries(notifying: Server) -> None:
    sdk = sdk_client(notifying)
    job_id = create_id(sdk, _with("n-down", "true", "urn:smn:local:p:down", ["JobCompleted"]))
    assert wait_phase(sdk, job_id, timeout=60).status.phase == "Completed"
    wait_for(lambda: any("not delivered after 4 tries" in e["message"] for e in _events(notifying, job_id)),
             timeout=60, message="given up after 1 + 3 tries (1 + 2 + 4 s of backoff)")
    assert not any("127.0.0.1:9" in e["message"] for e in _events(notifying, job_id))  # the URL is not shown


def test_a_topic_without_a_webhook_and_bad_notifications(notifying: Server) -> None:
    sdk = sdk_client(notifying)
    job_id = create_id(sdk, _with("n-nowhere", "true", "urn:smn:cn-north-4:abc:training", ["JobCompleted"]))
    assert wait_phase(sdk, job_id, timeout=60).status.phase == "Completed"
    wait_for(lambda: any("no webhook is configured" in e["message"] for e in _events(notifying, job_id)),
             timeout=30, message="the unroutable topic reported")
    exc = expect_error(lambda: create_id(sdk, _with("n-bad", "true", "urn:x", ["Done"])), 400, "ModelArts.2788")
    assert "spec.notification.events" in exc.error_msg and "'Done' is not a training event" in exc.error_msg
    exc = expect_error(lambda: create_id(sdk, _with("n-bad", "true", "")), 400, "ModelArts.2788")
    assert "spec.notification.topic_urn" in exc.error_msg


def test_a_notification_set_by_put_announces_the_jobs_end(notifying: Server, receiver: Receiver,
                                                           tmp_path: Any) -> None:
    sdk = sdk_client(notifying)
    gate = tmp_path / "go"
    job_id = create_id(sdk, job_body("n-put", command=f'while [ ! -e "{gate}" ]; do sleep 0.1; done'))
    wait_for(lambda: any(e["message"].startswith("Job started") for e in _events(notifying, job_id)), timeout=30,
             message="running")
    r = httpx.put(f"{notifying.api}/training-jobs/{job_id}", timeout=10,
                  json={"spec": {"notification": {"topic_urn": "urn:smn:local:p:signed", "events": ["JobCompleted"]}}})
    assert r.status_code in (200, 204), r.text
    gate.touch()
    assert wait_phase(sdk, job_id, timeout=60).status.phase == "Completed"
    wait_for(lambda: [m["event"] for m in receiver.on("/signed") if m["job_id"] == job_id] == ["JobCompleted"],
             timeout=30, message="the end announced")


def test_a_url_the_client_cannot_use_stalls_no_other_message(notifying: Server, receiver: Receiver) -> None:
    """A webhook URL httpx refuses outright (a no-break space in its host) fails its own message, tried
    and given up like any failure; a message queued beside it is delivered once, not again and again."""
    sdk = sdk_client(notifying)
    bad = create_id(sdk, _with("n-garbled", "true", "urn:smn:local:p:garbled", ["JobCompleted"]))
    good = create_id(sdk, _with("n-good", "true", "urn:smn:local:p:signed", ["JobCompleted"]))
    for job_id in (bad, good):
        assert wait_phase(sdk, job_id, timeout=60).status.phase == "Completed"
    wait_for(lambda: any("not delivered after 4 tries" in e["message"] for e in _events(notifying, bad)),
             timeout=60, message="the garbled URL given up")
    assert [m["job_id"] for m in receiver.on("/signed")] == [good]  # once
    tries = [e["message"] for e in _events(notifying, bad) if "failed (try" in e["message"]]
    assert tries and "InvalidURL" in tries[0] and "exa" not in tries[0], tries
