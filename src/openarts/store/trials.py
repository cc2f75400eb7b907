"""A search's trials (store/schema.py `trials`): written by the supervisor's search pass
(supervisor/search.py), read by the trial operations and the search's document (service/search.py)."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import orjson

from openarts.core.errors import LostRace
from openarts.core.search import TrialState
from openarts.store.db import chunks, insert, placeholders
from openarts.store.rows import JobRow, TrialRow, typed
from openarts.store.schema import LIGHT_COLUMNS, trials

Conn = sqlite3.Connection


def create_trial(conn: Conn, search_id: str, number: int, job_id: str, params: Mapping[str, str],
                 at_ms: int) -> None:
    """Record trial `number` of a search, in the transaction that creates its job. The primary key
    (search, number) makes a trial exist once: a second writer of the same number fails."""
    insert(conn, trials, {"search_id": search_id, "number": number, "job_id": job_id,
                          "params": orjson.dumps(dict(params)).decode(), "create_ms": at_ms})


_NO_HISTORY = ", ".join("'[]' AS history" if c.name == "history" else c.name for c in trials.c)


def trials_of(conn: Conn, search_ids: Sequence[str], histories: bool = True) -> dict[str, list[TrialRow]]:
    """Each search's trials, by number; `histories` False: without their metric histories (read as [];
    the largest column, which only the per-trial operation and early stopping need)."""
    columns = "*" if histories else _NO_HISTORY
    out: dict[str, list[TrialRow]] = {s: [] for s in search_ids}
    for chunk in chunks(list(search_ids)):
        for r in typed(conn.execute(f"SELECT {columns} FROM trials WHERE search_id IN ({placeholders(chunk)}) "
                                    "ORDER BY search_id, number", chunk), TrialRow):
            out[r.search_id].append(r)
    return out


def histories(conn: Conn, search_id: str, numbers: Sequence[int]) -> list[tuple[int, str]]:
    """(number, history JSON) of some trials of a search."""
    out: list[tuple[int, str]] = []
    for chunk in chunks(list(numbers)):
        out.extend(conn.execute(f"SELECT number, history FROM trials WHERE search_id = ? AND number IN "
                                f"({placeholders(chunk)})", (search_id, *chunk)).fetchall())
    return out


def trial(conn: Conn, search_id: str, number: int) -> TrialRow | None:
    rows = typed(conn.execute("SELECT * FROM trials WHERE search_id = ? AND number = ?", (search_id, number)),
                 TrialRow)
    return rows[0] if rows else None


def jobs_of_trials(conn: Conn, job_ids: Iterable[str]) -> dict[str, JobRow]:
    """The trials' own job rows (every column but the request and the document)."""
    ids = list(job_ids)
    out: dict[str, JobRow] = {}
    for chunk in chunks(ids):
        for r in typed(conn.execute(f"SELECT {LIGHT_COLUMNS} FROM jobs WHERE id IN ({placeholders(chunk)})", chunk),
                       JobRow):
            out[r.id] = r
    return out


def set_metrics(conn: Conn, search_id: str, number: int, value: float | None, rewards: Mapping[str, float],
                history: Sequence[Sequence[Any]], message: str) -> None:
    """What the trial's log says so far: the objective's last value, every reward's, their history."""
    conn.execute("UPDATE trials SET value = ?, rewards = ?, history = ?, message = ? "
                 "WHERE search_id = ? AND number = ? AND state = ?",
                 (value, orjson.dumps(dict(rewards)).decode(), orjson.dumps(list(history)).decode(), message,
                  search_id, number, TrialState.RUNNING))


def end_trial(conn: Conn, search_id: str, number: int, state: str, exit_code: int | None, message: str,
              at_ms: int) -> None:
    """A running trial's end, once: a trial already ended raises LostRace (the caller rolls back)."""
    cur = conn.execute("UPDATE trials SET state = ?, exit_code = ?, message = ?, end_ms = ? "
                       "WHERE search_id = ? AND number = ? AND state = ?",
                       (state, exit_code, message, at_ms, search_id, number, TrialState.RUNNING))
    if cur.rowcount != 1:
        raise LostRace(f"{search_id}/trial-{number}", TrialState.RUNNING, state)


def request_stop(conn: Conn, search_id: str, number: int, reason: str) -> bool:
    """Mark a running trial to be stopped early (`reason`); False when it is not running or already is."""
    cur = conn.execute("UPDATE trials SET stop_reason = ? WHERE search_id = ? AND number = ? AND state = ? "
                       "AND stop_reason = ''", (reason, search_id, number, TrialState.RUNNING))
    return cur.rowcount == 1


def purge_trials(conn: Conn, search_id: str) -> None:
    conn.execute("DELETE FROM trials WHERE search_id = ?", (search_id,))
