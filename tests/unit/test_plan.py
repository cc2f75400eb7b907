"""The admission planner: FIFO within priority, gang placement, GPUs by index."""

from __future__ import annotations

from openarts.scheduler.plan import Demand, NodeFree, PendingJob, plan

CPU1 = Demand(1000, 1024, 0)


def job(i: str, n: int = 1, prio: int = 1, seq: int = 0, demand: Demand = CPU1) -> PendingJob:
    return PendingJob(i, "pool", demand, n, prio, seq)


def nodes(cpus: int = 2, gpus: int = 0) -> list[NodeFree]:
    return [NodeFree("n0", "pool", "127.0.0.1", cpus * 1000, 64 * 1024, list(range(gpus)))]


def test_fifo_fills_capacity_then_waits() -> None:
    p = plan([job("a", seq=1), job("b", seq=2), job("c", seq=3)], nodes(2))
    assert [x.job_id for x in p.placements] == ["a", "b"]
    assert "insufficient resources" in p.waiting["c"].message


def test_gang_all_or_nothing_and_head_blocks() -> None:
    p = plan([job("big", n=3, seq=1), job("small", seq=2)], nodes(2))
    assert p.placements == []  # big never holds partial capacity; small does not jump the queue
    assert "queued behind job big" in p.waiting["small"].message


def test_priority_orders_before_fifo() -> None:
    p = plan([job("low", seq=1), job("high", prio=3, seq=2)], nodes(1))
    assert [x.job_id for x in p.placements] == ["high"]


def test_gpus_assigned_by_index() -> None:
    g2 = Demand(1000, 1024, 2)
    p = plan([job("a", demand=g2, seq=1), job("b", demand=g2, seq=2)], nodes(8, gpus=4))
    assert [w.gpus for x in p.placements for w in x.workers] == [(0, 1), (2, 3)]
