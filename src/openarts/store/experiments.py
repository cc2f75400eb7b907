"""A project's training experiments (store/schema.py `experiments`) and the jobs that reference them
(`jobs.experiment_id`): read and written by service/experiments.py, joined by a job in the transaction
that creates it (service/jobs.py)."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from typing import Any

from openarts.core import errors
from openarts.store.db import chunks, insert, placeholders
from openarts.store.rows import ExperimentRow, project_page, typed_one
from openarts.store.schema import LIVE_SQL, experiments

Conn = sqlite3.Connection


def create_experiment(conn: Conn, experiment_id: str, project_id: str, workspace_id: str, name: str,
                      description: str, at_ms: int) -> ExperimentRow:
    try:
        insert(conn, experiments, {"id": experiment_id, "project_id": project_id, "workspace_id": workspace_id,
                                   "name": name, "description": description, "create_ms": at_ms,
                                   "update_ms": at_ms})
    except sqlite3.IntegrityError as exc:
        raise errors.DuplicateExperimentName(name) from exc
    return ExperimentRow(experiment_id, project_id, workspace_id, name, description, at_ms, at_ms, 0)


def get_experiment(conn: Conn, project_id: str, experiment_id: str, where: str = "") -> ExperimentRow:
    """The project's experiment `experiment_id`, or ExperimentNotFound (`where`: what named it)."""
    row = typed_one(conn, "SELECT * FROM experiments WHERE id = ? AND project_id = ?", (experiment_id, project_id),
                    ExperimentRow)
    if row is None:
        raise errors.ExperimentNotFound(experiment_id, where)
    return row


def experiment_named(conn: Conn, project_id: str, name: str) -> ExperimentRow | None:
    return typed_one(conn, "SELECT * FROM experiments WHERE project_id = ? AND name = ?", (project_id, name),
                     ExperimentRow)


def list_experiments(conn: Conn, project_id: str, workspace_id: str | None, column: str, order: str,
                     offset: int, limit: int) -> tuple[int, list[ExperimentRow]]:
    """(how many match, the page): the project's experiments (in one workspace, if given) in `column`
    order, ties broken by id."""
    return project_page(conn, "experiments", ExperimentRow, project_id, workspace_id, column, order, offset, limit)


def job_counts(conn: Conn, experiment_ids: Sequence[str]) -> dict[str, int]:
    """How many listed jobs (not being deleted, not a search's trial) each experiment has."""
    out = dict.fromkeys(experiment_ids, 0)
    for chunk in chunks(list(experiment_ids)):
        for experiment_id, n in conn.execute(
                f"SELECT experiment_id, count(*) FROM jobs WHERE experiment_id IN ({placeholders(chunk)}) "
                f"AND {LIVE_SQL} GROUP BY experiment_id", chunk):
            out[experiment_id] = int(n)
    return out


def next_serial(conn: Conn, experiment_id: str) -> int:
    """The serial number of the experiment's next job (1, 2, ...), taken: never given twice."""
    conn.execute("UPDATE experiments SET job_seq = job_seq + 1 WHERE id = ?", (experiment_id,))
    return int(conn.execute("SELECT job_seq FROM experiments WHERE id = ?", (experiment_id,)).fetchone()[0])


def change_experiment(conn: Conn, row: ExperimentRow, name: str, description: str, at_ms: int) -> None:
    """A new name and description. The documents of the jobs in it show its name: renamed with it."""
    try:
        conn.execute("UPDATE experiments SET name = ?, description = ?, update_ms = ? WHERE id = ?",
                     (name, description, at_ms, row.id))
    except sqlite3.IntegrityError as exc:
        raise errors.DuplicateExperimentName(name) from exc
    if name != row.name:
        conn.execute("UPDATE jobs SET doc = json_set(doc, '$.training_experiment_reference.name', ?) "
                     "WHERE experiment_id = ?", (name, row.id))


def delete_experiment(conn: Conn, experiment_id: str) -> None:
    conn.execute("DELETE FROM experiments WHERE id = ?", (experiment_id,))


def reference(row: ExperimentRow, serial: int) -> dict[str, Any]:
    """A job's `metadata.training_experiment_reference`, as its document shows it (the SDK's
    TrainingExperimentResp: serial_number is a string)."""
    return {"name": row.name, "id": row.id, "serial_number": str(serial)}
