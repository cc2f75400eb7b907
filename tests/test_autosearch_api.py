"""The auto-search operations through the official SDK against a real server (service/search.py).

The algorithms and their YAML templates; a search's trials, a trial's metric history, early stop, the
parameter analysis and its plots, and what the search's document shows of its trials. The trial data is
written straight into the server's database (the supervisor's search pass is tested on its own): a search
row, cloned from a plain job's and ended so that no pass acts on it, whose running trial is a real job.
Every response is checked against its SDK model (type_errors and round-trip losses), as
tests/test_api_fidelity.py does for the other operations.
"""

from __future__ import annotations

import json
import sqlite3
import time
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import huaweicloudsdkmodelarts.v1.model as m
import pytest
import yaml

from conftest import DEFAULT_CONFIG, PROJECT, Server, job_body, wait_for
from helpers import create_id, expect_error, show_json, wait_phase
from openarts.core.search import ALGORITHMS, SEARCH_KIND, parse_search
from sdk_types import checked_response, type_errors
from security_support import Key, create_key, sdk_for_key, signed_client

AUTO_SEARCH = {
    "search_params": [{"name": "lr", "param_type": "continuous", "lower_bound": "0.001", "upper_bound": "0.1"},
                      {"name": "opt", "param_type": "discrete", "discrete_values": ["sgd", "adam"]}],
    "reward_attrs": [{"name": "acc", "mode": "max", "regex": "acc=([0-9.]+)"},
                     {"name": "loss", "mode": "min", "regex": "loss=([0-9.]+)"}],
    "algo_configs": [{"name": "random_search", "params": [{"key": "num_samples", "value": "8", "type": "int"}]}],
}
# number, state, value, params, rewards, history, exit_code, message (trial 3 runs: its job is real)
TRIALS: list[tuple[Any, ...]] = [
    (0, "completed", 0.5, {"lr": "0.001", "opt": "sgd"}, {"acc": 0.5, "loss": 2.0},
     [[2, "acc", 0.25], [3, "loss", 2.0], [5, "acc", 0.5]], 0, ""),
    (1, "completed", 0.875, {"lr": "0.05", "opt": "adam"}, {"acc": 0.875}, [[4, "acc", 0.875]], 0, ""),
    (2, "failed", None, {"lr": "0.1", "opt": "sgd"}, {}, [], 1, "reward 'acc' not found in the log"),
    (3, "running", 0.25, {"lr": "0.02", "opt": "adam"}, {"acc": 0.25}, [[1, "acc", 0.25]], None, ""),
    (4, "early_stopped", 0.125, {"lr": "0.003", "opt": "sgd"}, {"acc": 0.125}, [], None, "stopped early"),
]


def checked(operation: str, resp: Any, status: int = 200) -> dict[str, Any]:
    """The raw response of an SDK call: its status, and every value of the type its model declares."""
    raw = checked_response(operation, resp, status)
    assert raw, f"{operation} answered no body"
    return raw


# -- the catalogue and the templates -------------------------------------------------------------------


def test_search_algorithms_list_the_algorithms_with_their_parameters(sdk: Any) -> None:
    raw = checked("show_search_algorithms", sdk.show_search_algorithms(m.ShowSearchAlgorithmsRequest()))
    assert raw["search_algo_count"] == 5 == len(raw["search_algo_list"])
    by_name = {a["name"]: a for a in raw["search_algo_list"]}
    assert set(by_name) == {"bayes_opt_search", "tpe_search", "anneal_search", "random_search", "grid_search"}
    tpe = {p["key"]: p for p in by_name["tpe_search"]["params"]}
    assert tpe["gamma"] == {"key": "gamma", "value": "0.25", "type": "float"}
    assert {"num_samples", "n_initial_points", "max_concurrent_num"} <= set(tpe)
    assert {p["key"] for p in by_name["bayes_opt_search"]["params"]} >= {"kind", "kappa", "xi"}
    assert all(a["description"] for a in raw["search_algo_list"])


