"""The pure decisions: attempt outcomes, first failure, grace periods, exit classification."""

from __future__ import annotations

from openarts.core.phases import Phase, Secondary
from openarts.core.reasons import EndKind, classify_exit, outcome
from openarts.supervisor.decide import LOST_EXIT, Act, TaskView, decide_attempt


def tv(task: str, idx: int, code: int | None, end: int = 0) -> TaskView:
    return TaskView(task, idx, code, end)


def test_all_zero_completes() -> None:
    d = decide_attempt([tv("worker-0", 0, 0, 5), tv("worker-1", 1, 0, 6)], 10, 1000, None)
    assert d.act is Act.FINISH and d.termination is not None
    assert d.termination.kind is EndKind.COMPLETED and d.termination.end_reason == "job completed"


def test_running_waits() -> None:
    assert decide_attempt([tv("worker-0", 0, None), tv("worker-1", 1, 0, 5)], 10, 1000, None).act is Act.WAIT


def test_first_failure_stops_others_then_kills_after_grace() -> None:
    tasks = [tv("worker-0", 0, None), tv("worker-1", 1, 127, 100)]
    assert decide_attempt(tasks, 200, 1000, None).act is Act.STOP_OTHERS
    assert decide_attempt(tasks, 1100, 1000, None).act is Act.KILL_OTHERS


def test_first_failing_task_is_named_not_the_ones_stopped_after_it() -> None:
    tasks = [tv("worker-0", 0, 143, 300), tv("worker-1", 1, 127, 100)]
    d = decide_attempt(tasks, 400, 1000, None)
    assert d.act is Act.FINISH and d.termination is not None
    assert d.termination.related_task == "worker-1" and d.termination.end_reason == "exit with 127"


def test_terminating() -> None:
    live = [tv("worker-0", 0, None)]
    assert decide_attempt(live, 100, 1000, 50).act is Act.WAIT
    assert decide_attempt(live, 2000, 1000, 50).act is Act.KILL_OTHERS
    d = decide_attempt([tv("worker-0", 0, 143, 120)], 200, 1000, 50)
    assert d.termination is not None and d.termination.kind is EndKind.TERMINATED


def test_lost_task() -> None:
    d = decide_attempt([TaskView("worker-0", 0, LOST_EXIT, 10, lost=True)], 20, 1000, None)
    assert d.termination is not None and d.termination.kind is EndKind.LOST
    assert outcome(d.termination) == (Phase.FAILED, Secondary.LOST)


def test_classify_exit() -> None:
    assert classify_exit("worker-0", 1).kind is EndKind.USER_EXIT
    t = classify_exit("worker-0", 137)
    assert t.kind is EndKind.SIGNALED and "SIGKILL" in t.end_reason and t.end_reason.startswith("exit with 137")
    assert classify_exit("worker-0", 0).kind is EndKind.COMPLETED
