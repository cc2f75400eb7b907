"""Tags of training jobs (Huawei Cloud TMS conventions), checked before anything reaches the store. Pure.

The rules are the SDK's (huaweicloudsdkmodelarts TmsTag, MutiValueTag, ResourceInstancesFilterReq,
CountResourceInstancesReq), and TMS's where those say nothing:

- a key is 1 to 128 characters: letters and digits of any language, spaces and `_ . : = + - @`; no
  space at either end; not `_sys_...` (TMS's system tags);
- a value is 0 to 255 characters, the key's set plus `/`; no space at either end either (TMS);
- a job has at most MAX_TAGS tags, its keys unique; a request names a key once.

`parse_create` / `parse_delete` read the bodies of the two writes; `parse_filter` the body shared by
the filter and count operations: `tags` (a job has each key, with one of its values; no values: any
value), `without_any_tag` (jobs with no tag at all; `tags` then ignored), `matches` (one at most, on
`resource_name`: a case-insensitive substring of the job's name) and `workspace_id`. Every refusal is
an InvalidRequest naming the field (ModelArts.2788).
"""

from __future__ import annotations

import unicodedata
from typing import Any, NamedTuple

from openarts.core import errors

MAX_TAGS = 20  # a job's tags (TMS's limit per resource; the SDK states none)
MAX_KEY = 128
MAX_VALUE = 255
MAX_FILTER_VALUES = 10  # values of one key in a filter (MutiValueTag)
MAX_MATCH = 255
SYSTEM_PREFIX = "_sys_"
KEY_SPECIALS = frozenset(" _.:=+-@")
VALUE_SPECIALS = KEY_SPECIALS | {"/"}
# TMS fields of its generic resource-instances API that ModelArts' training operations do not have:
# refused by name, since ignoring them would answer a different question than the one asked
NOT_SUPPORTED = ("tags_any", "not_tags", "not_tags_any", "action")


class TagFilter(NamedTuple):
    tags: list[tuple[str, list[str]]]  # (key, values): every key present, each with one of its values ([]: any)
    without_any_tag: bool
    name_contains: str | None  # matches' resource_name
    workspace_id: str | None


def _allowed(ch: str, specials: frozenset[str]) -> bool:
    return ch in specials or unicodedata.category(ch)[0] in "LM" or unicodedata.category(ch) == "Nd"


def _bad_chars(text: str, specials: frozenset[str]) -> str:
    bad = sorted({ch for ch in text if not _allowed(ch, specials)})
    return "".join(bad[:5])


def check_key(key: Any, where: str) -> str:
    if not isinstance(key, str) or not 1 <= len(key) <= MAX_KEY:
        raise errors.InvalidRequest(f"Invalid parameter {where}: a tag key is a string of 1 to {MAX_KEY} "
                                    "characters.")
    bad = _bad_chars(key, KEY_SPECIALS)
    if bad:
        raise errors.InvalidRequest(f"Invalid parameter {where}: tag key {key[:40]!r} has characters a key may not "
                                    f"hold ({bad!r}); a key holds letters, digits, spaces and _ . : = + - @.")
    if key != key.strip(" "):
        raise errors.InvalidRequest(f"Invalid parameter {where}: tag key {key[:40]!r} starts or ends with a space.")
    if key.startswith(SYSTEM_PREFIX):
        raise errors.InvalidRequest(f"Invalid parameter {where}: tag key {key[:40]!r} starts with "
                                    f"{SYSTEM_PREFIX!r}, which is reserved for system tags.")
    return key


def check_value(value: Any, where: str) -> str:
    if not isinstance(value, str) or len(value) > MAX_VALUE:
        raise errors.InvalidRequest(f"Invalid parameter {where}: a tag value is a string of 0 to {MAX_VALUE} "
                                    "characters.")
    bad = _bad_chars(value, VALUE_SPECIALS)
    if bad:
        raise errors.InvalidRequest(f"Invalid parameter {where}: tag value {value[:40]!r} has characters a value "
                                    f"may not hold ({bad!r}); a value holds letters, digits, spaces and "
                                    "_ . : / = + - @.")
    if value != value.strip(" "):
        raise errors.InvalidRequest(f"Invalid parameter {where}: tag value {value[:40]!r} starts or ends with a "
                                    "space.")
    return value


