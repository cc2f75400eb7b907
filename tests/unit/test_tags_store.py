"""Tags of jobs: the TMS rules (core/tags.py) and the store's reads (store/tags.py), which see only the
project's listed jobs: not another project's, not a search's trials, not a job being deleted; and a
purged job's tags go with it."""

from __future__ import annotations

import pytest

from openarts.core import errors
from openarts.core.resources import build_catalog
from openarts.core.spec import parse_job
from openarts.core.tags import TagFilter, check_key, check_value, parse_create, parse_delete, parse_filter
from openarts.store import jobs as w
from openarts.store import tags as t
from openarts.store.db import Database, open_db

CATALOG = build_catalog({}, gpus=[])


def _job(db: Database, job_id: str, name: str, project: str = "p1", parent_id: str = "", at: int = 1) -> str:
    spec = parse_job({"metadata": {"name": name}, "algorithm": {"command": "true"},
                      "spec": {"resource": {"flavor_id": "modelarts.local.cpu.1u"}}}, CATALOG)
    with db.begin() as conn:
        w.create_job(conn, job_id, project, "u", spec, {}, at, parent_id=parent_id)
    return job_id


def _all(**kw: object) -> TagFilter:
    return TagFilter(**{"tags": [], "without_any_tag": False, "name_contains": None, "workspace_id": None,
                        **kw})  # type: ignore[arg-type]


def test_keys_and_values_follow_the_tms_rules() -> None:
    assert check_key("Équipe 研究 42 _.:=+-@", "k") == "Équipe 研究 42 _.:=+-@"
    assert check_key("हिन्दी", "k") == "हिन्दी"  # combining marks are part of a script's letters
    assert check_value("", "v") == "" and check_value("a/b", "v") == "a/b"
    for bad in ("", "x" * 129, " a", "a ", "_sys_a", "a/b", "a\nb", "a\x00b", "a😀", 5, None):
        with pytest.raises(errors.InvalidRequest):
            check_key(bad, "k")
    for bad in ("x" * 256, " a", "a ", "a#b", "a\tb", 5, None):
        with pytest.raises(errors.InvalidRequest):
            check_value(bad, "v")
    assert check_key("x" * 128, "k") and check_value("x" * 255, "v")


def test_parsing_the_bodies() -> None:
    assert parse_create({"tags": [{"key": "a", "value": "1"}, {"key": "b"}, {"key": "c", "value": None}]}) == [
        ("a", "1"), ("b", ""), ("c", "")]
    assert parse_delete({"tags": [{"key": "a", "value": "1"}, {"key": "b", "value": ""}, {"key": "c"}]}) == [
        ("a", "1"), ("b", None), ("c", None)]
    for body in (None, [], {}, {"tags": []}, {"tags": None}, {"tags": ["a"]}, {"tags": [{"key": "a"}] * 2},
                 {"tags": [{"key": f"k{i}"} for i in range(21)]}):
        with pytest.raises(errors.InvalidRequest):
            parse_create(body)
    assert parse_filter(None) == _all()
    assert parse_filter({"tags": [{"key": "a"}, {"key": "b", "values": ["1", "2"]}], "without_any_tag": False,
                         "matches": [{"key": "resource_name", "value": "x"}], "workspace_id": ""}) == _all(
        tags=[("a", []), ("b", ["1", "2"])], name_contains="x")


def test_the_reads_see_only_the_projects_listed_jobs() -> None:
    db = open_db(":memory:")
    a = _job(db, "a", "alpha", at=1)
    b = _job(db, "b", "beta", at=2)
    trial = _job(db, "t", "beta-trial-0", parent_id=b, at=3)
    theirs = _job(db, "x", "alpha", project="p2", at=4)
    gone = _job(db, "g", "gamma", at=5)
    with db.begin() as conn:
        for job_id in (a, b, trial, theirs, gone):
            t.set_tags(conn, job_id, [("team", job_id), ("all", "")])
        t.set_tags(conn, a, [("team", "A")])  # an upsert
        w.request_delete(conn, [gone], 6)
    with db.connect() as conn:
        assert t.tags_of_job(conn, a) == [("all", ""), ("team", "A")]
        assert t.project_tags(conn, "p1") == [("all", [""]), ("team", ["A", "b"])]
        assert t.filter_jobs(conn, "p1", _all(), 0, 10) == (2, [("b", "beta", "0"), ("a", "alpha", "0")])
        assert t.count_jobs(conn, "p1", _all(tags=[("team", ["t", "g", "x"])])) == 0
        assert t.count_jobs(conn, "p1", _all(without_any_tag=True)) == 0
        assert t.filter_jobs(conn, "p2", _all(name_contains="ALP"), 0, 10) == (1, [("x", "alpha", "0")])
        assert t.tags_of_jobs(conn, [a, "none"]) == {a: [("all", ""), ("team", "A")], "none": []}
    with db.begin() as conn:
        t.delete_tags(conn, a, ["all", "team"])
        w.purge_job(conn, gone)
    with db.connect() as conn:
        assert t.count_jobs(conn, "p1", _all(without_any_tag=True)) == 1
        assert conn.execute("SELECT count(*) FROM job_tags WHERE job_id = ?", (gone,)).fetchone()[0] == 0


@pytest.mark.parametrize("walk_from", [t.WALK_FROM, 3])  # 3: pages of many matches walk the project's jobs
def test_a_page_is_the_same_whichever_way_it_is_read(monkeypatch: pytest.MonkeyPatch, walk_from: int) -> None:
    """A page of the filter, newest first, is the same read through the tags' index as by a walk of the
    project's jobs in create_time order (ties broken by id), at every depth."""
    monkeypatch.setattr(t, "WALK_FROM", walk_from)
    db = open_db(":memory:")
    for i in range(40):
        _job(db, f"j{i:02d}", f"job-{i}", at=1 + i // 3, project="p1" if i % 7 else "p2")
    with db.begin() as conn:
        for i in range(40):
            t.set_tags(conn, f"j{i:02d}", [("team", f"t{i % 2}"), *([("env", "prod")] if i % 3 == 0 else [])])
    jobs = [(f"j{i:02d}", 1 + i // 3, i) for i in range(40) if i % 7]
    for tags in ([("team", ["t0"])], [("team", ["t0", "t1"]), ("env", [])], [("env", ["prod"])]):
        want = [(j, f"job-{i}", "0") for j, at, i in sorted(jobs, key=lambda x: (x[1], x[0]), reverse=True)
                if all((k == "team" and (not v or f"t{i % 2}" in v)) or (k == "env" and i % 3 == 0) for k, v in tags)]
        with db.connect() as conn:
            for offset, limit in ((0, 5), (4, 4), (len(want) - 2, 5), (len(want), 3)):
                assert t.filter_jobs(conn, "p1", _all(tags=tags), offset, limit) == (
                    len(want), want[offset:offset + limit]), (tags, offset, limit)
