"""What a job does next: the precedence between delete, terminate, preempt, restart and finish, as
pure functions of what a pass loaded (dstack's `_get_active_run_transition`). The supervisor carries
the answer out; tests/unit/test_steps.py holds the table.

Precedence, highest first:
1. a final job whose deletion was asked for is purged;
2. an attempt opened but not started: while its data is staged (supervisor/transfers.py) it waits, or
   its staging is cancelled when a terminate came; once staged its workers are spawned, or the job ends
   when staging failed; with no staging (the server died while staging or spawning it), or a terminate,
   it is discarded;
3. the user's terminate wins over everything that would run the job again (scheduling, a pending
   in-place restart, a requeue after preemption);
4. between two attempts (the last one closed): a preempted job is requeued, an in-place tier restarts;
5. otherwise a Running or Terminating attempt is supervised (observe, then `decide_attempt`).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from openarts.core import faults
from openarts.core.phases import TERMINAL, Phase
from openarts.supervisor.decide import Act, Decision


class Step(StrEnum):
    PURGE = "purge"  # remove its rows and files
    NOTHING = "nothing"  # final, or waiting for something else to move first
    PREPARE = "prepare"  # Creating -> Pending (or Abnormal when its code cannot be found)
    CANCEL = "cancel"  # Creating/Pending -> Terminated: nothing runs yet
    DISCARD_UNSTARTED = "discard_unstarted"  # kill what a half-started attempt spawned, forget it
    WAIT_STAGING = "wait_staging"  # its code and inputs are being staged in the background
    STOP_STAGING = "stop_staging"  # staging, and a terminate came: cancel it, then discard
    START_STAGED = "start_staged"  # staged: spawn the workers, mark the attempt started
    STAGING_FAILED = "staging_failed"  # the code or an input could not be staged: the job ends Abnormal
    SCHEDULE = "schedule"  # offer it to the planner
    BACKOFF = "backoff"  # Pending after a start failure: not before its retry time
    REQUEUE_PREEMPTED = "requeue_preempted"  # Running -> Pending at its old queue position
    FINISH_TERMINATED = "finish_terminated"  # Terminating with no attempt running -> Terminated
    CANCEL_RECOVERY = "cancel_recovery"  # Running between attempts + terminate -> Terminating
    RESTART = "restart"  # Running between attempts, closed with an in-place tier: next attempt
    BEGIN_TERMINATE = "begin_terminate"  # Running + terminate: -> Terminating and SIGTERM every worker
    SUPERVISE = "supervise"  # observe the tasks and decide


class Staging(StrEnum):
    NONE = "none"  # no staging known for the attempt (never started, or the server restarted)
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"  # or cancelled


@dataclass(frozen=True)
class AttemptState:
    started: bool  # every worker was spawned
    ended: bool  # closed (a recovery or the job's end follows)
    end_recover: str = ""  # the recovery tier it was closed with, if any
    staging: Staging = Staging.NONE


@dataclass(frozen=True)
class JobState:
    phase: Phase
    terminate: bool = False
    preempt: bool = False
    delete: bool = False
    attempt: AttemptState | None = None
    retry_due: bool = True  # Pending: its start-failure backoff is over (or it had none)


def next_step(j: JobState) -> Step:
    if j.phase in TERMINAL:
        return Step.PURGE if j.delete else Step.NOTHING
    if j.phase is Phase.CREATING:
        return Step.CANCEL if j.terminate else Step.PREPARE
    a = j.attempt
    if a is not None and not a.started and j.phase in (Phase.PENDING, Phase.RUNNING, Phase.TERMINATING):
        stopping = j.terminate or j.phase is Phase.TERMINATING
        if a.staging is Staging.RUNNING:
            return Step.STOP_STAGING if stopping else Step.WAIT_STAGING
        if a.staging is Staging.DONE and not stopping:
            return Step.START_STAGED
        if a.staging is Staging.FAILED and not stopping:
            return Step.STAGING_FAILED
        return Step.DISCARD_UNSTARTED
    if j.phase is Phase.PENDING:
        if j.terminate:
            return Step.CANCEL
        return Step.SCHEDULE if j.retry_due else Step.BACKOFF
    if a is not None and a.ended:  # between attempts
        if j.phase is Phase.TERMINATING:
            return Step.FINISH_TERMINATED
        if j.terminate:
            return Step.CANCEL_RECOVERY
        if j.preempt:
            return Step.REQUEUE_PREEMPTED
        if a.end_recover in faults.IN_PLACE:
            return Step.RESTART
        return Step.NOTHING  # closed without an in-place tier: its requeue or end is already written
    if j.phase is Phase.RUNNING and j.terminate:
        return Step.BEGIN_TERMINATE
    return Step.SUPERVISE


class Apply(StrEnum):
    WAIT = "wait"
    TERM = "term"  # SIGTERM the live workers (once each)
    KILL = "kill"  # SIGKILL the live workers
    FINISH = "finish"  # close the attempt: the job ends, or a recovery begins
    REQUEUE = "requeue"  # a preempted attempt has ended: back to the queue


def apply_of(decision: Decision, preempting: bool) -> Apply:
    """What to do with `decide_attempt`'s answer; a preemption stops the workers like a terminate
    (SIGTERM, then SIGKILL after the grace period) and then requeues instead of finishing."""
    if decision.act is Act.FINISH:
        return Apply.REQUEUE if preempting else Apply.FINISH
    if decision.act is Act.KILL_OTHERS:
        return Apply.KILL
    if decision.act is Act.STOP_OTHERS or preempting:
        return Apply.TERM
    return Apply.WAIT
