"""The job spec: validate a ModelArts create body and normalise it into what the executor needs.

`parse_job(body, catalog)` raises a domain error (core/errors.py) naming the offending field, or
returns a `JobSpec`. The normalised body (`JobSpec.request`) is what the store keeps; parsing it again
later gives the same spec, unless the catalog changed (then preparation fails: Abnormal/CreateFailed).
At create, `datasets` (the registry, `Catalog.datasets`) resolves inputs' `remote.dataset{id, version_id}`
to an obs_url, written into the normalised body; a stored body is parsed without it and keeps its URL.
"""

from __future__ import annotations

import dataclasses
import posixpath
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from openarts.core import arglimits, errors, faults
from openarts.core.channels import Channel, check_obs_url, parse_channels
from openarts.core.experiments import ExperimentRef, parse_reference
from openarts.core.fields import (
    array,
    bad,
    container_path,
    integer,
    item_name,
    obj,
    scalar_text,
    text,
)
from openarts.core.inputs import check_description
from openarts.core.resources import DEFAULT_POOL, Catalog, Dataset, Engine, Flavor
from openarts.core.roles import WORKER, Shape, repath, role_bodies, task_entry
from openarts.core.roles import task_names as names_of
from openarts.core.search import SEARCH_KIND, Reward, SearchSpec, parse_metrics, parse_search
from openarts.core.volumes import JOB_DIRS, MA_HOME, Volume, nfs_path, overlaps

NAME_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
ENV_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")  # portable: /bin/sh drops other names
MAX_ENVIRONMENTS = 100
MAX_PARAMETERS = 500
MAX_VOLUMES = 100



@dataclass(frozen=True)
class JobSpec:
    name: str
    description: str
    workspace_id: str
    annotations: dict[str, str]
    command: str | None
    code_dir: str | None
    boot_file: str | None  # relative to code_dir
    engine: Engine
    image: str | None  # a custom image (engine.image_url, or the engine's own image)
    parameters: list[tuple[str, str]]
    inputs: list[Channel]
    outputs: list[Channel]
    environments: dict[str, str]
    working_dir: str | None
    flavor: Flavor
    node_count: int
    pool_id: str
    priority: int
    preemptible: bool
    affinity: tuple[str, int] | None  # (node label, group size): hyperinstance / cabinet
    auto_stop_seconds: int | None
    request: dict[str, Any] = field(repr=False)  # the normalised body, as stored
    log_export_url: str | None = None  # spec.log_export_path.obs_url: every attempt's task logs go there
    volumes: tuple[Volume, ...] = ()  # spec.volumes: NFS shares bound at their local_path (core/volumes.py)
    summary: Channel | None = None  # algorithm.summary.log_dir.pfs.pfs_path: synced like a periodic output
    search: SearchSpec | None = None  # kind autosearch_job: its algorithm.policies.auto_search
    # read from its tasks' logs by regex: a plain job's custom metrics (auto_search.reward_attrs alone), a
    # search's rewards (docs/AUTOSEARCH.md)
    metrics: tuple[Reward, ...] = ()
    # metadata.training_experiment_reference: its shape only; the service finds (or makes) the experiment
    experiment: ExperimentRef | None = None
    # a heterogeneous job's roles (tasks[]), each its own spec; () for a plain job, which is its one
    # role. Its own fields are then its first role's, but node_count (all its tasks) and request
    roles: tuple[Role, ...] = ()

    @property
    def kind(self) -> str:
        return SEARCH_KIND if self.search is not None else "job"

    def role_list(self) -> tuple[Role, ...]:
        """The job's roles in task order: a plain job is one, `worker`."""
        return self.roles or (Role(WORKER, self, 0),)

    def shapes(self) -> tuple[Shape, ...]:
        return tuple(Shape(r.name, r.spec.flavor.flavor_id, r.spec.node_count) for r in self.role_list())

    def task_names(self) -> list[str]:
        return names_of(self.shapes())

    def role_at(self, index: int) -> Role:
        """The role of the job's task `index`."""
        return next(r for r in reversed(self.role_list()) if r.first <= index)


@dataclass(frozen=True)
class Role:
    name: str
    spec: JobSpec  # the role as a plain job: its algorithm, flavor and node_count
    first: int  # the job's index of its first task


def exported_log_name(job_id: str, task: str, seq: int) -> str:
    """The name a task's log of attempt `seq` is exported under: `modelarts-job-<job id>-<task>-attempt-<n>.log`."""
    return f"modelarts-job-{job_id}-{task}-attempt-{seq}.log"


