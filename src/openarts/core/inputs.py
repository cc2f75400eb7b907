"""Bounds on what a request may carry, checked at the API boundary before any value reaches the
domain, SQLite or a stored document. Pure: no I/O.

- `parse_json_body`: a JSON operation's body (the API's, and the console's submit form) is at most
  MAX_BODY bytes of valid JSON, then `check_json`.
- `check_json`: a parsed JSON body nests at most MAX_DEPTH containers deep (deeper ones could not be
  stored or echoed: orjson serialises at most 255 levels) and every integer in it fits in signed 64
  bits (SQLite's INTEGER; beyond it a bound parameter raises OverflowError).
- `query_int`: an integer query parameter is ASCII digits with an optional sign, within 64 bits, then
  within the parameter's own range.
- `parse_search`: the body of POST /training-job-searches, every field's type checked before use.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Collection
from typing import Any, NamedTuple

import orjson

from openarts.core import errors
from openarts.core.tags import check_key

MAX_DEPTH = 64  # containers, the top-level object or array being the first
MAX_BODY = 1024 * 1024  # bytes of a JSON operation's body
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
MAX_SEARCH_OFFSET = 10**9
MAX_FILTERS = 20
MAX_FILTER_VALUES = 100
MAX_FILTER_TEXT = 1024  # a LIKE pattern of 50,000 characters is "too complex" for SQLite
MAX_GROUP_BY = 256
_INT_RE = re.compile(r"[+-]?[0-9]{1,19}")


def _first_fault(doc: Any) -> tuple[str, Any] | None:
    """("depth" | "int", the offending value) for the first fault found, or None. No paths: fast."""
    stack: list[tuple[Any, int]] = [(doc, 1)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, dict):
            if depth > MAX_DEPTH:
                return "depth", value
            stack.extend((v, depth + 1) for v in value.values())
        elif isinstance(value, list):
            if depth > MAX_DEPTH:
                return "depth", value
            stack.extend((v, depth + 1) for v in value)
        elif type(value) is int and not INT64_MIN <= value <= INT64_MAX:
            return "int", value
    return None


def _path_to(doc: Any, found: Callable[[Any], bool]) -> str:
    """Where the first value for which `found` holds sits in `doc`: metadata.labels.a, algorithm.parameters[0]."""
    stack: list[tuple[Any, str]] = [(doc, "")]
    while stack:
        value, path = stack.pop()
        if found(value):
            return path or "the body"
        if isinstance(value, dict):
            stack.extend((v, f"{path}.{k}" if path else str(k)) for k, v in value.items())
        elif isinstance(value, list):
            stack.extend((v, f"{path}[{i}]") for i, v in enumerate(value))
    return "the body"


def check_json(doc: Any, invalid: type[errors.InvalidRequest] = errors.InvalidRequest) -> Any:
    """`doc` unchanged, or InvalidJsonBody (too deep) / `invalid` (an integer beyond 64 bits) naming where."""
    fault = _first_fault(doc)
    if fault is None:
        return doc
    kind, value = fault
    if kind == "depth":
        where = _path_to(doc, lambda v: v is value)
    else:  # small ints are shared objects in CPython, big ones are not: the first equal out-of-range int
        where = _path_to(doc, lambda v: type(v) is int and v == value)
    if kind == "depth":
        if len(where) > 120:
            where = where[:120] + "..."
        raise errors.InvalidJsonBody(f"The request body nests deeper than {MAX_DEPTH} levels (at {where}).")
    raise invalid(f"Invalid parameter {where}: {value} is outside the signed 64-bit integer range "
                  f"({INT64_MIN} to {INT64_MAX}).")


def parse_json_body(raw: bytes, required: bool = True,
                    invalid: type[errors.InvalidRequest] = errors.InvalidRequest) -> Any:
    """A JSON operation's body: at most MAX_BODY bytes, valid JSON, then `check_json` (`invalid`, the
    operation's invalid-parameter error, names where); None for an empty body that is not `required`."""
    if len(raw) > MAX_BODY:
        raise errors.InvalidJsonBody(f"The request body is larger than {MAX_BODY} bytes.")
    if not raw.strip():
        if required:
            raise errors.InvalidJsonBody("The request body is empty; a JSON object is required.")
        return None
    try:
        doc = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise errors.InvalidJsonBody(f"The request body is not valid JSON: {exc}.") from exc
    return check_json(doc, invalid)


