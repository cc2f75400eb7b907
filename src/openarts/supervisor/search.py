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
import os
import shutil
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from openarts.config import Settings
from openarts.core import searchers
from openarts.core.errors import LostRace, OpenartsError
from openarts.core.phases import Phase, is_terminal
from openarts.core.reasons import AUTO_STOPPED
from openarts.core.resources import Catalog
from openarts.core.search import Observation, Reward, SearchSpec, TrialState, trial_request
from openarts.core.spec import JobSpec, parse_job
from openarts.store import jobs as w
from openarts.store import queries as q
from openarts.store import trials as st
from openarts.store.db import Database
from openarts.store.rows import JobRow, TrialRow

log = logging.getLogger("openarts.supervisor.search")

READ_MAX = 4 << 20  # log bytes read per trial per pass: a trial printing faster is read over several passes
HISTORY_MAX = 5000  # values kept per trial (the last value of every reward is always kept)
EARLY_STOP = "stopped early by the search's median rule (early_stop=median)"
ENDED_BY_SEARCH = "the search it belongs to was terminated"
SEARCH_FAILED = "search failed"  # a search's terminate_reason when it stops its trials because it failed


@dataclass
class RewardScan:
    """How far one attempt's log has been read, and what the rewards' regexes found in it."""
    seq: int
    offset: int = 0
    line: int = 0
    partial: bytes = b""
    last: dict[str, float] = field(default_factory=dict)
    history: list[list[Any]] = field(default_factory=list)  # [line, reward, value]
    objective: list[float] = field(default_factory=list)
    notes: dict[str, str] = field(default_factory=dict)  # reward -> its first unreadable capture

    def read(self, path: Path, rewards: tuple[Reward, ...], limit: int | None = READ_MAX) -> bool:
        """Read what the log gained since the last call (at most `limit` bytes; None: to its end); True if
        a reward changed."""
        try:
            with open(path, "rb") as f:
                size = os.fstat(f.fileno()).st_size
                if size < self.offset:  # a new file (the log was replaced): from the start
                    self.offset, self.line, self.partial = 0, 0, b""
                if size == self.offset:
                    return False
                f.seek(self.offset)
                data = f.read(size - self.offset if limit is None else min(limit, size - self.offset))
        except FileNotFoundError:
            return False
        self.offset += len(data)
        lines = (self.partial + data).split(b"\n")
        self.partial = lines.pop()
        if len(self.partial) > 1 << 20:  # a line of more than 1 MiB is read as it stands, not kept whole
            lines.append(self.partial)
            self.partial = b""
        changed = False
        for raw in lines:
            self.line += 1
            text = raw.decode("utf-8", "replace")
            for r in rewards:
                found = r.read(text)
                if found is None:
                    continue
                captured, value = found
                if value is None:
                    self.notes.setdefault(r.name, f"reward {r.name!r}: {captured!r} on log line {self.line} is "
                                                  "not a number")
                    continue
                changed = True
                self.last[r.name] = value
                if len(self.history) < HISTORY_MAX:
                    self.history.append([self.line, r.name, value])
                if r is rewards[0]:
                    self.objective.append(value)
        return changed

    def message(self, rewards: tuple[Reward, ...], ended: bool) -> str:
        """What went wrong reading the rewards: unreadable captures; once the trial ended, rewards never found."""
        notes = list(self.notes.values())
        if ended:
            notes += [f"reward {r.name!r} not found in the log (regex {r.regex!r})" for r in rewards
                      if r.name not in self.last and r.name not in self.notes]
        return "; ".join(notes)


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


