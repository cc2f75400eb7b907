"""Admission planning: a pure function from (pending jobs, capacity snapshot) to decisions.

One pass, per pool, in priority order (3 highest) then submission order:

- gang: a job's workers are placed all at once or not at all (a trial with an undo log), so a
  waiting job never holds partial capacity;
- quotas: a job that would push its project over a limit waits (and blocks nobody else);
- reservation with backfill: the first job of a pool that does not fit becomes the pool's *head* and
  gets a reservation on the nodes where it will fit soonest. Jobs behind it may still start
  (backfill), but never by consuming a resource the head is waiting for on a reserved node: a worker
  may use a dimension (CPU, memory, GPUs) of a reserved node only if what stays free still covers the
  reservation. Without runtime estimates this is the only rule that provably never delays the head;
- preemption: a head that cannot fit may stop running jobs that are `preemptible` and of lower
  priority, choosing the youngest and then dropping any victim that is not needed (fewest);
  non-preemptible jobs are never touched. Jobs already being preempted count as freed, so later
  passes do not pick more victims for the same need;
- affinity: `hyperinstance` / `cabinet` place each group of `group_size` workers on nodes that share
  the label's value;
- roles: a heterogeneous job's roles each need their own flavor; all its workers, of every role, are
  one gang (`PendingJob.more`).

Decisions within a pass only consume capacity, so a demand shape that failed once fails for the
rest of the pass: failures are memoised, which keeps a pass over 10,000 pending jobs fast.
The supervisor applies the plan through the pass's capacity ledger (scheduler/ledger.py), which
re-checks each placement against what the same pass already committed.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from openarts.core.resources import Flavor


@dataclass(frozen=True)
class Demand:
    cpu_milli: int
    memory_mb: int
    gpus: int


def demand_of(flavor: Flavor) -> Demand:
    """What one worker of `flavor` needs of its node."""
    return Demand(flavor.cpu_milli, flavor.memory_mb, flavor.gpus)


@dataclass(frozen=True)
class Affinity:
    label: str  # node label key: "hyperinstance" or "cabinet"
    group_size: int


@dataclass(frozen=True)
class PendingJob:
    job_id: str
    pool: str
    demand: Demand  # per worker
    node_count: int
    priority: int
    queue_seq: int
    project: str = ""
    affinity: Affinity | None = None
    spread: bool = False  # one worker per node (the Ray executor: a node is a worker, as on ModelArts)
    # a heterogeneous job's other roles, after the first (`demand` x `node_count`): (demand, count) each
    more: tuple[tuple[Demand, int], ...] = ()

    def roles(self) -> tuple[tuple[Demand, int], ...]:
        return ((self.demand, self.node_count), *self.more)

    def worker_demands(self) -> list[Demand]:
        """What each worker needs, in the job's task order."""
        return [d for d, n in self.roles() for _ in range(n)]

    def total(self) -> Demand:
        return Demand(sum(d.cpu_milli * n for d, n in self.roles()), sum(d.memory_mb * n for d, n in self.roles()),
                      sum(d.gpus * n for d, n in self.roles()))


@dataclass(frozen=True)
class RunningJob:
    job_id: str
    pool: str
    priority: int
    preemptible: bool
    start_ms: int
    usage: tuple[tuple[str, Demand, tuple[int, ...]], ...]  # (node, demand, gpu indices) per worker
    preempting: bool = False  # already being preempted: its capacity counts as free for planning


