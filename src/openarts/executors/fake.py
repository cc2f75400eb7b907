"""An in-memory executor for unit tests of the supervisor's logic (like huey's MemoryHuey or httpx's
MockTransport): nothing is spawned; a test scripts exits, losses and start failures and drives
`Supervisor.reconcile()` pass by pass. Never used by the server itself."""

from __future__ import annotations

import signal as signals
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from openarts.executors.base import Key, Mount, StartError, TaskHandle, TaskLaunch, TaskState, Usage
from openarts.storage.cache import CachedInputs


@dataclass
class FakeTask:
    launch: TaskLaunch
    pid: int
    exit_code: int | None = None
    lost: bool = False
    signals: list[int] = field(default_factory=list)
    cleaned: bool = False


class FakeExecutor:
    sandboxed = False
    prepares = False

    def __init__(self, obey_signals: bool = True) -> None:
        self.tasks: dict[Key, FakeTask] = {}
        self.obey_signals = obey_signals  # a signalled task ends at once with 128 + signum
        self.start_errors: list[str] = []  # each start() pops one and raises it, while any are left
        self._next_pid = 1000
        self.reserved: dict[tuple[str, int], list[str]] = {}  # attempts holding a reservation

    # -- scripting ---------------------------------------------------------------------------------
    def exit(self, job_id: str, task: str, code: int) -> None:
        self._latest(job_id, task).exit_code = code

    def lose(self, job_id: str, task: str) -> None:
        self._latest(job_id, task).lost = True

    def running(self, job_id: str | None = None) -> list[FakeTask]:
        return [t for t in self.tasks.values()
                if t.exit_code is None and not t.lost and (job_id is None or t.launch.job_id == job_id)]

    def _latest(self, job_id: str, task: str) -> FakeTask:
        keys = [k for k in self.tasks if k[0] == job_id and k[2] == task]
        if not keys:
            raise KeyError(f"{job_id}/{task} was never started")
        return self.tasks[max(keys)]

    # -- the Executor interface ------------------------------------------------------------------------
    async def start(self, launch: TaskLaunch) -> TaskHandle:
        if self.start_errors:
            raise StartError(self.start_errors.pop(0))
        self._next_pid += 1
        self.tasks[(launch.job_id, launch.seq, launch.task)] = FakeTask(launch, self._next_pid)
        return TaskHandle(launch.job_id, launch.seq, launch.task, self._next_pid, 0.0, launch.run_dir, launch.node)

    async def poll(self, handle: TaskHandle) -> TaskState:
        t = self.tasks.get((handle.job_id, handle.seq, handle.task))
        if t is None or t.lost:
            return TaskState(running=False, lost=True, detail="no such task")
        if t.exit_code is None:
            return TaskState(running=True, worker_pid=t.pid)
        return TaskState(running=False, exit_code=t.exit_code)

    async def signal(self, handle: TaskHandle, signum: int) -> bool:
        t = self.tasks.get((handle.job_id, handle.seq, handle.task))
        if t is None or t.exit_code is not None or t.lost:
            return False
        t.signals.append(signum)
        if self.obey_signals or signum == signals.SIGKILL:
            t.exit_code = 128 + signum
        return True

    async def prepare(self, job_id: str, seq: int, nodes: list[str], mounts: tuple[Mount, ...], image: str,
                      cancel: threading.Event, inputs: tuple[CachedInputs, ...] = ()) -> list[str]:
        return []  # the workers see the server's own directories

    def log_path(self, run_dir: Path) -> Path:
        return run_dir / "log"

    def watch(self, handle: TaskHandle, on_exit: Callable[[], None]) -> None:
        pass  # the test drives every pass itself

    async def cleanup(self, handle: TaskHandle) -> None:
        t = self.tasks.get((handle.job_id, handle.seq, handle.task))
        if t is not None:
            t.cleaned = True
            if t.exit_code is None and not t.lost:
                t.exit_code = 128 + signals.SIGKILL

    async def gather_outputs(self, handles: list[TaskHandle], changed_only: bool) -> list[str]:
        return []  # the workers write into the server's own directories

    async def usage(self, tasks: dict[Key, tuple[TaskHandle, int]]) -> dict[Key, Usage]:
        return {key: Usage(0.0, 0, 1, 0) for key in tasks if key in self.tasks and self.tasks[key].exit_code is None
                and not self.tasks[key].lost}

    async def kill(self, handle: TaskHandle, note: str) -> None:
        await self.cleanup(handle)

    async def free_port(self, node: str) -> int:
        return 29500

    async def reserve(self, job_id: str, seq: int, nodes: list[str],
                      resources: list[dict[str, float]]) -> list[tuple[int, ...]] | None:
        self.reserved[(job_id, seq)] = list(nodes)
        return None

    async def release(self, job_id: str, seq: int, nodes: list[str]) -> None:
        self.reserved.pop((job_id, seq), None)

    async def sweep(self, live: set[tuple[str, int]]) -> None:
        for attempt in [a for a in self.reserved if a not in live]:
            del self.reserved[attempt]

    async def run(self) -> None:
        pass

    def close(self) -> None:
        pass
