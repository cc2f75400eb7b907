"""transition() is the only writer of a phase: compare-and-set, an event per move, illegal moves refused."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from openarts.core.phases import ALLOWED, Phase
from openarts.core.resources import build_catalog
from openarts.core.spec import parse_job
from openarts.store import jobs as w
from openarts.store.db import Database, open_db

SRC = Path(__file__).resolve().parents[2] / "src" / "openarts"


def _db_with_job() -> tuple[Database, str]:
    db = open_db(":memory:")
    catalog = build_catalog({}, gpus=[])
    spec = parse_job({"metadata": {"name": "j"}, "algorithm": {"command": "true"},
                      "spec": {"resource": {"flavor_id": "modelarts.local.cpu.1u"}}}, catalog)
    with db.begin() as conn:
        w.create_job(conn, "job-1", "p", "u", spec, {}, 1000)
    return db, "job-1"


def test_compare_and_set_and_event() -> None:
    db, job_id = _db_with_job()
    with db.begin() as conn:
        w.transition(conn, job_id, Phase.CREATING, Phase.PENDING, at_ms=2000)
        phase = conn.execute("SELECT phase FROM jobs WHERE id = ?", (job_id,)).fetchone()[0]
        n_events = conn.execute("SELECT count(*) FROM events WHERE job_id = ?", (job_id,)).fetchone()[0]
    assert phase == "Pending"
    assert n_events == 2  # created + the one move


def test_a_lost_compare_and_set_raises_and_rolls_back_its_side_writes() -> None:
    db, job_id = _db_with_job()
    with db.begin() as conn:
        w.transition(conn, job_id, Phase.CREATING, Phase.PENDING, at_ms=2000)
    with pytest.raises(w.LostRace), db.begin() as conn:
        w.set_priority(conn, job_id, 3, 2001)  # a side write in the same transaction
        w.transition(conn, job_id, Phase.CREATING, Phase.PENDING, at_ms=2001)  # stale expectation
    with db.connect() as conn:
        priority, update_ms = conn.execute("SELECT priority, update_ms FROM jobs WHERE id = ?", (job_id,)).fetchone()
        n_events = conn.execute("SELECT count(*) FROM events WHERE job_id = ?", (job_id,)).fetchone()[0]
    assert (priority, update_ms, n_events) == (1, 2000, 2)  # nothing of the losing transaction stayed


def test_illegal_transitions_are_refused() -> None:
    db, job_id = _db_with_job()
    with db.begin() as conn:
        for src, allowed in ALLOWED.items():
            for dst in Phase:
                if dst != src and dst not in allowed:
                    with pytest.raises(w.IllegalTransition):
                        w.transition(conn, job_id, src, dst, at_ms=1)
        with pytest.raises(w.IllegalTransition):
            w.transition(conn, job_id, Phase.CREATING, Phase.PENDING, at_ms=1, phase="Running")


PHASE_SQL = re.compile(r"\b(secondary_)?phase\s*=(?!=)", re.IGNORECASE)  # "SET phase = ?", "phase = 'Failed'"


WRITERS = {"insert", "values", "update", "dict", "execute", "executemany"}  # calls that can carry a row's values


def _writes_phase(node: ast.AST) -> bool:
    """A call with a phase keyword or dict key (an insert's values), or SQL text that sets a phase."""
    if isinstance(node, ast.Call):
        func = node.func
        name = func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else ""
        if name not in WRITERS:
            return False
        if any(kw.arg in ("phase", "secondary_phase") for kw in node.keywords):
            return True
        return any(isinstance(arg, ast.Dict) and any(
            isinstance(k, ast.Constant) and k.value in ("phase", "secondary_phase") for k in arg.keys)
            for arg in node.args)
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        sql = node.value.upper()
        return ("UPDATE" in sql or "INSERT" in sql) and bool(PHASE_SQL.search(node.value))
    return False


def _scopes(tree: ast.Module) -> list[tuple[str, ast.AST]]:
    """Each function, and each module-level statement outside functions, as (name, node)."""
    out: list[tuple[str, ast.AST]] = []
    for stmt in tree.body:
        if isinstance(stmt, ast.FunctionDef | ast.AsyncFunctionDef):
            out.append((stmt.name, stmt))
        elif isinstance(stmt, ast.ClassDef):
            out.extend((f"{stmt.name}.{f.name}", f) for f in stmt.body
                       if isinstance(f, ast.FunctionDef | ast.AsyncFunctionDef))
        elif isinstance(stmt, ast.Assign | ast.AnnAssign):
            targets = stmt.targets if isinstance(stmt, ast.Assign) else [stmt.target]
            names = ",".join(t.id for t in targets if isinstance(t, ast.Name))
            out.append((f"<module>:{names}", stmt))
        else:
            out.append(("<module>", stmt))
    return out


def _phase_writers() -> list[str]:
    found = []
    for path in SRC.rglob("*.py"):
        for name, scope in _scopes(ast.parse(path.read_text())):
            if any(_writes_phase(node) for node in ast.walk(scope)):
                found.append(f"{path.relative_to(SRC)}:{name}")
    return sorted(set(found))


def test_no_phase_writes_outside_transition() -> None:
    # the module-level _SET_PHASE statement, which only transition() uses; create_job inserts Creating
    assert _phase_writers() == ["store/jobs.py:<module>:_SET_PHASE", "store/jobs.py:create_job"]
    tree = ast.parse((SRC / "store" / "jobs.py").read_text())
    users = {name for name, scope in _scopes(tree) for n in ast.walk(scope)
             if isinstance(n, ast.Name) and n.id == "_SET_PHASE"}
    assert users == {"<module>:_SET_PHASE", "transition"}


def test_the_phase_writer_check_finds_writes() -> None:
    for snippet in ('conn.execute("UPDATE jobs SET phase = ? WHERE id = ?", (p, i))',
                    "conn.execute(\"UPDATE jobs SET phase='Failed' WHERE id = :id\", {'id': i})",
                    "insert(conn, jobs, {'phase': 'Running'})", "update(jobs).values(secondary_phase=x)"):
        assert any(_writes_phase(n) for n in ast.walk(ast.parse(snippet))), snippet
    assert not any(_writes_phase(n) for n in ast.walk(ast.parse('conn.execute("SELECT phase FROM jobs")')))


def test_a_failed_transaction_rolls_back_and_the_next_one_works() -> None:
    db, job_id = _db_with_job()
    with pytest.raises(RuntimeError), db.begin() as conn:
        w.transition(conn, job_id, Phase.CREATING, Phase.PENDING, at_ms=2000)
        raise RuntimeError("boom")
    assert not db.conn.in_transaction
    with db.begin() as conn:
        phase = conn.execute("SELECT phase FROM jobs WHERE id = ?", (job_id,)).fetchone()[0]
        assert phase == "Creating"  # the move above was rolled back
        w.transition(conn, job_id, Phase.CREATING, Phase.PENDING, at_ms=2001)
