"""A job's custom metrics recorded from its tasks' logs (supervisor/log_metrics.py, store/log_metrics.py):
what changed is written, a new attempt's values replace the previous one's, a restart re-reads to the same
rows, an ended job is read to the end of its logs, and the rows go with the job. Through a real server:
tests/test_custom_metrics.py."""

from __future__ import annotations

import asyncio
from pathlib import Path

import orjson
import pytest

from openarts.config import Settings
from openarts.core.phases import Phase
from openarts.core.resources import build_catalog
from openarts.core.spec import parse_job
from openarts.store import jobs as w
from openarts.store import log_metrics as lm
from openarts.store import queries as q
from openarts.store.db import Database, open_db
from openarts.supervisor import log_metrics
from openarts.supervisor.log_metrics import LogMetrics

CATALOG = build_catalog({"flavors": [{"flavor_id": "f", "cpu_cores": 1, "memory_gb": 1}]}, gpus=[])
REWARDS = [{"name": "loss", "mode": "min", "regex": r"loss=(\S+)"}, {"name": "acc", "regex": r"acc=(\S+)"}]


def _db(tmp_path: Path, job_id: str = "job", node_count: int = 2) -> tuple[Settings, Database]:
    settings = Settings(data_dir=tmp_path)
    db = open_db(tmp_path / "openarts.db")
    spec = parse_job({"metadata": {"name": "j"}, "algorithm": {"command": "true", "policies": {
        "auto_search": {"reward_attrs": REWARDS}}}, "spec": {"resource": {"flavor_id": "f",
                                                                             "node_count": node_count}}}, CATALOG)
    with db.begin() as conn:
        w.create_job(conn, job_id, "p", "u", spec, {}, 1000)
        w.transition(conn, job_id, Phase.CREATING, Phase.PENDING, at_ms=1000)
        w.open_attempt(conn, job_id, 1, [{"task": f"worker-{i}", "idx": i} for i in range(node_count)], 1, 1000)
        w.transition(conn, job_id, Phase.PENDING, Phase.RUNNING, at_ms=1000)
    return settings, db


def _round(reader: LogMetrics, db: Database) -> int:
    with db.connect() as conn:
        active = q.active_jobs(conn)
        tasks = q.current_tasks(conn, [r for r in active if r.phase == "Running"])
    return asyncio.run(reader.read(active, tasks))


def _log(settings: Settings, text: str, seq: int = 1, task: str = "worker-0", job_id: str = "job") -> None:
    path = settings.attempt_dir(job_id, seq, task) / "log"
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as f:
        f.write(text)


def _stored(db: Database, task: str = "worker-0", job_id: str = "job") -> dict[str, tuple[float | None, list[float],
                                                                                        str]]:
    with db.connect() as conn:
        return {r.name: (r.last, [v for _, v in orjson.loads(r.values)], r.message)
                for r in lm.of_task(conn, job_id, task)}


def test_what_changed_is_recorded_per_task_and_metric(tmp_path: Path) -> None:
    settings, db = _db(tmp_path)
    reader = LogMetrics(settings, db)
    assert _round(reader, db) == 4  # a first read records every metric of every task, even with no value yet
    assert _stored(db) == {"loss": (None, [], ""), "acc": (None, [], "")}
    _log(settings, "step 1 loss=0.5 acc=0.1\nloss=0.25\nacc=x\n")
    assert _round(reader, db) == 2  # worker-0's two metrics; worker-1 logged nothing new
    assert _stored(db) == {"loss": (0.25, [0.5, 0.25], ""),
                           "acc": (0.1, [0.1], "reward 'acc': 'x' on log line 3 is not a number")}
    assert _round(reader, db) == 0  # nothing new, nothing written
    _log(settings, "loss=0.125\n")
    assert _round(reader, db) == 1  # only what changed
    assert _stored(db)["loss"] == (0.125, [0.5, 0.25, 0.125], "")
    with db.connect() as conn:
        assert lm.of_task(conn, "job", "worker-1")[0].values == "[]"


def test_a_restart_reads_again_to_the_same_rows(tmp_path: Path) -> None:
    settings, db = _db(tmp_path, node_count=1)
    _log(settings, "loss=0.5\nloss=0.25\n")
    _round(LogMetrics(settings, db), db)
    before = _stored(db)
    assert _round(LogMetrics(settings, db), db) == 2  # a new server: its first read writes every row again ...
    assert _stored(db) == before  # ... the same


def test_a_new_attempt_replaces_the_previous_ones_values(tmp_path: Path) -> None:
    settings, db = _db(tmp_path, node_count=1)
    reader = LogMetrics(settings, db)
    _log(settings, "loss=0.5\n")
    _round(reader, db)
    with db.begin() as conn:
        w.close_attempt(conn, "job", 1, 2000, "restarted", None)
        w.open_attempt(conn, "job", 2, [{"task": "worker-0", "idx": 0}], 1, 2000)
    _round(reader, db)
    assert _stored(db)["loss"] == (None, [], "")  # attempt 2 logged nothing yet
    _log(settings, "loss=0.75\n", seq=2)
    _round(reader, db)
    assert _stored(db)["loss"] == (0.75, [0.75], "")
    assert list(reader._scans) == [("job", 2, "worker-0")]


def test_an_ended_job_is_read_to_the_end_of_its_logs_then_forgotten(tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    settings, db = _db(tmp_path, node_count=1)
    reader = LogMetrics(settings, db)
    line = "loss=0.5\n"
    monkeypatch.setattr(log_metrics, "READ_MAX", len(line) * 2)
    _log(settings, line * 5)
    _round(reader, db)
    assert len(_stored(db)["loss"][1]) == 2  # a running job's log is read a slice a round
    with db.begin() as conn:
        w.transition(conn, "job", Phase.RUNNING, Phase.COMPLETED, at_ms=3000, end_ms=3000)
    _log(settings, "loss=0.125")  # its last line, without a newline
    _round(reader, db)
    assert _stored(db)["loss"][1] == [0.5] * 5 + [0.125]  # to the end, once it ended
    assert reader._scans == {} and reader._metrics == {}


def test_a_job_that_ran_between_two_rounds_is_read_when_the_supervisor_ends_it(tmp_path: Path) -> None:
    settings, db = _db(tmp_path, node_count=1)
    reader = LogMetrics(settings, db)
    _log(settings, "loss=0.5\nloss=0.25\n")
    with db.begin() as conn:
        w.transition(conn, "job", Phase.RUNNING, Phase.COMPLETED, at_ms=3000, end_ms=3000)
    assert _round(reader, db) == 0  # never seen running: nothing to read
    reader.ended("job", 1, ["worker-0"])
    _round(reader, db)
    assert _stored(db)["loss"] == (0.25, [0.5, 0.25], "")
    assert reader._scans == {} and reader._metrics == {}


def test_the_rows_go_with_the_job_and_a_deleted_job_gets_none_back(tmp_path: Path) -> None:
    settings, db = _db(tmp_path, node_count=1)
    reader = LogMetrics(settings, db)
    _log(settings, "loss=0.5\n")
    _round(reader, db)
    with db.begin() as conn:
        w.purge_job(conn, "job")
    _log(settings, "loss=0.25\n")
    _round(reader, db)  # its scans end (the job is gone): nothing is written for it
    with db.connect() as conn:
        assert conn.execute("SELECT count(*) FROM log_metrics").fetchone()[0] == 0
    assert reader._scans == {}
