"""spec.notification (core/notify.py): the events a notification wants, what each phase change is, and
that a stored request is read back whatever its notification (it is checked at create only)."""

from __future__ import annotations

import pytest

from openarts.core import errors
from openarts.core.notify import DEFAULT_EVENTS, EVENTS, event_of, parse_notification, wants
from openarts.core.phases import Phase
from openarts.core.resources import build_catalog
from openarts.core.spec import parse_job

CATALOG = build_catalog({"flavors": [{"flavor_id": "f", "cpu_cores": 1, "memory_gb": 1}]}, gpus=[])


def test_no_events_means_all_of_them_and_the_stored_form_round_trips() -> None:
    n = parse_notification({"topic_urn": "urn:smn:r:p:t"})
    assert n is not None and n.events == DEFAULT_EVENTS == frozenset(EVENTS)
    some = parse_notification({"topic_urn": "t", "events": ["JobFailed", "JobStarted"]})
    assert some is not None and some.stored_events() == "JobStarted,JobFailed"
    assert wants(some.stored_events(), "JobFailed") and not wants(some.stored_events(), "JobCompleted")
    assert parse_notification(None) is None and parse_notification({}) is None


@pytest.mark.parametrize(("value", "field"), [
    ({"events": ["JobFailed"]}, "spec.notification.topic_urn"),
    ({"topic_urn": " "}, "spec.notification.topic_urn"),
    ({"topic_urn": "t\n"}, "spec.notification.topic_urn"),
    ({"topic_urn": "t", "events": ["Failed"]}, "spec.notification.events"),
    ({"topic_urn": "t", "events": "JobFailed"}, "spec.notification.events"),
    ({"topic_urn": "t", "extra": 1}, "spec.notification.extra"),
    ("urn", "spec.notification"),
])
def test_bad_notifications_name_their_field(value: object, field: str) -> None:
    with pytest.raises(errors.InvalidRequest) as info:
        parse_notification(value)
    assert f"Invalid parameter {field}:" in info.value.message


@pytest.mark.parametrize(("was", "to", "event"), [
    (Phase.PENDING, Phase.RUNNING, "JobStarted"),
    (Phase.RUNNING, Phase.COMPLETED, "JobCompleted"),
    (Phase.RUNNING, Phase.FAILED, "JobFailed"),
    (Phase.CREATING, Phase.ABNORMAL, "JobFailed"),
    (Phase.TERMINATING, Phase.TERMINATED, "JobTerminated"),
    (Phase.RUNNING, Phase.PENDING, None),  # a restart or a preemption: named by the supervisor
    (Phase.RUNNING, Phase.TERMINATING, None),
    (Phase.CREATING, Phase.PENDING, None),
])
def test_which_phase_changes_are_events_by_themselves(was: Phase, to: Phase, event: str | None) -> None:
    assert event_of(was, to) == event


def test_a_stored_request_reads_back_whatever_its_notification() -> None:
    """Jobs created before notifications were checked keep running: parse_job, which also reads stored
    requests back, does not look at the notification (the service checks it at create)."""
    body = {"kind": "job", "metadata": {"name": "j"}, "algorithm": {"command": "true"},
            "spec": {"resource": {"flavor_id": "f", "node_count": 1},
                     "notification": {"topic_urn": "urn", "events": ["SomethingOld"]}}}
    assert parse_job(body, CATALOG).request["spec"]["notification"]["events"] == ["SomethingOld"]
