"""console/timeline.py: a job's waits, preparations and runs on one axis, from the job's stages and
running records (as ObserveService.stages and the job document render them)."""

from __future__ import annotations

from typing import Any

from openarts.console.timeline import job_timeline


def _stage(name: str, start: int, end: int | None, message: str = "") -> dict[str, Any]:
    return {"name": name, "start_time": str(start), "end_time": str(end) if end else "", "en_message": message}


def _doc(phase: str, secondary: str, records: list[dict[str, Any]]) -> dict[str, Any]:
    return {"metadata": {"create_time": 1000},
            "status": {"phase": phase, "secondary_phase": secondary, "running_records": records}}


def test_a_preempted_attempt_its_requeue_and_the_wait_now() -> None:
    stages = {"running_records": [{"record_order": 1, "stages": [
        _stage("queuing", 1000, 3000), _stage("preparing", 3000, 3500),
        _stage("running", 3500, 6000, "preempted by job J")]}]}
    records = [{"start_at": 3, "end_at": 6, "end_reason": "preempted by job J"}]
    tl = job_timeline(_doc("Pending", "Queuing", records), stages, now_ms=11000)
    assert [(s.kind, s.css, s.label) for s in tl.spans] == [
        ("wait", "wait", "queued"), ("prep", "prep", ""), ("run", "ended preempted", "#1 preempted"),
        ("wait", "wait now", "queued")]
    assert (tl.start_ms, tl.end_ms) == (1000, 11000)
    assert [round(s.left) for s in tl.spans] == [0, 20, 25, 50] and round(tl.spans[0].width) == 20
    assert tl.spans[2].title == "attempt #1: preempted by job J" and tl.spans[2].took == "2 s"
    assert tl.spans[3].title == "waiting since then (Queuing): preempted, back in the queue"


def test_a_recovery_and_a_requeue_between_attempts() -> None:
    stages = {"running_records": [
        {"record_order": 1, "stages": [_stage("queuing", 1000, 1000), _stage("preparing", 1000, 1100),
                                       _stage("running", 1100, 2000, "exit with 4")]},
        {"record_order": 2, "stages": [_stage("recovering", 2000, 2500), _stage("preparing", 2500, 2600),
                                       _stage("running", 2600, None, "Running.")]}]}
    records = [{"end_reason": "exit with 4", "end_recover": "proc_restart"}, {}]
    tl = job_timeline(_doc("Running", "Running", records), stages, now_ms=4000)
    runs = [(s.css, s.label) for s in tl.spans if s.kind == "run"]
    assert runs == [("ended", "#1 → proc_restart"), ("running", "#2")]
    assert [s.label for s in tl.spans if s.kind == "wait"] == ["queued", "recovering"]  # no wait after: it runs
    assert tl.spans[-1].end_ms == 4000


def test_a_job_not_started_yet_and_one_that_never_will() -> None:
    waiting = job_timeline(_doc("Pending", "Queuing", []), {"running_records": []}, now_ms=5000)
    assert [(s.label, s.start_ms, s.end_ms) for s in waiting.spans] == [("queued", 1000, 5000)]
    assert job_timeline(_doc("Terminated", "Terminated", []), {"running_records": []}, 5000).spans == []