def query_int(name: str, raw: str | None, default: int | None, lo: int, hi: int) -> int | None:
    """An integer query parameter: `default` when absent or empty; otherwise ASCII digits (an optional
    sign) whose value lies in [lo, hi], or QueryParamsError naming the parameter."""
    if raw is None or raw == "":
        return default
    if not _INT_RE.fullmatch(raw) or not lo <= int(raw) <= hi:
        raise errors.QueryParamsError(f"{name} must be an integer from {lo} to {hi}, not {raw[:40]!r}.")
    return int(raw)


class SearchQuery(NamedTuple):
    offset: int
    limit: int
    sort_by: str
    order: str
    filters: list[dict[str, Any]]
    workspace_id: str | None
    group_by: str


MAX_DESCRIPTION = 256
CONTROL_RE = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")  # C0 controls but tab, LF, CR; and DEL


def check_description(value: Any, path: str) -> str:
    """A description (a job's, at create and at update alike; an experiment's, an algorithm's): a string of
    at most MAX_DESCRIPTION characters, no NUL or other control character but tab, newline and carriage
    return. None is ""."""
    if value is None:
        return ""
    if not isinstance(value, str):
        raise errors.InvalidRequest(f"Invalid parameter {path}: must be a string.")
    if len(value) > MAX_DESCRIPTION:
        raise errors.InvalidRequest(f"Invalid parameter {path}: must be at most {MAX_DESCRIPTION} characters.")
    if CONTROL_RE.search(value):
        raise errors.InvalidRequest(f"Invalid parameter {path}: must not contain NUL or other control characters "
                                    "(tab, newline and carriage return are allowed).")
    return value


class ListQuery(NamedTuple):
    offset: int
    limit: int
    sort_by: str
    order: str


def list_query(params: dict[str, str], sortable: Collection[str], limit_default: int, limit_max: int) -> ListQuery:
    """A list operation's query (experiments, algorithms): offset (items), limit, sort_by (`sortable`,
    create_time by default) and order (desc by default)."""
    offset = query_int("offset", params.get("offset"), 0, 0, MAX_SEARCH_OFFSET) or 0
    limit = query_int("limit", params.get("limit"), limit_default, 1, limit_max) or limit_default
    sort_by = params.get("sort_by") or "create_time"
    if sort_by not in sortable:
        raise errors.UnsupportedSort(f"Unsupported sort_by {sort_by[:64]!r}; use one of {sorted(sortable)}.")
    order = params.get("order") or "desc"
    if order not in ("asc", "desc"):
        raise errors.QueryParamsError("order must be 'asc' or 'desc'.")
    return ListQuery(offset, limit, sort_by, order)


def _body_int(body: dict[str, Any], name: str, default: int, lo: int, hi: int) -> int:
    value = body.get(name)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise errors.QueryParamsError(f"{name} must be an integer from {lo} to {hi}.")
    return value


def _body_text(body: dict[str, Any], name: str, default: str, limit: int) -> str:
    value = body.get(name)
    if value is None or value == "":
        return default
    if not isinstance(value, str) or len(value) > limit or "\x00" in value:
        raise errors.QueryParamsError(f"{name} must be a string of at most {limit} characters.")
    return value


def _filter(f: Any) -> dict[str, Any]:
    if not isinstance(f, dict) or not isinstance(f.get("key"), str) or not isinstance(f.get("operator"), str):
        raise errors.QueryParamsError("each filter needs a key, an operator (strings) and a value array.")
    key, value = f["key"][:64], f.get("value", [])
    if not isinstance(value, list):
        value = [value]
    if not value or len(value) > MAX_FILTER_VALUES:
        raise errors.QueryParamsError(f"filter {key!r}: value must be 1 to {MAX_FILTER_VALUES} strings.")
    for v in value:
        ok = (isinstance(v, str) and len(v) <= MAX_FILTER_TEXT and "\x00" not in v) or (
            type(v) is int and INT64_MIN <= v <= INT64_MAX)
        if not ok:
            raise errors.QueryParamsError(f"filter {key!r}: each value must be a string of at most "
                                          f"{MAX_FILTER_TEXT} characters (no NUL) or a 64-bit integer.")
    return {"key": f["key"], "operator": f["operator"], "value": value}


