"""The auto-search operations' pure parts (service/search.py): the trials table's header and rows, a trial's
history, the analysis rows, the SVG plot, the YAML templates, what a search's document shows; and the
service itself over an in-memory store (paging, early stop's intent, the plot file)."""

from __future__ import annotations

import asyncio
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml

from openarts.config import Settings
from openarts.core import errors
from openarts.core.resources import build_catalog
from openarts.core.search import ALGORITHMS, SEARCH_KIND, TrialState, parse_search
from openarts.core.spec import parse_job
from openarts.service import search as s
from openarts.service.document import job_document
from openarts.store import jobs as w
from openarts.store import queries as q
from openarts.store import trials as st
from openarts.store.db import open_db
from openarts.store.rows import TrialRow

SVG = "{http://www.w3.org/2000/svg}"
AUTO_SEARCH = {
    "search_params": [{"name": "lr", "param_type": "continuous", "lower_bound": "0.001", "upper_bound": "0.1"},
                      {"name": "opt", "param_type": "discrete", "discrete_values": ["sgd", "adam"]}],
    "reward_attrs": [{"name": "acc", "mode": "max", "regex": "acc=([0-9.]+)"},
                     {"name": "loss", "mode": "min", "regex": "loss=([0-9.]+)"}],
    "algo_configs": [{"name": "random_search", "params": [{"key": "num_samples", "value": "6", "type": "int"}]}],
}
SPEC = parse_search(AUTO_SEARCH, [])


def trial(number: int, state: str = TrialState.COMPLETED, value: float | None = 0.5, *, lr: str = "0.01",
          opt: str = "sgd", loss: float | None = None, history: list[list[Any]] | None = None, message: str = "",
          exit_code: int | None = 0, stop_reason: str = "", end_ms: int = 2000) -> TrialRow:
    rewards = {k: v for k, v in (("acc", value), ("loss", loss)) if v is not None}
    return TrialRow("search", number, f"job-{number}", orjson.dumps({"lr": lr, "opt": opt}).decode(), state, value,
                    orjson.dumps(rewards).decode(), orjson.dumps(history or []).decode(), message, exit_code, 1000,
                    end_ms, stop_reason)


# -- the tables ----------------------------------------------------------------------------------------


def test_trial_header_names_the_searched_parameters_then_the_rewards() -> None:
    assert s.trial_header(SPEC) == ["trial_id", "status", "lr", "opt", "acc", "loss", "job_id", "exit_code",
                                    "create_time", "end_time", "message"]


def test_trial_cells_are_strings_with_empty_for_none() -> None:
    done = trial(3, value=0.25, loss=1.5, lr="0.05", opt="adam", message="note")
    assert s.trial_cells(SPEC, done, None) == ["3", "completed", "0.05", "adam", "0.25", "1.5", "job-3", "0",
                                               "1000", "2000", "note"]
    running = trial(4, TrialState.RUNNING, None, exit_code=None, end_ms=0)
    assert s.trial_cells(SPEC, running, "Running") == ["4", "running", "0.01", "sgd", "", "", "job-4", "", "1000",
                                                       "", ""]
    for phase in ("Creating", "Pending"):
        assert s.trial_cells(SPEC, running, phase)[1] == "pending", "a trial waiting for resources"
    stopping = running._replace(stop_reason="stopped early by the user", message="acc not found yet")
    assert s.trial_cells(SPEC, stopping, "Running")[-1] == "stopping: stopped early by the user; acc not found yet"
    assert s.trial_cells(SPEC, trial(5, TrialState.FAILED, None, exit_code=2), None)[1:8:6] == ["failed", "2"]


def test_history_rows_and_observations() -> None:
    t = trial(0, value=0.9, history=[[3, "acc", 0.5], [4, "loss", 2.0], [7, "acc", 0.9], "junk"])
    assert s.history_rows(t) == [["3", "acc", "0.5"], ["4", "loss", "2"], ["7", "acc", "0.9"]]
    (o,) = s.observations(SPEC, [t])
    assert (o.number, dict(o.params), o.state, o.value, o.history) == (0, {"lr": "0.01", "opt": "sgd"}, "completed",
                                                                       0.9, (0.5, 0.9))


