"""Running and Terminating attempts: observe the tasks, stop them, end the attempt, recover.

The supervisor's half that deals with an attempt that is running (supervisor/loop.py has the pass,
scheduling and starting). What to do is decided by pure functions (`decide_attempt`, `apply_of`,
`faults.plan_recovery`); this module observes and carries it out.

Level-triggered recovery: a Running job whose latest attempt is closed with an in-place tier
(`end_recover`) is restarted by whichever pass sees it, so a crash between the two steps is harmless.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import logging
import os
import signal
import sqlite3
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from openarts.config import Settings
from openarts.core import faults, notify
from openarts.core.errors import OpenartsError
from openarts.core.phases import Phase, Secondary
from openarts.core.reasons import AUTO_STOPPED, EndKind, Termination, outcome, preempted_reason
from openarts.core.spec import JobSpec, exported_log_name
from openarts.executors.base import Executor, TaskHandle
from openarts.scheduler.ledger import Ledger
from openarts.scheduler.plan import demand_of
from openarts.storage.obs import Manifest, ObjectStore
from openarts.store import jobs as w
from openarts.store import queries as q
from openarts.store.db import Database
from openarts.store.rows import AttemptRow, JobRow, TaskRow
from openarts.supervisor import telemetry as tm
from openarts.supervisor import workspace as ws
from openarts.supervisor.decide import LOST_EXIT, TaskView, decide_attempt
from openarts.supervisor.steps import Apply, apply_of
from openarts.supervisor.transfers import Kind, Note, Transfers

if TYPE_CHECKING:
    from openarts.supervisor.metrics import MetricsSampler

log = logging.getLogger("openarts.supervisor")

TAIL_LINES = 20
INIT = "init_or_rescheduled"


def faultpoint(name: str) -> None:
    """Crash-consistency tests kill the server at named points (OPENARTS_FAULTPOINT=name)."""
    if os.environ.get("OPENARTS_FAULTPOINT") == name:
        log.warning("fault point %s: killing the server", name)
        os.kill(os.getpid(), signal.SIGKILL)


def tail(path: Path, lines: int = TAIL_LINES, max_bytes: int = 16384) -> str:
    try:
        with open(path, "rb") as fh:
            fh.seek(0, 2)
            size = fh.tell()
            fh.seek(max(0, size - max_bytes))
            data = fh.read()
    except OSError:
        return ""
    text = data.decode("utf-8", errors="replace").splitlines()
    return "\n".join(text[-lines:])


def add_notes(conn: sqlite3.Connection, job_id: str, notes: list[Note], at_ms: int) -> None:
    """A transfer's notes as the job's events (source Storage; a failed one a Warning)."""
    for note in notes:
        w.add_event(conn, job_id, note.text, at_ms, level=note.level, source="Storage")


@dataclass
class Pass:
    """What one reconcile pass loaded, and the capacity ledger its placements claim from."""

    rows: list[JobRow]
    tasks: Mapping[str, list[TaskRow]]
    ledger: Ledger
    holding: set[str] = field(default_factory=set)  # the jobs whose tasks hold capacity (snapshot.py)


class AttemptSupervision:
    settings: Settings
    db: Database
    executor: Executor
    store: ObjectStore
    sampler: MetricsSampler | None
    transfers: Transfers
    _termed: set[tuple[str, int, str]]
    _wake: asyncio.Event
    _sent: dict[str, dict[str, Manifest]]
    _upload_at: dict[str, float]

    # provided by the Supervisor (supervisor/loop.py)
    def poke(self, job_id: str | None = None) -> None:
        raise NotImplementedError

    def _spec(self, row: JobRow) -> JobSpec:
        raise NotImplementedError

    def _handle(self, row: JobRow, t: TaskRow) -> TaskHandle:
        raise NotImplementedError

    def _forget(self, job_id: str) -> None:
        raise NotImplementedError

    @staticmethod
    def _run_ms(row: JobRow, now: int) -> int:
        raise NotImplementedError

    async def _release(self, job_id: str, seq: int, nodes: list[str], handles: list[TaskHandle]) -> None:
        """Kill what is left of an attempt's tasks, then give back its reservation and node files."""
        await asyncio.gather(*(self.executor.cleanup(h) for h in handles))
        await self.executor.release(job_id, seq, nodes)

    def _watch(self, handle: TaskHandle) -> None:
        job_id = handle.job_id
        self.executor.watch(handle, lambda: self.poke(job_id))

    # -- Running / Terminating -------------------------------------------------------------------
    async def _begin_terminate(self, row: JobRow, tasks: list[TaskRow], poll: bool, now: int) -> None:
        views = await self._observe(row, tasks, poll, now)
        with self.db.begin() as conn:
            w.transition(conn, row.id, Phase.RUNNING, Phase.TERMINATING, at_ms=now, end_ms=now,
                         event="Job terminating: stopping its workers.")
        await self._signal_all(row, tasks, views, signal.SIGTERM)
        self._wake.set()

    async def _supervise(self, row: JobRow, tasks: list[TaskRow], attempt: AttemptRow | None, poll: bool,
                         ps: Pass) -> None:
        now = w.now_ms()
        views = await self._observe(row, tasks, poll, now)
        self._check_auto_stop(row, now)
        if poll and row.phase == Phase.RUNNING:
            views = self._detect_hangs(row, tasks, views, now)
        preempting = row.phase == Phase.RUNNING and bool(row.preempt_requested)
        since = row.preempt_ms if preempting else (row.end_ms if row.phase == Phase.TERMINATING else None)
        decision = decide_attempt(views, now, int(self.settings.terminate_grace_seconds * 1000), since)
        act = apply_of(decision, preempting)
        if act is Apply.TERM:
            await self._signal_all(row, tasks, views, signal.SIGTERM)
        elif act is Apply.KILL:
            await self._signal_all(row, tasks, views, signal.SIGKILL)
        elif act is Apply.REQUEUE:  # preempted: its outputs go up first, as at any end of an attempt
            assert attempt is not None
            notes = await self._final_uploads(row, tasks, attempt)
            if notes is not None:
                self._requeue_preempted(row, attempt, w.now_ms(), notes)
        elif act is Apply.FINISH:
            assert decision.termination is not None and attempt is not None
            await self._finish(row, tasks, attempt, decision.termination, ps)
        elif row.phase == Phase.RUNNING and attempt is not None:
            self._upload_periodically(row, tasks, attempt)

    # -- outputs while the job runs ---------------------------------------------------------------
    def _period(self, spec: JobSpec) -> float:
        """How often a job's periodic outputs go up: the shortest period its outputs (any role's) ask for."""
        periods = [d.period_s or self.settings.output_period_seconds for r in spec.role_list()
                   for d in [*r.spec.outputs, *([r.spec.summary] if r.spec.summary else [])]
                   if d.mode != "upload_on_exit"]
        return min(periods, default=0.0)

    def _upload_periodically(self, row: JobRow, tasks: list[TaskRow], attempt: AttemptRow) -> None:
        """Every period, the outputs in upload_periodically mode (ModelArts' default) go up in the
        background, only what changed; a failure is an event, and the next period tries again."""
        due = self._upload_at.get(row.id)
        if due is None or time.monotonic() < due:
            return
        done = self.transfers.get(row.id, attempt.seq, Kind.PERIODIC)
        if done is not None:
            if not done.done:
                return
            self.transfers.pop(row.id, attempt.seq, Kind.PERIODIC)
            failed = [n.text for n in done.lines if n.failed]
            if done.error and not done.cancelled:
                failed.append(f"Outputs not uploaded: {done.error}")
            if failed:
                with self.db.begin() as conn:
                    for text in failed:
                        w.add_event(conn, row.id, f"Periodic upload: {text} Retried next period.", w.now_ms(),
                                    level="Warning", source="Storage")
        try:
            spec = self._spec(row)
        except OpenartsError:
            return
        period = self._period(spec)
        if not period:
            self._upload_at.pop(row.id, None)
            return
        self._upload_at[row.id] = time.monotonic() + period
        lays = [lay for _, lay in ws.role_layouts(spec, self.settings.job_dir(row.id), self.executor.sandboxed)]
        sent = self._sent.setdefault(row.id, {})
        handles = [self._handle(row, t) for t in tasks]

        def upload(cancel: threading.Event) -> list[Note]:
            return [n for lay in lays for n in ws.upload_outputs(lay, self.store, sent, cancel, only_periodic=True)]
        self.transfers.start(row.id, attempt.seq, Kind.PERIODIC, functools.partial(
            self._gather_then_upload, handles, upload))

    async def _gather_then_upload(self, handles: list[TaskHandle], upload: Callable[[threading.Event], list[Note]],
                                  cancel: threading.Event) -> list[Note]:
        """An upload transfer's work: the outputs of tasks on remote nodes brought to the server first
        (Executor.gather_outputs: only what changed), then `upload` in a thread."""
        missed = await self.executor.gather_outputs(handles, changed_only=True) if handles else []
        return [Note(line, failed=True) for line in missed] + await asyncio.to_thread(upload, cancel)

    def _requeue_preempted(self, row: JobRow, attempt: AttemptRow, now: int, notes: list[Note]) -> None:
        """A preempted job goes back to the queue (its old position), without using its retry budget."""
        reason = preempted_reason(row.preempted_by)
        with self.db.begin() as conn:
            add_notes(conn, row.id, notes, now)
            w.transition(conn, row.id, Phase.RUNNING, Phase.PENDING, at_ms=now, secondary=Secondary.QUEUING,
                         run_ms=self._run_ms(row, now), running_since_ms=0, event=f"Job {reason}: back in the queue.",
                         level="Warning", notify=notify.PREEMPTED)
            closed = w.close_attempt(conn, row.id, attempt.seq, now, reason, None)
            w.clear_preempt(conn, row.id)
            if closed:
                w.add_node_count(conn, row.id, now, 0)
        tm.PREEMPTIONS.inc()
        self._wake.set()

    def _check_auto_stop(self, row: JobRow, now: int) -> None:
        if row.phase != Phase.RUNNING or row.terminate_requested:
            return
        try:
            limit = self._spec(row).auto_stop_seconds
        except OpenartsError:
            return
        if limit is not None and self._run_ms(row, now) >= limit * 1000:
            with self.db.begin() as conn:
                w.request_terminate(conn, row.id, now, f"{AUTO_STOPPED}: ran longer than {limit} s (spec.auto_stop)")
            self._wake.set()

    async def _observe(self, row: JobRow, tasks: list[TaskRow], poll: bool, now: int) -> list[TaskView]:
        handles = {t.task: self._handle(row, t) for t in tasks if t.exit_code is None} if poll else {}
        states = dict(zip(handles, await asyncio.gather(*(self.executor.poll(h) for h in handles.values())),
                          strict=True))  # polled together: on a cluster, one round trip for the job
        views = []
        for t in tasks:
            exit_code, end_ms, lost = t.exit_code, t.end_ms, t.exit_code == LOST_EXIT
            oom_ms, oom_reason = t.oom_ms, t.oom_reason
            if t.task in states:
                state = states[t.task]
                if state.running:
                    self._watch(handles[t.task])
                else:
                    lost = state.lost
                    exit_code = LOST_EXIT if lost else state.exit_code
                    assert exit_code is not None
                    end_ms = now
                    oom_ms, oom_reason = self._record_exit(row, t, exit_code, lost, state.detail, now)
            views.append(TaskView(t.task, t.idx, exit_code, end_ms, lost, t.hung_ms, oom_ms, oom_reason))
        return views

    def _detect_hangs(self, row: JobRow, tasks: list[TaskRow], views: list[TaskView], now: int) -> list[TaskView]:
        if self.sampler is None or any(v.hung_ms for v in views):
            return views
        try:
            spec = self._spec(row)
            windows = {r.name: faults.hang_window_seconds(r.spec.environments, self.settings.hang_detect_minutes)
                       for r in spec.role_list()}
        except OpenartsError:
            return views
        out = []
        for t, v in zip(tasks, views, strict=True):
            window = windows[spec.role_at(t.idx).name]
            last = self.sampler.last_progress((row.id, t.seq, t.task)) if v.exit_code is None else None
            if last is not None and now / 1000 - last >= window:
                with self.db.begin() as conn:
                    if w.mark_task_hung(conn, row.id, t.seq, t.task, now):
                        hung = f"Task {t.task} is hung: no output and no CPU progress for {window / 60:g} min."
                        w.add_event(conn, row.id, hung, now, level="Warning", source="Worker")
                        w.queue_notification(conn, row.id, notify.HANGED, now, hung)
                v = dataclasses.replace(v, hung_ms=now)
            out.append(v)
        return out

    def _record_exit(self, row: JobRow, t: TaskRow, exit_code: int, lost: bool, detail: str,
                     now: int) -> tuple[int, str]:
        """Record a task's exit with its message; returns its (oom_ms, oom_reason) as stored now: the
        metrics sampler may have marked it out of memory after this pass loaded its tasks."""
        run_dir = self._handle(row, t).run_dir
        with self.db.connect() as conn:
            oom_ms, oom_reason = q.task_oom(conn, row.id, t.seq, t.task)
        message = ""
        if lost:
            message = f"Task lost: {detail}."
        elif exit_code != 0:
            last = tail(self.executor.log_path(run_dir))
            cause = (f"{oom_reason[:1].upper()}{oom_reason[1:]} (exit code {exit_code})." if oom_ms
                     else f"Exit code {exit_code}.")
            message = cause + (f" Last log lines:\n{last}" if last else "")
        with self.db.begin() as conn:
            if w.record_task_exit(conn, row.id, t.seq, t.task, exit_code, message, now):
                text = (f"Task {t.task} lost: {detail}." if lost else f"Task {t.task} exited with code {exit_code}.")
                w.add_event(conn, row.id, text, now, level="Info" if exit_code == 0 else "Warning", source="Worker")
        return oom_ms, oom_reason

    async def _signal_all(self, row: JobRow, tasks: list[TaskRow], views: list[TaskView], signum: int) -> None:
        live = {v.task for v in views if v.exit_code is None}
        for t in tasks:
            if t.task not in live:
                continue
            key = (row.id, t.seq, t.task)
            if signum == signal.SIGTERM and key in self._termed:
                continue
            if await self.executor.signal(self._handle(row, t), signum) is not None:
                self._termed.add(key)  # sent, or nothing left to send it to; still starting: next pass

    async def _end_processes(self, row: JobRow, tasks: list[TaskRow]) -> None:
        """Kill whatever is left of the attempt's process groups (stragglers), and release it."""
        if tasks:
            await self._release(row.id, tasks[0].seq, [t.node for t in tasks], [self._handle(row, t) for t in tasks])
        for t in tasks:
            self._termed.discard((row.id, t.seq, t.task))

    # -- ending an attempt: finish the job, or recover it ------------------------------------------
    async def _finish(self, row: JobRow, tasks: list[TaskRow], attempt: AttemptRow, term: Termination,
                      ps: Pass) -> None:
        lines = await self._final_uploads(row, tasks, attempt)
        if lines is None:
            return  # its outputs and logs are still going up: a later pass ends it
        now = w.now_ms()
        recovery = None
        if term.kind not in (EndKind.COMPLETED, EndKind.TERMINATED) and not row.terminate_requested:
            recovery = self._plan_recovery(row, tasks, attempt, term, ps, now)
        if recovery is not None:
            if lines:
                with self.db.begin() as conn:
                    add_notes(conn, row.id, lines, now)
            self._begin_recovery(row, tasks, attempt, term, recovery, now)
            return
        phase, secondary = outcome(term)
        if term.kind is EndKind.TERMINATED and row.terminate_reason:
            term = Termination(EndKind.TERMINATED, row.terminate_reason)
        message = "" if phase is Phase.COMPLETED else self._final_message(row, term)
        with self.db.begin() as conn:
            w.transition(conn, row.id, Phase(row.phase), phase, at_ms=now, secondary=secondary, end_ms=now,
                         run_ms=self._run_ms(row, now), running_since_ms=0, message=message,
                         event=f"Job {phase.value.lower()}: {message or term.end_reason}.",
                         level="Info" if phase in (Phase.COMPLETED, Phase.TERMINATED) else "Error")
            add_notes(conn, row.id, lines, now)
            if w.close_attempt(conn, row.id, attempt.seq, now, term.end_reason, term.related_task):
                w.add_node_count(conn, row.id, now, 0)
        tm.FINISHED.labels(phase.value).inc()
        if term.kind not in (EndKind.COMPLETED, EndKind.TERMINATED):
            tm.FAILURES.labels(term.kind.value).inc()
        if self.sampler is not None:  # its custom metrics: read to the end of its logs (supervisor/log_metrics.py)
            self.sampler.ended(row.id, attempt.seq, [t.task for t in tasks])
        self._forget(row.id)

    async def _final_uploads(self, row: JobRow, tasks: list[TaskRow], attempt: AttemptRow) -> list[Note] | None:
        """Outputs go up at every end of an attempt (completed, failed, terminated) and before a retry,
        once its workers are gone, so a failed or terminated job keeps its last checkpoint; its logs go
        to spec.log_export_path. In the background (supervisor/transfers.py): None while that runs,
        then the lines for the job's events."""
        t = self.transfers.get(row.id, attempt.seq, Kind.FINAL)
        if t is None:
            handles = [self._handle(row, t) for t in tasks]
            try:
                spec = self._spec(row)
            except OpenartsError as exc:
                await self._end_processes(row, tasks)
                return [Note(f"Outputs not uploaded: {exc.message}", failed=True)]
            lays = [lay for _, lay in ws.role_layouts(spec, self.settings.job_dir(row.id), self.executor.sandboxed)]
            uploads = any(lay.uploads for lay in lays)
            exports: dict[str, dict[str, Path]] = {}  # each role's spec.log_export_path: its tasks' logs
            for task in tasks:
                url = spec.role_at(task.idx).spec.log_export_url
                if url:
                    exports.setdefault(url, {})[exported_log_name(row.id, task.task, attempt.seq)] = \
                        self.settings.attempt_dir(row.id, attempt.seq, task.task) / "log"
            if not uploads and not exports:
                await self._end_processes(row, tasks)
                return []
            await asyncio.gather(*(self.executor.cleanup(h) for h in handles))  # no straggler writes on
            periodic = self.transfers.get(row.id, attempt.seq, Kind.PERIODIC)
            self.transfers.cancel(row.id, (Kind.PERIODIC,))  # stops at its next file; the final sends the rest
            sent = self._sent.setdefault(row.id, {})
            work_dir = self.settings.attempts_dir(row.id, attempt.seq)

            def upload(cancel: threading.Event) -> list[Note]:
                lines = [n for lay in lays if lay.uploads for n in ws.upload_outputs(
                    lay, self.store, sent, cancel, retry_seconds=ws.FINAL_RETRY_SECONDS)]
                return lines + [ws.export_logs(logs, url, self.store, work_dir) for url, logs in exports.items()]

            self.transfers.start(row.id, attempt.seq, Kind.FINAL, functools.partial(
                self._gather_then_upload, handles if uploads else [], upload), after=periodic)
            return None
        if not t.done:
            return None
        self.transfers.pop(row.id, attempt.seq, Kind.FINAL)
        self.transfers.pop(row.id, attempt.seq, Kind.PERIODIC)
        await self._end_processes(row, tasks)  # the attempt's node files were kept until its outputs came
        return [*t.lines, *([Note(f"Outputs not uploaded: {t.error}", failed=True)] if t.error else [])]

    def _final_message(self, row: JobRow, term: Termination, policy: faults.FaultPolicy | None = None) -> str:
        if policy is None:
            try:
                policy = faults.parse_policy(self._spec(row).annotations)
            except OpenartsError:
                return term.end_reason
        if faults.retryable(term, policy) and policy.budget and row.retries_used >= policy.budget:
            return (f"{term.end_reason}; not recovered: the retry budget is exhausted "
                    f"({row.retries_used} of {policy.budget} recoveries used)")
        if term.kind is EndKind.START_FAILED and not policy.budget:
            return f"{term.end_reason}; not retried (fault-tolerance/job-retry-num retries failed starts)"
        if term.kind is EndKind.HANG:
            return f"{term.end_reason}; not recovered (enable fault-tolerance/hang-retry to restart hung jobs)"
        return term.end_reason

    def _plan_recovery(self, row: JobRow, tasks: list[TaskRow], attempt: AttemptRow, term: Termination, ps: Pass,
                       now: int) -> faults.Recovery | None:
        try:
            spec = self._spec(row)
            policy = faults.parse_policy(spec.annotations)
        except OpenartsError:
            return None
        state = faults.RecoveryState(row.retries_used, row.hang_restarts, row.recover_tier, row.pod_retries_used)
        failed = next((t for t in tasks if t.task == term.related_task), None)
        flavor = spec.role_at(failed.idx).spec.flavor if failed is not None else spec.flavor
        other = ps.ledger.place_one(demand_of(flavor), spec.pool_id, avoid=failed.node if failed else "") is not None
        cap = faults.Capabilities(other_node=other, uses_gpus=any(r.spec.flavor.gpus > 0 for r in spec.role_list()))
        ran_long = attempt.started_ms and now - attempt.started_ms >= self.settings.recovery_reset_seconds * 1000
        return faults.plan_recovery(term, policy, state, cap, bool(ran_long))

    def _begin_recovery(self, row: JobRow, tasks: list[TaskRow], attempt: AttemptRow, term: Termination,
                        rec: faults.Recovery, now: int) -> None:
        record = {"recover_start_at": now // 1000, "recover": rec.tier, "fault_scenario": rec.fault_scenario,
                  "reason": term.end_reason, "related_task": term.related_task or ""}
        budget_note = "" if rec.counted else " (not counted against job-retry-num)"
        downgrade = f" instead of {rec.wanted}" if rec.wanted != rec.tier else ""
        with self.db.begin() as conn:
            if rec.tier in faults.IN_PLACE:  # stays Running; the next pass restarts it (a crash here loses nothing)
                w.transition(conn, row.id, Phase.RUNNING, Phase.RUNNING, at_ms=now, event="")
            else:
                w.transition(conn, row.id, Phase.RUNNING, Phase.PENDING, at_ms=now, secondary=Secondary.QUEUING,
                             run_ms=self._run_ms(row, now), running_since_ms=0, event=f"Job requeued for {rec.tier}.",
                             notify="")  # announced below, as a restart
                if rec.tier == faults.JOB_RESCHEDULE_WITH_TAINT:
                    node = next((t.node for t in tasks if t.task == term.related_task), None)
                    if node:
                        w.add_fence(conn, node, now + int(self.settings.taint_seconds * 1000), row.id,
                                    term.end_reason)
            w.queue_notification(conn, row.id, notify.RESTARTED, now, f"Recovering from '{term.end_reason}' "
                                 f"with {rec.tier}.")
            w.close_attempt(conn, row.id, attempt.seq, now, term.end_reason, term.related_task, rec.tier, rec.wanted,
                            record)
            w.set_recovery_state(conn, row.id, rec.state)
            w.add_node_count(conn, row.id, now, 0)
            w.add_event(conn, row.id, f"Recovering from '{term.end_reason}' with {rec.tier}{downgrade}"
                        f"{budget_note}.", now, level="Warning", source="FaultTolerance")
        tm.RECOVERIES.labels(rec.tier).inc()
        tm.FAILURES.labels(term.kind.value).inc()
        faultpoint("recovery_begun")
        self._wake.set()
