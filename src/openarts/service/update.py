"""What a PUT on a training job may change: what ModelArts lets a user change there (the official SDK's
`JobUpdateRequestBody`):

    description                          the job's description (0 to 256 characters)
    spec.schedule_policy.priority        1 to 3, while the job is Creating or Pending
    spec.schedule_policy.preemptible     true/false, until the job ends
    spec.notification                    {topic_urn, events[]}; {} removes it (delivered to webhooks,
                                         core/notify.py, as at create)
    endpoints.ssh.key_pair_names         [names]; [] removes them (recorded and shown: openarts runs no SSH)
    metadata.annotation                  annotations to set, merged into the job's (the SDK's singular
                                         name; `annotations` is accepted too), validated as at create and
                                         stored in the request the supervisor parses to run the job

Anything else in the body is refused (400 ModelArts.2788) naming the field, so a change that would not be
applied is never answered 200. `parse_update` checks the body; `apply_static` changes the stored request
and document. Pure: no I/O.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

from openarts.core import errors
from openarts.core.notify import parse_notification
from openarts.core.resources import Catalog
from openarts.core.spec import check_description, parse_job

CHANGEABLE = ("description", "metadata.annotation", "spec.schedule_policy.priority",
              "spec.schedule_policy.preemptible", "spec.notification", "endpoints.ssh.key_pair_names")
_ALLOWED: dict[str, Any] = {  # the body's shape: None marks a leaf
    "description": None,
    "metadata": {"annotation": None, "annotations": None},
    "spec": {"schedule_policy": {"priority": None, "preemptible": None}, "notification": None},
    "endpoints": {"ssh": {"key_pair_names": None}},
}
MAX_TEXT = 1024
MAX_ITEMS = 100


@dataclass(frozen=True)
class JobUpdate:
    description: str | None = None
    priority: int | None = None
    preemptible: bool | None = None
    notification: dict[str, Any] | None = None  # {} removes it
    key_pair_names: list[str] | None = None  # [] removes them
    annotations: dict[str, Any] | None = None  # to set, validated against the whole job by apply_static

    @property
    def changes_static(self) -> bool:
        """Whether the stored request and document change (not only columns of the job row)."""
        return self.notification is not None or self.key_pair_names is not None or bool(self.annotations)


def _bad(path: str, why: str) -> errors.InvalidRequest:
    return errors.InvalidRequest(f"Invalid parameter {path}: {why}.")


def _check_shape(body: dict[str, Any], allowed: dict[str, Any], prefix: str) -> None:
    for key, value in body.items():
        path = f"{prefix}{key}"
        if key not in allowed:
            raise errors.InvalidRequest(
                f"Invalid parameter {path}: a training job update can change only {', '.join(CHANGEABLE)}.")
        sub = allowed[key]
        if sub is None or value is None:
            continue
        if not isinstance(value, dict):
            raise _bad(path, "must be an object")
        _check_shape(value, sub, f"{path}.")


def _text(value: Any, path: str, limit: int = MAX_TEXT, empty: bool = True) -> str:
    if not isinstance(value, str):
        raise _bad(path, "must be a string")
    if len(value) > limit:
        raise _bad(path, f"must be at most {limit} characters")
    if not empty and not value:
        raise _bad(path, "must not be empty")
    if "\x00" in value:
        raise _bad(path, "must not contain NUL characters")
    return value


def _texts(value: Any, path: str) -> list[str]:
    if not isinstance(value, list):
        raise _bad(path, "must be an array of strings")
    if len(value) > MAX_ITEMS:
        raise _bad(path, f"at most {MAX_ITEMS} items are allowed")
    return [_text(v, f"{path}[{i}]", limit=256, empty=False) for i, v in enumerate(value)]


def _notification(value: Any) -> dict[str, Any]:
    path = "spec.notification"
    if not isinstance(value, dict):
        raise _bad(path, "must be an object")
    unknown = sorted(set(value) - {"topic_urn", "events"})
    if unknown:
        raise _bad(f"{path}.{unknown[0]}", "a notification has only topic_urn and events")
    out: dict[str, Any] = {}
    if value.get("topic_urn") is not None:
        out["topic_urn"] = _text(value["topic_urn"], f"{path}.topic_urn", empty=False)
    if value.get("events") is not None:
        out["events"] = _texts(value["events"], f"{path}.events")
    if value and not out.get("topic_urn"):
        raise _bad(f"{path}.topic_urn", "it is required with a notification ({} removes the notification)")
    parse_notification(out)  # events are training event categories, as at create (core/notify.py)
    return out


def parse_update(body: Any) -> JobUpdate:
    """The changes a PUT body asks for; raises InvalidRequest naming the first field it cannot apply."""
    if not isinstance(body, dict):
        raise errors.InvalidJsonBody("The request body must be a JSON object.")
    _check_shape(body, _ALLOWED, "")
    spec = body.get("spec") or {}
    policy = spec.get("schedule_policy") or {}
    metadata = body.get("metadata") or {}
    ssh = (body.get("endpoints") or {}).get("ssh") or {}

    description = body.get("description")
    if description is not None:  # the very check create makes
        description = check_description(description, "description")
    priority = policy.get("priority")
    if priority is not None and (isinstance(priority, bool) or not isinstance(priority, int)
                                 or not 1 <= priority <= 3):
        raise _bad("spec.schedule_policy.priority", "an integer from 1 to 3")
    preemptible = policy.get("preemptible")
    if preemptible is not None and not isinstance(preemptible, bool):
        raise _bad("spec.schedule_policy.preemptible", "must be a boolean")
    notification = spec.get("notification")
    names = ssh.get("key_pair_names")
    annotations: dict[str, Any] = {}
    for key in ("annotation", "annotations"):
        given = metadata.get(key)
        if given is None:
            continue
        if not isinstance(given, dict):
            raise _bad(f"metadata.{key}", "must be a map of strings")
        annotations.update(given)
    return JobUpdate(
        description=description, priority=priority, preemptible=preemptible,
        notification=_notification(notification) if notification is not None else None,
        key_pair_names=_texts(names, "endpoints.ssh.key_pair_names") if names is not None else None,
        annotations=annotations or None,
    )


def _set_notification(spec: dict[str, Any], notification: dict[str, Any]) -> None:
    if notification:
        spec["notification"] = notification
    else:
        spec.pop("notification", None)


def _set_key_pairs(holder: dict[str, Any], names: list[str]) -> None:
    endpoints = dict(holder.get("endpoints") or {})
    ssh = {k: v for k, v in (endpoints.get("ssh") or {}).items() if k != "key_pair_names"}
    if names:
        ssh["key_pair_names"] = names
    if ssh:
        endpoints["ssh"] = ssh
    else:
        endpoints.pop("ssh", None)
    if endpoints:
        holder["endpoints"] = endpoints
    else:
        holder.pop("endpoints", None)


def apply_static(change: JobUpdate, request: dict[str, Any], doc: dict[str, Any],
                 catalog: Catalog) -> tuple[dict[str, Any], dict[str, Any]]:
    """The stored request (what the supervisor runs) and document (what GET shows) after `change`.

    Changed annotations are checked exactly as at create, by parsing the whole changed request again,
    so the request the supervisor parses to run the job stays valid."""
    request, doc = copy.deepcopy(request), copy.deepcopy(doc)
    if change.annotations:
        metadata = request.setdefault("metadata", {})
        metadata["annotations"] = {**(metadata.get("annotations") or {}), **change.annotations}
        spec = parse_job(request, catalog)
        request = spec.request
        doc["annotations"] = spec.annotations
    if change.notification is not None:
        if "tasks" in request:
            raise _bad("spec.notification", "a heterogeneous job (tasks) has no spec to hold a notification")
        _set_notification(request.setdefault("spec", {}), change.notification)
        _set_notification(doc.setdefault("spec", {}), change.notification)
    if change.key_pair_names is not None:
        _set_key_pairs(request, change.key_pair_names)
        _set_key_pairs(doc, change.key_pair_names)
    return request, doc
