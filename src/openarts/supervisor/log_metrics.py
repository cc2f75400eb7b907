"""Custom metrics of any job: its `algorithm.policies.auto_search.reward_attrs` (a plain job's reward_attrs
alone, or a trial's, which are its search's rewards) read from each task's log of the job's current attempt
by the metrics sampler (supervisor/metrics.py), every round, into `log_metrics` (store/log_metrics.py),
which GET .../metrics/{task_id} serves after cpuUsage and memUsage. docs/AUTOSEARCH.md.

One `RewardScan` per (job, attempt, task) in memory reads the log from where it stopped, in a worker
thread. A new attempt starts a new scan, whose first read replaces what the previous attempt left; after a
server restart the logs are read again from the start: a row is written whole, so a re-read writes the
same rows. A job that ended (it left the active jobs, or the supervisor said so: `ended`, for a job that
ran between two rounds) has its logs read on to their end (its last line counts without a newline), at
most END_READ_MAX bytes a task a round, then its scans are dropped.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import orjson

from openarts.config import Settings
from openarts.core.phases import Phase, is_terminal
from openarts.core.search import Reward, request_metrics
from openarts.store import log_metrics as lm
from openarts.store.db import Database
from openarts.store.rows import JobRow, LogMetricRow, TaskRow
from openarts.supervisor.rewards import READ_MAX, RewardScan

log = logging.getLogger("openarts.metrics")

Key = tuple[str, int, str]  # (job id, attempt, task)
END_READ_MAX = 64 << 20  # bytes of an ended task's log read in one round (the rest in the next ones)


@dataclass
class _Scan:
    scan: RewardScan
    rewards: tuple[Reward, ...]
    seen: tuple[object, ...] | None = None  # the scan's state when last recorded; None: never recorded
    stored: dict[str, tuple[float | None, int, str]] | None = None  # per metric: (last, values, message)

    def changes(self, key: Key) -> list[LogMetricRow]:
        """The rows of the metrics that changed since the last call (all of them at the first)."""
        s = self.scan
        seen = (s.line, len(s.history), tuple(s.last.items()), len(s.notes))
        if seen == self.seen:
            return []
        self.seen = seen
        values: dict[str, list[list[float]]] = {r.name: [] for r in self.rewards}
        for line, name, value in s.history:
            if name in values:
                values[name].append([line, value])
        first, stored = self.stored is None, self.stored or {}
        out = []
        for r in self.rewards:
            state = (s.last.get(r.name), len(values[r.name]), s.notes.get(r.name, ""))
            if not first and stored.get(r.name) == state:
                continue
            stored[r.name] = state
            out.append(LogMetricRow(key[0], key[2], r.name, state[0], orjson.dumps(values[r.name]).decode(),
                                    state[2]))
        self.stored = stored
        return out


class LogMetrics:
    def __init__(self, settings: Settings, db: Database) -> None:
        self.settings = settings
        self.db = db
        self._scans: dict[Key, _Scan] = {}
        self._metrics: dict[str, tuple[Reward, ...]] = {}  # job id -> its custom metrics (its stored request)
        self._ended: dict[str, tuple[int, tuple[str, ...]]] = {}  # told by the supervisor, for the next round

    def ended(self, job_id: str, seq: int, tasks: Sequence[str]) -> None:
        """The supervisor ended a job (attempt `seq`): its logs are read to their end in the next round,
        also when it ran between two rounds and no scan of it began."""
        self._ended[job_id] = (seq, tuple(tasks))

    async def read(self, active: Sequence[JobRow], tasks: Mapping[str, list[TaskRow]]) -> int:
        """One round. `active`: the jobs not ended (light rows); `tasks`: the current tasks of the Running
        ones. Returns the rows written."""
        told, self._ended = self._ended, {}
        attempt = {r.id: r.attempt for r in active if not is_terminal(r.phase) and not r.delete_requested}
        running = {r.id for r in active if r.phase == Phase.RUNNING and r.id in attempt}
        wanted = [(r, t.seq, t.task) for r in running for t in tasks.get(r, [])]
        wanted += [(job_id, seq, task) for job_id, (seq, names) in told.items() for task in names]
        self._load({k[0] for k in wanted if k not in self._scans and k[0] not in self._metrics})
        for key in wanted:
            rewards = self._metrics.get(key[0])
            if rewards and key not in self._scans:
                self._scans[key] = _Scan(RewardScan(key[1]), rewards)
        work: list[tuple[Key, _Scan, bool]] = []  # (key, scan, its job ended)
        for key, scan in list(self._scans.items()):
            current = attempt.get(key[0])
            if current is not None and key[1] < current:
                del self._scans[key]  # a new attempt logs afresh; its first read replaces these values
            else:
                work.append((key, scan, current is None))
        rows = await asyncio.to_thread(self._read_all, work) if work else []
        if rows:
            try:
                with self.db.begin() as conn:
                    lm.put(conn, rows)
            except BaseException:
                for _, scan, _ in work:  # written again whole at the next round
                    scan.seen = scan.stored = None
                raise
        for key, scan, ended in work:
            if ended and scan.scan.at_end:
                self._scans.pop(key, None)
        scanned = {k[0] for k in self._scans}
        self._metrics = {j: m for j, m in self._metrics.items() if j in running or j in scanned}
        return len(rows)

    def _load(self, job_ids: set[str]) -> None:
        """The custom metrics of jobs not seen before, from their stored requests (parsed once a job)."""
        if not job_ids:
            return
        with self.db.connect() as conn:
            requests = lm.job_requests(conn, sorted(job_ids))
        for job_id in job_ids:
            text = requests.get(job_id)
            try:
                request = orjson.loads(text) if text else {}
            except orjson.JSONDecodeError:
                request = {}
            self._metrics[job_id] = request_metrics(request) if isinstance(request, dict) else ()

    def _read_all(self, work: list[tuple[Key, _Scan, bool]]) -> list[LogMetricRow]:
        """Read each log from where its scan stopped (a worker thread: file I/O and the regexes): a running
        job's READ_MAX more, an ended one's on to its end (at most END_READ_MAX)."""
        out: list[LogMetricRow] = []
        for key, s, ended in work:
            path = self.settings.attempt_dir(*key) / "log"
            try:
                s.scan.read(path, s.rewards, READ_MAX, final=ended)
                budget = END_READ_MAX - READ_MAX
                while ended and not s.scan.at_end and budget > 0:
                    s.scan.read(path, s.rewards, READ_MAX, final=True)
                    budget -= READ_MAX
            except OSError as exc:
                log.warning("job %s task %s: its log could not be read for its custom metrics: %s",
                            key[0], key[2], exc)
                if ended:
                    s.scan.at_end = True  # not tried again: an ended job's scan is dropped
                continue
            out += s.changes(key)
        return out
