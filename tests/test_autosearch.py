"""Hyperparameter search end to end, through the official SDK against a real server: a real training
program whose accuracy depends on its learning rate; grid, random and model-based searches; a crashing
trial; early stopping; a server kill -9 in the middle; terminate and delete; bad specs refused."""

from __future__ import annotations

import re
import sqlite3
import statistics
from pathlib import Path
from typing import Any

import httpx
import pytest

from conftest import PROJECT, Server, job_body, wait_for

TRAIN_PY = """\
import argparse, math, sys, time
p = argparse.ArgumentParser()
p.add_argument("--lr", type=float, required=True)
p.add_argument("--batch_size", default="32")
p.add_argument("--epochs", type=int, default=3)
p.add_argument("--sleep", type=float, default=0.0)
p.add_argument("--crash_above", type=float, default=None)
p.add_argument("--gate", default="")
p.add_argument("--ignore_term", default="")
p.add_argument("--bare_last", default="")
a, _ = p.parse_known_args()
if a.ignore_term:
    import signal
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
if a.bare_last:  # the last line without a newline: counts once the trial has ended
    sys.stdout.write(f"accuracy={1 - (a.lr - 0.3) ** 2:.6f}")
    sys.exit(0)
if a.crash_above is not None and a.lr > a.crash_above:
    print(f"lr={a.lr} diverged", flush=True)
    sys.exit(3)
for e in range(a.epochs):
    acc = (1 - (a.lr - 0.3) ** 2) * (e + 1) / a.epochs
    print(f"epoch {e} loss={1 - acc:.6f} accuracy={acc:.6f}", flush=True)
    if a.gate:
        import os
        while not os.path.exists(a.gate):
            time.sleep(0.05)
    time.sleep(a.sleep)
"""
TERMINAL = ("Completed", "Failed", "Terminated", "Abnormal")


def accuracy(lr: float) -> float:
    """What the program reports at its last epoch: best at lr 0.3."""
    return round(1 - (lr - 0.3) ** 2, 6)


def search_body(name: str, code: Path, algorithm: str, options: dict[str, Any] | None = None,
                params: list[dict[str, Any]] | None = None, fixed: dict[str, str] | None = None,
                regex: str = r"accuracy=([0-9.]+)") -> dict[str, Any]:
    body = job_body(name, code_dir=str(code), boot_file="train.py",
                    parameters=[{"name": k, "value": v} for k, v in (fixed or {}).items()])
    body["kind"] = "autosearch_job"
    body["algorithm"]["policies"] = {"auto_search": {
        "search_params": params or [{"name": "lr", "param_type": "continuous", "lower_bound": "0.0001",
                                     "upper_bound": "1"}],
        "reward_attrs": [{"name": "accuracy", "mode": "max", "regex": regex},
                         {"name": "loss", "mode": "min", "regex": r"loss=([0-9.]+)"}],
        "algo_configs": [{"name": algorithm, "params": [{"key": k, "value": str(v), "type": "str"}
                                                        for k, v in (options or {}).items()]}],
    }}
    return body


@pytest.fixture
def code(tmp_path: Path) -> Path:
    d = tmp_path / "code"
    d.mkdir()
    (d / "train.py").write_text(TRAIN_PY)
    return d


def create(sdk: Any, body: dict[str, Any]) -> str:
    from huaweicloudsdkmodelarts.v1 import CreateTrainingJobRequest

    return str(sdk.create_training_job(CreateTrainingJobRequest(body=body)).metadata.id)


def show(sdk: Any, job_id: str) -> Any:
    from huaweicloudsdkmodelarts.v1 import ShowTrainingJobDetailsRequest

    return sdk.show_training_job_details(ShowTrainingJobDetailsRequest(training_job_id=job_id))


def wait_end(sdk: Any, job_id: str, timeout: float = 90) -> Any:
    return wait_for(lambda: (j := show(sdk, job_id)).status.phase in TERMINAL and j, timeout=timeout,
                    message=f"search {job_id} to end")


def trials(sdk: Any, job_id: str) -> list[dict[str, str]]:
    """Every trial of a search as {column: value}, through the SDK's show_auto_search_trials."""
    from huaweicloudsdkmodelarts.v1 import ShowAutoSearchTrialsRequest

    r = sdk.show_auto_search_trials(ShowAutoSearchTrialsRequest(training_job_id=job_id, limit=1000, offset=0))
    return [dict(zip(r.items.header, row, strict=True)) for row in r.items.data]


def best(rows: list[dict[str, str]]) -> float:
    return max(float(r["accuracy"]) for r in rows if r["status"] == "completed")


