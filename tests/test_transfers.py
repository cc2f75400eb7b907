"""Staging and uploads off the reconcile pass (supervisor/transfers.py), against a real S3-compatible
server (SeaweedFS, tests/s3_support.py): a 1 GB input is staged while other jobs start and finish; a
job terminated while it is staged ends at once; outputs go up every period while a job runs, and a
job killed or terminated mid-run keeps its last complete checkpoint in the bucket."""

from __future__ import annotations

import hashlib
import os
import signal
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

import obstore
import pytest
from huaweicloudsdkmodelarts.v1 import ListTrainingJobEventsRequest, StopTrainingJobRequest

from conftest import DEFAULT_CONFIG, Server, job_body, sdk_client, wait_for
from helpers import create_id, preview, show_json, wait_phase, worker_pid
from openarts.storage.s3 import S3ObjectStore, S3Options
from s3_support import ACCESS_KEY, SECRET_KEY, S3Server

BIG = 1 << 30


@pytest.fixture(scope="module")
def big_object(s3: S3Server, tmp_path_factory: pytest.TempPathFactory) -> str:
    """obs://bkt/big/data.bin: 1 GiB; its sha256."""
    path = tmp_path_factory.mktemp("big") / "data.bin"
    block = os.urandom(1 << 20)
    digest = hashlib.sha256()
    with open(path, "wb") as fh:
        for i in range(BIG >> 20):
            piece = i.to_bytes(8, "big") + block[8:]  # no two MiB alike
            fh.write(piece)
            digest.update(piece)
    _store(s3).upload(path.parent, "obs://bkt/big/")
    path.unlink()
    return digest.hexdigest()


def _store(s3: S3Server) -> S3ObjectStore:
    return S3ObjectStore(S3Options(endpoint=s3.endpoint, access_key_id=ACCESS_KEY, secret_access_key=SECRET_KEY))


@pytest.fixture
def server(make_server: Callable[..., Server], s3: S3Server) -> Server:
    return make_server(DEFAULT_CONFIG + s3.config(SECRET_KEY))


def _events(sdk: Any, job_id: str) -> list[str]:
    return [e.message for e in sdk.list_training_job_events(
        ListTrainingJobEventsRequest(training_job_id=job_id)).events or []]


SUM = textwrap.dedent('''
    import hashlib, sys
    path = sys.argv[1].split("=", 1)[1] + "/data.bin"
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 22):
            h.update(chunk)
    print("sha256", h.hexdigest())
''')


def _big_input_job(sdk: Any, tmp_path: Path, name: str) -> str:
    """A job that hashes the 1 GiB object it gets as its input channel."""
    code = tmp_path / "code"
    code.mkdir(exist_ok=True)
    (code / "sum.py").write_text(SUM)
    return create_id(sdk, job_body(name, code_dir=str(code), boot_file="sum.py",
                                   inputs=[{"name": "data_url", "remote": {"obs": {"obs_url": "obs://bkt/big/"}}}]))


def test_a_1gb_staging_runs_while_other_jobs_start_and_finish(server: Server, s3: S3Server, big_object: str,
                                                             tmp_path: Path) -> None:
    sdk = sdk_client(server)
    big = _big_input_job(sdk, tmp_path, "big-input")
    wait_for(lambda: any(e.startswith("Staging code and inputs") for e in _events(sdk, big)), 30)
    doc = show_json(sdk, big)["status"]
    assert (doc["phase"], doc["secondary_phase"]) == ("Pending", "Creating"), doc
    # the supervisor keeps serving every other job meanwhile: three start and finish, one after another
    for i in range(3):
        job_id = create_id(sdk, job_body(f"small-{i}", command="echo small; :"))
        assert wait_phase(sdk, job_id, timeout=30).status.phase == "Completed"
    assert show_json(sdk, big)["status"]["phase"] == "Pending", "the small jobs must finish while it stages"
    job = wait_phase(sdk, big, timeout=180)
    events = _events(sdk, big)
    assert job.status.phase == "Completed", events
    assert any(e.startswith("Input data_url: 1 file(s) from obs://bkt/big/") for e in events), events
    assert f"sha256 {big_object}" in preview(sdk, big).content, "the input arrived whole"
    # a second job with the same input is staged from the node's cache: no byte fetched again
    again = _big_input_job(sdk, tmp_path, "big-again")
    assert wait_phase(sdk, again, timeout=120).status.phase == "Completed"
    assert "Input data_url: 1 file(s) from obs://bkt/big/ (0.0 MB fetched, 1024.0 MB from the node's cache)." \
        in _events(sdk, again), _events(sdk, again)
    assert f"sha256 {big_object}" in preview(sdk, again).content


