"""The queue as the console's queue page shows it: each node's capacity and what is free of it now, and a
project's waiting jobs in the scheduler's order with why each waits.

Read from the store, as the supervisor's pass reads it: a node's free capacity is its capacity less what
the jobs holding capacity hold (running and terminating jobs, and pending ones whose attempt is being
staged), counted by the scheduler's own `free_capacity` (scheduler/capacity.py); a fenced node offers
nothing. Why a job waits is what the scheduler last recorded for it: its "Job is waiting: ..." event
(supervisor/loop.py), written when the reason changes, and ignored once an attempt ended after it (a job
sent back to the queue waits for a new verdict).

The same count answers GET /training-pool-flavors: `free_now` is each node's free capacity as the
supervisor's pass has it, `most_workers` the largest gang of a flavor the scheduler would place in it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from openarts.core.phases import Phase
from openarts.core.resources import Catalog, Flavor
from openarts.core.search import SEARCH_KIND
from openarts.scheduler.capacity import HOLDING, free_capacity, holds
from openarts.scheduler.plan import NodeFree, PendingJob, PoolIndex, demand_of, try_place
from openarts.store import jobs as w
from openarts.store import queries as q
from openarts.store.db import Database
from openarts.store.rows import AttemptRow, JobRow, TaskRow

WAITING_EVENT = "Job is waiting: "  # the scheduler's event (supervisor/loop.py)
WAITING_SHOWN = 200  # a project's waiting jobs listed; the rest are counted


@dataclass
class NodeUse:
    """A node: its capacity, what is free of it now, the workers placed on it, and its fence."""

    name: str
    pool: str
    ip: str
    labels: Mapping[str, str]
    cpu_milli: int
    memory_mb: int
    gpus: tuple[int, ...]
    free_cpu_milli: int
    free_memory_mb: int
    free_gpus: list[int]
    workers: int = 0
    fenced_until_ms: int = 0

    def fits(self, flavor: Flavor) -> int:
        """How many more workers of `flavor` it could take now."""
        counts = [self.free_cpu_milli // flavor.cpu_milli if flavor.cpu_milli else 10**6,
                  self.free_memory_mb // flavor.memory_mb if flavor.memory_mb else 10**6,
                  len(self.free_gpus) // flavor.gpus if flavor.gpus else 10**6]
        return max(0, min(counts))


@dataclass(frozen=True)
class WaitingJob:
    """One of the project's jobs not running yet, with where it stands."""

    job_id: str
    name: str
    phase: str
    secondary_phase: str
    pool: str
    flavor_id: str
    node_count: int
    priority: int
    create_ms: int
    position: int  # in its pool's queue (every project's queued jobs, in the scheduler's order); 0: not queued
    queued: int  # jobs in its pool's queue
    reason: str
    reason_ms: int = 0
    roles: str = ""  # a heterogeneous job's: "learner: flavor x 1, actor: flavor x 2"


@dataclass
class QueueView:
    nodes: list[NodeUse]
    waiting: list[WaitingJob]
    more: int = 0  # waiting jobs of the project beyond WAITING_SHOWN
    pools: dict[str, int] = field(default_factory=dict)  # pool -> jobs queued in it (every project)


def node_use(catalog: Catalog, rows: list[JobRow], tasks: Mapping[str, list[TaskRow]],
             attempts: Mapping[str, AttemptRow], fenced: Mapping[str, int]) -> list[NodeUse]:
    """Each node of the catalog, less what the jobs holding capacity hold of it."""
    holding = {r.id for r in rows if holds_capacity(r, attempts.get(r.id))}
    workers: dict[str, int] = {}
    for job_id in holding:
        for t in tasks.get(job_id, []):
            workers[t.node] = workers.get(t.node, 0) + 1
    free = {n.name: n for n in free_capacity(catalog, rows, tasks, fenced, holding)}
    return [NodeUse(n.name, n.pool, n.ip, n.labels, n.cpu_milli, n.memory_mb, n.gpus, free[n.name].cpu_milli,
                    free[n.name].memory_mb, free[n.name].gpus, workers.get(n.name, 0), fenced.get(n.name, 0))
            for n in catalog.nodes]


def free_now(db: Database, catalog: Catalog) -> list[NodeFree]:
    """Each node's free capacity now, as the supervisor's pass counts it (supervisor/loop.py): every live
    job but a search's own row (its trials hold capacity as jobs of their own), the latest attempt's tasks
    of those that hold capacity (`holds_capacity`), fenced nodes offering nothing."""
    with db.connect() as conn:
        rows = [r for r in q.active_jobs(conn) if r.kind != SEARCH_KIND]
        placed = [r for r in rows if r.phase in (*HOLDING, Phase.PENDING) and r.attempt]
        tasks = q.current_tasks(conn, placed)
        attempts = q.current_attempts(conn, placed)
        fenced = q.fenced_nodes(conn, w.now_ms())
    holding = {r.id for r in rows if holds_capacity(r, attempts.get(r.id))}
    return free_capacity(catalog, rows, tasks, fenced, holding)


