"""search_jobs(): a multi-phase IN is answered by one index walk per phase, merged; the pages must
be exactly what one ORDER BY ... LIMIT/OFFSET over all matching jobs gives."""

from __future__ import annotations

import random

import pytest

from openarts.core.phases import Phase, Secondary
from openarts.core.resources import build_catalog
from openarts.core.spec import parse_job
from openarts.store import jobs as w
from openarts.store import queries as q
from openarts.store import tags as t
from openarts.store.db import Database, open_db

PATHS = {  # final phase -> the moves that reach it
    Phase.PENDING: [(Phase.CREATING, Phase.PENDING)],
    Phase.RUNNING: [(Phase.CREATING, Phase.PENDING), (Phase.PENDING, Phase.RUNNING)],
    Phase.COMPLETED: [(Phase.CREATING, Phase.PENDING), (Phase.PENDING, Phase.RUNNING),
                      (Phase.RUNNING, Phase.COMPLETED)],
    Phase.FAILED: [(Phase.CREATING, Phase.PENDING), (Phase.PENDING, Phase.RUNNING), (Phase.RUNNING, Phase.FAILED)],
    Phase.TERMINATED: [(Phase.CREATING, Phase.PENDING), (Phase.PENDING, Phase.TERMINATED)],
}


@pytest.fixture(scope="module")
def store() -> tuple[Database, dict[str, dict[str, object]]]:
    db = open_db(":memory:")
    catalog = build_catalog({}, gpus=[])
    rng = random.Random(7)
    expected: dict[str, dict[str, object]] = {}
    with db.begin() as conn:
        for i in range(300):
            name = f"job-{rng.randrange(50):02d}-{i:03d}"  # names repeat their prefix: ties in sort_by=name
            spec = parse_job({"metadata": {"name": name}, "algorithm": {"command": "true"},
                              "spec": {"resource": {"flavor_id": "modelarts.local.cpu.1u"}}}, catalog)
            job_id = f"{rng.randrange(16**8):08x}-{i:03d}"
            created = 1_000_000 + rng.randrange(100) * 1000  # many equal create times: ties broken by id
            w.create_job(conn, job_id, "p", "u", spec, {}, created)
            t.set_tags(conn, job_id, [("team", f"t{i % 3}"), *([("env", "prod")] if i % 5 == 0 else [])])
            final = rng.choice(list(PATHS))
            for src, dst in PATHS[final]:
                sec = Secondary.QUEUING if dst is Phase.PENDING else None
                w.transition(conn, job_id, src, dst, at_ms=created + 1, secondary=sec)
            expected[job_id] = {"id": job_id, "name": name, "phase": final.value, "create_ms": created}
    return db, expected


@pytest.mark.parametrize("phases", [["Completed", "Failed"], ["Running", "Pending", "Terminated"],
                                    ["Abnormal", "Creating"], ["Failed", "Failed", "Running"]])
@pytest.mark.parametrize("sort_by,order", [("create_time", "desc"), ("create_time", "asc"), ("name", "asc")])
@pytest.mark.parametrize("offset,limit", [(0, 50), (0, 7), (13, 10), (95, 50), (400, 5)])
def test_multi_phase_pages_match_one_ordered_query(store: tuple[Database, dict[str, dict[str, object]]],
                                                   phases: list[str], sort_by: str, order: str,
                                                   offset: int, limit: int) -> None:
    db, expected = store
    column = q.SORTABLE[sort_by]
    want = sorted((j for j in expected.values() if j["phase"] in phases),
                  key=lambda j: (j[column], j["id"]), reverse=order == "desc")
    with db.connect() as conn:
        total, rows = q.search_jobs(conn, "p", filters=[{"key": "phase", "operator": "in", "value": phases}],
                                    sort_by=sort_by, order=order, offset=offset, limit=limit)
    assert total == len(want)
    assert [r.id for r in rows] == [j["id"] for j in want[offset:offset + limit]]


def test_multi_phase_with_other_filters(store: tuple[Database, dict[str, dict[str, object]]]) -> None:
    db, expected = store
    filters = [{"key": "name", "operator": "like", "value": ["job-1"]},
               {"key": "phase", "operator": "in", "value": ["Completed", "Terminated"]},
               {"key": "create_time", "operator": "between", "value": [1_010_000, 1_080_000]}]
    want = sorted((j for j in expected.values() if "job-1" in str(j["name"])
                   and j["phase"] in ("Completed", "Terminated") and 1_010_000 <= int(j["create_ms"]) <= 1_080_000),
                  key=lambda j: (j["create_ms"], j["id"]), reverse=True)
    with db.connect() as conn:
        total, rows = q.search_jobs(conn, "p", filters=filters, sort_by="create_time", order="desc", offset=2,
                                    limit=9)
    assert want and total == len(want)
    assert [r.id for r in rows] == [j["id"] for j in want[2:11]]


