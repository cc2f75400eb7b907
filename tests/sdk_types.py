"""Checks a JSON value against the official SDK's response model (`openapi_types`), the way every client
reads openarts: a list where the model says `str` would reach the user as the string "['a']", a number
where it says `str` as "1700000000000" only by luck of coercion.

`type_errors(model, value)` walks the value and the model together and returns one line per field whose
JSON type differs from the model's; `unknown_fields` lists what the model does not know (the SDK drops
those silently; ModelArts itself sends a few, see RAW_ONLY). `round_trip_losses` deserializes through the
SDK and lists what did not survive unchanged.
"""

from __future__ import annotations

import re
from typing import Any

import huaweicloudsdkmodelarts.v1.model as models
from huaweicloudsdkcore.utils.http_utils import sanitize_for_serialization

_LIST = re.compile(r"^list\[(.+)\]$")
_DICT = re.compile(r"^dict\(str, (.+)\)$")

# Fields the SDK's models lack but ModelArts sends, and openarts echoes from the create body (the SDK keeps
# them only in the raw JSON; reference §4, quirk 5).
RAW_ONLY = {"spec.auto_stop", "spec.notification", "spec.reserved_time", "spec.retention", "spec.log_export_config",
            "spec.volumes.pfs", "spec.volumes.obs", "spec.preferred_affinity", "spec.asset_id",
            "spec.schedule_policy.preferred_affinity", "spec.schedule_policy.required_affinity.node_affinity",
            "algorithm.policies", "algorithm.inputs.remote.dataset.dataset_proportion", "metadata.annotation"}


def _model(name: str) -> Any:
    cls = getattr(models, name, None)
    if cls is None or not hasattr(cls, "openapi_types"):
        raise KeyError(f"no SDK model {name}")
    return cls


def _walk(kind: str, value: Any, path: str, errors: list[str], unknown: list[str]) -> None:
    if value is None:
        return
    if m := _LIST.match(kind):
        if not isinstance(value, list):
            errors.append(f"{path}: {type(value).__name__} where the SDK model has {kind}")
            return
        for i, item in enumerate(value):
            _walk(m.group(1), item, f"{path}[{i}]", errors, unknown)
        return
    if m := _DICT.match(kind):
        if not isinstance(value, dict):
            errors.append(f"{path}: {type(value).__name__} where the SDK model has {kind}")
            return
        for key, item in value.items():
            _walk(m.group(1), item, f"{path}.{key}", errors, unknown)
        return
    expected = {"str": (str,), "int": (int,), "float": (int, float), "bool": (bool,)}.get(kind)
    if expected is not None:
        if (isinstance(value, bool) and kind != "bool") or not isinstance(value, expected):
            errors.append(f"{path}: {type(value).__name__} {str(value)[:40]!r} where the SDK model has {kind}")
        return
    if kind == "object":
        return
    cls = _model(kind)
    if not isinstance(value, dict):
        errors.append(f"{path}: {type(value).__name__} where the SDK model has the object {kind}")
        return
    fields = {cls.attribute_map[attr]: t for attr, t in cls.openapi_types.items()}
    for key, item in value.items():
        sub = f"{path}.{key}" if path else key
        if key not in fields:
            unknown.append(sub)
            continue
        _walk(fields[key], item, sub, errors, unknown)


def check(model: str, value: Any) -> tuple[list[str], list[str]]:
    """(type errors, fields the model does not know) of a response body against the SDK's `model`.
    A response whose model has a single `body` field (a bare JSON array) is checked against that field."""
    cls = _model(model)
    errors: list[str] = []
    unknown: list[str] = []
    if list(cls.openapi_types) == ["body"]:
        _walk(cls.openapi_types["body"], value, "body", errors, unknown)
    else:
        _walk(model, value, "", errors, unknown)
    return errors, unknown


def _generic(path: str) -> str:
    return re.sub(r"\[\d+\]", "", path).removeprefix("items.")


def type_errors(model: str, value: Any) -> list[str]:
    """Type mismatches, plus fields the model does not know that ModelArts does not send either."""
    errors, unknown = check(model, value)
    return errors + [f"{u}: not in the SDK model" for u in unknown if _generic(u) not in RAW_ONLY]


def _strip_unknown(model: str, value: Any) -> Any:
    """The value as the SDK model can hold it: unknown fields and nulls dropped."""
    def walk(kind: str, v: Any) -> Any:
        if v is None:
            return None
        if m := _LIST.match(kind):
            return [walk(m.group(1), x) for x in v] if isinstance(v, list) else v
        if m := _DICT.match(kind):
            return {k: walk(m.group(1), x) for k, x in v.items()} if isinstance(v, dict) else v
        if kind in ("str", "int", "float", "bool", "object") or not isinstance(v, dict):
            return v
        cls = _model(kind)
        fields = {cls.attribute_map[a]: t for a, t in cls.openapi_types.items()}
        return {k: walk(fields[k], x) for k, x in v.items() if k in fields and x is not None}

    cls = _model(model)
    if list(cls.openapi_types) == ["body"]:
        return {"body": walk(cls.openapi_types["body"], value)}
    return walk(model, value)


def round_trip_losses(model: str, response: Any) -> list[str]:
    """What the SDK's deserialization changed: its model, serialized again, against the raw JSON."""
    raw = response.to_json_object()
    got = sanitize_for_serialization(response)
    got = {k: v for k, v in got.items() if k in _model(model).attribute_map.values()}
    want = _strip_unknown(model, raw)
    losses: list[str] = []

    def diff(a: Any, b: Any, path: str) -> None:
        if isinstance(a, dict) and isinstance(b, dict):
            for key in sorted(set(a) | set(b)):
                diff(a.get(key), b.get(key), f"{path}.{key}" if path else key)
        elif isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
            for i, (x, y) in enumerate(zip(a, b, strict=True)):
                diff(x, y, f"{path}[{i}]")
        elif a != b or (type(a) is not type(b) and not {type(a), type(b)} <= {int, float}):
            losses.append(f"{path}: sent {b!r:.60} -> the SDK made it {a!r:.60}")

    diff(got, want, "")
    return losses


def checked_response(operation: str, resp: Any, status: int = 200) -> dict[str, Any]:
    """The raw JSON of an SDK response to `operation`, which must have `status`, the types of the SDK's
    response model, and survive the SDK's deserialization unchanged ({} for no body)."""
    assert resp.status_code == status
    model = "".join(part.title() for part in operation.split("_")) + "Response"
    raw = resp.to_json_object()
    if raw is None:
        return {}
    assert type_errors(model, raw) == []
    assert round_trip_losses(model, resp) == []
    return dict(raw)
