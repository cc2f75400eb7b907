"""The boundary's pure checks: JSON depth and 64-bit integers (core/inputs.py), integer query
parameters, the list operation's body, and the kernel's argument limits (core/arglimits.py)."""

from __future__ import annotations

from typing import Any

import pytest

from openarts.core import arglimits, errors
from openarts.core.inputs import MAX_DEPTH, check_json, parse_search, query_int


def _deep(levels: int) -> Any:
    value: Any = "x"
    for i in range(levels):
        value = {"a": value} if i % 2 else [value]
    return value


def test_depth_is_bounded_at_64_containers() -> None:
    assert check_json(_deep(MAX_DEPTH)) == _deep(MAX_DEPTH)
    with pytest.raises(errors.InvalidJsonBody, match="deeper than 64 levels"):
        check_json(_deep(MAX_DEPTH + 1))
    with pytest.raises(errors.InvalidJsonBody, match=r"at metadata\.labels"):
        check_json({"metadata": {"labels": _deep(MAX_DEPTH)}})


@pytest.mark.parametrize("value", [2**63, 2**64 - 1, -(2**63) - 1, 10**30])
def test_integers_beyond_64_bits_are_refused_naming_where(value: int) -> None:
    body = {"algorithm": {"parameters": [{"name": "p", "value": 1}, {"name": "q", "value": value}]}}
    with pytest.raises(errors.InvalidRequest, match=r"algorithm\.parameters\[1\]\.value"):
        check_json(body)
    with pytest.raises(errors.QueryParamsError):
        check_json({"offset": value}, errors.QueryParamsError)
    assert check_json({"a": [2**63 - 1, -(2**63), 1.5, True]})


@pytest.mark.parametrize("raw", ["9223372036854775808", "-9223372036854775809", "1" * 5000, "1.5", "0x10",
                                 "1_000", " 1", "\uff11", "1\n", "", None])
def test_query_integers_are_ascii_digits_within_range(raw: str | None) -> None:
    if raw in ("", None):
        assert query_int("n", raw, 7, 0, 10) == 7
        return
    with pytest.raises(errors.QueryParamsError, match=r"^n must be an integer"):
        query_int("n", raw, None, -(2**63), 2**63 - 1)


def test_query_integer_bounds_are_inclusive() -> None:
    assert query_int("n", "9223372036854775807", None, -(2**63), 2**63 - 1) == 2**63 - 1
    assert query_int("n", "-9223372036854775808", None, -(2**63), 2**63 - 1) == -(2**63)
    assert query_int("n", "+5", None, 0, 5) == 5
    with pytest.raises(errors.QueryParamsError):
        query_int("n", "6", None, 0, 5)


@pytest.mark.parametrize("body", [
    {"sort_by": ["name"]}, {"sort_by": {"name": 1}}, {"order": ["asc"]}, {"group_by": {}}, {"group_by": 1},
    {"workspace_id": ["0"]}, {"offset": "1"}, {"offset": True}, {"offset": 10**9 + 1}, {"limit": 51},
    {"filters": {"key": "name"}}, {"filters": [{"key": "name", "operator": "like", "value": [{"a": 1}]}]},
    {"filters": [{"key": "name", "operator": "like", "value": [True]}]},
    {"filters": [{"key": "name", "operator": "like", "value": ["x" * 1025]}]},
    {"filters": [{"key": "phase", "operator": "in", "value": [2**63]}]},
])
def test_search_fields_are_type_checked(body: dict[str, Any]) -> None:
    with pytest.raises(errors.QueryParamsError):
        parse_search(body, {"create_time", "name"}, 50)


def test_search_defaults_and_echoes() -> None:
    q = parse_search(None, {"create_time"}, 50)
    assert (q.offset, q.limit, q.sort_by, q.order, q.filters, q.workspace_id, q.group_by) == (
        0, 10, "create_time", "desc", [], None, "")
    with pytest.raises(errors.UnsupportedSort):
        parse_search({"sort_by": "gpu"}, {"create_time"}, 50)


STRLEN = arglimits.MAX_ARG_STRLEN


def _check(**kw: Any) -> None:
    args: dict[str, Any] = {"command": None, "parameters": [], "environments": {}, "channels": {},
                            "limit": 6 << 20, "inherited": 0}
    args.update(kw)
    arglimits.check(args.pop("command"), args.pop("parameters"), args.pop("environments"), args.pop("channels"),
                    **args)


def test_one_string_is_at_most_max_arg_strlen_with_its_nul() -> None:
    _check(environments={"V": "x" * (STRLEN - 1 - len("V="))})
    with pytest.raises(arglimits.ArgLimitError) as info:
        _check(environments={"V": "x" * (STRLEN - len("V="))})
    assert info.value.field == "algorithm.environments.V"
    _check(parameters=[("p", "y" * (STRLEN - 1 - len("--p=")))])
    with pytest.raises(arglimits.ArgLimitError, match="131075 bytes"):
        _check(parameters=[("p", "\u00e9" * ((STRLEN - len("--p=")) // 2 + 1))])  # two bytes each
    _check(command="c" * (STRLEN - 1))  # no arguments: the command as it is
    with pytest.raises(arglimits.ArgLimitError) as info:
        _check(command="c" * (STRLEN - 1), parameters=[("p", "1")])  # ' "$@"' appended
    assert info.value.field == "algorithm.command"


def test_channels_count_as_arguments_and_a_variable() -> None:
    wide = [("data_url", "/d" + "\u00e9" * 1000)] * 30  # MA_INPUTS escapes each as \\u00e9: 6 bytes
    with pytest.raises(arglimits.ArgLimitError) as info:
        _check(channels={"algorithm.inputs": wide})
    assert info.value.field == "algorithm.inputs"


def test_the_total_names_the_largest_field() -> None:
    env = {f"V{i}": "x" * 100_000 for i in range(3)}
    with pytest.raises(arglimits.ArgLimitError, match="beyond the 262144 bytes") as info:
        _check(environments=env, parameters=[("p", "1")], limit=256 << 10)
    assert info.value.field == "algorithm.environments"
    _check(environments=env, limit=1 << 20)
    with pytest.raises(arglimits.ArgLimitError):
        _check(environments={"V": "x"}, limit=256 << 10, inherited=256 << 10)  # the server's environment counts