@dataclass
class NodeFree:
    name: str
    pool: str
    ip: str
    cpu_milli: int
    memory_mb: int
    gpus: list[int] = field(default_factory=list)
    labels: Mapping[str, str] = field(default_factory=dict)
    cpus: list[int] = field(default_factory=list)  # free real CPU ids (empty: virtual cores)

    def fits(self, d: Demand) -> bool:
        return self.cpu_milli >= d.cpu_milli and self.memory_mb >= d.memory_mb and len(self.gpus) >= d.gpus

    def fits_beside(self, d: Demand, r: Demand | None) -> bool:
        """Fits without eating into reservation `r`: each dimension `d` uses must keep `r` free."""
        if not self.fits(d):
            return False
        if r is None:
            return True
        return ((d.cpu_milli == 0 or self.cpu_milli - d.cpu_milli >= r.cpu_milli)
                and (d.memory_mb == 0 or self.memory_mb - d.memory_mb >= r.memory_mb)
                and (d.gpus == 0 or len(self.gpus) - d.gpus >= r.gpus))

    def take(self, d: Demand) -> list[int]:
        self.cpu_milli -= d.cpu_milli
        self.memory_mb -= d.memory_mb
        taken, self.gpus = self.gpus[: d.gpus], self.gpus[d.gpus:]
        return taken

    def give(self, d: Demand, gpus: Iterable[int]) -> None:
        self.cpu_milli += d.cpu_milli
        self.memory_mb += d.memory_mb
        self.gpus = sorted([*self.gpus, *gpus])

    def copy(self) -> NodeFree:
        return NodeFree(self.name, self.pool, self.ip, self.cpu_milli, self.memory_mb, list(self.gpus), self.labels,
                        list(self.cpus))


@dataclass(frozen=True)
class WorkerPlacement:
    node: str
    ip: str
    gpus: tuple[int, ...]
    cpus: tuple[int, ...] = ()  # CPU ids to pin to, handed out when the placement is claimed


@dataclass(frozen=True)
class Placement:
    job_id: str
    workers: tuple[WorkerPlacement, ...]


@dataclass(frozen=True)
class Preemption:
    for_job: str
    victims: tuple[str, ...]


@dataclass(frozen=True)
class Wait:
    key: str  # stable while the cause is the same (the message's numbers may change)
    message: str


@dataclass(frozen=True)
class Quota:
    running_jobs: int = -1  # -1: unlimited
    cpu_milli: int = -1
    gpus: int = -1


@dataclass
class QuotaUse:
    running_jobs: int = 0
    cpu_milli: int = 0
    gpus: int = 0


@dataclass(frozen=True)
class Plan:
    placements: list[Placement]
    waiting: dict[str, Wait]  # job_id -> why it waits
    preemptions: list[Preemption] = field(default_factory=list)


# -- placement -------------------------------------------------------------------------------------
Reservation = dict[str, Demand]  # node -> amount reserved for the pool's head job
class PoolIndex:
    """A pool's nodes bucketed by free GPU count, so that a worker needing g GPUs looks only at nodes
    with at least g free, fewest first (best fit: GPU-less work lands on GPU-less nodes first, big
    GPU jobs keep whole nodes). Nodes with no CPU or memory left drop out."""

    def __init__(self, nodes: Iterable[NodeFree]) -> None:
        self.nodes = list(nodes)
        self.buckets: list[dict[str, NodeFree]] = [{} for _ in range(1 + max((len(n.gpus) for n in self.nodes),
                                                                           default=0))]
        for n in self.nodes:
            self._add(n)

    def _add(self, n: NodeFree) -> None:
        if n.cpu_milli > 0 and n.memory_mb > 0:
            while len(self.buckets) <= len(n.gpus):
                self.buckets.append({})
            self.buckets[len(n.gpus)][n.name] = n

    def _remove(self, n: NodeFree) -> None:
        if len(n.gpus) < len(self.buckets):
            self.buckets[len(n.gpus)].pop(n.name, None)

    def find(self, d: Demand, reservation: Reservation | None, label: tuple[str, str] | None,
             avoid: set[str] | None = None) -> NodeFree | None:
        for bucket in self.buckets[d.gpus:]:
            for n in bucket.values():
                if label is not None and n.labels.get(label[0]) != label[1]:
                    continue
                if avoid and n.name in avoid:
                    continue
                if n.fits_beside(d, reservation.get(n.name) if reservation else None):
                    return n
        return None

    def take(self, n: NodeFree, d: Demand) -> list[int]:
        self._remove(n)
        taken = n.take(d)
        self._add(n)
        return taken

    def give(self, n: NodeFree, d: Demand, gpus: Iterable[int]) -> None:
        self._remove(n)
        n.give(d, gpus)
        self._add(n)

    def withdraw(self, n: NodeFree, d: Demand, gpus: Iterable[int]) -> None:
        """Take back specific resources (those of a job that will not be stopped after all)."""
        self._remove(n)
        held = set(gpus)
        n.cpu_milli -= d.cpu_milli
        n.memory_mb -= d.memory_mb
        n.gpus = [g for g in n.gpus if g not in held]
        self._add(n)

    def labels(self, key: str) -> list[str]:
        return sorted({v for n in self.nodes if (v := n.labels.get(key)) is not None})


