"""transition() is the only writer of a phase: compare-and-set, an event per move, illegal moves refused."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
from sqlalchemy import select

from openarts.core.phases import ALLOWED, Phase
from openarts.core.resources import build_catalog
from openarts.core.spec import parse_job
from openarts.store import jobs as w
from openarts.store.db import open_db
from openarts.store.schema import events, jobs

SRC = Path(__file__).resolve().parents[2] / "src" / "openarts"


def _db_with_job() -> tuple[object, str]:
    db = open_db(":memory:")
    catalog = build_catalog({}, gpus=[])
    spec = parse_job({"metadata": {"name": "j"}, "algorithm": {"command": "true"},
                      "spec": {"resource": {"flavor_id": "modelarts.local.cpu.1u"}}}, catalog)
    with db.begin() as conn:
        w.create_job(conn, "job-1", "p", "u", spec, {}, 1000)
    return db, "job-1"


def test_compare_and_set_and_event() -> None:
    db, job_id = _db_with_job()
    with db.begin() as conn:  # type: ignore[attr-defined]
        assert w.transition(conn, job_id, Phase.CREATING, Phase.PENDING, at_ms=2000)
        assert not w.transition(conn, job_id, Phase.CREATING, Phase.PENDING, at_ms=2001)  # stale expectation
        phase = conn.execute(select(jobs.c.phase)).scalar_one()
        n_events = len(conn.execute(select(events).where(events.c.job_id == job_id)).all())
    assert phase == "Pending"
    assert n_events == 2  # created + the one move


def test_illegal_transitions_are_refused() -> None:
    db, job_id = _db_with_job()
    with db.begin() as conn:  # type: ignore[attr-defined]
        for src, allowed in ALLOWED.items():
            for dst in Phase:
                if dst != src and dst not in allowed:
                    with pytest.raises(w.IllegalTransition):
                        w.transition(conn, job_id, src, dst, at_ms=1)
        with pytest.raises(w.IllegalTransition):
            w.transition(conn, job_id, Phase.CREATING, Phase.PENDING, at_ms=1, phase="Running")


def _writes_phase(node: ast.AST) -> bool:
    """A call like .values(phase=...) / .values(secondary_phase=...) or update(...) with a phase key."""
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in ("values",
                                                                                                    "update"):
        for kw in node.keywords:
            if kw.arg in ("phase", "secondary_phase"):
                return True
        for arg in node.args:
            if isinstance(arg, ast.Dict) and any(
                    isinstance(k, ast.Constant) and k.value in ("phase", "secondary_phase") for k in arg.keys):
                return True
    return False


def test_no_phase_writes_outside_transition() -> None:
    offenders = []
    for path in SRC.rglob("*.py"):
        tree = ast.parse(path.read_text())
        for func in ast.walk(tree):
            if not isinstance(func, ast.FunctionDef):
                continue
            for node in ast.walk(func):
                if _writes_phase(node):
                    where = f"{path.relative_to(SRC)}:{func.name}"
                    if where not in ("store/jobs.py:transition", "store/jobs.py:create_job"):
                        offenders.append(where)
    assert offenders == [], f"phase written outside transition(): {offenders}"
    # and the check itself finds the two legitimate writers
    text = (SRC / "store" / "jobs.py").read_text()
    assert "phase=to.value" in text and "phase=Phase.CREATING.value" in text
