"""The node agent on a Ray node: a detached, named actor per node, pinned to it (executors/ray.py).

It runs the same NodeAgent as the local executor (executors/agent.py), in its detached mode: shims are
init's children, not the actor's, so they outlive the actor (Ray kills a dead worker's children) and an
agent that Ray restarts on its node re-adopts them from their run directories. Everything the agent
keeps lies under its node directory, `ROOT/<node id>/jobs/<job>/<attempt>/<task>/`:

    ../ws.tar  the attempt's directories as fetched from the server in its staging (`fetch`), once per node
    ../inputs/ links to the attempt's cached inputs, made in its staging (they hold the entries it uses)
    ws/m<i>/   the job's directories (code, inputs, home), unpacked from it; cached inputs linked in
    run/       the shim's files: log, worker.pid, exit, sandbox.json, env
    mounts     each ws/m<i> and the container path it is bound at
    outputs    the container paths of the output channels, for `send_outputs`

and custom images under `ROOT/<node id>/images/bundles/<digest>/`, fetched from the server once per digest;
inputs the server staged through its cache under `ROOT/<node id>/cache/`, the node's own staging cache
(storage/cache.py, the same rules and names), fetched from the server once per entry (executors/bundles.py).

Workers always run in the node's sandbox, at ModelArts' paths, whatever node they land on. This module
imports Ray only inside the actor's methods, so that it loads where Ray is not installed.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import select
import shutil
import tarfile
import threading
import uuid
from pathlib import Path

from openarts.executors.agent import NodeAgent
from openarts.executors.base import Key, Mount, StartError, TaskHandle, TaskLaunch, TaskState, Usage
from openarts.executors.bundles import (
    INPUTS,
    Server,
    ServerInputs,
    TransferError,
    image_path,
    outputs_path,
    pack,
    unpack,
    workspace_path,
)
from openarts.executors.images import ImageError, ImageStore
from openarts.executors.sandbox import Sandbox, SandboxUnavailable
from openarts.storage.cache import CachedInputs, Staged, StagingCache
from openarts.storage.obs import TransferCancelled

# what the server expects of its agents (2: cached inputs; 3: mounts by key, Mount.key); an agent of an older
# one is replaced
PROTOCOL = 3
LOG_CHUNK = 4 << 20  # most bytes of one task's log that one read returns
READ_BYTES = 16 << 20  # most log bytes one read_logs call returns, all its tasks together


class RayNodeAgent:
    """The actor's class; `ray.remote` is applied by the executor."""

    def __init__(self, root: str, hidden: list[str], read_only: list[str], cache_bytes: int = 0) -> None:
        import ray

        self.node_id: str = ray.get_runtime_context().get_node_id()
        self.root = Path(root) / self.node_id[:16]
        self.root.mkdir(parents=True, exist_ok=True)
        os.chmod(self.root, 0o700)
        try:
            box: Sandbox | None = Sandbox.create(self.root, [self.root, *(Path(p) for p in hidden)],
                                                 [Path(p) for p in read_only])
            self.why = ""
        except SandboxUnavailable as exc:
            box, self.why = None, str(exc)
        self.images = ImageStore(self.root / "images", [])  # custom images, fetched from the server by digest
        self._image_lock = threading.Lock()  # guards _image_locks
        self._image_locks: dict[str, threading.Lock] = {}  # per digest
        self.agent = NodeAgent(box, self.images, detached=True)
        self.exits = ExitWatch()
        self._sent: dict[Key, dict[str, tuple[int, float]]] = {}  # per task: what send_outputs sent, by name
        self._cache_bytes = cache_bytes
        self._caches: dict[str, StagingCache] = {}  # the node's cache of inputs, per store the server names
        self._cache_lock = threading.Lock()  # guards _caches and _stagings
        self._stagings: dict[tuple[str, int], threading.Event] = {}  # attempt -> set when it is released

    def info(self) -> dict[str, object]:
        return {"node_id": self.node_id, "pid": os.getpid(), "root": str(self.root), "sandbox": self.why,
                "protocol": PROTOCOL}

    # -- where things are --------------------------------------------------------------------------
    def _attempt_dir(self, job_id: str, seq: int) -> Path:
        return self.root / "jobs" / job_id / str(seq)

    def _local(self, handle: TaskHandle) -> TaskHandle:
        return dataclasses.replace(handle, run_dir=self._attempt_dir(handle.job_id, handle.seq) / handle.task / "run")

    # -- the NodeAgent's calls ---------------------------------------------------------------------
    def fetch(self, job_id: str, seq: int, server: Server, image: str) -> str:
        """Fetch an attempt's packed directories to this node, and its image unless the node has it:
        called in the attempt's staging, so that `start` only unpacks from this node's disk; the amounts
        of cached inputs it took ("" when none)."""
        where = self._attempt_dir(job_id, seq)
        try:
            where.mkdir(parents=True, exist_ok=True)
            # always anew: a copy left by an earlier attempt of the same number (one discarded before it
            # started, whose release did not reach this node) must not be what this one unpacks
            (where / "ws.tar").unlink(missing_ok=True)
            part = where / f".ws.{uuid.uuid4().hex[:8]}.part"
            try:
                server.fetch(workspace_path(job_id, seq), part)
                os.rename(part, where / "ws.tar")
            finally:
                part.unlink(missing_ok=True)
            if image:
                self._ensure_image(job_id, seq, image, server)
            shutil.rmtree(where / "inputs", ignore_errors=True)
            with self._cache_lock:
                released = self._stagings.setdefault((job_id, seq), threading.Event())
            try:
                staged = self._stage_inputs(job_id, seq, server, _listed(where / "ws.tar"), where / "inputs",
                                            released)
            finally:
                if released.is_set():  # released meanwhile: what this fetch made is not left behind
                    shutil.rmtree(where, ignore_errors=True)
        except (OSError, TransferError, ImageError, tarfile.TarError, ValueError, TransferCancelled) as exc:
            raise StartError(f"node {self.node_id} cannot fetch the files of attempt {seq}: {exc}") from exc
        return staged.amounts() if staged.files else ""

    def _stage_inputs(self, job_id: str, seq: int, server: Server, listed: list[CachedInputs], into: Path,
                      cancel: threading.Event | None = None) -> Staged:
        """Link each listed input directory's files under `into` (at its `dir`) from this node's cache,
        fetching from the server the entries the cache lacks; the amounts, all directories together."""
        total = Staged(0, 0, 0, 0)
        for c in listed:
            dest = into / c.dir
            if Path(c.dir).is_absolute() or ".." in Path(c.dir).parts:
                raise ValueError(f"input directory {c.dir!r} is not inside the attempt's")
            with self._cache_lock:
                cache = self._caches.setdefault(c.store_id, StagingCache(self.root / "cache", self._cache_bytes,
                                                                         c.store_id))
            total += cache.stage(ServerInputs(server, job_id, seq, c.store_id, c.objects), c.url, dest, c.scope,
                                 cancel)
        return total

    def start(self, launch: TaskLaunch, server: Server) -> TaskHandle:
        if self.agent.sandbox is None:
            raise StartError(f"cannot start {launch.task} on node {self.node_id}: it has no sandbox: {self.why}")
        task_dir = self._attempt_dir(launch.job_id, launch.seq) / launch.task
        source = self._attempt_dir(launch.job_id, launch.seq) / "ws.tar"  # fetched in its staging (`fetch`)
        tar = task_dir / "ws.tar"
        try:
            shutil.rmtree(task_dir, ignore_errors=True)  # a discarded start may have left it
            task_dir.mkdir(parents=True)
            if not source.exists():  # not prepared (a restart in place), or the node could not fetch then
                server.fetch(workspace_path(launch.job_id, launch.seq), tar)
                source = tar
            unpack(source, task_dir / "ws")
            listed = task_dir / "ws" / INPUTS
            if listed.exists():
                self._stage_inputs(launch.job_id, launch.seq, server, CachedInputs.loads(listed.read_text()),
                                   task_dir / "ws")
                listed.unlink()
            if launch.image:
                self._ensure_image(launch.job_id, launch.seq, launch.image, server)
            (task_dir / "outputs").write_text(json.dumps(list(launch.outputs)))
        except (OSError, tarfile.TarError, TransferError, ImageError, ValueError) as exc:
            raise StartError(f"cannot start {launch.task} on node {self.node_id}: its files: {exc}") from exc
        finally:
            tar.unlink(missing_ok=True)
        # the job's directories from the server; a volume (shared) is this node's own mount of the share
        mounts = tuple(m if m.shared else Mount(str(task_dir / "ws" / (m.key or f"m{i}")), m.inside, m.read_only)
                       for i, m in enumerate(launch.mounts))
        try:
            for m in mounts:
                if not m.shared:
                    os.makedirs(m.host, exist_ok=True)
            (task_dir / "mounts").write_text(json.dumps([[m.host, m.inside] for m in mounts if not m.shared]))
        except OSError as exc:
            raise StartError(f"cannot start {launch.task} on node {self.node_id}: its files: {exc}") from exc
        local = dataclasses.replace(launch, run_dir=task_dir / "run", mounts=mounts)
        handle = self.agent.start(local)
        self.exits.add(handle)
        return dataclasses.replace(handle, run_dir=launch.run_dir)

    def _ensure_image(self, job_id: str, seq: int, image: str, server: Server) -> None:
        """The attempt's image (pinned to its digest), fetched from the server unless this node has it."""
        digest = image.rpartition("@")[2]
        if self.images.bundle(image, digest) is not None:
            return  # here already: no lock (another image's long fetch must not hold up this start)
        with self._image_lock:
            lock = self._image_locks.setdefault(digest, threading.Lock())
        with lock:  # one fetch per image, however many of its tasks start here at once
            if self.images.bundle(image, digest) is not None:
                return
            work = self.images.root / f".fetch-{uuid.uuid4().hex}"
            work.mkdir(parents=True)
            try:
                server.fetch(image_path(job_id, seq), work / "image.tar")
                unpack(work / "image.tar", work, root_filesystem=True)
                final = self.images.bundle_dir(digest)
                final.parent.mkdir(parents=True, exist_ok=True)
                shutil.rmtree(final, ignore_errors=True)  # one without a readable runtime config
                os.rename(work / "bundle", final)
            finally:
                shutil.rmtree(work, ignore_errors=True)
            if self.images.bundle(image, digest) is None:
                raise ImageError(f"image {image}: fetched, but its runtime configuration is unreadable")

    def poll(self, handle: TaskHandle) -> TaskState:
        state = self.agent.poll(self._local(handle))
        if state.running:
            self.exits.add(handle)  # one re-adopted after a restart of this agent
        return state

    def wait_exits(self, incarnation: str, since: int, timeout: float) -> tuple[str, int, list[Key]]:
        return self.exits.wait(incarnation, since, timeout)

    def signal(self, handle: TaskHandle, signum: int) -> bool | None:
        return self.agent.signal(self._local(handle), signum)

    def cleanup(self, handle: TaskHandle) -> None:
        self.agent.cleanup(self._local(handle))

    def usage(self, tasks: dict[Key, tuple[TaskHandle, int]]) -> dict[Key, Usage]:
        return self.agent.usage({key: (self._local(h), limit) for key, (h, limit) in tasks.items()})

    def kill(self, handle: TaskHandle, note: str) -> None:
        self.agent.kill(self._local(handle), note)

    # -- what the server fetches -------------------------------------------------------------------
    def read_logs(self, reads: list[tuple[TaskHandle, int]]) -> list[bytes | None]:
        """Each task's log from its offset, at most LOG_CHUNK bytes each and READ_BYTES in all: one call
        per node for all its tasks. None for a task not read because the total was reached."""
        out: list[bytes | None] = []
        total = 0
        for handle, offset in reads:
            if total >= READ_BYTES:
                out.append(None)
                continue
            try:
                with open(self._local(handle).run_dir / "log", "rb") as fh:
                    fh.seek(offset)
                    data = fh.read(LOG_CHUNK)
            except FileNotFoundError:
                data = b""
            total += len(data)
            out.append(data)
        return out

    def send_outputs(self, handle: TaskHandle, server: Server, changed_only: bool = False) -> None:
        """Send the server a tar of the task's output directories, each under its container path
        (without the '/'); nothing when the task has none (or its files are gone). With `changed_only`,
        only the files whose size or mtime changed since this agent's last send of the task (a restarted
        agent sends everything once)."""
        task_dir = self._attempt_dir(handle.job_id, handle.seq) / handle.task
        try:
            outputs = json.loads((task_dir / "outputs").read_text())
        except (OSError, ValueError):
            return
        mounts = self._mounts(task_dir)
        dirs = []
        for inside in outputs:
            for host, where in mounts:
                if inside == where or inside.startswith(where.rstrip("/") + "/"):
                    dirs.append((host + inside[len(where):], inside.lstrip("/")))
                    break
        if not dirs:
            return
        key = (handle.job_id, handle.seq, handle.task)
        before = self._sent.get(key, {}) if changed_only else {}
        packed: dict[str, tuple[int, float]] = {}
        tar = task_dir / f"outputs-{uuid.uuid4().hex[:8]}.tar"
        try:
            pack(tar, dirs, lambda name, size, mtime: before.get(name) != (size, mtime), packed)
            server.send(outputs_path(handle.job_id, handle.seq, handle.task), tar)
        finally:
            tar.unlink(missing_ok=True)
        self._sent[key] = {**self._sent.get(key, {}), **packed}

    @staticmethod
    def _mounts(task_dir: Path) -> list[tuple[str, str]]:
        """(node directory, container path) of each mount of the task, as `start` recorded them."""
        try:
            return [(str(host), str(inside)) for host, inside in json.loads((task_dir / "mounts").read_text())]
        except (OSError, ValueError, TypeError):
            return []

    def release(self, job_id: str, seq: int) -> None:
        """Forget an attempt: its files on this node (its processes were cleaned up before), and a fetch of
        its inputs still running is stopped."""
        with self._cache_lock:
            self._stagings.pop((job_id, seq), threading.Event()).set()
        try:
            self.exits.forget(job_id, seq)
            for key in [k for k in list(self._sent) if k[:2] == (job_id, seq)]:  # other threads add keys
                self._sent.pop(key, None)
        finally:
            shutil.rmtree(self._attempt_dir(job_id, seq), ignore_errors=True)
        with contextlib.suppress(OSError):
            (self.root / "jobs" / job_id).rmdir()

    def free_port(self) -> int:
        return self.agent.free_port()


