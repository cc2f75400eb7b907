"""Where a job's files are: ModelArts' container paths re-based under the job's root directory. Pure.

ModelArts puts everything under /home/ma-user/modelarts in a container. Each job gets a root directory
and every container path is re-based under it: `/home/ma-user/modelarts/inputs/data_url_0` is kept in
`JOB_ROOT/home/ma-user/modelarts/inputs/data_url_0`. In a sandbox (executors/sandbox.py) those
directories are bound back at their container paths, and the worker's argv, environment and the job
document show the container paths (`Layout.seen`); without one they show the host paths.
`layout()` computes the paths (it creates nothing); supervisor/workspace.py stages and uploads, and the
job document (service/document.py) shows the directories actually used.
"""

from __future__ import annotations

import json
import posixpath
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from openarts.core.channels import Channel
from openarts.core.spec import JobSpec, Role

MA_HOME = "/home/ma-user"
MA_MOUNT = f"{MA_HOME}/modelarts"
MA_JOB_DIR = f"{MA_MOUNT}/user-job-dir"
CACHE = "/cache"  # ModelArts' local disk for scratch data
SUMMARY_DIR = f"{MA_MOUNT}/summary"  # a job's TensorBoard / MindStudio Insight logs (MA_SUMMARY_DIR)


@dataclass(frozen=True)
class ChannelDir:
    channel: Channel
    container_dir: str  # the path as ModelArts would name it
    local: Path  # where it really is


@dataclass(frozen=True)
class Layout:
    root: Path
    home: Path
    job_dir: Path  # MA_JOB_DIR
    code: Path | None  # where code_dir is copied (or the local code_dir itself)
    code_in_place: bool  # a local code_dir is used where it is, not copied
    cwd: Path
    log_dir: Path
    inputs: list[ChannelDir]
    outputs: list[ChannelDir]
    sandboxed: bool = False
    volumes: tuple[str, ...] = ()  # the volumes' local paths (spec.volumes), bound after `binds`
    summary: ChannelDir | None = None  # where the job writes its visualization logs (algorithm.summary)

    @property
    def uploads(self) -> list[ChannelDir]:
        """What goes to the object store: the output channels, and the summary directory if any."""
        return [*self.outputs, *([self.summary] if self.summary else [])]

    def seen(self, path: Path) -> str:
        """`path` as the worker sees it: its container path in a sandbox, else the host path."""
        if not self.sandboxed:
            return str(path)
        return "/" + str(path.relative_to(self.root)) if path != self.root else "/"

    def binds(self, whole_home: bool = True) -> list[tuple[Path, str]]:
        """The host directories a sandbox binds, and where: home (or, for an image, whose own home the
        worker keeps, only its `modelarts` directory), /cache, and any channel, code or working
        directory the job put elsewhere (outermost first, none inside another). A working directory in a
        volume is the volume's own (the spec lets no other directory of the job lie in one)."""
        paths = [MA_HOME if whole_home else MA_MOUNT, CACHE] + [self.seen(p) for p in (
            *(d.local for d in (*self.inputs, *self.outputs)), *([self.code] if self.code else []), self.cwd)]
        paths = [p for p in paths if not any(p == v or p.startswith(v + "/") for v in self.volumes)]
        out: list[str] = []
        for p in sorted(dict.fromkeys(paths), key=len):
            if not any(p == o or p.startswith(o.rstrip("/") + "/") for o in out):
                out.append(p)
        return [(rebase(self.root, p), p) for p in out]


def rebase(root: Path, container_path: str) -> Path:
    """A container path under the job root; '..' cannot climb out of it."""
    norm = posixpath.normpath("/" + container_path.lstrip("/"))
    return root / norm.lstrip("/")


def local_code_dir(code_dir: str) -> Path | None:
    """The directory of a local code_dir (`file://...` or an absolute path); None for obs://."""
    if code_dir.startswith("file://"):
        return Path(code_dir[len("file://"):])
    if code_dir.startswith("/"):
        return Path(code_dir)
    return None


def layout(spec: JobSpec, root: Path, sandboxed: bool = False) -> Layout:
    """Without a sandbox a local code_dir is used where it is; a sandboxed worker gets a copy."""
    home = rebase(root, MA_HOME)
    job_dir = rebase(root, MA_JOB_DIR)
    code: Path | None = None
    in_place = False
    if spec.code_dir:
        local = local_code_dir(spec.code_dir)
        if local is not None and not sandboxed and not spec.request["algorithm"].get("local_code_dir"):
            code, in_place = local, True
        else:
            base = posixpath.basename(spec.code_dir.rstrip("/")) or "code"
            lcd = spec.request["algorithm"].get("local_code_dir")
            code = rebase(root, lcd) if lcd else job_dir / base

    def dirs(channels: list[Channel], kind: str) -> list[ChannelDir]:
        return [
            ChannelDir(c, c.local_dir or f"{MA_MOUNT}/{kind}/{c.name}_{c.index}",
                       rebase(root, c.local_dir or f"{MA_MOUNT}/{kind}/{c.name}_{c.index}"))
            for c in channels
        ]

    cwd = rebase(root, spec.working_dir) if spec.working_dir else (code or job_dir)
    return Layout(root, home, job_dir, code, in_place, cwd, rebase(root, f"{MA_MOUNT}/log"),
                  dirs(spec.inputs, "inputs"), dirs(spec.outputs, "outputs"), sandboxed,
                  tuple(v.local_path for v in spec.volumes),
                  ChannelDir(spec.summary, SUMMARY_DIR, rebase(root, SUMMARY_DIR)) if spec.summary else None)


ROLES_DIR = "roles"  # a heterogeneous job's roles' roots, under the job's own directory


def role_layouts(spec: JobSpec, root: Path, sandboxed: bool = False) -> list[tuple[Role, Layout]]:
    """Each role's layout. A plain job's one role is the job; each role of a heterogeneous job is a
    container of its own on ModelArts, so its paths are re-based under a root of its own
    (`root/roles/<role>`): two roles may use the same container path for different data."""
    if not spec.roles:
        return [(spec.role_list()[0], layout(spec, root, sandboxed))]
    return [(r, layout(r.spec, root / ROLES_DIR / r.name, sandboxed)) for r in spec.roles]


def document_algorithm(spec: JobSpec, lay: Layout) -> dict[str, Any]:
    """The algorithm section as submitted, with the local directories actually used filled in."""
    algo = json.loads(json.dumps(spec.request["algorithm"]))
    for key, dirs in (("inputs", lay.inputs), ("outputs", lay.outputs)):
        for item, d in zip(algo.get(key) or [], dirs, strict=False):
            item["local_dir"] = lay.seen(d.local)
    if lay.code is not None:
        algo["local_code_dir"] = lay.seen(lay.code)
    algo["working_dir"] = lay.seen(lay.cwd)
    env = algo.get("environments")
    if isinstance(env, dict):
        algo["environments"] = [env] if env else []
    return algo