def observation(t: TrialRow, spec: SearchSpec, scan: RewardScan | None = None) -> Observation:
    """A trial as the algorithm sees it; its objective's history from this pass's scan when there is one."""
    history = tuple(scan.objective) if scan is not None else tuple(
        v for _, name, v in orjson.loads(t.history) if name == spec.objective.name)
    return Observation(t.number, orjson.loads(t.params), t.state, t.value, history)


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
        self._specs: dict[str, tuple[JobSpec, SearchSpec]] = {}
        self._scans: dict[str, RewardScan] = {}  # trial job id -> its latest attempt's scan
        self._nodes: dict[str, int] = {}  # search id -> the node count last recorded

    # -- load --------------------------------------------------------------------------------------
    def load(self, rows: list[JobRow]) -> list[SearchView]:
        with self.db.connect() as conn:
            trials = st.trials_of(conn, [r.id for r in rows])
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
        for k in [k for k in self._scans if k not in trial_jobs]:
            del self._scans[k]

    def spec(self, row: JobRow) -> tuple[JobSpec, SearchSpec]:
        cached = self._specs.get(row.id)
        if cached is None:
            with self.db.connect() as conn:
                job = parse_job(orjson.loads(q.job_request(conn, row.id)), self.catalog)
            assert job.search is not None
            cached = self._specs[row.id] = (job, job.search)
        return cached

    # -- one search --------------------------------------------------------------------------------
    async def step(self, v: SearchView) -> None:
        row = v.row
        if is_terminal(row.phase):
            if row.delete_requested:
                await self._purge(v)
            return
        try:
            job, spec = self.spec(row)
        except OpenartsError as exc:
            if row.terminate_requested or row.delete_requested:
                self._wind_down(v)
            else:
                self._fail(v, f"The search cannot be read again: {exc.message}")
            return
        if row.phase == Phase.CREATING and not (row.terminate_requested or row.delete_requested):
            await self._prepare(row, job)
            return
        await self._read_rewards(v, spec)
        self._end_trials(v, spec)
        if row.terminate_requested or row.delete_requested:
            self._wind_down(v)
            return
        await self._early_stop(v, spec)
        await self._ask(v, job, spec)
        self._advance(v, spec)

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
                             None if is_terminal(job.phase) else READ_MAX))  # an ended trial: read to the end
        if not work:
            return

        def read_all() -> list[tuple[TrialRow, RewardScan]]:
            return [(t, scan) for t, scan, path, limit in work if scan.read(path, spec.rewards, limit)]

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
        with self.db.begin() as conn:
            for j in live:
                if not j.terminate_requested:
                    w.request_terminate(conn, j.id, now, ENDED_BY_SEARCH)
            if row.delete_requested:
                w.request_delete(conn, [j.id for j in v.jobs.values() if not j.delete_requested], now)
        if live:
            self.wake()
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
    async def _early_stop(self, v: SearchView, spec: SearchSpec) -> None:
        if spec.early_stop == "none":
            return
        candidates = [t for t in v.trials if t.state == TrialState.RUNNING and not t.stop_reason
                      and (j := v.jobs.get(t.job_id)) is not None and j.phase == Phase.RUNNING
                      and t.job_id in self._scans]
        if not candidates:
            return
        history = [observation(t, spec, self._scans.get(t.job_id)) for t in v.trials]
        mine = {o.number: o for o in history}

        def judge() -> list[TrialRow]:
            return [t for t in candidates if searchers.should_stop(spec, history, mine[t.number])]

        doomed = await asyncio.to_thread(judge)
        if not doomed:
            return
        now = w.now_ms()
        with self.db.begin() as conn:
            for t in doomed:
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
        history = [observation(t, spec, self._scans.get(t.job_id)) for t in v.trials]
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
                trial_job = parse_job(trial_request(job.request, number, values, spec.trial_timeout_s),
                                      self.catalog)
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
            if to is Phase.TERMINATED and phase is Phase.RUNNING:
                w.transition(conn, row.id, phase, Phase.TERMINATING, at_ms=now, event="")
                phase = Phase.TERMINATING
            w.transition(conn, row.id, phase, to, at_ms=now, end_ms=now, run_ms=run, running_since_ms=0,
                         message=message, event=event if event is not None else (
                             f"Search {to.value.lower()}" + (f": {message}" if message else ".")),
                         level="Error" if to in (Phase.FAILED, Phase.ABNORMAL) else "Info")
        self._specs.pop(row.id, None)