def test_yaml_templates(server: Server, sdk: Any) -> None:
    raw = checked("show_auto_search_yaml_templates_info",
                  sdk.show_auto_search_yaml_templates_info(m.ShowAutoSearchYamlTemplatesInfoRequest()))
    assert raw == {"yaml_templates": [{"algorithm_type_en": "search_algorithm", "algorithm_type_zh": "搜索算法",
                                       "algorithm_names": list(ALGORITHMS)}]}
    for name in ALGORITHMS:
        raw = checked("show_auto_search_yaml_template_content", sdk.show_auto_search_yaml_template_content(
            m.ShowAutoSearchYamlTemplateContentRequest(algorithm_type="search_algorithm", algorithm_name=name)))
        assert raw["file_name"] == f"{name}.yaml"
        doc = yaml.safe_load(raw["content"])
        algorithm = doc["algorithm"]
        spec = parse_search(algorithm["policies"]["auto_search"],
                            [(p["name"], p["value"]) for p in algorithm["parameters"]])
        assert doc["kind"] == SEARCH_KIND and spec.algorithm == name
    # the template creates a search once its flavor is set
    doc["spec"]["resource"]["flavor_id"] = "modelarts.local.cpu.1u"
    created = show_json(sdk, create_id(sdk, doc))
    assert created["kind"] == SEARCH_KIND and created["metadata"]["name"] == "grid-search-example"
    for algorithm_type, name in (("search_algorithm", "no_such_search"), ("other", "tpe_search")):
        exc = expect_error(lambda t=algorithm_type, n=name: sdk.show_auto_search_yaml_template_content(
            m.ShowAutoSearchYamlTemplateContentRequest(algorithm_type=t, algorithm_name=n)), 400, "ModelArts.2755")
        assert "tpe_search" in exc.error_msg or "search_algorithm" in exc.error_msg
    # the literal /training-jobs/autosearch/... routes come before /training-jobs/{job_id}: a job named so
    # is still looked up as a job where only a job id fits
    with httpx.Client(base_url=server.api) as http:
        assert http.get("/training-jobs/autosearch/yaml-templates").json() == raw_templates(sdk)
        missing = http.get("/training-jobs/autosearch")
        assert (missing.status_code, missing.json()["error_code"]) == (400, "ModelArts.2775")


def raw_templates(sdk: Any) -> Any:
    return sdk.show_auto_search_yaml_templates_info(m.ShowAutoSearchYamlTemplatesInfoRequest()).to_json_object()


# -- a search with trials ------------------------------------------------------------------------------


class Seeded:
    def __init__(self, server: Server, key: Key, sdk: Any, search_id: str, running_job: str, plain: str) -> None:
        self.server, self.key, self.sdk = server, key, sdk
        self.search_id, self.running_job, self.plain = search_id, running_job, plain

    def db(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.server.data_dir / "openarts.db", timeout=30)
        conn.row_factory = sqlite3.Row
        return conn


def _seed(server: Server, sdk: Any) -> tuple[str, str]:
    """A search (ended, so no supervisor pass acts on it) with TRIALS; trial 3's job is a real one running
    `sleep`. Returns (search id, running trial's job id)."""
    running = create_id(sdk, job_body("trial-3-job", command="sleep 300"))
    search_id = str(uuid.uuid4())
    conn = sqlite3.connect(server.data_dir / "openarts.db", timeout=30)
    conn.row_factory = sqlite3.Row
    try:
        with conn:
            row = dict(conn.execute("SELECT * FROM jobs WHERE id = ?", (running,)).fetchone())
            request = json.loads(row["request"])
            request["kind"] = SEARCH_KIND
            request["metadata"]["name"] = "the-search"
            request["algorithm"]["policies"] = {"auto_search": AUTO_SEARCH}
            row.update(id=search_id, name="the-search", kind=SEARCH_KIND, parent_id="", phase="Completed",
                       secondary_phase="Completed", request=json.dumps(request))
            marks = ", ".join("?" * len(row))
            conn.execute(f"INSERT INTO jobs ({', '.join(row)}) VALUES ({marks})", list(row.values()))
            conn.execute("UPDATE jobs SET parent_id = ? WHERE id = ?", (search_id, running))
            for number, state, value, params, rewards, history, code, message in TRIALS:
                conn.execute(
                    "INSERT INTO trials (search_id, number, job_id, params, state, value, rewards, history, message, "
                    "exit_code, create_ms, end_ms, stop_reason) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, '')",
                    (search_id, number, running if number == 3 else str(uuid.uuid4()), json.dumps(params), state,
                     value, json.dumps(rewards), json.dumps(history), message, code, 1_700_000_000_000 + number,
                     0 if state == "running" else 1_700_000_100_000 + number))
    finally:
        conn.close()
    return search_id, running


@pytest.fixture
def seeded(make_server: Callable[..., Server], tmp_path: Path) -> Iterator[Seeded]:
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    key = create_key(data_dir, PROJECT, "alice")  # enforcing: the plot's route is AK/SK-authenticated too
    server = make_server(DEFAULT_CONFIG, data_dir=data_dir)
    sdk = sdk_for_key(server, key)
    plain = create_id(sdk, job_body("plain", command="true"))
    search_id, running = _seed(server, sdk)
    yield Seeded(server, key, sdk, search_id, running, plain)


