"""A job's timeline (docs/CONSOLE.md): its waits, each attempt's preparation and run, on one time axis
from its creation to its end (now while it runs).

Built from the job's stages (ObserveService.stages: per started attempt, the wait before it, queued or
recovering, its preparation and its run, in milliseconds) and its running records (the end reason and
recovery of each). A wait is the time in the queue before the first start, or between two attempts
(after a preemption: back in the queue; after a failure: the recovery); a job waiting now has a last
wait up to now. An attempt ended by preemption is marked (core/reasons.py `is_preemption`).
"""

from __future__ import annotations

from typing import Any, NamedTuple

from openarts.core.phases import TERMINAL, Phase
from openarts.core.reasons import is_preemption

MIN_WIDTH = 0.4  # percent: a span too short to see is drawn this wide


class Span(NamedTuple):
    """One piece of the timeline: where it starts and how wide it is, in percent of the axis."""

    kind: str  # "wait", "prep" (staging code and data, starting workers) or "run"
    seq: int  # the attempt it is, or leads to (0: none has started since)
    start_ms: int
    end_ms: int
    left: float
    width: float
    css: str  # the classes that draw it
    label: str
    title: str

    @property
    def took(self) -> str:
        """How long it took, in words."""
        seconds = max(0, self.end_ms - self.start_ms) // 1000
        hours, minutes = seconds // 3600, seconds % 3600 // 60
        return f"{hours} h {minutes} min" if hours else f"{minutes} min {seconds % 60} s" if minutes else \
            f"{seconds} s" if seconds else f"{max(0, self.end_ms - self.start_ms)} ms"


class Timeline(NamedTuple):
    spans: list[Span]
    start_ms: int
    end_ms: int

    @property
    def duration_ms(self) -> int:
        return self.end_ms - self.start_ms


def _ms(text: str) -> int | None:
    return int(text) if text else None


def job_timeline(doc: dict[str, Any], stages: dict[str, Any], now_ms: int) -> Timeline:
    """The timeline of a job document and its stages (as ObserveService.stages renders them)."""
    status = doc["status"]
    final = Phase(status["phase"]) in TERMINAL
    records = status["running_records"]  # the same started attempts, in the same order
    pieces: list[tuple[str, int, int, int, str, str, str]] = []  # kind, seq, start, end, css, label, title
    preempted = False  # the attempt before ended by preemption
    end: int | None = doc["metadata"]["create_time"]
    for i, rec in enumerate(stages["running_records"]):
        seq = int(rec["record_order"])
        by_name = {s["name"]: s for s in rec["stages"]}
        wait = by_name.get("queuing") or by_name.get("recovering")
        prep, run = by_name["preparing"], by_name["running"]
        record = records[i] if i < len(records) else {}
        if wait is not None:
            pieces.append(_wait(seq, int(wait["start_time"]), int(wait["end_time"]), preempted,
                                wait["name"] == "recovering"))
        pieces.append(("prep", seq, int(prep["start_time"]), int(prep["end_time"]), "prep", "",
                       f"attempt #{seq}: preparing (code, data, workers)"))
        end = _ms(run["end_time"])
        reason = str(record.get("end_reason") or (run["en_message"] if end else ""))
        preempted = bool(end) and is_preemption(reason)
        recover = record.get("end_recover", "")
        css = "running" if end is None else "ok" if reason == "job completed" else \
            "ended preempted" if preempted else "ended"
        label = f"#{seq}" + (" preempted" if preempted else "") + (f" → {recover}" if recover else "")
        title = f"attempt #{seq}: {reason or 'running'}" + (f", recovered by {recover}" if recover else "")
        pieces.append(("run", seq, int(run["start_time"]), end or now_ms, css, label, title))
    if not final and end is not None:  # between attempts, or before the first: waiting now
        queued = status["phase"] == Phase.PENDING
        pieces.append(("wait", 0, end, now_ms, "wait now", "queued" if queued else "waiting",
                       f"waiting since then ({status['secondary_phase']})"
                       + (": preempted, back in the queue" if preempted else "")))
    if not pieces:
        return Timeline([], 0, 0)
    start = min(p[2] for p in pieces)
    stop = max(max(p[3] for p in pieces), start + 1)
    span = stop - start
    return Timeline([Span(kind, seq, s, e, 100 * (s - start) / span, max(MIN_WIDTH, 100 * (e - s) / span),
                          css, label, title) for kind, seq, s, e, css, label, title in pieces if e >= s],
                    start, stop)


def _wait(seq: int, start: int, end: int, preempted: bool, recovering: bool) -> tuple[str, int, int, int, str,
                                                                                         str, str]:
    if preempted:
        label, title = "requeued", f"preempted: back in the queue until attempt #{seq}"
    elif recovering:
        label, title = "recovering", f"recovering before attempt #{seq}"
    else:
        label, title = "queued", f"in the queue before attempt #{seq}"
    return "wait", seq, start, end, "wait", label, title
