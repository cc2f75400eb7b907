"""The searches' part of a supervisor pass: hyperparameter search jobs (kind autosearch_job, core/search.py).

A search runs no worker of its own. Each trial is a job of its own (jobs.parent_id = the search), created
here with the trial's values among its parameters, then scheduled, started, watched and recovered by the
rest of the supervisor like any job. A pass, for each search:

1. reads the live log of every running trial (worker-0's, the server's copy) for the search's rewards,
   from where the last pass stopped (`RewardScan`), and records what changed (store/trials.py);
2. ends the trials whose job ended: completed (with the objective's value), failed, early stopped,
   timed out or terminated, each once (a compare-and-set on the trial's state);
3. asks the algorithm (core/searchers.py, in a thread) whether a running trial should stop early, and
   for the values of the next trials, up to the budget and the parallelism;
4. creates those trials, each with its job, in one transaction that re-checks the search is still where
   the pass found it; and moves the search: Pending until a trial runs, Running, then Completed (some
   trial gave a value) or Failed (none did). Terminating a search terminates its trials first.

The algorithm keeps no state between calls: it is given every trial so far each time, so a server
restart loses nothing and asks nothing twice; what exists is what the trials table says.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson

from openarts.config import Settings
from openarts.core import searchers
from openarts.core.errors import LostRace, OpenartsError
from openarts.core.phases import Phase, is_terminal
from openarts.core.reasons import AUTO_STOPPED
from openarts.core.resources import Catalog
from openarts.core.search import Observation, SearchSpec, TrialState, search_of_request, trial_request
from openarts.core.spec import JobSpec, parse_job
from openarts.store import jobs as w
from openarts.store import queries as q
from openarts.store import trials as st
from openarts.store.db import Database
from openarts.store.rows import JobRow, TrialRow
from openarts.supervisor.rewards import READ_MAX, RewardScan

log = logging.getLogger("openarts.supervisor.search")

EARLY_STOP = "stopped early by the search's median rule (early_stop=median)"
END_READ_MAX = 64 << 20  # bytes of an ended trial's log read in one pass (the rest in the next ones)
ENDED_BY_SEARCH = "the search it belongs to was terminated"
SEARCH_FAILED = "search failed"  # a search's terminate_reason when it stops its trials because it failed


@dataclass
class SearchView:
    """One search as a pass loads it."""
    row: JobRow
    trials: list[TrialRow]
    jobs: dict[str, JobRow]  # trial job id -> its row (missing: purged)
    exit_codes: dict[str, int | None]  # trial job id -> worker-0's exit code in its latest attempt


def _counts(trials: list[TrialRow]) -> list[tuple[str, int]]:
    out: dict[str, int] = {}
    for t in trials:
        out[t.state] = out.get(t.state, 0) + 1
    return sorted(out.items())


def objective_history(history_json: str, spec: SearchSpec) -> tuple[float, ...]:
    return tuple(v for _, name, v in orjson.loads(history_json) if name == spec.objective.name)


class Searches:
    """The search jobs' step in each supervisor pass (see the module docstring)."""

    def __init__(self, settings: Settings, db: Database, catalog: Catalog,
                 render: Callable[[JobSpec, str], dict[str, Any]], wake: Callable[[], None],
                 check_code: Callable[[JobSpec], Any]) -> None:
        self.settings = settings
        self.db = db
        self.catalog = catalog
        self.render = render  # a trial's static document (service/document.py, handed over by api/app.py)
        self.wake = wake
        self.check_code = check_code
        self._specs: dict[str, tuple[JobSpec | OpenartsError, SearchSpec]] = {}
        self._scans: dict[str, RewardScan] = {}  # trial job id -> its latest attempt's scan
        self._nodes: dict[str, int] = {}  # search id -> the node count last recorded
        self._histories: dict[tuple[str, int], tuple[float, ...]] = {}  # an ended trial's objective history

    # -- load --------------------------------------------------------------------------------------
    def load(self, rows: list[JobRow]) -> list[SearchView]:
        with self.db.connect() as conn:
            trials = st.trials_of(conn, [r.id for r in rows], histories=False)
            jobs = st.jobs_of_trials(conn, [t.job_id for ts in trials.values() for t in ts])
            ended = [j for j in jobs.values() if is_terminal(j.phase) and j.attempt]
            tasks = q.current_tasks(conn, ended)
        codes = {job_id: next((t.exit_code for t in ts if t.task == "worker-0"), None)
                 for job_id, ts in tasks.items()}
        return [SearchView(r, trials[r.id], {t.job_id: jobs[t.job_id] for t in trials[r.id] if t.job_id in jobs},
                           {t.job_id: codes.get(t.job_id) for t in trials[r.id]}) for r in rows]

    def prune(self, active: set[str], trial_jobs: set[str]) -> None:
        for d in (self._specs, self._nodes):
            for k in [k for k in d if k not in active]:
                del d[k]
        self._histories = {k: h for k, h in self._histories.items() if k[0] in active}
        for k in [k for k in self._scans if k not in trial_jobs]:
            del self._scans[k]

    def spec(self, row: JobRow) -> tuple[JobSpec | OpenartsError, SearchSpec]:
        """The search's job spec (or why it no longer parses: a flavor or engine gone from the catalog) and
        its search spec, which needs no catalog (so its trials can always be read and ended)."""
        cached = self._specs.get(row.id)
        if cached is None:
            with self.db.connect() as conn:
                request = orjson.loads(q.job_request(conn, row.id))
            search = search_of_request(request)
            try:
                job: JobSpec | OpenartsError = parse_job(request, self.catalog)
            except OpenartsError as exc:
                job = exc
            cached = self._specs[row.id] = (job, search)
        return cached

    def forget(self, search_id: str) -> None:
        """Read the search's request again at its next step (a PUT changed it)."""
        self._specs.pop(search_id, None)

    # -- one search --------------------------------------------------------------------------------
    async def step(self, v: SearchView) -> None:
        row = v.row
        if is_terminal(row.phase):
            if row.delete_requested:
                await self._purge(v)
            return
        job, spec = self.spec(row)
        stopping = bool(row.terminate_requested or row.delete_requested)
        if row.phase == Phase.CREATING and not stopping and isinstance(job, JobSpec):
            await self._prepare(row, job)
            return
        await self._read_rewards(v, spec)
        self._end_trials(v, spec)
        if stopping:
            self._wind_down(v)
        elif isinstance(job, OpenartsError):
            self._fail(v, f"The search cannot be read again: {job.message}")
        elif not self._auto_stop(row, job):
            await self._early_stop(v, spec)
            await self._ask(v, job, spec)
            self._advance(v, spec)

    def _auto_stop(self, row: JobRow, job: JobSpec) -> bool:
        """spec.auto_stop of a search stops the search (its trials with it) once it has run that long."""
        limit = job.auto_stop_seconds
        now = w.now_ms()
        if not limit or not row.running_since_ms or row.run_ms + now - row.running_since_ms < limit * 1000:
            return False
        with self.db.begin() as conn:
            w.transition(conn, row.id, Phase(row.phase), Phase(row.phase), at_ms=now, event="")
            w.request_terminate(conn, row.id, now, f"{AUTO_STOPPED}: ran longer than {limit} s (spec.auto_stop)")
        self.wake()
        return True

    async def _prepare(self, row: JobRow, job: JobSpec) -> None:
        """Creating -> Pending once the code is there (every trial runs it)."""
        try:
            await asyncio.to_thread(self.check_code, job)
        except OpenartsError as exc:
            now = w.now_ms()
            with self.db.begin() as conn:
                w.transition(conn, row.id, Phase.CREATING, Phase.ABNORMAL, at_ms=now, message=exc.message,
                             end_ms=now, event=f"Search creation failed: {exc.message}", level="Error")
            return
        now = w.now_ms()
        with self.db.begin() as conn:
            w.transition(conn, row.id, Phase.CREATING, Phase.PENDING, at_ms=now,
                         event="Search queued: its trials are created and wait for resources like any job.")
        self.wake()

    # -- rewards -----------------------------------------------------------------------------------
    def _scan_of(self, t: TrialRow, job: JobRow) -> RewardScan | None:
        if not job.attempt:
            return None
        scan = self._scans.get(job.id)
        if scan is None or scan.seq != job.attempt:  # a new attempt (a restart) logs afresh
            scan = self._scans[job.id] = RewardScan(job.attempt)
        return scan

    async def _read_rewards(self, v: SearchView, spec: SearchSpec) -> None:
        work = []
        for t in v.trials:
            job = v.jobs.get(t.job_id)
            if t.state != TrialState.RUNNING or job is None:
                continue
            scan = self._scan_of(t, job)
            if scan is not None:
                work.append((t, scan, self.settings.attempt_dir(job.id, job.attempt, "worker-0") / "log",
                             is_terminal(job.phase)))
        if not work:
            return

        def read_all() -> list[tuple[TrialRow, RewardScan]]:
            """A running trial's log: READ_MAX more; an ended one's: on to its end, at most END_READ_MAX a
            pass (the trial ends once its log is read through: _end_trials)."""
            out = []
            for t, scan, path, ended in work:
                changed = scan.read(path, spec.rewards, READ_MAX, final=ended)
                budget = END_READ_MAX - READ_MAX
                while ended and not scan.at_end and budget > 0:
                    changed |= scan.read(path, spec.rewards, READ_MAX, final=True)
                    budget -= READ_MAX
                if changed:
                    out.append((t, scan))
            return out

        changed = await asyncio.to_thread(read_all)
        if not changed:
            return
        with self.db.begin() as conn:
            for t, scan in changed:
                st.set_metrics(conn, t.search_id, t.number, scan.last.get(spec.objective.name), scan.last,
                               scan.history, scan.message(spec.rewards, False))
        # the rows the rest of this step reads: as just written
        updated = {t.number: scan for t, scan in changed}
        v.trials = [t._replace(value=s.last.get(spec.objective.name), rewards=orjson.dumps(s.last).decode(),
                               history=orjson.dumps(s.history).decode())
                    if (s := updated.get(t.number)) is not None else t for t in v.trials]

    # -- trials that ended -------------------------------------------------------------------------
    def _end_trials(self, v: SearchView, spec: SearchSpec) -> None:
        now = w.now_ms()
        ends = []
        with self.db.connect() as conn:  # a stop asked through the API since the pass loaded the trials
            stops = dict(conn.execute("SELECT number, stop_reason FROM trials WHERE search_id = ? AND state = ?",
                                      (v.row.id, TrialState.RUNNING)).fetchall())
        for t in v.trials:
            if t.state != TrialState.RUNNING:
                continue
            job = v.jobs.get(t.job_id)
            if job is not None and not is_terminal(job.phase):
                continue
            t = t._replace(stop_reason=stops.get(t.number, t.stop_reason))
            scan = self._scans.get(t.job_id)
            if scan is not None and not scan.at_end:  # its log is still being read (a long one): next pass
                self.wake()
                continue
            state, why = self._outcome(t, job, spec)
            ran = job is not None and bool(job.start_ms)  # rewards missing from a trial that never ran: no news
            notes = "" if not ran else scan.message(spec.rewards, True) if scan is not None else (
                "" if t.value is not None else f"reward {spec.objective.name!r} not found in the log "
                f"(regex {spec.objective.regex!r})")
            ends.append((t, state, "; ".join(x for x in (why, notes) if x), v.exit_codes.get(t.job_id)))
        if not ends:
            return
        with self.db.begin() as conn:
            for t, state, message, code in ends:
                st.end_trial(conn, t.search_id, t.number, state, code, message, now)
                shown = f" {spec.objective.name}={t.value:g}." if t.value is not None else ""
                w.add_event(conn, v.row.id, f"Trial {t.number} {state.replace('_', ' ')}.{shown}"
                            + (f" {message}" if message and state != TrialState.COMPLETED else ""), now,
                            level="Info" if state in (TrialState.COMPLETED, TrialState.EARLY_STOPPED) else "Warning",
                            source="Search")
        for t, *_ in ends:
            self._scans.pop(t.job_id, None)
        ended = {t.number: (state, message, code) for t, state, message, code in ends}
        v.trials = [t._replace(state=e[0], message=e[1], exit_code=e[2], end_ms=now)
                    if (e := ended.get(t.number)) is not None else t for t in v.trials]

    @staticmethod
    def _outcome(t: TrialRow, job: JobRow | None, spec: SearchSpec) -> tuple[str, str]:
        if job is None:
            return TrialState.TERMINATED, "its job was deleted"
        if job.phase == Phase.COMPLETED:
            if t.value is None:
                return TrialState.FAILED, f"it completed without a value of {spec.objective.name!r}"
            return TrialState.COMPLETED, ""
        if job.phase == Phase.TERMINATED:
            if t.stop_reason:
                return TrialState.EARLY_STOPPED, t.stop_reason
            if job.terminate_reason.startswith(AUTO_STOPPED):
                return TrialState.TIMEOUT, f"ran longer than trial_timeout ({spec.trial_timeout_s} s)"
            return TrialState.TERMINATED, job.terminate_reason or "terminated by the user"
        return TrialState.FAILED, job.message

    # -- terminate / delete ------------------------------------------------------------------------
    def _wind_down(self, v: SearchView) -> None:
        """Terminate (or delete) the search: its trials first; the search ends once none is running."""
        row, now = v.row, w.now_ms()
        live = [j for j in v.jobs.values() if not is_terminal(j.phase)]
        asked = [j.id for j in live if not j.terminate_requested]
        doomed = [j.id for j in v.jobs.values() if row.delete_requested and not j.delete_requested]
        if asked or doomed:
            with self.db.begin() as conn:
                for job_id in asked:
                    w.request_terminate(conn, job_id, now, ENDED_BY_SEARCH)
                w.request_delete(conn, doomed, now)
            self.wake()  # the trials' jobs act on it; this search is looked at again when they end
        if live:
            return
        if row.terminate_reason.startswith(SEARCH_FAILED):
            self._end(row, Phase.FAILED, row.terminate_reason[len(SEARCH_FAILED):].lstrip(": "))
        else:
            self._end(row, Phase.TERMINATED, "")

    def _fail(self, v: SearchView, message: str) -> None:
        """The search cannot go on: it fails, once its running trials are terminated (a terminate whose
        reason says so: `_wind_down` ends it Failed)."""
        row = v.row
        if row.phase == Phase.CREATING:
            self._end(row, Phase.ABNORMAL, message)
        elif any(not is_terminal(j.phase) for j in v.jobs.values()):
            with self.db.begin() as conn:
                w.transition(conn, row.id, Phase(row.phase), Phase(row.phase), at_ms=w.now_ms(), event="")
                w.request_terminate(conn, row.id, w.now_ms(), f"{SEARCH_FAILED}: {message}")
            self.wake()
        else:
            self._end(row, Phase.FAILED, message)

    async def _purge(self, v: SearchView) -> None:
        now = w.now_ms()
        with self.db.begin() as conn:
            w.request_delete(conn, [j.id for j in v.jobs.values() if not j.delete_requested], now)
            st.purge_trials(conn, v.row.id)
            w.purge_job(conn, v.row.id)
        self._specs.pop(v.row.id, None)
        self.wake()  # the trials' jobs are purged by the rest of the pass, as any job being deleted
        await asyncio.to_thread(shutil.rmtree, self.settings.job_dir(v.row.id), True)

    # -- early stopping and new trials ---------------------------------------------------------------
    def _observations(self, v: SearchView, spec: SearchSpec) -> list[Observation]:
        """Every trial as the algorithm sees it. Objective histories: a running trial's from its scan; an
        ended one's from the store, read once (it no longer changes; the pass loads trials without them)."""
        missing = [t.number for t in v.trials if t.state != TrialState.RUNNING
                   and (t.search_id, t.number) not in self._histories]
        if missing:
            with self.db.connect() as conn:
                for number, stored in st.histories(conn, v.row.id, missing):
                    self._histories[(v.row.id, number)] = objective_history(stored, spec)
        out = []
        for t in v.trials:
            scan = self._scans.get(t.job_id)
            history = (self._histories.get((t.search_id, t.number), ()) if t.state != TrialState.RUNNING
                       else tuple(scan.objective) if scan is not None else ())
            out.append(Observation(t.number, orjson.loads(t.params), t.state, t.value, history))
        return out

    async def _early_stop(self, v: SearchView, spec: SearchSpec) -> None:
        if spec.early_stop == "none":
            return
        candidates = [t for t in v.trials if t.state == TrialState.RUNNING and not t.stop_reason
                      and (j := v.jobs.get(t.job_id)) is not None and j.phase == Phase.RUNNING
                      and t.job_id in self._scans]
        if not candidates:
            return
        history = self._observations(v, spec)
        mine = {o.number: o for o in history}

        def judge() -> list[TrialRow]:
            doomed = []
            for t in candidates:
                try:
                    if searchers.should_stop(spec, history, mine[t.number]):
                        doomed.append(t)
                except Exception:  # the rule failing is no reason to stop a trial, nor the search
                    log.exception("search %s: the early-stopping rule failed on trial %d", t.search_id, t.number)
            return doomed

        doomed = await asyncio.to_thread(judge)
        if not doomed:
            return
        now = w.now_ms()
        with self.db.begin() as conn:
            for t in doomed:
                phase = conn.execute("SELECT phase FROM jobs WHERE id = ?", (t.job_id,)).fetchone()
                if phase is None or is_terminal(phase[0]):  # it ended while the rule was asked
                    continue
                if st.request_stop(conn, t.search_id, t.number, EARLY_STOP):
                    w.request_terminate(conn, t.job_id, now, f"trial {t.number} {EARLY_STOP}")
                    w.add_event(conn, v.row.id, f"Trial {t.number} is stopped early: its {spec.objective.name} "
                                f"is worse than the median of earlier trials at the same step.", now, source="Search")
        self.wake()

    async def _ask(self, v: SearchView, job: JobSpec, spec: SearchSpec) -> None:
        running = sum(1 for t in v.trials if t.state == TrialState.RUNNING)
        n = min(spec.parallel - running, spec.budget - len(v.trials))
        if n <= 0:
            return
        row = v.row
        seed = spec.seed_for(row.id)
        history = self._observations(v, spec)
        first = len(v.trials)

        def ask() -> list[dict[str, str]]:
            asked: list[dict[str, str]] = []
            for number in range(first, first + n):
                values = searchers.suggest(spec, seed, history, number)
                history.append(Observation(number, values, TrialState.RUNNING, None))
                asked.append(values)
            return asked

        try:
            asked = await asyncio.to_thread(ask)
            made = []
            for i, values in enumerate(asked):
                number = first + i
                request = trial_request(job.request, number, values, spec.trial_timeout_s)
                policy = request["spec"].setdefault("schedule_policy", {})  # as the search is now (a PUT)
                policy.update(priority=row.priority, preemptible=bool(row.preemptible))
                trial_job = parse_job(request, self.catalog)
                job_id = str(uuid.uuid4())
                made.append((number, values, trial_job, job_id, self.render(trial_job, job_id)))
        except Exception as exc:  # deterministic: asking again would fail again, every pass
            log.exception("search %s: making trial %d failed", row.id, first)
            why = exc.message if isinstance(exc, OpenartsError) else f"{type(exc).__name__}: {exc}"
            self._fail(v, f"Trial {first} could not be made: {why}"[:2000])
            return
        now = w.now_ms()
        with self.db.begin() as conn:
            current = conn.execute("SELECT phase, terminate_requested, delete_requested FROM jobs WHERE id = ?",
                                   (row.id,)).fetchone()
            if current is None or current[0] != row.phase or current[1] or current[2]:
                raise LostRace(row.id, row.phase, "new trials")
            for number, values, trial_job, job_id, doc in made:
                w.create_job(conn, job_id, row.project_id, row.user_name, trial_job, doc, now, None,
                             parent_id=row.id)
                st.create_trial(conn, row.id, number, job_id, values, now)
                shown = ", ".join(f"{k}={val}" for k, val in values.items())
                w.add_event(conn, row.id, f"Trial {number} created ({shown}): job {job_id}.", now, source="Search")
        v.trials = v.trials + [TrialRow(row.id, number, job_id, orjson.dumps(values).decode(), TrialState.RUNNING,
                                        None, "{}", "[]", "", None, now, 0, "")
                               for number, values, _, job_id, _ in made]
        self.wake()

    # -- the search's own phase --------------------------------------------------------------------
    def _advance(self, v: SearchView, spec: SearchSpec) -> None:
        row, now = v.row, w.now_ms()
        nodes = sum(j.node_count for j in v.jobs.values() if j.phase == Phase.RUNNING)
        ran = any(j.start_ms for j in v.jobs.values())
        if row.phase == Phase.PENDING and ran:
            with self.db.begin() as conn:
                w.transition(conn, row.id, Phase.PENDING, Phase.RUNNING, at_ms=now, start_ms=now,
                             running_since_ms=now, event="Search running: its first trial started.")
            row = v.row = row._replace(phase=Phase.RUNNING.value, start_ms=now, running_since_ms=now)
        if self._nodes.get(row.id) != nodes and row.phase == Phase.RUNNING:
            with self.db.begin() as conn:
                last = conn.execute("SELECT count FROM node_counts WHERE job_id = ? ORDER BY id DESC LIMIT 1",
                                    (row.id,)).fetchone()
                if last is None or last[0] != nodes:
                    w.add_node_count(conn, row.id, now, nodes)
            self._nodes[row.id] = nodes
        if len(v.trials) < spec.budget or any(t.state == TrialState.RUNNING for t in v.trials):
            return
        done = [t for t in v.trials if t.state == TrialState.COMPLETED and t.value is not None]
        if done:
            sign = 1.0 if spec.objective.maximize else -1.0
            best = max(done, key=lambda t: sign * (t.value or 0.0))
            self._end(row, Phase.COMPLETED, "", event=f"Search completed: {len(done)} of {len(v.trials)} trials "
                      f"gave {spec.objective.name}; the best is trial {best.number} with {best.value:g}.")
        else:
            first = v.trials[0]
            self._end(row, Phase.FAILED, f"No trial gave a value of {spec.objective.name!r} ("
                      + ", ".join(f"{n} {state.replace('_', ' ')}" for state, n in _counts(v.trials))
                      + f"). Trial 0 {first.state.replace('_', ' ')}" + (f": {first.message[:500]}" if first.message
                                                                           else "."))

    def _end(self, row: JobRow, to: Phase, message: str, event: str | None = None) -> None:
        now = w.now_ms()
        run = row.run_ms + (now - row.running_since_ms if row.running_since_ms else 0)
        with self.db.begin() as conn:
            phase = Phase(row.phase)
            if to is Phase.COMPLETED and phase is Phase.PENDING:  # every trial came and went between passes
                w.transition(conn, row.id, phase, Phase.RUNNING, at_ms=now, start_ms=now, event="")
                phase = Phase.RUNNING
            if to is Phase.TERMINATED and phase is Phase.RUNNING:
                w.transition(conn, row.id, phase, Phase.TERMINATING, at_ms=now, event="")
                phase = Phase.TERMINATING
            w.transition(conn, row.id, phase, to, at_ms=now, end_ms=now, run_ms=run, running_since_ms=0,
                         message=message, event=event if event is not None else (
                             f"Search {to.value.lower()}" + (f": {message}" if message else ".")),
                         level="Error" if to in (Phase.FAILED, Phase.ABNORMAL) else "Info")
        self._specs.pop(row.id, None)
