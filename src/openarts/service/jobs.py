"""Job operations behind the API. They validate, record intent in the store and wake the supervisor;
they never start or signal processes themselves."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

from sqlalchemy import Engine

from openarts.api.render import job_document, static_document
from openarts.config import Settings
from openarts.core import errors
from openarts.core.phases import TERMINABLE, Phase, is_terminal
from openarts.core.resources import Catalog
from openarts.core.spec import MAX_DESCRIPTION, parse_job
from openarts.store import jobs as w
from openarts.store import queries as q
from openarts.supervisor import workspace as ws

SEARCH_LIMIT_MAX = 50


class JobService:
    def __init__(self, settings: Settings, db: Engine, catalog: Catalog,
                 wake: Callable[[str | None], None]) -> None:
        self.settings = settings
        self.db = db
        self.catalog = catalog
        self.wake = wake

    def create(self, project_id: str, user_name: str, body: Any) -> dict[str, Any]:
        spec = parse_job(body, self.catalog)
        job_id = str(uuid.uuid4())
        layout = ws.layout(spec, self.settings.job_dir(job_id))
        doc = static_document(spec, job_id, self.catalog, layout)
        now = w.now_ms()
        with self.db.begin() as conn:
            w.create_job(conn, job_id, project_id, user_name, spec, doc, now)
        self.wake(None)
        return self.get(project_id, job_id)

    def get(self, project_id: str, job_id: str) -> dict[str, Any]:
        with self.db.connect() as conn:
            row = q.get_job(conn, project_id, job_id)
            details = q.job_details(conn, [row])[row.id]
        return job_document(row, details, w.now_ms())

    def search(self, project_id: str, body: Any) -> dict[str, Any]:
        if body is None:
            body = {}
        if not isinstance(body, dict):
            raise errors.InvalidJsonBody("The request body must be a JSON object.")
        offset = body.get("offset", 0)
        limit = body.get("limit", 10)
        if isinstance(offset, bool) or not isinstance(offset, int) or offset < 0:
            raise errors.QueryParamsError("offset must be an integer >= 0.")
        if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= SEARCH_LIMIT_MAX:
            raise errors.QueryParamsError(f"limit must be an integer from 1 to {SEARCH_LIMIT_MAX}.")
        sort_by = body.get("sort_by") or "create_time"
        if sort_by not in q.SORTABLE:
            raise errors.UnsupportedSort(f"Unsupported sort_by {sort_by!r}; use one of {sorted(q.SORTABLE)}.")
        order = body.get("order") or "desc"
        if order not in ("asc", "desc"):
            raise errors.QueryParamsError("order must be 'asc' or 'desc'.")
        filters = body.get("filters") or []
        if not isinstance(filters, list) or len(filters) > 20:
            raise errors.QueryParamsError("filters must be an array of at most 20 filters.")
        clean = []
        for f in filters:
            if not isinstance(f, dict) or not isinstance(f.get("key"), str) or not isinstance(
                    f.get("operator"), str):
                raise errors.QueryParamsError("each filter needs a key, an operator and a value array.")
            value = f.get("value", [])
            if not isinstance(value, list):
                value = [value]
            if not value or len(value) > 100 or not all(isinstance(v, str | int) for v in value):
                raise errors.QueryParamsError(f"filter {f['key']!r}: value must be 1 to 100 strings.")
            clean.append({"key": f["key"], "operator": f["operator"], "value": value})
        workspace_id = body.get("workspace_id")
        with self.db.connect() as conn:
            total, rows = q.search_jobs(conn, project_id, filters=clean, sort_by=sort_by, order=order,
                                        offset=offset, limit=limit,
                                        workspace_id=workspace_id if isinstance(workspace_id, str) else None)
            details = q.job_details(conn, rows)
        now = w.now_ms()
        return {
            "total": total, "count": len(rows), "limit": limit, "offset": offset, "sort_by": sort_by,
            "order": order, "group_by": body.get("group_by") or "", "workspace_id": workspace_id or "0",
            "ai_project": "default-ai-project",
            "items": [job_document(r, details[r.id], now) for r in rows],
        }

    def update(self, project_id: str, job_id: str, body: Any) -> None:
        if not isinstance(body, dict):
            raise errors.InvalidJsonBody("The request body must be a JSON object.")
        description = body.get("description")
        with self.db.begin() as conn:
            q.get_job(conn, project_id, job_id)
            if description is not None:
                if not isinstance(description, str) or len(description) > MAX_DESCRIPTION:
                    raise errors.InvalidRequest(
                        f"Invalid parameter description: a string of at most {MAX_DESCRIPTION} characters.")
                w.set_description(conn, job_id, description, w.now_ms())

    def terminate(self, project_id: str, job_id: str, body: Any) -> dict[str, Any]:
        if not isinstance(body, dict) or body.get("action_type") != "terminate":
            raise errors.InvalidRequest("Invalid parameter action_type: the only action is 'terminate'.")
        with self.db.begin() as conn:
            row = q.get_job(conn, project_id, job_id)
            if Phase(row.phase) not in TERMINABLE and row.phase != Phase.TERMINATING:
                raise errors.NotAllowedToTerminate(
                    f"Training job (ID: {job_id}) is {row.phase} and cannot be terminated.")
            if not row.terminate_requested:
                w.request_terminate(conn, job_id, w.now_ms())
        self.wake(job_id)
        return self.get(project_id, job_id)

    def delete(self, project_id: str, job_ids: list[str]) -> None:
        with self.db.begin() as conn:
            for job_id in job_ids:
                q.get_job(conn, project_id, job_id)
            w.request_delete(conn, job_ids, w.now_ms())
        self.wake(None)

    def name_taken(self, project_id: str, name: str) -> bool:
        with self.db.connect() as conn:
            return q.name_exists(conn, project_id, name)

    def require(self, project_id: str, job_id: str) -> Any:
        with self.db.connect() as conn:
            return q.get_job(conn, project_id, job_id)

    def is_final(self, phase: str) -> bool:
        return is_terminal(phase)
