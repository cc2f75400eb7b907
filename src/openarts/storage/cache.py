"""The staging cache: a node's copy of every input object it fetched, so a dataset used by many jobs
is fetched once per node, and a staging that was interrupted resumes where it stopped.

An entry is named by what the object is, not where it is wanted: the hash of its store, source,
size and version (the ETag on S3, which is the content's MD5 for a plain upload; mtime and inode on
the local store), under the job's project (`scope`): projects share nothing, so no job can change what
another project's jobs read. A job's input directory gets a hard link to each entry: a second use
costs a listing and a link per file. Entries are read-only files whose mtime is set from their name;
an entry whose mode, size or mtime changed (a job that made its link writable and wrote to it) is not
trusted, and is fetched again.

A fetch goes to `<entry>.part` first (and `<entry>.part.parts` notes the parts of a large S3 object
already there): a staging cut short (a restart, a terminate, a network fault) is resumed by the next.
Entries no job links to any more are removed, least recently linked first, once the cache holds more
than `max_bytes`; a partial file left a day is removed too.

A node of the Ray executor keeps a cache of its own, by the same rules and names (executors/ray_agent.py):
the server tells it what a job's inputs are (`CachedInputs`) and the node fetches from the server only the
entries it does not hold.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from openarts.storage.obs import ObjectInfo, check_cancel

STALE_PART_SECONDS = 86400


@dataclass(frozen=True)
class Staged:
    files: int
    fetched: int  # bytes fetched from the store
    cached: int  # bytes linked from the cache
    resumed: int  # bytes of interrupted fetches that were not fetched again
    objects: tuple[ObjectInfo, ...] = ()  # what was staged

    def amounts(self) -> str:
        mb = 1 << 20
        parts = [f"{self.fetched / mb:.1f} MB fetched"]
        if self.cached:
            parts.append(f"{self.cached / mb:.1f} MB from the node's cache")
        if self.resumed:
            parts.append(f"{self.resumed / mb:.1f} MB resumed")
        return ", ".join(parts)

    def line(self, name: str, url: str) -> str:
        return f"Input {name}: {self.files} file(s) from {url} ({self.amounts()})."

    def __add__(self, other: Staged) -> Staged:
        return Staged(self.files + other.files, self.fetched + other.fetched, self.cached + other.cached,
                      self.resumed + other.resumed, self.objects + other.objects)


class Source(Protocol):
    """Where a cache fetches what it lacks: an object store (storage/obs.py), or on a Ray node the server."""

    def listing(self, url: str) -> list[ObjectInfo]: ...

    def fetch(self, items: list[tuple[ObjectInfo, Path]], cancel: threading.Event | None = None) -> int: ...


@dataclass(frozen=True)
class CachedInputs:
    """One input directory staged through a cache: where (`dir`), from which `url`, and its objects;
    enough for another node's cache to name the same entries (`digest`) and stage the same files."""

    dir: str
    url: str
    scope: str
    store_id: str
    objects: tuple[ObjectInfo, ...]

    def to_json(self) -> dict[str, Any]:
        return {"dir": self.dir, "url": self.url, "scope": self.scope, "store_id": self.store_id,
                "objects": [[o.rel, o.source, o.size, o.version, o.md5] for o in self.objects]}

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> CachedInputs:
        """ValueError for a document that is not one."""
        try:
            objects = tuple(ObjectInfo(str(r), str(s), int(n), str(v), str(m)) for r, s, n, v, m in doc["objects"])
            return cls(str(doc["dir"]), str(doc["url"]), str(doc["scope"]), str(doc["store_id"]), objects)
        except (KeyError, TypeError) as exc:
            raise ValueError(f"not a list of cached inputs: {exc}") from None

    @staticmethod
    def dumps(items: list[CachedInputs]) -> str:
        return json.dumps([c.to_json() for c in items])

    @classmethod
    def loads(cls, text: str) -> list[CachedInputs]:
        return [cls.from_json(doc) for doc in json.loads(text)]


def digest(store_id: str, obj: ObjectInfo) -> str:
    """The name of an object's entry: what it is (its store, source, size and version), not where it goes."""
    return hashlib.sha256(f"{store_id}\0{obj.source}\0{obj.size}\0{obj.version}".encode()).hexdigest()


def _mtime_of(digest: str) -> int:
    """The mtime (ns) an entry carries: derived from its name, so a changed entry shows."""
    return int(digest[:8], 16) * 1_000_000_000


