"""A plain job's custom metrics (core/spec.py, core/search.py): `algorithm.policies.auto_search` with
`reward_attrs` alone, validated as a search's rewards; a trial's request carries its search's rewards as
its own. The metrics read from the logs: tests/test_custom_metrics.py."""

from __future__ import annotations

from typing import Any

import pytest

from openarts.core import errors
from openarts.core.resources import build_catalog
from openarts.core.search import MAX_REWARDS, parse_rewards, request_metrics, trial_request
from openarts.core.spec import parse_job

CATALOG = build_catalog({"flavors": [{"flavor_id": "f", "cpu_cores": 1, "memory_gb": 1}]}, gpus=[])
LOSS = {"name": "loss", "mode": "min", "regex": r"loss=([0-9.]+)"}
ACC = {"name": "acc", "regex": r"acc=(\S+)"}


def _job(auto_search: Any, kind: str = "job") -> dict[str, Any]:
    return {"kind": kind, "metadata": {"name": "j"},
            "algorithm": {"command": "true", "policies": {"auto_search": auto_search}},
            "spec": {"resource": {"flavor_id": "f", "node_count": 1}}}


def _refused(body: dict[str, Any]) -> str:
    with pytest.raises(errors.InvalidRequest) as info:
        parse_job(body, CATALOG)
    return info.value.message


def test_reward_attrs_alone_are_a_plain_jobs_custom_metrics() -> None:
    job = parse_job(_job({"reward_attrs": [LOSS, ACC]}), CATALOG)
    assert job.kind == "job" and job.search is None
    assert [(m.name, m.mode, m.regex) for m in job.metrics] == [("loss", "min", LOSS["regex"]),
                                                                 ("acc", "max", ACC["regex"])]
    assert job.metrics[0].read("step 3 loss=0.25") == ("0.25", 0.25)
    # kept in the stored request, which gives them back without the catalog
    assert job.request["algorithm"]["policies"]["auto_search"] == {"reward_attrs": [LOSS, ACC]}
    assert [m.name for m in request_metrics(job.request)] == ["loss", "acc"]


def test_a_job_without_them_has_no_custom_metrics() -> None:
    for auto_search in (None, {}, {"reward_attrs": None}):
        job = parse_job(_job(auto_search), CATALOG)
        assert job.metrics == () and job.search is None
        assert request_metrics(job.request) == ()


@pytest.mark.parametrize("key", ["search_params", "algo_configs", "skip_search_params"])
def test_a_search_in_a_plain_job_is_refused(key: str) -> None:
    value = "lr" if key == "skip_search_params" else [{"name": "lr"}]
    message = _refused(_job({"reward_attrs": [LOSS], key: value}))
    assert "kind" in message and "autosearch_job" in message and "reward_attrs alone" in message


@pytest.mark.parametrize(("reward_attrs", "path", "words"), [
    ([{**LOSS, "regex": "loss=(["}], "reward_attrs[0].regex", "does not compile"),
    ([{**LOSS, "regex": ""}], "reward_attrs[0].regex", "needs a regular expression"),
    ([{**LOSS, "name": "a b"}], "reward_attrs[0].name", "use letters, digits"),
    ([{**LOSS, "mode": "up"}], "reward_attrs[0].mode", "'max' or 'min'"),
    ([LOSS, LOSS], "reward_attrs", "must be distinct"),
    ([], "reward_attrs", "give at least one reward"),
    ([LOSS] + [{**LOSS, "name": f"m{i}"} for i in range(MAX_REWARDS)], "reward_attrs", "at most"),
    ("loss", "reward_attrs", "give at least one reward"),
])
def test_bad_custom_metrics_are_refused_as_a_searchs_rewards_are(reward_attrs: Any, path: str, words: str) -> None:
    message = _refused(_job({"reward_attrs": reward_attrs}))
    assert f"algorithm.policies.auto_search.{path}" in message and words in message, message
    # the same words for a search's rewards (parse_search uses parse_rewards)
    with pytest.raises(errors.InvalidRequest) as info:
        parse_rewards(reward_attrs, "algorithm.policies.auto_search.reward_attrs")
    assert info.value.message == message


def test_a_search_job_has_its_rewards_as_its_metrics_and_so_do_its_trials() -> None:
    search = {"search_params": [{"name": "lr", "param_type": "discrete", "discrete_values": ["0.1", "0.2"]}],
              "reward_attrs": [ACC, LOSS], "algo_configs": [{"name": "grid_search"}]}
    job = parse_job(_job(search, kind="autosearch_job"), CATALOG)
    assert job.search is not None and job.metrics == job.search.rewards
    trial = trial_request(job.request, 0, {"lr": "0.1"}, 0)
    assert trial["algorithm"]["policies"] == {"auto_search": {"reward_attrs": [ACC, LOSS]}}
    parsed = parse_job(trial, CATALOG)  # a trial is a plain job whose custom metrics are the search's rewards
    assert parsed.kind == "job" and parsed.search is None
    assert [m.name for m in parsed.metrics] == ["acc", "loss"]
    assert ("lr", "0.1") in parsed.parameters