def parse_search(body: Any, sortable: Collection[str], limit_max: int) -> SearchQuery:
    """The list operation's body (absent: every default), or QueryParamsError / UnsupportedSort."""
    if body is None:
        body = {}
    if not isinstance(body, dict):
        raise errors.InvalidJsonBody("The request body must be a JSON object.")
    offset = _body_int(body, "offset", 0, 0, MAX_SEARCH_OFFSET)
    limit = _body_int(body, "limit", 10, 1, limit_max)
    sort_by = _body_text(body, "sort_by", "create_time", 64)
    if sort_by not in sortable:
        raise errors.UnsupportedSort(f"Unsupported sort_by {sort_by!r}; use one of {sorted(sortable)}.")
    order = _body_text(body, "order", "desc", 8)
    if order not in ("asc", "desc"):
        raise errors.QueryParamsError("order must be 'asc' or 'desc'.")
    filters = body.get("filters") or []
    if not isinstance(filters, list) or len(filters) > MAX_FILTERS:
        raise errors.QueryParamsError(f"filters must be an array of at most {MAX_FILTERS} filters.")
    workspace_id = body.get("workspace_id")
    if workspace_id is not None and (not isinstance(workspace_id, str) or len(workspace_id) > 64):
        raise errors.QueryParamsError("workspace_id must be a string of at most 64 characters.")
    clean = [_filter(f) for f in filters]
    tags = _tag_conditions(body.get("tags"))
    if tags:
        clean.append({"key": "tags", "operator": "tags", "value": tags})
    return SearchQuery(offset, limit, sort_by, order, clean, workspace_id or None,
                       _body_text(body, "group_by", "", MAX_GROUP_BY))


MAX_TAG_CONDITIONS = 10
TAG_WINDOW_MS = 31 * 86400 * 1000  # a search by tags covers at most 31 days of create_time (ModelArts)


def _tag_conditions(raw: Any) -> list[tuple[str, list[str]]]:
    """JobSearches' `tags`: [{key, values}], at most 10, each key once and its values distinct; a job
    matches every key (AND) with one of its values (OR); no values, or only "": the key with any value."""
    if raw is None or raw == []:
        return []
    if not isinstance(raw, list) or len(raw) > MAX_TAG_CONDITIONS:
        raise errors.QueryParamsError(f"tags must be an array of at most {MAX_TAG_CONDITIONS} {{key, values}}.")
    out: list[tuple[str, list[str]]] = []
    for i, cond in enumerate(raw):
        if not isinstance(cond, dict):
            raise errors.QueryParamsError(f"tags[{i}] must be an object {{key, values}}.")
        key = check_key(cond.get("key"), f"tags[{i}].key")
        values = cond.get("values") or []
        if not isinstance(values, list) or not all(isinstance(v, str) and len(v) <= 255 for v in values):
            raise errors.QueryParamsError(f"tags[{i}].values must be an array of strings.")
        if any(k == key for k, _ in out) or len(set(values)) != len(values):
            raise errors.QueryParamsError(f"tags[{i}]: each key once, each of its values once.")
        out.append((key, [v for v in values if v]))
    return out


def tag_window(filters: list[dict[str, Any]], now_ms: int) -> list[dict[str, Any]]:
    """A search by tags needs a create_time window of at most 31 days: the last 31 days when none is given."""
    if not any(f["key"] == "tags" for f in filters):
        return filters
    window = [f for f in filters if f["key"] == "create_time" and f["operator"] == "between"]
    if not window:
        return [*filters, {"key": "create_time", "operator": "between", "value": [now_ms - TAG_WINDOW_MS, now_ms]}]
    for f in window:
        try:
            lo, hi = int(f["value"][0]), int(f["value"][1])
        except (TypeError, ValueError, IndexError):
            continue  # the search itself refuses it
        if hi - lo > TAG_WINDOW_MS:
            raise errors.QueryParamsError("A search by tags covers a create_time span of at most 31 days.")
    return filters
