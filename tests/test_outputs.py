"""Outputs go back at every end of an attempt, not only on success: a terminated job, and a failed one
before its retry, keep their last complete checkpoint in the object store (here the embedded one; the
same calls on S3: tests/test_storage_s3.py)."""

from __future__ import annotations

import re
from typing import Any

import httpx
from huaweicloudsdkmodelarts.v1 import ShowTrainingJobLogsPreviewRequest

from conftest import Server, job_body, sdk_client, wait_for
from helpers import create_id, show_json, wait_phase

# a checkpoint every 0.1 s, written aside and renamed (complete or absent), its number in the log
# (the output channel's directory arrives as the argument --train_url=DIR)
CHECKPOINTS = ('out="${1#--train_url=}"; i=0; while true; do i=$((i+1)); echo "$i" > "$out/.tmp"; '
               'mv "$out/.tmp" "$out/ckpt-$i"; echo "saved $i"; sleep 0.1; done; :')  # ':' takes the appended "$@"


def _body(name: str, command: str) -> dict[str, Any]:
    body = job_body(name, command=command,
                    outputs=[{"name": "train_url", "remote": {"obs": {"obs_url": "obs://bkt/ckpt/"}}}])
    return body


def _log(sdk: Any, job_id: str) -> str:
    resp = sdk.show_training_job_logs_preview(ShowTrainingJobLogsPreviewRequest(training_job_id=job_id,
                                                                                task_id="worker-0"))
    return str(resp.content or "") if resp.status_code == 200 else ""  # 204: no log yet


def test_a_terminated_job_keeps_its_last_checkpoint(server: Server) -> None:
    sdk = sdk_client(server)
    job_id = create_id(sdk, _body("ckpt-terminated", CHECKPOINTS))
    wait_for(lambda: "saved 5" in _log(sdk, job_id), timeout=30, message="5 checkpoints")
    r = httpx.post(f"{server.api}/training-jobs/{job_id}/actions", json={"action_type": "terminate"}, timeout=10)
    assert r.status_code == 202, r.text
    assert wait_phase(sdk, job_id, timeout=60).status.phase == "Terminated"
    last = max(int(n) for n in re.findall(r"saved (\d+)", _log(sdk, job_id)))
    bucket = server.data_dir / "obs" / "bkt" / "ckpt"
    saved = sorted(int(p.name.split("-")[1]) for p in bucket.glob("ckpt-*"))
    assert saved and saved[-1] >= last, (saved, last)
    assert (bucket / f"ckpt-{saved[-1]}").read_text() == f"{saved[-1]}\n"


def test_a_failed_attempt_uploads_before_its_retry(server: Server) -> None:
    sdk = sdk_client(server)
    out = "${1#--train_url=}"
    cmd = (f'if [ -e "$MA_HOME/.failed-once" ]; then echo second > "{out}/second"; exit 0; fi; '
           f'touch "$MA_HOME/.failed-once"; echo first > "{out}/first"; exit 3; :')
    body = _body("ckpt-retry", cmd)
    body["metadata"]["annotations"] = {"fault-tolerance/job-retry-num": "1",
                                       "fault-tolerance/job-unconditional-retry": "true"}
    job_id = create_id(sdk, body)
    assert wait_phase(sdk, job_id, timeout=60).status.phase == "Completed"
    events = [e["message"] for e in httpx.get(f"{server.api}/training-jobs/{job_id}/events", timeout=10)
              .json()["events"]]
    uploads = [i for i, e in enumerate(events) if e.startswith("Output train_url: uploaded")]
    assert len(uploads) == 2, events  # before the retry, and at the end
    bucket = server.data_dir / "obs" / "bkt" / "ckpt"
    assert (bucket / "first").read_text() == "first\n" and (bucket / "second").read_text() == "second\n"


def test_every_attempts_task_logs_are_exported_to_log_export_path(server: Server) -> None:
    sdk = sdk_client(server)
    # both workers write their line at once; in the first attempt worker-0 fails a second later, and
    # worker-1 is stopped (its log then ends with the sandbox's note of the signal); the second succeeds
    cmd = ('echo "attempt log of worker-$VC_TASK_INDEX"; if [ ! -e "$MA_HOME/.failed" ]; then '
           'if [ "$VC_TASK_INDEX" = 0 ]; then sleep 1; touch "$MA_HOME/.failed"; exit 3; fi; sleep 60; fi; :')
    body = job_body("logs-exported", command=cmd, node_count=2)
    body["spec"]["log_export_path"] = {"obs_url": "obs://bkt/logs/"}
    body["metadata"]["annotations"] = {"fault-tolerance/job-retry-num": "1",
                                       "fault-tolerance/job-unconditional-retry": "true"}
    job_id = create_id(sdk, body)
    assert wait_phase(sdk, job_id, timeout=60).status.phase == "Completed"
    exported = server.data_dir / "obs" / "bkt" / "logs"
    names = sorted(p.name for p in exported.iterdir())
    assert names == [f"modelarts-job-{job_id}-worker-{i}-attempt-{a}.log" for i in (0, 1) for a in (1, 2)], names
    assert (exported / f"modelarts-job-{job_id}-worker-1-attempt-1.log").read_text().startswith(
        "attempt log of worker-1\n")
    assert (exported / f"modelarts-job-{job_id}-worker-1-attempt-2.log").read_text() == "attempt log of worker-1\n"
    assert not list((server.data_dir / "jobs" / job_id / "attempts").glob("*/.export-*"))


