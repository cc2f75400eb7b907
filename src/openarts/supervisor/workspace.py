"""A job's directories, arguments and environment: what each worker sees, ModelArts' conventions.

The paths themselves are computed in core/layout.py (pure; re-exported here); this module creates the
directories, stages code and inputs (`stage()`), uploads outputs (`upload_outputs()`) and builds each
worker's argv and environment.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import threading
import uuid
from dataclasses import dataclass
from pathlib import Path

from openarts.core.errors import OpenartsError, PreparationError
from openarts.core.layout import (  # noqa: F401  (re-exported: the layout's home is core/layout.py)
    MA_HOME,
    MA_JOB_DIR,
    MA_MOUNT,
    SUMMARY_DIR,
    ChannelDir,
    Layout,
    document_algorithm,
    layout,
    local_code_dir,
    rebase,
    role_layouts,
)
from openarts.core.roles import env_name
from openarts.core.spec import JobSpec
from openarts.executors.sandbox import reserved_path
from openarts.storage.cache import CachedInputs, StagingCache
from openarts.storage.obs import Manifest, ObjectStore
from openarts.supervisor.transfers import Note


@dataclass(frozen=True)
class CodeRules:
    """Where a local code_dir may come from. The server (often root) copies it into the job, so it must
    not be, hold or lie in the server's own files (`private`); in a sandbox it must lie in one of
    `roots` (`[server] sandbox_read_only`: what workers may read anyway), or a job could copy in any
    file of the machine. `roots` None: anywhere but `private` (no sandbox: the job could read it all)."""

    private: tuple[Path, ...] = ()
    roots: tuple[Path, ...] | None = None


def check_code(spec: JobSpec, store: ObjectStore, rules: CodeRules = CodeRules()) -> None:
    """Raise PreparationError unless the code directory and boot file exist, where `rules` allow."""
    if not spec.code_dir:
        return
    local = local_code_dir(spec.code_dir)
    if local is not None:
        real = Path(os.path.realpath(local))
        for p in rules.private:
            if real.is_relative_to(p) or p.is_relative_to(real):
                raise PreparationError(f"Code directory error: code_dir {spec.code_dir} is, or holds, "
                                       "the server's own files.")
        if rules.roots is not None and not any(real.is_relative_to(r) for r in rules.roots):
            raise PreparationError(
                f"Code directory error: code_dir {spec.code_dir}: in the sandbox a local code_dir must lie in a "
                "directory of [server] sandbox_read_only (docs/SANDBOX.md); or use obs://.")
    try:
        if local is not None:
            is_dir, has_boot = local.is_dir(), not spec.boot_file or (local / spec.boot_file).is_file()
        else:
            is_dir = store.is_dir(spec.code_dir)
            has_boot = not spec.boot_file or store.is_file(spec.code_dir.rstrip("/") + "/" + spec.boot_file)
    except (OpenartsError, OSError) as exc:
        raise PreparationError(f"Code directory error: {getattr(exc, 'message', exc)}") from exc
    if not is_dir:
        raise PreparationError(f"Code directory error: code_dir {spec.code_dir} does not exist.")
    if not has_boot:
        raise PreparationError(
            f"Boot file error: {spec.boot_file} does not exist in code_dir {spec.code_dir}."
        )
    if not spec.image and not Path(spec.engine.python).exists():
        raise PreparationError(f"Engine {spec.engine.engine_id}: interpreter {spec.engine.python} is missing.")


def _copies_code(spec: JobSpec, lay: Layout) -> bool:
    """Whether staging copies code_dir into the job's code directory (a local one may be used in place)."""
    return bool(spec.code_dir and lay.code is not None and not lay.code_in_place)


def fetches(spec: JobSpec, lay: Layout) -> bool:
    """Whether staging copies anything (code or inputs), or only makes the job's directories."""
    return bool(lay.inputs) or _copies_code(spec, lay)


