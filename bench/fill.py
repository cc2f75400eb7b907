"""Fill a data directory's store with many finished jobs, fast, while no server runs on it.

Each job is parsed from a real create body (`core.spec.parse_job`) and rendered (`service.document.static_document`)
as the API would. The new rows (phase Creating, plus their "created" event) are inserted in bulk with
statements that mirror `store.jobs.create_job` column for column; every phase change after that goes
through `store.jobs.transition()`, the only writer of a phase, along the lifecycle's allowed edges.
The attempt, task, node-count and event rows the supervisor writes on the way are inserted beside the
transitions (in their final state), so that the job documents the API renders look like real ones.

SQLAlchemy Core's per-statement cost (~150-200 us to build, key and compile one statement, see
docs/benchmarks.md) makes `transition()` the slow part (~2.75 per job), so the fill runs in one process
per core, each on a shard database, and the shards' rows are then copied as they are into the real
database. Filled stores are cached under bench/results/cache/, keyed by the fill code and the store
code, so a re-run starts in a second.
"""

from __future__ import annotations

import gc
import hashlib
import multiprocessing as mp
import os
import shutil
import sqlite3
import tempfile
import time
import tomllib
import uuid
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import orjson

import common  # noqa: F401  (first: it points sys.path at OPENARTS_BENCH_SRC when set)
import openarts.store.db as store_db
import openarts.store.schema as store_schema
from common import BENCH_DIR, CONFIG, PROJECT, RESULTS, job_body
from openarts.config import load_settings
from openarts.core.phases import Phase, Secondary
from openarts.core.resources import build_catalog
from openarts.core.spec import parse_job
from openarts.store import jobs as w
from openarts.store.db import insert, open_db
from openarts.store.schema import attempts, jobs, tasks
from openarts.supervisor import workspace as ws

try:
    from openarts.service.document import static_document
except ImportError:  # a snapshot (OPENARTS_BENCH_SRC) from before the job document moved below the API
    from openarts.api.render import static_document  # type: ignore[no-redef]

# Final phases, in a repeating pattern of 20 jobs: 60% Completed, 20% Failed, 15% Terminated (while
# queued), 5% Abnormal (creation failed).
MIX = ["Completed"] * 12 + ["Failed"] * 4 + ["Terminated"] * 3 + ["Abnormal"]
TASK = "worker-0"

def _cols(table: Any, row: dict[str, Any]) -> dict[str, Any]:
    """Only the columns the table has (the schema is still growing; new columns have defaults)."""
    return {k: v for k, v in row.items() if k in table.c}


def _event(conn: Any, job_id: str, message: str, at_ms: int, level: str = "Info", source: str = "Job") -> None:
    w.add_event(conn, job_id, message, at_ms, level=level, source=source)


def _insert_created(conn: Any, batch: list[tuple[str, Any, dict[str, Any], int]]) -> None:
    """The rows `store.jobs.create_job` writes, for many jobs."""
    for row in (
        {"id": job_id, "project_id": PROJECT, "workspace_id": spec.workspace_id, "name": spec.name, "kind": "job",
         "description": spec.description, "user_name": "bench", "create_ms": at, "update_ms": at,
         "phase": Phase.CREATING.value, "secondary_phase": Secondary.CREATING.value,
         "flavor_id": spec.flavor.flavor_id, "node_count": spec.node_count, "pool_id": spec.pool_id,
         "priority": spec.priority, "engine_id": spec.engine.engine_id,
         "request": orjson.dumps(spec.request).decode(), "doc": orjson.dumps(doc).decode()}
        for job_id, spec, doc, at in batch):
        insert(conn, jobs, row)
    for job_id, spec, _doc, at in batch:
        _event(conn, job_id, f"Training job {spec.name} created.", at)