def test_a_job_terminated_while_it_is_staged_ends_without_running(server: Server, s3: S3Server,
                                                                  big_object: str) -> None:
    sdk = sdk_client(server)
    job_id = create_id(sdk, job_body("stop-staging", command="echo never; :",
                                     inputs=[{"name": "data_url", "remote": {"obs": {"obs_url": "obs://bkt/big/"}}}]))
    wait_for(lambda: any(e.startswith("Staging code and inputs") for e in _events(sdk, job_id)), 30)
    sdk.stop_training_job(StopTrainingJobRequest(training_job_id=job_id, body={"action_type": "terminate"}))
    job = wait_phase(sdk, job_id, timeout=60)
    events = _events(sdk, job_id)
    assert job.status.phase == "Terminated", events
    assert not any(e.startswith(("Job started", "Task worker-0 started")) for e in events), events
    assert show_json(sdk, job_id)["status"]["running_records"] == []  # the staged attempt was dropped


CHECKPOINTS = textwrap.dedent('''
    import os, sys, time
    out = sys.argv[1].split("=", 1)[1]
    step = 0
    while True:
        step += 1
        body = (f"step {step}\\n" * 4096).encode()  # 32 KB, complete only when written whole
        tmp = os.path.join(out, f".ckpt-{step}.tmp")
        with open(tmp, "wb") as fh:
            fh.write(body)
        os.replace(tmp, os.path.join(out, f"ckpt-{step:05d}"))
        print("checkpoint", step, flush=True)
        time.sleep(1)
''')


def _bucket_checkpoints(s3: S3Server, prefix: str) -> dict[str, bytes]:
    raw = _store(s3)._store("bkt")
    out = {}
    for chunk in obstore.list(raw, prefix=prefix):
        for obj in chunk:
            name = str(obj["path"]).rsplit("/", 1)[-1]
            if name.startswith("ckpt-"):
                out[name] = bytes(obstore.get(raw, str(obj["path"])).bytes())
    return out


@pytest.mark.parametrize("end", ["killed", "terminated"])
def test_outputs_go_up_every_period_and_the_last_checkpoint_survives(server: Server, s3: S3Server, tmp_path: Path,
                                                                     end: str) -> None:
    code = tmp_path / "code"
    code.mkdir()
    (code / "ckpt.py").write_text(CHECKPOINTS)
    prefix = f"ckpt-{end}/"
    sdk = sdk_client(server)
    job_id = create_id(sdk, job_body(f"ckpt-{end}", code_dir=str(code), boot_file="ckpt.py", outputs=[
        {"name": "train_url", "remote": {"obs": {"obs_url": f"obs://bkt/{prefix}"}}, "mode": "upload_periodically",
         "period": "1s"}]))
    wait_phase(sdk, job_id, "Running", timeout=30)
    # while it runs, checkpoints reach the bucket every period
    wait_for(lambda: len(_bucket_checkpoints(s3, prefix)) >= 3, 30)
    assert show_json(sdk, job_id)["status"]["phase"] == "Running"
    if end == "killed":
        os.kill(worker_pid(server, job_id), signal.SIGKILL)
        expected = "Failed"
    else:
        sdk.stop_training_job(StopTrainingJobRequest(training_job_id=job_id, body={"action_type": "terminate"}))
        expected = "Terminated"
    job = wait_phase(sdk, job_id, timeout=60)
    events = _events(sdk, job_id)
    assert job.status.phase == expected, events
    local = server.data_dir / "jobs" / job_id / "home/ma-user/modelarts/outputs/train_url_0"
    on_disk = sorted(p.name for p in local.glob("ckpt-*"))
    assert on_disk, events
    up = _bucket_checkpoints(s3, prefix)
    last = on_disk[-1]
    assert sorted(up) == on_disk, (sorted(up), on_disk)  # every checkpoint, the last one included
    step = int(last.split("-")[1])
    assert up[last] == (f"step {step}\n" * 4096).encode()  # complete
    assert any(e.startswith("Output train_url: uploaded") for e in events), events


def test_a_staging_cut_short_by_a_server_crash_resumes_after_the_restart(server: Server, s3: S3Server,
                                                                        big_object: str, tmp_path: Path) -> None:
    sdk = sdk_client(server)
    job_id = _big_input_job(sdk, tmp_path, "resumed")

    def parts_noted() -> int:
        return sum(len(p.read_text().split()) for p in (server.data_dir / "cache").rglob("*.part.parts"))

    wait_for(lambda: parts_noted() >= 4, 60, message="some of the object's parts fetched")
    server.kill9()  # midway: the fetched parts stay, noted, in the node's cache
    assert 4 <= parts_noted() < BIG // (8 << 20)
    server.start()
    job = wait_phase(sdk_client(server), job_id, timeout=180)
    events = _events(sdk_client(server), job_id)
    assert job.status.phase == "Completed", events
    line = next(e for e in events if e.startswith("Input data_url:"))
    assert "MB resumed" in line, line
    assert f"sha256 {big_object}" in preview(sdk_client(server), job_id).content