def stage(spec: JobSpec, lay: Layout, store: ObjectStore, rules: CodeRules = CodeRules(),
          cancel: threading.Event | None = None, cache: StagingCache | None = None, scope: str = "",
          cached: list[CachedInputs] | None = None) -> list[str]:
    """Create the directories and copy code and inputs in; a line per channel for the job's events.
    Runs in a background transfer (supervisor/transfers.py); stops at the next file once `cancel` is set.
    Inputs come through `cache` (storage/cache.py: the entries of project `scope`) when there is one, and
    each such directory is added to `cached` (for the nodes' own caches: executors/ray.py); code is always
    copied (jobs write next to their code)."""
    check_code(spec, store, rules)
    lines = []
    if lay.sandboxed:
        for _, inside in lay.binds():
            top = reserved_path(inside)
            if top is not None:
                raise PreparationError(f"Directory {inside}: in the sandbox a job's directories cannot lie under "
                                       f"{top} (the system's own, read-only).")
    for path in (lay.home, lay.job_dir, lay.log_dir, lay.root / "cache"):
        real_dir(lay.root, path)
    if _copies_code(spec, lay):
        assert spec.code_dir and lay.code is not None
        local = local_code_dir(spec.code_dir)
        real_dir(lay.root, lay.code.parent)
        if lay.code.is_symlink():
            lay.code.unlink()
        elif lay.code.exists():
            shutil.rmtree(lay.code)
        if local is not None:
            # from the path that was checked; in a sandbox without what other users may not read (the
            # sandbox hides such files where workers see them; the server, often root, must not copy them in)
            shutil.copytree(os.path.realpath(local), lay.code, symlinks=True,
                            ignore=_unreadable if lay.sandboxed else None)
        else:
            try:
                n = store.download(spec.code_dir, lay.code, cancel)
            except OSError as exc:
                raise PreparationError(f"Code directory error: cannot download {spec.code_dir}: {exc}") from exc
            lines.append(f"Code: {n} file(s) from {spec.code_dir}.")
    for d in lay.inputs:
        # a fresh copy every time: an earlier attempt may have planted links inside (inputs/x/sub -> /etc)
        real_dir(lay.root, d.local)
        shutil.rmtree(d.local)  # does not follow links
        d.local.mkdir()
        try:
            if cache is not None:
                staged = cache.stage(store, d.channel.obs_url, d.local, scope, cancel)
                lines.append(staged.line(d.channel.name, d.channel.obs_url))
                if cached is not None:
                    cached.append(CachedInputs(str(d.local), d.channel.obs_url, scope, cache.store_id, staged.objects))
            else:
                n = store.download(d.channel.obs_url, d.local, cancel)
                lines.append(f"Input {d.channel.name}: {n} file(s) from {d.channel.obs_url}.")
        except OSError as exc:
            raise PreparationError(f"Input {d.channel.name}: cannot download {d.channel.obs_url}: {exc}") from exc
    for d in lay.uploads:
        real_dir(lay.root, d.local)
    real_dir(lay.root, lay.cwd)
    return lines


def _unreadable(directory: str, names: list[str]) -> set[str]:
    """copytree's `ignore`: the entries other users may not read."""
    skip = set()
    for name in names:
        try:
            if not os.lstat(os.path.join(directory, name)).st_mode & stat.S_IROTH:
                skip.add(name)
        except OSError:
            skip.add(name)
    return skip


def first_link(root: Path, path: Path) -> Path | None:
    """The first component of `path` below `root` that is a symbolic link, if any."""
    current = root
    for part in path.relative_to(root).parts:
        current = current / part
        if current.is_symlink():
            return current
    return None


def real_dir(root: Path, path: Path) -> None:
    """Make `path` a real directory under `root`, none of its components a symbolic link. A job's
    directories are the job's to change: one that made `inputs/data_url_0` a link to /etc must not have
    the server (often root) copy its data there when it stages the job again. A link found on the way
    is removed (it is the job's own, in the job's own directory) and a directory made in its place."""
    if not path.is_relative_to(root):
        raise PreparationError(f"Directory {path} is outside the job's directory.")
    root.mkdir(parents=True, exist_ok=True)  # the server's own
    current = root
    for part in path.relative_to(root).parts:
        current = current / part
        if current.is_symlink():
            current.unlink()
        if not current.is_dir():
            current.mkdir()


