"""The node agent: what runs a node's workers, the same code on this machine and on every Ray node.

It starts each task under a /bin/sh shim in a new session (so it survives the server, the agent and
their terminals), which runs the worker with `setsid`, so the worker leads its own process group and can
be signalled without touching the shim. The shim writes the worker's pid, waits for it, and records its
exit status (128+N for signal N) in `exit` with one write: no temporary file and `mv`, whose fork and
exec were a third of a short job's process cost. A reader that finds `exit` empty sees an unfinished
task and looks again once the shim is gone. No Python interpreter runs per task.

A launch with `cpus` is pinned to them (CPU affinity, which every process it starts inherits): the
spawning thread takes that affinity for the moment of posix_spawn and gives it back, so the shim is
pinned from its first instruction and no process of the task ever runs unpinned.

With a sandbox (executors/sandbox.py) the shim runs bwrap instead, which leads the process group; bwrap
writes the host pid of the namespace's init to `sandbox.json`. SIGKILL still goes to the process group
(bwrap dies, its init with it, and the kernel ends the namespace); any other signal goes to that init,
which passes it to every process of the namespace and exits with the command's status.

`usage()` is one pass over the node's processes for every task asked about: CPU time and resident
memory of each task's process group and session, and whether it holds more than its memory limit.
Everything here is synchronous and node-local; the executor decides where it runs (executors/local.py).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import signal
import socket
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path

import psutil

from openarts.executors.base import Key, StartError, TaskHandle, TaskLaunch, TaskState, Usage
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
# In the background of a shell without job control, setsid(1) is no group leader: it calls setsid() and
# execs the shim in place, so $! is the shim's pid.
LAUNCHER = '"$@" </dev/null >/dev/null 2>&1 & echo $!'
SETSID = shutil.which("setsid") or "/usr/bin/setsid"  # by path: a job's PATH (an image's) may not have it
# bwrap gets the worker's environment from the file `env` (`--args 4`): the shim, setsid and bwrap run
# outside the sandbox as the server's user and must not take a job's LD_PRELOAD or PATH themselves.
SANDBOX_SHIM = SHIM.replace('2>&1 &', '2>&1 3>"$d/sandbox.json" 4<"$d/env" &')
SHIM_ENV = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}

SH = "/bin/sh"

log = logging.getLogger("openarts.agent")


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


def over_limit(rss: int, limit: int, processes: int, pss: Callable[[], int]) -> int | None:
    """The bytes a task holds when that is more than `limit` bytes, else None.

    `rss` is the resident set summed over the task's `processes`: a page several of them share (after a
    fork, or a shared library) counts once per process. So when that sum is over the limit and there is
    more than one process, their proportional set size decides (`pss()`: each shared page split among
    its sharers), which counts every page once as a cgroup would. 0: no limit."""
    if limit <= 0 or rss <= limit:
        return None
    used = pss() if processes > 1 else rss
    return used if used > limit else None


def _pss(procs: list[psutil.Process]) -> int:
    total = 0
    for proc in procs:
        with contextlib.suppress(psutil.Error, OSError):
            total += proc.memory_full_info().pss
    return total


class NodeAgent:
    def __init__(self, sandbox: Sandbox | None = None, images: ImageStore | None = None,
                 detached: bool = False) -> None:
        self.sandbox = sandbox
        self.images = images
        # detached: the shim is not the agent's child but init's (through LAUNCHER), for an agent that
        # its host kills with its children (a Ray actor: Ray kills a dead worker's child processes)
        self.detached = detached

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
                pid = self._spawn_detached(argv, env, devnull) if self.detached else os.posix_spawn(
                    SH, argv, env, setsid=True,
                    file_actions=[(os.POSIX_SPAWN_DUP2, devnull, 0), (os.POSIX_SPAWN_DUP2, devnull, 1),
                                  (os.POSIX_SPAWN_DUP2, devnull, 2)],
                )
        except OSError as exc:
            raise StartError(f"cannot start {launch.task}: {exc}") from exc
        finally:
            os.close(devnull)
        return TaskHandle(launch.job_id, launch.seq, launch.task, pid, _proc_start(pid), launch.run_dir, launch.node)

    @staticmethod
    def _spawn_detached(argv: list[str], env: dict[str, str], devnull: int) -> int:
        """Start the shim through LAUNCHER, which exits at once: the shim's pid, read from its output."""
        read, write = os.pipe()
        try:
            pid = os.posix_spawn(SH, [SH, "-c", LAUNCHER, "openarts-launch", SETSID, *argv], env,
                                 file_actions=[(os.POSIX_SPAWN_DUP2, devnull, 0), (os.POSIX_SPAWN_DUP2, write, 1),
                                               (os.POSIX_SPAWN_DUP2, devnull, 2)])
            os.close(write)
            write = -1
            with os.fdopen(read, "rb") as out:
                read = -1
                text = out.read(32)
            os.waitpid(pid, 0)
        finally:
            for fd in (read, write):
                if fd >= 0:
                    os.close(fd)
        try:
            return int(text)
        except ValueError:
            raise OSError(f"the launcher printed no pid ({text!r})") from None

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
            self.reap(handle.pid)
            return TaskState(running=False, exit_code=code, worker_pid=worker)
        if self._shim_alive(handle):
            return TaskState(running=True, worker_pid=worker)
        code = _read_int(handle.run_dir / "exit")  # it may have finished between the two looks
        self.reap(handle.pid)
        if code is not None:
            return TaskState(running=False, exit_code=code, worker_pid=worker)
        return TaskState(running=False, lost=True, worker_pid=worker,
                         detail="the task's supervisor process vanished without an exit status")

    def log_path(self, run_dir: Path) -> Path:
        return run_dir / "log"

    @staticmethod
    def free_port() -> int:
        """A TCP port free on this node now, for the workers' rendezvous (MASTER_PORT)."""
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind(("", 0))
            return int(s.getsockname()[1])

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

    def kill(self, handle: TaskHandle, note: str) -> None:
        """Kill the task's process group and the processes that left it but not its session."""
        if (handle.run_dir / "exit").exists():  # ended: its pid may be another process's by now
            return
        pgid = _read_int(handle.run_dir / "worker.pid")
        if pgid is None:
            return
        if note:
            with contextlib.suppress(OSError), open(handle.run_dir / "log", "a") as fh:
                fh.write(note + "\n")
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, signal.SIGKILL)
        for proc in psutil.process_iter(["pid"]):
            with contextlib.suppress(psutil.Error, OSError):
                if os.getsid(proc.pid) == pgid:
                    proc.kill()

    def reap(self, pid: int) -> None:
        with contextlib.suppress(ChildProcessError, OSError):
            os.waitpid(pid, os.WNOHANG)

    # -- measuring -----------------------------------------------------------------------------
    def usage(self, tasks: dict[Key, tuple[TaskHandle, int]]) -> dict[Key, Usage]:
        groups: dict[int, tuple[Key, TaskHandle, int]] = {}
        for key, (handle, limit) in tasks.items():
            if (handle.run_dir / "exit").exists():  # ended: its pid may be reused by now
                continue
            pgid = _read_int(handle.run_dir / "worker.pid")
            if pgid is not None:
                groups[pgid] = (key, handle, limit)
        if not groups:
            return {}
        cpu: dict[int, float] = dict.fromkeys(groups, 0.0)
        rss: dict[int, int] = dict.fromkeys(groups, 0)
        procs: dict[int, list[psutil.Process]] = {pgid: [] for pgid in groups}
        for proc in psutil.process_iter(["pid"]):
            try:
                # the worker leads its own session and process group (setsid): a process that left the
                # group but not the session is still the task's
                pgid = os.getpgid(proc.pid)
                if pgid not in groups:
                    pgid = os.getsid(proc.pid)
                    if pgid not in groups:
                        continue
                with proc.oneshot():
                    times = proc.cpu_times()
                    cpu[pgid] += times.user + times.system + times.children_user + times.children_system
                    rss[pgid] += proc.memory_info().rss
                procs[pgid].append(proc)
            except (psutil.Error, ProcessLookupError, PermissionError):
                continue
        out: dict[Key, Usage] = {}
        for pgid, (key, handle, limit) in groups.items():
            try:
                log_size = (handle.run_dir / "log").stat().st_size
            except OSError:
                log_size = 0
            members = procs[pgid]
            over = over_limit(rss[pgid], limit, len(members), partial(_pss, members)) if members else None
            out[key] = Usage(cpu[pgid], rss[pgid], len(members), log_size, over)
        return out
