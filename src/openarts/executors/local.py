"""The local executor: the node agent of this machine (executors/agent.py), run inside the server.

Every task runs under the agent's shim, which outlives the server; a restarted server re-adopts them from
their handles. The agent's calls are a few system calls each, so they run inline on the event loop. The
one thing added here is watching: the server watches shims with pidfds on its event loop, whether it
spawned them or re-adopted them, so a task's exit wakes the supervisor at once instead of at its next
full pass. Logs are written where the server reads them.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
from collections.abc import Callable
from pathlib import Path

from openarts.executors.agent import NodeAgent
from openarts.executors.base import Key, Mount, TaskHandle, TaskLaunch, TaskState, Usage
from openarts.executors.images import ImageStore
from openarts.executors.sandbox import Sandbox
from openarts.storage.cache import CachedInputs


class LocalExecutor:
    def __init__(self, loop: asyncio.AbstractEventLoop | None = None, sandbox: Sandbox | None = None,
                 images: ImageStore | None = None) -> None:
        self.agent = NodeAgent(sandbox, images)
        self._loop = loop
        self._watched: dict[int, int] = {}  # shim pid -> pidfd

    @property
    def sandboxed(self) -> bool:
        return self.agent.sandboxed

    async def start(self, launch: TaskLaunch) -> TaskHandle:
        return self.agent.start(launch)

    async def poll(self, handle: TaskHandle) -> TaskState:
        return self.agent.poll(handle)

    async def signal(self, handle: TaskHandle, signum: int) -> bool | None:
        return self.agent.signal(handle, signum)

    async def cleanup(self, handle: TaskHandle) -> None:
        self.agent.cleanup(handle)
        self._unwatch(handle.pid)

    async def gather_outputs(self, handles: list[TaskHandle], changed_only: bool) -> list[str]:
        return []  # the workers write into the server's own directories

    async def usage(self, tasks: dict[Key, tuple[TaskHandle, int]]) -> dict[Key, Usage]:
        return await asyncio.to_thread(self.agent.usage, tasks)  # a scan of every process: off the loop

    async def kill(self, handle: TaskHandle, note: str) -> None:
        await asyncio.to_thread(self.agent.kill, handle, note)

    async def free_port(self, node: str) -> int:
        return self.agent.free_port()

    async def reserve(self, job_id: str, seq: int, nodes: list[str],
                      resources: list[dict[str, float]]) -> list[tuple[int, ...]] | None:
        return None  # this machine's capacity is openarts' alone: the scheduler's ledger is the reservation

    async def release(self, job_id: str, seq: int, nodes: list[str]) -> None:
        pass

    async def sweep(self, live: set[tuple[str, int]]) -> None:
        pass

    async def run(self) -> None:
        pass  # exits are watched with pidfds; logs are written where the server reads them

    prepares = False  # the workers see the server's own directories

    async def prepare(self, job_id: str, seq: int, nodes: list[str], mounts: tuple[Mount, ...], image: str,
                      cancel: threading.Event, inputs: tuple[CachedInputs, ...] = ()) -> list[str]:
        return []  # the workers see the server's own directories

    def log_path(self, run_dir: Path) -> Path:
        return self.agent.log_path(run_dir)

    def watch(self, handle: TaskHandle, on_exit: Callable[[], None]) -> None:
        loop = self._loop or asyncio.get_running_loop()
        if handle.pid in self._watched:
            return
        try:
            fd = os.pidfd_open(handle.pid)
        except (OSError, AttributeError):
            return  # gone already, or no pidfd: the periodic reconcile notices it

        def _ready() -> None:
            self._unwatch(handle.pid)
            self.agent.reap(handle.pid)
            on_exit()

        self._watched[handle.pid] = fd
        loop.add_reader(fd, _ready)

    def _unwatch(self, pid: int) -> None:
        fd = self._watched.pop(pid, None)
        if fd is not None:
            with contextlib.suppress(Exception):
                (self._loop or asyncio.get_running_loop()).remove_reader(fd)
            os.close(fd)

    def close(self) -> None:
        for pid in list(self._watched):
            self._unwatch(pid)
