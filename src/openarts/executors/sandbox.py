"""The sandbox every worker runs in: bubblewrap (`bwrap`) namespaces, without root and without a daemon.

A worker sees ModelArts' layout and little else:
- its own user namespace (it is `ma-user`, uid 1000, gid 100, or the user of its image), whose
  further use it cannot make (`--disable-userns`), and no capabilities in it (`--cap-drop ALL`, an
  image's root included);
- its own PID namespace, whose PID 1 is a small `/bin/sh` init (INIT below): it runs the command,
  forwards SIGTERM/SIGINT/SIGHUP to every process of the namespace, and exits with the command's
  status. When it exits the kernel kills whatever is left, daemonized or not; bwrap's
  `--die-with-parent` makes a SIGKILL of the task's process group (bwrap leads it) end it too;
- a new mount namespace on an empty root: the host's system directories read-only (or an image's
  root filesystem), a private /tmp and /dev/shm, a fresh /proc, the job's directories bound at their
  ModelArts paths, and nothing of the server's data directory, other jobs or the credential store;
- the host network (workers reach each other through MASTER_ADDR) and, of the GPUs, only the device
  nodes of those its flavor assigned.
"""

from __future__ import annotations

import logging
import os
import shutil
import stat
import subprocess
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from openarts.config import Settings
from openarts.executors.base import Mount

log = logging.getLogger("openarts.executor")

MA_UID, MA_GID = 1000, 100  # ma-user and ma-group, as in ModelArts' images
MA_HOME_DIR = "/home/ma-user"

# Host directories a worker sees read-only (those that exist; a symlink stays a symlink).
SYSTEM_DIRS = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/etc", "/opt")
# Where a job's own directories cannot go: bwrap cannot make mount points under a read-only bind.
RESERVED = (*SYSTEM_DIRS, "/proc", "/dev", "/sys")
# What a worker sees of /sys, read-only: without GPUs only CPU topology, NUMA and cgroup limits; with
# GPUs all of it (PCI topology) but the kernel's (debugfs, tracing) and the firmware's (EFI, ACPI)
SYS_CPU = ("/sys/devices/system", "/sys/fs/cgroup")
SYS_HIDDEN = ("/sys/kernel", "/sys/firmware")
GPU_SHARED_NODES = ("nvidiactl", "nvidia-uvm", "nvidia-uvm-tools", "nvidia-modeset")

# PID 1 of the worker's namespace. A trapped signal interrupts `wait` (status 128+N); while the command
# runs the loop waits again. Once it is gone, one more `wait` gives its status if the interrupted one did
# not (127: it did, and the job is forgotten), so the status is always the command's own. After a signal
# it lets the other processes finish too (a `sh -c` dies of SIGTERM at once, while the program under it
# saves its checkpoint): the supervisor's SIGKILL after the grace period bounds that wait. Without one,
# its exit ends the namespace and whatever the command left behind.
INIT = r"""
t=
trap 't=1; kill -TERM -1 2>/dev/null' TERM
trap 't=1; kill -INT -1 2>/dev/null' INT
trap 't=1; kill -HUP -1 2>/dev/null' HUP
"$@" &
c=$!
while :; do
  wait $c; r=$?
  kill -0 $c 2>/dev/null && continue
  wait $c 2>/dev/null; s=$?
  [ $s -eq 127 ] || r=$s
  break
done
if [ -n "$t" ]; then
  while set -- /proc/[0-9]*; [ $# -gt 1 ]; do sleep 0.1 || break; done
fi
exit $r
"""


class SandboxUnavailable(Exception):
    """bwrap is missing or cannot make namespaces here (the message says which)."""


@dataclass(frozen=True)
class RootImage:
    """An unpacked image a worker runs in (executors/images.py)."""

    ref: str
    digest: str
    rootfs: Path
    uid: int
    gid: int
    env: tuple[str, ...]  # NAME=value, the image's own
    cwd: str


