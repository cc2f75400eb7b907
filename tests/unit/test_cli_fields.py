"""`openarts submit`'s unknown-field warnings: the field tree shipped with the CLI is the official SDK's
create-body model, and the walk finds every unknown key, at any depth, with a suggestion."""

from __future__ import annotations

from typing import Any

from huaweicloudsdkmodelarts.v1 import model

from openarts.cli.fields import UnknownField, create_body_tree, sdk_tree, shipped_tree, unknown_fields


def test_the_shipped_tree_is_the_sdk_create_body_model() -> None:
    assert shipped_tree() == sdk_tree(model)  # regenerate: python -m openarts.cli.fields
    tree = create_body_tree()
    assert tree["tasks"][0]["algorithm"]["command"] == "str"  # what openarts takes beyond it: a role's command
    assert tree["spec"]["resource"]["node_count"] == "int"
    assert tree["metadata"]["annotations"] == {"*": "str"}
    assert tree["algorithm"]["parameters"][0]["constraint"]["valid_range"] == ["str"]


def test_a_full_modelarts_body_has_no_unknown_field() -> None:
    body: dict[str, Any] = {
        "kind": "job",
        "metadata": {"name": "n", "description": "d", "annotations": {"fault-tolerance/job-retry-num": "3",
                                                                      "anything/at-all": "x"}},
        "algorithm": {"command": "python train.py", "code_dir": "obs://b/code/", "boot_file": "train.py",
                      "parameters": [{"name": "lr", "value": "0.1", "constraint": {"type": "Float"}}],
                      "inputs": [{"name": "data", "remote": {"obs": {"obs_url": "obs://b/data/"}}}],
                      "outputs": [{"name": "out", "remote": {"obs": {"obs_url": "obs://b/out/"}}}],
                      "engine": {"engine_id": "local-python3"}, "environments": {"ANY_NAME": "1"}},
        "spec": {"resource": {"flavor_id": "f", "node_count": 2},
                 "schedule_policy": {"priority": 1, "preemptible": True},
                 "auto_stop": {"time_unit": "HOURS", "duration": 1}},
    }
    assert unknown_fields(body) == []


def test_unknown_fields_at_any_depth_with_suggestions() -> None:
    body = {
        "kind": "job",
        "metdata": {"name": "n"},
        "algorithm": {"inputs": [{"name": "a", "remote": {"obs": {"obs_url": "x"}}},
                                 {"name": "b", "remote": {"obs": {"obs_uri": "x"}}}],
                      "comand": "true"},
        "spec": {"resource": {"flavor_id": "f", "node_cont": 2, "zzzzzzzz": 1}},
        "status": {"phase": "Running"},
    }
    assert unknown_fields(body) == [
        UnknownField("metdata", "metadata"),
        UnknownField("algorithm.inputs[1].remote.obs.obs_uri", "obs_url"),
        UnknownField("algorithm.comand", "command"),
        UnknownField("spec.resource.node_cont", "node_count"),
        UnknownField("spec.resource.zzzzzzzz", None),
        UnknownField("status", None),
    ]
    assert str(UnknownField("spec.resource.node_cont", "node_count")) == (
        "spec.resource.node_cont is not a ModelArts field (the server ignores it); did you mean 'node_count'?")


def test_values_of_an_unexpected_type_are_left_to_the_server() -> None:
    assert unknown_fields({"spec": "text", "algorithm": {"inputs": {"name": "x"}}, "metadata": [1, 2]}) == []
    assert unknown_fields([1, 2]) == []
