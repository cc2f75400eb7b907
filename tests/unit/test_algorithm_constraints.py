"""core/algorithms.py: a job from an algorithm keeps to its parameters' constraints, a hyperparameter
search from one too (a searched parameter must be declared and editable, every value it may take within
its constraint), and numbers are plain ASCII, Integers compared exactly."""

from __future__ import annotations

from typing import Any

import pytest

from openarts.core import errors
from openarts.core.algorithms import check_value, parse_config, resolve_job_algorithm
from openarts.core.resources import build_catalog

CATALOG = build_catalog({}, gpus=[])


def config() -> dict[str, Any]:
    engine = next(iter(CATALOG.engines.values()))
    return parse_config({"job_config": {
        "command": "python3 train.py", "engine": {"engine_id": engine.engine_id},
        "parameters": [
            {"name": "seed", "value": "42", "constraint": {"type": "Integer", "editable": False}},
            {"name": "epochs", "value": "5", "constraint": {"type": "Integer", "valid_type": "Range",
                                                            "valid_range": ["1", "10"]}},
            {"name": "lr", "value": "0.1", "constraint": {"type": "Float", "valid_type": "Range",
                                                          "valid_range": ["0.0001", "1"]}}]}}, CATALOG)


def search(*params: dict[str, Any]) -> dict[str, Any]:
    return {"id": "a", "policies": {"auto_search": {"search_params": list(params)}}}


def test_a_search_from_an_algorithm_searches_only_what_its_constraints_allow() -> None:
    ok = search({"name": "lr", "param_type": "continuous", "lower_bound": "0.001", "upper_bound": "0.5"},
                {"name": "epochs", "param_type": "discrete", "discrete_values": ["2", "8"]})
    resolve_job_algorithm(ok, config(), {"id": "a"})
    refused = [
        (search({"name": "seed", "param_type": "discrete", "discrete_values": ["1", "2"]}), "not editable"),
        (search({"name": "epochs", "param_type": "discrete", "discrete_values": ["2", "500"]}), "out of its valid"),
        (search({"name": "epochs", "param_type": "continuous", "lower_bound": "1", "upper_bound": "9"}),
         "search it by discrete values"),
        (search({"name": "lr", "param_type": "continuous", "lower_bound": "0.001", "upper_bound": "3"}),
         "out of its valid"),
        (search({"name": "zzz", "param_type": "discrete", "discrete_values": ["x"]}), "not declared"),
    ]
    for algorithm, words in refused:
        with pytest.raises(errors.InvalidRequest, match=words):
            resolve_job_algorithm(algorithm, config(), {"id": "a"})


@pytest.mark.parametrize("value", ["1_0", " 5 ", "\uff15", "\u0661\u0660", "5.0", "1e1"])
def test_an_integer_is_plain_ascii_digits(value: str) -> None:
    with pytest.raises(errors.InvalidRequest, match="not of type Integer"):
        check_value("epochs", value, {"type": "Integer", "valid_type": "Range", "valid_range": ["1", "10"]}, "x")


def test_integer_bounds_are_compared_exactly() -> None:
    c = {"type": "Integer", "valid_type": "Range", "valid_range": ["", "9007199254740992"]}
    check_value("n", "9007199254740992", c, "x")
    with pytest.raises(errors.InvalidRequest, match="out of its valid range"):
        check_value("n", "9007199254740993", c, "x")


def test_a_range_with_min_above_max_or_a_choice_of_the_wrong_type_is_refused() -> None:
    for constraint, words in (({"type": "Integer", "valid_type": "Range", "valid_range": ["10", "1"]}, "greater"),
                              ({"type": "Float", "valid_type": "Choice", "valid_range": ["0.1", "abc"]}, "number")):
        with pytest.raises(errors.InvalidRequest, match=words):
            parse_config({"job_config": {"command": "true", "parameters": [
                {"name": "p", "value": "", "constraint": constraint}]}}, CATALOG)
