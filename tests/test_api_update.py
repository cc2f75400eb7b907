"""PUT /training-jobs/{id}: what ModelArts lets a user change is applied and shows in GET; anything else
is refused with a clear error and changes nothing (service/update.py)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from huaweicloudsdkmodelarts.v1 import (
    ChangeTrainingJobDescriptionRequest,
    ListTrainingJobEventsRequest,
    StopTrainingJobRequest,
)

from conftest import Server, job_body
from helpers import ONE_CORE, create_id, expect_error, run_to_end, sdk_client, show_json, wait_phase

RETRY_ONCE = {"fault-tolerance/job-retry-num": "1", "fault-tolerance/job-unconditional-retry": "true"}
FAIL_FIRST = 'f="$MA_JOB_DIR/.tried"; if [ -e "$f" ]; then echo second; exit 0; fi; touch "$f"; exit 3'


def _update(sdk: Any, job_id: str, body: dict[str, Any]) -> Any:
    resp = sdk.change_training_job_description(ChangeTrainingJobDescriptionRequest(training_job_id=job_id, body=body))
    assert resp.status_code == 200
    return resp


def _events(sdk: Any, job_id: str) -> list[str]:
    resp = sdk.list_training_job_events(ListTrainingJobEventsRequest(training_job_id=job_id, limit=100))
    return [e.message for e in resp.events]


@pytest.fixture
def queued(make_server: Callable[..., Server]) -> tuple[Any, str, str]:
    """(sdk, a running one-core hog, a job queued behind it)."""
    server = make_server(ONE_CORE)
    sdk = sdk_client(server)
    hog = create_id(sdk, job_body("hog", command="sleep 60"))
    wait_phase(sdk, hog, "Running")
    body = job_body("queued", command=FAIL_FIRST)
    body["metadata"]["annotations"] = {"owner": "team-a"}
    job_id = create_id(sdk, body)
    wait_phase(sdk, job_id, "Pending")
    return sdk, hog, job_id


def test_every_changeable_field_shows_in_get(queued: tuple[Any, str, str]) -> None:
    sdk, _hog, job_id = queued
    _update(sdk, job_id, {
        "description": "changed",
        "spec": {"schedule_policy": {"priority": 3, "preemptible": True},
                 "notification": {"topic_urn": "urn:smn:region:project:topic", "events": ["JobCompleted"]}},
        "endpoints": {"ssh": {"key_pair_names": ["kp-1", "kp-2"]}},
        "metadata": {"annotation": {"note": "hello", "owner": "team-b"}},  # the SDK's singular name
    })
    doc = show_json(sdk, job_id)
    assert doc["metadata"]["description"] == "changed"
    assert doc["spec"]["schedule_policy"]["priority"] == 3
    assert doc["spec"]["schedule_policy"]["preemptible"] is True
    assert doc["spec"]["notification"] == {"topic_urn": "urn:smn:region:project:topic", "events": ["JobCompleted"]}
    assert doc["endpoints"]["ssh"]["key_pair_names"] == ["kp-1", "kp-2"]
    assert doc["metadata"]["annotations"] == {"owner": "team-b", "note": "hello"}, "merged into the job's"
    events = _events(sdk, job_id)
    assert "Priority changed from 1 to 3." in events and "Preemptible changed to true." in events
    assert "Annotations changed: note, owner." in events

    # {} and [] remove; `annotations` (the create body's spelling) is accepted too
    _update(sdk, job_id, {"spec": {"notification": {}}, "endpoints": {"ssh": {"key_pair_names": []}},
                          "metadata": {"annotations": {"note": "again"}}})
    doc = show_json(sdk, job_id)
    assert "notification" not in doc["spec"] and "endpoints" not in doc
    assert doc["metadata"]["annotations"] == {"owner": "team-b", "note": "again"}
    assert doc["metadata"]["description"] == "changed", "what a PUT leaves out stays"


REFUSED: list[tuple[dict[str, Any], str]] = [  # (body, a fragment of the message)
    ({"metadata": {"name": "renamed"}}, "metadata.name"),
    ({"spec": {"resource": {"flavor_id": "modelarts.local.cpu.2u"}}}, "spec.resource"),
    ({"algorithm": {"command": "rm -rf /"}}, "algorithm"),
    ({"kind": "job"}, "kind"),
    ({"endpoints": {"jupyter_lab": {"url": "x"}}}, "endpoints.jupyter_lab"),
    ({"spec": {"schedule_policy": {"required_affinity": {"affinity_type": "cabinet"}}}},
     "spec.schedule_policy.required_affinity"),
    ({"spec": {"notification": {"topic_urn": "urn:x", "channel": "sms"}}}, "spec.notification.channel"),
    ({"spec": {"notification": {"events": ["JobFailed"]}}}, "spec.notification.topic_urn"),
    ({"spec": {"schedule_policy": {"priority": 4}}}, "priority"),
    ({"spec": {"schedule_policy": {"priority": True}}}, "priority"),
    ({"spec": {"schedule_policy": {"preemptible": "yes"}}}, "preemptible"),
    ({"endpoints": {"ssh": {"key_pair_names": "kp-1"}}}, "key_pair_names"),
    ({"endpoints": {"ssh": {"key_pair_names": [""]}}}, "key_pair_names[0]"),
    ({"metadata": {"annotation": ["a"]}}, "metadata.annotation"),
    ({"metadata": {"annotation": {"fault-tolerance/job-retry-num": "many"}}}, "job-retry-num"),
    ({"description": "a\x00b"}, "NUL"),
    ({"description": "d" * 257}, "description"),
    ({"description": "kept out", "spec": {"resource": {"node_count": 2}}}, "spec.resource"),
]


def test_what_cannot_be_changed_is_refused_and_nothing_changes(sdk: Any) -> None:
    job_id, _ = run_to_end(sdk, job_body("fixed", command="true"))
    before = show_json(sdk, job_id)
    for body, fragment in REFUSED:
        exc = expect_error(lambda body=body: _update(sdk, job_id, body), 400, "ModelArts.2788")
        assert fragment in exc.error_msg, (body, exc.error_msg)
        after = show_json(sdk, job_id)
        assert (after["metadata"], after["spec"], after.get("endpoints")) == (
            before["metadata"], before["spec"], before.get("endpoints")), body


def test_scheduling_changes_follow_the_phase(queued: tuple[Any, str, str]) -> None:
    sdk, hog, job_id = queued
    exc = expect_error(lambda: _update(sdk, hog, {"spec": {"schedule_policy": {"priority": 2}}}), 409,
                       "ModelArts.2878")
    assert "pending" in exc.error_msg
    _update(sdk, hog, {"spec": {"schedule_policy": {"preemptible": True}}})  # while running: yes
    assert show_json(sdk, hog)["spec"]["schedule_policy"]["preemptible"] is True
    _update(sdk, job_id, {"spec": {"schedule_policy": {"priority": 2}}})
    assert show_json(sdk, job_id)["spec"]["schedule_policy"]["priority"] == 2


def test_preemptible_cannot_change_once_the_job_ended(sdk: Any) -> None:
    job_id, _ = run_to_end(sdk, job_body("ended", command="true"))
    exc = expect_error(lambda: _update(sdk, job_id, {"spec": {"schedule_policy": {"preemptible": True}}}), 409,
                       "ModelArts.2878")
    assert "until it ends" in exc.error_msg
    _update(sdk, job_id, {"description": "still describable", "metadata": {"annotation": {"k": "v"}}})
    doc = show_json(sdk, job_id)
    assert (doc["metadata"]["description"], doc["metadata"]["annotations"]) == ("still describable", {"k": "v"})


def test_changed_fault_tolerance_annotations_take_effect(queued: tuple[Any, str, str]) -> None:
    """A queued job that fails its first run: with retries given by a PUT while it waits, it is retried
    and completes instead of failing."""
    sdk, hog, job_id = queued
    _update(sdk, job_id, {"metadata": {"annotation": RETRY_ONCE}})
    sdk.stop_training_job(StopTrainingJobRequest(training_job_id=hog, body={"action_type": "terminate"}))
    job = wait_phase(sdk, job_id, timeout=60)
    assert job.status.phase == "Completed", [r.end_reason for r in job.status.running_records]
    assert len(job.status.running_records) == 2