Undo = list[tuple[NodeFree, Demand, list[int]]]


def _groups(job: PendingJob) -> list[int]:
    if job.affinity is None:
        return [job.node_count]
    size = max(1, job.affinity.group_size)
    return [min(size, job.node_count - i) for i in range(0, job.node_count, size)]


def _place_on(index: PoolIndex, demand: Demand, count: int, reservation: Reservation | None,
              label: tuple[str, str] | None, undo: Undo, spread: bool = False) -> list[WorkerPlacement] | None:
    """`count` workers; with `spread`, each on a node none of the job's workers placed so far is on."""
    out = []
    for _ in range(count):
        node = index.find(demand, reservation, label, {n.name for n, _, _ in undo} if spread else None)
        if node is None:
            return None
        taken = index.take(node, demand)
        undo.append((node, demand, taken))
        out.append(WorkerPlacement(node.name, node.ip, tuple(taken)))
    return out


def _rollback(index: PoolIndex, undo: Undo, mark: int) -> None:
    for node, demand, taken in reversed(undo[mark:]):
        index.give(node, demand, taken)
    del undo[mark:]


def try_place(job: PendingJob, index: PoolIndex, reservation: Reservation | None = None, keep: bool = True
              ) -> list[WorkerPlacement] | None:
    """Place every worker of `job` (capacity consumed on success unless `keep` is False; untouched on
    failure)."""
    undo: Undo = []
    placed: list[WorkerPlacement] = []
    if job.more:  # a heterogeneous job: all or none (it has no affinity), the largest role first (first fit
        # in the given order could refuse a job that fits); the placements in task order
        roles = job.roles()
        by_role: dict[int, list[WorkerPlacement]] = {}
        for r in sorted(range(len(roles)), key=lambda r: (-roles[r][0].gpus, -roles[r][0].memory_mb,
                                                           -roles[r][0].cpu_milli, r)):
            got = _place_on(index, roles[r][0], roles[r][1], reservation, None, undo, job.spread)
            if got is None:
                _rollback(index, undo, 0)
                return None
            by_role[r] = got
        if not keep:
            _rollback(index, undo, 0)
        return [wp for r in range(len(roles)) for wp in by_role[r]]
    for size in _groups(job):
        got = None
        if job.affinity is None:
            got = _place_on(index, job.demand, size, reservation, None, undo, job.spread)
        else:
            for value in index.labels(job.affinity.label):
                mark = len(undo)
                got = _place_on(index, job.demand, size, reservation, (job.affinity.label, value), undo, job.spread)
                if got is not None:
                    break
                _rollback(index, undo, mark)
        if got is None:
            _rollback(index, undo, 0)
            return None
        placed.extend(got)
    if not keep:
        _rollback(index, undo, 0)
    return placed


def can_ever_fit(job: PendingJob, capacity: list[NodeFree]) -> bool:
    """Whether the job fits the pool's total capacity at all (checked at create time)."""
    return try_place(job, PoolIndex(n.copy() for n in capacity if n.pool == job.pool)) is not None