def reserved_path(path: str) -> str | None:
    """The reserved directory `path` lies under, if any (see RESERVED)."""
    for top in RESERVED:
        if path == top or path.startswith(top + "/"):
            return top
    return None


def _under(path: Path, roots: Iterable[Path]) -> bool:
    return any(path.is_relative_to(r) for r in roots)


def interpreter_dirs(python: str) -> list[Path]:
    """What a worker needs to run `python`: its virtual environment, if any, and its installation (a
    directory with lib/python3*; anything else, a home directory or /, is left for sandbox_read_only)."""
    p = Path(python)
    dirs = []
    if (p.parent.parent / "pyvenv.cfg").exists():
        dirs.append(p.parent.parent)
    prefix = Path(os.path.realpath(p)).parent.parent
    if len(prefix.parts) > 2 and any(prefix.glob("lib/python3*")):
        dirs.append(prefix)
    elif prefix not in (Path("/usr"), Path("/")):
        log.warning("sandbox: %s is not in a Python installation the sandbox recognizes: add its directory "
                    "to [server] sandbox_read_only", python)
    return dirs


def secret_entries(top: Path, limit: int = 1_000_000) -> list[Path]:
    """Entries under `top` that other users may not read. The sandbox's user is the server's own OS
    user to the kernel, so it could read them; the sandbox hides them instead. Past `limit` entries
    the rest of the tree is not looked at (logged)."""
    found: list[Path] = []
    seen = 0
    for dirpath, dirnames, filenames in os.walk(top):
        hidden: set[str] = set()  # directories found here: masked whole, not walked
        for name in [*dirnames, *filenames]:
            seen += 1
            if seen > limit:
                log.warning("sandbox: %s has more than %d entries: the rest is not checked for unreadable files",
                            top, limit)
                return found
            path = Path(dirpath) / name
            try:
                st = path.lstat()
            except OSError:
                continue
            if stat.S_ISLNK(st.st_mode):
                continue
            if not st.st_mode & stat.S_IROTH and not (stat.S_ISREG(st.st_mode) and st.st_size == 0):
                found.append(path)  # (an empty file hides nothing: one mount less per worker)
                hidden.add(name)
        dirnames[:] = [d for d in dirnames if d not in hidden]
    return found