def test_best_trial_follows_the_objectives_mode_among_completed_trials() -> None:
    trials = [trial(0, value=0.5), trial(1, value=0.8), trial(2, TrialState.EARLY_STOPPED, 0.99),
              trial(3, TrialState.RUNNING, 0.95), trial(4, value=0.8), trial(5, TrialState.FAILED, None)]
    best = s.best_trial(SPEC.objective, trials)
    assert best is not None and best.number == 1, "completed only; the earliest of equals"
    minimise = parse_search({**AUTO_SEARCH, "reward_attrs": [{"name": "acc", "mode": "min", "regex": "x"}]}, [])
    best = s.best_trial(minimise.objective, trials)
    assert best is not None and best.number == 0
    assert s.best_trial(SPEC.objective, trials[2:4]) is None


def test_analysis_rows() -> None:
    trials = [trial(0, value=0.5, lr="0.001", opt="sgd"), trial(1, value=0.8, lr="0.05", opt="adam"),
              trial(2, TrialState.RUNNING, 0.9, lr="0.1")]
    assert s.analysis_rows(SPEC, trials, {"lr": 0.75, "opt": 0.25}) == [["lr", "0.7500", "0.05", "2"],
                                                                        ["opt", "0.2500", "adam", "2"]]
    assert s.analysis_rows(SPEC, [], {}) == [["lr", "", "", "0"], ["opt", "", "", "0"]]


# -- the plot ------------------------------------------------------------------------------------------


def _svg(text: str) -> ET.Element:
    root = ET.fromstring(text)
    assert root.tag == f"{SVG}svg"
    return root


def test_plot_of_a_numeric_parameter() -> None:
    lr = SPEC.params[0]
    root = _svg(s.render_plot(lr, SPEC.objective, [(0, "0.001", 0.5), (1, "0.05", 0.8), (2, "0.1", 0.7)], 1))
    circles = root.findall(f"{SVG}circle")
    assert len(circles) == 3
    best = [c for c in circles if c.get("r") == "7"]
    assert len(best) == 1 and "trial-1" in (best[0].findtext(f"{SVG}title") or "")
    texts = [t.text for t in root.iter(f"{SVG}text")]
    assert {"0.001", "0.1", "0.5", "0.8", "best: trial-1", "lr", "acc"} <= set(texts), texts
    xs = {c.findtext(f"{SVG}title"): float(c.get("cx", "0")) for c in circles}
    assert sorted(xs, key=lambda k: xs[k]) == sorted(xs, key=lambda k: float(k.split("lr=")[1].split(",")[0]))


def test_plot_of_a_categorical_parameter_labels_each_value() -> None:
    opt = SPEC.params[1]
    root = _svg(s.render_plot(opt, SPEC.objective, [(0, "adam", 0.5), (1, "sgd", 0.8)], 1))
    texts = [t.text for t in root.iter(f"{SVG}text")]
    assert "sgd" in texts and "adam" in texts
    cx = {c.findtext(f"{SVG}title", "").split(":")[0]: float(c.get("cx", "0")) for c in root.iter(f"{SVG}circle")}
    assert cx["trial-1"] < cx["trial-0"], "categories in the discrete values' order: sgd, then adam"


def test_plot_without_points_and_with_hostile_values_is_valid_svg() -> None:
    root = _svg(s.render_plot(SPEC.params[0], SPEC.objective, [], None))
    assert not root.findall(f"{SVG}circle")
    assert "no completed trial with a value yet" in [t.text for t in root.iter(f"{SVG}text")]
    odd = parse_search({**AUTO_SEARCH, "search_params": [
        {"name": "p", "param_type": "discrete", "discrete_values": ["<a&b>", "\"q\"", "]]>"]}]}, [])
    root = _svg(s.render_plot(odd.params[0], odd.objective, [(0, "<a&b>", 1.0), (1, "]]>", 1.0)], 0))
    assert "<a&b>" in [t.text for t in root.iter(f"{SVG}text")]


# -- templates -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(ALGORITHMS))
def test_every_template_is_a_search_its_algorithm_accepts(name: str) -> None:
    doc = yaml.safe_load(s.template_yaml(ALGORITHMS[name]))
    assert doc["kind"] == SEARCH_KIND and doc["spec"]["resource"]["flavor_id"] == s.FLAVOR_PLACEHOLDER
    algorithm = doc["algorithm"]
    parameters = [(p["name"], p["value"]) for p in algorithm["parameters"]]
    spec = parse_search(algorithm["policies"]["auto_search"], parameters)
    assert spec.algorithm == name
    assert [p.name for p in spec.params] == ["learning_rate", "batch_size"]
    assert spec.params[0].continuous and not spec.params[1].continuous
    listed = {p["key"] for p in algorithm["policies"]["auto_search"]["algo_configs"][0]["params"]}
    assert {p.key for p in ALGORITHMS[name].params} <= listed, "the algorithm's own parameters, with defaults"
    catalog = build_catalog({}, gpus=[])
    doc["spec"]["resource"]["flavor_id"] = "modelarts.local.cpu.1u"
    assert parse_job(doc, catalog).search == spec, "a create body as it stands once the flavor is set"


