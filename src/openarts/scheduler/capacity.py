"""What each node has free: its capacity less what the jobs holding capacity hold. Pure: the scheduler's
pass (supervisor/snapshot.py) and the console's queue page (service/queue.py) both count it so.

Rows are anything with the fields named by `HeldJob` and `HeldTask` (the store's JobRow and TaskRow),
so that this layer needs nothing above `core`.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from typing import Protocol

from openarts.core.phases import Phase
from openarts.core.resources import Catalog, Flavor
from openarts.core.roles import shapes
from openarts.scheduler.plan import NodeFree

HOLDING = (Phase.RUNNING, Phase.TERMINATING)  # phases whose tasks hold capacity


class HeldJob(Protocol):
    @property
    def id(self) -> str: ...
    @property
    def phase(self) -> str: ...
    @property
    def flavor_id(self) -> str: ...
    @property
    def node_count(self) -> int: ...
    @property
    def roles(self) -> str: ...


class HeldTask(Protocol):
    @property
    def idx(self) -> int: ...
    @property
    def node(self) -> str: ...
    @property
    def gpus(self) -> str: ...
    @property
    def cpus(self) -> str: ...


def id_list(text: str) -> tuple[int, ...]:
    """GPU or CPU ids as the store keeps them ("0,1")."""
    return tuple(int(g) for g in text.split(",") if g)


def task_flavors(catalog: Catalog, row: HeldJob) -> list[Flavor | None]:
    """The flavor of each of the job's tasks, in task order (None: removed from the config since)."""
    return [catalog.flavors.get(s.flavor_id) for s in shapes(row.roles, row.flavor_id, row.node_count)
            for _ in range(s.count)]


def holds(phase: str, attempt_open: bool) -> bool:
    """Whether a job's tasks hold capacity: running or terminating, or Pending with its attempt open
    (being staged: it holds its placement as a running one does)."""
    return phase in HOLDING or (phase == Phase.PENDING and attempt_open)


def free_capacity(catalog: Catalog, rows: Collection[HeldJob], tasks: Mapping[str, Sequence[HeldTask]],
                  fenced: Collection[str], holding: set[str] | None = None) -> list[NodeFree]:
    """Each node's capacity less what the `holding` jobs' tasks hold (default: the jobs in a HOLDING
    phase); fenced nodes offer nothing. The GPU and CPU ids a task holds are taken out even when its
    flavor is no longer known."""
    free = {n.name: NodeFree(n.name, n.pool, n.ip, n.cpu_milli, n.memory_mb, list(n.gpus), n.labels, list(n.cpus))
            for n in catalog.nodes}
    for row in rows:
        if row.id not in holding if holding is not None else row.phase not in HOLDING:
            continue
        flavors = task_flavors(catalog, row)
        for t in tasks.get(row.id, []):
            node = free.get(t.node)
            if node is None:
                continue
            flavor = flavors[t.idx] if t.idx < len(flavors) else None
            if flavor is not None:
                node.cpu_milli -= flavor.cpu_milli
                node.memory_mb -= flavor.memory_mb
            used = set(id_list(t.gpus))
            node.gpus = [g for g in node.gpus if g not in used]
            pinned = set(id_list(t.cpus))
            node.cpus = [c for c in node.cpus if c not in pinned]
    for name in fenced:
        fenced_node = free.get(name)
        if fenced_node is not None:
            fenced_node.cpu_milli, fenced_node.memory_mb, fenced_node.gpus, fenced_node.cpus = 0, 0, [], []
    return list(free.values())
