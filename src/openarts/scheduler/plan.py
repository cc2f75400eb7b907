"""Admission planning: a pure function from (pending jobs, free capacity) to placements.

Order: priority (3 highest) then submission order. Gang: a job's workers are placed all at once or
not at all, so a waiting job never holds partial capacity. Within a pool the queue is strict FIFO:
once the head cannot fit, nothing behind it is admitted (no starvation of large jobs); issue 4 adds
reservations with backfill. `apply` in the supervisor re-checks nothing has changed underneath.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Demand:
    cpu_milli: int
    memory_mb: int
    gpus: int


@dataclass(frozen=True)
class PendingJob:
    job_id: str
    pool: str
    demand: Demand  # per worker
    node_count: int
    priority: int
    queue_seq: int


@dataclass
class NodeFree:
    name: str
    pool: str
    ip: str
    cpu_milli: int
    memory_mb: int
    gpus: list[int] = field(default_factory=list)

    def fits(self, d: Demand) -> bool:
        return self.cpu_milli >= d.cpu_milli and self.memory_mb >= d.memory_mb and len(self.gpus) >= d.gpus

    def take(self, d: Demand) -> list[int]:
        self.cpu_milli -= d.cpu_milli
        self.memory_mb -= d.memory_mb
        taken, self.gpus = self.gpus[: d.gpus], self.gpus[d.gpus:]
        return taken


@dataclass(frozen=True)
class WorkerPlacement:
    node: str
    ip: str
    gpus: tuple[int, ...]


@dataclass(frozen=True)
class Placement:
    job_id: str
    workers: tuple[WorkerPlacement, ...]


@dataclass(frozen=True)
class Wait:
    key: str  # stable while the cause is the same (the message's numbers may change)
    message: str


@dataclass(frozen=True)
class Plan:
    placements: list[Placement]
    waiting: dict[str, Wait]  # job_id -> why it waits


def _place(job: PendingJob, nodes: list[NodeFree]) -> list[WorkerPlacement] | None:
    trial = [NodeFree(n.name, n.pool, n.ip, n.cpu_milli, n.memory_mb, list(n.gpus)) for n in nodes]
    workers = []
    for _ in range(job.node_count):
        node = next((n for n in trial if n.pool == job.pool and n.fits(job.demand)), None)
        if node is None:
            return None
        workers.append(WorkerPlacement(node.name, node.ip, tuple(node.take(job.demand))))
    # commit the trial into the real snapshot
    for real, t in zip(nodes, trial, strict=True):
        real.cpu_milli, real.memory_mb, real.gpus = t.cpu_milli, t.memory_mb, t.gpus
    return workers


def _shortage(job: PendingJob, nodes: list[NodeFree]) -> str:
    pool = [n for n in nodes if n.pool == job.pool]
    d = job.demand
    free_cpu = sum(n.cpu_milli for n in pool) / 1000
    free_mem = sum(n.memory_mb for n in pool) // 1024
    free_gpu = sum(len(n.gpus) for n in pool)
    return (f"insufficient resources in pool {job.pool}: needs {job.node_count} x "
            f"({d.cpu_milli / 1000:g} CPU, {d.memory_mb // 1024} GB"
            + (f", {d.gpus} GPU" if d.gpus else "")
            + f"); free: {free_cpu:g} CPU, {free_mem} GB" + (f", {free_gpu} GPU" if free_gpu or d.gpus else ""))


def plan(pending: list[PendingJob], free: list[NodeFree]) -> Plan:
    """Decide which pending jobs start now and where. `free` is consumed (pass a copy to keep it)."""
    order = sorted(pending, key=lambda j: (-j.priority, j.queue_seq))
    placements: list[Placement] = []
    waiting: dict[str, Wait] = {}
    blocked: dict[str, str] = {}  # pool -> id of the head job that does not fit
    for job in order:
        head = blocked.get(job.pool)
        if head is not None:
            waiting[job.job_id] = Wait(f"behind:{head}", f"queued behind job {head}")
            continue
        workers = _place(job, free)
        if workers is None:
            waiting[job.job_id] = Wait(f"shortage:{job.pool}", _shortage(job, free))
            blocked[job.pool] = job.job_id
            continue
        placements.append(Placement(job.job_id, tuple(workers)))
    return Plan(placements, waiting)
