"""SQL-level evidence for the benchmarks: what openarts' store functions send to SQLite, their query
plans and their time in-process.

It runs in the benchmark process on the server's database file (read-only statements only; WAL lets it
read while the server runs). The statements are captured from the real `openarts.store.queries`
functions (sqlite3's trace callback), so this follows the store code as it changes.
"""

from __future__ import annotations

import sqlite3
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any


def connect(db_path: Path) -> sqlite3.Connection:
    con = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True, isolation_level=None, check_same_thread=False)
    con.execute("PRAGMA cache_size=-65536")  # as openarts opens it
    return con


def capture(db_path: Path, call: Callable[[sqlite3.Connection], Any]) -> list[str]:
    """The SQL (parameters expanded) that `call(conn)` executes."""
    con = connect(db_path)
    seen: list[str] = []
    con.set_trace_callback(seen.append)
    try:
        call(con)
    finally:
        con.close()
    return [s for s in seen if not s.startswith("PRAGMA")]


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


def explain(db_path: Path, statements: list[str], reps: int = 15) -> list[dict[str, Any]]:
    """Plan and time of each statement."""
    con = connect(db_path)
    out = []
    try:
        for sql in statements:
            plan = [row[3] for row in con.execute(f"EXPLAIN QUERY PLAN {sql}")]

            def run(sql: str = sql) -> list[Any]:
                return con.execute(sql).fetchall()

            out.append({"sql": " ".join(sql.split()), "plan": plan, "sqlite3_ms": round(_median_ms(run, reps), 3)})
    finally:
        con.close()
    return out


def store_time(db_path: Path, call: Callable[[sqlite3.Connection], Any], reps: int = 500) -> dict[str, Any]:
    """One store call as openarts makes it: its statement count and median in-process time."""
    statements = capture(db_path, call)
    con = connect(db_path)
    try:
        us = median_us(lambda: call(con), reps)
    finally:
        con.close()
    return {"statements": len(statements), "store_us": us}
