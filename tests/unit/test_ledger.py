"""The pass's capacity ledger: claims are all or nothing and never hand out a core or a GPU twice."""

from __future__ import annotations

from openarts.scheduler.ledger import Ledger
from openarts.scheduler.plan import Demand, NodeFree, WorkerPlacement

ONE = Demand(1000, 1024, 0)
GPU = Demand(1000, 1024, 1)


def _ledger() -> Ledger:
    return Ledger([NodeFree("A", "p", "10.0.0.1", 2000, 2048, [0, 1], cpus=[0, 1]),
                   NodeFree("B", "p", "10.0.0.2", 1000, 1024, [], cpus=[])])


def test_claims_debit_and_refuse_what_the_pass_already_took() -> None:
    led = _ledger()
    a = WorkerPlacement("A", "10.0.0.1", ())
    assert led.claim([(a, ONE)])
    assert led.claim([(a, ONE)])
    assert not led.claim([(a, ONE)])  # A's two cores are gone
    assert led.claim([(WorkerPlacement("B", "10.0.0.2", ()), ONE)])


def test_a_claim_is_all_or_nothing() -> None:
    led = _ledger()
    a, b = WorkerPlacement("A", "10.0.0.1", ()), WorkerPlacement("B", "10.0.0.2", ())
    assert not led.claim([(a, ONE), (b, ONE), (b, ONE)])  # B cannot hold two
    node = led.node("A")
    assert node is not None and node.cpu_milli == 2000  # nothing was debited


def test_a_gpu_index_is_handed_out_once() -> None:
    led = _ledger()
    g0 = WorkerPlacement("A", "10.0.0.1", (0,))
    assert not led.claim([(g0, GPU), (g0, GPU)])  # the same index twice in one claim
    assert led.claim([(g0, GPU)])
    assert not led.claim([(g0, GPU)])  # already taken by this pass
    assert led.claim([(WorkerPlacement("A", "10.0.0.1", (1,)), GPU)])
    assert not led.claim([(WorkerPlacement("A", "10.0.0.1", (7,)), GPU)])  # not a GPU of A


def test_place_one_avoids_the_failed_node_and_sees_claims() -> None:
    led = _ledger()
    target = led.place_one(ONE, "p", avoid="A")
    assert target is not None and target.node == "B"
    assert led.claim([(target, ONE)])
    assert led.place_one(ONE, "p", avoid="A") is None


def test_pin_takes_whole_cores_of_real_nodes_only() -> None:
    led = _ledger()
    a = WorkerPlacement("A", "10.0.0.1", ())
    assert led.claim([(a, ONE)])
    first = led.pin(a, ONE)
    assert led.claim([(a, ONE)])
    second = led.pin(a, ONE)
    assert {first.cpus, second.cpus} == {(0,), (1,)}
    b = WorkerPlacement("B", "10.0.0.2", ())
    assert led.pin(b, ONE).cpus == ()  # virtual cores: not pinned
    assert led.pin(a, Demand(500, 512, 0)).cpus == ()  # a fraction of a core: not pinned
