"""The staging cache (storage/cache.py) on the local store and on a real S3-compatible server
(SeaweedFS): a second use is links, not copies; an entry a job changed is not trusted; projects share
nothing; an interrupted fetch of a multi-part object resumes where it stopped; the checksum (a plain
ETag) is verified; unused entries are trimmed."""

from __future__ import annotations

import hashlib
import os
import threading
from pathlib import Path

import obstore
import pytest

from openarts.storage.cache import StagingCache
from openarts.storage.obs import LocalObjectStore, ObjectInfo, TransferCancelled
from openarts.storage.s3 import PART_BYTES, S3ObjectStore, S3Options, StorageError
from s3_support import ACCESS_KEY, SECRET_KEY, S3Server


def _s3_store(s3: S3Server) -> S3ObjectStore:
    return S3ObjectStore(S3Options(endpoint=s3.endpoint, access_key_id=ACCESS_KEY, secret_access_key=SECRET_KEY))


def _local(tmp_path: Path) -> LocalObjectStore:
    data = tmp_path / "obs" / "bkt" / "ds"
    (data / "sub").mkdir(parents=True)
    (data / "a.txt").write_bytes(b"a" * 1000)
    (data / "sub" / "b.bin").write_bytes(os.urandom(50_000))
    return LocalObjectStore(tmp_path / "obs")


def test_a_second_use_is_links_to_read_only_entries(tmp_path: Path) -> None:
    store = _local(tmp_path)
    cache = StagingCache(tmp_path / "cache", 1 << 30, "local")
    first = cache.stage(store, "obs://bkt/ds/", tmp_path / "job1", "proj")
    assert (first.files, first.fetched, first.cached) == (2, 51_000, 0)
    second = cache.stage(store, "obs://bkt/ds/", tmp_path / "job2", "proj")
    assert (second.files, second.fetched, second.cached) == (2, 0, 51_000)
    one, two = tmp_path / "job1" / "sub" / "b.bin", tmp_path / "job2" / "sub" / "b.bin"
    assert one.read_bytes() == (tmp_path / "obs/bkt/ds/sub/b.bin").read_bytes()
    assert os.stat(one).st_ino == os.stat(two).st_ino and os.stat(one).st_nlink == 3  # entry + two jobs
    assert not os.stat(one).st_mode & 0o222  # read-only: a job cannot write to what the next job reads
    # another project has its own entries
    assert cache.stage(store, "obs://bkt/ds/", tmp_path / "job3", "other").fetched == 51_000
    # the source changed: a new version, fetched again
    (tmp_path / "obs/bkt/ds/a.txt").write_bytes(b"b" * 1000)
    again = cache.stage(store, "obs://bkt/ds/", tmp_path / "job4", "proj")
    assert (again.fetched, again.cached) == (1000, 50_000)
    assert (tmp_path / "job4" / "a.txt").read_bytes() == b"b" * 1000


def test_an_entry_a_job_changed_is_fetched_again(tmp_path: Path) -> None:
    store = _local(tmp_path)
    cache = StagingCache(tmp_path / "cache", 1 << 30, "local")
    cache.stage(store, "obs://bkt/ds/", tmp_path / "job1", "proj")
    linked = tmp_path / "job1" / "a.txt"
    os.chmod(linked, 0o644)  # the job's own file: it may make it writable, and write to it
    linked.write_bytes(b"tampered" + b"a" * 992)
    later = cache.stage(store, "obs://bkt/ds/", tmp_path / "job2", "proj")
    assert later.fetched == 1000 and (tmp_path / "job2" / "a.txt").read_bytes() == b"a" * 1000


def test_unused_entries_are_trimmed_least_recently_used_first(tmp_path: Path) -> None:
    obs = tmp_path / "obs" / "bkt"
    for name in ("x", "y", "z"):
        (obs / name).mkdir(parents=True)
        (obs / name / "f").write_bytes(os.urandom(1000))
    store = LocalObjectStore(tmp_path / "obs")
    cache = StagingCache(tmp_path / "cache", 2500, "local")
    for name in ("x", "y"):
        cache.stage(store, f"obs://bkt/{name}/", tmp_path / f"job-{name}", "p")
    (tmp_path / "job-x" / "f").unlink()  # job x was deleted: its entry is unused
    cache.stage(store, "obs://bkt/z/", tmp_path / "job-z", "p")  # 3,000 bytes > 2,500: x goes
    entries = [p for p in (tmp_path / "cache").rglob("*") if p.is_file()]
    assert len(entries) == 2
    assert cache.stage(store, "obs://bkt/y/", tmp_path / "job-y2", "p").fetched == 0  # y, in use, stayed
    assert cache.stage(store, "obs://bkt/x/", tmp_path / "job-x2", "p").fetched == 1000


def test_an_interrupted_multipart_fetch_resumes_where_it_stopped(s3: S3Server, tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    store = _s3_store(s3)
    data = os.urandom(40 * PART_BYTES + 12345)  # 41 parts, a multipart upload (its ETag is no MD5)
    src = tmp_path / "src"
    src.mkdir()
    (src / "big.bin").write_bytes(data)
    store.upload(src, "obs://bkt/resume/")
    cache = StagingCache(tmp_path / "cache", 1 << 40, "s3")
    cancel = threading.Event()
    calls = []
    real_part = store._part

    def counting(*args: object) -> int:
        calls.append(args[2])
        if len(calls) == 10:
            cancel.set()  # a terminate (or a restart) midway
        return real_part(*args)  # type: ignore[arg-type]

    monkeypatch.setattr(store, "_part", counting)
    with pytest.raises(TransferCancelled):
        cache.stage(store, "obs://bkt/resume/", tmp_path / "job1", "p", cancel)
    parts = next((tmp_path / "cache").rglob("*.part.parts"))
    noted = parts.read_text().split()
    assert 1 <= len(noted) < 41
    calls.clear()
    done = cache.stage(store, "obs://bkt/resume/", tmp_path / "job2", "p")
    assert len(calls) == 41 - len(noted), "only the parts not noted are fetched again"
    assert done.resumed == sum(min(PART_BYTES, len(data) - int(start)) for start in noted)
    assert done.fetched == len(data) - done.resumed
    assert hashlib.sha256((tmp_path / "job2" / "big.bin").read_bytes()).digest() == hashlib.sha256(data).digest()
    assert not list((tmp_path / "cache").rglob("*.part*"))


def test_a_plain_etag_is_verified(s3: S3Server, tmp_path: Path) -> None:
    store = _s3_store(s3)
    obstore.put(store._store("bkt"), "sum/one.txt", b"hello")  # one request: its ETag is its MD5
    (info,) = store.listing("obs://bkt/sum/")
    assert info.md5 == hashlib.md5(b"hello").hexdigest()
    lying = ObjectInfo(info.rel, info.source, info.size, info.version, hashlib.md5(b"other").hexdigest())
    with pytest.raises(StorageError, match="does not match its checksum"):
        store.fetch([(lying, tmp_path / "x")])
    assert store.fetch([(info, tmp_path / "y")]) == 0 and (tmp_path / "y").read_bytes() == b"hello"
