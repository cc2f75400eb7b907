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
class TaskLaunch:
    job_id: str
    seq: int
    task: str
    argv: list[str]
    env: dict[str, str]
    cwd: str
    run_dir: Path  # per task and attempt: log, pid and exit files live here
    cpus: tuple[int, ...] = ()  # CPU ids to pin the task's processes to; empty: not pinned


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
    def start(self, launch: TaskLaunch) -> TaskHandle: ...

    def poll(self, handle: TaskHandle) -> TaskState: ...

    def signal(self, handle: TaskHandle, signum: int) -> bool:
        """Send `signum` to the task's process group; False if it has already ended."""
        ...

    def log_path(self, run_dir: Path) -> Path: ...

    def watch(self, handle: TaskHandle, on_exit: Callable[[], None]) -> None:
        """Call `on_exit` (on the event loop) soon after the task ends; best effort."""
        ...

    def cleanup(self, handle: TaskHandle) -> None:
        """Kill whatever is left of an ended task's process group (stragglers)."""
        ...
