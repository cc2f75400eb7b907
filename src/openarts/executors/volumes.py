"""A job's NFS volumes on this machine: where each share is mounted, and the mounts that put them at
their `local_path` in the worker's sandbox.

openarts runs without root and mounts no NFS itself: a share is usable when the machine has it mounted
already, declared in config.toml or found in /proc/self/mountinfo:

    [volumes]
    discover = true                                # NFS mounts of /proc/self/mountinfo count (default)
    [volumes.nfs]
    "10.10.10.10:/example/path" = "/mnt/example"   # the share = where this machine has it mounted

`nfs_shares(settings)` reads both (the config wins); `host_dirs` says where each of a job's volumes is,
or why it cannot be had (VolumeError: the service refuses the create with it, service/jobs.py);
`volume_mounts` gives the supervisor the worker's mounts, after the job's own directories. On Ray the
mounts travel in the TaskLaunch as they are (`Mount.shared`): every node must have the share at the same
host path.
"""

from __future__ import annotations

import os
import posixpath
from dataclasses import dataclass
from pathlib import Path

from openarts.config import Settings
from openarts.core.spec import JobSpec
from openarts.core.volumes import nfs_path, overlaps, parse_mountinfo, share_dir
from openarts.executors.base import Mount, StartError
from openarts.executors.sandbox import RESERVED

MOUNTINFO = Path("/proc/self/mountinfo")


@dataclass(frozen=True)
class Shares:
    """What this machine offers volumes."""

    mounted: dict[str, str]  # share (host:/path, normalised) -> the host directory it is mounted at
    private: tuple[str, ...] = ()  # host paths no volume may show: the data directory, config file, keys
    fixed: tuple[str, ...] = ()  # container paths under which no volume can go: read-only binds of the sandbox


class VolumeError(Exception):
    """A volume this machine cannot give a job: the field and why."""

    def __init__(self, field: str, why: str) -> None:
        super().__init__(f"{field}: {why}")
        self.field = field
        self.why = why


def read_mountinfo(path: Path = MOUNTINFO) -> str:
    try:
        return path.read_text(errors="replace")
    except OSError:
        return ""


def nfs_shares(settings: Settings, mountinfo: str | None = None) -> Shares:
    """The shares of `[volumes.nfs]` and, unless `[volumes] discover = false`, the NFS mounts of
    `mountinfo` (default: this process's /proc/self/mountinfo). Reads no NFS directory."""
    table = settings.raw.get("volumes", {})
    mounted: dict[str, str] = {}
    if table.get("discover", True):
        mounted.update(parse_mountinfo(read_mountinfo() if mountinfo is None else mountinfo))
    for share, where in table.get("nfs", {}).items():
        key = nfs_path(share)
        if key is not None:  # the config is checked at start (config.check_volumes)
            mounted[key] = posixpath.normpath(where)
    private = [settings.data_dir, *([settings.config_path] if settings.config_path else []), *settings.secret_paths]
    return Shares(mounted, tuple(os.path.realpath(p) for p in private),
                  (*RESERVED, *settings.sandbox_read_only))


def host_dirs(spec: JobSpec, shares: Shares, sandboxed: bool) -> list[str]:
    """The host directory of each of the job's volumes; VolumeError for the first that cannot be had."""
    if spec.volumes and not sandboxed:
        raise VolumeError("spec.volumes", "volumes are bound into the workers' sandbox, which is off on this "
                          "server ([server] sandbox, docs/SANDBOX.md): without it a share cannot be put at "
                          "local_path")
    out = []
    for i, v in enumerate(spec.volumes):
        p = f"spec.volumes[{i}].nfs"
        top = next((f for f in shares.fixed if v.local_path == f or v.local_path.startswith(f.rstrip("/") + "/")),
                   None)
        if top is not None:
            raise VolumeError(f"{p}.local_path", f"{v.local_path} lies under {top}, which the sandbox shows read-only "
                              "(no mount point can be made there)")
        host = share_dir(v.server_path, shares.mounted)
        if host is None:
            raise VolumeError(f"{p}.nfs_server_path", f"NFS share {v.server_path} is not mounted on this machine. "
                              "openarts runs without root and does not mount NFS itself: mount the share on the "
                              "host (NFS mounts are found in /proc/self/mountinfo), or declare where it is "
                              "mounted in config.toml [volumes.nfs] (docs/SANDBOX.md)")
        if any(overlaps(host, q) for q in shares.private):
            raise VolumeError(f"{p}.nfs_server_path", f"NFS share {v.server_path} is mounted where this server keeps "
                              "its own files (data directory, config, keys): it cannot be a job's volume")
        out.append(host)
    return out


def volume_mounts(spec: JobSpec, shares: Shares, sandboxed: bool = True) -> tuple[Mount, ...]:
    """The worker's mounts of the job's volumes, each read-only if the volume says so; they go after the
    job's own directories (core/layout.py `Layout.binds`), so that one inside the home lands on top of it.
    StartError when a share is not (any longer) mounted here, or the workers have no sandbox."""
    try:
        dirs = host_dirs(spec, shares, sandboxed)
    except VolumeError as exc:
        raise StartError(f"volume {exc.field}: {exc.why}") from None
    return tuple(Mount(host, v.local_path, read_only=v.read_only, shared=True)
                 for host, v in zip(dirs, spec.volumes, strict=True))
