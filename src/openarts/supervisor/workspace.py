"""A job's directories, arguments and environment: what each worker sees, ModelArts' conventions.

ModelArts puts everything under /home/ma-user/modelarts in a container. The local executor has no
container, so each job gets a root directory and every container path is re-based under it:
`/home/ma-user/modelarts/inputs/data_url_0` becomes `JOB_ROOT/home/ma-user/modelarts/inputs/data_url_0`.
`layout()` is pure; `stage()` and `upload_outputs()` do the copying.
"""

from __future__ import annotations

import json
import os
import posixpath
import shutil
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from openarts.core.errors import PreparationError
from openarts.core.spec import Channel, JobSpec
from openarts.storage.obs import LocalObjectStore

MA_HOME = "/home/ma-user"
MA_MOUNT = f"{MA_HOME}/modelarts"
MA_JOB_DIR = f"{MA_MOUNT}/user-job-dir"


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


def rebase(root: Path, container_path: str) -> Path:
    """A container path under the job root; '..' cannot climb out of it."""
    norm = posixpath.normpath("/" + container_path.lstrip("/"))
    return root / norm.lstrip("/")


def _local_code_dir(code_dir: str) -> Path | None:
    if code_dir.startswith("file://"):
        return Path(code_dir[len("file://"):])
    if code_dir.startswith("/"):
        return Path(code_dir)
    return None


def layout(spec: JobSpec, root: Path) -> Layout:
    home = rebase(root, MA_HOME)
    job_dir = rebase(root, MA_JOB_DIR)
    code: Path | None = None
    in_place = False
    if spec.code_dir:
        local = _local_code_dir(spec.code_dir)
        if local is not None and not spec.request["algorithm"].get("local_code_dir"):
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
                  dirs(spec.inputs, "inputs"), dirs(spec.outputs, "outputs"))


def document_algorithm(spec: JobSpec, lay: Layout) -> dict[str, Any]:
    """The algorithm section as submitted, with the local directories actually used filled in."""
    algo = json.loads(json.dumps(spec.request["algorithm"]))
    for key, dirs in (("inputs", lay.inputs), ("outputs", lay.outputs)):
        for item, d in zip(algo.get(key) or [], dirs, strict=False):
            item["local_dir"] = str(d.local)
    if lay.code is not None:
        algo["local_code_dir"] = str(lay.code)
    algo["working_dir"] = str(lay.cwd)
    env = algo.get("environments")
    if isinstance(env, dict):
        algo["environments"] = [env] if env else []
    return algo


def check_code(spec: JobSpec, store: LocalObjectStore) -> None:
    """Raise PreparationError unless the code directory and boot file exist."""
    if not spec.code_dir:
        return
    local = _local_code_dir(spec.code_dir)
    try:
        src = local if local is not None else store.resolve(spec.code_dir)
    except Exception as exc:
        raise PreparationError(f"Code directory error: {exc}") from exc
    if not src.is_dir():
        raise PreparationError(f"Code directory error: code_dir {spec.code_dir} does not exist.")
    if spec.boot_file and not (src / spec.boot_file).is_file():
        raise PreparationError(
            f"Boot file error: {spec.boot_file} does not exist in code_dir {spec.code_dir}."
        )
    if not Path(spec.engine.python).exists():
        raise PreparationError(f"Engine {spec.engine.engine_id}: interpreter {spec.engine.python} is missing.")


def stage(spec: JobSpec, lay: Layout, store: LocalObjectStore) -> None:
    """Create the directories and copy code and inputs in. Runs off the event loop."""
    check_code(spec, store)
    for path in (lay.home, lay.job_dir, lay.log_dir, lay.root / "cache"):
        path.mkdir(parents=True, exist_ok=True)
    if spec.code_dir and lay.code is not None and not lay.code_in_place:
        local = _local_code_dir(spec.code_dir)
        if lay.code.exists():
            shutil.rmtree(lay.code)
        if local is not None:
            shutil.copytree(local, lay.code, symlinks=True)
        else:
            store.download(spec.code_dir, lay.code)
    for d in lay.inputs:
        try:
            store.download(d.channel.obs_url, d.local)
        except (FileNotFoundError, OSError) as exc:
            raise PreparationError(f"Input {d.channel.name}: cannot download {d.channel.obs_url}: {exc}") from exc
    for d in lay.outputs:
        d.local.mkdir(parents=True, exist_ok=True)
    lay.cwd.mkdir(parents=True, exist_ok=True)


