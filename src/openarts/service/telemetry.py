"""What /metrics reads from the store at each scrape (api/metrics.py): jobs by phase and the queue's
depth. Gauges of the stored state, so they are right after a restart and across servers of one store;
the counters of what this process did are the supervisor's (supervisor/telemetry.py)."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from openarts.core.phases import Phase
from openarts.store import queries as q
from openarts.store.db import Database


class StoredJobs(Collector):
    """Read by `refresh()`, on the event loop (the only thread that touches the store, store/db.py);
    `collect()`, which the exposition calls in a worker thread, yields what the last refresh read."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self.counts: dict[str, int] = {}
        self.depth = 0

    def refresh(self) -> None:
        with self.db.connect() as conn:
            self.counts = q.phase_counts(conn)
            self.depth = q.queue_depth(conn)

    def collect(self) -> Iterator[GaugeMetricFamily]:
        counts, depth = self.counts, self.depth
        jobs = GaugeMetricFamily("openarts_jobs", "Jobs stored, by phase", labels=["phase"])
        for phase in Phase:  # every phase, zeros included, so that a series never vanishes
            jobs.add_metric([phase.value], counts.get(phase.value, 0))
        yield jobs
        yield GaugeMetricFamily("openarts_queue_depth", "Jobs waiting in the queue (Pending/Queuing)", value=depth)
