"""Starting an attempt: open it where the planner placed it, stage its data in the background, spawn its
workers, mark it started; and what a start that failed means (the supervisor's third part: loop.py has
the pass and scheduling, attempts.py running attempts).

`_launch` opens attempt N+1 on its placement (claimed from the pass's ledger) and, for a new placement,
starts a staging transfer (supervisor/transfers.py): code and inputs copied in, then the executor's own
preparation (the Ray executor packs what its nodes fetch), all in a thread, while the job shows
Pending/Creating. A later pass spawns the staged attempt (`_start_staged`), or ends the job when staging
failed. A restart in place on the same workers stages nothing and spawns at once, and so does an
attempt with nothing to copy (its directories are made in the pass: a few mkdirs).
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import logging
import threading
import time

from openarts.config import Settings
from openarts.core import faults
from openarts.core.errors import LostRace, OpenartsError, PreparationError
from openarts.core.phases import Phase, Secondary
from openarts.core.reasons import EndKind, Termination
from openarts.core.resources import Catalog, Flavor
from openarts.core.spec import JobSpec, Role
from openarts.executors.base import Mount, StartError, TaskHandle, TaskLaunch
from openarts.executors.volumes import nfs_shares, volume_mounts
from openarts.scheduler.plan import Demand, WorkerPlacement
from openarts.storage.cache import CachedInputs, StagingCache
from openarts.storage.obs import check_cancel
from openarts.store import jobs as w
from openarts.store.rows import AttemptRow, JobRow, TaskRow
from openarts.supervisor import telemetry as tm
from openarts.supervisor import workspace as ws
from openarts.supervisor.attempts import AttemptSupervision, Pass, add_notes, faultpoint
from openarts.supervisor.transfers import Kind, Note

log = logging.getLogger("openarts.supervisor")

START_BACKOFF_MS = (1_000, 30_000)  # a failed start is retried after 1 s, doubling up to 30 s

Claims = dict[int, Demand]  # worker index -> what that worker needs of its node, to claim


def placement_of(t: TaskRow) -> WorkerPlacement:
    """Where a task of the current attempt was placed, as the planner would say it."""
    return WorkerPlacement(t.node, t.ip, tuple(int(g) for g in t.gpus.split(",") if g),
                           tuple(int(c) for c in t.cpus.split(",") if c))


def staging_cache(settings: Settings) -> StagingCache | None:
    """The node's cache of inputs staged from a remote store (storage/cache.py), unless
    `staging_cache_gb` is 0. The local store is on this node already: its inputs are copied, as `cp`
    would (a cache would only copy them twice)."""
    storage = settings.raw.get("storage", {})
    if settings.staging_cache_gb <= 0 or storage.get("backend") != "s3":
        return None
    return StagingCache(settings.data_dir / "cache", int(settings.staging_cache_gb * 2**30),
                        f"s3:{storage.get('endpoint', '')}")


def _image(spec: JobSpec) -> str:
    """The image an attempt's nodes fetch ahead of its start, one per attempt: the first role's that has
    one, or ''. (On the Ray executor, the one that prepares, a heterogeneous job's roles have one image
    at most: service/jobs.py.)"""
    return next((r.spec.image for r in spec.role_list() if r.spec.image), "")


def resources_of(flavor: Flavor) -> dict[str, float]:
    """What one worker of `flavor` holds of its node, in the executor's terms (Ray's resource names)."""
    return {"CPU": flavor.cpu_cores, "memory": float(flavor.memory_mb * 2**20), "GPU": float(flavor.gpus)}


class AttemptStarts(AttemptSupervision):
    catalog: Catalog
    cache: StagingCache | None
    _code_rules: ws.CodeRules
    _retry_at: dict[str, int]

    # provided by the Supervisor (supervisor/loop.py)
    def _abnormal(self, row: JobRow, expected: Phase, message: str, now: int) -> None:
        raise NotImplementedError

    async def _launch(self, row: JobRow, workers: list[WorkerPlacement], start_type: str, stage: bool,
                      ps: Pass, claims: Claims) -> None:
        """Claim `claims` from the pass's ledger, then open attempt row.attempt+1 on `workers`. With
        `stage`, its code and inputs are staged in the background and a later pass spawns it
        (`_start_staged`), unless there is nothing to copy (no inputs, code used in place, an executor
        that prepares nothing): then, as without `stage`, its code is checked and it is spawned now."""
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
        lays = ws.role_layouts(spec, self.settings.job_dir(row.id), self.executor.sandboxed)
        background = stage and (self.executor.prepares or any(ws.fetches(r.spec, lay) for r, lay in lays))
        names = spec.task_names()
        try:
            port = await self.executor.free_port(workers[0].node)
        except StartError as exc:
            self._start_failed(row, expected, str(exc), names[0], spec)
            return
        now = w.now_ms()
        with self.db.begin() as conn:
            w.open_attempt(conn, row.id, seq, [
                {"task": names[i], "idx": i, "node": wp.node, "ip": wp.ip, "gpus": ",".join(map(str, wp.gpus)),
                 "cpus": ",".join(map(str, wp.cpus))}
                for i, wp in enumerate(workers)], port, now, start_type)
            if background:
                nodes = ", ".join(sorted({wp.node for wp in workers}))
                note = f"Staging code and inputs for attempt {seq} (node {nodes})."
                if expected is Phase.PENDING:
                    w.transition(conn, row.id, expected, expected, at_ms=now, secondary=Secondary.CREATING,
                                 event=note)
                else:
                    w.transition(conn, row.id, expected, expected, at_ms=now, event="")
                    w.add_event(conn, row.id, note, now, source="Storage")
        if expected is Phase.PENDING and not row.attempt:  # its first placement
            tm.QUEUE_WAIT.observe(max(0, now - row.create_ms) / 1000)
        faultpoint("attempt_opened")
        if background:
            self.transfers.start(row.id, seq, Kind.STAGE, functools.partial(
                self._stage, spec, lays, row.project_id, row.id, seq, [wp.node for wp in workers]))
            return
        try:  # nothing to copy: its directories made (a few mkdirs), or its code checked
            for role, lay in lays:
                if stage:
                    await asyncio.to_thread(ws.stage, role.spec, lay, self.store, self._code_rules)
                else:
                    await asyncio.to_thread(ws.check_code, role.spec, self.store, self._code_rules)
        except (OSError, PreparationError) as exc:
            with self.db.begin() as conn:
                w.drop_unstarted_attempt(conn, row.id, seq)
            self._prepare_failed(row, expected, exc.message if isinstance(exc, PreparationError)
                                 else f"Preparation failed: {exc}")
            return
        await self._spawn(row, expected, spec, seq, start_type, workers, port)

    async def _stage(self, spec: JobSpec, lays: list[tuple[Role, ws.Layout]], project_id: str, job_id: str,
                     seq: int, nodes: list[str], cancel: threading.Event) -> list[Note]:
        """A staging transfer's work: the data of each role (in a thread), then the executor's preparation
        of it on the attempt's nodes; an OSError or a StartError becomes the job's failure message."""
        began = time.monotonic()

        cached: list[CachedInputs] = []

        def data() -> tuple[list[str], tuple[Mount, ...]]:
            lines: list[str] = []
            for role, lay in lays:
                staged = ws.stage(role.spec, lay, self.store, self._code_rules, cancel, self.cache, project_id, cached)
                lines += [f"{role.name}: {line}" for line in staged] if spec.roles else staged
            return lines, tuple(m for ms in self._role_mounts(spec, lays).values() for m in ms)
        try:
            lines, mounts = await asyncio.to_thread(data)
            lines += await self.executor.prepare(job_id, seq, nodes, mounts, _image(spec), cancel, tuple(cached))
        except (OSError, StartError) as exc:
            check_cancel(cancel)  # cut short by a terminate: cancelled, not failed
            raise PreparationError(f"Preparation failed: {exc}") from exc
        return [Note(t) for t in [*lines, f"Staged in {time.monotonic() - began:.1f} s."]] if lines else []

    def _role_mounts(self, spec: JobSpec, lays: list[tuple[Role, ws.Layout]]) -> dict[str, tuple[Mount, ...]]:
        """Each role's mounts; a heterogeneous job's each under a key of its own, as the Ray executor
        packs every role's together and each task binds its role's (executors/base.py Mount.key)."""
        out = {}
        for k, (role, lay) in enumerate(lays):
            mounts = self._mounts(role.spec, lay)
            out[role.name] = tuple(m if m.shared or not spec.roles else dataclasses.replace(m, key=f"r{k}m{i}")
                                   for i, m in enumerate(mounts))
        return out

    def _mounts(self, spec: JobSpec, lay: ws.Layout) -> tuple[Mount, ...]:
        """What a sandboxed worker sees of the host: the job's directories and its volumes (StartError
        when a volume's share is no longer mounted)."""
        mounts = tuple(Mount(str(host), inside) for host, inside in lay.binds(whole_home=not spec.image)) \
            if lay.sandboxed else ()
        return mounts + volume_mounts(spec, nfs_shares(self.settings), lay.sandboxed)

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
                add_notes(conn, row.id, staged.lines, w.now_ms())
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
        """Reserve the attempt's placement, start every worker (each with its role's code, directories and
        environment), and mark the attempt started."""
        role_lays = ws.role_layouts(spec, self.settings.job_dir(row.id), self.executor.sandboxed)
        lays = {r.name: lay for r, lay in role_lays}
        names = spec.task_names()
        ips = [wp.ip for wp in workers]
        handles: list[TaskHandle] = []
        nodes = [wp.node for wp in workers]
        try:
            mounts = self._role_mounts(spec, role_lays)
            packed = tuple(m for ms in mounts.values() for m in ms) if spec.roles else ()  # what a start packs
            assigned = await self.executor.reserve(row.id, seq, nodes, [
                resources_of(spec.role_at(i).spec.flavor) for i in range(len(workers))])
            if assigned is not None and assigned != [wp.gpus for wp in workers]:
                workers = [dataclasses.replace(wp, gpus=g) for wp, g in zip(workers, assigned, strict=True)]
                with self.db.begin() as conn:
                    w.set_task_gpus(conn, row.id, seq, {names[i]: wp.gpus for i, wp in enumerate(workers)})
            for i, wp in enumerate(workers):
                role = spec.role_at(i)
                lay, image = lays[role.name], role.spec.image or ""
                env = ws.environment(spec, lay, row.id, i, ips, list(wp.gpus), port,
                                     ws.base_environment(self.executor.sandboxed, bool(image)), wp.node)
                handles.append(await self.executor.start(TaskLaunch(
                    row.id, seq, names[i], ws.argv(role.spec, lay), env, lay.seen(lay.cwd),
                    self.settings.attempt_dir(row.id, seq, names[i]), cpus=wp.cpus, mounts=mounts[role.name],
                    gpus=tuple(wp.gpus), image=image, node=wp.node,
                    outputs=tuple(lay.seen(d.local) for d in lay.uploads), packed=packed)))
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
        tm.STARTS.inc()

    def _prepare_failed(self, row: JobRow, expected: Phase, message: str) -> None:
        """Code, boot file, engine or data could not be prepared: the job ends Abnormal/CreateFailed."""
        now = w.now_ms()
        if expected is Phase.PENDING:
            self._abnormal(row, expected, message, now)
        else:
            with self.db.begin() as conn:
                w.transition(conn, row.id, expected, Phase.ABNORMAL, at_ms=now, secondary=Secondary.CREATE_FAILED,
                             message=message, end_ms=now, run_ms=self._run_ms(row, now), running_since_ms=0,
                             event=f"Job abnormal: {message}", level="Error")
            tm.FINISHED.labels(Phase.ABNORMAL.value).inc()
            self._forget(row.id)
        tm.FAILURES.labels(EndKind.PREPARE_FAILED.value).inc()

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
        cap = faults.Capabilities(other_node=False,  # placed again from the queue
                                  uses_gpus=any(r.spec.flavor.gpus > 0 for r in spec.role_list()))
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
        tm.EXECUTOR_ERRORS.labels("start").inc()
        tm.FAILURES.labels(EndKind.START_FAILED.value).inc()
        if rec is None:
            tm.FINISHED.labels(Phase.FAILED.value).inc()
            self._forget(row.id)
            return
        base, cap_ms = START_BACKOFF_MS
        self._retry_at[row.id] = now + min(cap_ms, base * 2 ** max(0, rec.state.retries_used - 1))
        self._wake.set()

    @staticmethod
    def _run_ms(row: JobRow, now: int) -> int:
        return int(row.run_ms + (now - row.running_since_ms if row.running_since_ms else 0))
