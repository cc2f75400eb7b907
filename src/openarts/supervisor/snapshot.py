"""The scheduler's view of the store: free capacity per node, running jobs, quota use. Pure: rows in,
planner inputs out (scheduler/plan.py)."""

from __future__ import annotations

from collections.abc import Mapping

from openarts.core.phases import Phase
from openarts.core.resources import Catalog
from openarts.scheduler.plan import NodeFree, Quota, QuotaUse, RunningJob, demand_of
from openarts.store.rows import JobRow, TaskRow

HOLDING = (Phase.RUNNING, Phase.TERMINATING)  # phases whose tasks hold capacity


def _gpus(text: str) -> tuple[int, ...]:
    return tuple(int(g) for g in text.split(",") if g)


def free_capacity(catalog: Catalog, rows: list[JobRow], tasks: Mapping[str, list[TaskRow]],
                  fenced: Mapping[str, int], holding: set[str] | None = None) -> list[NodeFree]:
    """Each node's capacity less what the `holding` jobs' tasks hold (default: the jobs in a HOLDING
    phase; the supervisor adds Pending jobs whose attempt is being staged); fenced nodes offer nothing.
    The GPU and CPU ids a task holds are taken out even when its flavor is no longer known."""
    free = {n.name: NodeFree(n.name, n.pool, n.ip, n.cpu_milli, n.memory_mb, list(n.gpus), n.labels, list(n.cpus))
            for n in catalog.nodes}
    for row in rows:
        if row.id not in holding if holding is not None else row.phase not in HOLDING:
            continue
        flavor = catalog.flavors.get(row.flavor_id)  # None: removed from the config while it runs
        for t in tasks.get(row.id, []):
            node = free.get(t.node)
            if node is None:
                continue
            if flavor is not None:
                node.cpu_milli -= flavor.cpu_milli
                node.memory_mb -= flavor.memory_mb
            used = set(_gpus(t.gpus))
            node.gpus = [g for g in node.gpus if g not in used]
            pinned = set(_gpus(t.cpus))
            node.cpus = [c for c in node.cpus if c not in pinned]
    for name in fenced:
        fenced_node = free.get(name)
        if fenced_node is not None:
            fenced_node.cpu_milli, fenced_node.memory_mb, fenced_node.gpus, fenced_node.cpus = 0, 0, [], []
    return list(free.values())


def running_jobs(catalog: Catalog, rows: list[JobRow], tasks: Mapping[str, list[TaskRow]]) -> list[RunningJob]:
    """Jobs holding capacity, for preemption; those already stopping count as freed."""
    out = []
    for r in rows:
        flavor = catalog.flavors.get(r.flavor_id)
        if r.phase not in HOLDING or flavor is None:
            continue
        d = demand_of(flavor)
        usage = tuple((t.node, d, _gpus(t.gpus)) for t in tasks.get(r.id, []))
        stopping = bool(r.preempt_requested or r.terminate_requested or r.phase == Phase.TERMINATING)
        out.append(RunningJob(r.id, r.pool_id, r.priority, bool(r.preemptible), r.running_since_ms or r.start_ms,
                              usage, preempting=stopping))
    return out


def quotas(catalog: Catalog, rows: list[JobRow], limits: Mapping[str, Mapping[str, int]],
           holding: set[str] | None = None) -> tuple[dict[str, Quota], dict[str, QuotaUse]]:
    """Per-project limits (cpu_cores in cores, -1 unlimited) and what the holding jobs (as in
    `free_capacity`) use of them."""
    out = {}
    for project, v in limits.items():
        cores = v.get("cpu_cores", -1)
        out[project] = Quota(v.get("running_jobs", -1), cores * 1000 if cores >= 0 else -1, v.get("gpus", -1))
    use: dict[str, QuotaUse] = {}
    for r in rows:
        if (r.id not in holding if holding is not None else r.phase not in HOLDING) or r.project_id not in out:
            continue
        flavor = catalog.flavors.get(r.flavor_id)
        u = use.setdefault(r.project_id, QuotaUse())
        u.running_jobs += 1
        if flavor is not None:
            u.cpu_milli += flavor.cpu_milli * r.node_count
            u.gpus += flavor.gpus * r.node_count
    return out, use
