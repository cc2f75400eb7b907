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

With a sandbox (executors/sandbox.py) the shim runs bwrap instead, which leads the process group; bwrap
writes the host pid of the namespace's init to `sandbox.json`. SIGKILL still goes to the process group
(bwrap dies, its init with it, and the kernel ends the namespace); any other signal goes to that init,
which passes it to every process of the namespace and exits with the command's status.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import shutil
import signal
from collections.abc import Callable, Iterator
from pathlib import Path

import psutil

from openarts.executors.base import StartError, TaskHandle, TaskLaunch, TaskState
from openarts.executors.images import ImageStore
from openarts.executors.sandbox import Sandbox

SHIM = r"""
d=$1
s=$2
if ! cd "$3"; then
  echo "[ModelArts Service Log] cannot enter working directory $3" >>"$d/log"
  echo 126 >"$d/exit"; exit 0
fi
shift 3
"$s" -w "$@" </dev/null >>"$d/log" 2>&1 &
echo $! >"$d/worker.pid"
wait $!
echo $? >"$d/exit"
"""
SETSID = shutil.which("setsid") or "/usr/bin/setsid"  # by path: a job's PATH (an image's) may not have it
# bwrap gets the worker's environment from the file `env` (`--args 4`): the shim, setsid and bwrap run
# outside the sandbox as the server's user and must not take a job's LD_PRELOAD or PATH themselves.
SANDBOX_SHIM = SHIM.replace('2>&1 &', '2>&1 3>"$d/sandbox.json" 4<"$d/env" &')
SHIM_ENV = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}

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


def _catches(pid: int, signum: int) -> bool:
    """Whether process `pid` has a handler for `signum` (SigCgt in /proc/PID/status)."""
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith("SigCgt:"):
                    return bool(int(line.split()[1], 16) >> (signum - 1) & 1)
    except (OSError, ValueError):
        pass
    return False


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
    def __init__(self, loop: asyncio.AbstractEventLoop | None = None, sandbox: Sandbox | None = None,
                 images: ImageStore | None = None) -> None:
        self._loop = loop
        self._watched: dict[int, int] = {}  # shim pid -> pidfd
        self.sandbox = sandbox
        self.images = images

    @property
    def sandboxed(self) -> bool:
        return self.sandbox is not None

    def _command(self, launch: TaskLaunch) -> tuple[str, str, list[str], dict[str, str], bytes]:
        """The shim, the directory it starts in, the command it runs for `launch`, the shim's environment
        and, in a sandbox, the worker's (an image's own under the launch's) as bwrap arguments."""
        if self.sandbox is None:
            if launch.image:
                raise StartError(f"cannot start {launch.task}: custom images need the sandbox, which is off")
            if not os.path.isdir(launch.cwd):
                raise StartError(f"cannot start {launch.task}: its working directory {launch.cwd} does not exist")
            return SHIM, launch.cwd, launch.argv, launch.env, b""
        image = None
        if launch.image:
            image = self.images.lookup(launch.image) if self.images is not None else None
            if image is None:
                raise StartError(f"cannot start {launch.task}: image {launch.image} is not on this node")
        argv = self.sandbox.argv(launch.mounts, launch.cwd, launch.gpus, image)
        env = dict(e.split("=", 1) for e in image.env if "=" in e) if image else {}
        env.update(launch.env)
        try:  # a NUL would end a value early and start a bwrap option of its own (an image's Env is anyone's)
            pairs = [(k.encode(), v.encode()) for k, v in env.items()]
        except UnicodeEncodeError:
            raise StartError(f"cannot start {launch.task}: an environment variable is not valid UTF-8") from None
        if any(b"\0" in k or b"\0" in v or b"=" in k or not k for k, v in pairs):
            raise StartError(f"cannot start {launch.task}: an environment variable holds a NUL or a bad name")
        args = b"".join(b"--setenv\0" + k + b"\0" + v + b"\0" for k, v in pairs)
        return SANDBOX_SHIM, str(launch.run_dir), [*argv, *launch.argv], SHIM_ENV, args

    # -- starting ------------------------------------------------------------------------------
    def start(self, launch: TaskLaunch) -> TaskHandle:
        """Spawn the task under its shim. Every failure to do so (its directories cannot be made or
        cleaned: disk full, permissions; its working directory is gone; the spawn itself) is a
        `StartError`, which the supervisor retries within the job's budget."""
        shim, cwd, command, env, env_args = self._command(launch)
        try:
            try:
                os.makedirs(launch.run_dir)
            except FileExistsError:  # a discarded start may have left files behind
                for name in ("exit", "worker.pid", "log", "sandbox.json", "env"):
                    with contextlib.suppress(FileNotFoundError):
                        (launch.run_dir / name).unlink()
            if shim is SANDBOX_SHIM:
                fd = os.open(launch.run_dir / "env", os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
                with os.fdopen(fd, "wb") as fh:
                    fh.write(env_args)
            devnull = os.open(os.devnull, os.O_RDWR)
        except OSError as exc:
            raise StartError(f"cannot start {launch.task}: {exc}") from exc
        argv = [SH, "-c", shim, "openarts-shim", str(launch.run_dir), SETSID, cwd, *command]
        try:
            with _pinned(launch.cpus, launch.task):
                pid = os.posix_spawn(
                    SH, argv, env, setsid=True,
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
    def signal(self, handle: TaskHandle, signum: int) -> bool | None:
        if (handle.run_dir / "exit").exists():
            return False
        pgid = _read_int(handle.run_dir / "worker.pid")
        if pgid is None:
            return None if self._shim_alive(handle) else False  # not spawned yet: the caller tries again
        if signum != signal.SIGKILL and (handle.run_dir / "env").exists():  # sandboxed (its env file)
            return self._signal_init(handle, pgid, signum)
        try:
            os.killpg(pgid, signum)
        except ProcessLookupError:
            return False
        except PermissionError:
            return False
        return True

    def _signal_init(self, handle: TaskHandle, bwrap: int, signum: int) -> bool | None:
        """Signal the sandbox's init (its host pid from bwrap's info), once it is bwrap's child."""
        try:
            init = int(json.loads((handle.run_dir / "sandbox.json").read_text())["child-pid"])
        except (OSError, ValueError, KeyError, TypeError):  # bwrap has not written it yet: later
            return None if self._shim_alive(handle) else False
        try:
            if psutil.Process(init).ppid() != bwrap:
                return False  # ended, and the pid is another process's now
            if not _catches(init, signum):
                return None  # bwrap is still setting up, or INIT has not set its trap: a PID 1 drops it
            os.kill(init, signum)
        except (psutil.Error, ProcessLookupError, PermissionError):
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