class Sandbox:
    """Builds the bwrap command line of one worker. Made once per server (`Sandbox.create`)."""

    def __init__(self, bwrap: str, read_only: list[Path], hidden: list[Path], identity_dir: Path) -> None:
        self.bwrap = bwrap
        self.read_only = read_only
        self.hidden = hidden
        self.identity_dir = identity_dir  # passwd and group naming ma-user
        self.system = [(Path(d), os.readlink(d) if os.path.islink(d) else None)
                       for d in SYSTEM_DIRS if os.path.lexists(d)]

    @classmethod
    def create(cls, data_dir: Path, hidden: list[Path], read_only: list[Path]) -> Sandbox:
        """Find bwrap, write the identity files, compute what to hide, and prove it works here."""
        bwrap = shutil.which("bwrap")
        if bwrap is None:
            raise SandboxUnavailable("bwrap (Debian package bubblewrap) is not installed")
        bound = [Path(d) for d in SYSTEM_DIRS if os.path.isdir(d) and not os.path.islink(d)]
        ro = [p for p in dict.fromkeys(read_only) if p.exists() and not _under(p, bound)]
        masks = [h for h in dict.fromkeys([data_dir, *hidden]) if _under(h, [*bound, *ro])]
        for top in [p for p in (Path("/etc"), Path("/opt")) if p in bound] + ro:  # /usr: see docs/SANDBOX.md
            masks += secret_entries(top)
        masks = [h for h in dict.fromkeys(masks) if not _under(h, [o for o in masks if o != h])]  # outermost
        ident = data_dir / "sandbox"
        _write_identity(ident)
        box = cls(bwrap, ro, masks, ident)
        box.probe()
        return box

    def probe(self) -> None:
        argv = [*self.argv([], "/", gpus=(), image=None, info_fd=False), "/bin/sh", "-c", "exit 0"]
        try:
            done = subprocess.run(argv, capture_output=True, timeout=30, stdin=subprocess.DEVNULL)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise SandboxUnavailable(f"bwrap cannot run: {exc}") from None
        if done.returncode != 0:
            why = done.stderr.decode(errors="replace").strip().splitlines()
            raise SandboxUnavailable(f"bwrap cannot make namespaces here: {why[-1] if why else done.returncode}")

    # -- the command line ------------------------------------------------------------------------
    def argv(self, mounts: Iterable[Mount], cwd: str, gpus: tuple[int, ...], image: RootImage | None,
             info_fd: bool = True) -> list[str]:
        """bwrap's options for one worker; the caller appends the command, which runs under INIT. With
        `info_fd` (the shim's way), bwrap reads the worker's environment from fd 4 and writes the host pid
        of that init to fd 3 (`sandbox.json`)."""
        mounts = list(mounts)
        uid, gid = (image.uid, image.gid) if image else (MA_UID, MA_GID)
        # no capabilities even for an image whose user is root: one could unmount what hides the server's files
        a = [self.bwrap, *(["--clearenv", "--args", "4"] if info_fd else []),
             "--unshare-user", "--uid", str(uid), "--gid", str(gid), "--disable-userns",
             "--cap-drop", "ALL", "--unshare-pid", "--unshare-ipc", "--as-pid-1", "--die-with-parent"]
        if image is None:
            for path, link in self.system:
                a += ["--symlink", link, str(path)] if link is not None else ["--ro-bind", str(path), str(path)]
        else:
            a += _image_root(image)
        # the sandbox's own first: what is bound below may lie under /tmp (a test's directories)
        a += ["--proc", "/proc", "--dev", "/dev", "--tmpfs", "/dev/shm", "--tmpfs", "/tmp"]
        if gpus and os.path.isdir("/sys"):  # the driver and NCCL read PCI topology: /sys but kernel, firmware
            a += ["--ro-bind", "/sys", "/sys"]
            a += [x for d in SYS_HIDDEN if os.path.isdir(d) for x in ("--tmpfs", d)]
        else:  # CPU topology, NUMA, cgroup limits: nothing of the devices or the kernel
            a += [x for d in SYS_CPU if os.path.isdir(d) for x in ("--ro-bind", d, d)]
        if image is None:
            for p in self.read_only:
                a += ["--ro-bind", str(p), str(p)]
            for h in self.hidden:  # one made after start-up (a master key) is masked from then on
                if h.is_dir():
                    a += ["--tmpfs", str(h)]
                elif os.path.lexists(h):
                    a += ["--ro-bind", "/dev/null", str(h)]
            a += ["--ro-bind", str(self.identity_dir / "passwd"), "/etc/passwd",
                  "--ro-bind", str(self.identity_dir / "group"), "/etc/group"]
        if gpus:
            for name in (*(f"nvidia{i}" for i in gpus), *GPU_SHARED_NODES):
                if os.path.exists(f"/dev/{name}"):
                    a += ["--dev-bind", f"/dev/{name}", f"/dev/{name}"]
        if image is not None:
            a += _image_home(image)
        for m in mounts:  # in order: a volume inside the home lands on top of the home's bind
            a += ["--ro-bind" if m.read_only else "--bind", m.host, m.inside]
        a += ["--chdir", cwd, *(["--info-fd", "3"] if info_fd else []), "--", "/bin/sh", "-c", INIT, "openarts-init"]
        return a


# Top-level entries of an image the sandbox makes itself (or binds from the job) rather than take them
IMAGE_SKIPPED = {"proc", "dev", "sys", "tmp", "home", "cache"}