def test_grid_search_runs_every_point_and_goes_on_past_a_crashing_trial(sdk: Any, server: Server, code: Path) -> None:
    body = search_body("grid", code, "grid_search", {"max_concurrent_num": 2},
                       params=[{"name": "lr", "param_type": "continuous", "lower_bound": "0.0001",
                                "upper_bound": "1", "discrete_points_num": "5"},
                               {"name": "batch_size", "param_type": "discrete", "discrete_values": ["16", "64"]}],
                       fixed={"crash_above": "0.9"})
    job_id = create(sdk, body)
    job = wait_end(sdk, job_id)
    assert job.status.phase == "Completed", job.status
    rows = trials(sdk, job_id)
    lrs = ["0.0001", "0.250075", "0.50005", "0.750025", "1"]
    assert [(r["lr"], r["batch_size"]) for r in rows] == [(lr, b) for lr in lrs for b in ("16", "64")]
    assert [r["trial_id"] for r in rows] == [str(i) for i in range(10)]
    for r in rows:
        if r["lr"] == "1":  # lr above crash_above: the program exits 3; recorded, and the search went on
            assert r["status"] == "failed" and r["exit_code"] == "3", r
            assert "accuracy" in r["message"] and "not found" in r["message"]
        else:
            assert r["status"] == "completed" and r["exit_code"] == "0", r
            assert float(r["accuracy"]) == pytest.approx(accuracy(float(r["lr"])), abs=1e-6)
            assert float(r["loss"]) == pytest.approx(1 - float(r["accuracy"]), abs=1e-5)
    # the search's document: one task per trial, their outcome, progress and the best trial
    assert job.status.tasks == [f"trial-{i}" for i in range(10)]
    by_task = {s.task: s for s in job.status.task_statuses}
    assert by_task["trial-8"].exit_code == 3 and by_task["trial-2"].exit_code == 0
    annotations = job.metadata.annotations
    assert "8 completed" in annotations["autosearch/trials"] and "2 failed" in annotations["autosearch/trials"]
    assert annotations["autosearch/best-trial"].startswith("trial-2: accuracy=0.9975")
    # trials are jobs of their own, but not in the project's list
    listed = httpx.post(f"{server.api}/training-job-searches", json={"limit": 50}).json()
    assert [i["metadata"]["id"] for i in listed["items"]] == [job_id] and listed["total"] == 1
    # the console: the search's page lists its trials, each a link to its own job's page (log, usage)
    with httpx.Client(base_url=server.url, timeout=10) as console:
        page = console.get(f"/console/{PROJECT}/jobs/{job_id}")
        assert page.status_code == 200, page.text[:500]
        links = re.findall(rf'href="/console/{PROJECT}/jobs/([0-9a-f-]+)">trial (\d+)</a>', page.text)
        assert [(j, int(n)) for j, n in links] == [(r["job_id"], i) for i, r in enumerate(rows)]
        trial_page = console.get(f"/console/{PROJECT}/jobs/{rows[0]['job_id']}")
        assert trial_page.status_code == 200 and "epoch 2" in trial_page.text


def test_model_based_search_is_at_least_as_good_as_the_median_random_search(sdk: Any, code: Path) -> None:
    budget = 12
    randoms = []
    for seed in (1, 2, 3):
        job_id = create(sdk, search_body(f"random-{seed}", code, "random_search",
                                         {"num_samples": budget, "max_concurrent_num": 4, "seed": seed}))
        assert wait_end(sdk, job_id).status.phase == "Completed"
        rows = trials(sdk, job_id)
        assert len(rows) == budget and all(r["status"] == "completed" for r in rows)
        randoms.append(best(rows))
    median_random = statistics.median(randoms)
    for algorithm, options in (("tpe_search", {"n_initial_points": 4}), ("bayes_opt_search", {}),
                               ("anneal_search", {})):
        job_id = create(sdk, search_body(f"model-{algorithm.split('_')[0]}", code, algorithm,
                                         {"num_samples": budget, "seed": 7, **options}))
        assert wait_end(sdk, job_id).status.phase == "Completed"
        rows = trials(sdk, job_id)
        assert len(rows) == budget
        assert best(rows) >= median_random, (algorithm, best(rows), randoms)


def test_a_seed_makes_a_search_reproducible(sdk: Any, code: Path) -> None:
    values = []
    for i in range(2):
        job_id = create(sdk, search_body(f"seeded-{i}", code, "tpe_search",
                                         {"num_samples": 6, "n_initial_points": 2, "seed": 42}))
        assert wait_end(sdk, job_id).status.phase == "Completed"
        values.append([r["lr"] for r in trials(sdk, job_id)])
    assert values[0] == values[1] and len(set(values[0])) == 6