def _trials(sdk: Any, job_id: str, **kw: Any) -> dict[str, Any]:
    return checked("show_auto_search_trials",
                   sdk.show_auto_search_trials(m.ShowAutoSearchTrialsRequest(training_job_id=job_id, **kw)))


def test_trials_table_and_paging(seeded: Seeded) -> None:
    sdk, search = seeded.sdk, seeded.search_id
    wait_phase(sdk, seeded.running_job, "Running")
    raw = _trials(sdk, search)
    assert (raw["total"], raw["count"], raw["limit"], raw["offset"], raw["group_by"]) == (5, 5, 10, 0, "")
    assert raw["items"]["header"] == ["trial_id", "status", "lr", "opt", "acc", "loss", "job_id", "exit_code",
                                      "create_time", "end_time", "message"]
    rows = raw["items"]["data"]
    assert [r[:6] for r in rows] == [["0", "completed", "0.001", "sgd", "0.5", "2"],
                                     ["1", "completed", "0.05", "adam", "0.875", ""],
                                     ["2", "failed", "0.1", "sgd", "", ""],
                                     ["3", "running", "0.02", "adam", "0.25", ""],
                                     ["4", "early_stopped", "0.003", "sgd", "0.125", ""]]
    assert rows[3][6:10] == [seeded.running_job, "", "1700000000003", ""]
    assert rows[2][7:] == ["1", "1700000000002", "1700000100002", "reward 'acc' not found in the log"]
    assert all(isinstance(c, str) for r in rows for c in r)
    page = _trials(sdk, search, limit=2, offset=1)  # offset counts pages
    assert (page["total"], page["count"], page["limit"], page["offset"]) == (5, 2, 2, 1)
    assert [r[0] for r in page["items"]["data"]] == ["2", "3"]
    assert [r[0] for r in _trials(sdk, search, limit=2, offset=2)["items"]["data"]] == ["4"]
    for bad in ({"limit": 0}, {"limit": 1001}, {"offset": -1}):
        expect_error(lambda b=bad: sdk.show_auto_search_trials(m.ShowAutoSearchTrialsRequest(  # type: ignore[misc]
            training_job_id=search, **b)), 400, "ModelArts.2764")
    exc = expect_error(lambda: sdk.show_auto_search_trials(m.ShowAutoSearchTrialsRequest(
        training_job_id=seeded.plain)), 400, "ModelArts.2788")
    assert "not an auto-search job" in exc.error_msg
    expect_error(lambda: sdk.show_auto_search_trials(m.ShowAutoSearchTrialsRequest(training_job_id="no-such-job")),
                 400, "ModelArts.2775")


def test_a_trials_history(seeded: Seeded) -> None:
    sdk, search = seeded.sdk, seeded.search_id
    raw = checked("show_auto_search_per_trial", sdk.show_auto_search_per_trial(
        m.ShowAutoSearchPerTrialRequest(training_job_id=search, trial_id="0")))
    assert raw == {"header": ["line", "metric", "value"],
                   "data": [["2", "acc", "0.25"], ["3", "loss", "2"], ["5", "acc", "0.5"]]}
    exc = expect_error(lambda: sdk.show_auto_search_per_trial(
        m.ShowAutoSearchPerTrialRequest(training_job_id=search, trial_id="9")), 400, "ModelArts.2775")
    assert "trial ids are 0 to 4" in exc.error_msg


def test_early_stop_records_the_intent(seeded: Seeded) -> None:
    sdk, search = seeded.sdk, seeded.search_id

    def stop(trial_id: str) -> Any:
        return sdk.show_auto_search_trial_early_stop(
            m.ShowAutoSearchTrialEarlyStopRequest(training_job_id=search, trial_id=trial_id))

    assert checked("show_auto_search_trial_early_stop", stop("3")) == {"earlystop_trial": "3"}
    with seeded.db() as conn:
        trial = conn.execute("SELECT state, stop_reason FROM trials WHERE search_id = ? AND number = 3",
                             (search,)).fetchone()
        job = conn.execute("SELECT terminate_requested, terminate_reason FROM jobs WHERE id = ?",
                           (seeded.running_job,)).fetchone()
    assert trial["stop_reason"] == "stopped early by the user (autosearch-trial-earlystop)"
    assert job["terminate_requested"] == 1 and "stopped early by the user" in job["terminate_reason"]
    wait_phase(sdk, seeded.running_job, "Terminated")  # the supervisor acted on the intent
    exc = expect_error(lambda: stop("0"), 409, "ModelArts.2878")
    assert "only a running trial" in exc.error_msg
    expect_error(lambda: stop("7"), 400, "ModelArts.2775")
    time.sleep(1.1)  # the SDK signs to the second: the same request within it would be refused as a replay
    assert checked("show_auto_search_trial_early_stop", stop("3")) == {"earlystop_trial": "3"}, "again: no change"