def exported_log_url(log_export_url: str, job_id: str, task: str, seq: int) -> str:
    """The object a task's log of attempt `seq` is exported to under spec.log_export_path.obs_url."""
    return f"{log_export_url.rstrip('/')}/{exported_log_name(job_id, task, seq)}"




def check_code(command: str | None, code_dir: str | None, boot_file: str | None, where: str) -> None:
    """What a job runs (`where`: algorithm, or an algorithm's job_config): a command, or a boot file in a
    code directory that is obs://, file:// or an absolute path."""
    if boot_file and not code_dir:
        raise errors.CodeDirError(f"Code directory error: {where}.boot_file needs {where}.code_dir.")
    if not command and not boot_file:
        raise errors.CommandRequired(f"{where} needs either command, or code_dir and boot_file.")
    if code_dir:
        if code_dir.startswith("obs://"):
            check_obs_url(code_dir, f"{where}.code_dir")
        elif not (code_dir.startswith("/") or code_dir.startswith("file://")):
            raise errors.CodeDirError(
                f"Code directory error: {where}.code_dir {code_dir!r} must be obs://, file:// or an absolute path.")


def _split_boot_file(code_dir: str, boot_file: str) -> str:
    """boot_file relative to code_dir; ModelArts accepts it either full or relative."""
    base = code_dir.rstrip("/") + "/"
    rel = boot_file[len(base):] if boot_file.startswith(base) else boot_file
    if rel.startswith("/") or "://" in rel:
        raise errors.BootFileError(f"Boot file {boot_file!r} is not inside code_dir {code_dir!r}.")
    if any(seg == ".." for seg in rel.split("/")) or not rel:
        raise errors.BootFileError(f"Boot file {boot_file!r} must name a file inside code_dir.")
    return rel


AFFINITY_LABELS = {"hyperinstance": "hyperinstance", "cabinet": "cabinet"}
TIME_UNITS = {"SECONDS": 1, "MINUTES": 60, "HOURS": 3600, "DAYS": 86400}


def _affinity(req: dict[str, Any], node_count: int) -> tuple[str, int] | None:
    if not req:
        return None
    path = "spec.schedule_policy.required_affinity"
    kind = text(req, "affinity_type", path, required=True, limit=32)
    if kind not in AFFINITY_LABELS:
        raise bad(f"{path}.affinity_type", f"use one of {sorted(AFFINITY_LABELS)}")
    size = integer(req, "affinity_group_size", path, 1, 1, 10**6)
    if node_count % size:
        raise bad(f"{path}.affinity_group_size", f"node_count {node_count} is not a multiple of {size}")
    return AFFINITY_LABELS[kind], size


def _volumes(spec: dict[str, Any], taken: list[tuple[str, str]]) -> tuple[Volume, ...]:
    """spec.volumes: NFS shares only, each `host:/path` at its own `local_path`, apart from the job's own
    directories (`taken`: field, container path; JOB_DIRS) and from each other. Whether the machine has
    the share mounted is the service's check (executors/volumes.py), not the spec's."""
    if spec.get("volumes") is None:
        spec.pop("volumes", None)  # null is absent
        return ()
    out: list[Volume] = []
    for i, item in enumerate(array(spec, "volumes", "spec", MAX_VOLUMES)):
        p = f"spec.volumes[{i}]"
        if not isinstance(item, dict):
            raise bad(p, "must be an object")
        other = sorted(k for k, v in item.items() if k != "nfs" and v is not None)
        if other:
            raise bad(f"{p}.{other[0]}", "only nfs volumes are supported (as ModelArts' v2 API creates them): "
                       "nfs{nfs_server_path, local_path, read_only}; use an input channel for OBS data")
        nfs = obj(item, "nfs", p, required=True)
        server = text(nfs, "nfs_server_path", f"{p}.nfs", required=True, limit=1024)
        if server is None or nfs_path(server) is None:
            raise bad(f"{p}.nfs.nfs_server_path", "must be host:/path, e.g. 10.10.10.10:/example/path, "
                       "without '..' segments")
        given = container_path(nfs, "local_path", f"{p}.nfs")
        if given is None:
            raise bad(f"{p}.nfs.local_path", "it is required")
        local = "/" + posixpath.normpath(given).lstrip("/")  # (normpath keeps a leading //)
        read_only = nfs.get("read_only", False)
        if not isinstance(read_only, bool | None):
            raise bad(f"{p}.nfs.read_only", "must be a boolean")
        where = f"{p}.nfs.local_path"
        if overlaps(local, MA_HOME) and not local.startswith(MA_HOME + "/"):
            raise bad(where, f"must not be {MA_HOME} or a directory above it (the job's home); a directory "
                       f"inside it, such as {MA_HOME}/work, is fine")
        for d in JOB_DIRS:
            if overlaps(local, d):
                raise bad(where, f"must not be, hold or lie in {d} (the job's own directory)")
        for name, path in [*taken, *((f"spec.volumes[{j}].nfs.local_path", v.local_path) for j, v in enumerate(out))]:
            if overlaps(local, path):
                raise bad(where, f"overlaps {name} ({path}): each needs a directory of its own")
        out.append(Volume(server, local, bool(read_only)))
    return tuple(out)