def _as_reservation(job: PendingJob, workers: list[WorkerPlacement] | None) -> Reservation:
    reservation: Reservation = {}
    for w, d in zip(workers or [], job.worker_demands(), strict=False):
        prev = reservation.get(w.node, Demand(0, 0, 0))
        reservation[w.node] = Demand(prev.cpu_milli + d.cpu_milli, prev.memory_mb + d.memory_mb, prev.gpus + d.gpus)
    return reservation


def _with_freed(pool_nodes: list[NodeFree], jobs: Iterable[RunningJob]) -> PoolIndex:
    """A copy of the pool's free capacity as it would be once `jobs` stopped."""
    nodes = {n.name: n.copy() for n in pool_nodes}
    for r in jobs:
        for node, demand, gpus in r.usage:
            if node in nodes:
                nodes[node].give(demand, gpus)
    return PoolIndex(nodes.values())


def _reserve(job: PendingJob, pool_nodes: list[NodeFree], running: list[RunningJob]) -> Reservation:
    """Where the head job will fit soonest: against each node's total capacity, preferring the nodes
    with the most free now (fewest running jobs to wait for)."""
    return _as_reservation(job, try_place(job, _with_freed(pool_nodes, running)))


def _victims(job: PendingJob, pool_nodes: list[NodeFree], running: list[RunningJob], stopping: set[str]
             ) -> tuple[list[RunningJob], list[WorkerPlacement]] | None:
    """Running jobs to preempt so that `job` fits, and where it would go. Jobs already stopping count
    as freed (and are not chosen again). None if even every eligible victim would not do."""
    gone = [r for r in running if r.job_id in stopping]
    where = try_place(job, _with_freed(pool_nodes, gone))
    if where is not None:
        return [], where
    candidates = sorted((r for r in running if r.job_id not in stopping and r.preemptible
                         and r.priority < job.priority), key=lambda r: (-r.start_ms, r.job_id))  # youngest first
    chosen: list[RunningJob] = []
    sim = _with_freed(pool_nodes, gone)
    by_name = {n.name: n for n in sim.nodes}
    for r in candidates:  # free one more victim at a time on the same simulation
        chosen.append(r)
        for node, demand, gpus in r.usage:
            if node in by_name:
                sim.give(by_name[node], demand, gpus)
        if try_place(job, sim, keep=False) is not None:
            break
    else:
        return None
    for r in sorted(chosen, key=lambda r: r.start_ms):  # oldest first: keep running those not needed
        for node, demand, gpus in r.usage:
            if node in by_name:
                sim.withdraw(by_name[node], demand, gpus)
        if try_place(job, sim, keep=False) is not None:
            chosen = [c for c in chosen if c is not r]
        else:
            for node, demand, gpus in r.usage:
                if node in by_name:
                    sim.give(by_name[node], demand, gpus)
    where = try_place(job, sim)
    assert where is not None
    return chosen, where


def _shortage(job: PendingJob, nodes: list[NodeFree]) -> str:
    free_cpu = sum(n.cpu_milli for n in nodes) / 1000
    free_mem = sum(n.memory_mb for n in nodes) // 1024
    free_gpu = sum(len(n.gpus) for n in nodes)
    need = " + ".join(f"{n} x ({d.cpu_milli / 1000:g} CPU, {d.memory_mb // 1024} GB" + (
        f", {d.gpus} GPU" if d.gpus else "") + ")" for d, n in job.roles())
    gpus = job.total().gpus
    have = f"{free_cpu:g} CPU, {free_mem} GB" + (f", {free_gpu} GPU" if free_gpu or gpus else "")
    group = f" in groups of {job.affinity.group_size} sharing a {job.affinity.label}" if job.affinity else ""
    return f"insufficient resources in pool {job.pool}: needs {need}{group}; free: {have}"


