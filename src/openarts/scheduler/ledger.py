"""One reconcile pass's ledger of free capacity: plan, then apply with a re-check (Nomad's plan/apply,
made local).

The supervisor builds a ledger from the pass's snapshot, and every placement the pass commits (a new
job, a worker moved by pod_reschedule, a preempted job placed again) is first *claimed* here: the claim
checks what the same pass has already committed and debits it. A placement that no longer fits is
refused and its job stays where it was for the next pass, so capacity (a core, a GPU index) is never
handed out twice. Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import replace

from openarts.scheduler.plan import Demand, NodeFree, WorkerPlacement


class Ledger:
    def __init__(self, free: Iterable[NodeFree]) -> None:
        self._nodes = {n.name: n.copy() for n in free}

    def free(self) -> list[NodeFree]:
        """Copies of every node's free capacity now (the planner consumes what it is given)."""
        return [n.copy() for n in self._nodes.values()]

    def node(self, name: str) -> NodeFree | None:
        n = self._nodes.get(name)
        return n.copy() if n is not None else None

    def fits(self, claims: Sequence[tuple[WorkerPlacement, Demand]]) -> bool:
        """Whether every worker fits together: each node's CPU and memory cover the sum of the
        workers placed on it, and each GPU index is free and asked for once."""
        need: dict[str, list[int]] = {}
        gpus: dict[str, set[int]] = {}
        for wp, d in claims:
            node = self._nodes.get(wp.node)
            if node is None or len(wp.gpus) != d.gpus:
                return False
            cpu_mem = need.setdefault(wp.node, [0, 0])
            cpu_mem[0] += d.cpu_milli
            cpu_mem[1] += d.memory_mb
            taken = gpus.setdefault(wp.node, set())
            for g in wp.gpus:
                if g in taken or g not in node.gpus:
                    return False
                taken.add(g)
        return all(self._nodes[name].cpu_milli >= cpu and self._nodes[name].memory_mb >= mem
                   for name, (cpu, mem) in need.items())

    def claim(self, claims: Sequence[tuple[WorkerPlacement, Demand]]) -> bool:
        """Debit every worker if they all fit (all or nothing); False, and nothing debited, if not."""
        if not self.fits(claims):
            return False
        for wp, d in claims:
            node = self._nodes[wp.node]
            node.cpu_milli -= d.cpu_milli
            node.memory_mb -= d.memory_mb
            node.gpus = [g for g in node.gpus if g not in wp.gpus]
        return True

    def pin(self, wp: WorkerPlacement, d: Demand) -> WorkerPlacement:
        """`wp` with CPU ids of its own, taken from its node's free ones, when the node's cores are real
        and the demand is whole cores; `wp` unchanged otherwise. After `claim`."""
        node = self._nodes[wp.node]
        cores = d.cpu_milli // 1000
        if wp.cpus or not node.cpus or d.cpu_milli % 1000 or not cores or len(node.cpus) < cores:
            return wp
        taken, node.cpus = node.cpus[:cores], node.cpus[cores:]
        return replace(wp, cpus=tuple(taken))

    def place_one(self, demand: Demand, pool: str, avoid: str) -> WorkerPlacement | None:
        """A node of `pool` other than `avoid` where one worker fits now (not claimed: claim it)."""
        for n in self._nodes.values():
            if n.name != avoid and n.pool == pool and n.fits(demand):
                return WorkerPlacement(n.name, n.ip, tuple(n.gpus[:demand.gpus]))
        return None
