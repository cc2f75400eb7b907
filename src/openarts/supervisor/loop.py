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
import functools
import inspect
import logging
import os
import shutil
import threading
import time
from collections.abc import Callable
from pathlib import Path

import orjson

from openarts.config import Settings
from openarts.core import faults
from openarts.core.errors import LostRace, OpenartsError, PreparationError
from openarts.core.phases import Phase, Secondary
from openarts.core.reasons import EndKind, Termination
from openarts.core.resources import Catalog, Flavor
from openarts.core.spec import JobSpec, parse_job
from openarts.executors.base import Executor, Mount, StartError, TaskHandle, TaskLaunch
from openarts.executors.images import ImageStore
from openarts.executors.volumes import nfs_shares, volume_mounts
from openarts.scheduler.ledger import Ledger
from openarts.scheduler.plan import Affinity, Demand, PendingJob, WorkerPlacement, demand_of, plan
from openarts.storage.cache import StagingCache
from openarts.storage.obs import Manifest, ObjectStore
from openarts.store import jobs as w
from openarts.store import queries as q
from openarts.store.db import Database
from openarts.store.rows import AttemptRow, JobRow, TaskRow
from openarts.supervisor import snapshot as snap
from openarts.supervisor import workspace as ws
from openarts.supervisor.attempts import INIT, AttemptSupervision, Pass, faultpoint
from openarts.supervisor.metrics import MetricsSampler, handle_of
from openarts.supervisor.pulls import Pulls, PullState
from openarts.supervisor.steps import AttemptState, JobState, Staging, Step, next_step
from openarts.supervisor.transfers import Kind, Transfers

log = logging.getLogger("openarts.supervisor")

START_BACKOFF_MS = (1_000, 30_000)  # a failed start is retried after 1 s, doubling up to 30 s

Claims = dict[int, Demand]  # worker index -> what that worker needs of its node, to claim


def placement_of(t: TaskRow) -> WorkerPlacement:
    """Where a task of the current attempt was placed, as the planner would say it."""
    return WorkerPlacement(t.node, t.ip, tuple(int(g) for g in t.gpus.split(",") if g),
                           tuple(int(c) for c in t.cpus.split(",") if c))


def staging_cache(settings: Settings) -> StagingCache | None:
    """The node's cache of staged inputs (storage/cache.py), unless `staging_cache_gb` is 0."""
    if settings.staging_cache_gb <= 0:
        return None
    storage = settings.raw.get("storage", {})
    store_id = (f"s3:{storage.get('endpoint', '')}" if storage.get("backend") == "s3"
                else f"local:{settings.obs_dir}")
    return StagingCache(settings.data_dir / "cache", int(settings.staging_cache_gb * 2**30), store_id)


def resources_of(flavor: Flavor) -> dict[str, float]:
    """What one worker of `flavor` holds of its node, in the executor's terms (Ray's resource names)."""
    return {"CPU": flavor.cpu_cores, "memory": float(flavor.memory_mb * 2**20), "GPU": float(flavor.gpus)}


