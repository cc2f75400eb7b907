"""Fault policy parsing, retryability and the recovery ladder with downgrade."""

from __future__ import annotations

import pytest

from openarts.core import errors
from openarts.core.faults import (
    Capabilities,
    FaultPolicy,
    RecoveryState,
    parse_policy,
    plan_recovery,
)
from openarts.core.reasons import EndKind, Termination

ONE_NODE = Capabilities(other_node=False, uses_gpus=False)
TWO_NODES = Capabilities(other_node=True, uses_gpus=False)
USER_EXIT = Termination(EndKind.USER_EXIT, "exit with 127", "worker-1", 127)
KILLED = Termination(EndKind.SIGNALED, "exit with 137 (killed by SIGKILL)", "worker-0", 137)
HANG = Termination(EndKind.HANG, "hang", "worker-0")


def test_parse_policy_and_refusals() -> None:
    p = parse_policy({"fault-tolerance/job-retry-num": "3", "fault-tolerance/job-unconditional-retry": "true",
                      "fault-tolerance/hang-retry": "false"})
    assert p == FaultPolicy(retry_num=3, unconditional=True, hang_retry=False)
    for bad in ({"fault-tolerance/job-retry-num": "0"}, {"fault-tolerance/job-retry-num": "129"},
                {"fault-tolerance/job-retry-num": "x"}, {"fault-tolerance/hang-retry": "yes"}):
        with pytest.raises(errors.InvalidRequest):
            parse_policy(bad)


def test_user_exit_needs_unconditional() -> None:
    assert plan_recovery(USER_EXIT, FaultPolicy(retry_num=3), RecoveryState(), ONE_NODE, False) is None
    r = plan_recovery(USER_EXIT, FaultPolicy(retry_num=3, unconditional=True), RecoveryState(), ONE_NODE, False)
    assert r is not None and r.tier == "proc_restart" and r.counted


def test_infrastructure_faults_use_the_budget() -> None:
    policy = FaultPolicy(retry_num=1)
    r = plan_recovery(KILLED, policy, RecoveryState(), ONE_NODE, False)
    assert r is not None and r.state.retries_used == 1
    assert plan_recovery(KILLED, policy, r.state, ONE_NODE, False) is None  # budget exhausted
    assert plan_recovery(KILLED, FaultPolicy(), RecoveryState(), ONE_NODE, False) is None


def test_ladder_downgrades_and_records_impossible_tiers() -> None:
    policy = FaultPolicy(retry_num=5)
    state = RecoveryState()
    seen = []
    for _ in range(5):
        r = plan_recovery(KILLED, policy, state, ONE_NODE, False)
        assert r is not None
        seen.append((r.wanted, r.tier))
        state = r.state
    assert seen == [
        ("proc_restart", "proc_restart"),
        ("pod_reschedule", "job_reschedule"),  # one node: nowhere to move the pod to
        ("job_reschedule_with_taint", "job_reschedule"),  # fencing the only node would block the job
        ("job_reschedule_with_taint", "job_reschedule"),
        ("job_reschedule_with_taint", "job_reschedule"),
    ]
    r = plan_recovery(KILLED, policy, RecoveryState(tier=0, retries_used=1), TWO_NODES, False)
    assert r is not None and (r.wanted, r.tier) == ("pod_reschedule", "pod_reschedule")


def test_ladder_starts_over_after_a_long_run() -> None:
    r = plan_recovery(KILLED, FaultPolicy(retry_num=5), RecoveryState(tier=2, retries_used=2), ONE_NODE, True)
    assert r is not None and r.tier == "proc_restart"


def test_hang_retry_is_in_place_not_counted_and_capped() -> None:
    policy = FaultPolicy(hang_retry=True)
    state = RecoveryState()
    for i in range(3):
        r = plan_recovery(HANG, policy, state, Capabilities(False, uses_gpus=True), False)
        assert r is not None and r.tier == "gpu_proc_restart" and not r.counted
        state = r.state
        assert state.hang_restarts == i + 1
    assert plan_recovery(HANG, policy, state, ONE_NODE, False) is None  # no budget left for a 4th