class StagingCache:
    def __init__(self, root: Path, max_bytes: int, store_id: str) -> None:
        self.root = root
        self.max_bytes = max_bytes
        self.store_id = store_id  # which store (backend and endpoint): a local path and an S3 key never meet
        self._lock = threading.Lock()
        self._busy: dict[str, tuple[threading.Lock, int]] = {}  # entry -> (held while fetched, stagings wanting it)
        self._total: int | None = None  # bytes held, counted at the first trim and kept since

    def _entry(self, base: str, obj: ObjectInfo) -> tuple[str, str]:
        name = digest(self.store_id, obj)
        return name, f"{base}/{name[:2]}/{name}"

    @staticmethod
    def _valid(path: str, digest: str, size: int) -> bool:
        try:
            st = os.stat(path)
        except OSError:
            return False
        return st.st_size == size and st.st_mtime_ns == _mtime_of(digest) and not st.st_mode & 0o222

    def stage(self, store: Source, url: str, dest: Path, scope: str,
              cancel: threading.Event | None = None) -> Staged:
        """Put every object `url` names into directory `dest` (empty), from the cache where it holds it."""
        objs = store.listing(url)
        dest.mkdir(parents=True, exist_ok=True)
        base = str(self.root / scope)  # plain strings below: ten thousand files cost Path objects dearly
        entries = [(obj, *self._entry(base, obj)) for obj in objs]
        missing = {digest: (obj, path) for obj, digest, path in entries if not self._valid(path, digest, obj.size)}
        fetched = resumed = 0
        if missing:
            locks = self._hold(sorted(missing))  # in one order: two stagings cannot deadlock
            for lock in locks:
                lock.acquire()
            try:
                # another staging may have fetched some while this one waited
                todo = {d: (o, p) for d, (o, p) in missing.items() if not self._valid(p, d, o.size)}
                for parent in sorted({os.path.dirname(p) for _, p in todo.values()}):
                    os.makedirs(parent, exist_ok=True)
                resumed = store.fetch([(o, Path(p + ".part")) for o, p in todo.values()], cancel)
                now = time.time_ns()
                for digest, (obj, path) in todo.items():
                    part = path + ".part"
                    size = os.stat(part).st_size
                    if size != obj.size:
                        raise OSError(f"{obj.source}: {size} bytes arrived of {obj.size}")
                    os.chmod(part, 0o444)
                    os.utime(part, ns=(now, _mtime_of(digest)))
                    os.replace(part, path)
                    fetched += obj.size
                fetched -= resumed
            finally:
                for lock in locks:
                    lock.release()
                self._unhold(sorted(missing))
        check_cancel(cancel)
        top = str(dest)
        for parent in sorted({os.path.dirname(obj.rel) for obj in objs} - {""}):
            os.makedirs(f"{top}/{parent}", exist_ok=True)
        for obj, _digest, path in entries:
            target = f"{top}/{obj.rel}"
            try:
                os.link(path, target)  # also marks the entry used now (its ctime)
            except OSError:  # another filesystem, or links refused: a copy
                shutil.copyfile(path, target)
        total = sum(obj.size for obj in objs)
        with self._lock:
            if self._total is not None:
                self._total += fetched + resumed
            over = self._total is None or self._total > self.max_bytes
        if over:
            self.trim()
        return Staged(len(objs), fetched, total - fetched - resumed, resumed, tuple(objs))

    def _hold(self, digests: list[str]) -> list[threading.Lock]:
        with self._lock:
            out = []
            for d in digests:
                lock, n = self._busy.get(d) or (threading.Lock(), 0)
                self._busy[d] = (lock, n + 1)
                out.append(lock)
            return out

    def _unhold(self, digests: list[str]) -> None:
        with self._lock:
            for d in digests:
                lock, n = self._busy[d]
                if n == 1:
                    del self._busy[d]
                else:
                    self._busy[d] = (lock, n - 1)

    def trim(self) -> None:
        """Remove entries no job links to, least recently linked first, while the cache holds more
        than max_bytes; and partial fetches left for a day. (One walk of the cache: done at the first
        staging, and then only when the count kept since says it is over.)"""
        if not self.root.is_dir():
            with self._lock:
                self._total = 0
            return
        now = time.time()
        unused: list[tuple[float, int, Path]] = []
        total = 0
        for path in self.root.glob("*/*/*"):
            try:
                st = path.lstat()
            except OSError:
                continue
            if path.name.endswith((".part", ".parts")):
                with self._lock:
                    busy = path.name.split(".")[0] in self._busy
                if now - st.st_mtime > STALE_PART_SECONDS and not busy:
                    path.unlink(missing_ok=True)
                    continue
            total += st.st_size
            if st.st_nlink == 1 and not path.name.endswith((".part", ".parts")):
                unused.append((st.st_ctime, st.st_size, path))
        for _ctime, size, path in sorted(unused):
            if total <= self.max_bytes:
                break
            path.unlink(missing_ok=True)
            total -= size
        with self._lock:
            self._total = total


