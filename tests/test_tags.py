"""Tags of training jobs (ModelArts' TMS operations) through the official SDK against a real server:
a job's tags (create is an upsert, delete by key or by key and value), the project's keys and values,
the jobs filtered and counted by tags, without any tag and by name, paging, the TMS rules on keys and
values refused as ModelArts.2788, another project's jobs unseen, a deleted job's tags gone."""

from __future__ import annotations

import sqlite3
from typing import Any

import huaweicloudsdkmodelarts.v1.model as m
import pytest

from conftest import Server, job_body, wait_for
from helpers import create_id, expect_error, sdk_client
from sdk_types import round_trip_losses, type_errors

OTHER_PROJECT = "fedcba9876543210fedcba9876543210"


def _tags(sdk: Any, job_id: str) -> list[tuple[str, str]]:
    resp = sdk.show_train_job_tags(m.ShowTrainJobTagsRequest(training_job_id=job_id))
    assert resp.status_code == 200
    return [(t.key, t.value) for t in resp.tags]


def _create(sdk: Any, job_id: str, tags: list[Any]) -> Any:
    body = m.CreateTmsTagsRequest(tags=[m.TmsTag(key=t[0], value=t[1]) if isinstance(t, tuple) else t for t in tags])
    return sdk.create_train_job_tags(m.CreateTrainJobTagsRequest(training_job_id=job_id, body=body))


def _delete(sdk: Any, job_id: str, tags: list[Any]) -> Any:
    body = m.DeleteTmsTagsRequest(tags=[m.TmsTag(key=t[0], value=t[1]) for t in tags])
    return sdk.delete_train_job_tags(m.DeleteTrainJobTagsRequest(training_job_id=job_id, body=body))


def _filter(sdk: Any, limit: int | None = None, offset: int | None = None, **body: Any) -> Any:
    resp = sdk.list_training_jobs_by_tags(m.ListTrainingJobsByTagsRequest(limit=limit, offset=offset, body=body))
    assert resp.status_code == 200
    raw = resp.to_json_object()
    assert type_errors("ListTrainingJobsByTagsResponse", raw) == []
    assert round_trip_losses("ListTrainingJobsByTagsResponse", resp) == []
    return resp


def _names(sdk: Any, **body: Any) -> list[str]:
    """The matching jobs' names, the count operation agreeing on their number."""
    resp = _filter(sdk, **body)
    names = [r.resource_name for r in resp.resources]
    assert resp.total_count == len(names)
    count = sdk.count_training_jobs_by_tags(m.CountTrainingJobsByTagsRequest(body=body))
    assert count.status_code == 200 and count.total_count == len(names), (body, count.total_count, names)
    return names


def _project_tags(sdk: Any, **page: Any) -> dict[str, list[str]]:
    resp = sdk.list_training_job_tags(m.ListTrainingJobTagsRequest(**page))
    assert resp.status_code == 200
    assert type_errors("ListTrainingJobTagsResponse", resp.to_json_object()) == []
    return {t.key: t.values for t in resp.tags}


def test_a_jobs_tags_are_created_shown_and_deleted(server: Server, sdk: Any) -> None:
    job = create_id(sdk, job_body("tagged", command="true"))
    assert _tags(sdk, job) == []
    resp = _create(sdk, job, [("team", "vision"), ("env", "dev"), ("empty", "")])
    assert resp.status_code == 204  # ModelArts' documented status; HTTP allows no body with it
    assert _tags(sdk, job) == [("empty", ""), ("env", "dev"), ("team", "vision")]  # by key
    # an upsert: a key the job has takes the new value, the others stay
    assert _create(sdk, job, [("env", "prod"), ("owner", "ana")]).status_code == 204
    assert _tags(sdk, job) == [("empty", ""), ("env", "prod"), ("owner", "ana"), ("team", "vision")]
    # a value the SDK leaves out (None) is an empty value
    assert _create(sdk, job, [m.TmsTag(key="flag")]).status_code == 204
    assert ("flag", "") in _tags(sdk, job)

    # delete by key and value, and by key alone (no value, or an empty one)
    assert _delete(sdk, job, [("env", "prod"), ("owner", None), ("flag", "")]).status_code == 204
    assert _tags(sdk, job) == [("empty", ""), ("team", "vision")]
    # a tag the job does not have, or has with another value: refused, and nothing is removed
    err = expect_error(lambda: _delete(sdk, job, [("team", None), ("nope", None)]), 400, "ModelArts.2788")
    assert "tags[1].key" in err.error_msg and "no tag 'nope'" in err.error_msg
    err = expect_error(lambda: _delete(sdk, job, [("team", "audio")]), 400, "ModelArts.2788")
    assert "another value" in err.error_msg
    assert _tags(sdk, job) == [("empty", ""), ("team", "vision")]

    # unicode letters and digits of any language, spaces inside, and the allowed specials
    fancy = ("Abteilung für KI 研究 _.:=+-@", "Wert/π 42 _.:/=+-@")
    assert _create(sdk, job, [fancy]).status_code == 204
    assert fancy in _tags(sdk, job)


