"""An attempt's files between the server and a node's agent, over the server's own HTTP.

With the embedded object store, the job's directories (code, inputs, home) are staged on the server.
The Ray executor packs them once per attempt into a tar file beside the attempt's records, and each
node's agent fetches it from the server (`GET /internal/agents/jobs/{job}/attempts/{seq}/workspace`,
api/agents.py); when a task ends, the agent sends its output directories back the same way (`PUT
.../tasks/{task}/outputs`), and the server unpacks them into the job's directories before the
supervisor uploads them. A job with a custom image has the image offered the same way (`.../image`:
the server's tar of its unpacked image, which a node fetches once per digest). All carry the attempt's
token (security/attempt_tokens.py); with TLS the agent trusts only the server's own certificate, which
it is given.

Inputs the server staged through its cache (storage/cache.py) are left out of the tar: its first member,
`INPUTS`, lists them, and a node takes each from a cache of its own, fetching from the server
(`.../inputs/{digest}`) only the entries it lacks: a dataset used by many jobs crosses the network once
per node.

Transfers stream through files, never whole in memory: a checkpoint may be larger than a node's RAM.
Unpacking uses tarfile's data filter (no absolute paths, no member or link leaving the directory); an
image's root filesystem the tar filter, which keeps its absolute links.
"""

from __future__ import annotations

import http.client
import os
import shutil
import ssl
import tarfile
import threading
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from openarts.storage.cache import digest
from openarts.storage.obs import ObjectInfo, check_cancel, file_md5

WORKSPACE = "workspace.tar"  # in the attempt's directory on the server
IMAGE = "image.tar"  # there too, for a job with a custom image: a link to the image's tar (executors/images.py)
INPUTS = "inputs.json"  # there too, and the tar's first member: the inputs left out of it (CachedInputs)
SERVED = "inputs-served.json"  # there only: each of those inputs' digest -> [the file the server sends, size]
STAGED = "inputs-staged.json"  # there only: those inputs as the server staged them (for a restart in place)
FETCHES = 8  # a node's concurrent fetches of cache entries from the server
TIMEOUT = 60.0  # seconds without progress on a transfer's connection
CHUNK = 1 << 20


class TransferError(Exception):
    """A transfer between an agent and the server failed; the message says which and why."""


@dataclass(frozen=True)
class Server:
    """Where an agent reaches the server: its URL, the token of the attempt, and with TLS the server's
    certificate (PEM), the only one the agent trusts."""

    url: str
    token: str
    certificate: str = ""

    def _context(self) -> ssl.SSLContext | None:
        if not self.url.startswith("https:"):
            return None
        ctx = ssl.create_default_context(cadata=self.certificate or None)
        if self.certificate:  # pinned: the certificate itself is the trust, whatever name it carries
            ctx.check_hostname = False
        return ctx

    def _open(self, request: urllib.request.Request) -> http.client.HTTPResponse:
        request.add_header("Authorization", f"Bearer {self.token}")
        try:
            response: http.client.HTTPResponse = urllib.request.urlopen(request, timeout=TIMEOUT,
                                                                        context=self._context())
            return response
        except urllib.error.HTTPError as exc:
            detail = exc.read(300).decode("utf-8", "replace")
            raise TransferError(f"{request.get_method()} {request.full_url}: HTTP {exc.code} {detail}") from None
        except (urllib.error.URLError, OSError) as exc:
            why = getattr(exc, "reason", exc)
            raise TransferError(f"{request.get_method()} {request.full_url}: the server is unreachable "
                                f"from this node: {why}") from None

    def fetch(self, path: str, dest: Path) -> None:
        """GET `path` into the file `dest`."""
        response = self._open(urllib.request.Request(self.url + path, method="GET"))
        try:
            with open(dest, "wb") as out:
                shutil.copyfileobj(response, out, CHUNK)
        except OSError as exc:
            raise TransferError(f"GET {self.url + path}: {exc}") from None
        finally:
            response.close()

    def send(self, path: str, src: Path) -> None:
        """PUT the file `src` to `path`."""
        with open(src, "rb") as fh:
            request = urllib.request.Request(self.url + path, data=fh, method="PUT", headers={
                "Content-Length": str(os.fstat(fh.fileno()).st_size), "Content-Type": "application/x-tar"})
            self._open(request).close()


def workspace_path(job_id: str, seq: int) -> str:
    return f"/internal/agents/jobs/{job_id}/attempts/{seq}/workspace"