def test_early_stopping_ends_a_hopeless_trial(sdk: Any, server: Server, code: Path) -> None:
    """Two good trials first (startup), then a bad one: the median rule stops it at its first report."""
    body = search_body("early", code, "grid_search",
                       {"early_stop": "median", "early_stop_startup_trials": 2},
                       params=[{"name": "lr", "param_type": "discrete", "discrete_values": ["0.3", "0.35", "0.95"]}],
                       fixed={"epochs": "40", "sleep": "0.02"})
    job_id = create(sdk, body)
    job = wait_end(sdk, job_id)
    assert job.status.phase == "Completed"
    rows = trials(sdk, job_id)
    assert [r["status"] for r in rows] == ["completed", "completed", "early_stopped"], rows
    assert "median" in rows[2]["message"]
    trial_job = httpx.get(f"{server.api}/training-jobs/{rows[2]['job_id']}").json()
    assert trial_job["status"]["phase"] == "Terminated"


def test_a_trial_timeout_ends_a_slow_trial(sdk: Any, code: Path) -> None:
    body = search_body("timeout", code, "grid_search", {"trial_timeout": 1},
                       params=[{"name": "lr", "param_type": "discrete", "discrete_values": ["0.01"]}],
                       fixed={"epochs": "100", "sleep": "0.1"})
    job_id = create(sdk, body)
    job = wait_end(sdk, job_id)
    rows = trials(sdk, job_id)
    assert [r["status"] for r in rows] == ["timeout"], rows
    assert job.status.phase == "Failed"  # no trial gave a final value... it was read while it ran
    assert rows[0]["accuracy"], "the values read before the timeout are kept"


def _db_trials(server: Server, search_id: str) -> list[tuple[int, str, str]]:
    with sqlite3.connect(server.data_dir / "openarts.db") as conn:
        return conn.execute("SELECT number, job_id, state FROM trials WHERE search_id = ? ORDER BY number",
                            (search_id,)).fetchall()


def _trial_jobs(server: Server, search_id: str) -> list[str]:
    with sqlite3.connect(server.data_dir / "openarts.db") as conn:
        return [r[0] for r in conn.execute("SELECT id FROM jobs WHERE parent_id = ?", (search_id,))]


def test_a_server_kill_9_mid_search_and_every_trial_is_accounted_once(sdk_for: Any, server: Server,
                                                                     code: Path, tmp_path: Path) -> None:
    gate = tmp_path / "gate"
    body = search_body("crash", code, "random_search", {"num_samples": 6, "max_concurrent_num": 2, "seed": 3},
                       fixed={"gate": str(gate), "epochs": "2"})
    sdk = sdk_for(server)
    job_id = create(sdk, body)
    wait_for(lambda: len([t for t in _db_trials(server, job_id) if t[2] == "running"]) == 2, timeout=30,
             message="two trials running")
    wait_for(lambda: show(sdk, job_id).status.phase == "Running", timeout=30)
    server.kill9()  # trials keep running (their workers outlive the server), blocked on the gate
    gate.write_text("go")
    server.start()
    sdk = sdk_for(server)
    job = wait_end(sdk, job_id)
    assert job.status.phase == "Completed"
    rows = _db_trials(server, job_id)
    assert [r[0] for r in rows] == list(range(6)) and all(r[2] == "completed" for r in rows), rows
    assert sorted(_trial_jobs(server, job_id)) == sorted(r[1] for r in rows), "one job per trial, no more"
    api = trials(sdk, job_id)
    assert len(api) == 6 and all(r["accuracy"] for r in api)
    assert len({r["lr"] for r in api}) == 6


def test_terminate_then_delete_a_search_ends_and_removes_its_trials(sdk: Any, server: Server, code: Path,
                                                                   tmp_path: Path) -> None:
    from huaweicloudsdkmodelarts.v1 import DeleteTrainingJobRequest, StopTrainingJobRequest

    body = search_body("stopme", code, "random_search", {"num_samples": 4, "max_concurrent_num": 2},
                       fixed={"gate": str(tmp_path / "never"), "ignore_term": "1"})
    job_id = create(sdk, body)
    wait_for(lambda: show(sdk, job_id).status.phase == "Running", timeout=30)
    passes = _passes(server)
    sdk.stop_training_job(StopTrainingJobRequest(training_job_id=job_id, body={"action_type": "terminate"}))
    job = wait_end(sdk, job_id)  # the trials ignore SIGTERM: SIGKILL after the grace period (3 s here)
    # while the search waited for its trials to stop, the supervisor's passes came at their usual pace (every
    # 0.5 s, and when something happened), not in a loop of its own making
    assert _passes(server) - passes < 60
    assert job.status.phase == "Terminated"
    rows = trials(sdk, job_id)
    assert len(rows) == 2 and all(r["status"] == "terminated" for r in rows), rows
    for r in rows:
        assert httpx.get(f"{server.api}/training-jobs/{r['job_id']}").json()["status"]["phase"] == "Terminated"
    sdk.delete_training_job(DeleteTrainingJobRequest(training_job_id=job_id))
    wait_for(lambda: httpx.get(f"{server.api}/training-jobs/{job_id}").status_code == 400, timeout=30)
    wait_for(lambda: not _trial_jobs(server, job_id) and not _db_trials(server, job_id), timeout=30,
             message="the trials' jobs and records purged")


