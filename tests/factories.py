"""Jobs made through the store's own writers, and an in-process supervisor on the fake executor.

For unit tests of the supervisor's logic: real SQLite, the real Supervisor and planner, no processes
(executors/fake.py). Tests drive it pass by pass with `h.run(passes)`.
"""

from __future__ import annotations

import asyncio
import itertools
from pathlib import Path
from typing import Any

from openarts.config import Settings
from openarts.core.resources import build_catalog
from openarts.core.spec import parse_job
from openarts.executors.fake import FakeExecutor
from openarts.storage.obs import LocalObjectStore
from openarts.store import jobs as w
from openarts.store import queries as q
from openarts.store.db import open_db
from openarts.store.rows import JobRow, TaskRow
from openarts.supervisor.loop import Supervisor

_ids = itertools.count(1)


def create_job(db: Any, catalog: Any, *, name: str | None = None, flavor: str = "cpu1", node_count: int = 1,
               command: str = "true", annotations: dict[str, str] | None = None, priority: int | None = None,
               preemptible: bool | None = None, project: str = "p") -> str:
    """A job in phase Creating, made by store.jobs.create_job from a parsed create body."""
    n = next(_ids)
    resource: dict[str, Any] = {"flavor_id": flavor, "node_count": node_count}
    spec_body: dict[str, Any] = {"resource": resource}
    if priority is not None or preemptible is not None:
        spec_body["schedule_policy"] = {k: v for k, v in (("priority", priority), ("preemptible", preemptible))
                                        if v is not None}
    body = {"kind": "job", "metadata": {"name": name or f"job-{n}", "annotations": annotations or {}},
            "algorithm": {"command": command}, "spec": spec_body}
    spec = parse_job(body, catalog)
    job_id = f"job-{n:04d}"
    with db.begin() as conn:
        w.create_job(conn, job_id, project, "u", spec, {}, w.now_ms())
    return job_id


class Harness:
    def __init__(self, tmp: Path, nodes: list[dict[str, Any]], flavors: list[dict[str, Any]] | None = None,
                 **settings: Any) -> None:
        raw = {"nodes": nodes, "flavors": flavors or [{"flavor_id": "cpu1", "cpu_cores": 1, "memory_gb": 1}]}
        self.settings = Settings(data_dir=tmp, raw=raw, terminate_grace_seconds=0.0, **settings)
        self.db = open_db(tmp / "openarts.db")
        self.catalog = build_catalog(raw, gpus=[])
        self.executor = FakeExecutor()
        self.sup = Supervisor(self.settings, self.db, self.catalog, self.executor,
                              LocalObjectStore(tmp / "obs"), sampler=None)

    def submit(self, **kw: Any) -> str:
        return create_job(self.db, self.catalog, **kw)

    def run(self, passes: int = 1) -> None:
        async def go() -> None:
            for _ in range(passes):
                await self.sup.reconcile(full=True)
                # background transfers (staging, uploads) end within the pass that started them here,
                # and the pass their outcome wakes counts with it: pass counts stay those of the steps
                while await self.sup.transfers.settle():
                    await self.sup.reconcile(full=True)
        asyncio.run(go())

    def job(self, job_id: str) -> JobRow:
        with self.db.connect() as conn:
            return q.get_job(conn, "p", job_id)

    def tasks(self, job_id: str) -> list[TaskRow]:
        """The tasks of the job's latest attempt."""
        with self.db.connect() as conn:
            return q.current_tasks(conn, [q.get_job(conn, "p", job_id)]).get(job_id, [])

    def events(self, job_id: str) -> list[str]:
        with self.db.connect() as conn:
            return [r[0] for r in conn.execute("SELECT message FROM events WHERE job_id = ? ORDER BY id", (job_id,))]

    def placements(self) -> list[tuple[str, str, str]]:
        """(node, gpus, job) of every task that holds capacity: a live worker of a Running job."""
        live = {(t.launch.job_id, t.launch.seq, t.launch.task) for t in self.executor.running()}
        with self.db.connect() as conn:
            rows = conn.execute("SELECT t.node, t.gpus, t.job_id, t.seq, t.task FROM tasks t "
                                "JOIN jobs j ON j.id = t.job_id AND j.attempt = t.seq").fetchall()
        return sorted((node, gpus, job) for node, gpus, job, seq, task in rows if (job, seq, task) in live)