def test_a_missing_job_and_another_projects_job_have_no_tags(server: Server, sdk: Any) -> None:
    mine = create_id(sdk, job_body("mine", command="true"))
    _create(sdk, mine, [("secret", "yes")])
    other = sdk_client(server, OTHER_PROJECT)
    theirs = create_id(other, job_body("theirs", command="true"))
    _create(other, theirs, [("team", "b")])
    for job_id in (mine, "00000000-0000-4000-8000-000000000000"):
        expect_error(lambda j=job_id: _tags(other, j), 400, "ModelArts.2775")
        expect_error(lambda j=job_id: _create(other, j, [("x", "y")]), 400, "ModelArts.2775")
        expect_error(lambda j=job_id: _delete(other, j, [("secret", None)]), 400, "ModelArts.2775")
    assert _tags(sdk, mine) == [("secret", "yes")]
    assert _project_tags(other) == {"team": ["b"]}
    assert _project_tags(sdk) == {"secret": ["yes"]}
    assert _names(other) == ["theirs"]
    assert _names(other, tags=[{"key": "secret", "values": []}]) == []
    assert _names(sdk) == ["mine"]


@pytest.mark.parametrize(("tag", "field", "words"), [
    (("", "v"), "tags[0].key", "1 to 128"),
    (("k" * 129, "v"), "tags[0].key", "1 to 128"),
    ((" lead", "v"), "tags[0].key", "space"),
    (("trail ", "v"), "tags[0].key", "space"),
    (("_sys_owner", "v"), "tags[0].key", "reserved"),
    (("a/b", "v"), "tags[0].key", "'/'"),
    (("a*b", "v"), "tags[0].key", "'*'"),
    (("tab\there", "v"), "tags[0].key", "characters"),
    (("k", "v" * 256), "tags[0].value", "0 to 255"),
    (("k", "a#b"), "tags[0].value", "'#'"),
    (("k", " v"), "tags[0].value", "space"),
])
def test_bad_keys_and_values_are_refused(server: Server, sdk: Any, tag: tuple[str, str], field: str,
                                         words: str) -> None:
    job = create_id(sdk, job_body("strict", command="true"))
    err = expect_error(lambda: _create(sdk, job, [tag]), 400, "ModelArts.2788")
    assert f"Invalid parameter {field}" in err.error_msg and words in err.error_msg, err.error_msg
    assert _tags(sdk, job) == []


