"""The dataset registry (`[datasets.ID]` in the config file): its checks, and how an input's
`remote.dataset{id, version_id}` is resolved at create and kept in the stored request (the real server:
tests/test_data_plane.py)."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest

from openarts.api.errors import translate
from openarts.cli.serve import catalog_of
from openarts.config import ConfigError, load_settings
from openarts.core import errors
from openarts.core.resources import build_catalog
from openarts.core.spec import exported_log_url, parse_job

REGISTRY = """
[datasets.ds-mnist]
name = "mnist"
[datasets.ds-mnist.versions]
v1 = "obs://bkt/datasets/mnist/v1/"
"v2.0" = "/bkt/datasets/mnist/v2/"

[datasets.ds_plain]
versions = { only = "obs://other/plain/" }
"""


def test_the_registry_is_read_into_the_catalog(tmp_path: Path) -> None:
    (tmp_path / "config.toml").write_text(REGISTRY)
    catalog = catalog_of(load_settings(tmp_path))
    mnist = catalog.datasets["ds-mnist"]
    assert (mnist.name, dict(mnist.versions)) == ("mnist", {"v1": "obs://bkt/datasets/mnist/v1/",
                                                            "v2.0": "/bkt/datasets/mnist/v2/"})
    assert catalog.datasets["ds_plain"].name == ""
    assert build_catalog({}, gpus=[]).datasets == {}


BAD = [
    ("[datasets.d]\nname = 'x'\n", "[datasets.d]: missing required key 'versions'"),
    ("[datasets.d]\nversions = {}\n", "[datasets.d] versions: must be a non-empty table of version id = URL"),
    ("[datasets.d]\nversions = { v1 = 3 }\n", "[datasets.d] versions: must be a non-empty table"),
    ("[datasets.d]\nversions = 'obs://b/x/'\n", "[datasets.d] versions: must be a non-empty table"),
    ("[datasets.d]\nversion = { v1 = 'obs://b/x/' }\n", "[datasets.d] version: unknown key (did you mean 'versions'?)"),
    ("[datasets.d]\nname = ''\nversions = { v1 = 'obs://b/x/' }\n", "[datasets.d] name: must be a non-empty string"),
    ("[datasets.d]\nversions = { v1 = 'http://b/x/' }\n",
     "[datasets.d] versions v1: must be an OBS location, obs://bucket/path or /bucket/path, not 'http://b/x/'"),
    ("[datasets.d]\nversions = { v1 = 'obs://b/../x/' }\n", "[datasets.d] versions v1: must be an OBS location"),
    ("[datasets.d]\nversions = { 'a b' = 'obs://b/x/' }\n", "[datasets.d] versions a b: a version id is 1 to 64"),
    ("[datasets.'../d']\nversions = { v1 = 'obs://b/x/' }\n", "[datasets.../d]: a dataset id is 1 to 64"),
    ("datasets = 3\n", "datasets: must be a table ([datasets])"),
    ("[datasets]\nd = 3\n", "[datasets.d]: must be a table ([datasets.d]), not 3"),
    ("[dataset.d]\nversions = { v1 = 'obs://b/x/' }\n", "[dataset]: unknown section (did you mean [datasets]?)"),
]


@pytest.mark.parametrize(("text", "says"), BAD)
def test_each_registry_problem_is_one_line_naming_file_and_key(tmp_path: Path, text: str, says: str) -> None:
    (tmp_path / "config.toml").write_text(text)
    with pytest.raises(ConfigError) as info:
        load_settings(tmp_path)
    message = str(info.value)
    assert message.startswith(f"{tmp_path / 'config.toml'}: ") and "\n" not in message
    assert says in message, message


def _catalog(tmp_path: Path, text: str = REGISTRY) -> Any:
    (tmp_path / "config.toml").write_text(text)
    return catalog_of(load_settings(tmp_path))


def _body(*inputs: dict[str, Any], outputs: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    return {"kind": "job", "metadata": {"name": "ds"},
            "algorithm": {"command": "true", "inputs": list(inputs), "outputs": outputs or []},
            "spec": {"resource": {"flavor_id": "modelarts.local.cpu.1u", "node_count": 1}}}


def _input(**dataset: Any) -> dict[str, Any]:
    return {"name": "data_url", "remote": {"dataset": dataset}}


def test_a_dataset_input_is_resolved_at_create_and_the_stored_request_keeps_the_url(tmp_path: Path) -> None:
    catalog = _catalog(tmp_path)
    spec = parse_job(_body(_input(id="ds-mnist", version_id="v2.0", name="not the registry's",
                                  obs_url="obs://elsewhere/x/")), catalog, catalog.datasets)
    assert spec.inputs[0].obs_url == "/bkt/datasets/mnist/v2/"  # the registry's, whatever the body said
    stored = spec.request["algorithm"]["inputs"][0]["remote"]["dataset"]
    assert stored == {"id": "ds-mnist", "version_id": "v2.0", "obs_url": "/bkt/datasets/mnist/v2/", "name": "mnist"}
    plain = parse_job(_body(_input(id="ds_plain", version_id="only", name="mine")), catalog, catalog.datasets)
    assert plain.request["algorithm"]["inputs"][0]["remote"]["dataset"] == {
        "id": "ds_plain", "version_id": "only", "obs_url": "obs://other/plain/"}  # only the registry names one

    # the supervisor parses the stored request again, without the registry: the same URL, even after the
    # registry changed or lost the dataset
    request = copy.deepcopy(spec.request)
    moved = _catalog(tmp_path, "[datasets.other]\nversions = { v = 'obs://b/other/' }\n")
    again = parse_job(request, moved)
    assert again.inputs == spec.inputs and again.request == spec.request


@pytest.mark.parametrize(("dataset", "says"), [
    ({"id": "nope", "version_id": "v1"}, "algorithm.inputs[0].remote.dataset.id: dataset 'nope' is not in this "
                                         "server's dataset registry ([datasets] in its config file; known: ds-mnist, "
                                         "ds_plain)"),
    ({"id": "ds-mnist", "version_id": "v9"}, "algorithm.inputs[0].remote.dataset.version_id: dataset 'ds-mnist' "
                                             "has no version 'v9' (its versions: v1, v2.0)"),
    ({"id": "ds-mnist"}, "algorithm.inputs[0].remote.dataset needs both id and version_id"),
    ({"version_id": "v1"}, "algorithm.inputs[0].remote.dataset needs both id and version_id"),
    ({"id": 7, "version_id": "v1"}, "algorithm.inputs[0].remote.dataset.id: must be a string"),
    ({}, "algorithm.inputs[0].remote needs obs.obs_url or dataset.id and dataset.version_id"),
])
def test_an_unknown_dataset_or_version_is_an_inputs_outputs_error(tmp_path: Path, dataset: dict[str, Any],
                                                                   says: str) -> None:
    catalog = _catalog(tmp_path)
    with pytest.raises(errors.InputsOutputsError) as info:
        parse_job(_body(_input(**dataset)), catalog, catalog.datasets)
    assert says in info.value.message, info.value.message
    assert translate(info.value) == (400, "ModelArts.2753")


def test_an_empty_registry_says_so_and_outputs_and_mixed_remotes_are_refused(tmp_path: Path) -> None:
    empty = build_catalog({}, gpus=[])
    with pytest.raises(errors.InputsOutputsError, match="known: none is registered"):
        parse_job(_body(_input(id="ds-mnist", version_id="v1")), empty, empty.datasets)
    catalog = _catalog(tmp_path)
    out = {"name": "train_url", "remote": {"dataset": {"id": "ds-mnist", "version_id": "v1"}}}
    with pytest.raises(errors.InputsOutputsError, match=r"outputs\[0\].remote.dataset: only an input can be"):
        parse_job(_body(outputs=[out]), catalog, catalog.datasets)
    both = {"name": "data_url", "remote": {"obs": {"obs_url": "obs://bkt/x/"},
                                           "dataset": {"id": "ds-mnist", "version_id": "v1"}}}
    with pytest.raises(errors.InputsOutputsError, match="use either obs or dataset, not both"):
        parse_job(_body(both), catalog, catalog.datasets)
    # a dataset named by its obs_url alone is taken as before, with or without a registry
    legacy = parse_job(_body(_input(obs_url="obs://bkt/legacy/")), catalog, catalog.datasets)
    assert legacy.inputs[0].obs_url == "obs://bkt/legacy/"


def test_exported_log_names() -> None:
    assert exported_log_url("obs://b/logs/", "j", "worker-0", 2) == "obs://b/logs/modelarts-job-j-worker-0-attempt-2.log"
    assert exported_log_url("obs://b", "j", "worker-1", 1) == "obs://b/modelarts-job-j-worker-1-attempt-1.log"