def _image_root(image: RootImage) -> list[str]:
    """The image's root filesystem, read-only, entry by entry onto bwrap's empty root: the mount points
    the sandbox needs (/proc, /dev, /home/ma-user/modelarts, ...) can then be made whatever the image
    has."""
    a: list[str] = []
    for entry in sorted(os.listdir(image.rootfs)):
        if entry in IMAGE_SKIPPED:
            continue
        path = image.rootfs / entry
        if path.is_symlink():
            a += ["--symlink", os.readlink(path), f"/{entry}"]
        else:
            a += ["--ro-bind", str(path), f"/{entry}"]
    return a


def _image_home(image: RootImage) -> list[str]:
    """/home/ma-user of an image job: a fresh tmpfs (a container's home: ~/.cache and `pip install
    --user` work, and nothing of it outlives the attempt) holding the image's own entries of
    /home/ma-user (a conda installation, dotfiles) read-only; the job's `modelarts` directory is bound
    into it after. Links are made as links: bwrap would resolve them on the host."""
    a = ["--tmpfs", MA_HOME_DIR]
    home = image.rootfs / "home" / "ma-user"
    if home.parent.is_symlink() or home.is_symlink() or not home.is_dir():
        return a
    for entry in sorted(os.listdir(home)):
        path = home / entry
        if entry == "modelarts":
            continue
        if path.is_symlink():
            a += ["--symlink", os.readlink(path), f"{MA_HOME_DIR}/{entry}"]
        else:
            a += ["--ro-bind", str(path), f"{MA_HOME_DIR}/{entry}"]
    return a


def _write_identity(ident: Path) -> None:
    """passwd and group files with ma-user (uid 1000) and ma-group (gid 100) in place of whatever the
    host has at those ids."""
    ident.mkdir(parents=True, exist_ok=True)
    users = [line for line in _read_lines("/etc/passwd")
             if line.split(":")[2:3] != [str(MA_UID)] and not line.startswith("ma-user:")]
    groups = [line for line in _read_lines("/etc/group")
              if line.split(":")[2:3] != [str(MA_GID)] and not line.startswith("ma-group:")]
    (ident / "passwd").write_text("\n".join(
        [*users, f"ma-user:x:{MA_UID}:{MA_GID}:ma-user:/home/ma-user:/bin/bash"]) + "\n")
    (ident / "group").write_text("\n".join([*groups, f"ma-group:x:{MA_GID}:ma-user"]) + "\n")


def _read_lines(path: str) -> list[str]:
    try:
        return [line for line in Path(path).read_text().splitlines() if line.strip()]
    except OSError:
        return []


def sandbox_paths(settings: Settings, interpreters: Iterable[str],
                  hidden: Iterable[Path]) -> tuple[list[Path], list[Path]]:
    """What a sandbox hides (the server's data directory, config and `hidden`, resolved) and shows
    read-only (`sandbox_read_only` and the engines' interpreters): the server's and every Ray agent's."""
    read_only = [Path(p) for p in settings.sandbox_read_only]
    for python in interpreters:
        read_only += interpreter_dirs(python)
    private = [settings.data_dir, *([settings.config_path] if settings.config_path else []), *hidden]
    return [Path(os.path.realpath(p)) for p in private], read_only


def open_sandbox(settings: Settings, interpreters: Iterable[str], hidden: Iterable[Path]) -> tuple[Sandbox | None, str]:
    """The server's sandbox per `[server] sandbox`, or None and why not. "on" raises SandboxUnavailable
    where it cannot be had; "auto" goes without (the caller says so, loudly)."""
    if settings.sandbox == "off":
        return None, 'it is off in the config ([server] sandbox = "off")'
    private, read_only = sandbox_paths(settings, interpreters, hidden)
    try:
        return Sandbox.create(settings.data_dir, private, read_only), ""
    except SandboxUnavailable as exc:
        if settings.sandbox == "on":
            raise
        return None, str(exc)