def most_workers(flavor: Flavor, pool: str, most: int, free: list[NodeFree], spread: bool = False) -> int:
    """The largest node_count of `flavor`, up to `most`, that the scheduler's placement (`try_place`, gang:
    all workers or none) fits into `free` in `pool` now. What each node could take alone bounds it (one
    each with `spread`); a count that fits leaves every smaller one fitting (placement is greedy, worker by
    worker), so below a bound that does not fit a binary search finds it."""
    nodes = [n for n in free if n.pool == pool]
    d = demand_of(flavor)
    each = [max(0, min(n.cpu_milli // d.cpu_milli if d.cpu_milli else most, n.memory_mb // d.memory_mb
                       if d.memory_mb else most, len(n.gpus) // d.gpus if d.gpus else most)) for n in nodes]
    bound = min(most, sum(min(1, k) if spread else k for k in each))

    def fits(count: int) -> bool:
        job = PendingJob("headroom", pool, d, count, 0, 0, spread=spread)
        return try_place(job, PoolIndex(n.copy() for n in nodes), keep=False) is not None

    if fits(bound):
        return bound
    lo, hi = 0, bound - 1
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if fits(mid):
            lo = mid
        else:
            hi = mid - 1
    return lo


def holds_capacity(row: JobRow, attempt: AttemptRow | None) -> bool:
    """Whether a job's tasks hold capacity (scheduler/capacity.py `holds`)."""
    return holds(row.phase, attempt is not None and not attempt.end_ms)


def queue_view(db: Database, catalog: Catalog, project_id: str) -> QueueView:
    """Nodes and their free capacity; the project's jobs that are not running yet, queued ones first in
    the scheduler's order (priority, then submission), each with why it waits."""
    now = w.now_ms()
    with db.connect() as conn:
        rows = [r for r in q.active_jobs(conn) if not r.delete_requested and r.kind != SEARCH_KIND]
        placed = [r for r in rows if r.phase in (*HOLDING, Phase.PENDING) and r.attempt]
        tasks = q.current_tasks(conn, placed)
        attempts = q.current_attempts(conn, placed)
        nodes = node_use(catalog, rows, tasks, attempts, q.fenced_nodes(conn, now))
        queued = sorted((r for r in rows if r.phase == Phase.PENDING and not holds_capacity(r, attempts.get(r.id))),
                        key=lambda r: (-r.priority, r.queue_seq))
        positions: dict[str, int] = {}
        pools: dict[str, int] = {}
        for r in queued:
            pools[r.pool_id] = pools.get(r.pool_id, 0) + 1
            positions[r.id] = pools[r.pool_id]
        mine = [r for r in queued if r.project_id == project_id]
        others = [r for r in rows if r.project_id == project_id and r.id not in positions
                  and r.phase in (Phase.CREATING, Phase.PENDING)]
        waiting = []
        for r in [*mine, *others][:WAITING_SHOWN]:
            attempt = attempts.get(r.id)
            if r.id in positions:
                reason, at = _reason(conn, r, attempt)
            elif r.phase == Phase.CREATING:
                reason, at = "being prepared: its code, inputs and image are checked before it is queued", 0
            else:
                reason, at = "placed: its attempt is being staged and started", 0
            waiting.append(WaitingJob(r.id, r.name, r.phase, r.secondary_phase, r.pool_id, r.flavor_id, r.node_count,
                                      r.priority, r.create_ms, positions.get(r.id, 0), pools.get(r.pool_id, 0),
                                      reason, at, ", ".join(f"{s.role}: {s.flavor_id} x {s.count}" for s in r.shapes())
                                      if r.roles else ""))
    return QueueView(nodes, waiting, max(0, len(mine) + len(others) - WAITING_SHOWN), pools)


def _reason(conn: q.Conn, row: JobRow, attempt: AttemptRow | None) -> tuple[str, int]:
    """The scheduler's latest verdict on a queued job, and when; one from before its last attempt ended
    is stale."""
    since = attempt.end_ms if attempt is not None and attempt.end_ms else None
    _, events = q.job_events(conn, row.id, offset=0, limit=1, order="desc", start_ms=since, end_ms=None,
                             level=None, pattern=WAITING_EVENT)
    for e in events:
        if e.source == "Scheduler" and e.message.startswith(WAITING_EVENT):
            return e.message[len(WAITING_EVENT):].rstrip("."), e.time_ms
    return "not planned yet: the scheduler's next pass places it or says why it waits", 0
