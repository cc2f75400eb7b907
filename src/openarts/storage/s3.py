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

import hashlib
import os
import posixpath
import stat
import threading
import uuid
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass, field, replace
from datetime import timedelta
from pathlib import Path
from typing import Any, TypeVar

from openarts.core.channels import check_obs_url
from openarts.core.errors import InvalidObsPath
from openarts.storage.obs import Manifest, ObjectInfo, changed_files, check_cancel, file_md5, record_sent

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

    def download(self, url: str, dest: Path, cancel: threading.Event | None = None) -> int:
        """Copy an object or a 'directory' prefix into `dest` (a directory). Returns files copied."""
        bucket, key = split(url)
        dest.mkdir(parents=True, exist_ok=True)
        meta = self._head(bucket, key)
        if meta is not None:
            self._get(bucket, key, int(meta["size"]), dest / posixpath.basename(key), cancel)
            return 1
        prefix = key.rstrip("/")
        jobs = []
        for obj in self._list(bucket, prefix):
            rel = _safe_relative(str(obj["path"])[len(prefix):].lstrip("/") if prefix else str(obj["path"]))
            if rel is not None:
                jobs.append((str(obj["path"]), int(obj["size"]), dest / rel))
        if not jobs:
            raise FileNotFoundError(f"{url} does not exist in the object store")
        list(self._pool.map(lambda j: self._get(bucket, j[0], j[1], j[2], cancel), jobs))
        return len(jobs)

    def listing(self, url: str) -> list[ObjectInfo]:
        bucket, key = split(url)
        meta = self._head(bucket, key)
        if meta is not None:
            return [_info(posixpath.basename(key), bucket, meta)]
        prefix = key.rstrip("/")
        out = []
        for obj in self._list(bucket, prefix):
            rel = _safe_relative(str(obj["path"])[len(prefix):].lstrip("/") if prefix else str(obj["path"]))
            if rel is not None:
                out.append(_info(rel, bucket, obj))
        if not out:
            raise FileNotFoundError(f"{url} does not exist in the object store")
        return out

    def fetch(self, items: list[tuple[ObjectInfo, Path]], cancel: threading.Event | None = None) -> int:
        return sum(self._pool.map(lambda item: self._fetch(item[0], item[1], cancel), items))

    def _fetch(self, obj: ObjectInfo, target: Path, cancel: threading.Event | None) -> int:
        """One object into `target`, resumable: a large one's parts are noted in `target`.parts as they
        land, and a fetch that finds both files fetches only the parts missing. Returns bytes resumed."""
        import obstore

        check_cancel(cancel)
        bucket, key = split(obj.source)
        target.parent.mkdir(parents=True, exist_ok=True)
        what = f"downloading {obj.source}"
        if obj.size <= WHOLE_BYTES:
            data = memoryview(self._do(what, lambda: obstore.get(self._store(bucket), key).bytes()))
            if len(data) != obj.size:
                raise StorageError(f"{obj.source}: {len(data)} bytes arrived of {obj.size}")
            if obj.md5 and hashlib.md5(data, usedforsecurity=False).hexdigest() != obj.md5:
                raise StorageError(f"{obj.source}: the data that arrived does not match its checksum (ETag)")
            target.write_bytes(data)
            return 0
        notes = target.with_name(target.name + ".parts")
        done: set[int] = set()
        if target.exists() and notes.exists() and target.stat().st_size == obj.size:
            done = {int(line) for line in notes.read_text().split() if line.isdigit()}
        else:
            notes.unlink(missing_ok=True)
        starts = [start for start in range(0, obj.size, PART_BYTES) if start not in done]
        with open(target, "r+b" if done else "wb") as out, open(notes, "a") as log:
            out.truncate(obj.size)
            lock = threading.Lock()

            def part(start: int) -> None:
                self._part(bucket, key, start, obj.size, out.fileno(), cancel)
                with lock:  # noted once written: a resumed fetch skips it
                    log.write(f"{start}\n")
                    log.flush()

            self._do(what, lambda: self._all_parts(part, starts))
        if obj.md5 and file_md5(target) != obj.md5:
            target.unlink(missing_ok=True)
            notes.unlink(missing_ok=True)
            raise StorageError(f"{obj.source}: the data that arrived does not match its checksum (ETag)")
        notes.unlink(missing_ok=True)
        return sum(min(PART_BYTES, obj.size - start) for start in done)

    def _get(self, bucket: str, key: str, size: int, target: Path, cancel: threading.Event | None) -> None:
        import obstore

        check_cancel(cancel)
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.{uuid.uuid4().hex[:8]}.part")

        def fetch() -> None:
            with open(tmp, "wb") as out:
                if size <= WHOLE_BYTES:  # small: one request, one buffer
                    got = out.write(memoryview(obstore.get(self._store(bucket), key).bytes()))
                else:  # large: parts fetched side by side, each written at its offset
                    out.truncate(size)
                    got = sum(self._all_parts(lambda start: self._part(bucket, key, start, size, out.fileno(),
                                                                       cancel), range(0, size, PART_BYTES)))
            if got != size:
                raise StorageError(f"obs://{bucket}/{key}: {got} bytes arrived of {size}")
            os.replace(tmp, target)

        try:
            self._do(f"downloading obs://{bucket}/{key}", fetch)
        finally:
            tmp.unlink(missing_ok=True)

    def _all_parts(self, fn: Callable[[int], T], starts: Iterable[int]) -> list[T]:
        """Run `fn` on every part side by side, and wait for all of them even when one fails: none may
        write to the file (by its descriptor) after its caller has closed it."""
        futures = [self._parts.submit(fn, start) for start in starts]
        wait(futures)
        return [f.result() for f in futures]

    def _part(self, bucket: str, key: str, start: int, size: int, fd: int, cancel: threading.Event | None) -> int:
        import obstore

        check_cancel(cancel)
        data = obstore.get_range(self._store(bucket), key, start=start, end=min(start + PART_BYTES, size))
        return os.pwrite(fd, memoryview(data), start)

    def upload(self, src: Path, url: str, sent: Manifest | None = None,
               cancel: threading.Event | None = None) -> int:
        """Put the regular files under local directory `src` under the prefix `url`. Returns files put.
        As on the local store, no symbolic link is followed and a `src` that is one is refused; with
        `sent`, only what changed since (storage/obs.py)."""
        bucket, key = split(url)
        prefix = key.rstrip("/")
        files = [(rel, item, f"{prefix}/{rel}" if prefix else rel) for rel, item in changed_files(src, sent)]
        done = self._pool.map(lambda f: self._put(bucket, f[0], f[1], f[2], sent, cancel), files)
        return sum(1 for ok in done if ok)

    def _put(self, bucket: str, rel: str, item: Path, key: str, sent: Manifest | None,
             cancel: threading.Event | None) -> bool:
        import obstore

        check_cancel(cancel)
        try:
            fd = os.open(item, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
        except OSError:
            return False  # a symbolic link (ELOOP), or gone
        with os.fdopen(fd, "rb") as fh:
            st = os.fstat(fh.fileno())
            if not stat.S_ISREG(st.st_mode):
                return False  # a fifo or a device node: not an object
            self._do(f"uploading to obs://{bucket}/{key}", lambda: obstore.put(self._store(bucket), key, fh))
        with self._lock:  # the manifest is shared by the pool's threads
            record_sent(sent, rel, item, st)
        return True

    # -- checks at create (service/buckets.py) and log links (service/observe.py) -------------------
    PROBE_SECONDS = 5  # a check's one request: no retries, answered within this or no answer at all
    PROBE_PREFIX = ".openarts-bucket-check/"  # listed to check a bucket: one request, an empty answer
    REFUSED = ("NoSuchBucket", "SignatureDoesNotMatch", "InvalidAccessKeyId")  # definite answers

    def _probe(self, bucket: str) -> Any:
        """The bucket's store as `_store` configures it, but one try and a short timeout: a check must
        answer soon, and an unreachable store is no answer (the job's own transfers retry)."""
        from obstore.store import S3Store

        base = self._store(bucket)
        key = f"{bucket}/probe"  # no bucket name holds '/': beside the buckets' own stores
        with self._lock:
            store = self._stores.get(key)
            if store is None:
                config: Any = {k: v for k, v in base.config.items() if k != "bucket"}
                options: Any = {**(base.client_options or {}), "timeout": timedelta(seconds=self.PROBE_SECONDS)}
                store = S3Store(bucket, config=config, client_options=options,
                                retry_config={"max_retries": 0,
                                              "retry_timeout": timedelta(seconds=self.PROBE_SECONDS)})
                self._stores[key] = store
            return store

    def check_bucket(self, bucket: str) -> bool:
        """Whether `bucket` exists and these credentials are accepted, by one listing of a prefix that
        holds nothing: True when it answered; False when there was no definite answer (unreachable,
        slow, a 5xx, or AccessDenied: a policy may deny listing and still allow a job's own objects);
        StorageError, with the reason, when the bucket does not exist or the service refuses the
        credentials themselves (an unknown access key, a wrong secret). Never the secret."""
        import obstore

        try:
            self._do(f"obs://{bucket}", lambda: obstore.list_with_delimiter(self._probe(bucket),
                                                                            prefix=self.PROBE_PREFIX))
        except (OSError, ValueError) as exc:  # StorageError, FileNotFoundError; a store that cannot be made
            code = next((c for c in self.REFUSED if c in str(exc)), None)
            if code == "NoSuchBucket":
                raise StorageError(f"bucket {bucket!r} does not exist (NoSuchBucket)") from None
            if code is not None:
                raise StorageError(f"the object store refused the server's credentials for bucket {bucket!r} "
                                   f"({code}; see [storage] in the server's config file)") from None
            return False
        return True

    def presign(self, url: str, seconds: int) -> str | None:
        """A URL that GETs object `url` without credentials for `seconds` (SigV4 query signing: no
        request), or None when there is no such object (one HEAD, one try). The object is served as it
        was stored: obstore's signing takes no response-content-type or -disposition override."""
        import obstore

        bucket, key = split(url)
        if not key or key.endswith("/"):
            return None
        try:
            self._do(f"obs://{bucket}/{key}", lambda: obstore.head(self._probe(bucket), key))
        except FileNotFoundError:
            return None
        signed: str = self._do(f"signing obs://{bucket}/{key}",
                               lambda: obstore.sign(self._store(bucket), "GET", key, timedelta(seconds=seconds)))
        return signed


def _info(rel: str, bucket: str, meta: Any) -> ObjectInfo:
    """An ObjectInfo of a listing's or a HEAD's metadata; a plain ETag (no "-N" multipart suffix) is the
    object's MD5, which the fetch checks."""
    etag = str(meta.get("e_tag") or "").strip('"')
    md5 = etag.lower() if len(etag) == 32 and all(c in "0123456789abcdefABCDEF" for c in etag) else ""
    return ObjectInfo(rel, f"obs://{bucket}/{meta['path']}", int(meta["size"]),
                      etag or str(meta.get("last_modified", "")), md5)


def _reason(exc: BaseException) -> str:
    """The service's own error code and message where it sent one, else the first line."""
    text = str(exc)
    for code in ("NoSuchBucket", "SignatureDoesNotMatch", "InvalidAccessKeyId", "AccessDenied", "NoSuchKey"):
        if code in text:
            return code + (": the bucket does not exist" if code == "NoSuchBucket" else "")
    if "Connection refused" in text or "error sending request" in text or "tcp connect" in text:
        return "the object store is unreachable (connection refused)"
    return text.splitlines()[0][:300] if text else type(exc).__name__
