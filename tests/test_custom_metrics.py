"""A job's custom metrics through a real server and the official SDK: `algorithm.policies.auto_search`
with `reward_attrs` alone on a plain job, read from each task's log by the metrics sampler and shown by
GET .../metrics/{task_id} after cpuUsage and memUsage (docs/AUTOSEARCH.md, "Custom metrics of any job")."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from huaweicloudsdkmodelarts.v1 import ShowTrainingJobMetricsRequest

import sdk_types
from conftest import job_body, wait_for
from helpers import create_id, run_to_end, show, wait_phase

LOSS = {"name": "loss", "mode": "min", "regex": r"loss=([0-9.]+)"}
ACC = {"name": "acc", "mode": "max", "regex": r"acc=([0-9.]+)"}


def _body(name: str, command: str, *rewards: dict[str, str], node_count: int = 1) -> dict[str, Any]:
    body = job_body(name, command=command, node_count=node_count)
    body["algorithm"]["policies"] = {"auto_search": {"reward_attrs": list(rewards)}}
    return body


def _metrics(sdk: Any, job_id: str, task: str = "worker-0") -> dict[str, list[float]]:
    resp = sdk.show_training_job_metrics(ShowTrainingJobMetricsRequest(training_job_id=job_id, task_id=task))
    assert resp.status_code == 200
    mismatches, unknown = sdk_types.check("ShowTrainingJobMetricsResponse", resp.to_json_object())
    assert not mismatches and not unknown, (mismatches, unknown)
    return {m.metric: list(m.value) for m in resp.metrics}


def test_a_jobs_custom_metrics_are_read_from_its_log(sdk: Any) -> None:
    job_id, job = run_to_end(sdk, _body("custom-metrics", "echo loss=0.5 acc=0.1; echo epoch 2; echo loss=0.25",
                                        LOSS, ACC, node_count=2))
    assert job.status.phase == "Completed"
    got = wait_for(lambda: (m := _metrics(sdk, job_id))["loss"] == [0.5, 0.25] and m, message="loss read")
    assert list(got) == ["cpuUsage", "memUsage", "loss", "acc"]  # the custom ones after, as declared
    assert got["acc"] == [0.1]
    assert _metrics(sdk, job_id, "worker-1")["loss"] == [0.5, 0.25]  # each task its own log


def test_a_running_jobs_metric_grows_while_it_runs(sdk: Any, tmp_path: Path) -> None:
    gate = tmp_path / "gate"
    command = (f"echo loss=1.0; while [ ! -e {gate}-1 ]; do sleep 0.05; done; echo loss=0.5; "
               f"while [ ! -e {gate}-2 ]; do sleep 0.05; done; echo loss=0.25")
    job_id = create_id(sdk, _body("growing-metric", command, LOSS, ACC))
    wait_phase(sdk, job_id, "Running")
    wait_for(lambda: _metrics(sdk, job_id)["loss"] == [1.0], message="the first value")
    assert _metrics(sdk, job_id)["acc"] == []  # declared, not logged yet: an empty series
    (tmp_path / "gate-1").touch()
    wait_for(lambda: _metrics(sdk, job_id)["loss"] == [1.0, 0.5], message="the second value")
    assert show(sdk, job_id).status.phase == "Running"
    (tmp_path / "gate-2").touch()
    assert wait_phase(sdk, job_id).status.phase == "Completed"
    wait_for(lambda: _metrics(sdk, job_id)["loss"] == [1.0, 0.5, 0.25], message="the last value")


def test_a_job_without_custom_metrics_shows_cpu_and_memory_only(sdk: Any) -> None:
    job_id, job = run_to_end(sdk, job_body("no-custom-metrics", command="echo loss=0.5"))
    assert job.status.phase == "Completed"
    assert list(_metrics(sdk, job_id)) == ["cpuUsage", "memUsage"]