def _run(conn: Any, job_id: str, queue_seq: int, start: int, end: int, exit_code: int) -> None:
    """Pending -> Running -> Completed/Failed through transition(); the attempt and task rows that the
    supervisor writes on the way are inserted directly in their final state (they hold no phase)."""
    w.transition(conn, job_id, Phase.CREATING, Phase.PENDING, at_ms=start - 10, secondary=Secondary.QUEUING,
                 queue_seq=queue_seq, event="Job queued, waiting for resources.")
    reason = "job completed" if exit_code == 0 else f"exit with {exit_code}"
    insert(conn, attempts, _cols(attempts, {
        "job_id": job_id, "seq": 1, "master_port": 29500, "start_type": "init_or_rescheduled", "started": True,
        "start_at": start // 1000, "opened_ms": start - 5, "started_ms": start, "end_at": end // 1000,
        "end_ms": end, "end_reason": reason, "end_related_task": TASK if exit_code else ""}))
    conn.execute("UPDATE jobs SET attempt = 1 WHERE id = ?", (job_id,))
    insert(conn, tasks, _cols(tasks, {
        "job_id": job_id, "seq": 1, "task": TASK, "idx": 0, "node": "bench", "ip": "127.0.0.1", "gpus": "",
        "pid": 0, "pid_start": 0.0, "start_ms": start, "exit_code": exit_code, "end_ms": end,
        "message": "" if exit_code == 0 else f"Exit code {exit_code}."}))
    w.transition(conn, job_id, Phase.PENDING, Phase.RUNNING, at_ms=start, start_ms=start, running_since_ms=start,
                 event="Job started: 1 worker(s) running.")
    w.add_node_count(conn, job_id, start, 1)
    _event(conn, job_id, f"Task {TASK} started on node bench (pid 0).", start, source="Worker")
    _event(conn, job_id, f"Task {TASK} exited with code {exit_code}.", end,
           level="Info" if exit_code == 0 else "Warning", source="Worker")
    phase = Phase.COMPLETED if exit_code == 0 else Phase.FAILED
    w.transition(conn, job_id, Phase.RUNNING, phase, at_ms=end, end_ms=end, run_ms=end - start,
                 running_since_ms=0, message="" if exit_code == 0 else reason,
                 event=f"Job {phase.value.lower()}: {reason}.", level="Info" if exit_code == 0 else "Error")
    w.add_node_count(conn, job_id, end, 0)


def _fill_range(db_path: str, data_dir: str, lo: int, hi: int, first_ms: int, chunk: int,
                progress: bool) -> dict[str, int]:
    """Jobs lo..hi-1 into the store at `db_path` (documents rendered for DATA_DIR)."""
    t0 = time.perf_counter()
    settings = load_settings(Path(data_dir))
    catalog = build_catalog(tomllib.loads(CONFIG))
    db = open_db(db_path)
    phases: Counter[str] = Counter()
    gc.freeze()
    gc.disable()  # no cycles worth collecting here
    try:
        for c_lo in range(lo, hi, chunk):
            batch = []
            for i in range(c_lo, min(hi, c_lo + chunk)):
                job_id = str(uuid.uuid4())
                spec = parse_job(job_body(f"bulk-{i:07d}", "true"), catalog)
                root = settings.job_dir(job_id)  # each role's layout (a snapshot from before roles: the job's)
                doc = static_document(spec, job_id, catalog, ws.role_layouts(spec, root)
                                      if hasattr(ws, "role_layouts") else ws.layout(spec, root))
                batch.append((job_id, spec, doc, first_ms + i * 1000))
            with db.begin() as conn:
                _insert_created(conn, batch)
                for i, (job_id, _spec, _doc, created) in enumerate(batch, start=c_lo):
                    final = MIX[i % len(MIX)]
                    phases[final] += 1
                    start, end = created + 30, created + 30 + 300 + (i % 7) * 100
                    if final == "Completed":
                        _run(conn, job_id, i + 1, start, end, 0)
                    elif final == "Failed":
                        _run(conn, job_id, i + 1, start, end, 1)
                    elif final == "Terminated":
                        w.transition(conn, job_id, Phase.CREATING, Phase.PENDING, at_ms=created + 10,
                                     secondary=Secondary.QUEUING, queue_seq=i + 1,
                                     event="Job queued, waiting for resources.")
                        w.request_terminate(conn, job_id, created + 500)
                        w.transition(conn, job_id, Phase.PENDING, Phase.TERMINATED, at_ms=created + 510,
                                     end_ms=created + 510)
                    else:
                        msg = "Code directory error: code_dir /nowhere does not exist."
                        w.transition(conn, job_id, Phase.CREATING, Phase.ABNORMAL, at_ms=created + 5,
                                     secondary=Secondary.CREATE_FAILED, message=msg, end_ms=created + 5,
                                     event=f"Job creation failed: {msg}", level="Error")
            if progress:
                done = min(hi, c_lo + chunk) - lo
                print(f"  shard {lo:,}..{hi:,}: {done:,}/{hi - lo:,} jobs ({time.perf_counter() - t0:.0f} s)",
                      flush=True)
    finally:
        gc.enable()
        db.close()
    return dict(phases)


