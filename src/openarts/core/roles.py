"""A job's roles and task names. Pure.

A plain job (`spec`) has one role, `worker`, of spec.resource.node_count tasks: worker-0, worker-1, ...
A heterogeneous job (`tasks[]`, docs/HETEROGENEOUS.md) has one role per entry, each with its own
algorithm and task_resource; its tasks are numbered per role, in the order the roles are given:
learner-0, actor-0, actor-1. A task's index in the job (the store's tasks.idx) counts across roles.

`Shape` is what the scheduler and the capacity count need of a role (its flavor and task count); the
store keeps a heterogeneous job's shapes in jobs.roles (`encode`), '' for a plain job, so that neither
parses the job's request. `role_bodies` turns a `tasks[]` body into one plain job body per role, which
core/spec.py parses as it parses any job.
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from openarts.core import errors

WORKER = "worker"  # a plain job's one role
ROLE_RE = re.compile(r"[a-z](?:[a-z0-9]|[-_](?=[a-z0-9])){0,31}")  # lower case, as a host name part
TASK_RE = re.compile(r"([a-z][a-z0-9_-]{0,31})-(0|[1-9][0-9]{0,5})")  # ASCII digits only
MAX_ROLES = 16
# what a role's algorithm may hold (the SDK's TaskAlgorithm, and `command` and `parameters` as a plain
# job's algorithm has them); anything else a plain job's algorithm knows does not apply to a role
ROLE_ALGORITHM_KEYS = ("code_dir", "boot_file", "command", "engine", "inputs", "outputs", "local_code_dir",
                       "working_dir", "environments", "parameters", "job_config")
JOB_CONFIG_KEYS = ("parameters", "inputs", "outputs", "engine")


@dataclass(frozen=True)
class Shape:
    role: str
    flavor_id: str
    count: int


def shapes(roles: str, flavor_id: str, node_count: int) -> tuple[Shape, ...]:
    """A job's roles from its row: jobs.roles, or the one `worker` role of a plain job."""
    if not roles:
        return (Shape(WORKER, flavor_id, node_count),)
    return tuple(Shape(str(r), str(f), int(n)) for r, f, n in json.loads(roles))


def encode(roles: Sequence[Shape]) -> str:
    return json.dumps([[s.role, s.flavor_id, s.count] for s in roles], separators=(",", ":"))


def task_names(roles: Sequence[Shape]) -> list[str]:
    return [f"{s.role}-{i}" for s in roles for i in range(s.count)]


def role_of(task: str) -> str:
    """The role a task's name names: actor for actor-1 (whether the job has it is `task_index`'s)."""
    return task.rsplit("-", 1)[0]


def task_index(roles: Sequence[Shape], task: str) -> int | None:
    """The index in the job of task `task` (e.g. actor-1), or None if the job has no such task."""
    m = TASK_RE.fullmatch(task)
    if m is None:
        return None
    first = 0
    for s in roles:
        if s.role == m.group(1):
            n = int(m.group(2))
            return first + n if n < s.count else None
        first += s.count
    return None


def shape_at(roles: Sequence[Shape], index: int) -> tuple[Shape, int]:
    """The role of the job's task `index`, and the task's number in it."""
    for s in roles:
        if index < s.count:
            return s, index
        index -= s.count
    raise IndexError("no such task")


def env_name(role: str) -> str:
    """A role's part of an environment variable's name (Volcano's VC_<ROLE>_HOSTS): ps-0 -> PS_0."""
    return re.sub(r"[^A-Z0-9]", "_", role.upper())


def _bad(path: str, why: str) -> errors.InvalidRequest:
    return errors.InvalidRequest(f"Invalid parameter {path}: {why}.")


