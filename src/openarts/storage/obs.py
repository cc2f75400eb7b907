"""obs:// locations: the object-store interface, and the embedded store on a local directory.

`obs://bucket/key` (or ModelArts' scheme-less `/bucket/key`) is `ROOT/bucket/key` on the local store
(the default, zero configuration; every resolved path is checked to stay inside ROOT), or object `key`
of bucket `bucket` on an S3-compatible service (storage/s3.py, `[storage] backend = "s3"`). Both
implement ObjectStore; its calls are slow (they copy), so callers run them off the event loop.
"""

from __future__ import annotations

import os
import shutil
import stat
from pathlib import Path
from typing import Protocol

from openarts.core.errors import InvalidObsPath
from openarts.core.spec import check_obs_url


class ObjectStore(Protocol):
    def download(self, url: str, dest: Path) -> int:
        """Copy an object, or every object under a 'directory' prefix, into directory `dest`; the
        number of files. FileNotFoundError when there is none."""
        ...

    def upload(self, src: Path, url: str) -> int:
        """Copy the regular files under local directory `src` under the prefix `url`, following no
        symbolic link (they are a job's); the number of files."""
        ...

    def is_file(self, url: str) -> bool:
        """Whether `url` names an object."""
        ...

    def is_dir(self, url: str) -> bool:
        """Whether `url` names a 'directory' (a prefix with objects under it)."""
        ...

    def close(self) -> None:
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

    def download(self, url: str, dest: Path) -> int:
        """Copy an object or a 'directory' prefix into `dest` (a directory). Returns files copied."""
        src = self.resolve(url)
        dest.mkdir(parents=True, exist_ok=True)
        if src.is_file():
            shutil.copyfile(src, dest / src.name)
            return 1
        if not src.is_dir():
            raise FileNotFoundError(f"{url} does not exist in the object store ({src})")
        # one scandir per directory and a plain data copy per file (copyfile: sendfile, no metadata),
        # as `cp -r` does; a symbolic link in the store is not an object and is not followed
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
                        shutil.copyfile(e.path, there / e.name)
                        count += 1
        return count

    def upload(self, src: Path, url: str) -> int:
        """Copy the regular files under local directory `src` under the prefix `url`. Returns files
        copied. `src` and everything in it belong to a job, which may have made anything a symbolic
        link: none is followed (a link to /etc or to the server's files must not be copied out), and
        a `src` that is a link is refused."""
        dest = self.resolve(url)
        if src.is_symlink():
            raise ValueError(f"{src.name} is a symbolic link, not a directory")
        if not src.is_dir():
            return 0
        count = 0
        for dirpath, _dirs, filenames in os.walk(src, followlinks=False):
            here = Path(dirpath)
            for name in filenames:
                item = here / name
                try:
                    fd = os.open(item, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
                except OSError:
                    continue  # a symbolic link (ELOOP), or gone
                with os.fdopen(fd, "rb") as fh:
                    st = os.fstat(fh.fileno())
                    if not stat.S_ISREG(st.st_mode):
                        continue  # a fifo or a device node: not an object
                    target = dest / item.relative_to(src)
                    target.parent.mkdir(parents=True, exist_ok=True)
                    with open(target, "wb") as out:
                        shutil.copyfileobj(fh, out, 1 << 20)
                    os.utime(target, ns=(st.st_atime_ns, st.st_mtime_ns))
                    os.chmod(target, st.st_mode & 0o777)  # no setuid/setgid/sticky bit a job set
                count += 1
        return count