def _listed(tar_path: Path) -> list[CachedInputs]:
    """The cached inputs an attempt's tar lists (its first member), without reading the rest of it."""
    with tarfile.open(tar_path, mode="r") as tar:
        first = tar.next()
        if first is None or first.name != INPUTS or not first.isfile():
            return []
        fh = tar.extractfile(first)
        return CachedInputs.loads(fh.read().decode()) if fh is not None else []


class ExitWatch:
    """Which of the node's shims ended, as a long poll: each task started or found running is watched
    with a pidfd on one epoll; every end bumps a version. The server keeps one `wait` per node open and
    learns of an end within milliseconds, instead of polling every task. A restarted agent is a new
    incarnation: a caller that names an old one gets everything this one has seen."""

    def __init__(self) -> None:
        self.incarnation = uuid.uuid4().hex
        self._cv = threading.Condition()
        self._version = 0
        self._ended: dict[Key, int] = {}  # task -> the version its end made
        self._fds: dict[int, Key] = {}
        self._keys: set[Key] = set()
        self._epoll = select.epoll()
        threading.Thread(target=self._run, name="exit-watch", daemon=True).start()

    def add(self, handle: TaskHandle) -> None:
        key = (handle.job_id, handle.seq, handle.task)
        with self._cv:
            if key in self._keys or key in self._ended:
                return
            try:
                fd = os.pidfd_open(handle.pid)
            except OSError:  # gone already: ended, which the caller's poll tells
                self._mark(key)
                return
            self._keys.add(key)
            self._fds[fd] = key
            self._epoll.register(fd, select.EPOLLIN)

    def _run(self) -> None:
        while True:
            for fd, _ in self._epoll.poll(5.0):
                with self._cv:
                    key = self._fds.pop(fd, None)
                    with contextlib.suppress(OSError):
                        self._epoll.unregister(fd)
                    os.close(fd)
                    if key is not None:
                        self._keys.discard(key)
                        self._mark(key)

    def _mark(self, key: Key) -> None:
        """Under the lock."""
        self._version += 1
        self._ended[key] = self._version
        self._cv.notify_all()

    def wait(self, incarnation: str, since: int, timeout: float) -> tuple[str, int, list[Key]]:
        with self._cv:
            if incarnation != self.incarnation:
                since = 0
            else:
                self._cv.wait_for(lambda: self._version > since, timeout)
            return self.incarnation, self._version, [k for k, v in self._ended.items() if v > since]

    def forget(self, job_id: str, seq: int) -> None:
        with self._cv:
            for key in [k for k in self._ended if k[:2] == (job_id, seq)]:
                del self._ended[key]
