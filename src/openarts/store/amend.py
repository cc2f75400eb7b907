"""Writes for what a user changes on a job after creation (PUT, service/update.py), beside
store/jobs.py's set_description and set_priority. Like every write, they run inside the caller's
transaction (`Database.begin()`) and never touch the phase.
"""

from __future__ import annotations

import sqlite3
from typing import Any

import orjson


def set_preemptible(conn: sqlite3.Connection, job_id: str, preemptible: bool, at_ms: int) -> None:
    conn.execute("UPDATE jobs SET preemptible = ?, update_ms = ? WHERE id = ?", (int(preemptible), at_ms, job_id))


def set_static(conn: sqlite3.Connection, job_id: str, request: dict[str, Any], doc: dict[str, Any],
               at_ms: int) -> None:
    """Replace the stored request (parsed again to run the job) and the static job document."""
    conn.execute("UPDATE jobs SET request = ?, doc = ?, update_ms = ? WHERE id = ?",
                 (orjson.dumps(request).decode(), orjson.dumps(doc).decode(), at_ms, job_id))
