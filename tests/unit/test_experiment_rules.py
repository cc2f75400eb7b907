"""The rules of a training experiment's fields and of a job's reference to one (core/experiments.py)."""

from __future__ import annotations

from typing import Any

import pytest

from openarts.core import errors
from openarts.core.experiments import (
    ExperimentChange,
    ExperimentRef,
    parse_change,
    parse_create,
    parse_reference,
)


@pytest.mark.parametrize(("value", "want"), [
    (None, None), ({}, None), ({"id": "", "name": ""}, None),
    ({"id": "e-1"}, ExperimentRef("e-1", None, "")),
    ({"id": "e-1", "name": "grp"}, ExperimentRef("e-1", "grp", "")),
    ({"name": "grp", "description": "why"}, ExperimentRef(None, "grp", "why")),
])
def test_a_reference_names_an_experiment_by_id_or_name(value: Any, want: ExperimentRef | None) -> None:
    assert parse_reference(value) == want


@pytest.mark.parametrize(("value", "field"), [
    ("e-1", "metadata.training_experiment_reference"),
    ({"id": 3}, "metadata.training_experiment_reference.id"),
    ({"id": "x" * 65}, "metadata.training_experiment_reference.id"),
    ({"name": "a b"}, "metadata.training_experiment_reference.name"),
    ({"name": "x" * 65}, "metadata.training_experiment_reference.name"),
    ({"name": "ok", "description": "<b>"}, "metadata.training_experiment_reference.description"),
    ({"name": "ok", "description": "d" * 257}, "metadata.training_experiment_reference.description"),
])
def test_a_malformed_reference_is_refused_naming_its_field(value: Any, field: str) -> None:
    with pytest.raises(errors.InvalidRequest, match=f"Invalid parameter {field}:"):
        parse_reference(value)


def test_create_and_change_bodies() -> None:
    assert parse_create({"metadata": {"name": "grp"}}) == ("grp", "", "0")
    assert parse_create({"metadata": {"name": "grp", "description": "tab\tok", "workspace_id": "w"}}) == \
        ("grp", "tab\tok", "w")
    for bad in ({}, {"metadata": "grp"}, {"metadata": {"name": ""}}, {"metadata": {"name": "g", "description": 1}},
                {"metadata": {"name": "g", "description": "nul\x00"}}):
        with pytest.raises(errors.InvalidRequest):
            parse_create(bad)
    with pytest.raises(errors.InvalidJsonBody):
        parse_create([])
    assert parse_change({}) == ExperimentChange(None, None)
    assert parse_change({"name": "new", "description": ""}) == ExperimentChange("new", "")
    assert parse_change({"name": None, "description": None}) == ExperimentChange(None, None)
    for bad in ({"name": ""}, {"name": "a b"}, {"workspace_id": "w"}, {"description": "quote's"}):
        with pytest.raises(errors.InvalidRequest):
            parse_change(bad)
