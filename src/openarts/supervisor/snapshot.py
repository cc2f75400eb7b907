"""The scheduler's view of the store: running jobs and quota use (free capacity per node is
scheduler/capacity.py's). Pure: rows in, planner inputs out (scheduler/plan.py)."""

from __future__ import annotations

from collections.abc import Mapping

from openarts.core.phases import Phase
from openarts.core.resources import Catalog
from openarts.scheduler.capacity import HOLDING, id_list, task_flavors
from openarts.scheduler.plan import Affinity, Demand, PendingJob, Quota, QuotaUse, RunningJob, demand_of
from openarts.store.rows import JobRow, TaskRow


def pending_job(catalog: Catalog, r: JobRow, affinity: Affinity | None, spread: bool) -> PendingJob | str:
    """What a pending job asks of the scheduler: each role's flavor x count; or the flavor that no longer
    exists."""
    roles = r.shapes()
    for s in roles:
        if s.flavor_id not in catalog.flavors:
            return s.flavor_id
    demands = [(demand_of(catalog.flavors[s.flavor_id]), s.count) for s in roles]
    return PendingJob(r.id, r.pool_id, demands[0][0], demands[0][1], r.priority, r.queue_seq, r.project_id,
                      affinity, spread, tuple(demands[1:]))


def running_jobs(catalog: Catalog, rows: list[JobRow], tasks: Mapping[str, list[TaskRow]]) -> list[RunningJob]:
    """Jobs holding capacity, for preemption; those already stopping count as freed."""
    out = []
    for r in rows:
        if r.phase not in HOLDING:
            continue
        flavors = task_flavors(catalog, r)
        if None in flavors:
            continue
        demands = [demand_of(f) for f in flavors if f is not None]
        usage = tuple((t.node, demands[t.idx] if t.idx < len(demands) else Demand(0, 0, 0), id_list(t.gpus))
                      for t in tasks.get(r.id, []))
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
        u = use.setdefault(r.project_id, QuotaUse())
        u.running_jobs += 1
        for flavor in task_flavors(catalog, r):
            if flavor is not None:
                u.cpu_milli += flavor.cpu_milli
                u.gpus += flavor.gpus
    return out, use