def test_parameter_analysis_and_plots(seeded: Seeded) -> None:
    sdk, search = seeded.sdk, seeded.search_id
    raw = checked("show_auto_search_params_analysis", sdk.show_auto_search_params_analysis(
        m.ShowAutoSearchParamsAnalysisRequest(training_job_id=search)))
    assert raw["header"] == ["parameter", "importance", "best_value", "trials"]
    assert [[r[0], r[2], r[3]] for r in raw["data"]] == [["lr", "0.05", "2"], ["opt", "adam", "2"]]
    importance = [float(r[1]) for r in raw["data"]]  # fANOVA over the two completed trials (core/searchers.py)
    assert all(0 <= x <= 1 for x in importance) and sum(importance) == pytest.approx(1, abs=1e-3)
    for name in ("lr", "opt"):
        raw = checked("show_auto_search_param_analysis_result_path", sdk.show_auto_search_param_analysis_result_path(
            m.ShowAutoSearchParamAnalysisResultPathRequest(training_job_id=search, parameter_name=name)))
        path = f"/v2/{PROJECT}/training-jobs/{search}/autosearch-parameter-analysis/{name}/plot.svg"
        assert raw == {"file_path": path}
        assert (seeded.server.data_dir / "jobs" / search / "autosearch" / f"{name}.svg").is_file()
        with signed_client(seeded.server, seeded.key) as http:
            served = http.get(seeded.server.url + path)
        assert served.status_code == 200 and served.headers["content-type"].startswith("image/svg+xml")
        root = ET.fromstring(served.content)
        circles = root.findall("{http://www.w3.org/2000/svg}circle")
        assert len(circles) == 2, "the completed trials with a value"
        assert [c.get("r") for c in circles].count("7") == 1, "the best one highlighted"
        assert httpx.get(seeded.server.url + path).status_code == 401, "AK/SK like every API route"
    exc = expect_error(lambda: sdk.show_auto_search_param_analysis_result_path(
        m.ShowAutoSearchParamAnalysisResultPathRequest(training_job_id=search, parameter_name="epochs")),
        400, "ModelArts.2788")
    assert "lr, opt" in exc.error_msg
    expect_error(lambda: sdk.show_auto_search_params_analysis(
        m.ShowAutoSearchParamsAnalysisRequest(training_job_id=seeded.plain)), 400, "ModelArts.2788")


def test_the_search_document_shows_its_trials(seeded: Seeded) -> None:
    sdk, search = seeded.sdk, seeded.search_id
    doc = show_json(sdk, search)  # every value of the type the SDK's model declares
    assert doc["kind"] == SEARCH_KIND
    assert doc["status"]["tasks"] == [f"trial-{n}" for n in range(5)]
    statuses = doc["status"]["task_statuses"]
    assert statuses[0] == {"task": "trial-0", "exit_code": 0, "message": "completed: acc=0.5 loss=2"}
    assert statuses[2] == {"task": "trial-2", "exit_code": 1,
                           "message": "failed; reward 'acc' not found in the log"}
    assert statuses[3] == {"task": "trial-3", "message": "running: acc=0.25"}
    assert doc["metadata"]["annotations"] == {
        "autosearch/trials": "5 of 8 trials: 1 running, 2 completed, 1 failed, 1 early stopped",
        "autosearch/best-trial": "trial-1: acc=0.875 (lr=0.05, opt=adam)"}
    listed = sdk.list_training_jobs(m.ListTrainingJobsRequest(body={"limit": 50})).to_json_object()
    items = {i["metadata"]["id"]: i for i in listed["items"]}
    assert seeded.running_job not in items, "a trial's job is not listed"
    assert items[search]["status"]["tasks"] == doc["status"]["tasks"]
    assert type_errors("ListTrainingJobsResponse", listed) == []
    plain = show_json(sdk, seeded.plain)
    wait_for(lambda: show_json(sdk, seeded.plain)["status"]["phase"] == "Completed", message="plain job ends")
    assert "annotations" not in plain["metadata"] and plain["status"]["tasks"] == ["worker-0"]
