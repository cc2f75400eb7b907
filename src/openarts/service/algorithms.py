"""Algorithm operations behind the API (core/algorithms.py has the rules, store/algorithms.py the tables),
and the resolution of a new job's `algorithm.id` or subscription (`resolve`, called by service/jobs.py
before the job's spec is parsed).

An algorithm answers as ModelArts' AlgorithmResponse: {metadata {id, name, description, workspace_id,
ai_project, user_name, version_num, create_time, update_time}, job_config, resource_requirements,
advanced_config}; version_num counts its published versions. Publishing (an openarts extension, POST
.../algorithms/{id}/publish) freezes the algorithm as it is into a version a job names by
subscription_id + item_version_id. An algorithm that unfinished jobs were made from is not deleted
(AlgorithmInUse, 409).
"""

from __future__ import annotations

import sqlite3
import uuid
from typing import Any

import orjson

from openarts.core import errors
from openarts.core.algorithms import (
    LIST_LIMIT_DEFAULT,
    LIST_LIMIT_MAX,
    SORTABLE,
    parse_algorithm,
    parse_config,
    resolve_job_algorithm,
)
from openarts.core.experiments import check_description, check_name, check_workspace
from openarts.core.inputs import list_query
from openarts.core.resources import Catalog
from openarts.store import algorithms as a
from openarts.store import jobs as w
from openarts.store.db import Database
from openarts.store.rows import AlgorithmRow


def resolve(conn: sqlite3.Connection, project_id: str, body: Any) -> str:
    """A job body's algorithm made from an algorithm (`algorithm.id`) or a published version
    (`subscription_id` + `item_version_id`), resolved in place (core/algorithms.py): what the job runs is
    stored with it. Returns the id of the algorithm it came from ('' for none)."""
    algorithm = body.get("algorithm") if isinstance(body, dict) else None
    if not isinstance(algorithm, dict):
        return ""
    algorithm_id, subscription_id, version_id = (algorithm.get(k) for k in ("id", "subscription_id",
                                                                             "item_version_id"))
    if not (algorithm_id or subscription_id or version_id):
        return ""
    for key, value in (("id", algorithm_id), ("subscription_id", subscription_id), ("item_version_id", version_id)):
        if value is not None and (not isinstance(value, str) or len(value) > 64):
            raise errors.InvalidRequest(f"Invalid parameter algorithm.{key}: must be a string of at most 64 "
                                        "characters.")
    if algorithm_id:
        if subscription_id or version_id:
            raise errors.InvalidRequest("Invalid parameter algorithm.id: give either an algorithm id or a "
                                        "subscription (subscription_id + item_version_id), not both.")
        row = a.get_algorithm(conn, project_id, algorithm_id, ": algorithm.id names no algorithm of this project "
                                                              "(GET /v2/{project_id}/algorithms lists them)")
        ref = {"id": row.id, "name": row.name}
        config, source = a.config_of(row), row.id
    else:
        if not (subscription_id and version_id):
            raise errors.AlgorithmNotFound("AI algorithm not found: a subscription needs both "
                                           "algorithm.subscription_id and algorithm.item_version_id.")
        assert isinstance(subscription_id, str) and isinstance(version_id, str)
        version = a.get_version(conn, project_id, subscription_id, version_id)
        ref = {"subscription_id": subscription_id, "item_version_id": version_id, "name": version.name}
        config, source = a.config_of(version), version.algorithm_id
    body["algorithm"] = resolve_job_algorithm(algorithm, config, ref)
    return source


def _document(row: AlgorithmRow, versions: int) -> dict[str, Any]:
    config = a.config_of(row)
    return {"metadata": {"id": row.id, "name": row.name, "description": row.description,
                         "workspace_id": row.workspace_id, "ai_project": row.ai_project, "user_name": row.user_name,
                         "version_num": versions, "create_time": row.create_ms, "update_time": row.update_ms},
            "job_config": config["job_config"], "resource_requirements": config["resource_requirements"],
            "advanced_config": config["advanced_config"]}