def _passes(server: Server) -> float:
    text = httpx.get(f"{server.url}/metrics").text
    return float(next(line.split()[-1] for line in text.splitlines()
                      if line.startswith("openarts_scheduling_pass_seconds_count")))


def test_a_last_line_without_newline_counts_and_auto_stop_bounds_the_search(sdk: Any, code: Path,
                                                                           tmp_path: Path) -> None:
    body = search_body("bare", code, "grid_search",
                       params=[{"name": "lr", "param_type": "discrete", "discrete_values": ["0.3", "0.5"]}],
                       fixed={"bare_last": "1"})
    job_id = create(sdk, body)
    assert wait_end(sdk, job_id).status.phase == "Completed"
    assert [r["accuracy"] for r in trials(sdk, job_id)] == ["1", "0.96"]
    # spec.auto_stop of a search stops the search (its trials with it), not each trial
    body = search_body("bounded", code, "random_search", {"num_samples": 3, "max_concurrent_num": 3},
                       fixed={"gate": str(tmp_path / "never")})
    body["spec"]["auto_stop"] = {"time_unit": "SECONDS", "duration": 2}
    job_id = create(sdk, body)
    job = wait_end(sdk, job_id)
    assert job.status.phase == "Terminated"
    rows = trials(sdk, job_id)
    assert len(rows) == 3 and all(r["status"] == "terminated" for r in rows), rows


BAD = [
    ("empty space", {"search_params": []}, "search space is empty"),
    ("lower > upper", {"search_params": [{"name": "lr", "param_type": "continuous", "lower_bound": "1",
                                          "upper_bound": "0.1"}]}, "greater than upper_bound"),
    ("unknown algorithm", {"algo_configs": [{"name": "magic_search"}]}, "unknown search algorithm 'magic_search'"),
    ("unknown parameter", {"algo_configs": [{"name": "tpe_search", "params": [{"key": "n_startup", "value": "3"}]}]},
     "tpe_search has no parameter 'n_startup'"),
    ("bad value", {"algo_configs": [{"name": "bayes_opt_search", "params": [{"key": "kind", "value": "pi"}]}]},
     "must be one of ucb, ei, poi"),
    ("regex", {"reward_attrs": [{"name": "acc", "mode": "max", "regex": "acc=([0-9"}]}, "does not compile"),
    ("no reward name", {"reward_attrs": [{"mode": "max", "regex": "acc=(.*)"}]}, "every reward needs a name"),
    ("grid without points", {"algo_configs": [{"name": "grid_search"}]}, "needs discrete_points_num"),
    ("skip unknown", {"skip_search_params": "momentum"}, "'momentum' is neither"),
]


@pytest.mark.parametrize(("case", "change", "words"), BAD, ids=[b[0] for b in BAD])
def test_bad_search_specs_are_refused_at_create(sdk: Any, server: Server, code: Path, case: str,
                                                change: dict[str, Any], words: str) -> None:
    from huaweicloudsdkcore.exceptions.exceptions import ClientRequestException

    body = search_body("bad", code, "random_search")
    body["algorithm"]["policies"]["auto_search"].update(change)
    with pytest.raises(ClientRequestException) as info:
        create(sdk, body)
    assert info.value.status_code == 400
    assert info.value.error_code == "ModelArts.2788", info.value.error_msg
    assert words in info.value.error_msg and "algorithm.policies.auto_search" in info.value.error_msg
    assert httpx.post(f"{server.api}/training-job-searches", json={}).json()["total"] == 0


def test_a_search_needs_its_kind_and_a_plain_job_no_search(sdk: Any, code: Path) -> None:
    from huaweicloudsdkcore.exceptions.exceptions import ClientRequestException

    body = search_body("kindless", code, "random_search")
    body["kind"] = "job"
    with pytest.raises(ClientRequestException, match="autosearch_job"):
        create(sdk, body)
    body = search_body("searchless", code, "random_search")
    del body["algorithm"]["policies"]
    with pytest.raises(ClientRequestException, match="needs its search"):
        create(sdk, body)
