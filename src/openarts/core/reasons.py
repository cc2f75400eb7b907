"""Termination reasons: how an attempt ended decides the job's phase and whether a retry may follow.

A reason is data, not an exception: the supervisor classifies what it observed into a `Termination`,
and `outcome()` maps it to the phase the job moves to. Retry policy (issue 3) hooks in here.
"""

from __future__ import annotations

import signal
from dataclasses import dataclass
from enum import StrEnum

from openarts.core.phases import Phase, Secondary


class EndKind(StrEnum):
    COMPLETED = "completed"  # every worker exited 0
    USER_EXIT = "user_exit"  # a worker exited non-zero on its own
    SIGNALED = "signaled"  # a worker was killed by a signal nobody in openarts sent
    LOST = "lost"  # workers vanished (machine reboot, shim gone) with no exit status
    START_FAILED = "start_failed"  # the executor could not start a worker
    HANG = "hang"  # no output and no CPU progress for the hang window
    OOM = "oom"  # the task's processes held more memory than its flavor has: killed by openarts
    PREPARE_FAILED = "prepare_failed"  # code, boot file, engine or data could not be prepared
    TERMINATED = "terminated"  # the user asked for it


@dataclass(frozen=True)
class Termination:
    kind: EndKind
    end_reason: str  # the running record's end_reason, e.g. "exit with 127", "job completed"
    related_task: str | None = None
    exit_code: int | None = None


def classify_exit(task: str, exit_code: int) -> Termination:
    """Classify one task's exit status as reported by the shim (128+N means signal N)."""
    if exit_code == 0:
        return Termination(EndKind.COMPLETED, "job completed", None, 0)
    if exit_code > 128 and exit_code - 128 < 65:
        signum = exit_code - 128
        try:
            name = signal.Signals(signum).name
        except ValueError:
            name = f"signal {signum}"
        return Termination(EndKind.SIGNALED, f"exit with {exit_code} (killed by {name})", task, exit_code)
    return Termination(EndKind.USER_EXIT, f"exit with {exit_code}", task, exit_code)


PREEMPTED_PREFIX = "preempted by job "  # the end reason of an attempt stopped for a higher-priority job


def preempted_reason(by_job: str) -> str:
    """The end reason of an attempt preempted by job `by_job` (it goes back to the queue)."""
    return f"{PREEMPTED_PREFIX}{by_job}"


def is_preemption(end_reason: str) -> bool:
    return end_reason.startswith(PREEMPTED_PREFIX)


def oom_reason(used_bytes: int, limit_mb: int) -> str:
    """The end reason of a task ended for holding more memory than its flavor has."""
    return f"out of memory: {used_bytes // 2**20} MiB used, flavor limit {limit_mb} MiB"


def outcome(t: Termination) -> tuple[Phase, Secondary]:
    """The final phase for an attempt that ends this way and is not retried."""
    if t.kind is EndKind.COMPLETED:
        return Phase.COMPLETED, Secondary.COMPLETED
    if t.kind is EndKind.TERMINATED:
        return Phase.TERMINATED, Secondary.TERMINATED
    if t.kind is EndKind.PREPARE_FAILED:
        return Phase.ABNORMAL, Secondary.CREATE_FAILED
    if t.kind is EndKind.LOST:
        return Phase.FAILED, Secondary.LOST
    return Phase.FAILED, Secondary.FAILED


AUTO_STOPPED = "auto stopped"  # how a termination by spec.auto_stop's reason begins (supervisor/attempts.py)
