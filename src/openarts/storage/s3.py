"""obs:// locations on any S3-compatible service (Huawei OBS, AWS S3, SeaweedFS, Ceph RGW, MinIO...).

`obs://bucket/key` (or `/bucket/key`) is object `key` of bucket `bucket` at the configured endpoint;
a key that names no object is a "directory": every object under `key/`. The client is obstore (the
Rust object_store crate): it signs with AWS SigV4, retries, and uploads large files in parallel
multipart parts on its own; docs/STORAGE.md says why it was chosen over boto3 and s3fs.

Credentials come from the config file (`[storage]`, per bucket `[storage.buckets.NAME]`) or the
standard AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY variables, never from a job; no message this module
raises holds them. Downloads write each object to a temporary file beside its target, check its size
against the listing, and rename it into place; objects are moved many at a time (MAX_CONCURRENCY), and
a large one in parts fetched side by side (PART_BYTES, PARTS_AT_ONCE), each written at its offset.
"""

from __future__ import annotations

import os
import posixpath
import stat
import threading
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import timedelta
from pathlib import Path
from typing import Any, TypeVar

from openarts.core.errors import InvalidObsPath
from openarts.core.spec import check_obs_url

MAX_CONCURRENCY = 16  # objects moved at once
WHOLE_BYTES = 8 << 20  # objects up to this size are read in one request; larger ones in parts
PART_BYTES = 8 << 20  # a part of a large object, PARTS_AT_ONCE of them fetched side by side
PARTS_AT_ONCE = 8
CONNECT_SECONDS = 5
# transient failures (5xx, a dropped connection) retried for at most 30 s, not obstore's 3 minutes: a job
# waits on its staging, and an unreachable store should say so soon
RETRY: Any = {"max_retries": 4, "retry_timeout": timedelta(seconds=30),
              "backoff": {"init_backoff": timedelta(milliseconds=100), "max_backoff": timedelta(seconds=5),
                          "base": 2}}
T = TypeVar("T")


class StorageError(OSError):
    """The object store refused or failed a request: one line that says which and why (no credentials)."""


@dataclass(frozen=True)
class S3Options:
    endpoint: str = ""  # e.g. http://127.0.0.1:8333; empty: AWS's own for the region
    region: str = "us-east-1"
    addressing_style: str = "path"  # or "virtual" (bucket.endpoint: Huawei OBS wants it)
    access_key_id: str = ""  # empty: AWS_ACCESS_KEY_ID
    secret_access_key: str = ""  # empty: AWS_SECRET_ACCESS_KEY
    buckets: dict[str, S3Options] = field(default_factory=dict)  # per-bucket overrides of the keys above

    @staticmethod
    def from_table(table: dict[str, Any]) -> S3Options:
        """`[storage]` as the config file has it (checked there)."""
        keys = ("endpoint", "region", "addressing_style", "access_key_id", "secret_access_key")
        given: dict[str, Any] = {k: str(table[k]) for k in keys if k in table}
        base = S3Options(**given)
        over: dict[str, dict[str, Any]] = {name: {k: str(t[k]) for k in keys if k in t}
                                           for name, t in dict(table.get("buckets", {})).items()}
        buckets = {name: replace(base, **kw) for name, kw in over.items()}
        return replace(base, buckets=buckets)

    def __repr__(self) -> str:  # never the secret
        return f"S3Options(endpoint={self.endpoint!r}, region={self.region!r}, style={self.addressing_style!r})"


def split(url: str) -> tuple[str, str]:
    """(bucket, key) of `obs://bucket/key` or `/bucket/key`; no empty bucket, no '.' or '..' segment."""
    check_obs_url(url, "obs_url")
    rest = url[len("obs://"):] if url.startswith("obs://") else url[1:]
    bucket, _, key = rest.partition("/")
    if not bucket or any(part in (".", "..") for part in key.split("/")):
        raise InvalidObsPath(f"OBS path {url!r} is not a bucket and key.")
    return bucket, key


def _safe_relative(name: str) -> str | None:
    """An object's name below a prefix as a relative file path, or None if it is not one (absolute,
    '..', empty segments: a bucket may hold any key, and none may place a file outside `dest`)."""
    norm = posixpath.normpath(name)
    if not name or name.endswith("/") or norm.startswith(("/", "..")) or norm == ".":
        return None
    return norm