def periodic(d: ChannelDir) -> bool:
    """Whether an output is uploaded while the job runs (ModelArts' default mode), not only at its end."""
    return d.channel.mode != "upload_on_exit"


FINAL_RETRY_SECONDS = (5.0, 20.0)  # an end's upload that failed is tried again after these waits


def upload_outputs(lay: Layout, store: ObjectStore, sent: dict[str, Manifest] | None = None,
                   cancel: threading.Event | None = None, only_periodic: bool = False,
                   retry_seconds: tuple[float, ...] = ()) -> list[Note]:
    """Copy every output channel back to its obs_url; returns one line per channel for the events.
    With `sent` (a manifest per channel, kept by the caller), only what changed since the last upload
    is sent. A channel that fails is tried again after each of `retry_seconds` (only what it has not
    sent yet); a failure that remains is a line that says so: the job's outcome stands."""
    lines = []
    for d in lay.uploads:
        if only_periodic and not periodic(d):
            continue
        link = first_link(lay.root, d.local)
        if link is not None:
            lines.append(Note(f"{_what(d)}: not uploaded: {lay.seen(link)} is a symbolic link.", failed=True))
            continue
        manifest = None if sent is None else sent.setdefault(str(d.local), {})
        for tries, wait in enumerate((*retry_seconds, None), start=1):
            try:
                n = store.upload(d.local, d.channel.obs_url, manifest, cancel)
                what = "changed file(s)" if manifest is not None else "file(s)"
                lines.append(Note(f"{_what(d)}: uploaded {n} {what} to {d.channel.obs_url}"
                                  + (f" (at try {tries})." if tries > 1 else ".")))
                break
            except Exception as exc:  # a failed upload is reported, the job's outcome stands
                if wait is None or (cancel is not None and cancel.is_set()):
                    after = f" after {tries} tries" if tries > 1 else ""
                    lines.append(Note(f"{_what(d)}: upload to {d.channel.obs_url} failed{after}: {exc}", failed=True))
                    break
                (cancel or threading.Event()).wait(wait)
    return lines


def _what(d: ChannelDir) -> str:
    return "Summary" if d.container_dir == SUMMARY_DIR else \
        f"Output {d.channel.name}"


def export_logs(logs: dict[str, Path], url: str, store: ObjectStore, work: Path) -> Note:
    """Upload the server's copies of task logs under `url`, each under its name; one line for the
    events. (Linked, not copied, into a directory under `work`, on the logs' filesystem, for the upload.)"""
    present = {name: path for name, path in logs.items() if path.is_file()}
    if not present:
        return Note(f"Logs not exported to {url}: no task wrote a log.", failed=True)
    staging = work / f".export-{uuid.uuid4().hex[:8]}"
    try:
        staging.mkdir()
        for name, path in present.items():
            os.link(path, staging / name)
        n = store.upload(staging, url)
        return Note(f"Logs exported: {n} file(s) to {url}.")
    except Exception as exc:  # reported, the job's outcome stands
        return Note(f"Logs not exported to {url}: {exc}", failed=True)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def arguments(spec: JobSpec, lay: Layout) -> list[str]:
    args = [f"--{name}={value}" for name, value in spec.parameters]
    args += [f"--{d.channel.name}={lay.seen(d.local)}" for d in lay.inputs]
    args += [f"--{d.channel.name}={lay.seen(d.local)}" for d in lay.outputs]
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
    return [spec.engine.python, lay.seen(lay.code / spec.boot_file), *args]


# Thread-pool sizes that the usual numeric libraries read at start-up: OpenMP (PyTorch's intra-op pool
# among them), MKL, OpenBLAS, BLIS, Apple Accelerate, numexpr. Set to the flavor's vCPUs unless the
# job's own environment sets them, so a 1-vCPU worker does not start one thread per core of the machine.
THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "BLIS_NUM_THREADS",
                    "VECLIB_MAXIMUM_THREADS", "NUMEXPR_NUM_THREADS")


def thread_variables(threads: int, job_env: dict[str, str]) -> dict[str, str]:
    """The thread-count variables for a worker with `threads` vCPUs, less those the job sets itself."""
    return {name: str(threads) for name in THREAD_VARIABLES if name not in job_env}