def test_template_errors() -> None:
    svc = s.SearchService(Settings(data_dir=Path("/nonexistent")), open_db(":memory:"), lambda _j: None)
    assert svc.template("search_algorithm", "tpe_search")["file_name"] == "tpe_search.yaml"
    with pytest.raises(errors.SearchAlgorithmNotFound, match="use one of bayes_opt_search"):
        svc.template("search_algorithm", "nope")
    with pytest.raises(errors.SearchAlgorithmNotFound, match="the only type is 'search_algorithm'"):
        svc.template("other", "tpe_search")


# -- the document ----------------------------------------------------------------------------------------


def test_search_annotations_and_task_statuses() -> None:
    trials = [trial(0, value=0.5, loss=2.0), trial(1, TrialState.RUNNING, 0.7, exit_code=None),
              trial(2, value=0.875, lr="0.02", opt="adam"), trial(3, TrialState.FAILED, None, exit_code=1,
                                                                  message="reward 'acc' not found in the log")]
    assert s.search_annotations(SPEC, trials) == {
        "autosearch/trials": "4 of 6 trials: 1 running, 2 completed, 1 failed",
        "autosearch/best-trial": "trial-2: acc=0.875 (lr=0.02, opt=adam)"}
    assert s.search_annotations(SPEC, []) == {"autosearch/trials": "0 of 6 trials"}
    assert s.trial_task_status(SPEC, trials[0]) == {"task": "trial-0", "exit_code": 0,
                                                     "message": "completed: acc=0.5 loss=2"}
    assert s.trial_task_status(SPEC, trials[1]) == {"task": "trial-1", "message": "running: acc=0.7"}
    assert s.trial_task_status(SPEC, trials[3]) == {"task": "trial-3", "exit_code": 1,
                                                     "message": "failed; reward 'acc' not found in the log"}


# -- the service over a store ----------------------------------------------------------------------------


def _search_body(name: str = "search") -> dict[str, Any]:
    return {"kind": SEARCH_KIND, "metadata": {"name": name},
            "algorithm": {"command": "true", "policies": {"auto_search": AUTO_SEARCH}},
            "spec": {"resource": {"flavor_id": "modelarts.local.cpu.1u"}}}


@pytest.fixture
def store(tmp_path: Path) -> tuple[s.SearchService, Any, list[str | None]]:
    db = open_db(":memory:")
    catalog = build_catalog({}, gpus=[])
    woken: list[str | None] = []
    search = parse_job(_search_body(), catalog)
    plain = parse_job({**_search_body("plain"), "kind": "job", "algorithm": {"command": "true"}}, catalog)
    with db.begin() as conn:
        w.create_job(conn, "search", "p", "u", search, {"annotations": {}, "algorithm": {}, "spec": {}}, 1000)
        w.create_job(conn, "plain", "p", "u", plain, {}, 1000)
        for n in range(5):
            body = {**_search_body(f"search-trial-{n}"), "kind": "job", "algorithm": {"command": "true"}}
            trial_job = parse_job(body, catalog)
            w.create_job(conn, f"job-{n}", "p", "u", trial_job, {}, 1000, parent_id="search")
            st.create_trial(conn, "search", n, f"job-{n}", {"lr": f"0.0{n + 1}", "opt": "sgd"}, 1000 + n)
        st.set_metrics(conn, "search", 0, 0.5, {"acc": 0.5}, [[1, "acc", 0.25], [2, "acc", 0.5]], "")
        st.end_trial(conn, "search", 0, TrialState.COMPLETED, 0, "", 3000)
        st.set_metrics(conn, "search", 1, 0.75, {"acc": 0.75}, [[1, "acc", 0.75]], "")
        st.end_trial(conn, "search", 1, TrialState.COMPLETED, 0, "", 3000)
    return s.SearchService(Settings(data_dir=tmp_path), db, woken.append,
                           importance=lambda spec, history: {"lr": 1.0, "opt": 0.0}), db, woken


