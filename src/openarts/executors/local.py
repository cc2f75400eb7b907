"""The local executor: the node agent of this machine, run inside the server.

Every task runs under the agent's shim (executors/agent.py), which outlives the server; a restarted
server re-adopts them from their handles. The one thing added here is watching: the server watches
shims with pidfds on its event loop, whether it spawned them or re-adopted them, so a task's exit wakes
the supervisor at once instead of at its next full pass. Logs are written where the server reads them.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Callable

from openarts.executors.agent import NodeAgent
from openarts.executors.base import TaskHandle
from openarts.executors.images import ImageStore
from openarts.executors.sandbox import Sandbox


class LocalExecutor(NodeAgent):
    def __init__(self, loop: asyncio.AbstractEventLoop | None = None, sandbox: Sandbox | None = None,
                 images: ImageStore | None = None) -> None:
        super().__init__(sandbox, images)
        self._loop = loop
        self._watched: dict[int, int] = {}  # shim pid -> pidfd

    def cleanup(self, handle: TaskHandle) -> None:
        super().cleanup(handle)
        self._unwatch(handle.pid)

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
            self._reap(handle.pid)
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
