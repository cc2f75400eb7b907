"""The create-time bucket check (service/buckets.py) with a stand-in store: one question per distinct
bucket, the field's ModelArts error for a definite refusal, a bucket that answered remembered, and no
refusal without a definite answer (the real S3 server: tests/test_data_plane.py)."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import pytest

from openarts.core import errors
from openarts.core.resources import build_catalog
from openarts.core.spec import JobSpec, parse_job
from openarts.service import buckets
from openarts.service.buckets import BucketCheck
from openarts.storage.s3 import StorageError


class FakeStore:  # only what BucketCheck calls
    def __init__(self, release: threading.Event | None = None) -> None:
        self.asked: list[str] = []
        self.release = release

    def check_bucket(self, bucket: str) -> bool:
        self.asked.append(bucket)
        if bucket.startswith("gone"):
            raise StorageError(f"bucket {bucket!r} does not exist (NoSuchBucket)")
        if bucket == "slow" and self.release is not None:
            self.release.wait(5)
        return bucket.startswith("ok")  # "silent": no definite answer



def _spec(code: str | None = None, inputs: tuple[str, ...] = (), outputs: tuple[str, ...] = (),
          logs: str | None = None) -> JobSpec:
    algorithm: dict[str, Any] = {"command": "true"} if code is None else \
        {"code_dir": code, "boot_file": "train.py"}
    algorithm["inputs"] = [{"name": f"in{i}", "remote": {"obs": {"obs_url": u}}} for i, u in enumerate(inputs)]
    algorithm["outputs"] = [{"name": f"out{i}", "remote": {"obs": {"obs_url": u}}} for i, u in enumerate(outputs)]
    spec: dict[str, Any] = {"resource": {"flavor_id": "modelarts.local.cpu.1u", "node_count": 1}}
    if logs:
        spec["log_export_path"] = {"obs_url": logs}
    return parse_job({"metadata": {"name": "j"}, "algorithm": algorithm, "spec": spec}, build_catalog({}, gpus=[]))


def test_one_question_per_bucket_and_a_bucket_that_answered_is_remembered() -> None:
    store = FakeStore()
    check = BucketCheck(store)  # type: ignore[arg-type]
    spec = _spec("obs://ok-a/code/", ("obs://ok-a/data/", "/ok-b/data/"), ("obs://silent/out/",), "obs://ok-b/logs/")
    asyncio.run(check.check(spec))
    assert sorted(store.asked) == ["ok-a", "ok-b", "silent"]
    asyncio.run(check.check(spec))  # within OK_SECONDS: only the one that gave no answer is asked again
    assert sorted(store.asked) == ["ok-a", "ok-b", "silent", "silent"]
    asyncio.run(BucketCheck(None).check(spec))  # no store, no check
    local = _spec("/srv/code/")  # a local code_dir names no bucket
    asyncio.run(check.check(local))
    assert len(store.asked) == 4


@pytest.mark.parametrize(("spec", "error", "says"), [
    (_spec("obs://gone/code/"), errors.CodeDirError,
     "Code directory error: algorithm.code_dir 'obs://gone/code/': bucket 'gone' does not exist (NoSuchBucket)."),
    (_spec(inputs=("obs://ok/x/", "obs://gone-in/x/")), errors.InputsOutputsError,
     "Inputs/outputs error: algorithm.inputs[1] 'obs://gone-in/x/': bucket 'gone-in' does not exist"),
    (_spec(outputs=("/gone-out/x/",)), errors.InputsOutputsError, "algorithm.outputs[0] '/gone-out/x/': bucket"),
    (_spec(logs="obs://gone-logs/l/"), errors.InvalidObsPath,
     "Invalid OBS path: spec.log_export_path.obs_url 'obs://gone-logs/l/': bucket 'gone-logs' does not exist"),
])
def test_a_definite_refusal_is_the_fields_error(spec: JobSpec, error: type[Exception], says: str) -> None:
    with pytest.raises(error) as info:
        asyncio.run(BucketCheck(FakeStore()).check(spec))  # type: ignore[arg-type]
    assert type(info.value) is error and says in str(info.value), str(info.value)


def test_a_store_that_does_not_answer_in_time_refuses_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(buckets, "CHECK_SECONDS", 0.2)
    release = threading.Event()
    store = FakeStore(release)

    async def timed() -> float:
        started = time.monotonic()
        try:
            await BucketCheck(store).check(_spec(inputs=("obs://slow/x/",)))  # type: ignore[arg-type]
            return time.monotonic() - started
        finally:
            release.set()  # (asyncio.run waits for the thread at its end)

    assert asyncio.run(timed()) < 3 and store.asked == ["slow"]
