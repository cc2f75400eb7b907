"""The precedence table: what a job does next, for every combination that matters."""

from __future__ import annotations

import pytest

from openarts.core.phases import Phase
from openarts.core.reasons import EndKind, Termination
from openarts.supervisor.decide import Act, Decision
from openarts.supervisor.steps import Apply, AttemptState, JobState, Staging, Step, apply_of, next_step

RUNNING_ATTEMPT = AttemptState(started=True, ended=False)
UNSTARTED = AttemptState(started=False, ended=False)
CLOSED_PROC = AttemptState(started=True, ended=True, end_recover="proc_restart")
CLOSED_POD = AttemptState(started=True, ended=True, end_recover="pod_reschedule")
CLOSED_REQUEUED = AttemptState(started=True, ended=True, end_recover="job_reschedule")
CLOSED_FINAL = AttemptState(started=True, ended=True)
STAGING = AttemptState(started=False, ended=False, staging=Staging.RUNNING)
STAGED = AttemptState(started=False, ended=False, staging=Staging.DONE)
STAGING_FAILED = AttemptState(started=False, ended=False, staging=Staging.FAILED)

P, T = Phase, True
TABLE = [
    # final jobs: purged when deletion was asked for, else nothing
    (JobState(P.COMPLETED), Step.NOTHING),
    (JobState(P.FAILED, delete=T, terminate=T, attempt=CLOSED_FINAL), Step.PURGE),
    (JobState(P.ABNORMAL, delete=T), Step.PURGE),
    # Creating
    (JobState(P.CREATING), Step.PREPARE),
    (JobState(P.CREATING, terminate=T), Step.CANCEL),
    (JobState(P.CREATING, terminate=T, delete=T), Step.CANCEL),
    # Pending: a half-started attempt is discarded before anything else, then terminate wins
    (JobState(P.PENDING), Step.SCHEDULE),
    (JobState(P.PENDING, retry_due=False), Step.BACKOFF),
    (JobState(P.PENDING, terminate=T), Step.CANCEL),
    (JobState(P.PENDING, terminate=T, retry_due=False), Step.CANCEL),
    (JobState(P.PENDING, attempt=UNSTARTED), Step.DISCARD_UNSTARTED),
    (JobState(P.PENDING, attempt=UNSTARTED, terminate=T), Step.DISCARD_UNSTARTED),
    (JobState(P.PENDING, attempt=CLOSED_REQUEUED), Step.SCHEDULE),
    # Pending with its attempt's data being staged in the background: wait, start, fail; a terminate
    # cancels the staging, and once it has stopped the attempt is discarded (then the job is cancelled)
    (JobState(P.PENDING, attempt=STAGING), Step.WAIT_STAGING),
    (JobState(P.PENDING, attempt=STAGING, terminate=T), Step.STOP_STAGING),
    (JobState(P.PENDING, attempt=STAGED), Step.START_STAGED),
    (JobState(P.PENDING, attempt=STAGED, terminate=T), Step.DISCARD_UNSTARTED),
    (JobState(P.PENDING, attempt=STAGING_FAILED), Step.STAGING_FAILED),
    (JobState(P.PENDING, attempt=STAGING_FAILED, terminate=T), Step.DISCARD_UNSTARTED),
    (JobState(P.RUNNING, attempt=STAGING), Step.WAIT_STAGING),  # a pod_reschedule restart stages again
    (JobState(P.RUNNING, attempt=STAGED), Step.START_STAGED),
    (JobState(P.RUNNING, attempt=STAGING, terminate=T), Step.STOP_STAGING),
    (JobState(P.TERMINATING, terminate=T, attempt=STAGING), Step.STOP_STAGING),
    (JobState(P.TERMINATING, terminate=T, attempt=STAGED), Step.DISCARD_UNSTARTED),
    (JobState(P.PENDING, attempt=CLOSED_REQUEUED, terminate=T), Step.CANCEL),
    # Running, attempt live
    (JobState(P.RUNNING, attempt=RUNNING_ATTEMPT), Step.SUPERVISE),
    (JobState(P.RUNNING, attempt=RUNNING_ATTEMPT, preempt=T), Step.SUPERVISE),
    (JobState(P.RUNNING, attempt=RUNNING_ATTEMPT, terminate=T), Step.BEGIN_TERMINATE),
    (JobState(P.RUNNING, attempt=RUNNING_ATTEMPT, terminate=T, preempt=T), Step.BEGIN_TERMINATE),
    (JobState(P.RUNNING, attempt=UNSTARTED, terminate=T), Step.DISCARD_UNSTARTED),
    # Running, between attempts: terminate > preempt > restart
    (JobState(P.RUNNING, attempt=CLOSED_PROC), Step.RESTART),
    (JobState(P.RUNNING, attempt=CLOSED_POD), Step.RESTART),
    (JobState(P.RUNNING, attempt=CLOSED_PROC, preempt=T), Step.REQUEUE_PREEMPTED),
    (JobState(P.RUNNING, attempt=CLOSED_PROC, terminate=T), Step.CANCEL_RECOVERY),
    (JobState(P.RUNNING, attempt=CLOSED_PROC, terminate=T, preempt=T), Step.CANCEL_RECOVERY),
    (JobState(P.RUNNING, attempt=CLOSED_FINAL), Step.NOTHING),
    # Terminating
    (JobState(P.TERMINATING, terminate=T, attempt=RUNNING_ATTEMPT), Step.SUPERVISE),
    (JobState(P.TERMINATING, terminate=T, attempt=CLOSED_PROC), Step.FINISH_TERMINATED),
    (JobState(P.TERMINATING, terminate=T, attempt=CLOSED_PROC, preempt=T), Step.FINISH_TERMINATED),
    (JobState(P.TERMINATING, terminate=T, attempt=UNSTARTED), Step.DISCARD_UNSTARTED),
]


@pytest.mark.parametrize(("state", "step"), TABLE, ids=[f"{s.phase}-{i}" for i, (s, _) in enumerate(TABLE)])
def test_next_step(state: JobState, step: Step) -> None:
    assert next_step(state) is step


DONE = Termination(EndKind.COMPLETED, "job completed")
APPLY = [
    (Decision(Act.WAIT), False, Apply.WAIT),
    (Decision(Act.WAIT), True, Apply.TERM),  # a preemption stops the workers like a terminate
    (Decision(Act.STOP_OTHERS), False, Apply.TERM),
    (Decision(Act.STOP_OTHERS), True, Apply.TERM),
    (Decision(Act.KILL_OTHERS), False, Apply.KILL),
    (Decision(Act.KILL_OTHERS), True, Apply.KILL),
    (Decision(Act.FINISH, DONE), False, Apply.FINISH),
    (Decision(Act.FINISH, DONE), True, Apply.REQUEUE),  # a preempted attempt goes back to the queue
]


@pytest.mark.parametrize(("decision", "preempting", "expected"), APPLY)
def test_apply_of(decision: Decision, preempting: bool, expected: Apply) -> None:
    assert apply_of(decision, preempting) is expected


def test_every_step_is_reachable() -> None:
    assert {s for _, s in TABLE} == set(Step)