def _tag_list(body: Any) -> list[Any]:
    if not isinstance(body, dict):
        raise errors.InvalidJsonBody("The request body must be a JSON object.")
    tags = body.get("tags")
    if not isinstance(tags, list) or not tags:
        raise errors.InvalidRequest(f"Invalid parameter tags: an array of 1 to {MAX_TAGS} {{key, value}} objects.")
    if len(tags) > MAX_TAGS:
        raise errors.InvalidRequest(f"Invalid parameter tags: {len(tags)} tags; a training job has at most "
                                    f"{MAX_TAGS}.")
    for i, tag in enumerate(tags):
        if not isinstance(tag, dict):
            raise errors.InvalidRequest(f"Invalid parameter tags[{i}]: a {{key, value}} object.")
    return tags


def _unique(keys: list[str]) -> None:
    seen: set[str] = set()
    for i, key in enumerate(keys):
        if key in seen:
            raise errors.InvalidRequest(f"Invalid parameter tags[{i}].key: tag key {key[:40]!r} is given twice.")
        seen.add(key)


def parse_create(body: Any) -> list[tuple[str, str]]:
    """The tags to set, (key, value) in the request's order; a missing or null value is ''."""
    out = []
    for i, tag in enumerate(_tag_list(body)):
        key = check_key(tag.get("key"), f"tags[{i}].key")
        value = tag.get("value")
        out.append((key, "" if value is None else check_value(value, f"tags[{i}].value")))
    _unique([k for k, _ in out])
    return out


def parse_delete(body: Any) -> list[tuple[str, str | None]]:
    """The tags to remove: (key, value), value None (absent, null or '') for the key whatever its value."""
    out: list[tuple[str, str | None]] = []
    for i, tag in enumerate(_tag_list(body)):
        key = check_key(tag.get("key"), f"tags[{i}].key")
        value = tag.get("value")
        out.append((key, None if value in (None, "") else check_value(value, f"tags[{i}].value")))
    _unique([k for k, _ in out])
    return out


def _filter_tags(raw: Any) -> list[tuple[str, list[str]]]:
    if raw is None:
        return []
    if not isinstance(raw, list) or len(raw) > MAX_TAGS:
        raise errors.InvalidRequest(f"Invalid parameter tags: an array of at most {MAX_TAGS} {{key, values}} "
                                    "objects.")
    out: list[tuple[str, list[str]]] = []
    for i, item in enumerate(raw):
        if not isinstance(item, dict):
            raise errors.InvalidRequest(f"Invalid parameter tags[{i}]: a {{key, values}} object.")
        key = check_key(item.get("key"), f"tags[{i}].key")
        values = item.get("values")
        if values is None:
            values = []
        if not isinstance(values, list) or len(values) > MAX_FILTER_VALUES:
            raise errors.InvalidRequest(f"Invalid parameter tags[{i}].values: an array of at most "
                                        f"{MAX_FILTER_VALUES} strings.")
        clean = [check_value(v, f"tags[{i}].values[{j}]") for j, v in enumerate(values)]
        if len(set(clean)) != len(clean):
            raise errors.InvalidRequest(f"Invalid parameter tags[{i}].values: a value is given twice.")
        out.append((key, clean))
    _unique([k for k, _ in out])
    return out


def _match(raw: Any) -> str | None:
    if raw is None or raw == []:
        return None
    if not isinstance(raw, list) or len(raw) > 1:
        raise errors.InvalidRequest("Invalid parameter matches: an array of at most 1 {key, value} object.")
    item = raw[0]
    if not isinstance(item, dict) or item.get("key") != "resource_name":
        raise errors.InvalidRequest("Invalid parameter matches[0].key: the only match key is 'resource_name'.")
    value = item.get("value")
    if not isinstance(value, str) or not 1 <= len(value) <= MAX_MATCH or "\x00" in value:
        raise errors.InvalidRequest(f"Invalid parameter matches[0].value: a string of 1 to {MAX_MATCH} "
                                    "characters.")
    return value


def parse_filter(body: Any) -> TagFilter:
    """The body of the filter and count operations (absent: every job)."""
    if body is None:
        body = {}
    if not isinstance(body, dict):
        raise errors.InvalidJsonBody("The request body must be a JSON object.")
    for name in NOT_SUPPORTED:
        if name in body:
            raise errors.InvalidRequest(
                f"Invalid parameter {name}: not a field of this operation; it takes tags (each key present, with "
                "one of its values), without_any_tag, matches and workspace_id.")
    without = body.get("without_any_tag")
    if without is not None and not isinstance(without, bool):
        raise errors.InvalidRequest("Invalid parameter without_any_tag: true or false.")
    workspace_id = body.get("workspace_id")
    if workspace_id is not None and (not isinstance(workspace_id, str) or len(workspace_id) > 64):
        raise errors.InvalidRequest("Invalid parameter workspace_id: a string of at most 64 characters.")
    return TagFilter(_filter_tags(body.get("tags")), bool(without), _match(body.get("matches")),
                     workspace_id or None)
