"""The supervisor: one reconcile loop that moves every job through its lifecycle.

Each pass loads the active jobs from the store, observes their tasks through the executor, decides
(supervisor/decide.py, core/faults.py, scheduler/plan.py) and applies: executor calls and file copies
happen outside database transactions, and every phase change goes through `store.jobs.transition()`.
It is woken by submissions, API intents and task exits (pidfds), and runs a full pass every
`reconcile_interval_seconds` regardless. At start-up one full pass re-adopts what the last server left
running before the API serves.

Level-triggered recovery: a Running job whose latest attempt is closed with an in-place tier
(`end_recover`) is restarted by whichever pass sees it, so a crash between the two steps is harmless.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import signal
import time
from typing import Any

import orjson

from openarts.config import Settings
from openarts.core import faults
from openarts.core.errors import OpenartsError, PreparationError
from openarts.core.phases import TERMINAL, Phase, Secondary
from openarts.core.reasons import EndKind, Termination, outcome
from openarts.core.resources import Catalog
from openarts.core.spec import JobSpec, parse_job
from openarts.executors.base import Executor, StartError, TaskHandle, TaskLaunch
from openarts.scheduler.plan import Affinity, NodeFree, PendingJob, WorkerPlacement, plan
from openarts.storage.obs import LocalObjectStore
from openarts.store import jobs as w
from openarts.store import queries as q
from openarts.store.db import Database, Record
from openarts.supervisor import snapshot as snap
from openarts.supervisor import workspace as ws
from openarts.supervisor.decide import LOST_EXIT, Act, TaskView, decide_attempt
from openarts.supervisor.metrics import MetricsSampler

log = logging.getLogger("openarts.supervisor")

TAIL_LINES = 20
RESTARTED = "restarted"
INIT = "init_or_rescheduled"


def faultpoint(name: str) -> None:
    """Crash-consistency tests kill the server at named points (OPENARTS_FAULTPOINT=name)."""
    if os.environ.get("OPENARTS_FAULTPOINT") == name:
        log.warning("fault point %s: killing the server", name)
        os.kill(os.getpid(), signal.SIGKILL)


def tail(path: Any, lines: int = TAIL_LINES, max_bytes: int = 16384) -> str:
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


class Supervisor:
    def __init__(self, settings: Settings, db: Database, catalog: Catalog, executor: Executor,
                 store: LocalObjectStore, sampler: MetricsSampler | None = None) -> None:
        self.settings = settings
        self.db = db
        self.catalog = catalog
        self.executor = executor
        self.store = store
        self.sampler = sampler
        self._wake = asyncio.Event()
        self._dirty: set[str] = set()
        self._stopping = False
        self._termed: set[tuple[str, int, str]] = set()  # tasks already sent SIGTERM
        self._waiting_reason: dict[str, str] = {}
        self._specs: dict[str, JobSpec] = {}
        self.passes = 0

    # -- waking --------------------------------------------------------------------------------
    def poke(self, job_id: str | None = None) -> None:
        if job_id:
            self._dirty.add(job_id)
        self._wake.set()

    def stop(self) -> None:
        self._stopping = True
        self._wake.set()

    async def run(self) -> None:
        interval = self.settings.reconcile_interval_seconds
        last_full = 0.0
        while not self._stopping:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=interval)
            self._wake.clear()
            if self._stopping:
                break
            full = time.monotonic() - last_full >= interval
            if full:
                last_full = time.monotonic()
            try:
                await self.reconcile(full=full)
            except Exception:  # the loop must survive any one bad pass
                log.exception("reconcile pass failed")

    # -- one pass ------------------------------------------------------------------------------
    async def reconcile(self, full: bool = True) -> None:
        dirty, self._dirty = self._dirty, set()
        self.passes += 1
        with self.db.connect() as conn:
            rows = q.active_jobs(conn)
            placed = [r for r in rows if r.phase in (Phase.RUNNING, Phase.TERMINATING, Phase.PENDING) and r.attempt]
            tasks = q.current_tasks(conn, placed)
            attempts = q.current_attempts(conn, placed)
        pending: list[Record] = []
        for row in rows:
            try:
                if row.delete_requested and Phase(row.phase) in TERMINAL:
                    await self._purge(row)
                elif row.phase == Phase.CREATING:
                    self._prepare(row)
                elif row.phase == Phase.PENDING:
                    if self._pending(row, tasks.get(row.id, []), attempts.get(row.id)):
                        pending.append(row)
                elif row.phase in (Phase.RUNNING, Phase.TERMINATING):
                    poll = full or row.id in dirty or bool(row.terminate_requested)
                    await self._supervise(row, tasks.get(row.id, []), attempts.get(row.id), poll, rows, tasks)
            except Exception:
                log.exception("job %s: reconcile failed", row.id)
        if pending:
            await self._schedule(pending, rows, tasks)

    # -- Creating -> Pending ---------------------------------------------------------------------
    def _spec(self, row: Record) -> JobSpec:
        spec = self._specs.get(row.id)
        if spec is None:
            with self.db.connect() as conn:
                request = q.job_request(conn, row.id)
            spec = parse_job(orjson.loads(request), self.catalog)
            self._specs[row.id] = spec
        return spec

    def _prepare(self, row: Record) -> None:
        now = w.now_ms()
        if row.terminate_requested:
            with self.db.begin() as conn:
                w.transition(conn, row.id, Phase.CREATING, Phase.TERMINATED, at_ms=now, end_ms=now)
            return
        try:
            spec = self._spec(row)
            ws.check_code(spec, self.store)
        except OpenartsError as exc:
            self._abnormal(row, Phase.CREATING, exc.message, now)
            return
        with self.db.begin() as conn:
            w.transition(conn, row.id, Phase.CREATING, Phase.PENDING, at_ms=now, secondary=Secondary.QUEUING,
                         queue_seq=w.next_queue_seq(conn), event="Job queued, waiting for resources.")
        self._wake.set()  # schedule it in the very next pass

    def _abnormal(self, row: Record, expected: Phase, message: str, now: int) -> None:
        with self.db.begin() as conn:
            w.transition(conn, row.id, expected, Phase.ABNORMAL, at_ms=now, secondary=Secondary.CREATE_FAILED,
                         message=message, end_ms=now, event=f"Job creation failed: {message}", level="Error")

    # -- Pending -> Running ----------------------------------------------------------------------
    def _handle(self, row: Record, t: Record) -> TaskHandle:
        return TaskHandle(row.id, t.seq, t.task, t.pid, t.pid_start, self.settings.attempt_dir(row.id, t.seq, t.task))

    def _discard_unstarted(self, row: Record, tasks: list[Record], attempt: Record | None) -> bool:
        """An attempt opened but never marked started (the server died while spawning it): kill
        whatever was spawned and forget it. Returns True if there was one."""
        if attempt is None or attempt.started:
            return False
        for t in tasks:
            self.executor.cleanup(self._handle(row, t))
        with self.db.begin() as conn:
            w.drop_unstarted_attempt(conn, row.id, attempt.seq)
            w.add_event(conn, row.id, "Discarded an attempt that was interrupted while starting.", w.now_ms(),
                        level="Warning")
        return True

    def _pending(self, row: Record, tasks: list[Record], attempt: Record | None) -> bool:
        """Handle terminate and half-started attempts; True if the job should be scheduled."""
        if self._discard_unstarted(row, tasks, attempt):
            self._wake.set()  # schedule it in the next pass, from the row as it is now (attempt - 1)
            return False
        if row.terminate_requested:
            now = w.now_ms()
            with self.db.begin() as conn:
                w.transition(conn, row.id, Phase.PENDING, Phase.TERMINATED, at_ms=now, end_ms=now)
            return False
        return True

    def _free_capacity(self, rows: list[Record], tasks: dict[str, list[Record]]) -> list[NodeFree]:
        with self.db.connect() as conn:
            fenced = q.fenced_nodes(conn, w.now_ms())
        return snap.free_capacity(self.catalog, rows, tasks, fenced)

    async def _schedule(self, pending: list[Record], rows: list[Record],
                        tasks: dict[str, list[Record]]) -> None:
        jobs_by_id = {r.id: r for r in pending}
        demands = []
        for r in pending:
            flavor = self.catalog.flavors.get(r.flavor_id)
            if flavor is None:
                self._abnormal(r, Phase.PENDING, f"Flavor {r.flavor_id} no longer exists.", w.now_ms())
                continue
            try:
                aff = self._spec(r).affinity
            except OpenartsError as exc:
                self._abnormal(r, Phase.PENDING, exc.message, w.now_ms())
                continue
            demands.append(PendingJob(r.id, r.pool_id, snap.demand_of(flavor), r.node_count, r.priority,
                                      r.queue_seq, r.project_id, Affinity(*aff) if aff else None))
        with self.db.connect() as conn:
            limits = q.project_quotas(conn)
        quotas, use = snap.quotas(self.catalog, rows, limits)
        result = plan(demands, self._free_capacity(rows, tasks), snap.running_jobs(self.catalog, rows, tasks),
                      quotas, use)
        now = w.now_ms()
        for p in result.preemptions:
            with self.db.begin() as conn:
                for victim in p.victims:
                    w.request_preempt(conn, victim, p.for_job, now)
            for victim in p.victims:
                self.poke(victim)
        for job_id, why in result.waiting.items():
            if self._waiting_reason.get(job_id) != why.key:
                self._waiting_reason[job_id] = why.key
                with self.db.begin() as conn:
                    w.add_event(conn, job_id, f"Job is waiting: {why.message}.", now, source="Scheduler")
        for placement in result.placements:
            self._waiting_reason.pop(placement.job_id, None)
            row = jobs_by_id[placement.job_id]
            try:
                await self._launch(row, list(placement.workers), INIT, stage=True)
            except Exception:
                log.exception("job %s: start failed", placement.job_id)

    async def _launch(self, row: Record, workers: list[WorkerPlacement], start_type: str, stage: bool) -> None:
        """Open attempt row.attempt+1 on `workers`, stage, spawn, and mark it started (Pending jobs
        move to Running; Running jobs restart in place)."""
        expected = Phase(row.phase)
        try:
            spec = self._spec(row)
        except OpenartsError as exc:
            self._fail_start(row, expected, exc.message, prepare=True)
            return
        lay = ws.layout(spec, self.settings.job_dir(row.id))
        seq = row.attempt + 1
        port = ws.free_port()
        ips = [wp.ip for wp in workers]
        names = [f"worker-{i}" for i in range(spec.node_count)]
        with self.db.begin() as conn:
            w.open_attempt(conn, row.id, seq, [
                {"task": names[i], "idx": i, "node": wp.node, "ip": wp.ip, "gpus": ",".join(map(str, wp.gpus))}
                for i, wp in enumerate(workers)], port, w.now_ms(), start_type)
        try:
            if stage:
                await asyncio.to_thread(ws.stage, spec, lay, self.store)
            else:
                ws.check_code(spec, self.store)
        except (PreparationError, OSError) as exc:
            message = exc.message if isinstance(exc, PreparationError) else f"Preparation failed: {exc}"
            with self.db.begin() as conn:
                w.drop_unstarted_attempt(conn, row.id, seq)
            self._fail_start(row, expected, message, prepare=True)
            return
        faultpoint("attempt_opened")
        argv = ws.argv(spec, lay)
        handles: list[TaskHandle] = []
        try:
            for i, wp in enumerate(workers):
                env = ws.environment(spec, lay, row.id, i, ips, list(wp.gpus), port)
                handles.append(self.executor.start(TaskLaunch(
                    row.id, seq, names[i], argv, env, str(lay.cwd), self.settings.attempt_dir(row.id, seq, names[i]))))
        except StartError as exc:
            for h in handles:
                self.executor.cleanup(h)
            with self.db.begin() as conn:
                w.drop_unstarted_attempt(conn, row.id, seq)
            self._fail_start(row, expected, f"Cannot start the job's workers: {exc}", prepare=False)
            return
        faultpoint("spawned")
        now = w.now_ms()
        with self.db.begin() as conn:
            w.mark_attempt_started(conn, row.id, seq, now // 1000,
                                   [{"task": h.task, "pid": h.pid, "pid_start": h.pid_start} for h in handles], now)
            if row.attempt:
                w.finish_recover_record(conn, row.id, row.attempt, now // 1000, "success")
            if expected is Phase.PENDING:
                w.transition(conn, row.id, Phase.PENDING, Phase.RUNNING, at_ms=now, start_ms=row.start_ms or now,
                             running_since_ms=now, event=f"Job started: {spec.node_count} worker(s) running.")
            else:
                w.add_event(conn, row.id, f"Job restarted in place (attempt {seq}, {start_type}).", now)
            w.add_node_count(conn, row.id, now, spec.node_count)
            for h, wp in zip(handles, workers, strict=True):
                w.add_event(conn, row.id, f"Task {h.task} started on node {wp.node} (pid {h.pid}).", now,
                            source="Worker")
        for h in handles:
            self._watch(h)
        faultpoint("after_start")

    def _fail_start(self, row: Record, expected: Phase, message: str, prepare: bool) -> None:
        now = w.now_ms()
        if expected is Phase.PENDING and prepare:
            self._abnormal(row, expected, message, now)
            return
        phase = Phase.ABNORMAL if prepare else Phase.FAILED
        secondary = Secondary.CREATE_FAILED if prepare else Secondary.FAILED
        with self.db.begin() as conn:
            w.transition(conn, row.id, expected, phase, at_ms=now, secondary=secondary, message=message,
                         end_ms=now, run_ms=row.run_ms + (now - row.running_since_ms if row.running_since_ms else 0),
                         running_since_ms=0, event=f"Job {phase.value.lower()}: {message}", level="Error")

    def _watch(self, handle: TaskHandle) -> None:
        job_id = handle.job_id
        self.executor.watch(handle, lambda: self.poke(job_id))

    # -- Running / Terminating -------------------------------------------------------------------
    async def _supervise(self, row: Record, tasks: list[Record], attempt: Record | None, poll: bool,
                         rows: list[Record], all_tasks: dict[str, list[Record]]) -> None:
        now = w.now_ms()
        if self._discard_unstarted(row, tasks, attempt):
            return  # the next pass sees the previous (closed) attempt and acts on it
        if attempt is not None and attempt.end_ms:  # between attempts: a recovery is under way
            if row.phase == Phase.RUNNING and row.preempt_requested and not row.terminate_requested:
                self._requeue_preempted(row, attempt, now)
            elif row.phase == Phase.TERMINATING:
                await self._finish(row, tasks, attempt, Termination(EndKind.TERMINATED, "job terminated by user"))
            elif row.terminate_requested:  # terminate wins over the pending restart
                with self.db.begin() as conn:
                    w.transition(conn, row.id, Phase.RUNNING, Phase.TERMINATING, at_ms=now, end_ms=now,
                                 event="Job terminating during recovery: the restart is cancelled.")
                self._wake.set()
            elif attempt.end_recover in faults.IN_PLACE:
                await self._restart_in_place(row, tasks, attempt, rows, all_tasks)
            return
        views = self._observe(row, tasks, poll, now)
        self._check_auto_stop(row, now)
        if row.phase == Phase.RUNNING and row.terminate_requested:
            with self.db.begin() as conn:
                w.transition(conn, row.id, Phase.RUNNING, Phase.TERMINATING, at_ms=now, end_ms=now,
                             event="Job terminating: stopping its workers.")
            self._signal_all(row, tasks, views, signal.SIGTERM)
            return
        if poll and row.phase == Phase.RUNNING:
            views = self._detect_hangs(row, tasks, views, now)
        terminating_since = row.end_ms if row.phase == Phase.TERMINATING else None
        preempting = row.phase == Phase.RUNNING and bool(row.preempt_requested)
        if preempting:
            terminating_since = row.preempt_ms
        decision = decide_attempt(views, now, int(self.settings.terminate_grace_seconds * 1000), terminating_since)
        if preempting and decision.act is Act.WAIT:
            self._signal_all(row, tasks, views, signal.SIGTERM)
        if preempting and decision.act is Act.FINISH:
            assert attempt is not None
            for t in tasks:
                self.executor.cleanup(self._handle(row, t))
                self._termed.discard((row.id, t.seq, t.task))
            self._requeue_preempted(row, attempt, now)
            return
        if decision.act is Act.STOP_OTHERS:
            self._signal_all(row, tasks, views, signal.SIGTERM)
        elif decision.act is Act.KILL_OTHERS:
            self._signal_all(row, tasks, views, signal.SIGKILL)
        elif decision.act is Act.FINISH:
            assert decision.termination is not None and attempt is not None
            await self._finish(row, tasks, attempt, decision.termination, rows, all_tasks)

    def _requeue_preempted(self, row: Record, attempt: Record, now: int) -> None:
        """A preempted job goes back to the queue (its old position), without using its retry budget."""
        reason = f"preempted by job {row.preempted_by}"
        run_ms = row.run_ms + (now - row.running_since_ms if row.running_since_ms else 0)
        with self.db.begin() as conn:
            closed = w.close_attempt(conn, row.id, attempt.seq, now, reason, None)
            w.clear_preempt(conn, row.id)
            w.transition(conn, row.id, Phase.RUNNING, Phase.PENDING, at_ms=now, secondary=Secondary.QUEUING,
                         run_ms=run_ms, running_since_ms=0, event=f"Job {reason}: back in the queue.",
                         level="Warning")
            if closed:
                w.add_node_count(conn, row.id, now, 0)
        self._wake.set()

    def _check_auto_stop(self, row: Record, now: int) -> None:
        if row.phase != Phase.RUNNING or row.terminate_requested:
            return
        try:
            limit = self._spec(row).auto_stop_seconds
        except OpenartsError:
            return
        ran = row.run_ms + (now - row.running_since_ms if row.running_since_ms else 0)
        if limit is not None and ran >= limit * 1000:
            with self.db.begin() as conn:
                w.request_terminate(conn, row.id, now, f"auto stopped: ran longer than {limit} s (spec.auto_stop)")
            self._wake.set()

    def _observe(self, row: Record, tasks: list[Record], poll: bool, now: int) -> list[TaskView]:
        views = []
        for t in tasks:
            exit_code, end_ms, lost = t.exit_code, t.end_ms, t.exit_code == LOST_EXIT
            if exit_code is None and poll:
                h = self._handle(row, t)
                state = self.executor.poll(h)
                if state.running:
                    self._watch(h)
                else:
                    lost = state.lost
                    exit_code = LOST_EXIT if lost else state.exit_code
                    assert exit_code is not None
                    end_ms = now
                    self._record_exit(row, t, exit_code, lost, state.detail, now)
            views.append(TaskView(t.task, t.idx, exit_code, end_ms, lost, t.hung_ms))
        return views

    def _detect_hangs(self, row: Record, tasks: list[Record], views: list[TaskView], now: int) -> list[TaskView]:
        if self.sampler is None or any(v.hung_ms for v in views):
            return views
        try:
            window = faults.hang_window_seconds(self._spec(row).environments, self.settings.hang_detect_minutes)
        except OpenartsError:
            return views
        out = []
        for t, v in zip(tasks, views, strict=True):
            last = self.sampler.last_progress((row.id, t.seq, t.task)) if v.exit_code is None else None
            if last is not None and now / 1000 - last >= window:
                with self.db.begin() as conn:
                    if w.mark_task_hung(conn, row.id, t.seq, t.task, now):
                        w.add_event(conn, row.id, f"Task {t.task} is hung: no output and no CPU progress for "
                                    f"{window / 60:g} min.", now, level="Warning", source="Worker")
                v = TaskView(v.task, v.idx, v.exit_code, v.end_ms, v.lost, now)
            out.append(v)
        return out

    def _record_exit(self, row: Record, t: Record, exit_code: int, lost: bool, detail: str, now: int) -> None:
        run_dir = self._handle(row, t).run_dir
        message = ""
        if lost:
            message = f"Task lost: {detail}."
        elif exit_code != 0:
            last = tail(self.executor.log_path(run_dir))
            message = f"Exit code {exit_code}." + (f" Last log lines:\n{last}" if last else "")
        with self.db.begin() as conn:
            if w.record_task_exit(conn, row.id, t.seq, t.task, exit_code, message, now):
                text = (f"Task {t.task} lost: {detail}." if lost else f"Task {t.task} exited with code {exit_code}.")
                w.add_event(conn, row.id, text, now, level="Info" if exit_code == 0 else "Warning", source="Worker")

    def _signal_all(self, row: Record, tasks: list[Record], views: list[TaskView], signum: int) -> None:
        live = {v.task for v in views if v.exit_code is None}
        for t in tasks:
            if t.task not in live:
                continue
            key = (row.id, t.seq, t.task)
            if signum == signal.SIGTERM and key in self._termed:
                continue
            self._termed.add(key)
            self.executor.signal(self._handle(row, t), signum)

    # -- ending an attempt: finish the job, or recover it ------------------------------------------
    def _capabilities(self, row: Record, spec: JobSpec, failed_node: str | None, rows: list[Record],
                      all_tasks: dict[str, list[Record]]) -> faults.Capabilities:
        flavor = spec.flavor
        demand = snap.demand_of(flavor)
        other = any(n.name != failed_node and n.pool == spec.pool_id and n.fits(demand)
                    for n in self._free_capacity(rows, all_tasks))
        return faults.Capabilities(other_node=other, uses_gpus=flavor.gpus > 0)

    async def _finish(self, row: Record, tasks: list[Record], attempt: Record, term: Termination,
                      rows: list[Record] | None = None, all_tasks: dict[str, list[Record]] | None = None) -> None:
        now = w.now_ms()
        for t in tasks:
            self.executor.cleanup(self._handle(row, t))
            self._termed.discard((row.id, t.seq, t.task))
        recovery = None
        if term.kind not in (EndKind.COMPLETED, EndKind.TERMINATED) and not row.terminate_requested:
            recovery = self._plan_recovery(row, tasks, attempt, term, rows or [], all_tasks or {}, now)
        if recovery is not None:
            self._begin_recovery(row, tasks, attempt, term, recovery, now)
            return
        lines: list[str] = []
        if term.kind is not EndKind.TERMINATED:
            try:
                lay = ws.layout(self._spec(row), self.settings.job_dir(row.id))
                if lay.outputs:
                    lines = await asyncio.to_thread(ws.upload_outputs, lay, self.store)
            except OpenartsError as exc:
                lines = [f"Outputs not uploaded: {exc.message}"]
        phase, secondary = outcome(term)
        if term.kind is EndKind.TERMINATED and row.terminate_reason:
            term = Termination(EndKind.TERMINATED, row.terminate_reason)
        run_ms = row.run_ms + (now - row.running_since_ms if row.running_since_ms else 0)
        message = "" if phase is Phase.COMPLETED else self._final_message(row, term)
        with self.db.begin() as conn:
            for line in lines:
                w.add_event(conn, row.id, line, now, source="Storage")
            closed_now = w.close_attempt(conn, row.id, attempt.seq, now, term.end_reason, term.related_task)
            moved = w.transition(conn, row.id, Phase(row.phase), phase, at_ms=now, secondary=secondary, end_ms=now,
                                 run_ms=run_ms, running_since_ms=0, message=message,
                                 event=f"Job {phase.value.lower()}: {message or term.end_reason}.",
                                 level="Info" if phase in (Phase.COMPLETED, Phase.TERMINATED) else "Error")
            if moved and closed_now:
                w.add_node_count(conn, row.id, now, 0)
        self._specs.pop(row.id, None)

    def _final_message(self, row: Record, term: Termination) -> str:
        try:
            policy = faults.parse_policy(self._spec(row).annotations)
        except OpenartsError:
            return term.end_reason
        if faults.retryable(term, policy) and policy.budget and row.retries_used >= policy.budget:
            return (f"{term.end_reason}; not recovered: the retry budget is exhausted "
                    f"({row.retries_used} of {policy.budget} recoveries used)")
        if term.kind is EndKind.HANG:
            return f"{term.end_reason}; not recovered (enable fault-tolerance/hang-retry to restart hung jobs)"
        return term.end_reason

    def _plan_recovery(self, row: Record, tasks: list[Record], attempt: Record, term: Termination,
                       rows: list[Record], all_tasks: dict[str, list[Record]], now: int) -> faults.Recovery | None:
        try:
            spec = self._spec(row)
            policy = faults.parse_policy(spec.annotations)
        except OpenartsError:
            return None
        state = faults.RecoveryState(row.retries_used, row.hang_restarts, row.recover_tier, row.pod_retries_used)
        failed_node = next((t.node for t in tasks if t.task == term.related_task), None)
        cap = self._capabilities(row, spec, failed_node, rows, all_tasks)
        ran_long = attempt.started_ms and now - attempt.started_ms >= self.settings.recovery_reset_seconds * 1000
        return faults.plan_recovery(term, policy, state, cap, bool(ran_long))

    def _begin_recovery(self, row: Record, tasks: list[Record], attempt: Record, term: Termination,
                        rec: faults.Recovery, now: int) -> None:
        record = {"recover_start_at": now // 1000, "recover": rec.tier, "fault_scenario": rec.fault_scenario,
                  "reason": term.end_reason, "related_task": term.related_task or ""}
        budget_note = "" if rec.counted else " (not counted against job-retry-num)"
        downgrade = f" instead of {rec.wanted}" if rec.wanted != rec.tier else ""
        with self.db.begin() as conn:
            w.close_attempt(conn, row.id, attempt.seq, now, term.end_reason, term.related_task, rec.tier, rec.wanted,
                            record)
            w.set_recovery_state(conn, row.id, rec.state)
            w.add_node_count(conn, row.id, now, 0)
            w.add_event(conn, row.id, f"Recovering from '{term.end_reason}' with {rec.tier}{downgrade}"
                        f"{budget_note}.", now, level="Warning", source="FaultTolerance")
            if rec.tier in faults.IN_PLACE:
                pass  # the next pass restarts it (level-triggered: a crash here loses nothing)
            else:
                if rec.tier == faults.JOB_RESCHEDULE_WITH_TAINT:
                    node = next((t.node for t in tasks if t.task == term.related_task), None)
                    if node:
                        w.add_fence(conn, node, now + int(self.settings.taint_seconds * 1000), row.id,
                                    term.end_reason)
                run_ms = row.run_ms + (now - row.running_since_ms if row.running_since_ms else 0)
                w.transition(conn, row.id, Phase.RUNNING, Phase.PENDING, at_ms=now, secondary=Secondary.QUEUING,
                             run_ms=run_ms, running_since_ms=0, event=f"Job requeued for {rec.tier}.")
        faultpoint("recovery_begun")
        self._wake.set()

    async def _restart_in_place(self, row: Record, tasks: list[Record], attempt: Record,
                                rows: list[Record], all_tasks: dict[str, list[Record]]) -> None:
        workers = [WorkerPlacement(t.node, t.ip, tuple(int(g) for g in t.gpus.split(",") if g)) for t in tasks]
        start_type = RESTARTED
        if attempt.end_recover == faults.POD_RESCHEDULE:
            start_type = INIT
            spec = self._spec(row)
            flavor = spec.flavor
            demand = snap.demand_of(flavor)
            for i, t in enumerate(tasks):
                if t.task != attempt.end_related_task:
                    continue
                target = next((n for n in self._free_capacity(rows, all_tasks)
                               if n.name != t.node and n.pool == spec.pool_id and n.fits(demand)), None)
                if target is not None:
                    workers[i] = WorkerPlacement(target.name, target.ip, tuple(target.take(demand)))
        await self._launch(row, workers, start_type, stage=start_type == INIT)

    # -- deletion --------------------------------------------------------------------------------
    async def _purge(self, row: Record) -> None:
        with self.db.begin() as conn:
            w.purge_job(conn, row.id)
        self._specs.pop(row.id, None)
        self._waiting_reason.pop(row.id, None)
        await asyncio.to_thread(shutil.rmtree, self.settings.job_dir(row.id), True)
