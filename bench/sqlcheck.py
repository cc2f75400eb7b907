"""SQL-level evidence for the benchmarks: what openarts' store functions send to SQLite, the query plans,
and how long the same statements take through SQLAlchemy versus the bare sqlite3 module.

It runs in the benchmark process on the server's database file (read-only statements only; WAL lets it
read while the server runs). The statements are captured from the real `openarts.store.queries`
functions, so this follows the store code as it changes.
"""

from __future__ import annotations

import sqlite3
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, create_engine, event
from sqlalchemy.pool import StaticPool


def engine_for(db_path: Path) -> Any:
    return create_engine(f"sqlite:///{db_path}", poolclass=StaticPool,
                         connect_args={"check_same_thread": False, "isolation_level": None})


def capture(db_path: Path, call: Callable[[Connection], Any]) -> list[tuple[str, tuple[Any, ...]]]:
    """The (sql, parameters) that `call(conn)` executes."""
    engine = engine_for(db_path)
    seen: list[tuple[str, tuple[Any, ...]]] = []

    def record(_conn: Any, _cursor: Any, statement: str, parameters: Any, _context: Any, _many: bool) -> None:
        seen.append((statement, tuple(parameters) if isinstance(parameters, list | tuple) else parameters))

    event.listen(engine, "before_cursor_execute", record)
    try:
        with engine.connect() as conn:
            call(conn)
    finally:
        engine.dispose()
    return seen


def _median_ms(fn: Callable[[], Any], reps: int) -> float:
    fn()  # warm
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t) * 1000)
    return statistics.median(times)


def median_us(fn: Callable[[], Any], reps: int) -> float:
    return round(_median_ms(fn, reps) * 1000, 1)


def explain(db_path: Path, statements: list[tuple[str, tuple[Any, ...]]], reps: int = 15) -> list[dict[str, Any]]:
    """Plan and bare-sqlite3 time of each statement."""
    con = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)
    con.execute("PRAGMA cache_size=-65536")  # as openarts opens it
    out = []
    try:
        for sql, params in statements:
            plan = [row[3] for row in con.execute(f"EXPLAIN QUERY PLAN {sql}", params)]
            def run(sql: str = sql, params: tuple[Any, ...] = params) -> list[Any]:
                return con.execute(sql, params).fetchall()

            ms = _median_ms(run, reps)
            out.append({"sql": " ".join(sql.split()), "plan": plan, "sqlite3_ms": round(ms, 3)})
    finally:
        con.close()
    return out


def compare(db_path: Path, call: Callable[[Connection], Any], reps: int = 200) -> dict[str, Any]:
    """One store call through SQLAlchemy (as openarts makes it) vs its captured SQL on bare sqlite3."""
    statements = capture(db_path, call)
    engine = engine_for(db_path)
    try:
        with engine.connect() as conn:
            sa_ms = _median_ms(lambda: call(conn), reps)
    finally:
        engine.dispose()
    con = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)
    try:
        def bare() -> None:
            for sql, params in statements:
                con.execute(sql, params).fetchall()

        raw_ms = _median_ms(bare, reps)
    finally:
        con.close()
    return {"statements": len(statements), "sqlalchemy_us": round(sa_ms * 1000, 1),
            "sqlite3_us": round(raw_ms * 1000, 1),
            "sqlalchemy_share_pct": round(100 * (1 - raw_ms / sa_ms), 1) if sa_ms else 0.0}