def _auto_stop(req: dict[str, Any]) -> int | None:
    if not req:
        return None
    unit = (text(req, "time_unit", "spec.auto_stop", required=True, limit=16) or "").upper()
    if unit not in TIME_UNITS:
        raise bad("spec.auto_stop.time_unit", f"use one of {sorted(TIME_UNITS)}")
    return integer(req, "duration", "spec.auto_stop", 1, 1, 10**7) * TIME_UNITS[unit]


def parse_job(body: Any, catalog: Catalog, datasets: Mapping[str, Dataset] | None = None) -> JobSpec:
    if not isinstance(body, dict):
        raise errors.InvalidJsonBody("The request body must be a JSON object.")
    kind = body.get("kind", "job") or "job"
    if kind not in ("job", SEARCH_KIND):
        raise bad("kind", f"{kind!r} is not supported; use 'job', or {SEARCH_KIND!r} for a hyperparameter "
                   "search")
    if body.get("tasks") is not None and body.get("spec") is not None:
        raise bad("tasks", "use either spec or tasks, not both")
    if body.get("tasks") is not None:
        return _heterogeneous(body, catalog, datasets)

    metadata = obj(body, "metadata", "", required=True)
    name = text(metadata, "name", "metadata", required=True, limit=64)
    assert name is not None
    if not NAME_RE.match(name):
        raise bad("metadata.name", "use 1 to 64 letters, digits, '_' or '-'")
    description = check_description(metadata.get("description"), "metadata.description")
    workspace_id = text(metadata, "workspace_id", "metadata", limit=64) or "0"
    annotations_raw = obj(metadata, "annotations", "metadata")
    for k in annotations_raw:
        if len(k) > 256 or "\x00" in k:
            raise bad(f"metadata.annotations.{k[:64]!r}", "a key is at most 256 characters, without NUL")
    annotations = {str(k): scalar_text(v, f"metadata.annotations.{k}") for k, v in annotations_raw.items()}
    if len(annotations) > 100:
        raise bad("metadata.annotations", "at most 100 annotations are allowed")
    faults.parse_policy(annotations)  # refuses invalid fault-tolerance values now, not at the first failure
    experiment = parse_reference(metadata.get("training_experiment_reference"))
    if experiment is None:
        metadata.pop("training_experiment_reference", None)

    algorithm = obj(body, "algorithm", "", required=True)
    if (algorithm.get("id") or algorithm.get("subscription_id") or algorithm.get("item_version_id")) and not (
            algorithm.get("command") or algorithm.get("boot_file")):
        # the service resolves an algorithm.id or a subscription before (service/algorithms.py) and stores
        # what it resolved (the code, boot file or command): one unresolved names nothing known here
        raise errors.AlgorithmNotFound(
            "AI algorithm not found: algorithm.id or the subscription names no algorithm known here."
        )
    command = text(algorithm, "command", "algorithm", limit=65536)
    code_dir = text(algorithm, "code_dir", "algorithm", limit=1024)
    boot_file = text(algorithm, "boot_file", "algorithm", limit=1024)
    check_code(command, code_dir, boot_file, "algorithm")
    boot_rel = _split_boot_file(code_dir, boot_file) if boot_file and code_dir else None

    engine_req = obj(algorithm, "engine", "algorithm")
    engine_id = text(engine_req, "engine_id", "algorithm.engine")
    engine_name = text(engine_req, "engine_name", "algorithm.engine")
    engine_version = text(engine_req, "engine_version", "algorithm.engine")
    image_url = text(engine_req, "image_url", "algorithm.engine", limit=1024)
    engine = catalog.find_engine(engine_id, engine_name, engine_version)
    if image_url:
        # a custom image, alone or beside a preset framework's name: the image's python runs boot files
        # (the host's interpreter is not in it), unless the named engine is itself an image
        named = engine if engine is not None and (engine_id or engine_name) else None
        if named is not None:
            engine = Engine(named.engine_id, named.engine_name, named.engine_version,
                            named.python if named.image_url else "python", image_url=image_url)
        else:
            engine = Engine(engine_id or "", engine_name or "", engine_version or "", "python", image_url=image_url)
    if engine is None:
        raise errors.EngineNotFound(
            f"Engine {engine_req.get('engine_id') or engine_req.get('engine_name')!r} not found; "
            f"available: {', '.join(sorted(catalog.engines))}."
        )

    parameters = []
    for i, p in enumerate(array(algorithm, "parameters", "algorithm", MAX_PARAMETERS)):
        path = f"algorithm.parameters[{i}]"
        pname = item_name(p, path, 128)
        parameters.append((pname, scalar_text(p.get("value", ""), f"{path}.value")))

    search, metrics = _search(algorithm, kind, parameters)
    inputs = parse_channels(algorithm, "inputs", "algorithm", datasets)
    outputs = parse_channels(algorithm, "outputs", "algorithm")

    env_raw = algorithm.get("environments") or {}
    if isinstance(env_raw, list):  # the response form: a list of maps
        merged: dict[str, Any] = {}
        for item in env_raw:
            if not isinstance(item, dict):
                raise bad("algorithm.environments", "must be a map of strings")
            merged.update(item)
        env_raw = merged
    if not isinstance(env_raw, dict):
        raise bad("algorithm.environments", "must be a map of strings")
    if len(env_raw) > MAX_ENVIRONMENTS:
        raise bad("algorithm.environments", f"at most {MAX_ENVIRONMENTS} variables are allowed")
    environments = {}
    for k, v in env_raw.items():
        if not ENV_NAME_RE.fullmatch(k) or len(k) > 256:
            raise bad(f"algorithm.environments.{k}", "is not a valid variable name: use letters, digits and "
                       "'_', not starting with a digit (a shell drops other names before the program sees them)")
        value = scalar_text(v, f"algorithm.environments.{k}")
        if "$" in value:
            raise bad(f"algorithm.environments.{k}", "values must not contain '$'")
        environments[k] = value
    faults.check_hang_env(environments)
    try:
        arglimits.check(command, parameters, environments, {
            "algorithm.inputs": [(c.name, c.local_dir) for c in inputs],
            "algorithm.outputs": [(c.name, c.local_dir) for c in outputs]})
    except arglimits.ArgLimitError as exc:
        raise bad(exc.field, exc.message) from None
    working_dir = container_path(algorithm, "working_dir", "algorithm")
    local_code_dir = container_path(algorithm, "local_code_dir", "algorithm")

    spec = obj(body, "spec", "", required=True)
    resource = obj(spec, "resource", "spec", required=True)
    flavor_id = text(resource, "flavor_id", "spec.resource", required=True, limit=128)
    assert flavor_id is not None
    flavor = catalog.flavors.get(flavor_id)
    if flavor is None:
        raise errors.FlavorNotFound(
            f"Flavor {flavor_id!r} not found; available: {', '.join(sorted(catalog.flavors))}."
        )
    pool_id = text(resource, "pool_id", "spec.resource", limit=128) or DEFAULT_POOL
    if pool_id not in catalog.pools():
        raise bad("spec.resource.pool_id", f"pool {pool_id!r} does not exist")
    node_count = integer(resource, "node_count", "spec.resource", 1, 1, 10**6)
    max_num = catalog.max_num(flavor, pool_id)
    if node_count > max_num:
        raise errors.FlavorOutOfRange(
            f"spec.resource.node_count={node_count} is out of range for flavor {flavor_id}: "
            f"at most {max_num} node(s) of it fit in pool {pool_id}."
        )
    policy = obj(spec, "schedule_policy", "spec")
    priority = integer(policy, "priority", "spec.schedule_policy", 1, 1, 3)
    preemptible = policy.get("preemptible", False)
    if not isinstance(preemptible, bool):
        raise bad("spec.schedule_policy.preemptible", "must be a boolean")
    affinity = _affinity(obj(policy, "required_affinity", "spec.schedule_policy"), node_count)
    auto_stop = _auto_stop(obj(spec, "auto_stop", "spec"))
    summary = _summary(algorithm)
    log_export = obj(spec, "log_export_path", "spec")
    log_export_url = text(log_export, "obs_url", "spec.log_export_path", limit=1024)
    if log_export_url:
        check_obs_url(log_export_url, "spec.log_export_path.obs_url")
    taken = [(f"algorithm.{key}[{i}].local_dir", c.local_dir) for key, channels in
             (("inputs", inputs), ("outputs", outputs)) for i, c in enumerate(channels) if c.local_dir]
    volumes = _volumes(spec, taken + ([("algorithm.local_code_dir", local_code_dir)] if local_code_dir else []))
    if text(log_export, "host_path", "spec.log_export_path", limit=1024):
        raise bad("spec.log_export_path.host_path", "exporting logs to a host path is not supported here; "
                   "use obs_url")

    endpoints = obj(body, "endpoints", "")
    request = {
        "kind": kind,
        "metadata": {**metadata, "name": name, "description": description, "workspace_id": workspace_id,
                     "annotations": annotations},
        "algorithm": algorithm,
        "spec": spec,
        **({"endpoints": endpoints} if endpoints else {}),
    }
    return JobSpec(
        name=name, description=description, workspace_id=workspace_id, annotations=annotations,
        command=command, code_dir=code_dir, boot_file=boot_rel, engine=engine,
        image=image_url or engine.image_url or None, parameters=parameters,
        inputs=inputs, outputs=outputs, environments=environments, working_dir=working_dir,
        flavor=flavor, node_count=node_count, pool_id=pool_id, priority=priority,
        preemptible=preemptible, affinity=affinity, auto_stop_seconds=auto_stop, request=request,
        log_export_url=log_export_url or None, volumes=volumes, summary=summary, search=search, metrics=metrics,
        experiment=experiment,
    )