def test_request_shapes_and_the_limit_of_tags(server: Server, sdk: Any) -> None:
    job = create_id(sdk, job_body("limits", command="true"))
    expect_error(lambda: _create(sdk, job, []), 400, "ModelArts.2788")
    err = expect_error(lambda: _create(sdk, job, [("k", "1"), ("k", "2")]), 400, "ModelArts.2788")
    assert "given twice" in err.error_msg
    expect_error(lambda: _delete(sdk, job, []), 400, "ModelArts.2788")
    expect_error(lambda: sdk.create_train_job_tags(m.CreateTrainJobTagsRequest(
        training_job_id=job, body={"tags": [{"key": 1, "value": "v"}]})), 400, "ModelArts.2788")
    expect_error(lambda: sdk.create_train_job_tags(m.CreateTrainJobTagsRequest(
        training_job_id=job, body={"tags": "k=v"})), 400, "ModelArts.2788")
    # 20 tags at most on a job: 21 in one request, or 15 + 6 new ones, are refused; replacing is not adding
    err = expect_error(lambda: _create(sdk, job, [(f"k{i}", "v") for i in range(21)]), 400, "ModelArts.2788")
    assert "at most 20" in err.error_msg
    _create(sdk, job, [(f"k{i}", "v") for i in range(15)])
    err = expect_error(lambda: _create(sdk, job, [(f"n{i}", "v") for i in range(6)]), 400, "ModelArts.2788")
    assert "has 15 tags and would have 21" in err.error_msg
    assert len(_tags(sdk, job)) == 15
    _create(sdk, job, [*[(f"k{i}", "w") for i in range(10)], *[(f"n{i}", "v") for i in range(5)]])
    assert len(_tags(sdk, job)) == 20


def test_the_projects_tag_keys_and_values(server: Server, sdk: Any) -> None:
    assert _project_tags(sdk) == {}
    a = create_id(sdk, job_body("pa", command="true"))
    b = create_id(sdk, job_body("pb", command="true"))
    _create(sdk, a, [("team", "vision"), ("env", "dev")])
    _create(sdk, b, [("team", "audio"), ("env", "dev"), ("zeta", "")])
    assert _project_tags(sdk) == {"env": ["dev"], "team": ["audio", "vision"], "zeta": [""]}
    keys = sdk.list_training_job_tags(m.ListTrainingJobTagsRequest()).tags
    assert [t.key for t in keys] == ["env", "team", "zeta"]  # by key, each key's distinct values sorted
    # limit and offset page the keys
    assert list(_project_tags(sdk, limit=1, offset=1)) == ["team"]
    assert list(_project_tags(sdk, limit=2)) == ["env", "team"]
    assert _project_tags(sdk, offset=3) == {}
    for page in ({"limit": 0}, {"limit": 1001}, {"offset": -1}):
        expect_error(lambda p=page: sdk.list_training_job_tags(m.ListTrainingJobTagsRequest(**p)),  # type: ignore
                     400, "ModelArts.2764")