def image_path(job_id: str, seq: int) -> str:
    return f"/internal/agents/jobs/{job_id}/attempts/{seq}/image"


def outputs_path(job_id: str, seq: int, task: str) -> str:
    return f"/internal/agents/jobs/{job_id}/attempts/{seq}/tasks/{task}/outputs"


def input_path(job_id: str, seq: int, name: str) -> str:
    return f"/internal/agents/jobs/{job_id}/attempts/{seq}/inputs/{name}"


class ServerInputs:
    """The server as a node cache's source (storage/cache.py `Source`): the objects of one staged input
    directory, each fetched by its digest from the attempt's route; sizes and known MD5s are checked."""

    def __init__(self, server: Server, job_id: str, seq: int, store_id: str, objects: tuple[ObjectInfo, ...]) -> None:
        self.server, self.job_id, self.seq, self.store_id, self.objects = server, job_id, seq, store_id, objects

    def listing(self, url: str) -> list[ObjectInfo]:
        return list(self.objects)

    def fetch(self, items: list[tuple[ObjectInfo, Path]], cancel: threading.Event | None = None) -> int:
        def one(item: tuple[ObjectInfo, Path]) -> None:
            obj, dest = item
            check_cancel(cancel)
            self.server.fetch(input_path(self.job_id, self.seq, digest(self.store_id, obj)), dest)
            if obj.md5 and file_md5(dest) != obj.md5:
                dest.unlink(missing_ok=True)
                raise OSError(f"{obj.source}: its checksum does not match after the fetch from the server")

        pool = ThreadPoolExecutor(min(FETCHES, max(1, len(items))))
        try:
            list(pool.map(one, items))
        finally:  # the first failure ends the fetch: what was not started is not
            pool.shutdown(wait=True, cancel_futures=True)
        return 0  # nothing resumed: a node's fetch from the server starts over


def pack(dest: Path, dirs: list[tuple[str, str]], wanted: Callable[[str, int, float], bool] | None = None,
         packed: dict[str, tuple[int, float]] | None = None) -> None:
    """A tar file of each (directory or file, name) pair, its entries under `name`; links are kept as links;
    written beside `dest` and renamed, so a reader never sees half of one. With `wanted`, a regular
    file goes in only if wanted(entry name, size, mtime); `packed` records those that did."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.{uuid.uuid4().hex}.tmp")  # unique: two threads may pack one dest
    try:
        def keep(info: tarfile.TarInfo) -> tarfile.TarInfo | None:
            if info.islnk() and wanted is not None and not wanted(info.name, info.size, info.mtime):
                return None  # a second name of a file (a hard link), itself not wanted
            if not info.isfile():
                return info
            if wanted is not None and not wanted(info.name, info.size, info.mtime):
                # tarfile noted its inode just now (the last entry): forget it, so that another name of the
                # same file that is wanted goes in as a file of its own, not as a link to this one
                inodes: dict[tuple[int, int], str] = getattr(tar, "inodes", {})  # tarfile's, undocumented
                if inodes and inodes[last := next(reversed(inodes))] == info.name:
                    del inodes[last]
                return None
            if packed is not None:
                packed[info.name] = (info.size, info.mtime)
            return info

        with tarfile.open(tmp, mode="w") as tar:
            for path, name in dirs:
                if os.path.exists(path):
                    tar.add(path, arcname=name, filter=keep if wanted is not None or packed is not None else None)
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)


def unpack(src: Path, into: Path, refuse: tuple[str, ...] = (), root_filesystem: bool = False) -> None:
    """Extract `pack`'s output under `into`, refusing what leaves it and any member whose first path
    component is in `refuse` (tarfile.FilterError, a tarfile.TarError). A `root_filesystem` (an image's)
    keeps its absolute links, which point inside it once it is the sandbox's `/` (tarfile's tar filter:
    still nothing is written outside `into`, and no setuid bit survives)."""
    base = tarfile.tar_filter if root_filesystem else tarfile.data_filter

    def check(member: tarfile.TarInfo, dest: str) -> tarfile.TarInfo | None:
        if member.name.lstrip("./").split("/", 1)[0] in refuse:
            raise tarfile.FilterError(f"{member.name!r} is not an output")
        return base(member, dest)

    into.mkdir(parents=True, exist_ok=True)
    with tarfile.open(src, mode="r") as tar:
        tar.extractall(into, filter=check)
