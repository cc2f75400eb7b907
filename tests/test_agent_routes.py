"""The routes nodes' agents use (api/agents.py), against a real server, through the agents' own client
(executors/bundles.py): an attempt's files only with that attempt's token, outputs that cannot touch
the job's records or leave its directory, no AK/SK needed and none accepted instead of the token."""

from __future__ import annotations

import io
import tarfile
import uuid
from pathlib import Path

import httpx
import pytest

from conftest import Server as RunningServer
from openarts.executors.bundles import (
    WORKSPACE,
    Server,
    TransferError,
    input_path,
    outputs_path,
    pack,
    workspace_path,
)
from openarts.executors.ray import pack_attempt
from openarts.security.attempt_tokens import AttemptTokens
from openarts.security.secretbox import load_master_key
from openarts.storage.cache import CachedInputs, digest
from openarts.storage.obs import ObjectInfo


def _attempt(server: RunningServer) -> tuple[str, Path, AttemptTokens]:
    job_id = str(uuid.uuid4())
    attempt = server.data_dir / "jobs" / job_id / "attempts" / "1"
    src = attempt.parent.parent / "home" / "ma-user"
    (src / "code").mkdir(parents=True)
    (src / "code" / "train.py").write_text("print('hi')\n")
    pack(attempt / WORKSPACE, [(str(src), "m0")])
    return job_id, attempt, AttemptTokens(load_master_key(server.data_dir, create=False))


def test_an_agent_fetches_its_attempts_files_with_its_token_only(server: RunningServer, tmp_path: Path) -> None:
    job_id, attempt, tokens = _attempt(server)
    Server(server.url, tokens.token(job_id, 1)).fetch(workspace_path(job_id, 1), tmp_path / "ws.tar")
    assert (tmp_path / "ws.tar").read_bytes() == (attempt / WORKSPACE).read_bytes()
    for token in ("", tokens.token(job_id, 2), tokens.token(str(uuid.uuid4()), 1)):
        with pytest.raises(TransferError, match="HTTP 401"):
            Server(server.url, token).fetch(workspace_path(job_id, 1), tmp_path / "no.tar")
    r = httpx.get(server.url + workspace_path(job_id, 1))  # an API client's call, without the token
    assert r.status_code == 401 and r.json()["error_code"] == "APIGW.0301"
    with pytest.raises(TransferError, match="HTTP 404"):  # the attempt has no files (yet, or any more)
        Server(server.url, tokens.token(job_id, 2)).fetch(workspace_path(job_id, 2), tmp_path / "no.tar")


def test_a_cached_input_is_served_only_when_the_attempt_lists_it(server: RunningServer, tmp_path: Path) -> None:
    job_id, attempt, tokens = _attempt(server)
    data = attempt.parent.parent / "home" / "ma-user" / "inputs" / "d"
    data.mkdir(parents=True)
    (data / "a.bin").write_bytes(b"z" * 1000)
    obj = ObjectInfo("a.bin", "obs://bkt/d/a.bin", 1000, "etag")
    pack_attempt(attempt, [(str(attempt.parent.parent / "home" / "ma-user"), "m0")],
                 (CachedInputs(str(data), "obs://bkt/d/", "p", "s3:x", (obj,)),))
    agent = Server(server.url, tokens.token(job_id, 1))
    agent.fetch(input_path(job_id, 1, digest("s3:x", obj)), tmp_path / "a.bin")
    assert (tmp_path / "a.bin").read_bytes() == b"z" * 1000
    for name in (digest("s3:y", obj), "0" * 64, "..%2F..%2Fopenarts.db", "inputs.json"):  # not listed: nothing
        with pytest.raises(TransferError, match="HTTP 404"):
            agent.fetch(input_path(job_id, 1, name), tmp_path / "no")
    with pytest.raises(TransferError, match="HTTP 401"):  # another attempt's token
        Server(server.url, tokens.token(job_id, 2)).fetch(input_path(job_id, 1, digest("s3:x", obj)), tmp_path / "no")
    (data / "a.bin").unlink()  # no longer the file that was staged: a link (to the server's database), or
    (data / "a.bin").symlink_to(server.data_dir / "openarts.db")
    with pytest.raises(TransferError, match="HTTP 404"):
        agent.fetch(input_path(job_id, 1, digest("s3:x", obj)), tmp_path / "no")
    (data / "a.bin").unlink()
    (data / "a.bin").write_bytes(b"z" * 999)  # another size
    with pytest.raises(TransferError, match="HTTP 404"):
        agent.fetch(input_path(job_id, 1, digest("s3:x", obj)), tmp_path / "no")

def _tar(path: Path, members: dict[str, bytes]) -> Path:
    with tarfile.open(path, "w") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def test_outputs_land_in_the_jobs_directories_and_never_in_its_records(server: RunningServer, tmp_path: Path) -> None:
    job_id, attempt, tokens = _attempt(server)
    agent = Server(server.url, tokens.token(job_id, 1))
    out = "home/ma-user/modelarts/outputs/train_url_0/model.bin"
    agent.send(outputs_path(job_id, 1, "worker-0"), _tar(tmp_path / "ok.tar", {out: b"weights"}))
    assert (server.data_dir / "jobs" / job_id / out).read_bytes() == b"weights"
    (attempt / "worker-0").mkdir()
    (attempt / "worker-0" / "log").write_text("the real log\n")
    for members in ({"attempts/1/worker-0/log": b"forged"}, {"../escaped": b"x"}):
        with pytest.raises(TransferError, match="HTTP 400"):
            agent.send(outputs_path(job_id, 1, "worker-0"), _tar(tmp_path / "bad.tar", members))
    assert (attempt / "worker-0" / "log").read_text() == "the real log\n"
    assert not (server.data_dir / "jobs" / "escaped").exists()
    with pytest.raises(TransferError, match="HTTP 400"):  # not a task name
        agent.send(outputs_path(job_id, 1, "worker-x"), tmp_path / "ok.tar")
    with pytest.raises(TransferError, match="HTTP 401"):  # another attempt's token
        Server(server.url, tokens.token(job_id, 2)).send(outputs_path(job_id, 1, "worker-0"), tmp_path / "ok.tar")
    assert list(attempt.glob("outputs-*")) == []  # nothing left of the transfers