# Copied shard by shard; events and node counts are renumbered in their original order.
_MERGE = [
    "INSERT INTO jobs SELECT * FROM shard.jobs",
    "INSERT INTO attempts SELECT * FROM shard.attempts",
    "INSERT INTO tasks SELECT * FROM shard.tasks",
    "INSERT INTO events (job_id, time_ms, level, source, message) "
    "SELECT job_id, time_ms, level, source, message FROM shard.events ORDER BY id",
    "INSERT INTO node_counts (job_id, time_ms, count) SELECT job_id, time_ms, count FROM shard.node_counts ORDER BY id",
]


def fill(data_dir: Path, n: int, *, chunk: int = 2500, workers: int | None = None,
         progress: bool = True) -> dict[str, Any]:
    """Insert `n` finished jobs into DATA_DIR's store, one created per simulated second, all in the past.

    The work is split over one process per core, each filling a shard database of its own through the
    store code above; the shards' rows are then copied as they are into the real database (one SQLite
    database has one writer at a time, and SQLAlchemy's per-statement cost makes one process take ~6 min
    for 100,000 jobs on the reference machine).
    """
    t0 = time.perf_counter()
    settings = load_settings(data_dir)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    workers = max(1, min(workers or os.cpu_count() or 1, n // 1000 or 1))
    first_ms = int(time.time() * 1000) - (n + 60) * 1000
    bounds = [(n * k // workers, n * (k + 1) // workers) for k in range(workers)]
    shard_dir = Path(tempfile.mkdtemp(prefix="fill-", dir=settings.data_dir))
    shards = [str(shard_dir / f"shard{k}.db") for k in range(workers)]
    phases: Counter[str] = Counter()
    try:
        with ProcessPoolExecutor(workers, mp_context=mp.get_context("fork")) as pool:
            futures = [pool.submit(_fill_range, shards[k], str(settings.data_dir), lo, hi, first_ms, chunk, progress)
                       for k, (lo, hi) in enumerate(bounds)]
            for f in futures:
                phases.update(f.result())
        filled_s = time.perf_counter() - t0
        open_db(settings.db_path).close()  # the schema, through the store's own migrations
        conn = sqlite3.connect(settings.db_path, isolation_level=None)
        try:
            for shard in shards:
                conn.execute("ATTACH DATABASE ? AS shard", (shard,))
                conn.execute("BEGIN IMMEDIATE")
                for sql in _MERGE:
                    conn.execute(sql)
                conn.execute("COMMIT")
                conn.execute("DETACH DATABASE shard")
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        finally:
            conn.close()
    finally:
        shutil.rmtree(shard_dir, ignore_errors=True)
    return {"jobs": n, "phases": dict(phases), "workers": workers, "shard_fill_seconds": round(filled_s, 2),
            "fill_seconds": round(time.perf_counter() - t0, 2)}


def _fingerprint() -> str:
    """Changes whenever the tables' layout (schema, migrations) or this fill changes. Edits elsewhere in
    the store (event wording, say) keep the cache: refill with `--no-cache` to pick those up."""
    h = hashlib.sha256()
    for mod in (store_db, store_schema):
        h.update(Path(str(mod.__file__)).read_bytes())
    h.update((BENCH_DIR / "fill.py").read_bytes())
    h.update(CONFIG.encode())
    return h.hexdigest()[:16]


def cache_path(n: int) -> Path:
    return RESULTS / "cache" / f"store-{n}-{_fingerprint()}.db"


def filled(data_dir: Path, n: int, *, use_cache: bool = True) -> dict[str, Any]:
    """`fill()`, or a copy of a store filled earlier by the same code (bench/results/cache/)."""
    cache = cache_path(n)
    db_path = load_settings(data_dir).db_path
    if use_cache and cache.exists():
        t0 = time.perf_counter()
        shutil.copyfile(cache, db_path)
        return {"jobs": n, "cached": str(cache.name), "copy_seconds": round(time.perf_counter() - t0, 2)}
    stats = fill(data_dir, n)
    if use_cache:
        cache.parent.mkdir(parents=True, exist_ok=True)
        for old in cache.parent.glob(f"store-{n}-*.db"):
            old.unlink()
        tmp = cache.with_suffix(".tmp")
        shutil.copyfile(db_path, tmp)  # the fill checkpointed and closed the database: one file
        tmp.rename(cache)
    return {**stats, "cached": False}
