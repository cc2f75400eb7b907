"""Reading a create body's fields: each reader names the field in the error it raises (core/errors.py),
a null object reads as absent. Shared by the job spec (core/spec.py), its channels (core/channels.py) and
the algorithms (core/algorithms.py)."""

from __future__ import annotations

import posixpath
import re
from typing import Any

from openarts.core import errors

PARAM_NAME_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")  # a parameter's or a channel's name


# What a job's own directory holds beside the container paths it re-bases (core/layout.py): the server's
# attempt files (pids, exit statuses, logs). No container path may name them, or the root above them.
# (A heterogeneous job's roles' trees, ROLES_DIR, are beside them only in such a job, whose own root
# holds no container path: core/layout.py role_layouts.)
SERVER_ENTRIES = ("attempts",)


def container_path(parent: dict[str, Any], key: str, path: str) -> str | None:
    """A directory as the worker sees it (local_dir, working_dir, local_code_dir): absolute, and neither
    `/` nor anything under the job directory's server entries (SERVER_ENTRIES)."""
    value = text(parent, key, path, limit=1024)
    if value is None:
        return None
    if not value.startswith("/"):
        raise bad(f"{path}.{key}", "must be an absolute path")
    parts = [p for p in posixpath.normpath(value).split("/") if p]
    if not parts:
        raise bad(f"{path}.{key}", "must not be the root directory")
    if parts[0] in SERVER_ENTRIES:
        raise bad(f"{path}.{key}", f"must not lie under /{parts[0]} (the service's own files)")
    return value


def item_name(item: Any, path: str, limit: int) -> str:
    """The `name` of an array's item (a parameter, a channel): the item an object, the name given, in
    PARAM_NAME_RE's characters."""
    if not isinstance(item, dict):
        raise bad(path, "must be an object")
    name = text(item, "name", path, required=True, limit=limit)
    assert name is not None
    if not PARAM_NAME_RE.match(name):
        raise bad(f"{path}.name", "use letters, digits, '_', '-' and '.'")
    return name


def bad(path: str, why: str) -> errors.InvalidRequest:
    return errors.InvalidRequest(f"Invalid parameter {path}: {why}.")


def obj(parent: dict[str, Any], key: str, path: str, required: bool = False) -> dict[str, Any]:
    value = parent.get(key)
    if value is None:
        if required:
            raise bad(f"{path}.{key}", "it is required")
        parent.pop(key, None)  # null is absent: the stored request never holds a null object
        return {}
    if not isinstance(value, dict):
        raise bad(f"{path}.{key}", "must be an object")
    return value


def array(parent: dict[str, Any], key: str, path: str, limit: int) -> list[Any]:
    value = parent.get(key)
    if value is None:
        return []
    if not isinstance(value, list):
        raise bad(f"{path}.{key}", "must be an array")
    if len(value) > limit:
        raise bad(f"{path}.{key}", f"at most {limit} items are allowed")
    return value


def text(parent: dict[str, Any], key: str, path: str, required: bool = False, limit: int = 4096) -> str | None:
    value = parent.get(key)
    if value is None or (value == "" and not required):
        if required:
            raise bad(f"{path}.{key}", "it is required")
        return None
    if not isinstance(value, str):
        raise bad(f"{path}.{key}", "must be a string")
    if required and not value:
        raise bad(f"{path}.{key}", "must not be empty")
    if len(value) > limit:
        raise bad(f"{path}.{key}", f"must be at most {limit} characters")
    if "\x00" in value:
        raise bad(f"{path}.{key}", "must not contain NUL characters")
    return value




def integer(parent: dict[str, Any], key: str, path: str, default: int, lo: int, hi: int) -> int:
    value = parent.get(key, default)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int):
        raise bad(f"{path}.{key}", "must be an integer")
    if not lo <= value <= hi:
        raise bad(f"{path}.{key}", f"must be between {lo} and {hi}")
    return value


def scalar_text(value: Any, path: str) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float | str):
        s = str(value)
        if "\x00" in s:
            raise bad(path, "must not contain NUL characters")
        return s
    raise bad(path, "must be a string")