def _heterogeneous(body: dict[str, Any], catalog: Catalog, datasets: Mapping[str, Dataset] | None) -> JobSpec:
    """A `tasks[]` body: each role parsed as a plain job (core/roles.py), in one pool, as one job."""
    if body.get("algorithm") is not None:
        raise bad("algorithm", "a heterogeneous job gives each role its algorithm in tasks[].algorithm")
    parsed: list[Role] = []
    first = 0
    for i, (name, plain) in enumerate(role_bodies(body)):
        try:
            spec = parse_job(plain, catalog, datasets)
        except errors.OpenartsError as exc:
            raise repath(exc, i) from None
        if parsed and spec.pool_id != parsed[0].spec.pool_id:
            raise bad(f"tasks[{i}].task_resource.pool_id", f"every role runs in one pool: {spec.pool_id!r} is "
                       f"not {parsed[0].spec.pool_id!r} (tasks[0])")
        parsed.append(Role(name, spec, first))
        first += spec.node_count
    head = parsed[0].spec
    endpoints = obj(body, "endpoints", "")
    request = {"kind": "job", "metadata": head.request["metadata"],
               "tasks": [task_entry(r.name, r.spec.request) for r in parsed],
               **({"endpoints": endpoints} if endpoints else {})}
    return dataclasses.replace(head, node_count=first, request=request, roles=tuple(parsed), log_export_url=None)