def role_bodies(body: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """Each role of a `tasks[]` body as a plain job body: the job's metadata, the role's algorithm
    (job_config's parameters, inputs, outputs and engine taken where the algorithm does not give them)
    and its task_resource as spec.resource. Raises InvalidRequest naming the field."""
    tasks = body.get("tasks")
    if not isinstance(tasks, list) or not tasks:
        raise _bad("tasks", "must be a non-empty array")
    if len(tasks) > MAX_ROLES:
        raise _bad("tasks", f"at most {MAX_ROLES} roles are allowed")
    if body.get("kind", "job") not in ("job", None, ""):
        raise _bad("kind", "a heterogeneous job (tasks) is of kind 'job'")
    metadata = body.get("metadata")
    out: list[tuple[str, dict[str, Any]]] = []
    for i, task in enumerate(tasks):
        p = f"tasks[{i}]"
        if not isinstance(task, dict):
            raise _bad(p, "must be an object")
        role = task.get("role")
        if not isinstance(role, str) or not ROLE_RE.fullmatch(role):
            raise _bad(f"{p}.role", "use 1 to 32 lower-case letters, digits, '-' and '_', starting with a letter "
                       "(task names are <role>-0, <role>-1, ...)")
        if any(role == r for r, _ in out):
            raise _bad(f"{p}.role", f"role {role!r} is given twice: each role is one entry of tasks")
        same = next((r for r, _ in out if env_name(r) == env_name(role)), None)
        if same is not None:
            raise _bad(f"{p}.role", f"role {role!r} and role {same!r} would share VC_{env_name(role)}_HOSTS; "
                       "name them apart by more than '-' and '_'")
        algorithm = task.get("algorithm")
        if not isinstance(algorithm, dict):
            raise _bad(f"{p}.algorithm", "it is required, as an object")
        other = sorted(k for k, v in algorithm.items() if k not in ROLE_ALGORITHM_KEYS and v not in (None, ""))
        if other:
            raise _bad(f"{p}.algorithm.{other[0]}", "a role's algorithm takes only "
                       + ", ".join(k for k in ROLE_ALGORITHM_KEYS))
        algo = {k: copy.deepcopy(v) for k, v in algorithm.items() if k != "job_config"}
        job_config = algorithm.get("job_config") or {}
        if not isinstance(job_config, dict):
            raise _bad(f"{p}.algorithm.job_config", "must be an object")
        for key in JOB_CONFIG_KEYS:
            if job_config.get(key) in (None, [], {}):
                continue
            if algo.get(key) not in (None, [], {}):
                raise _bad(f"{p}.algorithm.job_config.{key}", f"{p}.algorithm.{key} is given too: use one of them")
            algo[key] = copy.deepcopy(job_config[key])
        resource = task.get("task_resource")
        if not isinstance(resource, dict):
            raise _bad(f"{p}.task_resource", "it is required, as an object")
        spec: dict[str, Any] = {"resource": copy.deepcopy(resource)}
        if task.get("log_export_path") is not None:
            spec["log_export_path"] = copy.deepcopy(task["log_export_path"])
        out.append((role, {"kind": "job", "metadata": copy.deepcopy(metadata), "algorithm": algo, "spec": spec}))
    return out


def task_entry(role: str, request: dict[str, Any]) -> dict[str, Any]:
    """A role's parsed (normalised) plain body back in its `tasks[]` form, as the store keeps it."""
    entry: dict[str, Any] = {"role": role, "algorithm": request["algorithm"],
                             "task_resource": request["spec"]["resource"]}
    if request["spec"].get("log_export_path"):
        entry["log_export_path"] = request["spec"]["log_export_path"]
    return entry


# a field path where messages name one: at the start, or after "parameter ", "path " or ": " (never inside a
# quoted value)
_PATHS = re.compile(r"(?:^|(?<=parameter )|(?<=path )|(?<=: ))"
                    r"(algorithm\.|algorithm\b|spec\.resource\b|spec\.log_export_path\b)")


def repath(exc: errors.OpenartsError, index: int) -> errors.OpenartsError:
    """An error from parsing role `index`'s plain body, its field paths as the `tasks[]` body has them."""
    p = f"tasks[{index}]"
    names = {"spec.resource": f"{p}.task_resource", "spec.log_export_path": f"{p}.log_export_path"}
    message = _PATHS.sub(lambda m: names.get(m.group(1), f"{p}.{m.group(1)}"), exc.message)
    if message == exc.message and "metadata" not in message and "annotation" not in message.lower():
        message = f"{p}: {message}"
    return type(exc)(message)
