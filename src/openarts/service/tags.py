"""Tags of training jobs (ModelArts' TMS operations): validate (core/tags.py), read and write the store
(store/tags.py). A job's tags change nothing it runs: the supervisor is never woken."""

from __future__ import annotations

from typing import Any

from openarts.core import errors
from openarts.core.inputs import MAX_SEARCH_OFFSET, query_int
from openarts.core.tags import MAX_TAGS, parse_create, parse_delete, parse_filter
from openarts.store import queries as q
from openarts.store import tags as t
from openarts.store.db import Database

LIMIT_MAX = 1000  # the default too (the SDK's limit: 1 to 1000, default 1000)


def _tag_list(tags: list[tuple[str, str]]) -> list[dict[str, str]]:
    return [{"key": k, "value": v} for k, v in tags]


def page_of(limit: str | None, offset: str | None) -> tuple[int, int]:
    """The limit and offset query parameters (QueryParamsError, ModelArts.2764, naming a bad one)."""
    lim = query_int("limit", limit, LIMIT_MAX, 1, LIMIT_MAX)
    off = query_int("offset", offset, 0, 0, MAX_SEARCH_OFFSET)
    assert lim is not None and off is not None
    return lim, off


class TagService:
    def __init__(self, db: Database) -> None:
        self.db = db

    def show(self, project_id: str, job_id: str) -> dict[str, Any]:
        with self.db.connect() as conn:
            q.get_job(conn, project_id, job_id)
            return {"tags": _tag_list(t.tags_of_job(conn, job_id))}

    def create(self, project_id: str, job_id: str, body: Any) -> None:
        """Set the given tags: a key the job has takes the new value (an upsert); at most MAX_TAGS in all."""
        tags = parse_create(body)
        with self.db.begin() as conn:
            q.get_job(conn, project_id, job_id)
            have = {k for k, _ in t.tags_of_job(conn, job_id)}
            after = have | {k for k, _ in tags}
            if len(after) > MAX_TAGS:
                raise errors.InvalidRequest(
                    f"Invalid parameter tags: training job (ID: {job_id}) has {len(have)} tags and would have "
                    f"{len(after)}; a training job has at most {MAX_TAGS}.")
            t.set_tags(conn, job_id, tags)

    def delete(self, project_id: str, job_id: str, body: Any) -> None:
        """Remove the given tags; each must be on the job (with the given value, when one is given): a tag
        that is not is refused, and nothing is removed."""
        wanted = parse_delete(body)
        with self.db.begin() as conn:
            q.get_job(conn, project_id, job_id)
            have = dict(t.tags_of_job(conn, job_id))
            for i, (key, value) in enumerate(wanted):
                if key not in have:
                    raise errors.InvalidRequest(f"Invalid parameter tags[{i}].key: training job (ID: {job_id}) has "
                                                f"no tag {key[:40]!r}.")
                if value is not None and have[key] != value:
                    raise errors.InvalidRequest(f"Invalid parameter tags[{i}].value: the tag {key[:40]!r} of "
                                                f"training job (ID: {job_id}) has another value.")
            t.delete_tags(conn, job_id, [k for k, _ in wanted])

    def project_tags(self, project_id: str, limit: str | None, offset: str | None) -> dict[str, Any]:
        """The keys on the project's jobs, each with its distinct values; limit and offset count keys."""
        lim, off = page_of(limit, offset)
        with self.db.connect() as conn:
            keys = t.project_tags(conn, project_id)
        return {"tags": [{"key": k, "values": v} for k, v in keys[off:off + lim]]}

    def filter(self, project_id: str, body: Any, limit: str | None, offset: str | None) -> dict[str, Any]:
        lim, off = page_of(limit, offset)
        f = parse_filter(body)
        with self.db.connect() as conn:
            total, page = t.filter_jobs(conn, project_id, f, off, lim)
            tags = t.tags_of_jobs(conn, [job_id for job_id, _, _ in page])
        return {"resources": [{"resource_id": job_id, "resource_name": name, "resource_detail": {},
                               "workspace_id": workspace_id, "tags": _tag_list(tags[job_id])}
                              for job_id, name, workspace_id in page],
                "total_count": total}

    def count(self, project_id: str, body: Any, limit: str | None, offset: str | None) -> dict[str, Any]:
        """The matching jobs' number; limit and offset are checked as the filter's, and page nothing."""
        page_of(limit, offset)
        f = parse_filter(body)
        with self.db.connect() as conn:
            return {"total_count": t.count_jobs(conn, project_id, f)}