def _search(algorithm: dict[str, Any], kind: str,
            parameters: list[tuple[str, str]]) -> tuple[SearchSpec | None, tuple[Reward, ...]]:
    """algorithm.policies.auto_search: the search of a job of kind autosearch_job, and the metrics read
    from the job's logs: the search's rewards, or a plain job's reward_attrs alone (core/search.py)."""
    policies = obj(algorithm, "policies", "algorithm")
    auto_search = policies.get("auto_search")
    if kind != SEARCH_KIND:
        return None, parse_metrics(auto_search)
    search = parse_search(auto_search, parameters)
    return search, search.rewards


SUMMARY_TYPES = ("tensorboard", "mindstudio-insight")


def _summary(algorithm: dict[str, Any]) -> Channel | None:
    """algorithm.summary: with a log_type, its log_dir.pfs.pfs_path (an OBS location) receives what the
    job writes to its summary directory (core/layout.py SUMMARY_DIR), as a periodic output does."""
    summary = obj(algorithm, "summary", "algorithm")
    log_type = text(summary, "log_type", "algorithm.summary", limit=32)
    if not log_type:
        return None
    if log_type not in SUMMARY_TYPES:
        raise bad("algorithm.summary.log_type", f"must be one of {', '.join(SUMMARY_TYPES)}")
    pfs = obj(obj(summary, "log_dir", "algorithm.summary", required=True), "pfs", "algorithm.summary.log_dir",
               required=True)
    url = text(pfs, "pfs_path", "algorithm.summary.log_dir.pfs", required=True, limit=1024)
    assert url is not None
    check_obs_url(url, "algorithm.summary.log_dir.pfs.pfs_path")
    return Channel("summary", 0, url, None, "upload_periodically")
