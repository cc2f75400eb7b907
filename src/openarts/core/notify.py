"""`spec.notification` ({topic_urn, events[]}): which events of a job are announced, and where.

The events are ModelArts' training event categories (GET /v2/{project_id}/training-event-categories):
JobStarted, JobCompleted, JobFailed, JobTerminated, JobRestarted, JobHanged, JobPreempted; none listed:
all of them. ModelArts publishes them to an SMN topic; openarts posts them as JSON to webhooks: the
topic names one configured in `[notifications.topics]` (config.py), or is itself an http(s) URL where
the server allows that (`[notifications] allow_job_urls`). The store queues one message per event a
job's notification wants, in the transaction of the change it announces (store/jobs.py), and the
supervisor's notifier delivers them (supervisor/notifier.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from openarts.core import errors
from openarts.core.phases import Phase

STARTED, COMPLETED, FAILED, TERMINATED = "JobStarted", "JobCompleted", "JobFailed", "JobTerminated"
RESTARTED, HANGED, PREEMPTED = "JobRestarted", "JobHanged", "JobPreempted"


@dataclass(frozen=True)
class Category:
    """A training event category, as GET /training-event-categories lists it."""

    id: str
    description: str  # when openarts announces it


# The one table of the categories: what spec.notification.events accepts, what the store queues messages
# for (transition(), queue_notification()), and what GET /training-event-categories lists.
CATEGORIES = (
    Category(STARTED, "The job started running: every worker placed and launched (Pending to Running)."),
    Category(COMPLETED, "The job completed: every worker exited 0."),
    Category(FAILED, "The job failed, or ended abnormally (it could not be prepared or started)."),
    Category(TERMINATED, "The job was terminated: by the user, or by spec.auto_stop."),
    Category(RESTARTED, "The job is restarted by fault tolerance after an attempt ended in a fault."),
    Category(HANGED, "A task is suspected hung: no output and no CPU progress for the hang window."),
    Category(PREEMPTED, "The job was preempted by a higher-priority job and went back to the queue."),
)
EVENTS = tuple(c.id for c in CATEGORIES)
DEFAULT_EVENTS = frozenset(EVENTS)
MAX_TOPIC = 512
WEBHOOK_SCHEMES = ("http://", "https://")  # what a webhook's URL starts with


def event_of(was: Phase, to: Phase) -> str | None:
    """The event a phase change is, when it is one by itself (a restart or a preemption is named by
    the supervisor, which knows why the job went back)."""
    if to is Phase.RUNNING and was is Phase.PENDING:
        return STARTED
    return {Phase.COMPLETED: COMPLETED, Phase.FAILED: FAILED, Phase.ABNORMAL: FAILED,
            Phase.TERMINATED: TERMINATED}.get(to)


@dataclass(frozen=True)
class Notification:
    topic_urn: str
    events: frozenset[str] = DEFAULT_EVENTS

    def stored_events(self) -> str:
        """As the store keeps them: comma-separated, in EVENTS' order."""
        return ",".join(e for e in EVENTS if e in self.events)


def wants(events: str, event: str) -> bool:
    """Whether a stored notification (its `stored_events`) announces `event`."""
    return event in events.split(",")


def parse_notification(value: Any, path: str = "spec.notification") -> Notification | None:
    """The notification a request asks for; None for an absent or empty one; InvalidRequest naming the
    field for anything else."""
    if value is None or value == {}:
        return None
    if not isinstance(value, dict):
        raise _bad(path, "must be an object")
    unknown = sorted(set(value) - {"topic_urn", "events"})
    if unknown:
        raise _bad(f"{path}.{unknown[0]}", "a notification has only topic_urn and events")
    topic = value.get("topic_urn")
    if not isinstance(topic, str) or not topic.strip():
        raise _bad(f"{path}.topic_urn", "it is required with a notification ({} removes the notification)")
    if len(topic) > MAX_TOPIC or any(ord(c) < 32 for c in topic):
        raise _bad(f"{path}.topic_urn", f"must be at most {MAX_TOPIC} printable characters")
    events = value.get("events")
    if events is None or events == []:
        return Notification(topic)
    if not isinstance(events, list) or not all(isinstance(e, str) for e in events):
        raise _bad(f"{path}.events", "must be an array of strings")
    unknown = [e for e in events if e not in EVENTS]
    if unknown:
        raise _bad(f"{path}.events", f"{unknown[0]!r} is not a training event category; they are "
                   f"{', '.join(EVENTS)}")
    return Notification(topic, frozenset(events))


def _bad(path: str, why: str) -> errors.InvalidRequest:
    return errors.InvalidRequest(f"Invalid parameter {path}: {why}.")