class AlgorithmService:
    def __init__(self, db: Database, catalog: Catalog) -> None:
        self.db = db
        self.catalog = catalog

    def create(self, project_id: str, user_name: str, body: Any) -> dict[str, Any]:
        name, description, workspace_id, ai_project, config = parse_algorithm(body, self.catalog)
        now = w.now_ms()
        row = AlgorithmRow(str(uuid.uuid4()), project_id, workspace_id, name, description, ai_project, user_name,
                           orjson.dumps(config).decode(), "", now, now)
        with self.db.begin() as conn:
            a.create_algorithm(conn, row)
        return _document(row, 0)

    def show(self, project_id: str, algorithm_id: str) -> dict[str, Any]:
        with self.db.connect() as conn:
            row = a.get_algorithm(conn, project_id, algorithm_id)
            return _document(row, a.version_counts(conn, [row.id])[row.id])

    def page(self, project_id: str, params: dict[str, str]) -> dict[str, Any]:
        offset, limit, sort_by, order = list_query(params, SORTABLE, LIST_LIMIT_DEFAULT, LIST_LIMIT_MAX)
        if params.get("group_by"):
            raise errors.QueryParamsError("group_by is not supported here.")
        name_like = None
        searches = params.get("searches")
        if searches:  # name:<part of the name>, the one search supported
            key, _, value = searches.partition(":")
            if key != "name" or not value:
                raise errors.QueryParamsError("searches supports only name:<part of the name>.")
            name_like = value[:64]
        raw_workspace = params.get("workspace_id")
        workspace_id = None if not raw_workspace else check_workspace(raw_workspace, "workspace_id")
        with self.db.connect() as conn:
            total, rows = a.list_algorithms(conn, project_id, workspace_id, name_like, SORTABLE[sort_by], order,
                                            offset, limit)
            counts = a.version_counts(conn, [r.id for r in rows])
        return {"total": total, "count": len(rows), "limit": limit, "offset": offset, "sort_by": sort_by,
                "order": order, "items": [_document(r, counts[r.id]) for r in rows]}

    def change(self, project_id: str, algorithm_id: str, body: Any) -> dict[str, Any]:
        """What the body gives replaces: metadata's name and description, job_config, resource_requirements,
        advanced_config (each whole). Jobs already made from it keep what they resolved."""
        if not isinstance(body, dict):
            raise errors.InvalidJsonBody("The request body must be a JSON object.")
        metadata = body.get("metadata") or {}
        if not isinstance(metadata, dict):
            raise errors.InvalidRequest("Invalid parameter metadata: must be an object.")
        with self.db.begin() as conn:
            row = a.get_algorithm(conn, project_id, algorithm_id)
            config = a.config_of(row)
            if any(body.get(k) is not None for k in ("job_config", "resource_requirements", "advanced_config")):
                given = parse_config({"job_config": config["job_config"],
                                      "resource_requirements": config["resource_requirements"],
                                      "advanced_config": config["advanced_config"],
                                      **{k: v for k, v in body.items() if v is not None}}, self.catalog)
                config = given
            name = check_name(metadata["name"], "metadata.name") if metadata.get("name") else row.name
            description = (check_description(metadata["description"], "metadata.description")
                           if metadata.get("description") is not None else row.description)
            row = row._replace(name=name, description=description, config=orjson.dumps(config).decode(),
                               update_ms=w.now_ms())
            a.change_algorithm(conn, row)
            return _document(row, a.version_counts(conn, [row.id])[row.id])

    def delete(self, project_id: str, algorithm_id: str) -> None:
        with self.db.begin() as conn:
            row = a.get_algorithm(conn, project_id, algorithm_id)
            using = a.jobs_using(conn, row.id)
            if using:
                names = ", ".join(f"{name} ({job_id})" for job_id, name in using)
                raise errors.AlgorithmInUse(
                    f"Algorithm {row.name!r} (ID: {row.id}) is used by training jobs that have not ended: {names}. "
                    "Delete it once they have ended (or stop them).")
            a.delete_algorithm(conn, row.id)

    def publish(self, project_id: str, algorithm_id: str) -> dict[str, Any]:
        with self.db.begin() as conn:
            row = a.get_algorithm(conn, project_id, algorithm_id)
            version = a.publish(conn, row, w.now_ms())
        return {"subscription_id": version.subscription_id, "item_version_id": version.item_version_id,
                "version_num": version.version_num, "algorithm_id": row.id, "name": version.name,
                "create_time": version.create_ms}