class S3ObjectStore:
    def __init__(self, options: S3Options) -> None:
        self.options = options
        self._stores: dict[str, Any] = {}
        self._lock = threading.Lock()
        self._pool = ThreadPoolExecutor(max_workers=MAX_CONCURRENCY, thread_name_prefix="openarts-s3")
        # parts have their own threads: an object's download, itself on a pool thread, waits on them
        self._parts = ThreadPoolExecutor(max_workers=PARTS_AT_ONCE, thread_name_prefix="openarts-s3-part")

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
        self._parts.shutdown(wait=False, cancel_futures=True)

    def _store(self, bucket: str) -> Any:
        from obstore.store import S3Store

        with self._lock:
            store = self._stores.get(bucket)
            if store is None:
                o = self.options.buckets.get(bucket, self.options)
                config: Any = {"region": o.region, "virtual_hosted_style_request": o.addressing_style == "virtual"}
                if o.endpoint:
                    config["endpoint"] = o.endpoint
                if o.access_key_id:
                    config["access_key_id"] = o.access_key_id
                    config["secret_access_key"] = o.secret_access_key
                store = S3Store(bucket, config=config, retry_config=RETRY,
                                client_options={"allow_http": o.endpoint.startswith("http://"),
                                                "connect_timeout": timedelta(seconds=CONNECT_SECONDS)})
                self._stores[bucket] = store
            return store

    def _do(self, what: str, fn: Callable[[], T]) -> T:
        """Run one request; obstore's errors become one StorageError line."""
        import obstore.exceptions as oe

        try:
            return fn()
        except FileNotFoundError:
            raise
        except oe.NotFoundError as exc:
            raise FileNotFoundError(f"{what}: not found") from exc
        except oe.PermissionDeniedError as exc:
            raise StorageError(f"{what}: access denied (check the credentials in [storage]): "
                               f"{_reason(exc)}") from None
        except oe.UnauthenticatedError as exc:
            raise StorageError(f"{what}: the credentials were refused: {_reason(exc)}") from None
        except (oe.BaseError, OSError) as exc:
            raise StorageError(f"{what}: {_reason(exc)}") from None

    # -- the object-store calls (storage/obs.py documents them) ------------------------------------
    def _list(self, bucket: str, prefix: str) -> Iterator[Any]:
        import obstore

        store = self._store(bucket)
        for chunk in self._do(f"listing obs://{bucket}/{prefix}",
                              lambda: list(obstore.list(store, prefix=prefix or None, chunk_size=1000))):
            yield from chunk

    def _head(self, bucket: str, key: str) -> Any:
        import obstore

        if not key or key.endswith("/"):
            return None
        try:
            meta: Any = self._do(f"obs://{bucket}/{key}", lambda: obstore.head(self._store(bucket), key))
        except FileNotFoundError:
            return None
        return meta

    def is_file(self, url: str) -> bool:
        bucket, key = split(url)
        return self._head(bucket, key) is not None

    def is_dir(self, url: str) -> bool:
        bucket, key = split(url)
        return next(self._list(bucket, key.rstrip("/")), None) is not None

    def download(self, url: str, dest: Path) -> int:
        """Copy an object or a 'directory' prefix into `dest` (a directory). Returns files copied."""
        bucket, key = split(url)
        dest.mkdir(parents=True, exist_ok=True)
        meta = self._head(bucket, key)
        if meta is not None:
            self._get(bucket, key, int(meta["size"]), dest / posixpath.basename(key))
            return 1
        prefix = key.rstrip("/")
        jobs = []
        for obj in self._list(bucket, prefix):
            rel = _safe_relative(str(obj["path"])[len(prefix):].lstrip("/") if prefix else str(obj["path"]))
            if rel is not None:
                jobs.append((str(obj["path"]), int(obj["size"]), dest / rel))
        if not jobs:
            raise FileNotFoundError(f"{url} does not exist in the object store")
        list(self._pool.map(lambda j: self._get(bucket, *j), jobs))
        return len(jobs)

    def _get(self, bucket: str, key: str, size: int, target: Path) -> None:
        import obstore

        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.{uuid.uuid4().hex[:8]}.part")

        def fetch() -> None:
            with open(tmp, "wb") as out:
                if size <= WHOLE_BYTES:  # small: one request, one buffer
                    got = out.write(memoryview(obstore.get(self._store(bucket), key).bytes()))
                else:  # large: parts fetched side by side, each written at its offset
                    out.truncate(size)
                    got = sum(self._parts.map(lambda start: self._part(bucket, key, start, size, out.fileno()),
                                              range(0, size, PART_BYTES)))
            if got != size:
                raise StorageError(f"obs://{bucket}/{key}: {got} bytes arrived of {size}")
            os.replace(tmp, target)

        try:
            self._do(f"downloading obs://{bucket}/{key}", fetch)
        finally:
            tmp.unlink(missing_ok=True)

    def _part(self, bucket: str, key: str, start: int, size: int, fd: int) -> int:
        import obstore

        data = obstore.get_range(self._store(bucket), key, start=start, end=min(start + PART_BYTES, size))
        return os.pwrite(fd, memoryview(data), start)

    def upload(self, src: Path, url: str) -> int:
        """Put the regular files under local directory `src` under the prefix `url`. Returns files put.
        As on the local store, no symbolic link is followed and a `src` that is one is refused."""
        bucket, key = split(url)
        if src.is_symlink():
            raise ValueError(f"{src.name} is a symbolic link, not a directory")
        if not src.is_dir():
            return 0
        prefix = key.rstrip("/")
        files = []
        for dirpath, _dirs, filenames in os.walk(src, followlinks=False):
            for name in filenames:
                item = Path(dirpath) / name
                rel = item.relative_to(src).as_posix()
                files.append((item, f"{prefix}/{rel}" if prefix else rel))
        done = self._pool.map(lambda f: self._put(bucket, *f), files)
        return sum(1 for ok in done if ok)

    def _put(self, bucket: str, item: Path, key: str) -> bool:
        import obstore

        try:
            fd = os.open(item, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
        except OSError:
            return False  # a symbolic link (ELOOP), or gone
        with os.fdopen(fd, "rb") as fh:
            if not stat.S_ISREG(os.fstat(fh.fileno()).st_mode):
                return False  # a fifo or a device node: not an object
            self._do(f"uploading to obs://{bucket}/{key}", lambda: obstore.put(self._store(bucket), key, fh))
        return True


def _reason(exc: BaseException) -> str:
    """The service's own error code and message where it sent one, else the first line."""
    text = str(exc)
    for code in ("NoSuchBucket", "SignatureDoesNotMatch", "InvalidAccessKeyId", "AccessDenied", "NoSuchKey"):
        if code in text:
            return code + (": the bucket does not exist" if code == "NoSuchBucket" else "")
    if "Connection refused" in text or "error sending request" in text or "tcp connect" in text:
        return "the object store is unreachable (connection refused)"
    return text.splitlines()[0][:300] if text else type(exc).__name__