def test_a_host_path_for_logs_is_refused_clearly(server: Server) -> None:
    body = job_body("logs-host", command="true")
    body["spec"]["log_export_path"] = {"host_path": "/var/log/jobs"}
    r = httpx.post(f"{server.api}/training-jobs", json=body, timeout=10)
    assert r.status_code == 400 and "spec.log_export_path.host_path" in r.json()["error_msg"], r.text


def test_summaries_are_synced_like_an_output(server: Server) -> None:
    """algorithm.summary (TensorBoard): what the job writes to $MA_SUMMARY_DIR reaches log_dir.pfs.pfs_path,
    every period while it runs and at its end."""
    sdk = sdk_client(server)
    body = job_body("summaries", command='echo event-1 > "$MA_SUMMARY_DIR/events.out.1"; '
                    'while [ ! -e "$MA_HOME/go" ]; do sleep 0.1; done; '
                    'echo event-2 > "$MA_SUMMARY_DIR/events.out.2"; :',
                    summary={"log_type": "tensorboard", "log_dir": {"pfs": {"pfs_path": "obs://bkt/tb/run1/"}}})
    job_id = create_id(sdk, body)
    bucket = server.data_dir / "obs" / "bkt" / "tb" / "run1"
    # while it runs, every output_period_seconds (2 s in the tests' config)
    wait_for(lambda: (bucket / "events.out.1").exists(), timeout=30, message="a periodic summary upload")
    home = next((server.data_dir / "jobs" / job_id).rglob("home/ma-user"))
    (home / "go").touch()
    assert wait_phase(sdk, job_id, timeout=60).status.phase == "Completed"
    assert (bucket / "events.out.2").read_text() == "event-2\n"
    events = [e["message"] for e in httpx.get(f"{server.api}/training-jobs/{job_id}/events", timeout=10)
              .json()["events"]]
    assert any(e.startswith("Summary: uploaded") for e in events), events


def test_a_failed_periodic_upload_is_a_warning_and_the_next_period_sends_it(server: Server) -> None:
    """A periodic upload that cannot write (here a file stands where the channel's prefix goes) is a
    Warning event, the job runs on, and the next period, once the way is clear, sends what it missed."""
    sdk = sdk_client(server)
    blocked = server.data_dir / "obs" / "bkt" / "blocked"
    blocked.parent.mkdir(parents=True, exist_ok=True)
    blocked.write_text("not a directory")
    body = job_body("periodic-warning", command='out="${1#--train_url=}"; echo w1 > "$out/model-1"; '
                    'while [ ! -e "$MA_HOME/go" ]; do sleep 0.1; done; :',
                    outputs=[{"name": "train_url", "remote": {"obs": {"obs_url": "obs://bkt/blocked/ckpt/"}},
                              "period": "1s"}])
    job_id = create_id(sdk, body)

    def events() -> list[dict[str, Any]]:
        return list(httpx.get(f"{server.api}/training-jobs/{job_id}/events", timeout=10).json()["events"])

    wait_for(lambda: any(e["message"].startswith("Periodic upload: Output train_url: upload to") for e in events()),
             timeout=30, message="a failed periodic upload reported")
    warning = next(e for e in events() if e["message"].startswith("Periodic upload:"))
    assert warning["level"] == "Warning" and warning["message"].endswith("Retried next period."), warning
    assert show_json(sdk, job_id)["status"]["phase"] == "Running"
    blocked.unlink()
    wait_for(lambda: (blocked / "ckpt" / "model-1").exists(), timeout=30, message="the next period's upload")
    home = next((server.data_dir / "jobs" / job_id).rglob("home/ma-user"))
    (home / "go").touch()
    assert wait_phase(sdk, job_id, timeout=60).status.phase == "Completed"
    assert (blocked / "ckpt" / "model-1").read_text() == "w1\n"