def _over_quota(job: PendingJob, quota: Quota | None, use: QuotaUse | None) -> str | None:
    if quota is None:
        return None
    use = use or QuotaUse()
    total = job.total()
    cpu, gpus = total.cpu_milli, total.gpus
    if quota.running_jobs >= 0 and use.running_jobs + 1 > quota.running_jobs:
        return f"project quota: {use.running_jobs} of {quota.running_jobs} running jobs in use"
    if quota.cpu_milli >= 0 and use.cpu_milli + cpu > quota.cpu_milli:
        return f"project quota: needs {cpu / 1000:g} CPU cores, {(quota.cpu_milli - use.cpu_milli) / 1000:g} left"
    if quota.gpus >= 0 and use.gpus + gpus > quota.gpus:
        return f"project quota: needs {gpus} GPUs, {quota.gpus - use.gpus} left"
    return None


def plan(pending: list[PendingJob], free: list[NodeFree], running: list[RunningJob] | None = None,
         quotas: Mapping[str, Quota] | None = None, quota_use: Mapping[str, QuotaUse] | None = None) -> Plan:
    """Decide which pending jobs start now, where, and whom to preempt. `free` is consumed."""
    running = running or []
    quotas = quotas or {}
    use = {k: QuotaUse(v.running_jobs, v.cpu_milli, v.gpus) for k, v in (quota_use or {}).items()}
    by_pool_nodes: dict[str, list[NodeFree]] = {}
    for n in free:
        by_pool_nodes.setdefault(n.pool, []).append(n)
    by_pool = {pool: PoolIndex(nodes) for pool, nodes in by_pool_nodes.items()}
    running_by_pool: dict[str, list[RunningJob]] = {}
    for r in running:
        running_by_pool.setdefault(r.pool, []).append(r)
    placements: list[Placement] = []
    waiting: dict[str, Wait] = {}
    preemptions: list[Preemption] = []
    heads: dict[str, tuple[str, Reservation, Wait]] = {}
    failed: set[tuple[object, ...]] = set()
    stopping = {r.job_id for r in running if r.preempting}
    empty = PoolIndex([])
    for job in sorted(pending, key=lambda j: (-j.priority, j.queue_seq)):
        index = by_pool.get(job.pool, empty)
        if quotas:
            over = _over_quota(job, quotas.get(job.project), use.get(job.project))
            if over is not None:
                waiting[job.job_id] = Wait("quota", over)
                continue
        head = heads.get(job.pool)
        d = job.demand
        shape = (job.pool, d.cpu_milli, d.memory_mb, d.gpus, job.node_count, job.affinity, job.more,
                 head[0] if head else None)
        if shape in failed:
            if head is not None:
                waiting[job.job_id] = head[2]
            else:  # pragma: no cover - a failed shape always leaves a head behind
                waiting[job.job_id] = Wait(f"shortage:{job.pool}", _shortage(job, index.nodes))
            continue
        workers = try_place(job, index, head[1] if head else None)
        if workers is not None:
            placements.append(Placement(job.job_id, tuple(workers)))
            u = use.setdefault(job.project, QuotaUse())
            total = job.total()
            u.running_jobs += 1
            u.cpu_milli += total.cpu_milli
            u.gpus += total.gpus
            continue
        failed.add(shape)
        if head is not None:
            waiting[job.job_id] = head[2]
            continue
        pool_running = running_by_pool.get(job.pool, [])
        found = _victims(job, index.nodes, pool_running, stopping)
        if found is not None and (found[0] or any(r.job_id in stopping for r in pool_running)):
            chosen, where = found
            if chosen:
                preemptions.append(Preemption(job.job_id, tuple(r.job_id for r in chosen)))
                stopping.update(r.job_id for r in chosen)
            names = ", ".join(r.job_id for r in chosen) or "jobs already stopping"
            waiting[job.job_id] = Wait("preempting", f"preempting lower-priority job(s) {names} to make room")
            reservation = _as_reservation(job, where)
        else:
            waiting[job.job_id] = Wait(f"shortage:{job.pool}", _shortage(job, index.nodes))
            reservation = _reserve(job, index.nodes, pool_running)
        behind = Wait(f"behind:{job.job_id}", f"queued behind job {job.job_id}, which holds a reservation; "
                      "starting now would delay it")
        heads[job.pool] = (job.job_id, reservation, behind)
    return Plan(placements, waiting, preemptions)
