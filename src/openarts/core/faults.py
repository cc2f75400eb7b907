"""Fault tolerance: the job's policy (from annotations), which failures may be recovered, and the
recovery ladder with downgrade. Pure functions; the supervisor persists `RecoveryState` in the store.

Ladder (docs/STATES.md): proc_restart (restart every worker in place; gpu_proc_restart when the job
holds GPUs) -> pod_reschedule (the failed task moves to another node) -> job_reschedule (the whole job
is queued and placed again) -> job_reschedule_with_taint (also fence the failed node for a while).
A tier whose recovery fails again downgrades to the next; a tier that is impossible here (no other
node to move to) is replaced by the next possible one, and the record names both.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace

from openarts.core import errors
from openarts.core.reasons import EndKind, Termination

RETRY_NUM = "fault-tolerance/job-retry-num"
UNCONDITIONAL = "fault-tolerance/job-unconditional-retry"
HANG_RETRY = "fault-tolerance/hang-retry"
POD_RETRY_NUM = "fault-tolerance/pod-retry-num"

PROC_RESTART = "proc_restart"
GPU_PROC_RESTART = "gpu_proc_restart"
POD_RESCHEDULE = "pod_reschedule"
JOB_RESCHEDULE = "job_reschedule"
JOB_RESCHEDULE_WITH_TAINT = "job_reschedule_with_taint"
LADDER = (PROC_RESTART, POD_RESCHEDULE, JOB_RESCHEDULE, JOB_RESCHEDULE_WITH_TAINT)
IN_PLACE = frozenset({PROC_RESTART, GPU_PROC_RESTART, POD_RESCHEDULE})  # the job stays Running
MAX_HANG_RESTARTS = 3  # consecutive, ModelArts' limit for hang-retry
UNCONDITIONAL_DEFAULT_RETRIES = 3  # unconditional retry with no job-retry-num


@dataclass(frozen=True)
class FaultPolicy:
    retry_num: int = 0
    unconditional: bool = False
    hang_retry: bool = False
    pod_retry_num: int = 0

    @property
    def budget(self) -> int:
        if self.retry_num:
            return self.retry_num
        return UNCONDITIONAL_DEFAULT_RETRIES if self.unconditional else 0


def _bool(annotations: Mapping[str, str], key: str) -> bool:
    value = annotations.get(key)
    if value is None:
        return False
    if value.lower() not in ("true", "false"):
        raise errors.InvalidRequest(f"Invalid annotation {key}={value!r}: use \"true\" or \"false\".")
    return value.lower() == "true"


def _count(annotations: Mapping[str, str], key: str) -> int:
    value = annotations.get(key)
    if value is None:
        return 0
    if not value.isdigit() or not 1 <= int(value) <= 128:
        raise errors.InvalidRequest(f"Invalid annotation {key}={value!r}: use a whole number from 1 to 128.")
    return int(value)


HANG_ENV = "MA_HANG_DETECT_TIME"


def hang_window_seconds(environments: Mapping[str, str], default_minutes: float) -> float:
    """The job's hang window: MA_HANG_DETECT_TIME (minutes, as ModelArts documents) or the server's."""
    value = environments.get(HANG_ENV)
    minutes = default_minutes if value is None else float(value)
    return minutes * 60.0


def check_hang_env(environments: Mapping[str, str]) -> None:
    value = environments.get(HANG_ENV)
    if value is None:
        return
    try:
        ok = 0 < float(value) <= 7 * 24 * 60
    except ValueError:
        ok = False
    if not ok:
        raise errors.InvalidRequest(f"Invalid environment {HANG_ENV}={value!r}: minutes, a number above 0.")


def parse_policy(annotations: Mapping[str, str]) -> FaultPolicy:
    return FaultPolicy(
        retry_num=_count(annotations, RETRY_NUM),
        unconditional=_bool(annotations, UNCONDITIONAL),
        hang_retry=_bool(annotations, HANG_RETRY),
        pod_retry_num=_count(annotations, POD_RETRY_NUM),
    )


@dataclass(frozen=True)
class RecoveryState:
    """What survives across attempts (persisted on the job row)."""

    retries_used: int = 0  # recoveries counted against job-retry-num
    hang_restarts: int = 0  # consecutive hang restarts
    tier: int = -1  # index in LADDER of the last recovery's tier, -1 before any
    pod_retries_used: int = 0


@dataclass(frozen=True)
class Recovery:
    tier: str  # what is done (end_recover)
    wanted: str  # what the ladder asked for (end_recover_before_downgrade)
    state: RecoveryState  # the state after this recovery
    counted: bool  # counted against job-retry-num
    fault_scenario: str


@dataclass(frozen=True)
class Capabilities:
    other_node: bool  # another node of the pool could take the failed task
    uses_gpus: bool


def retryable(t: Termination, policy: FaultPolicy) -> bool:
    if t.kind in (EndKind.SIGNALED, EndKind.LOST, EndKind.START_FAILED, EndKind.HANG):
        return True
    # Out of memory is the job's own doing, as on ModelArts (an OOM-killed container is a user error,
    # not a fault the platform recovers from): restarting it would only run out of memory again.
    # Retried only under unconditional retry, like a non-zero exit.
    return t.kind in (EndKind.USER_EXIT, EndKind.OOM) and policy.unconditional


def _first_tier(t: Termination) -> int:
    # A task whose node is gone cannot be restarted in place.
    return LADDER.index(POD_RESCHEDULE) if t.kind in (EndKind.LOST, EndKind.START_FAILED) else 0


def _possible(tier: str, cap: Capabilities) -> bool:
    if tier in (POD_RESCHEDULE, JOB_RESCHEDULE_WITH_TAINT):
        return cap.other_node
    return True


def plan_recovery(t: Termination, policy: FaultPolicy, state: RecoveryState, cap: Capabilities,
                  ran_long: bool) -> Recovery | None:
    """How to recover from `t`, or None when the job must end.

    `ran_long`: the ended attempt ran long enough to count as a success of the last tier, so the
    ladder starts again from the top instead of downgrading.
    """
    if t.kind is EndKind.HANG and policy.hang_retry and state.hang_restarts < MAX_HANG_RESTARTS:
        tier = GPU_PROC_RESTART if cap.uses_gpus else PROC_RESTART
        return Recovery(tier, tier, replace(state, hang_restarts=state.hang_restarts + 1), False, "hang")
    if not retryable(t, policy):
        return None
    in_place_possible = t.kind not in (EndKind.LOST, EndKind.START_FAILED)
    if in_place_possible and state.pod_retries_used < policy.pod_retry_num:
        tier = GPU_PROC_RESTART if cap.uses_gpus else PROC_RESTART
        return Recovery(tier, tier, replace(state, pod_retries_used=state.pod_retries_used + 1, hang_restarts=0),
                        False, t.kind.value)
    if state.retries_used >= policy.budget:
        return None
    first = _first_tier(t)
    # the ladder starts at the top, or one tier lower than the last recovery, which failed
    index = first if state.tier < 0 or ran_long else max(first, min(state.tier + 1, len(LADDER) - 1))
    wanted = LADDER[index]
    used_index = index
    while not _possible(LADDER[used_index], cap):
        used_index += 1
        if used_index >= len(LADDER):
            used_index = LADDER.index(JOB_RESCHEDULE)
            break
    tier = LADDER[used_index]
    if tier == PROC_RESTART and cap.uses_gpus:
        tier = GPU_PROC_RESTART
    if wanted == PROC_RESTART and cap.uses_gpus:
        wanted = GPU_PROC_RESTART
    new_state = replace(state, retries_used=state.retries_used + 1, hang_restarts=0, tier=used_index)
    return Recovery(tier, wanted, new_state, True, t.kind.value)