def test_filter_and_count_by_tags_without_tags_and_by_name(server: Server, sdk: Any) -> None:
    ids = {}
    for name, tags in [("resnet-a", [("team", "vision"), ("env", "prod")]),
                       ("resnet-b", [("team", "vision"), ("env", "dev")]),
                       ("whisper-c", [("team", "audio"), ("env", "dev"), ("gpu", "")]),
                       ("bare-d", []),
                       ("ResNet_e", [("team", "nlp")])]:
        ids[name] = create_id(sdk, job_body(name, command="true"))
        if tags:
            _create(sdk, ids[name], tags)
    everyone = ["ResNet_e", "bare-d", "whisper-c", "resnet-b", "resnet-a"]  # newest first
    assert _names(sdk) == everyone
    # a key with values: any of them (OR); several keys: all of them (AND); no values: any value
    assert _names(sdk, tags=[{"key": "team", "values": ["vision"]}]) == ["resnet-b", "resnet-a"]
    assert _names(sdk, tags=[{"key": "team", "values": ["vision", "audio"]}]) == ["whisper-c", "resnet-b",
                                                                                 "resnet-a"]
    assert _names(sdk, tags=[{"key": "team", "values": ["vision", "audio"]},
                             {"key": "env", "values": ["dev"]}]) == ["whisper-c", "resnet-b"]
    assert _names(sdk, tags=[{"key": "env", "values": []}]) == ["whisper-c", "resnet-b", "resnet-a"]
    assert _names(sdk, tags=[{"key": "gpu", "values": [""]}]) == ["whisper-c"]  # an empty value is a value
    assert _names(sdk, tags=[{"key": "team", "values": ["nobody"]}]) == []
    assert _names(sdk, tags=[{"key": "nokey", "values": []}]) == []
    # the job list's own tags filter (JobSearches.tags): the same AND/OR rules; only "" is any value
    listed = sdk.list_training_jobs(m.ListTrainingJobsRequest(body=m.JobSearches(tags=[
        m.ListTagFilter(key="team", values=["vision", "audio"]), m.ListTagFilter(key="env", values=["dev"])])))
    assert [i.metadata.name for i in listed.items] == ["whisper-c", "resnet-b"] and listed.total == 2
    listed = sdk.list_training_jobs(m.ListTrainingJobsRequest(body=m.JobSearches(tags=[
        m.ListTagFilter(key="gpu", values=[""])])))
    assert [i.metadata.name for i in listed.items] == ["whisper-c"]
    old = [{"key": "create_time", "operator": "between", "value": [0, 10**12]}]
    expect_error(lambda: sdk.list_training_jobs(m.ListTrainingJobsRequest(body=m.JobSearches(
        tags=[m.ListTagFilter(key="team", values=[])], filters=old))), 400, "ModelArts.2764")
    # jobs without any tag; tags are then ignored (the SDK's rule)
    assert _names(sdk, without_any_tag=True) == ["bare-d"]
    assert _names(sdk, without_any_tag=True, tags=[{"key": "team", "values": ["vision"]}]) == ["bare-d"]
    assert _names(sdk, without_any_tag=False, tags=[{"key": "team", "values": ["nlp"]}]) == ["ResNet_e"]
    # resource_name: a substring of the name, case-insensitive; % and _ are plain characters
    match = [{"key": "resource_name", "value": "resnet"}]
    assert _names(sdk, matches=match) == ["ResNet_e", "resnet-b", "resnet-a"]
    assert _names(sdk, matches=match, tags=[{"key": "env", "values": ["dev"]}]) == ["resnet-b"]
    assert _names(sdk, matches=[{"key": "resource_name", "value": "t_e"}]) == ["ResNet_e"]
    assert _names(sdk, matches=[{"key": "resource_name", "value": "%"}]) == []
    assert _names(sdk, matches=match, without_any_tag=True) == []
    # workspace_id: the jobs of that workspace ("0" unless the job was created in another)
    assert _names(sdk, workspace_id="0") == everyone
    assert _names(sdk, workspace_id="ws-1") == []

    # each resource: the job's id, name, workspace, an empty detail and all its tags
    resp = _filter(sdk, tags=[{"key": "gpu", "values": []}])
    raw = resp.to_json_object()["resources"][0]
    assert raw == {"resource_id": ids["whisper-c"], "resource_name": "whisper-c", "resource_detail": {},
                   "workspace_id": "0", "tags": [{"key": "env", "value": "dev"}, {"key": "gpu", "value": ""},
                                                 {"key": "team", "value": "audio"}]}
    assert _filter(sdk, without_any_tag=True).to_json_object()["resources"][0]["tags"] == []
    # the SDK's request models, as a typed body
    typed = m.ResourceInstancesFilterReq(tags=[m.MutiValueTag(key="team", values=["vision"])],
                                         matches=[m.Match(key="resource_name", value="-a")])
    resp = sdk.list_training_jobs_by_tags(m.ListTrainingJobsByTagsRequest(body=typed))
    assert [r.resource_id for r in resp.resources] == [ids["resnet-a"]] and resp.total_count == 1
    counted = m.CountResourceInstancesReq(tags=[m.CountResourceInstancesReqTags(key="env", values=["dev"])],
                                          matches=[m.CountResourceInstancesReqMatches(key="resource_name",
                                                                                      value="whisper")])
    assert sdk.count_training_jobs_by_tags(m.CountTrainingJobsByTagsRequest(body=counted)).total_count == 1


