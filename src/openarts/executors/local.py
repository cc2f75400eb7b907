"""The local executor: one process group per task on this machine, under a /bin/sh shim.

The shim is started in a new session (so it survives the server and its terminal) and runs the worker
with `setsid`, so the worker leads its own process group and can be signalled without touching the
shim. The shim writes the worker's pid, waits for it, and records its exit status (128+N for signal
N) in `exit` with one write: no temporary file and `mv`, whose fork and exec were a third of a short
job's process cost. A reader that finds `exit` empty sees an unfinished task and looks again once
the shim is gone. The server watches shims with pidfds, whether it spawned them or re-adopted them
after a restart; no Python interpreter runs per task.

A launch with `cpus` is pinned to them (CPU affinity, which every process it starts inherits): the
spawning thread takes that affinity for the moment of posix_spawn and gives it back, so the shim is
pinned from its first instruction and no process of the task ever runs unpinned.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
from collections.abc import Callable, Iterator
from pathlib import Path

import psutil

from openarts.executors.base import StartError, TaskHandle, TaskLaunch, TaskState

SHIM = r"""
d=$1
if ! cd "$2"; then
  echo "[ModelArts Service Log] cannot enter working directory $2" >>"$d/log"
  echo 126 >"$d/exit"; exit 0
fi
shift 2
setsid -w "$@" </dev/null >>"$d/log" 2>&1 &
echo $! >"$d/worker.pid"
wait $!
echo $? >"$d/exit"
"""

SH = "/bin/sh"

log = logging.getLogger("openarts.executor")


def _proc_start(pid: int) -> float:
    try:
        return psutil.Process(pid).create_time()
    except psutil.Error:
        return 0.0


def _read_int(path: Path) -> int | None:
    try:
        text = path.read_text().strip()
    except (FileNotFoundError, NotADirectoryError):
        return None
    try:
        return int(text)
    except ValueError:
        return None


@contextlib.contextmanager
def _pinned(cpus: tuple[int, ...], task: str) -> Iterator[None]:
    """Run the block with the calling thread's CPU affinity set to `cpus` (on Linux affinity is per
    thread: the server's other threads are untouched), then restore it. CPU ids this process may no
    longer use (its cpuset shrank since the catalog was built) are left out; none left: not pinned."""
    if not cpus:
        yield
        return
    before = os.sched_getaffinity(0)
    wanted = set(cpus) & before
    if not wanted:
        log.warning("task %s: CPUs %s are not available to the server (%s): not pinned", task,
                    sorted(cpus), sorted(before))
        yield
        return
    os.sched_setaffinity(0, wanted)
    try:
        yield
    finally:
        os.sched_setaffinity(0, before)


class LocalExecutor:
    def __init__(self, loop: asyncio.AbstractEventLoop | None = None) -> None:
        self._loop = loop
        self._watched: dict[int, int] = {}  # shim pid -> pidfd

    # -- starting ------------------------------------------------------------------------------
    def start(self, launch: TaskLaunch) -> TaskHandle:
        """Spawn the task under its shim. Every failure to do so (its directories cannot be made or
        cleaned: disk full, permissions; its working directory is gone; the spawn itself) is a
        `StartError`, which the supervisor retries within the job's budget."""
        if not os.path.isdir(launch.cwd):
            raise StartError(f"cannot start {launch.task}: its working directory {launch.cwd} does not exist")
        try:
            try:
                os.makedirs(launch.run_dir)
            except FileExistsError:  # a discarded start may have left files behind
                for name in ("exit", "worker.pid", "log"):
                    with contextlib.suppress(FileNotFoundError):
                        (launch.run_dir / name).unlink()
            devnull = os.open(os.devnull, os.O_RDWR)
        except OSError as exc:
            raise StartError(f"cannot start {launch.task}: {exc}") from exc
        argv = [SH, "-c", SHIM, "openarts-shim", str(launch.run_dir), launch.cwd, *launch.argv]
        try:
            with _pinned(launch.cpus, launch.task):
                pid = os.posix_spawn(
                    SH, argv, launch.env, setsid=True,
                    file_actions=[(os.POSIX_SPAWN_DUP2, devnull, 0), (os.POSIX_SPAWN_DUP2, devnull, 1),
                                  (os.POSIX_SPAWN_DUP2, devnull, 2)],
                )
        except OSError as exc:
            raise StartError(f"cannot start {launch.task}: {exc}") from exc
        finally:
            os.close(devnull)
        return TaskHandle(launch.job_id, launch.seq, launch.task, pid, _proc_start(pid), launch.run_dir)

    # -- observing -----------------------------------------------------------------------------
    def _shim_alive(self, handle: TaskHandle) -> bool:
        try:
            proc = psutil.Process(handle.pid)
            if handle.pid_start and abs(proc.create_time() - handle.pid_start) > 0.05:
                return False  # the pid was reused by another process
            return proc.status() != psutil.STATUS_ZOMBIE
        except psutil.Error:
            return False

    def poll(self, handle: TaskHandle) -> TaskState:
        worker = _read_int(handle.run_dir / "worker.pid")
        code = _read_int(handle.run_dir / "exit")
        if code is not None:
            self._reap(handle.pid)
            return TaskState(running=False, exit_code=code, worker_pid=worker)
        if self._shim_alive(handle):
            return TaskState(running=True, worker_pid=worker)
        code = _read_int(handle.run_dir / "exit")  # it may have finished between the two looks
        self._reap(handle.pid)
        if code is not None:
            return TaskState(running=False, exit_code=code, worker_pid=worker)
        return TaskState(running=False, lost=True, worker_pid=worker,
                         detail="the task's supervisor process vanished without an exit status")

    def log_path(self, run_dir: Path) -> Path:
        return run_dir / "log"

    # -- acting --------------------------------------------------------------------------------
    def signal(self, handle: TaskHandle, signum: int) -> bool:
        if (handle.run_dir / "exit").exists():
            return False
        pgid = _read_int(handle.run_dir / "worker.pid")
        if pgid is None:
            return self._shim_alive(handle)  # not spawned yet: the caller tries again
        try:
            os.killpg(pgid, signum)
        except ProcessLookupError:
            return False
        except PermissionError:
            return False
        return True

    def cleanup(self, handle: TaskHandle) -> None:
        pgid = _read_int(handle.run_dir / "worker.pid")
        if pgid:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pgid, signal.SIGKILL)
        self._unwatch(handle.pid)

    def _reap(self, pid: int) -> None:
        with contextlib.suppress(ChildProcessError, OSError):
            os.waitpid(pid, os.WNOHANG)

    # -- watching ------------------------------------------------------------------------------
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
            loop = self._loop
            with contextlib.suppress(Exception):
                (loop or asyncio.get_running_loop()).remove_reader(fd)
            os.close(fd)

    def close(self) -> None:
        for pid in list(self._watched):
            self._unwatch(pid)
