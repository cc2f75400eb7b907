"""Pure decisions for a job's current attempt, from what was observed. No I/O here.

The supervisor loads the job and its tasks, polls the executor, and asks `decide_attempt` what to do;
it then carries the answer out. Level-triggered: the same state always gives the same answer, so a
restarted server picks up where the last one stopped.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from openarts.core.reasons import EndKind, Termination, classify_exit


@dataclass(frozen=True)
class TaskView:
    task: str
    idx: int
    exit_code: int | None  # recorded exit
    end_ms: int
    lost: bool = False  # recorded as lost (exit code -1 with the lost marker)
    hung_ms: int = 0  # marked hung by hang detection (it may still be running)
    oom_ms: int = 0  # over its flavor's memory: killed by the metrics sampler (it may still be running)
    oom_reason: str = ""  # "out of memory: 812 MiB used, flavor limit 512 MiB"


class Act(StrEnum):
    WAIT = "wait"  # nothing to do
    STOP_OTHERS = "stop_others"  # a task failed: SIGTERM the rest
    KILL_OTHERS = "kill_others"  # the grace period is over: SIGKILL the rest
    FINISH = "finish"  # every task ended: close the attempt with `termination`


@dataclass(frozen=True)
class Decision:
    act: Act
    termination: Termination | None = None


LOST_EXIT = -1


def _failed_at(t: TaskView) -> int | None:
    if t.hung_ms:
        return t.hung_ms
    if t.oom_ms and t.exit_code != 0:  # failed when it was killed, before peers that lost it exit
        return t.oom_ms
    if t.exit_code is not None and t.exit_code != 0:
        return t.end_ms
    return None


def first_failure(tasks: list[TaskView]) -> TaskView | None:
    failed = [(at, t.idx, t) for t in tasks if (at := _failed_at(t)) is not None]
    return min(failed, key=lambda x: (x[0], x[1]))[2] if failed else None


def termination_of(t: TaskView) -> Termination:
    if t.oom_ms and t.exit_code != 0:  # an exit 0 that beat the kill is a completion
        return Termination(EndKind.OOM, t.oom_reason or "out of memory", t.task, t.exit_code)
    if t.hung_ms:
        return Termination(EndKind.HANG, "task hung: no output and no CPU progress within the hang window",
                           t.task, None)
    assert t.exit_code is not None
    if t.lost or t.exit_code == LOST_EXIT:
        return Termination(EndKind.LOST, "task lost", t.task, None)
    return classify_exit(t.task, t.exit_code)


def decide_attempt(tasks: list[TaskView], now_ms: int, grace_ms: int, terminating_since_ms: int | None
                   ) -> Decision:
    """What to do with a running (or terminating) attempt.

    `terminating_since_ms` is set when the user asked to terminate: then every task is stopped and the
    attempt ends as terminated, whatever the exit codes.
    """
    live = [t for t in tasks if t.exit_code is None]
    if terminating_since_ms is not None:
        if not live:
            return Decision(Act.FINISH, Termination(EndKind.TERMINATED, "job terminated by user"))
        if now_ms - terminating_since_ms >= grace_ms:
            return Decision(Act.KILL_OTHERS)
        return Decision(Act.WAIT)
    failed = first_failure(tasks)
    if failed is None:
        if live:
            return Decision(Act.WAIT)
        return Decision(Act.FINISH, Termination(EndKind.COMPLETED, "job completed"))
    if not live:
        return Decision(Act.FINISH, termination_of(failed))
    if now_ms - (_failed_at(failed) or now_ms) >= grace_ms:
        return Decision(Act.KILL_OTHERS)
    return Decision(Act.STOP_OTHERS)