def upload_outputs(lay: Layout, store: LocalObjectStore) -> list[str]:
    """Copy every output channel back to its obs_url; returns one line per channel for the events."""
    lines = []
    for d in lay.outputs:
        try:
            n = store.upload(d.local, d.channel.obs_url)
            lines.append(f"Output {d.channel.name}: uploaded {n} file(s) to {d.channel.obs_url}.")
        except Exception as exc:  # a failed upload is reported, the job's outcome stands
            lines.append(f"Output {d.channel.name}: upload to {d.channel.obs_url} failed: {exc}")
    return lines


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def arguments(spec: JobSpec, lay: Layout) -> list[str]:
    args = [f"--{name}={value}" for name, value in spec.parameters]
    args += [f"--{d.channel.name}={d.local}" for d in lay.inputs]
    args += [f"--{d.channel.name}={d.local}" for d in lay.outputs]
    return args


def argv(spec: JobSpec, lay: Layout) -> list[str]:
    """The worker's argv. A command runs under /bin/sh -c, as ModelArts runs it; the arguments
    follow as "$@", never spliced into the shell string."""
    args = arguments(spec, lay)
    if spec.command:
        # ModelArts appends the arguments to the command; a trailing newline or ';' must not turn them
        # into a command of their own (a trailing '# comment' still swallows them, as it would there)
        script = spec.command.rstrip().rstrip(";").rstrip() + ' "$@"' if args else spec.command
        return ["/bin/sh", "-c", script, "sh", *args]
    assert lay.code is not None and spec.boot_file is not None
    return [spec.engine.python, str(lay.code / spec.boot_file), *args]


def environment(spec: JobSpec, lay: Layout, job_id: str, index: int, ips: list[str], gpus: list[int],
                master_port: int, base: dict[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ if base is None else base)
    for key in [k for k in env if k.startswith("OPENARTS_")]:
        del env[key]
    env.update(spec.environments)
    n = spec.node_count
    vj = f"ma-job-{job_id}"
    env.update({
        "HOME": str(lay.home),
        "MA_HOME": str(lay.home),
        "MA_MOUNT_PATH": str(lay.home / "modelarts"),
        "MA_JOB_DIR": str(lay.job_dir),
        "MA_LOG_DIR": str(lay.log_dir),
        "WORKSPACE": str(lay.code or lay.job_dir),
        "MA_SCRIPT_INTERPRETER": spec.engine.python,
        "MA_CURRENT_IP": ips[index],
        "MA_CURRENT_HOST_IP": ips[index],
        "MA_NUM_GPUS": str(len(gpus)),
        "MA_TASK_NAME": "worker",
        "MA_NUM_HOSTS": str(n),
        "MA_JOB_ID": job_id,
        "MA_JOB_KIND": "job",
        "MA_VJ_NAME": vj,
        "MA_CURRENT_INSTANCE_NAME": f"modelarts-job-{job_id}-worker-{index}",
        "VC_TASK_INDEX": str(index),
        "VC_WORKER_NUM": str(n),
        "VC_WORKER_HOSTS": ",".join(ips),
        "MA_INPUTS": json.dumps([{"name": d.channel.name, "local_dir": str(d.local)} for d in lay.inputs]),
        "MA_OUTPUTS": json.dumps([{"name": d.channel.name, "local_dir": str(d.local)} for d in lay.outputs]),
        "MASTER_ADDR": ips[0],
        "MASTER_PORT": str(master_port),
        "WORLD_SIZE": str(n),
        "RANK": str(index),
        "NNODES": str(n),
        "NODE_RANK": str(index),
        "LOCAL_RANK": "0",
        "NPROC_PER_NODE": str(max(1, len(gpus))),
        "CUDA_VISIBLE_DEVICES": ",".join(str(g) for g in gpus),
        "PYTHONUNBUFFERED": "1",
    })
    return env
