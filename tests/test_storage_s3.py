"""obs:// on an S3-compatible service (storage/s3.py) against a real one that checks signatures
(SeaweedFS, tests/s3_support.py): the store's calls directly, then jobs through the official SDK whose
code, inputs and outputs live in the bucket; wrong credentials and a missing bucket reported clearly,
the secret never shown."""

from __future__ import annotations

import hashlib
import os
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

import obstore
import pytest
from huaweicloudsdkmodelarts.v1 import ListTrainingJobEventsRequest

from conftest import DEFAULT_CONFIG, Server, job_body, sdk_client
from helpers import create_id, expect_error, preview, show_json, wait_phase
from openarts.storage.s3 import S3ObjectStore, S3Options, StorageError, _safe_relative
from s3_support import ACCESS_KEY, SECRET_KEY, S3Server


def _store(s3: S3Server, secret: str = SECRET_KEY) -> S3ObjectStore:
    return S3ObjectStore(S3Options(endpoint=s3.endpoint, access_key_id=ACCESS_KEY, secret_access_key=secret))


def test_a_directory_goes_up_and_comes_back_whole(s3: S3Server, tmp_path: Path) -> None:
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    (src / "a.txt").write_text("a\n")
    (src / "sub" / "b.txt").write_text("b\n")
    big = os.urandom(12 << 20)  # over obstore's 5 MiB part size: a multipart upload
    (src / "sub" / "big.bin").write_bytes(big)
    (src / "link").symlink_to("/etc/passwd")  # a job's link is never followed
    store = _store(s3)
    assert store.upload(src, "obs://bkt/up/") == 3
    assert store.is_dir("obs://bkt/up") and store.is_file("obs://bkt/up/a.txt")
    assert not store.is_file("obs://bkt/up/link") and not store.is_dir("obs://bkt/nothing")
    assert store.download("obs://bkt/up/", tmp_path / "down") == 3
    assert (tmp_path / "down" / "a.txt").read_text() == "a\n"
    assert hashlib.sha256((tmp_path / "down" / "sub" / "big.bin").read_bytes()).digest() == \
        hashlib.sha256(big).digest()
    assert store.download("/bkt/up/sub/b.txt", tmp_path / "one") == 1  # one object, ModelArts' /bucket/key
    assert (tmp_path / "one" / "b.txt").read_text() == "b\n"
    assert not list((tmp_path / "down").rglob("*.part"))
    with pytest.raises(FileNotFoundError):
        store.download("obs://bkt/nothing/", tmp_path / "none")


def test_wrong_credentials_and_a_missing_bucket_are_one_clear_line(s3: S3Server, tmp_path: Path) -> None:
    with pytest.raises(StorageError) as denied:
        _store(s3, secret="not-the-secret").download("obs://bkt/up/", tmp_path / "x")
    assert "SignatureDoesNotMatch" in str(denied.value) and "not-the-secret" not in str(denied.value)
    with pytest.raises(StorageError, match="NoSuchBucket: the bucket does not exist"):
        _store(s3).download("obs://no-such-bucket/x/", tmp_path / "x")


def test_object_names_cannot_place_files_outside_the_target() -> None:
    """S3 accepts any key ('a/../../x' too; obstore itself refuses to write one): a listed name that is
    not a plain relative path is skipped on download."""
    assert _safe_relative("a/b.txt") == "a/b.txt"
    for name in ("../evil", "a/../../evil", "/etc/passwd", "", "dir/", "."):
        assert _safe_relative(name) is None, name


TRAIN = textwrap.dedent('''
    import os, sys
    print("args", sys.argv[1:])
    print("data", open(os.path.join(sys.argv[1].split("=", 1)[1], "d.txt")).read().strip())
    out = sys.argv[2].split("=", 1)[1]
    with open(os.path.join(out, "model.txt"), "w") as fh:
        fh.write("trained\\n")
''')


@pytest.fixture
def s3_server(make_server: Callable[..., Server], s3: S3Server) -> Callable[..., Server]:
    def make(secret: str = SECRET_KEY) -> Server:
        return make_server(DEFAULT_CONFIG + s3.config(secret))
    return make


def _events(sdk: Any, job_id: str) -> list[str]:
    return [e.message for e in sdk.list_training_job_events(
        ListTrainingJobEventsRequest(training_job_id=job_id)).events or []]


def test_a_jobs_code_inputs_and_outputs_live_in_the_bucket(s3_server: Callable[..., Server], s3: S3Server,
                                                            tmp_path: Path) -> None:
    raw = _store(s3)._store("bkt")
    obstore.put(raw, "proj/code/train.py", TRAIN.encode())
    obstore.put(raw, "proj/data/d.txt", b"from the bucket\n")
    server = s3_server()
    sdk = sdk_client(server)
    body = job_body("s3-job", code_dir="obs://bkt/proj/code/", boot_file="obs://bkt/proj/code/train.py",
                    inputs=[{"name": "data_url", "remote": {"obs": {"obs_url": "obs://bkt/proj/data/"}}}],
                    outputs=[{"name": "train_url", "remote": {"obs": {"obs_url": "obs://bkt/proj/out/"}}}])
    job_id = create_id(sdk, body)
    job = wait_phase(sdk, job_id, timeout=60)
    log = preview(sdk, job_id).content
    assert job.status.phase == "Completed", (log, _events(sdk, job_id))
    assert "data from the bucket" in log
    assert bytes(obstore.get(raw, "proj/out/model.txt").bytes()) == b"trained\n"
    assert not (server.data_dir / "obs" / "bkt").exists()  # nothing went to the embedded store


def test_a_missing_code_dir_ends_the_job_with_the_reason_and_refused_credentials_refuse_it(
        s3_server: Callable[..., Server], s3: S3Server) -> None:
    server = s3_server()
    sdk = sdk_client(server)
    missing = create_id(sdk, job_body("s3-missing", code_dir="obs://bkt/no-such-code/",
                                      boot_file="obs://bkt/no-such-code/train.py"))
    job = wait_phase(sdk, missing, timeout=60)
    text = " ".join([*_events(sdk, missing), str(show_json(sdk, missing))])
    assert job.status.phase in ("Failed", "Abnormal") and "does not exist" in text, text
    # credentials the store refuses are found at create (service/buckets.py): the POST fails, clearly
    wrong = s3_server(secret="a-wrong-secret-value")
    obstore.put(_store(s3)._store("bkt"), "proj2/code/train.py", TRAIN.encode())
    body = job_body("s3-denied", code_dir="obs://bkt/proj2/code/", boot_file="obs://bkt/proj2/code/train.py")
    exc = expect_error(lambda: create_id(sdk_client(wrong), body), 400, "ModelArts.2757")
    assert "SignatureDoesNotMatch" in exc.error_msg, exc.error_msg
    assert "a-wrong-secret-value" not in exc.error_msg and SECRET_KEY not in exc.error_msg
