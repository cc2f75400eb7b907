"""The executor interface: start a task's process tree, observe it, signal it.

An executor knows nothing of phases or the database; the supervisor drives it. Each task (worker) is
one process tree in its own process group, started under a shim that outlives the server and records
the exit status, so that a restarted server can re-adopt it (`poll` needs only the handle).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol


@dataclass(frozen=True)
class Mount:
    """A host directory a sandboxed worker sees, read-write, at `inside`."""

    host: str
    inside: str


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


@dataclass(frozen=True)
class TaskHandle:
    job_id: str
    seq: int
    task: str
    pid: int  # the shim (or the executor's own handle number)
    pid_start: float
    run_dir: Path


@dataclass(frozen=True)
class TaskState:
    running: bool
    exit_code: int | None = None  # set once the task ended with a known status
    lost: bool = False  # ended with no status (its shim vanished: reboot, kill -9 of the shim)
    worker_pid: int | None = None  # the process group of the user's processes, once known
    detail: str = field(default="")


class StartError(Exception):
    """The executor could not start a task."""


class Executor(Protocol):
    @property
    def sandboxed(self) -> bool:
        """Workers run in a sandbox: launches give the paths the worker sees."""
        ...

    def start(self, launch: TaskLaunch) -> TaskHandle: ...

    def poll(self, handle: TaskHandle) -> TaskState: ...

    def signal(self, handle: TaskHandle, signum: int) -> bool | None:
        """Send `signum` to the task: True once sent, False if it has already ended, None if it cannot
        be yet (still starting: the caller tries again on a later pass)."""
        ...

    def log_path(self, run_dir: Path) -> Path: ...

    def watch(self, handle: TaskHandle, on_exit: Callable[[], None]) -> None:
        """Call `on_exit` (on the event loop) soon after the task ends; best effort."""
        ...

    def cleanup(self, handle: TaskHandle) -> None:
        """Kill whatever is left of an ended task's process group (stragglers)."""
        ...
