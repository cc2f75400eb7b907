"""obs:// locations: the object-store interface, and the embedded store on a local directory.

`obs://bucket/key` (or ModelArts' scheme-less `/bucket/key`) is `ROOT/bucket/key` on the local store
(the default, zero configuration; every resolved path is checked to stay inside ROOT), or object `key`
of bucket `bucket` on an S3-compatible service (storage/s3.py, `[storage] backend = "s3"`). Both
implement ObjectStore; its calls are slow (they copy), so callers run them off the event loop.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import stat
import threading
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from openarts.core.channels import check_obs_url
from openarts.core.errors import InvalidObsPath

CHUNK = 64 << 20  # a large file is copied in pieces of this size, a cancellation looked at between them

# What an upload sent, by path relative to its source directory: (size, mtime_ns) as they were when it
# was read. An upload given one sends only the files whose size or mtime changed since, and records them.
Manifest = dict[str, tuple[int, int]]


class TransferCancelled(Exception):
    """A transfer was cancelled midway (its job was terminated while its data was staged)."""


def check_cancel(cancel: threading.Event | None) -> None:
    if cancel is not None and cancel.is_set():
        raise TransferCancelled("transfer cancelled")


@dataclass(frozen=True)
class ObjectInfo:
    """One object of a listing, for the staging cache (storage/cache.py)."""

    rel: str  # its path below the listed prefix (its own name for a single object)
    source: str  # what the store fetches it by (obs://bucket/key, or a path of the local store)
    size: int
    version: str  # changes whenever its content does: the ETag on S3; mtime and inode on the local store
    md5: str = ""  # its MD5 (hex) when the store vouches for one: checked once it has arrived


class ObjectStore(Protocol):
    def download(self, url: str, dest: Path, cancel: threading.Event | None = None) -> int:
        """Copy an object, or every object under a 'directory' prefix, into directory `dest`; the
        number of files. FileNotFoundError when there is none; TransferCancelled once `cancel` is set."""
        ...

    def listing(self, url: str) -> list[ObjectInfo]:
        """The object `url` names, or every object under the 'directory' prefix; FileNotFoundError when
        there is none. Names that are not plain relative paths are left out."""
        ...

    def fetch(self, items: list[tuple[ObjectInfo, Path]], cancel: threading.Event | None = None) -> int:
        """Fetch each object into its path, many at once; a partial file left there by an interrupted
        fetch of the same object is resumed, not started over. Checks sizes, and MD5s where known
        (StorageError otherwise). Returns the bytes that were already there (resumed)."""
        ...

    def upload(self, src: Path, url: str, sent: Manifest | None = None,
               cancel: threading.Event | None = None) -> int:
        """Copy the regular files under local directory `src` under the prefix `url`, following no
        symbolic link (they are a job's); the number of files sent. With `sent`, only the files
        changed since it was last filled are sent, and it is updated."""
        ...

    def is_file(self, url: str) -> bool:
        """Whether `url` names an object."""
        ...

    def is_dir(self, url: str) -> bool:
        """Whether `url` names a 'directory' (a prefix with objects under it)."""
        ...

    def close(self) -> None:
        ...

    def check_bucket(self, bucket: str) -> bool:
        """Whether `bucket` exists and the store accepts the server's credentials: True when it said so,
        False when there was no definite answer; StorageError (storage/s3.py) with the reason when not.
        A few seconds at most (a job's create waits on it)."""
        ...

    def presign(self, url: str, seconds: int) -> str | None:
        """A URL that downloads object `url` without credentials for `seconds`, or None (no such
        object, or a store that has no such URLs)."""
        ...


class LocalObjectStore:
    def __init__(self, root: Path) -> None:
        self.root = root.resolve()

    def resolve(self, url: str) -> Path:
        check_obs_url(url, "obs_url")
        rest = url[len("obs://"):] if url.startswith("obs://") else url[1:]
        path = (self.root / rest).resolve()
        if path != self.root and self.root not in path.parents:
            raise InvalidObsPath(f"OBS path {url!r} leaves the object store.")
        return path

    def is_file(self, url: str) -> bool:
        return self.resolve(url).is_file()

    def is_dir(self, url: str) -> bool:
        return self.resolve(url).is_dir()

    def close(self) -> None:
        pass

    def download(self, url: str, dest: Path, cancel: threading.Event | None = None) -> int:
        """Copy an object or a 'directory' prefix into `dest` (a directory). Returns files copied."""
        src = self.resolve(url)
        dest.mkdir(parents=True, exist_ok=True)
        if src.is_file():
            copy_file(src, dest / src.name, cancel)
            return 1
        if not src.is_dir():
            raise FileNotFoundError(f"{url} does not exist in the object store ({src})")
        # one scandir per directory and a plain data copy per file (sendfile, no metadata), as `cp -r`
        # does; a symbolic link in the store is not an object and is not followed
        count = 0
        stack = [(src, dest)]
        while stack:
            here, there = stack.pop()
            there.mkdir(exist_ok=True)
            with os.scandir(here) as entries:
                for e in entries:
                    if e.is_dir(follow_symlinks=False):
                        stack.append((Path(e.path), there / e.name))
                    elif e.is_file(follow_symlinks=False):
                        copy_file(Path(e.path), there / e.name, cancel)
                        count += 1
        return count

    def listing(self, url: str) -> list[ObjectInfo]:
        src = self.resolve(url)
        if src.is_file():
            st = src.stat()
            return [ObjectInfo(src.name, str(src), st.st_size, f"{st.st_mtime_ns}:{st.st_ino}")]
        if not src.is_dir():
            raise FileNotFoundError(f"{url} does not exist in the object store ({src})")
        out = []
        stack = [(src, "")]
        while stack:
            here, rel = stack.pop()
            with os.scandir(here) as entries:
                for e in entries:
                    if e.is_dir(follow_symlinks=False):
                        stack.append((Path(e.path), f"{rel}{e.name}/"))
                    elif e.is_file(follow_symlinks=False):
                        st = e.stat(follow_symlinks=False)
                        out.append(ObjectInfo(rel + e.name, e.path, st.st_size, f"{st.st_mtime_ns}:{st.st_ino}"))
        if not out:
            raise FileNotFoundError(f"{url} holds no object ({src})")
        return out

    def fetch(self, items: list[tuple[ObjectInfo, Path]], cancel: threading.Event | None = None) -> int:
        resumed = 0
        for obj, target in items:
            target.parent.mkdir(parents=True, exist_ok=True)
            resumed += copy_file(Path(obj.source), target, cancel, resume=True)
            if target.stat().st_size != obj.size:
                raise OSError(f"{obj.source} changed while it was copied")
        return resumed

    def upload(self, src: Path, url: str, sent: Manifest | None = None,
               cancel: threading.Event | None = None) -> int:
        """Copy the regular files under local directory `src` under the prefix `url`. Returns files
        copied. `src` and everything in it belong to a job, which may have made anything a symbolic
        link: none is followed (a link to /etc or to the server's files must not be copied out), and
        a `src` that is a link is refused. Each file goes to a temporary name beside its target and is
        renamed into place: the store never shows half a file."""
        dest = self.resolve(url)
        count = 0
        for rel, item in changed_files(src, sent):
            check_cancel(cancel)
            try:
                fd = os.open(item, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
            except OSError:
                continue  # a symbolic link (ELOOP), or gone
            with os.fdopen(fd, "rb") as fh:
                st = os.fstat(fh.fileno())
                if not stat.S_ISREG(st.st_mode):
                    continue  # a fifo or a device node: not an object
                target = dest / rel
                target.parent.mkdir(parents=True, exist_ok=True)
                tmp = target.with_name(f".{target.name}.{uuid.uuid4().hex[:8]}.part")
                try:
                    with open(tmp, "wb") as out:
                        shutil.copyfileobj(fh, out, 1 << 20)
                    os.utime(tmp, ns=(st.st_atime_ns, st.st_mtime_ns))
                    os.chmod(tmp, st.st_mode & 0o777)  # no setuid/setgid/sticky bit a job set
                    os.replace(tmp, target)
                finally:
                    tmp.unlink(missing_ok=True)
            record_sent(sent, rel, item, st)
            count += 1
        return count

    def check_bucket(self, bucket: str) -> bool:
        """A bucket is a directory, made by the first upload into it; a missing object is found when
        the job's data is staged (Abnormal/CreateFailed, with the path)."""
        return True

    def presign(self, url: str, seconds: int) -> str | None:
        """None: no presigned URLs here; log links are the server's own (security/log_links.py)."""
        return None


def file_md5(path: Path) -> str:
    """The MD5 (hex) of a file's content, read in pieces."""
    h = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 22):
            h.update(chunk)
    return h.hexdigest()


def copy_file(src: Path, dst: Path, cancel: threading.Event | None = None, resume: bool = False) -> int:
    """Copy the data of `src` to `dst` (no metadata) with sendfile, in CHUNK pieces so that a
    cancellation stops a large copy midway. With `resume`, a shorter `dst` is continued where it
    stopped; returns the bytes that were there already."""
    offset = 0
    if resume and dst.exists():
        offset = min(dst.stat().st_size, src.stat().st_size)
    with open(src, "rb") as fin, open(dst, "r+b" if offset else "wb") as fout:
        if offset:  # (never an ftruncate to 0: ext4 then writes the file back at close, auto_da_alloc)
            fout.truncate(offset)
            fout.seek(offset)
        start = offset
        while True:
            check_cancel(cancel)
            n = os.sendfile(fout.fileno(), fin.fileno(), offset, CHUNK)
            if n == 0:
                return start
            offset += n


def changed_files(src: Path, sent: Manifest | None) -> list[tuple[str, Path]]:
    """The regular files under `src` (by relative posix path) not in `sent` as they are now: every
    one without a manifest. No symbolic link is followed, and a `src` that is one is refused."""
    if src.is_symlink():
        raise ValueError(f"{src.name} is a symbolic link, not a directory")
    if not src.is_dir():
        return []
    out = []
    for dirpath, _dirs, filenames in os.walk(src, followlinks=False):
        for name in filenames:
            item = Path(dirpath) / name
            rel = item.relative_to(src).as_posix()
            if sent is not None:
                try:
                    st = item.lstat()
                except OSError:
                    continue
                if sent.get(rel) == (st.st_size, st.st_mtime_ns):
                    continue
            out.append((rel, item))
    return out


def record_sent(sent: Manifest | None, rel: str, item: Path, before: os.stat_result) -> None:
    """Note `rel` as sent when it is still as it was read (`before`); a file that changed while it
    was read is sent again next time."""
    if sent is None:
        return
    try:
        now = item.lstat()
    except OSError:
        return
    if (now.st_size, now.st_mtime_ns) == (before.st_size, before.st_mtime_ns):
        sent[rel] = (now.st_size, now.st_mtime_ns)
