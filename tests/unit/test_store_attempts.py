"""Reads of a job's latest attempt return that attempt's rows only, however many attempts it had."""

from __future__ import annotations

from openarts.core.resources import build_catalog
from openarts.core.spec import parse_job
from openarts.store import jobs as w
from openarts.store import queries as q
from openarts.store.db import open_db


def test_latest_attempt_rows_only() -> None:
    db = open_db(":memory:")
    catalog = build_catalog({}, gpus=[])
    spec = parse_job({"metadata": {"name": "j"}, "algorithm": {"command": "true"},
                      "spec": {"resource": {"flavor_id": "modelarts.local.cpu.1u"}}}, catalog)
    with db.begin() as conn:
        w.create_job(conn, "job", "p", "u", spec, {}, 1000)
        w.create_job(conn, "fresh", "p", "u", parse_job({**spec.request, "metadata": {"name": "k"}}, catalog), {}, 1000)
        for seq in (1, 2, 3):
            w.open_attempt(conn, "job", seq, [{"task": f"worker-{i}", "idx": i} for i in range(2)], 29500, 1000 + seq)
            w.mark_attempt_started(conn, "job", seq, 1, [{"task": f"worker-{i}", "pid": seq * 10 + i, "pid_start": 0.0}
                                                         for i in range(2)], 1000 + seq)
    with db.connect() as conn:
        rows = [q.get_job(conn, "p", "job"), q.get_job(conn, "p", "fresh")]
        details = q.job_details(conn, rows)
        tasks = q.current_tasks(conn, rows)
        attempts = q.current_attempts(conn, rows)
    assert [(t.seq, t.task, t.pid) for t in details["job"]["tasks"]] == [(3, "worker-0", 30), (3, "worker-1", 31)]
    assert [a.seq for a in details["job"]["attempts"]] == [1, 2, 3]  # running records: every started attempt
    assert details["fresh"] == {"attempts": [], "tasks": [], "node_counts": []}
    assert [(t.seq, t.task) for t in tasks["job"]] == [(3, "worker-0"), (3, "worker-1")]
    assert "fresh" not in tasks
    assert attempts["job"].seq == 3 and "fresh" not in attempts