class Supervisor(AttemptSupervision):
    def __init__(self, settings: Settings, db: Database, catalog: Catalog, executor: Executor,
                 store: ObjectStore, sampler: MetricsSampler | None = None,
                 images: ImageStore | None = None) -> None:
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

    # -- waking --------------------------------------------------------------------------------
    def poke(self, job_id: str | None = None) -> None:
        """Wake the loop; with a job id, that job is polled and its spec read again (a PUT may have
        changed its annotations)."""
        if job_id:
            self._dirty.add(job_id)
            self._specs.pop(job_id, None)
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
        dirty, self._dirty = self._dirty, set()
        self.passes += 1
        now = w.now_ms()
        with self.db.connect() as conn:
            rows = q.active_jobs(conn)
            placed = [r for r in rows if r.phase in (Phase.RUNNING, Phase.TERMINATING, Phase.PENDING) and r.attempt]
            tasks = q.current_tasks(conn, placed)
            attempts = q.current_attempts(conn, placed)
            fenced = q.fenced_nodes(conn, now)
        # a Pending job whose attempt is open (being staged) holds its placement, as a running one does
        holding = {r.id for r in rows if r.phase in snap.HOLDING or (
            r.phase == Phase.PENDING and (a := attempts.get(r.id)) is not None and not a.end_ms)}
        ps = Pass(rows, tasks, Ledger(snap.free_capacity(self.catalog, rows, tasks, fenced, holding)), holding)
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
        if full:
            self._prune({r.id for r in rows})

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
            self._requeue_preempted(row, attempt, now)
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
            await asyncio.to_thread(ws.check_code, spec, self.store, self._code_rules)
        except OpenartsError as exc:
            self._abnormal(row, Phase.CREATING, exc.message, w.now_ms())
            return
        now = w.now_ms()
        pulled = ""
        if spec.image:
            state, line = self._pulls.poll(spec.image, row.id, row.create_ms)
            if state is PullState.FAILED:
                self._abnormal(row, Phase.CREATING, f"Image error: {line}.", now)
                return
            if state is not PullState.READY:
                if state is PullState.STARTED:
                    with self.db.begin() as conn:
                        w.add_event(conn, row.id, f"Pulling image {spec.image}.", now, source="Worker")
                return
            pulled = line
        with self.db.begin() as conn:
            w.transition(conn, row.id, Phase.CREATING, Phase.PENDING, at_ms=now, secondary=Secondary.QUEUING,
                         queue_seq=w.next_queue_seq(conn), event="Job queued, waiting for resources.")
            if pulled:
                w.add_event(conn, row.id, pulled, now, source="Worker")
        self._wake.set()  # schedule it in the very next pass

    def _abnormal(self, row: JobRow, expected: Phase, message: str, now: int) -> None:
        with self.db.begin() as conn:
            w.transition(conn, row.id, expected, Phase.ABNORMAL, at_ms=now, secondary=Secondary.CREATE_FAILED,
                         message=message, end_ms=now, event=f"Job creation failed: {message}", level="Error")
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
        demands = []
        for r in pending:
            flavor = self.catalog.flavors.get(r.flavor_id)
            if flavor is None:
                await self._guarded(r.id, self._abnormal, r, Phase.PENDING,
                                    f"Flavor {r.flavor_id} no longer exists.", w.now_ms())
                continue
            try:
                aff = self._spec(r).affinity
            except OpenartsError as exc:
                await self._guarded(r.id, self._abnormal, r, Phase.PENDING, exc.message, w.now_ms())
                continue
            demands.append(PendingJob(r.id, r.pool_id, demand_of(flavor), r.node_count, r.priority,
                                      r.queue_seq, r.project_id, Affinity(*aff) if aff else None,
                                      self.settings.one_worker_per_node))
        with self.db.connect() as conn:
            limits = q.project_quotas(conn)
        quotas, use = snap.quotas(self.catalog, ps.rows, limits, ps.holding)
        result = plan(demands, ps.ledger.free(), snap.running_jobs(self.catalog, ps.rows, ps.tasks), quotas, use)
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
            demand = demand_of(self.catalog.flavors[row.flavor_id])
            claims = dict.fromkeys(range(len(placement.workers)), demand)
            launches.append(self._guarded(row.id, self._launch, row, list(placement.workers), INIT, True, ps, claims))
        await asyncio.gather(*launches)  # each claims its placement before its first await: in plan order

    async def _launch(self, row: JobRow, workers: list[WorkerPlacement], start_type: str, stage: bool,
                      ps: Pass, claims: Claims) -> None:
        """Claim `claims` from the pass's ledger, then open attempt row.attempt+1 on `workers`. With
        `stage`, its code and inputs are staged in the background and a later pass spawns it
        (`_start_staged`); otherwise its code is checked and it is spawned now (`_spawn`)."""
        expected = Phase(row.phase)
        try:
            spec = self._spec(row)
        except OpenartsError as exc:
            self._prepare_failed(row, expected, exc.message)
            return
        if not ps.ledger.claim([(workers[i], d) for i, d in claims.items()]):  # the re-check
            log.warning("job %s: placement on %s no longer fits (this pass already committed it); placed "
                        "again next pass", row.id, sorted({workers[i].node for i in claims}))
            self._wake.set()
            return
        workers = [ps.ledger.pin(wp, claims[i]) if i in claims else wp for i, wp in enumerate(workers)]
        seq = row.attempt + 1
        try:
            port = await self.executor.free_port(workers[0].node)
        except StartError as exc:
            self._start_failed(row, expected, str(exc), "worker-0", spec)
            return
        now = w.now_ms()
        with self.db.begin() as conn:
            w.open_attempt(conn, row.id, seq, [
                {"task": f"worker-{i}", "idx": i, "node": wp.node, "ip": wp.ip, "gpus": ",".join(map(str, wp.gpus)),
                 "cpus": ",".join(map(str, wp.cpus))}
                for i, wp in enumerate(workers)], port, now, start_type)
            if stage:
                nodes = ", ".join(sorted({wp.node for wp in workers}))
                note = f"Staging code and inputs for attempt {seq} (node {nodes})."
                if expected is Phase.PENDING:
                    w.transition(conn, row.id, expected, expected, at_ms=now, secondary=Secondary.CREATING,
                                 event=note)
                else:
                    w.transition(conn, row.id, expected, expected, at_ms=now, event="")
                    w.add_event(conn, row.id, note, now, source="Storage")
        faultpoint("attempt_opened")
        if stage:
            lay = ws.layout(spec, self.settings.job_dir(row.id), self.executor.sandboxed)
            self.transfers.start(row.id, seq, Kind.STAGE, functools.partial(
                self._stage, spec, lay, row.project_id))
            return
        try:
            await asyncio.to_thread(ws.check_code, spec, self.store, self._code_rules)
        except PreparationError as exc:
            with self.db.begin() as conn:
                w.drop_unstarted_attempt(conn, row.id, seq)
            self._prepare_failed(row, expected, exc.message)
            return
        await self._spawn(row, expected, spec, seq, start_type, workers, port)

    def _stage(self, spec: JobSpec, lay: ws.Layout, project_id: str, cancel: threading.Event) -> list[str]:
        """A staging transfer's work (in a thread): an OSError becomes the job's failure message."""
        began = time.monotonic()
        try:
            lines = ws.stage(spec, lay, self.store, self._code_rules, cancel, self.cache, project_id)
        except OSError as exc:
            raise PreparationError(f"Preparation failed: {exc}") from exc
        return [*lines, f"Staged in {time.monotonic() - began:.1f} s."] if lines else lines

    async def _start_staged(self, row: JobRow, tasks: list[TaskRow], attempt: AttemptRow) -> None:
        """The attempt's data is staged: spawn its workers where it was placed."""
        staged = self.transfers.pop(row.id, attempt.seq, Kind.STAGE)
        expected = Phase(row.phase)
        try:
            spec = self._spec(row)
        except OpenartsError as exc:
            with self.db.begin() as conn:
                w.drop_unstarted_attempt(conn, row.id, attempt.seq)
            self._prepare_failed(row, expected, exc.message)
            return
        if staged is not None and staged.lines:
            with self.db.begin() as conn:
                for line in staged.lines:
                    w.add_event(conn, row.id, line, w.now_ms(), source="Storage")
        workers = [placement_of(t) for t in sorted(tasks, key=lambda t: t.idx)]
        await self._spawn(row, expected, spec, attempt.seq, attempt.start_type, workers, attempt.master_port)

    def _staging_failed(self, row: JobRow, attempt: AttemptRow) -> None:
        """Code or an input could not be staged: the job ends Abnormal/CreateFailed with the reason."""
        staged = self.transfers.pop(row.id, attempt.seq, Kind.STAGE)
        with self.db.begin() as conn:
            w.drop_unstarted_attempt(conn, row.id, attempt.seq)
        self._prepare_failed(row, Phase(row.phase), staged.error if staged else "Preparation failed.")

    async def _spawn(self, row: JobRow, expected: Phase, spec: JobSpec, seq: int, start_type: str,
                     workers: list[WorkerPlacement], port: int) -> None:
        """Reserve the attempt's placement, start every worker, and mark the attempt started."""
        lay = ws.layout(spec, self.settings.job_dir(row.id), self.executor.sandboxed)
        names = [f"worker-{i}" for i in range(spec.node_count)]
        ips = [wp.ip for wp in workers]
        argv = ws.argv(spec, lay)
        base = ws.base_environment(self.executor.sandboxed, bool(spec.image))
        mounts = tuple(Mount(str(host), inside) for host, inside in lay.binds(whole_home=not spec.image)) \
            if lay.sandboxed else ()
        handles: list[TaskHandle] = []
        nodes = [wp.node for wp in workers]
        try:
            mounts += volume_mounts(spec, nfs_shares(self.settings), lay.sandboxed)  # StartError if gone
            assigned = await self.executor.reserve(row.id, seq, nodes, resources_of(spec.flavor))
            if assigned is not None and assigned != [wp.gpus for wp in workers]:
                workers = [dataclasses.replace(wp, gpus=g) for wp, g in zip(workers, assigned, strict=True)]
                with self.db.begin() as conn:
                    w.set_task_gpus(conn, row.id, seq, {names[i]: wp.gpus for i, wp in enumerate(workers)})
            for i, wp in enumerate(workers):
                env = ws.environment(spec, lay, row.id, i, ips, list(wp.gpus), port, base, wp.node)
                handles.append(await self.executor.start(TaskLaunch(
                    row.id, seq, names[i], argv, env, lay.seen(lay.cwd),
                    self.settings.attempt_dir(row.id, seq, names[i]), cpus=wp.cpus, mounts=mounts,
                    gpus=tuple(wp.gpus), image=spec.image or "", node=wp.node,
                    outputs=tuple(lay.seen(d.local) for d in lay.uploads))))
        except StartError as exc:
            await self._release(row.id, seq, nodes, handles)
            with self.db.begin() as conn:
                w.drop_unstarted_attempt(conn, row.id, seq)
            self._start_failed(row, expected, str(exc), names[len(handles)], spec)
            return
        faultpoint("spawned")
        try:
            self._mark_started(row, expected, spec, seq, start_type, handles, workers)
        except LostRace:  # the job moved while its workers spawned: they must not run unaccounted
            await self._release(row.id, seq, nodes, handles)
            with self.db.begin() as conn:
                w.drop_unstarted_attempt(conn, row.id, seq)
            raise
        self._retry_at.pop(row.id, None)
        if period := self._period(spec):
            self._upload_at[row.id] = time.monotonic() + period
        for h in handles:
            self._watch(h)
        faultpoint("after_start")

    def _mark_started(self, row: JobRow, expected: Phase, spec: JobSpec, seq: int, start_type: str,
                      handles: list[TaskHandle], workers: list[WorkerPlacement]) -> None:
        now = w.now_ms()
        with self.db.begin() as conn:
            # the phase first: if the job moved underneath, nothing below is written (LostRace rolls back)
            if expected is Phase.PENDING:
                w.transition(conn, row.id, Phase.PENDING, Phase.RUNNING, at_ms=now, start_ms=row.start_ms or now,
                             running_since_ms=now, event=f"Job started: {spec.node_count} worker(s) running.")
            else:
                w.transition(conn, row.id, expected, expected, at_ms=now, secondary=Secondary.RUNNING,
                             event=f"Job restarted in place (attempt {seq}, {start_type}).")
            w.mark_attempt_started(conn, row.id, seq, now // 1000,
                                   [{"task": h.task, "pid": h.pid, "pid_start": h.pid_start} for h in handles], now)
            if row.attempt:
                w.finish_recover_record(conn, row.id, row.attempt, now // 1000, "success")
            w.add_node_count(conn, row.id, now, spec.node_count)
            for h, wp in zip(handles, workers, strict=True):
                w.add_event(conn, row.id, f"Task {h.task} started on node {wp.node} (pid {h.pid}).", now,
                            source="Worker")

    def _prepare_failed(self, row: JobRow, expected: Phase, message: str) -> None:
        """Code, boot file, engine or data could not be prepared: the job ends Abnormal/CreateFailed."""
        now = w.now_ms()
        if expected is Phase.PENDING:
            self._abnormal(row, expected, message, now)
            return
        with self.db.begin() as conn:
            w.transition(conn, row.id, expected, Phase.ABNORMAL, at_ms=now, secondary=Secondary.CREATE_FAILED,
                         message=message, end_ms=now, run_ms=self._run_ms(row, now), running_since_ms=0,
                         event=f"Job abnormal: {message}", level="Error")
        self._forget(row.id)

    def _start_failed(self, row: JobRow, expected: Phase, detail: str, task: str, spec: JobSpec) -> None:
        """The executor could not start a worker (kind start_failed, docs/STATES.md): retried from the
        queue within the job's retry budget (fault-tolerance/job-retry-num), after a backoff; once the
        budget is spent, or without one, the job ends Failed with the reason."""
        now = w.now_ms()
        term = Termination(EndKind.START_FAILED, f"start failed: {detail}", task)
        try:
            policy = faults.parse_policy(spec.annotations)
        except OpenartsError:
            policy = faults.FaultPolicy()
        state = faults.RecoveryState(row.retries_used, row.hang_restarts, row.recover_tier, row.pod_retries_used)
        cap = faults.Capabilities(other_node=False, uses_gpus=spec.flavor.gpus > 0)  # placed again from the queue
        rec = faults.plan_recovery(term, policy, state, cap, ran_long=False)
        with self.db.begin() as conn:
            if row.attempt and expected is Phase.RUNNING:  # an in-place restart that could not start
                w.finish_recover_record(conn, row.id, row.attempt, now // 1000, "failed")
            if rec is None:
                message = self._final_message(row, term, policy)
                w.transition(conn, row.id, expected, Phase.FAILED, at_ms=now, secondary=Secondary.FAILED,
                             message=message, end_ms=now, run_ms=self._run_ms(row, now), running_since_ms=0,
                             event=f"Job failed: {message}.", level="Error")
            else:  # counted against the budget; the ladder's tier is the last real fault's, not moved by this
                w.set_recovery_state(conn, row.id, dataclasses.replace(state, retries_used=rec.state.retries_used))
                note = (f"Cannot start task {task}: {detail}. Retrying from the queue "
                        f"({rec.state.retries_used} of {policy.budget} recoveries used).")
                w.transition(conn, row.id, expected, Phase.PENDING, at_ms=now, secondary=Secondary.QUEUING,
                             run_ms=self._run_ms(row, now), running_since_ms=0, event=note, level="Warning")
        if rec is None:
            self._forget(row.id)
            return
        base, cap_ms = START_BACKOFF_MS
        self._retry_at[row.id] = now + min(cap_ms, base * 2 ** max(0, rec.state.retries_used - 1))
        self._wake.set()

    @staticmethod
    def _run_ms(row: JobRow, now: int) -> int:
        return int(row.run_ms + (now - row.running_since_ms if row.running_since_ms else 0))

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
            demand = demand_of(spec.flavor)
            for i, t in enumerate(tasks):
                if t.task != attempt.end_related_task:
                    continue
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
