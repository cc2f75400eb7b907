"""The supervisor: one reconcile loop that moves every job through its lifecycle.

Each pass loads the active jobs from the store, asks `steps.next_step` what each job does next (a pure
function: the precedence between delete, terminate, preempt, restart and finish), and carries it out.
Executor calls and file copies happen outside database transactions; every phase change goes through
`store.jobs.transition()`, which raises `LostRace` when the job moved underneath: the transaction rolls
back and the job is looked at again in the next pass.

Capacity is planned, then applied with a re-check (scheduler/ledger.py): the pass's snapshot becomes a
ledger, and every placement it commits, a new job, a worker moved by pod_reschedule, a preempted job
placed again, is claimed from that ledger first, so nothing is handed out twice.

The loop is woken by submissions, API intents and task exits (pidfds), and runs a full pass every
`reconcile_interval_seconds` regardless. At start-up one full pass re-adopts what the last server left
running before the API serves. Running and Terminating attempts are handled in supervisor/attempts.py.

No copy runs inside a pass: an attempt's code and inputs are staged, and its outputs and logs uploaded,
by background transfers (supervisor/transfers.py) that a pass starts and a later pass reads the outcome
of; a job waits in Pending/Creating while it is staged, and its placement holds its capacity meanwhile.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import inspect
import logging
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson

from openarts.config import Settings
from openarts.core import faults
from openarts.core.errors import LostRace, OpenartsError, PreparationError
from openarts.core.phases import Phase, Secondary
from openarts.core.reasons import EndKind, Termination
from openarts.core.resources import Catalog
from openarts.core.search import SEARCH_KIND
from openarts.core.spec import JobSpec, parse_job
from openarts.executors.base import Executor, TaskHandle
from openarts.executors.images import ImageStore
from openarts.scheduler.capacity import free_capacity, holds
from openarts.scheduler.ledger import Ledger
from openarts.scheduler.plan import Affinity, PendingJob, demand_of, plan
from openarts.storage.obs import Manifest, ObjectStore
from openarts.store import jobs as w
from openarts.store import queries as q
from openarts.store.db import Database
from openarts.store.rows import AttemptRow, JobRow, TaskRow
from openarts.supervisor import snapshot as snap
from openarts.supervisor import telemetry as tm
from openarts.supervisor import workspace as ws
from openarts.supervisor.attempts import INIT, Pass
from openarts.supervisor.metrics import MetricsSampler, handle_of
from openarts.supervisor.pulls import Pulls, PullState
from openarts.supervisor.search import Searches
from openarts.supervisor.starting import AttemptStarts, Claims, placement_of, staging_cache
from openarts.supervisor.steps import AttemptState, JobState, Staging, Step, next_step
from openarts.supervisor.transfers import Kind, Transfers

log = logging.getLogger("openarts.supervisor")

def _no_trials(spec: JobSpec, job_id: str) -> dict[str, Any]:
    raise OpenartsError("this supervisor was built without a document renderer: it cannot create trials")


class Supervisor(AttemptStarts):
    def __init__(self, settings: Settings, db: Database, catalog: Catalog, executor: Executor,
                 store: ObjectStore, sampler: MetricsSampler | None = None,
                 images: ImageStore | None = None,
                 render: Callable[[JobSpec, str], dict[str, Any]] | None = None) -> None:
        self.settings = settings
        self.db = db
        self.catalog = catalog
        self.executor = executor
        self.store = store
        self.sampler = sampler
        self._wake = asyncio.Event()
        self._dirty: set[str] = set()
        self._stopping = False
        # in-memory bookkeeping, each keyed by job id and pruned to the active jobs every full pass
        self._termed: set[tuple[str, int, str]] = set()  # tasks already sent SIGTERM
        self._waiting_reason: dict[str, str] = {}
        self._specs: dict[str, JobSpec] = {}
        self._retry_at: dict[str, int] = {}  # start-failure backoff: not scheduled before (ms)
        self._pulls = Pulls(images, self.poke)
        self.transfers = Transfers(self.poke, settings.staging_concurrency, settings.upload_concurrency)
        self.cache = staging_cache(settings)
        self._sent: dict[str, dict[str, Manifest]] = {}  # job -> output directory -> what was uploaded
        self._upload_at: dict[str, float] = {}  # job -> when its next periodic upload is due (monotonic)
        # where a local code_dir may come from (workspace.CodeRules): the settings it reads are resolved at start
        own = [settings.data_dir, *([settings.config_path] if settings.config_path else []), *settings.secret_paths]
        self._code_rules = ws.CodeRules(
            tuple(Path(os.path.realpath(p)) for p in own),
            tuple(Path(os.path.realpath(p)) for p in settings.sandbox_read_only) if executor.sandboxed else None)
        self.passes = 0
        self.searches = Searches(settings, db, catalog, render or _no_trials, self._wake.set,
                                 lambda spec: ws.check_code(spec, self.store, self._code_rules))

    # -- waking --------------------------------------------------------------------------------
    def poke(self, job_id: str | None = None) -> None:
        """Wake the loop; with a job id, that job is polled and its spec read again (a PUT may have
        changed its annotations)."""
        if job_id:
            self._dirty.add(job_id)
            self._specs.pop(job_id, None)
            self.searches.forget(job_id)
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
        await self.transfers.close()

    async def adopt(self) -> None:
        """At start-up, before serving: one full pass re-adopts every job the last server left, then the
        executor drops what no open attempt owns (a reservation made by a server that died before
        recording it, or left by a data directory that was replaced)."""
        await self.reconcile(full=True)
        with self.db.connect() as conn:
            live = {(r.id, r.attempt) for r in q.active_jobs(conn) if r.attempt}
        try:
            await self.executor.sweep(live)
        except Exception:
            log.exception("sweeping the executor's leftovers failed")

    # -- one pass ------------------------------------------------------------------------------
    async def reconcile(self, full: bool = True) -> None:
        began = time.perf_counter()
        try:
            await self._reconcile(full)
        finally:
            tm.PASS_SECONDS.observe(time.perf_counter() - began)

    async def _reconcile(self, full: bool) -> None:
        dirty, self._dirty = self._dirty, set()
        self.passes += 1
        now = w.now_ms()
        with self.db.connect() as conn:
            rows = q.active_jobs(conn)
            searches = [r for r in rows if r.kind == SEARCH_KIND]  # they run nothing themselves: their trials do
            if searches:
                rows = [r for r in rows if r.kind != SEARCH_KIND]
            placed = [r for r in rows if r.phase in (Phase.RUNNING, Phase.TERMINATING, Phase.PENDING) and r.attempt]
            tasks = q.current_tasks(conn, placed)
            attempts = q.current_attempts(conn, placed)
            fenced = q.fenced_nodes(conn, now)
        # a Pending job whose attempt is open (being staged) holds its placement, as a running one does
        holding = {r.id for r in rows if holds(r.phase, (a := attempts.get(r.id)) is not None and not a.end_ms)}
        ps = Pass(rows, tasks, Ledger(free_capacity(self.catalog, rows, tasks, fenced, holding)), holding)
        pending: list[JobRow] = []
        steps = []
        for row in rows:
            attempt = attempts.get(row.id)
            step = next_step(self._state(row, attempt, now))
            if step is Step.SCHEDULE:
                pending.append(row)
                continue
            poll = full or row.id in dirty or bool(row.terminate_requested)
            steps.append(self._guarded(row.id, self._do, step, row, tasks.get(row.id, []), attempt, poll, ps))
        # jobs' steps run side by side: one waiting on its executor (a remote node) holds up no other.
        # What they share is the pass's ledger, whose claims are synchronous, so nothing is handed out twice.
        await asyncio.gather(*steps)
        if pending:
            await self._schedule(pending, ps)
        if searches:
            await asyncio.gather(*(self._guarded(v.row.id, self.searches.step, v)
                                   for v in self.searches.load(searches)))
        if full:
            self._prune({r.id for r in rows})
            self.searches.prune({r.id for r in searches}, {r.id for r in rows if r.parent_id})

    def _state(self, row: JobRow, attempt: AttemptRow | None, now: int) -> JobState:
        a = None if attempt is None else AttemptState(bool(attempt.started), bool(attempt.end_ms),
                                                      attempt.end_recover, self._staging(row.id, attempt))
        return JobState(Phase(row.phase), bool(row.terminate_requested), bool(row.preempt_requested),
                        bool(row.delete_requested), a, self._retry_at.get(row.id, 0) <= now)

    def _staging(self, job_id: str, attempt: AttemptRow) -> Staging:
        if attempt.started or attempt.end_ms:
            return Staging.NONE
        t = self.transfers.get(job_id, attempt.seq, Kind.STAGE)
        if t is None:
            return Staging.NONE
        return Staging.RUNNING if not t.done else Staging.FAILED if t.error else Staging.DONE

    async def _guarded(self, job_id: str, fn: Callable[..., object], *args: object) -> None:
        """Run one job's step; a lost race or a failure is that job's alone, never the pass's."""
        try:
            result = fn(*args)
            if inspect.isawaitable(result):
                await result
        except LostRace as exc:
            log.info("%s; it is looked at again in the next pass", exc)
            self.poke(job_id)
        except Exception:
            tm.RECONCILE_ERRORS.inc()
            log.exception("job %s: reconcile failed", job_id)

    async def _do(self, step: Step, row: JobRow, tasks: list[TaskRow], attempt: AttemptRow | None, poll: bool,
                  ps: Pass) -> None:
        now = w.now_ms()
        if step is Step.PURGE:
            await self._purge(row)
        elif step is Step.PREPARE:
            await self._prepare(row)
        elif step is Step.CANCEL:
            with self.db.begin() as conn:
                w.transition(conn, row.id, Phase(row.phase), Phase.TERMINATED, at_ms=now, end_ms=now)
            tm.FINISHED.labels(Phase.TERMINATED.value).inc()
            self._forget(row.id)
        elif step is Step.DISCARD_UNSTARTED:
            assert attempt is not None
            await self._discard_unstarted(row, tasks, attempt)
        elif step is Step.STOP_STAGING:
            self.transfers.cancel(row.id, (Kind.STAGE,))
        elif step is Step.START_STAGED:
            assert attempt is not None
            await self._start_staged(row, tasks, attempt)
        elif step is Step.STAGING_FAILED:
            assert attempt is not None
            self._staging_failed(row, attempt)
        elif step is Step.REQUEUE_PREEMPTED:
            assert attempt is not None
            self._requeue_preempted(row, attempt, now, [])  # between attempts: uploaded at its end
        elif step is Step.FINISH_TERMINATED:
            assert attempt is not None
            await self._finish(row, tasks, attempt, Termination(EndKind.TERMINATED, "job terminated by user"), ps)
        elif step is Step.CANCEL_RECOVERY:
            with self.db.begin() as conn:
                w.transition(conn, row.id, Phase.RUNNING, Phase.TERMINATING, at_ms=now, end_ms=now,
                             event="Job terminating during recovery: the restart is cancelled.")
            self._wake.set()
        elif step is Step.RESTART:
            assert attempt is not None
            await self._restart_in_place(row, tasks, attempt, ps)
        elif step is Step.BEGIN_TERMINATE:
            await self._begin_terminate(row, tasks, poll, now)
        elif step is Step.SUPERVISE:
            await self._supervise(row, tasks, attempt, poll, ps)

    def _prune(self, active: set[str]) -> None:
        """Drop bookkeeping of jobs that are no longer active (ended, purged): bounded by active jobs."""
        for d in (self._waiting_reason, self._specs, self._retry_at, self._sent, self._upload_at):
            for job_id in [k for k in d if k not in active]:
                del d[job_id]
        self._termed = {k for k in self._termed if k[0] in active}
        self.transfers.prune(active)

    def _forget(self, job_id: str) -> None:
        for d in (self._specs, self._waiting_reason, self._retry_at, self._sent, self._upload_at):
            d.pop(job_id, None)

    # -- Creating -> Pending ---------------------------------------------------------------------
    def _spec(self, row: JobRow) -> JobSpec:
        spec = self._specs.get(row.id)
        if spec is None:
            with self.db.connect() as conn:
                request = q.job_request(conn, row.id)
            spec = parse_job(orjson.loads(request), self.catalog)
            self._specs[row.id] = spec
        return spec

    async def _prepare(self, row: JobRow) -> None:
        """Creating -> Pending once its code is there and its image (if any) is on this node; an image
        is pulled in the background meanwhile (supervisor/pulls.py). The code is looked at in a thread:
        on an S3 store that is a request or two."""
        try:
            spec = self._spec(row)
            if self.executor.prepares and len({r.spec.image for r in spec.roles if r.spec.image}) > 1:
                # checked at create (service/jobs.py); a job created before the server moved to Ray
                raise PreparationError("Image error: on the Ray executor the roles of a job run in one image "
                                       "at most (its nodes fetch one per attempt).")
            for role in spec.role_list():
                try:
                    await asyncio.to_thread(ws.check_code, role.spec, self.store, self._code_rules)
                except PreparationError as exc:
                    raise PreparationError(f"Role {role.name}: {exc.message}" if spec.roles else exc.message) \
                        from None
        except OpenartsError as exc:
            self._abnormal(row, Phase.CREATING, exc.message, w.now_ms())
            return
        now = w.now_ms()
        pulled = []
        for image in dict.fromkeys(r.spec.image for r in spec.role_list() if r.spec.image):  # each role's
            state, line = self._pulls.poll(image, row.id, row.create_ms)
            if state is PullState.FAILED:
                self._abnormal(row, Phase.CREATING, f"Image error: {line}.", now)
                return
            if state is not PullState.READY:
                if state is PullState.STARTED:
                    with self.db.begin() as conn:
                        w.add_event(conn, row.id, f"Pulling image {image}.", now, source="Worker")
                return
            pulled.append(line)
        with self.db.begin() as conn:
            w.transition(conn, row.id, Phase.CREATING, Phase.PENDING, at_ms=now, secondary=Secondary.QUEUING,
                         queue_seq=w.next_queue_seq(conn), event="Job queued, waiting for resources.")
            for line in pulled:
                w.add_event(conn, row.id, line, now, source="Worker")
        self._wake.set()  # schedule it in the very next pass

    def _abnormal(self, row: JobRow, expected: Phase, message: str, now: int) -> None:
        with self.db.begin() as conn:
            w.transition(conn, row.id, expected, Phase.ABNORMAL, at_ms=now, secondary=Secondary.CREATE_FAILED,
                         message=message, end_ms=now, event=f"Job creation failed: {message}", level="Error")
        tm.FINISHED.labels(Phase.ABNORMAL.value).inc()
        self._forget(row.id)

    # -- Pending -> Running ----------------------------------------------------------------------
    def _handle(self, row: JobRow, t: TaskRow) -> TaskHandle:
        return handle_of(self.settings, row, t)

    async def _discard_unstarted(self, row: JobRow, tasks: list[TaskRow], attempt: AttemptRow) -> None:
        """An attempt opened but never marked started (the server died while spawning it): kill
        whatever was spawned and forget it; the next pass sees the job as it was before."""
        staged = self.transfers.pop(row.id, attempt.seq, Kind.STAGE)
        await self._release(row.id, attempt.seq, [t.node for t in tasks], [self._handle(row, t) for t in tasks])
        now = w.now_ms()
        with self.db.begin() as conn:
            w.drop_unstarted_attempt(conn, row.id, attempt.seq)
            if row.phase == Phase.PENDING:  # back in the queue (from Creating, while it was staged)
                w.transition(conn, row.id, Phase.PENDING, Phase.PENDING, at_ms=now, secondary=Secondary.QUEUING,
                             event="")
            if staged is None:
                w.add_event(conn, row.id, "Discarded an attempt that was interrupted while starting.", now,
                            level="Warning")
        self._wake.set()

    async def _schedule(self, pending: list[JobRow], ps: Pass) -> None:
        jobs_by_id = {r.id: r for r in pending}
        demands: dict[str, PendingJob] = {}
        for r in pending:
            job = snap.pending_job(self.catalog, r, None, self.settings.one_worker_per_node)
            if isinstance(job, str):
                await self._guarded(r.id, self._abnormal, r, Phase.PENDING, f"Flavor {job} no longer exists.",
                                    w.now_ms())
                continue
            try:
                aff = self._spec(r).affinity
            except OpenartsError as exc:
                await self._guarded(r.id, self._abnormal, r, Phase.PENDING, exc.message, w.now_ms())
                continue
            demands[r.id] = dataclasses.replace(job, affinity=Affinity(*aff)) if aff else job
        with self.db.connect() as conn:
            limits = q.project_quotas(conn)
        quotas, use = snap.quotas(self.catalog, ps.rows, limits, ps.holding)
        result = plan(list(demands.values()), ps.ledger.free(), snap.running_jobs(self.catalog, ps.rows, ps.tasks),
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
        launches = []
        for placement in result.placements:
            self._waiting_reason.pop(placement.job_id, None)
            row = jobs_by_id[placement.job_id]
            claims = dict(enumerate(demands[row.id].worker_demands()))
            launches.append(self._guarded(row.id, self._launch, row, list(placement.workers), INIT, True, ps, claims))
        await asyncio.gather(*launches)  # each claims its placement before its first await: in plan order

    # -- between attempts: a restart in place ----------------------------------------------------
    async def _restart_in_place(self, row: JobRow, tasks: list[TaskRow], attempt: AttemptRow, ps: Pass) -> None:
        """The next attempt on the same workers; pod_reschedule moves the failed task to another node
        with room now (claimed from the pass's ledger), or keeps it where it was if there is none."""
        workers = [placement_of(t) for t in tasks]
        start_type = "restarted"
        claims: Claims = {}
        if attempt.end_recover == faults.POD_RESCHEDULE:
            start_type = INIT
            try:
                spec = self._spec(row)
            except OpenartsError as exc:
                self._prepare_failed(row, Phase(row.phase), exc.message)
                return
            for i, t in enumerate(tasks):
                if t.task != attempt.end_related_task:
                    continue
                demand = demand_of(spec.role_at(t.idx).spec.flavor)
                target = ps.ledger.place_one(demand, spec.pool_id, avoid=t.node)
                if target is not None:
                    workers[i] = target
                    claims[i] = demand
        await self._launch(row, workers, start_type, stage=start_type == INIT, ps=ps, claims=claims)

    # -- deletion --------------------------------------------------------------------------------
    async def _purge(self, row: JobRow) -> None:
        with self.db.begin() as conn:
            w.purge_job(conn, row.id)
        self._forget(row.id)
        await asyncio.to_thread(shutil.rmtree, self.settings.job_dir(row.id), True)