# What a sandboxed worker keeps of the server's environment (an image's worker keeps none: the image's own
# environment is its base, executors/local.py).
KEPT_VARIABLES = ("PATH", "LANG", "LANGUAGE", "TZ", "TERM")


def base_environment(sandboxed: bool, image: bool) -> dict[str, str]:
    if image:
        return {}
    if not sandboxed:
        return dict(os.environ)
    env = {k: v for k, v in os.environ.items() if k in KEPT_VARIABLES or k.startswith("LC_")}
    return {**env, "USER": "ma-user", "LOGNAME": "ma-user"}


def environment(job: JobSpec, lay: Layout, job_id: str, index: int, ips: list[str], gpus: list[int],
                master_port: int, base: dict[str, str] | None = None, node: str = "") -> dict[str, str]:
    """The environment of the job's task `index` (`lay`: its role's layout). None of the server's OPENARTS_*
    variables (a master key may be one); OPENARTS_NODE names the node the worker runs on. Per role, as
    Volcano sets them for each task of a job: MA_TASK_NAME, VC_TASK_INDEX (the task's number in its
    role), MA_NUM_HOSTS, and VC_<ROLE>_HOSTS / VC_<ROLE>_NUM of every role; the rendezvous variables
    (MASTER_ADDR: the job's first task, RANK, WORLD_SIZE) count every task of the job."""
    role = job.role_at(index)
    spec = role.spec
    rank = index - role.first
    env = dict(os.environ if base is None else base)
    for key in [k for k in env if k.startswith("OPENARTS_")]:
        del env[key]
    if node:
        env["OPENARTS_NODE"] = node
    env.update(thread_variables(spec.flavor.threads, spec.environments))
    env.update(spec.environments)
    n = job.node_count
    vj = f"ma-job-{job_id}"
    for r in job.role_list():
        env[f"VC_{env_name(r.name)}_HOSTS"] = ",".join(ips[r.first:r.first + r.spec.node_count])
        env[f"VC_{env_name(r.name)}_NUM"] = str(r.spec.node_count)
    env.update({
        "HOME": lay.seen(lay.home),
        "MA_HOME": lay.seen(lay.home),
        "MA_MOUNT_PATH": lay.seen(lay.home / "modelarts"),
        "MA_JOB_DIR": lay.seen(lay.job_dir),
        "MA_LOG_DIR": lay.seen(lay.log_dir),
        "WORKSPACE": lay.seen(lay.code or lay.job_dir),
        "MA_SCRIPT_INTERPRETER": spec.engine.python,
        "MA_CURRENT_IP": ips[index],
        "MA_CURRENT_HOST_IP": ips[index],
        "MA_NUM_GPUS": str(len(gpus)),
        "MA_TASK_NAME": role.name,
        "MA_NUM_HOSTS": str(spec.node_count),
        "MA_JOB_ID": job_id,
        "MA_JOB_KIND": "job",
        "MA_VJ_NAME": vj,
        "MA_CURRENT_INSTANCE_NAME": f"modelarts-job-{job_id}-{role.name}-{rank}",
        "VC_TASK_INDEX": str(rank),
        "MA_INPUTS": json.dumps([{"name": d.channel.name, "local_dir": lay.seen(d.local)} for d in lay.inputs]),
        "MA_OUTPUTS": json.dumps([{"name": d.channel.name, "local_dir": lay.seen(d.local)} for d in lay.outputs]),
        **({"MA_SUMMARY_DIR": lay.seen(lay.summary.local)} if lay.summary else {}),
        "MASTER_ADDR": ips[0],
        "MASTER_PORT": str(master_port),
        "WORLD_SIZE": str(n),
        "RANK": str(index),
        "NNODES": str(n),
        "NODE_RANK": str(index),
        "LOCAL_RANK": "0",
        "NPROC_PER_NODE": str(max(1, len(gpus))),
        # in a sandbox only the assigned GPUs' device nodes exist: CUDA numbers them from 0
        "CUDA_VISIBLE_DEVICES": ",".join(str(i) if lay.sandboxed else str(g) for i, g in enumerate(gpus)),
        "PYTHONUNBUFFERED": "1",
    })
    return env
