"""Training experiment operations behind the API (core/experiments.py has the rules, store/experiments.py
the table), and a new job's place in an experiment (`join`, called by service/jobs.py in the transaction
that creates the job).

An experiment answers as ModelArts' TrainingExperimentResponse: {metadata: {id, name, description,
workspace_id, create_time, update_time}, statistic: {job_count}}, the count being its listed jobs (not
deleted, not a search's trials). An experiment that jobs still reference is not deleted (ExperimentInUse,
409): ModelArts does not say what becomes of their reference, and a job's document must not name a
missing experiment.
"""

from __future__ import annotations

import sqlite3
import uuid
from typing import Any

from openarts.core import errors
from openarts.core.experiments import (
    LIST_LIMIT_DEFAULT,
    LIST_LIMIT_MAX,
    SORTABLE,
    ExperimentRef,
    check_workspace,
    parse_change,
    parse_create,
)
from openarts.core.inputs import list_query
from openarts.store import experiments as x
from openarts.store import jobs as w
from openarts.store.db import Database
from openarts.store.rows import ExperimentRow

REF = "metadata.training_experiment_reference"


def join(conn: sqlite3.Connection, project_id: str, workspace_id: str, ref: ExperimentRef,
         at_ms: int) -> dict[str, Any]:
    """A new job's place in the experiment its create body names, in the caller's transaction: by id, the
    project's experiment of that id (ExperimentNotFound if none; a name beside it is not checked); by
    name alone, the project's experiment of that name, made now (with the reference's description, in
    the job's workspace) if there is none, as ModelArts documents. Returns the job's
    training_experiment_reference {name, id, serial_number}: the next serial number in the experiment."""
    if ref.id is not None:
        row = x.get_experiment(conn, project_id, ref.id, f": {REF}.id names no experiment of this project "
                                                          "(GET /training-experiments lists them)")
    else:
        assert ref.name is not None
        found = x.experiment_named(conn, project_id, ref.name)
        row = found if found is not None else x.create_experiment(
            conn, str(uuid.uuid4()), project_id, workspace_id, ref.name, ref.description, at_ms)
    return x.reference(row, x.next_serial(conn, row.id))


def _document(row: ExperimentRow, job_count: int) -> dict[str, Any]:
    return {"metadata": {"id": row.id, "name": row.name, "description": row.description,
                         "workspace_id": row.workspace_id, "create_time": row.create_ms,
                         "update_time": row.update_ms},
            "statistic": {"job_count": job_count}}


class ExperimentService:
    def __init__(self, db: Database) -> None:
        self.db = db

    def create(self, project_id: str, body: Any) -> dict[str, Any]:
        name, description, workspace_id = parse_create(body)
        with self.db.begin() as conn:
            row = x.create_experiment(conn, str(uuid.uuid4()), project_id, workspace_id, name, description,
                                      w.now_ms())
        return _document(row, 0)

    def show(self, project_id: str, experiment_id: str) -> dict[str, Any]:
        with self.db.connect() as conn:
            row = x.get_experiment(conn, project_id, experiment_id)
            return _document(row, x.job_counts(conn, [row.id])[row.id])

    def page(self, project_id: str, params: dict[str, str]) -> dict[str, Any]:
        offset, limit, sort_by, order = list_query(params, SORTABLE, LIST_LIMIT_DEFAULT, LIST_LIMIT_MAX)
        raw_workspace = params.get("workspace_id")
        workspace_id = None if not raw_workspace else check_workspace(raw_workspace, "workspace_id")
        with self.db.connect() as conn:
            total, rows = x.list_experiments(conn, project_id, workspace_id, SORTABLE[sort_by], order, offset,
                                             limit)
            counts = x.job_counts(conn, [r.id for r in rows])
        return {"total": total, "count": len(rows), "limit": limit, "offset": offset, "sort_by": sort_by,
                "order": order, "items": [_document(r, counts[r.id]) for r in rows]}

    def change(self, project_id: str, experiment_id: str, body: Any) -> dict[str, Any]:
        change = parse_change(body)
        with self.db.begin() as conn:
            row = x.get_experiment(conn, project_id, experiment_id)
            name = change.name if change.name is not None else row.name
            description = change.description if change.description is not None else row.description
            if (name, description) != (row.name, row.description):
                x.change_experiment(conn, row, name, description, w.now_ms())
        return {"name": name, "description": description}

    def delete(self, project_id: str, experiment_id: str) -> None:
        with self.db.begin() as conn:
            row = x.get_experiment(conn, project_id, experiment_id)
            used = x.job_counts(conn, [row.id])[row.id]
            if used:
                raise errors.ExperimentInUse(
                    f"Training experiment {row.name!r} (ID: {row.id}) is used by {used} training job"
                    f"{'s' if used != 1 else ''}: delete {'them' if used != 1 else 'it'} first (POST "
                    f"/training-job-searches with filter key experiment_id lists them).")
            x.delete_experiment(conn, row.id)

    def name_taken(self, project_id: str, name: str) -> bool:
        with self.db.connect() as conn:
            return x.experiment_named(conn, project_id, name) is not None
