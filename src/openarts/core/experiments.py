"""Training experiments: a project's named groups of training jobs (ModelArts' training experiments).

The rules of an experiment's fields, at creation, at a change and where a job's create body names one
(`metadata.training_experiment_reference`, parsed by core/spec.py): pure, no store. Whether the
experiment a job names exists is the service's question (service/experiments.py).

- a name: 1 to 64 letters, digits, '_' or '-' (ModelArts: "at most 64 characters, no special
  characters"; the rule of a job's name), unique in its project;
- a description: at most 256 characters, none of ModelArts' special characters (SPECIAL) and no
  control character but tab, newline and carriage return.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from openarts.core import errors
from openarts.core.inputs import check_description as base_description

NAME_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
MAX_NAME = 64
MAX_ID = 64
SPECIAL = "!<>=&\"'"  # the characters ModelArts documents as "special" in descriptions
SORTABLE = {"create_time": "create_ms", "update_time": "update_ms", "name": "name"}
LIST_LIMIT_DEFAULT = 10
LIST_LIMIT_MAX = 50


def _bad(path: str, why: str) -> errors.InvalidRequest:
    return errors.InvalidRequest(f"Invalid parameter {path}: {why}.")


def check_name(value: Any, path: str) -> str:
    if value is None or value == "":
        raise _bad(path, "it is required")
    if not isinstance(value, str):
        raise _bad(path, "must be a string")
    if not NAME_RE.match(value):
        raise _bad(path, f"use 1 to {MAX_NAME} letters, digits, '_' or '-'")
    return value


def check_description(value: Any, path: str) -> str:
    """A job's description (core/spec.py), without ModelArts' special characters either. None is ""."""
    value = base_description(value, path)
    special = sorted({c for c in value if c in SPECIAL})
    if special:
        raise _bad(path, f"must not contain the special characters {' '.join(SPECIAL)} (found {' '.join(special)})")
    return value


def check_workspace(value: Any, path: str) -> str:
    """A workspace id: a string of at most 64 characters; absent or empty is "0"."""
    if value is None or value == "":
        return "0"
    if not isinstance(value, str) or len(value) > 64 or "\x00" in value:
        raise _bad(path, "must be a string of at most 64 characters")
    return value


@dataclass(frozen=True)
class ExperimentRef:
    """A job's `metadata.training_experiment_reference`: an experiment by id (it must exist), or by name
    alone (the project's experiment of that name, made if there is none)."""

    id: str | None
    name: str | None
    description: str


def parse_reference(value: Any, path: str = "metadata.training_experiment_reference") -> ExperimentRef | None:
    """The shape of a job's reference to an experiment; None when it names none (absent, null, or neither
    an id nor a name)."""
    if value is None:
        return None
    if not isinstance(value, dict):
        raise _bad(path, "must be an object {id, name, description}")
    raw_id = value.get("id")
    if raw_id not in (None, "") and (not isinstance(raw_id, str) or len(raw_id) > MAX_ID or "\x00" in raw_id):
        raise _bad(f"{path}.id", f"must be an experiment id: a string of at most {MAX_ID} characters")
    raw_name = value.get("name")
    name = check_name(raw_name, f"{path}.name") if raw_name not in (None, "") else None
    description = check_description(value.get("description"), f"{path}.description")
    if not raw_id and name is None:
        return None
    return ExperimentRef(raw_id or None, name, description)


@dataclass(frozen=True)
class ExperimentChange:
    name: str | None
    description: str | None


def parse_create(body: Any) -> tuple[str, str, str]:
    """A create body {metadata: {name, description, workspace_id}}: (name, description, workspace id)."""
    if not isinstance(body, dict):
        raise errors.InvalidJsonBody("The request body must be a JSON object.")
    metadata = body.get("metadata")
    if not isinstance(metadata, dict):
        raise _bad("metadata", "it is required: an object {name, description, workspace_id}")
    return (check_name(metadata.get("name"), "metadata.name"),
            check_description(metadata.get("description"), "metadata.description"),
            check_workspace(metadata.get("workspace_id"), "metadata.workspace_id"))


CHANGEABLE = ("name", "description")


def parse_change(body: Any) -> ExperimentChange:
    """A change body {name, description}: what is given changes; anything else is refused."""
    if not isinstance(body, dict):
        raise errors.InvalidJsonBody("The request body must be a JSON object.")
    unknown = sorted(set(body) - set(CHANGEABLE))
    if unknown:
        raise _bad(str(unknown[0])[:64], f"an experiment's change takes only {', '.join(CHANGEABLE)}")
    name = check_name(body["name"], "name") if body.get("name") is not None else None
    description = check_description(body["description"], "description") if "description" in body \
        and body["description"] is not None else None
    return ExperimentChange(name, description)