def test_trials_pages_count_in_pages(store: tuple[s.SearchService, Any, list[str | None]]) -> None:
    svc = store[0]
    first = svc.trials("p", "search", None, None)
    assert (first["total"], first["count"], first["limit"], first["offset"], first["group_by"]) == (5, 5, 10, 0, "")
    assert [r[:2] for r in first["items"]["data"]] == [["0", "completed"], ["1", "completed"], ["2", "pending"],
                                                       ["3", "pending"], ["4", "pending"]]
    page = svc.trials("p", "search", "2", "1")
    assert (page["count"], [r[0] for r in page["items"]["data"]]) == (2, ["2", "3"])
    assert [r[0] for r in svc.trials("p", "search", "2", "2")["items"]["data"]] == ["4"]
    assert svc.trials("p", "search", "2", "3")["items"]["data"] == []
    for limit, offset in (("0", None), ("1001", None), ("x", None), (None, "-1"), (None, "\uff11")):
        with pytest.raises(errors.QueryParamsError):
            svc.trials("p", "search", limit, offset)
    with pytest.raises(errors.NotAutoSearchJob, match="not an auto-search job"):
        svc.trials("p", "plain", None, None)
    with pytest.raises(errors.JobNotFound):
        svc.trials("other-project", "search", None, None)


def test_trial_history_and_unknown_trials(store: tuple[s.SearchService, Any, list[str | None]]) -> None:
    svc = store[0]
    assert svc.trial("p", "search", "0") == {"header": ["line", "metric", "value"],
                                             "data": [["1", "acc", "0.25"], ["2", "acc", "0.5"]]}
    assert svc.trial("p", "search", "4")["data"] == []
    for bad in ("5", "-1", "x", "1" * 30):
        with pytest.raises(errors.TrialNotFound, match="trial ids are 0 to 4"):
            svc.trial("p", "search", bad)


def test_early_stop_records_the_intent(store: tuple[s.SearchService, Any, list[str | None]]) -> None:
    svc, db, woken = store
    assert svc.early_stop("p", "search", "2") == {"earlystop_trial": "2"}
    assert woken == ["job-2"]
    with db.connect() as conn:
        t = st.trial(conn, "search", 2)
        job = q.get_job(conn, "p", "job-2")
    assert t is not None and t.state == TrialState.RUNNING and t.stop_reason == s.USER_STOP
    assert job.terminate_requested and s.USER_STOP in job.terminate_reason
    assert svc.early_stop("p", "search", "2") == {"earlystop_trial": "2"}, "asking again changes nothing"
    with pytest.raises(errors.JobStatusChanged, match="is completed: only a running trial"):
        svc.early_stop("p", "search", "0")


def test_analysis_and_plot_file(store: tuple[s.SearchService, Any, list[str | None]], tmp_path: Path) -> None:
    svc = store[0]
    assert asyncio.run(svc.analysis("p", "search")) == {
        "header": ["parameter", "importance", "best_value", "trials"],
        "data": [["lr", "1.0000", "0.02", "2"], ["opt", "0.0000", "sgd", "2"]]}
    out = svc.analysis_plot("p", "search", "lr")
    assert out == {"file_path": "/v2/p/training-jobs/search/autosearch-parameter-analysis/lr/plot.svg"}
    path = tmp_path / "jobs" / "search" / "autosearch" / "lr.svg"
    assert svc.plot("p", "search", "lr") == path
    assert len(_svg(path.read_text()).findall(f"{SVG}circle")) == 2
    with pytest.raises(errors.InvalidRequest, match="searched parameters: lr, opt"):
        svc.analysis_plot("p", "search", "epochs")


def test_the_document_of_a_search_lists_its_trials(store: tuple[s.SearchService, Any, list[str | None]]) -> None:
    db = store[1]
    with db.connect() as conn:
        rows = [q.get_job(conn, "p", "search"), q.get_job(conn, "p", "plain")]
        details = q.job_details(conn, rows)
    assert [t.number for t in details["search"]["trials"]] == [0, 1, 2, 3, 4]
    assert "trials" not in details["plain"]
    doc = job_document(rows[0], details["search"], 5000)
    assert doc["kind"] == SEARCH_KIND
    assert doc["status"]["tasks"] == [f"trial-{n}" for n in range(5)]
    assert doc["status"]["task_statuses"][1] == {"task": "trial-1", "exit_code": 0, "message": "completed: acc=0.75"}
    assert doc["metadata"]["annotations"] == {"autosearch/trials": "5 of 6 trials: 3 running, 2 completed",
                                              "autosearch/best-trial": "trial-1: acc=0.75 (lr=0.02, opt=sgd)"}
