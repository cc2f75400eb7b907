"""Phases, secondary phases and the allowed transitions: the one place that defines the lifecycle.

See docs/STATES.md for the diagram. `store.jobs.transition()` is the only writer of a phase and
refuses any move that `can_transition()` does not allow.
"""

from __future__ import annotations

from enum import StrEnum


class Phase(StrEnum):
    CREATING = "Creating"
    PENDING = "Pending"
    RUNNING = "Running"
    FAILED = "Failed"
    COMPLETED = "Completed"
    TERMINATING = "Terminating"
    TERMINATED = "Terminated"
    ABNORMAL = "Abnormal"


class Secondary(StrEnum):
    CREATING = "Creating"
    QUEUING = "Queuing"
    RUNNING = "Running"
    FAILED = "Failed"
    COMPLETED = "Completed"
    TERMINATING = "Terminating"
    TERMINATED = "Terminated"
    CREATE_FAILED = "CreateFailed"
    TERMINATED_FAILED = "TerminatedFailed"
    UNKNOWN = "Unknown"
    LOST = "Lost"


TERMINAL: frozenset[Phase] = frozenset({Phase.FAILED, Phase.COMPLETED, Phase.TERMINATED, Phase.ABNORMAL})

# Phases a user may terminate from (ModelArts: "creating, awaiting or running").
TERMINABLE: frozenset[Phase] = frozenset({Phase.CREATING, Phase.PENDING, Phase.RUNNING})

ALLOWED: dict[Phase, frozenset[Phase]] = {
    Phase.CREATING: frozenset({Phase.PENDING, Phase.ABNORMAL, Phase.TERMINATED}),
    # Pending -> Failed: its workers could not be started and its retry budget is spent.
    Phase.PENDING: frozenset({Phase.RUNNING, Phase.ABNORMAL, Phase.TERMINATED, Phase.FAILED}),
    # Running -> Pending is a requeue (recovery by rescheduling, preemption).
    Phase.RUNNING: frozenset(
        {Phase.COMPLETED, Phase.FAILED, Phase.TERMINATING, Phase.PENDING, Phase.ABNORMAL}
    ),
    Phase.TERMINATING: frozenset({Phase.TERMINATED}),
    Phase.FAILED: frozenset(),
    Phase.COMPLETED: frozenset(),
    Phase.TERMINATED: frozenset(),
    Phase.ABNORMAL: frozenset(),
}

# The secondary phase a phase takes when no more specific one is given.
DEFAULT_SECONDARY: dict[Phase, Secondary] = {
    Phase.CREATING: Secondary.CREATING,
    Phase.PENDING: Secondary.QUEUING,
    Phase.RUNNING: Secondary.RUNNING,
    Phase.FAILED: Secondary.FAILED,
    Phase.COMPLETED: Secondary.COMPLETED,
    Phase.TERMINATING: Secondary.TERMINATING,
    Phase.TERMINATED: Secondary.TERMINATED,
    Phase.ABNORMAL: Secondary.UNKNOWN,
}


def can_transition(src: Phase, dst: Phase) -> bool:
    return dst in ALLOWED[src]


def is_terminal(phase: Phase | str) -> bool:
    return Phase(phase) in TERMINAL
