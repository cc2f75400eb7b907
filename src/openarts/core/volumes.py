"""NFS volumes (`spec.volumes[].nfs`): the share's name, the mounts this machine has, where a share is. Pure.

openarts does not mount NFS itself (it runs rootless): a share is usable when the machine has it mounted
already, declared in config.toml (`[volumes.nfs]`) or found in /proc/self/mountinfo (`parse_mountinfo`;
the file is read in executors/volumes.py). A worker's sandbox then binds that host directory at the
volume's `local_path`, read-only when the volume says so.
"""

from __future__ import annotations

import posixpath
import re
from dataclasses import dataclass

# host:/path, the host a name, an IPv4 address or a bracketed IPv6 address (not obs://...)
NFS_PATH_RE = re.compile(r"^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9][A-Za-z0-9._-]*):(/(?!/)[^\x00]*)$")
NFS_TYPES = ("nfs", "nfs4")
MA_HOME = "/home/ma-user"  # the job's home (core/layout.py): a volume may lie in it, not be it or above it
# The job's own directories (core/layout.py's MA_MOUNT and CACHE), which no volume may be, hold or lie in
JOB_DIRS = (f"{MA_HOME}/modelarts", "/cache")


@dataclass(frozen=True)
class Volume:
    server_path: str  # nfs_server_path as given: host:/path
    local_path: str  # where the worker sees it (a container path)
    read_only: bool


def nfs_path(value: str) -> str | None:
    """`host:/path` with the path normalised (no trailing '/', no '.' segments), or None when `value` is
    not of that form or has '..' segments."""
    m = NFS_PATH_RE.match(value)
    if m is None or ".." in m.group(2).split("/"):
        return None
    return f"{m.group(1).lower()}:{_norm(m.group(2))}"


def _unescape(field: str) -> str:
    """mountinfo's octal escapes (space, tab, newline, backslash: \\040 ...)."""
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field)


def parse_mountinfo(text: str) -> dict[str, str]:
    """The NFS mounts in /proc/self/mountinfo text: share (`host:/path`, normalised) -> mount point. A
    mount of a share's subdirectory made by a bind (root field other than '/') is left out, as is an
    entry that cannot be read; the first mount point of a share wins."""
    found: dict[str, str] = {}
    for line in text.splitlines():
        fields = line.split(" ")
        if "-" not in fields:
            continue
        sep = fields.index("-")
        if sep < 5 or len(fields) < sep + 3:
            continue
        root, mount_point = _unescape(fields[3]), _unescape(fields[4])
        fstype, source = fields[sep + 1], _unescape(fields[sep + 2])
        if fstype not in NFS_TYPES or root != "/":
            continue
        share = nfs_path(source)
        if share is not None:
            found.setdefault(share, mount_point)
    return found


def share_dir(server_path: str, mounted: dict[str, str]) -> str | None:
    """The host directory of `server_path` (`host:/path`): the mount point of that share, or the matching
    subdirectory of a mounted share above it (`h:/export/a` in `h:/export` mounted at /mnt/e is
    /mnt/e/a); None when no mounted share holds it. `mounted` is keyed by normalised shares."""
    share = nfs_path(server_path)
    if share is None:
        return None
    host, _, path = share.partition(":")
    best: tuple[int, str] | None = None
    for key, where in mounted.items():
        khost, _, kpath = key.partition(":")
        if khost != host:
            continue
        if path == kpath:
            return posixpath.normpath(where)
        if kpath == "/" or path.startswith(kpath + "/"):
            rest = path[len(kpath):].lstrip("/")
            if best is None or len(kpath) > best[0]:
                best = (len(kpath), posixpath.join(posixpath.normpath(where), rest))
    return best[1] if best else None


def overlaps(a: str, b: str) -> bool:
    """Whether two absolute paths are the same, or one lies inside the other."""
    a, b = _norm(a), _norm(b)
    return a == b or a.startswith(b.rstrip("/") + "/") or b.startswith(a.rstrip("/") + "/")


def _norm(path: str) -> str:
    return "/" + posixpath.normpath(path).lstrip("/")  # (normpath keeps a leading //)
