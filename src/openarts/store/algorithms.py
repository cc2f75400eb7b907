"""A project's algorithms (store/schema.py `algorithms`), their published versions (`algorithm_versions`:
what a job's subscription_id + item_version_id name) and the jobs made from them (`jobs.algorithm_id`):
read and written by service/algorithms.py."""

from __future__ import annotations

import sqlite3
import uuid
from typing import Any

import orjson

from openarts.core import errors
from openarts.core.phases import Phase
from openarts.store.db import chunks, insert, placeholders
from openarts.store.rows import AlgorithmRow, AlgorithmVersionRow, project_page, typed_one
from openarts.store.schema import algorithm_versions, algorithms

Conn = sqlite3.Connection
IN_USE_PHASES = (Phase.CREATING.value, Phase.PENDING.value, Phase.RUNNING.value, Phase.TERMINATING.value)


def _duplicate(name: str) -> errors.DuplicateAlgorithmName:
    return errors.DuplicateAlgorithmName(f"Algorithm name {name!r} already exists in this project.")


def create_algorithm(conn: Conn, row: AlgorithmRow) -> None:
    try:
        insert(conn, algorithms, row._asdict())
    except sqlite3.IntegrityError as exc:
        raise _duplicate(row.name) from exc


def get_algorithm(conn: Conn, project_id: str, algorithm_id: str, where: str = "") -> AlgorithmRow:
    row = typed_one(conn, "SELECT * FROM algorithms WHERE id = ? AND project_id = ?", (algorithm_id, project_id),
                    AlgorithmRow)
    if row is None:
        raise errors.AlgorithmNotFound(f"Algorithm (ID: {algorithm_id[:64]}) not found{where}.")
    return row


def list_algorithms(conn: Conn, project_id: str, workspace_id: str | None, name_like: str | None, column: str,
                    order: str, offset: int, limit: int) -> tuple[int, list[AlgorithmRow]]:
    return project_page(conn, "algorithms", AlgorithmRow, project_id, workspace_id, column, order, offset, limit,
                        name_like)


def change_algorithm(conn: Conn, row: AlgorithmRow) -> None:
    try:
        conn.execute("UPDATE algorithms SET name = ?, description = ?, config = ?, update_ms = ? WHERE id = ?",
                     (row.name, row.description, row.config, row.update_ms, row.id))
    except sqlite3.IntegrityError as exc:
        raise _duplicate(row.name) from exc


def jobs_using(conn: Conn, algorithm_id: str) -> list[tuple[str, str]]:
    """(id, name) of the jobs made from the algorithm that have not ended and are not being deleted."""
    return [(str(r[0]), str(r[1])) for r in conn.execute(
        f"SELECT id, name FROM jobs WHERE algorithm_id = ? AND phase IN ({placeholders(IN_USE_PHASES)}) "
        "AND delete_requested IS 0 ORDER BY create_ms LIMIT 20", (algorithm_id, *IN_USE_PHASES))]


def delete_algorithm(conn: Conn, algorithm_id: str) -> None:
    """The algorithm; its published versions stay (they are frozen copies jobs may still subscribe to)."""
    conn.execute("DELETE FROM algorithms WHERE id = ?", (algorithm_id,))


def version_counts(conn: Conn, algorithm_ids: list[str]) -> dict[str, int]:
    out = dict.fromkeys(algorithm_ids, 0)
    for chunk in chunks(algorithm_ids):
        for algorithm_id, n in conn.execute(
                f"SELECT algorithm_id, count(*) FROM algorithm_versions WHERE algorithm_id IN ({placeholders(chunk)}) "
                "GROUP BY algorithm_id", chunk):
            out[algorithm_id] = int(n)
    return out


def publish(conn: Conn, row: AlgorithmRow, at_ms: int) -> AlgorithmVersionRow:
    """A frozen version of the algorithm as it is now, in its subscription (made at its first publication)."""
    subscription_id = row.subscription_id
    if not subscription_id:
        subscription_id = str(uuid.uuid4())
        conn.execute("UPDATE algorithms SET subscription_id = ? WHERE id = ?", (subscription_id, row.id))
    num = int(conn.execute("SELECT coalesce(max(version_num), 0) + 1 FROM algorithm_versions "
                           "WHERE subscription_id = ?", (subscription_id,)).fetchone()[0])
    version = AlgorithmVersionRow(str(uuid.uuid4()), subscription_id, row.project_id, row.id, num, row.name,
                                  row.config, at_ms)
    insert(conn, algorithm_versions, version._asdict())
    return version


def get_version(conn: Conn, project_id: str, subscription_id: str, item_version_id: str) -> AlgorithmVersionRow:
    row = typed_one(conn, "SELECT * FROM algorithm_versions WHERE item_version_id = ? AND subscription_id = ? "
                    "AND project_id = ?", (item_version_id, subscription_id, project_id), AlgorithmVersionRow)
    if row is None:
        raise errors.AlgorithmNotFound(
            f"AI algorithm not found: subscription {subscription_id[:64]!r} has no version "
            f"{item_version_id[:64]!r} in this project (openarts algorithms publish makes one).")
    return row


def config_of(row: AlgorithmRow | AlgorithmVersionRow) -> dict[str, Any]:
    config: dict[str, Any] = orjson.loads(row.config)
    return config
