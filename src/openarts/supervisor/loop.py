"""The supervisor: one reconcile loop that moves every job through its lifecycle.

Each pass loads the active jobs from the store, observes their tasks through the executor, decides
(supervisor/decide.py, scheduler/plan.py) and applies: executor calls and file copies happen outside
database transactions, and every phase change goes through `store.jobs.transition()`. It is woken by
submissions, API intents and task exits (pidfds), and runs a full pass every
`reconcile_interval_seconds` regardless. At start-up one full pass re-adopts what the last server
left running before the API serves.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
import signal
import time
from collections.abc import Iterable
from typing import Any

import orjson
from sqlalchemy import Engine, Row

from openarts.config import Settings
from openarts.core.errors import OpenartsError, PreparationError
from openarts.core.phases import Phase, Secondary
from openarts.core.reasons import EndKind, Termination, outcome
from openarts.core.resources import Catalog
from openarts.core.spec import JobSpec, parse_job
from openarts.executors.base import Executor, StartError, TaskHandle, TaskLaunch
from openarts.scheduler.plan import Demand, NodeFree, PendingJob, Placement, plan
from openarts.storage.obs import LocalObjectStore
from openarts.store import jobs as w
from openarts.store import queries as q
from openarts.supervisor import workspace as ws
from openarts.supervisor.decide import LOST_EXIT, Act, TaskView, decide_attempt

log = logging.getLogger("openarts.supervisor")

TAIL_LINES = 20


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
    def __init__(self, settings: Settings, db: Engine, catalog: Catalog, executor: Executor,
                 store: LocalObjectStore) -> None:
        self.settings = settings
        self.db = db
        self.catalog = catalog
        self.executor = executor
        self.store = store
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
            tasks = q.current_tasks(conn, [r for r in rows if r.phase in (Phase.RUNNING, Phase.TERMINATING,
                                                                           Phase.PENDING)])
        pending: list[Row[Any]] = []
        for row in rows:
            try:
                if row.delete_requested and Phase(row.phase) in (Phase.FAILED, Phase.COMPLETED,
                                                                 Phase.TERMINATED, Phase.ABNORMAL):
                    await self._purge(row)
                elif row.phase == Phase.CREATING:
                    self._prepare(row)
                elif row.phase == Phase.PENDING:
                    if self._pending_cleanup(row, tasks.get(row.id, [])):
                        pending.append(row)
                elif row.phase in (Phase.RUNNING, Phase.TERMINATING):
                    poll = full or row.id in dirty or bool(row.terminate_requested)
                    await self._supervise(row, tasks.get(row.id, []), poll)
            except Exception:
                log.exception("job %s: reconcile failed", row.id)
        if pending:
            await self._schedule(pending, rows, tasks)

    # -- Creating -> Pending ---------------------------------------------------------------------
    def _spec(self, row: Row[Any]) -> JobSpec:
        spec = self._specs.get(row.id)
        if spec is None:
            spec = parse_job(orjson.loads(row.request), self.catalog)
            self._specs[row.id] = spec
        return spec

    def _prepare(self, row: Row[Any]) -> None:
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
                         queue_seq=w.next_queue_seq(conn),
                         event="Job queued, waiting for resources.")
        self._wake.set()  # schedule it in the very next pass

    def _abnormal(self, row: Row[Any], expected: Phase, message: str, now: int) -> None:
        with self.db.begin() as conn:
            w.transition(conn, row.id, expected, Phase.ABNORMAL, at_ms=now, secondary=Secondary.CREATE_FAILED,
                         message=message, end_ms=now, event=f"Job creation failed: {message}", level="Error")

    # -- Pending -> Running ----------------------------------------------------------------------
    def _handle(self, row: Row[Any], t: Row[Any]) -> TaskHandle:
        return TaskHandle(row.id, t.seq, t.task, t.pid, t.pid_start,
                          self.settings.job_dir(row.id) / "attempts" / str(t.seq) / t.task)

    def _pending_cleanup(self, row: Row[Any], tasks: list[Row[Any]]) -> bool:
        """Handle terminate and half-started attempts; True if the job should be scheduled."""
        attempt = None
        if tasks:
            with self.db.connect() as conn:
                attempt = q.attempt_row(conn, row.id, row.attempt)
        if attempt is not None and not attempt.started:
            # an attempt opened but never marked started: the server died while spawning it
            for t in tasks:
                if t.pid:
                    self.executor.cleanup(self._handle(row, t))
                else:
                    run_dir = self._handle(row, t).run_dir
                    if (run_dir / "worker.pid").exists():
                        self.executor.cleanup(self._handle(row, t))
            with self.db.begin() as conn:
                w.drop_unstarted_attempt(conn, row.id, row.attempt)
                w.add_event(conn, row.id, "Discarded an attempt that was interrupted while starting.",
                            w.now_ms(), level="Warning")
        if row.terminate_requested:
            now = w.now_ms()
            with self.db.begin() as conn:
                w.transition(conn, row.id, Phase.PENDING, Phase.TERMINATED, at_ms=now, end_ms=now)
            return False
        return True

    def _free_capacity(self, rows: list[Row[Any]], tasks: dict[str, list[Row[Any]]]) -> list[NodeFree]:
        free = {n.name: NodeFree(n.name, n.pool, n.ip, n.cpu_milli, n.memory_mb, list(n.gpus))
                for n in self.catalog.nodes}
        for row in rows:
            if row.phase not in (Phase.RUNNING, Phase.TERMINATING):
                continue
            flavor = self.catalog.flavors.get(row.flavor_id)
            for t in tasks.get(row.id, []):
                node = free.get(t.node)
                if node is None or flavor is None:
                    continue
                node.cpu_milli -= flavor.cpu_milli
                node.memory_mb -= flavor.memory_mb
                used = {int(g) for g in t.gpus.split(",") if g}
                node.gpus = [g for g in node.gpus if g not in used]
        return list(free.values())

    async def _schedule(self, pending: list[Row[Any]], rows: list[Row[Any]],
                        tasks: dict[str, list[Row[Any]]]) -> None:
        jobs_by_id = {r.id: r for r in pending}
        demands = []
        for r in pending:
            flavor = self.catalog.flavors.get(r.flavor_id)
            if flavor is None:
                self._abnormal(r, Phase.PENDING, f"Flavor {r.flavor_id} no longer exists.", w.now_ms())
                continue
            demands.append(PendingJob(r.id, r.pool_id, Demand(flavor.cpu_milli, flavor.memory_mb, flavor.gpus),
                                      r.node_count, r.priority, r.queue_seq))
        result = plan(demands, self._free_capacity(rows, tasks))
        now = w.now_ms()
        for job_id, why in result.waiting.items():
            if self._waiting_reason.get(job_id) != why.key:
                self._waiting_reason[job_id] = why.key
                with self.db.begin() as conn:
                    w.add_event(conn, job_id, f"Job is waiting: {why.message}.", now, source="Scheduler")
        for placement in result.placements:
            self._waiting_reason.pop(placement.job_id, None)
            try:
                await self._start(jobs_by_id[placement.job_id], placement)
            except Exception:
                log.exception("job %s: start failed", placement.job_id)

    async def _start(self, row: Row[Any], placement: Placement) -> None:
        try:
            spec = self._spec(row)
        except OpenartsError as exc:
            self._abnormal(row, Phase.PENDING, exc.message, w.now_ms())
            return
        lay = ws.layout(spec, self.settings.job_dir(row.id))
        seq = row.attempt + 1
        port = ws.free_port()
        ips = [wp.ip for wp in placement.workers]
        names = [f"worker-{i}" for i in range(spec.node_count)]
        with self.db.begin() as conn:
            w.open_attempt(conn, row.id, seq, [
                {"task": names[i], "idx": i, "node": wp.node, "ip": wp.ip,
                 "gpus": ",".join(str(g) for g in wp.gpus)}
                for i, wp in enumerate(placement.workers)], port)
        try:
            await asyncio.to_thread(ws.stage, spec, lay, self.store)
        except (PreparationError, OSError) as exc:
            message = exc.message if isinstance(exc, PreparationError) else f"Preparation failed: {exc}"
            with self.db.begin() as conn:
                w.drop_unstarted_attempt(conn, row.id, seq)
            self._abnormal(row, Phase.PENDING, message, w.now_ms())
            return
        argv = ws.argv(spec, lay)
        handles: list[TaskHandle] = []
        try:
            for i, wp in enumerate(placement.workers):
                env = ws.environment(spec, lay, row.id, i, ips, list(wp.gpus), port)
                handles.append(self.executor.start(TaskLaunch(
                    row.id, seq, names[i], argv, env, str(lay.cwd), lay.attempt_dir(seq, names[i]))))
        except StartError as exc:
            for h in handles:
                self.executor.signal(h, signal.SIGKILL)
            with self.db.begin() as conn:
                w.drop_unstarted_attempt(conn, row.id, seq)
            self._abnormal(row, Phase.PENDING, f"Cannot start the job's workers: {exc}", w.now_ms())
            return
        now = w.now_ms()
        with self.db.begin() as conn:
            w.mark_attempt_started(conn, row.id, seq, now // 1000,
                                   [{"task": h.task, "pid": h.pid, "pid_start": h.pid_start} for h in handles],
                                   now)
            ok = w.transition(conn, row.id, Phase.PENDING, Phase.RUNNING, at_ms=now,
                              start_ms=row.start_ms or now, running_since_ms=now,
                              event=f"Job started: {spec.node_count} worker(s) running.")
            if ok:
                w.add_node_count(conn, row.id, now, spec.node_count)
                for h, wp in zip(handles, placement.workers, strict=True):
                    w.add_event(conn, row.id, f"Task {h.task} started on node {wp.node} (pid {h.pid}).", now,
                                source="Worker")
        if not ok:  # cannot happen while the supervisor is the only writer; be safe anyway
            for h in handles:
                self.executor.signal(h, signal.SIGKILL)
            return
        for h in handles:
            self._watch(h)

    def _watch(self, handle: TaskHandle) -> None:
        job_id = handle.job_id
        self.executor.watch(handle, lambda: self.poke(job_id))

    # -- Running / Terminating -------------------------------------------------------------------
    async def _supervise(self, row: Row[Any], tasks: list[Row[Any]], poll: bool) -> None:
        now = w.now_ms()
        views: list[TaskView] = []
        handles = {t.task: self._handle(row, t) for t in tasks}
        for t in tasks:
            exit_code, end_ms, lost = t.exit_code, t.end_ms, False
            if exit_code is None and poll:
                h = handles[t.task]
                state = self.executor.poll(h)
                if state.running:
                    self._watch(h)
                else:
                    lost = state.lost
                    exit_code = LOST_EXIT if lost else state.exit_code
                    assert exit_code is not None
                    end_ms = now
                    self._record_exit(row, t, exit_code, lost, state.detail, now)
            views.append(TaskView(t.task, t.idx, exit_code, end_ms, lost))
        if row.phase == Phase.RUNNING and row.terminate_requested:
            with self.db.begin() as conn:
                w.transition(conn, row.id, Phase.RUNNING, Phase.TERMINATING, at_ms=now, end_ms=now,
                             event="Job terminating: stopping its workers.")
            self._signal_all(row, tasks, views, signal.SIGTERM)
            return
        terminating_since = row.end_ms if row.phase == Phase.TERMINATING else None
        decision = decide_attempt(views, now, int(self.settings.terminate_grace_seconds * 1000),
                                  terminating_since)
        if decision.act is Act.STOP_OTHERS:
            self._signal_all(row, tasks, views, signal.SIGTERM)
        elif decision.act is Act.KILL_OTHERS:
            self._signal_all(row, tasks, views, signal.SIGKILL)
        elif decision.act is Act.FINISH:
            assert decision.termination is not None
            await self._finish(row, tasks, decision.termination)

    def _record_exit(self, row: Row[Any], t: Row[Any], exit_code: int, lost: bool, detail: str,
                     now: int) -> None:
        run_dir = self._handle(row, t).run_dir
        message = ""
        if lost:
            message = f"Task lost: {detail}."
        elif exit_code != 0:
            last = tail(self.executor.log_path(run_dir))
            message = f"Exit code {exit_code}." + (f" Last log lines:\n{last}" if last else "")
        with self.db.begin() as conn:
            if w.record_task_exit(conn, row.id, t.seq, t.task, exit_code, message, now):
                text = (f"Task {t.task} lost: {detail}." if lost
                        else f"Task {t.task} exited with code {exit_code}.")
                w.add_event(conn, row.id, text, now, level="Info" if exit_code == 0 else "Warning",
                            source="Worker")

    def _signal_all(self, row: Row[Any], tasks: list[Row[Any]], views: list[TaskView], signum: int) -> None:
        live = {v.task for v in views if v.exit_code is None}
        for t in tasks:
            if t.task not in live:
                continue
            key = (row.id, t.seq, t.task)
            if signum == signal.SIGTERM and key in self._termed:
                continue
            self._termed.add(key)
            self.executor.signal(self._handle(row, t), signum)

    async def _finish(self, row: Row[Any], tasks: list[Row[Any]], term: Termination) -> None:
        now = w.now_ms()
        lines: list[str] = []
        if term.kind is not EndKind.TERMINATED:
            try:
                spec = self._spec(row)
                lay = ws.layout(spec, self.settings.job_dir(row.id))
                lines = await asyncio.to_thread(ws.upload_outputs, lay, self.store)
            except OpenartsError as exc:
                lines = [f"Outputs not uploaded: {exc.message}"]
        for t in tasks:
            self.executor.cleanup(self._handle(row, t))
            self._termed.discard((row.id, t.seq, t.task))
        phase, secondary = outcome(term)
        expected = Phase(row.phase)
        run_ms = row.run_ms + (now - row.running_since_ms if row.running_since_ms else 0)
        message = "" if phase is Phase.COMPLETED else term.end_reason
        with self.db.begin() as conn:
            for line in lines:
                w.add_event(conn, row.id, line, now, source="Storage")
            w.close_attempt(conn, row.id, row.attempt, now // 1000, term.end_reason, term.related_task)
            if w.transition(conn, row.id, expected, phase, at_ms=now, secondary=secondary, end_ms=now,
                            run_ms=run_ms, running_since_ms=0, message=message,
                            event=f"Job {phase.value.lower()}: {term.end_reason}.",
                            level="Info" if phase in (Phase.COMPLETED, Phase.TERMINATED) else "Error"):
                w.add_node_count(conn, row.id, now, 0)
        self._specs.pop(row.id, None)

    # -- deletion --------------------------------------------------------------------------------
    async def _purge(self, row: Row[Any]) -> None:
        with self.db.begin() as conn:
            w.purge_job(conn, row.id)
        self._specs.pop(row.id, None)
        self._waiting_reason.pop(row.id, None)
        await asyncio.to_thread(shutil.rmtree, self.settings.job_dir(row.id), True)

    def forget(self, job_ids: Iterable[str]) -> None:
        for job_id in job_ids:
            self._specs.pop(job_id, None)
