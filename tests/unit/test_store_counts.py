"""A project's phase counts (job_counts, kept by triggers on the jobs table: store/schema.py) equal a count
of its live jobs at all times: through creates, transitions, deletions, purges and rolled-back
transactions, across a restart, and on a database migrated from v4. Searches take their totals from
them."""

from __future__ import annotations

import random
import sqlite3
from pathlib import Path

import pytest

from openarts.core.phases import ALLOWED, Phase
from openarts.core.resources import build_catalog
from openarts.core.spec import JobSpec, parse_job
from openarts.store import jobs as w
from openarts.store import queries as q
from openarts.store.db import MIGRATIONS, Database, open_db
from openarts.store.schema import SEARCH_INDEXES

PROJECTS = ("p1", "p2", "p3")
CATALOG = build_catalog({}, gpus=[])


def _spec(name: str) -> JobSpec:
    return parse_job({"metadata": {"name": name}, "algorithm": {"command": "true"},
                      "spec": {"resource": {"flavor_id": "modelarts.local.cpu.1u"}}}, CATALOG)


def _counted_by_hand(conn: sqlite3.Connection) -> dict[str, dict[str, int]]:
    out: dict[str, dict[str, int]] = {p: {} for p in PROJECTS}
    for project, phase, n in conn.execute("SELECT project_id, phase, count(*) FROM jobs WHERE delete_requested IS 0 "
                                          "GROUP BY project_id, phase"):
        out.setdefault(project, {})[phase] = n
    return out


def _check(db: Database) -> None:
    with db.connect() as conn:
        want = _counted_by_hand(conn)
        for project, counts in want.items():
            assert q.project_phase_counts(conn, project) == counts
            total, _ = q.search_jobs(conn, project, filters=[], sort_by="create_time", order="desc", offset=0, limit=1)
            assert total == sum(counts.values())
            phases = ["Running", "Failed", "Failed", "Nonesuch"]
            total, _ = q.search_jobs(conn, project, filters=[{"key": "phase", "operator": "in", "value": phases}],
                                     sort_by="name", order="asc", offset=0, limit=1)
            assert total == counts.get("Running", 0) + counts.get("Failed", 0)


class Walk:
    """Random work on a store: what the service and the supervisor do to jobs, in any order."""

    def __init__(self, db: Database, seed: int) -> None:
        self.db, self.rng, self.n = db, random.Random(seed), 0

    def live(self) -> list[tuple[str, str]]:
        with self.db.connect() as conn:
            return list(conn.execute("SELECT id, phase FROM jobs WHERE delete_requested IS 0 ORDER BY id"))

    def step(self) -> None:
        rng, jobs = self.rng, self.live()
        op = rng.choice(["create", "create", "move", "move", "move", "move", "delete", "purge", "rollback"])
        if op == "create" or not jobs:
            self.n += 1
            with self.db.begin() as conn:
                w.create_job(conn, f"job-{self.n:04d}", rng.choice(PROJECTS), "u", _spec(f"j-{self.n}"), {}, self.n)
            return
        job_id, phase = rng.choice(jobs)
        moves = sorted(ALLOWED.get(Phase(phase), ()))
        if op == "move" and moves:
            with self.db.begin() as conn:
                w.transition(conn, job_id, Phase(phase), rng.choice(moves), at_ms=self.n)
        elif op == "delete":
            with self.db.begin() as conn:
                w.request_delete(conn, [job_id], self.n)
        elif op == "purge":
            with self.db.begin() as conn:
                doomed = conn.execute("SELECT id FROM jobs WHERE delete_requested IS 1 LIMIT 1").fetchone()
                w.purge_job(conn, doomed[0] if doomed else job_id)  # a live job too: the row goes, so its count
        elif op == "rollback" and moves:
            with pytest.raises(RuntimeError), self.db.begin() as conn:
                w.transition(conn, job_id, Phase(phase), moves[0], at_ms=self.n)
                w.request_delete(conn, [job_id], self.n)
                raise RuntimeError("the transaction fails after its writes")


def test_counts_follow_every_write_and_survive_a_restart(tmp_path: Path) -> None:
    path = tmp_path / "openarts.db"
    db = open_db(path)
    walk = Walk(db, seed=11)
    for i in range(600):
        walk.step()
        if i % 25 == 0:
            _check(db)
    _check(db)
    with db.connect() as conn:
        assert any(n == 0 for (n,) in conn.execute("SELECT n FROM job_counts"))  # emptied phases stay, at 0
    db.close()
    db = open_db(path)  # a restart: nothing recounted, the table and its triggers are in the database
    _check(db)
    db.close()
    raw = sqlite3.connect(path)  # counts that drifted (a row changed by hand, the triggers gone round)
    raw.execute("UPDATE job_counts SET n = n + 7 WHERE (project_id, phase) IN "
                "(SELECT project_id, phase FROM job_counts LIMIT 1)")
    raw.commit()
    raw.close()
    db = open_db(path)  # counted again at the open
    _check(db)
    walk.db = db
    for _ in range(100):
        walk.step()
    _check(db)
    db.close()


def _as_v4(path: Path) -> None:
    """Turn a current database back into what v4 left: the three old search indexes, no counts, no
    trials (v6: jobs.parent_id, the trials table), no experiments (v6: jobs.experiment_id, the table)."""
    raw = sqlite3.connect(path)
    for (name,) in raw.execute("SELECT name FROM sqlite_master WHERE type = 'trigger'").fetchall():
        raw.execute(f"DROP TRIGGER {name}")
    raw.execute("DROP TABLE job_counts")
    for name in SEARCH_INDEXES:
        raw.execute(f"DROP INDEX {name}")
    raw.executescript("CREATE INDEX ix_jobs_project_create ON jobs (project_id, create_ms); "
                      "CREATE INDEX ix_jobs_project_phase_create ON jobs (project_id, phase, create_ms); "
                      "CREATE INDEX ix_jobs_search ON jobs (project_id, delete_requested, phase, create_ms); "
                      "DROP INDEX ix_jobs_experiment; DROP INDEX ix_jobs_algorithm; "
                      "ALTER TABLE jobs DROP COLUMN roles; ALTER TABLE jobs DROP COLUMN algorithm_id; "
                      "ALTER TABLE jobs DROP COLUMN experiment_id; "
                      "DROP TABLE algorithms; DROP TABLE algorithm_versions; "
                      "DROP TABLE experiments; "
                      "DROP INDEX uq_jobs_project_name; DROP TABLE trials; ALTER TABLE jobs DROP COLUMN parent_id; "
                      "CREATE UNIQUE INDEX uq_jobs_project_name ON jobs (project_id, name) "
                      "WHERE delete_requested IS 0; "
                      "UPDATE schema_version SET version = 4;")
    raw.commit()
    raw.close()


def test_a_database_migrated_from_v4_counts_its_jobs(tmp_path: Path) -> None:
    path = tmp_path / "openarts.db"
    db = open_db(path)
    walk = Walk(db, seed=5)
    for _ in range(300):
        walk.step()
    db.close()
    _as_v4(path)
    db = open_db(path)
    assert len(MIGRATIONS) == 7 and db.version == 7
    with db.connect() as conn:
        indexes = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'index'")}
        assert set(SEARCH_INDEXES) <= indexes
        assert not indexes & {"ix_jobs_project_create", "ix_jobs_project_phase_create", "ix_jobs_search"}
    _check(db)
    walk.db = db
    for _ in range(100):
        walk.step()
    _check(db)
    db.close()
