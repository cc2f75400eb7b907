"""The executor interface: start a task's process tree, observe it, signal it, measure it.

An executor knows nothing of phases or the database; the supervisor drives it. Each task (worker) is
one process tree in its own process group, started under a shim that outlives the server and records
the exit status, so that a restarted server can re-adopt it (`poll` needs only the handle). What runs
on a node, the shim, its sandbox, signals, the process scan behind metrics and memory limits, is the
node agent's (executors/agent.py); an executor reaches workers only through it, and the supervisor
reaches them only through the executor: never through pid files or /proc of its own.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from openarts.storage.cache import CachedInputs


@dataclass(frozen=True)
class Mount:
    """A host directory a sandboxed worker sees at `inside`: read-write, or read-only with `read_only`.
    The job's own directories are copied to a Ray node (executors/ray.py); a `shared` one (a volume: an
    NFS share that every node has mounted at the same host path) is bound as it is, wherever it runs."""

    host: str
    inside: str
    read_only: bool = False
    shared: bool = False
    # what the Ray executor names the directory it packs for its nodes: one attempt's mounts are packed
    # together, every role's of a heterogeneous job, and each task binds its own role's; '': m<position>
    key: str = ""


@dataclass(frozen=True)
class TaskLaunch:
    job_id: str
    seq: int
    task: str
    argv: list[str]
    env: dict[str, str]
    cwd: str
    run_dir: Path  # per task and attempt: log, pid and exit files live here
    cpus: tuple[int, ...] = ()  # CPU ids to pin the task's processes to; empty: not pinned
    # In a sandbox (executors/sandbox.py) argv, env and cwd name paths as the worker sees them:
    mounts: tuple[Mount, ...] = ()  # the job's directories, bound at their ModelArts paths
    gpus: tuple[int, ...] = ()  # the GPUs whose device nodes the worker sees
    image: str = ""  # a custom image to run in (its reference), pulled beforehand
    node: str = ""  # the node it is placed on (its name in the scheduler's catalog)
    outputs: tuple[str, ...] = ()  # the output channels' directories as the worker sees them
    # every mount of the attempt, when an executor that packs an attempt's directories once (executors/
    # ray.py) packs at a start: a heterogeneous job's every role's, whose tasks bind only their own; ()
    # for `mounts`
    packed: tuple[Mount, ...] = ()


@dataclass(frozen=True)
class TaskHandle:
    job_id: str
    seq: int
    task: str
    pid: int  # the shim (or the executor's own handle number)
    pid_start: float
    run_dir: Path
    node: str = ""  # the node the task runs on (its name in the scheduler's catalog)


@dataclass(frozen=True)
class TaskState:
    running: bool
    exit_code: int | None = None  # set once the task ended with a known status
    lost: bool = False  # ended with no status (its shim vanished: reboot, kill -9 of the shim)
    worker_pid: int | None = None  # the process group of the user's processes, once known
    detail: str = field(default="")


@dataclass(frozen=True)
class Usage:
    """What a running task's processes use, read on its node."""

    cpu_seconds: float  # CPU time of all its processes, alive and reaped, since it started
    rss: int  # resident bytes, summed over its processes
    processes: int
    log_size: int  # bytes in its log so far
    over_limit: int | None = None  # bytes held, when more than the memory limit it was sampled with


Key = tuple[str, int, str]  # job id, attempt, task


class StartError(Exception):
    """The executor could not start a task."""


class Executor(Protocol):
    """What the supervisor and the sampler call. The calls that reach a node are coroutines, so that an
    executor whose nodes are remote never blocks the event loop; `watch` and `log_path` are local."""

    @property
    def sandboxed(self) -> bool:
        """Workers run in a sandbox: launches give the paths the worker sees."""
        ...

    async def start(self, launch: TaskLaunch) -> TaskHandle: ...

    async def poll(self, handle: TaskHandle) -> TaskState: ...

    async def signal(self, handle: TaskHandle, signum: int) -> bool | None:
        """Send `signum` to the task: True once sent, False if it has already ended, None if it cannot
        be yet (still starting: the caller tries again on a later pass)."""
        ...

    async def cleanup(self, handle: TaskHandle) -> None:
        """Kill whatever is left of an ended task's process group (stragglers)."""
        ...

    async def gather_outputs(self, handles: list[TaskHandle], changed_only: bool) -> list[str]:
        """Bring the tasks' output directories into the server's copy of the job's directories, which
        the uploads read: a remote node sends what its tasks wrote (with `changed_only`, only what
        changed since its last send); a local worker writes there already. Slow: called in an upload
        transfer, never in a pass. A line for each task whose outputs could not be had."""
        ...

    async def usage(self, tasks: dict[Key, tuple[TaskHandle, int]]) -> dict[Key, Usage]:
        """Usage of each running task, with its memory limit in bytes (0: none); ended ones are left out."""
        ...

    async def kill(self, handle: TaskHandle, note: str) -> None:
        """Kill every process of the task now, with `note` as a line in its log first."""
        ...

    async def free_port(self, node: str) -> int:
        """A free TCP port on `node`, for the workers' rendezvous (MASTER_PORT)."""
        ...

    async def reserve(self, job_id: str, seq: int, nodes: list[str],
                      resources: list[dict[str, float]]) -> list[tuple[int, ...]] | None:
        """Hold each worker's `resources` (CPU, memory bytes, GPU) on its node of `nodes`, for an attempt
        about to start, so that nothing outside openarts takes them; StartError if they cannot be had.
        Returns the GPU ids each worker got where the executor, not the scheduler, decides them (None: the
        scheduler's)."""
        ...

    async def release(self, job_id: str, seq: int, nodes: list[str]) -> None:
        """Give back what `reserve` held and the attempt's files on its nodes (its tasks ended)."""
        ...

    async def sweep(self, live: set[tuple[str, int]]) -> None:
        """Give back reservations held for attempts other than `live` (job id, attempt number)."""
        ...

    async def run(self) -> None:
        """The executor's own background work, until `close`."""
        ...

    def close(self) -> None: ...

    def log_path(self, run_dir: Path) -> Path:
        """Where the server reads the task's log (for a remote node, the copy it keeps)."""
        ...

    @property
    def prepares(self) -> bool:
        """`prepare` copies (an attempt is always staged off the pass); False: it does nothing."""
        ...

    async def prepare(self, job_id: str, seq: int, nodes: list[str], mounts: tuple[Mount, ...], image: str,
                      cancel: threading.Event, inputs: tuple[CachedInputs, ...] = ()) -> list[str]:
        """Make an attempt's staged directories (`mounts`) and image ready on its `nodes`; lines for the
        job's events. Slow (it may copy): called in the attempt's staging transfer, never in a pass;
        StartError if it cannot, or soon after `cancel` is set. `start` does it itself for an attempt that
        was not prepared. `inputs`: the directories staged through the server's cache, which a node may
        take from a cache of its own."""
        ...

    def watch(self, handle: TaskHandle, on_exit: Callable[[], None]) -> None:
        """Call `on_exit` (on the event loop) soon after the task ends; best effort."""
        ...