def test_filter_pages_and_count_counts_everything(server: Server, sdk: Any) -> None:
    for i in range(7):
        job = create_id(sdk, job_body(f"page-{i}", command="true"))
        _create(sdk, job, [("batch", "one")])
    create_id(sdk, job_body("untagged", command="true"))
    tagged = [{"key": "batch", "values": ["one"]}]
    pages = []
    for offset in (0, 3, 6, 9):
        resp = _filter(sdk, limit=3, offset=offset, tags=tagged)
        assert resp.total_count == 7
        pages.append([r.resource_name for r in resp.resources])
    assert pages == [["page-6", "page-5", "page-4"], ["page-3", "page-2", "page-1"], ["page-0"], []]
    assert len(_filter(sdk, tags=tagged).resources) == 7  # the default limit is 1000
    # the count is of every match: its limit and offset are checked, and page nothing
    count = sdk.count_training_jobs_by_tags(m.CountTrainingJobsByTagsRequest(limit=2, offset=5, body={"tags": tagged}))
    assert count.total_count == 7
    assert sdk.count_training_jobs_by_tags(m.CountTrainingJobsByTagsRequest(body={})).total_count == 8
    for page in ({"limit": 0}, {"limit": 1001}, {"offset": -1}):
        expect_error(lambda p=page: _filter(sdk, **p), 400, "ModelArts.2764")  # type: ignore[misc]
        expect_error(lambda p=page: sdk.count_training_jobs_by_tags(  # type: ignore[misc]
            m.CountTrainingJobsByTagsRequest(body={}, **p)), 400, "ModelArts.2764")


@pytest.mark.parametrize(("body", "words"), [
    ({"tags": [{"key": "a", "values": []}, {"key": "a", "values": ["x"]}]}, "given twice"),
    ({"tags": [{"key": "a", "values": ["x", "x"]}]}, "given twice"),
    ({"tags": [{"key": "a", "values": [str(i) for i in range(11)]}]}, "at most 10"),
    ({"tags": [{"key": f"k{i}", "values": []} for i in range(21)]}, "at most 20"),
    ({"tags": [{"key": "_sys_x", "values": []}]}, "reserved"),
    ({"tags": [{"key": "a", "values": ["b#"]}]}, "tags[0].values[0]"),
    ({"tags": {"key": "a"}}, "Invalid parameter tags"),
    ({"matches": [{"key": "resource_id", "value": "x"}]}, "resource_name"),
    ({"matches": [{"key": "resource_name", "value": ""}]}, "1 to 255"),
    ({"matches": [{"key": "resource_name", "value": "a"}, {"key": "resource_name", "value": "b"}]}, "at most 1"),
    ({"without_any_tag": "yes"}, "true or false"),
    ({"tags_any": [{"key": "a", "values": []}]}, "not a field of this operation"),
    ({"not_tags": [{"key": "a", "values": []}]}, "not a field of this operation"),
    ({"not_tags_any": [{"key": "a", "values": []}]}, "not a field of this operation"),
])
def test_bad_filters_are_refused(server: Server, sdk: Any, body: dict[str, Any], words: str) -> None:
    err = expect_error(lambda: sdk.list_training_jobs_by_tags(m.ListTrainingJobsByTagsRequest(body=body)),
                       400, "ModelArts.2788")
    assert words in err.error_msg, err.error_msg
    err = expect_error(lambda: sdk.count_training_jobs_by_tags(m.CountTrainingJobsByTagsRequest(body=body)),
                       400, "ModelArts.2788")
    assert words in err.error_msg, err.error_msg


def test_a_deleted_jobs_tags_are_gone(server: Server, sdk: Any) -> None:
    keep = create_id(sdk, job_body("keep", command="true"))
    gone = create_id(sdk, job_body("gone", command="true"))
    _create(sdk, keep, [("team", "a")])
    _create(sdk, gone, [("team", "b"), ("only", "gone")])
    assert _project_tags(sdk) == {"only": ["gone"], "team": ["a", "b"]}
    assert sdk.delete_training_job(m.DeleteTrainingJobRequest(training_job_id=gone)).status_code == 202
    # at once: no longer the job's, the project's, or a match
    expect_error(lambda: _tags(sdk, gone), 400, "ModelArts.2775")
    assert _project_tags(sdk) == {"team": ["a"]}
    assert _names(sdk, tags=[{"key": "team", "values": []}]) == ["keep"]
    # and once the job is purged, its rows are gone from the store

    def rows() -> int:
        with sqlite3.connect(server.data_dir / "openarts.db", timeout=30) as conn:
            return int(conn.execute("SELECT count(*) FROM job_tags WHERE job_id = ?", (gone,)).fetchone()[0])

    wait_for(lambda: rows() == 0, timeout=30, message="the deleted job's tags purged")
    assert _tags(sdk, keep) == [("team", "a")]
