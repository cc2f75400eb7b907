"""Jobs' TMS tags (the job_tags table, v6): reads and writes. A job's tags go with it (jobs.purge_job).

The project-wide reads (its tag keys and values, the filter and count operations) see the jobs a project's
list shows: store/schema.py LIVE_SQL. A read with a tag is driven by the tag's index (ix_job_tags_key_value:
the jobs with that key and value), each job then looked up by id: `+project_id` keeps SQLite from walking
every job of the project instead (50 ms for 100,000 jobs, against 1 ms for a tag on 333 of them:
docs/benchmarks.md).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from typing import Any

from openarts.core.tags import TagFilter
from openarts.store.db import chunks, placeholders
from openarts.store.schema import LIVE_SQL

Conn = sqlite3.Connection


def tags_of_job(conn: Conn, job_id: str) -> list[tuple[str, str]]:
    """A job's tags, (key, value) by key."""
    return [(k, v) for k, v in conn.execute("SELECT key, value FROM job_tags WHERE job_id = ? ORDER BY key",
                                            (job_id,))]


def tags_of_jobs(conn: Conn, job_ids: Sequence[str]) -> dict[str, list[tuple[str, str]]]:
    """Several jobs' tags: job id -> (key, value) by key ([] for a job without any)."""
    out: dict[str, list[tuple[str, str]]] = {i: [] for i in job_ids}
    for part in chunks(list(job_ids)):
        for job_id, key, value in conn.execute(f"SELECT job_id, key, value FROM job_tags WHERE job_id IN "
                                               f"({placeholders(part)}) ORDER BY job_id, key", tuple(part)):
            out[job_id].append((key, value))
    return out


def set_tags(conn: Conn, job_id: str, tags: Sequence[tuple[str, str]]) -> None:
    """Add each tag, or give its key the new value."""
    conn.executemany("INSERT INTO job_tags (job_id, key, value) VALUES (?, ?, ?) "
                     "ON CONFLICT (job_id, key) DO UPDATE SET value = excluded.value",
                     [(job_id, k, v) for k, v in tags])


def delete_tags(conn: Conn, job_id: str, keys: Sequence[str]) -> None:
    conn.executemany("DELETE FROM job_tags WHERE job_id = ? AND key = ?", [(job_id, k) for k in keys])


def project_tags(conn: Conn, project_id: str) -> list[tuple[str, list[str]]]:
    """The distinct values of each key on the project's listed jobs, by key, values sorted."""
    out: dict[str, list[str]] = {}
    # each distinct (key, value) of the index, kept if one listed job of the project has it (found at its
    # first such job, most often the first row): not every tag row's job looked up
    for key, value in conn.execute(
            "SELECT p.key, p.value FROM (SELECT DISTINCT key, value FROM job_tags) p WHERE EXISTS (SELECT 1 "
            "FROM job_tags t JOIN jobs j ON j.id = t.job_id WHERE t.key = p.key AND t.value = p.value AND "
            "+j.project_id = ? AND j.delete_requested IS 0 AND j.parent_id = '') ORDER BY p.key, p.value",
            (project_id,)):
        out.setdefault(key, []).append(value)
    return list(out.items())


WALK_FROM = 2000  # a page of more matches than this is read by walking the project's jobs newest first


def _where(project_id: str, f: TagFilter, walk: bool = False) -> tuple[str, list[Any]]:
    """The filter's WHERE and its parameters: driven by the tags' index; with `walk`, the same conditions
    for a walk of the project's jobs in create_time order, which meets the first of many matches soon."""
    tagged = not f.without_any_tag and bool(f.tags) and not walk
    conds = ["+project_id = ?" if tagged else "project_id = ?", LIVE_SQL]
    params: list[Any] = [project_id]
    if f.workspace_id:
        conds.append("workspace_id = ?")
        params.append(f.workspace_id)
    if f.without_any_tag:
        conds.append("id NOT IN (SELECT job_id FROM job_tags)")
    else:
        for key, values in f.tags:
            value_in = f" AND value IN ({placeholders(values)})" if values else ""
            conds.append(f"EXISTS (SELECT 1 FROM job_tags WHERE job_id = jobs.id AND key = ?{value_in})" if walk
                         else f"id IN (SELECT job_id FROM job_tags WHERE key = ?{value_in})")
            params += [key, *values]
    if f.name_contains is not None:
        conds.append("name LIKE ? ESCAPE '\\'")
        params.append("%" + "".join("\\" + ch if ch in "%_\\" else ch for ch in f.name_contains) + "%")
    return " AND ".join(conds), params


def count_jobs(conn: Conn, project_id: str, f: TagFilter) -> int:
    where, params = _where(project_id, f)
    return int(conn.execute(f"SELECT count(*) FROM jobs WHERE {where}", params).fetchone()[0])


def filter_jobs(conn: Conn, project_id: str, f: TagFilter, offset: int, limit: int
                ) -> tuple[int, list[tuple[str, str, str]]]:
    """The matching jobs' count, and a page of them, newest first: (id, name, workspace_id)."""
    where, params = _where(project_id, f)
    total = int(conn.execute(f"SELECT count(*) FROM jobs WHERE {where}", params).fetchone()[0])
    if offset >= total:
        return total, []
    if total > WALK_FROM and f.tags and not f.without_any_tag:
        where, params = _where(project_id, f, walk=True)
    page = conn.execute(f"SELECT id, name, workspace_id FROM jobs WHERE {where} ORDER BY create_ms DESC, id DESC "
                        "LIMIT ? OFFSET ?", [*params, limit, offset])
    return total, [(i, n, w) for i, n, w in page]