def _rows_by_hand(db: Database) -> list[dict[str, object]]:
    with db.connect() as conn:
        tags = t.tags_of_jobs(conn, [r[0] for r in conn.execute("SELECT id FROM jobs")])
        return [{**dict(zip(("id", "name", "phase", "create_ms", "update_ms"), r, strict=True)), "tags": tags[r[0]]}
                for r in conn.execute("SELECT id, name, phase, create_ms, update_ms FROM jobs")]


FILTERS = {
    "none": [],
    "one phase": [{"key": "phase", "operator": "in", "value": ["Completed"]}],
    "name": [{"key": "name", "operator": "like", "value": ["B-1"]}],  # LIKE: ASCII case-insensitive
    "phase and name": [{"key": "phase", "operator": "in", "value": ["Failed"]},
                       {"key": "name", "operator": "like", "value": ["-0"]}],
    "phases": [{"key": "phase", "operator": "in", "value": ["Completed", "Failed"]}],
    # JobSearches' tags (core/inputs.py's form): a narrow match is found through the tag's index, a wide one
    # paged by the ordered walk (NARROW_MAX_ROWS 3 takes the second way for each)
    "a tag": [{"key": "tags", "operator": "tags", "value": [("team", ["t1"])]}],
    "two tags and phases": [{"key": "tags", "operator": "tags", "value": [("team", ["t0", "t2"]), ("env", [])]},
                            {"key": "phase", "operator": "in", "value": ["Completed", "Failed", "Running"]}],
}


def _matches(job: dict[str, object], filters: list[dict[str, object]]) -> bool:
    for f in filters:
        values = f["value"]
        assert isinstance(values, list)
        if f["key"] == "phase" and job["phase"] not in values:
            return False
        if f["key"] == "name" and str(values[0]).lower() not in str(job["name"]).lower():
            return False
        if f["key"] == "tags":
            have = dict(job["tags"])  # type: ignore[call-overload]
            if any(key not in have or (wanted and have[key] not in wanted) for key, wanted in values):
                return False
    return True


@pytest.mark.parametrize("split_max", [q.SPLIT_MAX_ROWS, 5])  # 5: multi-phase pages by one `+phase` statement
@pytest.mark.parametrize("narrow_max", [q.NARROW_MAX_ROWS, 3])  # 3: name searches counted, then paged
@pytest.mark.parametrize("filters", list(FILTERS))
@pytest.mark.parametrize("sort_by", list(q.SORTABLE))
@pytest.mark.parametrize("order", ["asc", "desc"])
def test_every_sort_and_depth_matches_one_ordered_query(store: tuple[Database, dict[str, dict[str, object]]],
                                                        monkeypatch: pytest.MonkeyPatch, split_max: int,
                                                        narrow_max: int, filters: str, sort_by: str,
                                                        order: str) -> None:
    """Pages near the end are read backwards from it (store/queries.py _page), a narrow search is one walk:
    the same rows, in order, as one ORDER BY ... LIMIT/OFFSET over every match."""
    db, _ = store
    monkeypatch.setattr(q, "SPLIT_MAX_ROWS", split_max)
    monkeypatch.setattr(q, "NARROW_MAX_ROWS", narrow_max)
    column = q.SORTABLE[sort_by]
    want = sorted((j for j in _rows_by_hand(db) if _matches(j, FILTERS[filters])),
                  key=lambda j: (j[column], j["id"]), reverse=order == "desc")
    assert want
    n = len(want)
    for offset, limit in [(0, 20), (7, 7), (n // 2 - 3, 20), (n - 25, 20), (n - 20, 20), (n - 13, 20), (n - 1, 5),
                          (n, 5), (n + 40, 10), (max(0, n - 3), 50)]:
        with db.connect() as conn:
            total, rows = q.search_jobs(conn, "p", filters=FILTERS[filters], sort_by=sort_by, order=order,
                                        offset=max(0, offset), limit=limit)
        assert total == n
        assert [r.id for r in rows] == [j["id"] for j in want[max(0, offset):max(0, offset) + limit]], (offset, limit)
