"""Training experiments through the official SDK against a real server: the six operations, each response
checked against its SDK model; names unique per project and validated; jobs grouped in an experiment (by
id, or by name alone, which makes it), found by the search filter experiment_id, counted, and shown in the
job's document; an unknown experiment refused; an experiment that jobs use kept until they are deleted."""

from __future__ import annotations

from typing import Any

import huaweicloudsdkmodelarts.v1.model as m
import pytest

from conftest import job_body
from helpers import create_id, expect_error, is_uuid, search, show_json
from sdk_types import checked_response as _checked


def _create(sdk: Any, name: str, description: str | None = None) -> dict[str, Any]:
    body = m.CreateTrainingExperimentRequestBody(
        metadata=m.TrainingExperimentRequestMetadata(name=name, description=description))
    return _checked("create_training_experiment",
                    sdk.create_training_experiment(m.CreateTrainingExperimentRequest(body=body)), 201)


def _show(sdk: Any, experiment_id: str) -> dict[str, Any]:
    return _checked("show_training_experiment_details", sdk.show_training_experiment_details(
        m.ShowTrainingExperimentDetailsRequest(experiment_id=experiment_id)))


def _list(sdk: Any, **query: Any) -> dict[str, Any]:
    return _checked("list_training_experiments",
                    sdk.list_training_experiments(m.ListTrainingExperimentsRequest(**query)))


def _taken(sdk: Any, name: str) -> bool:
    raw = _checked("check_training_experiment",
                   sdk.check_training_experiment(m.CheckTrainingExperimentRequest(experiment_name=name)))
    return bool(raw["is_duplicate"])


def _delete(sdk: Any, experiment_id: str) -> Any:
    return sdk.delete_training_experiment(m.DeleteTrainingExperimentRequest(experiment_id=experiment_id))


def _in_experiment(job_name: str, **reference: str) -> dict[str, Any]:
    body = job_body(job_name, command="true")
    body["metadata"]["training_experiment_reference"] = reference
    return body


def test_create_list_show_change_delete(sdk: Any) -> None:
    first = _create(sdk, "exp-first", "the first")
    meta = first["metadata"]
    assert is_uuid(meta["id"]) and meta["name"] == "exp-first" and meta["description"] == "the first"
    assert meta["workspace_id"] == "0" and meta["create_time"] == meta["update_time"] > 0
    assert first["statistic"] == {"job_count": 0}
    second = _create(sdk, "exp-second")["metadata"]
    assert second["description"] == ""
    assert _show(sdk, meta["id"]) == first

    listed = _list(sdk)
    assert (listed["total"], listed["count"], listed["offset"], listed["sort_by"], listed["order"]) == \
        (2, 2, 0, "create_time", "desc")
    assert [i["metadata"]["name"] for i in listed["items"]] == ["exp-second", "exp-first"]
    by_name = _list(sdk, sort_by="name", order="asc", limit=1)
    assert (by_name["total"], by_name["count"], by_name["limit"]) == (2, 1, 1)
    assert [i["metadata"]["name"] for i in by_name["items"]] == ["exp-first"]
    assert [i["metadata"]["name"] for i in _list(sdk, sort_by="name", order="asc", offset=1)["items"]] == \
        ["exp-second"]
    assert _list(sdk, workspace_id="other")["total"] == 0

    changed = _checked("change_training_experiment", sdk.change_training_experiment(
        m.ChangeTrainingExperimentRequest(experiment_id=meta["id"], body=m.ChangeTrainingExperimentRequestBody(
            name="exp-renamed", description="changed"))))
    assert changed == {"name": "exp-renamed", "description": "changed"}
    shown = _show(sdk, meta["id"])["metadata"]
    assert (shown["name"], shown["description"]) == ("exp-renamed", "changed")
    assert shown["update_time"] >= shown["create_time"]
    only_description = sdk.change_training_experiment(m.ChangeTrainingExperimentRequest(
        experiment_id=meta["id"], body=m.ChangeTrainingExperimentRequestBody(description="again")))
    assert only_description.to_json_object() == {"name": "exp-renamed", "description": "again"}

    assert _taken(sdk, "exp-renamed") and not _taken(sdk, "exp-first")
    _checked("delete_training_experiment", _delete(sdk, meta["id"]), 202)
    expect_error(lambda: _show(sdk, meta["id"]), 400, "ModelArts.2775")
    expect_error(lambda: _delete(sdk, meta["id"]), 400, "ModelArts.2775")
    assert [i["metadata"]["id"] for i in _list(sdk)["items"]] == [second["id"]]
    assert not _taken(sdk, "exp-renamed")


def test_duplicate_and_bad_names_are_refused(sdk: Any) -> None:
    kept = _create(sdk, "exp-dup")["metadata"]
    exc = expect_error(lambda: _create(sdk, "exp-dup"), 400, "ModelArts.2751")
    assert "exp-dup" in exc.error_msg
    other = _create(sdk, "exp-other")["metadata"]
    expect_error(lambda: sdk.change_training_experiment(m.ChangeTrainingExperimentRequest(
        experiment_id=other["id"], body=m.ChangeTrainingExperimentRequestBody(name="exp-dup"))), 400, "ModelArts.2751")
    for bad in ("", "x" * 65, "has space", "semi;colon", "中文"):
        exc = expect_error(lambda bad=bad: _create(sdk, bad), 400, "ModelArts.2788")  # type: ignore[misc]
        assert "metadata.name" in exc.error_msg
    exc = expect_error(lambda: _create(sdk, "exp-long", "d" * 257), 400, "ModelArts.2788")
    assert "256" in exc.error_msg
    expect_error(lambda: _create(sdk, "exp-special", "a <b>"), 400, "ModelArts.2788")
    expect_error(lambda: sdk.change_training_experiment(m.ChangeTrainingExperimentRequest(
        experiment_id=kept["id"], body={"name": "exp-x", "colour": "red"})), 400, "ModelArts.2788")
    expect_error(lambda: sdk.change_training_experiment(m.ChangeTrainingExperimentRequest(
        experiment_id="no-such-experiment", body={"name": "exp-x"})), 400, "ModelArts.2775")
    expect_error(lambda: _list(sdk, sort_by="phase"), 400, "ModelArts.2790")
    expect_error(lambda: _list(sdk, limit=0), 400, "ModelArts.2764")
    expect_error(lambda: sdk.check_training_experiment(m.CheckTrainingExperimentRequest()), 400, "ModelArts.2764")
    assert _list(sdk)["total"] == 2, "nothing refused was made or changed"
    assert _show(sdk, other["id"])["metadata"]["name"] == "exp-other"


def test_jobs_in_an_experiment(sdk: Any) -> None:
    experiment = _create(sdk, "exp-jobs")["metadata"]
    first = create_id(sdk, _in_experiment("exp-job-1", id=experiment["id"]))
    second = create_id(sdk, _in_experiment("exp-job-2", id=experiment["id"], name="ignored-beside-an-id"))
    create_id(sdk, job_body("exp-job-outside", command="true"))

    refs = [show_json(sdk, j)["metadata"]["training_experiment_reference"] for j in (first, second)]
    assert refs == [{"name": "exp-jobs", "id": experiment["id"], "serial_number": "1"},
                    {"name": "exp-jobs", "id": experiment["id"], "serial_number": "2"}]
    assert sdk.show_training_job_details(m.ShowTrainingJobDetailsRequest(
        training_job_id=second)).metadata.training_experiment_reference.serial_number == "2"
    assert "training_experiment_reference" not in show_json(sdk, create_id(sdk, job_body("exp-none", command="true")))[
        "metadata"]
    assert _show(sdk, experiment["id"])["statistic"] == {"job_count": 2}
    assert _list(sdk)["items"][0]["statistic"] == {"job_count": 2}

    found = search(sdk, filters=[{"key": "experiment_id", "operator": "in", "value": [experiment["id"]]}])
    assert sorted(i.metadata.name for i in found.items) == ["exp-job-1", "exp-job-2"] and found.total == 2
    assert all(i.metadata.training_experiment_reference.id == experiment["id"] for i in found.items)
    outside = search(sdk, filters=[{"key": "experiment_id", "operator": "not", "value": [experiment["id"]]}])
    assert {i.metadata.name for i in outside.items} == {"exp-job-outside", "exp-none"}

    # a rename reaches the jobs' documents
    sdk.change_training_experiment(m.ChangeTrainingExperimentRequest(
        experiment_id=experiment["id"], body=m.ChangeTrainingExperimentRequestBody(name="exp-jobs-renamed")))
    assert show_json(sdk, first)["metadata"]["training_experiment_reference"]["name"] == "exp-jobs-renamed"

    # in use: refused, naming how many jobs; once they are deleted, it goes
    exc = expect_error(lambda: _delete(sdk, experiment["id"]), 409, "ModelArts.0409")
    assert "2 training jobs" in exc.error_msg
    sdk.delete_training_job(m.DeleteTrainingJobRequest(training_job_id=first))
    assert _show(sdk, experiment["id"])["statistic"] == {"job_count": 1}
    assert "1 training job:" in expect_error(lambda: _delete(sdk, experiment["id"]), 409, "ModelArts.0409").error_msg
    sdk.delete_training_job(m.DeleteTrainingJobRequest(training_job_id=second))
    assert _delete(sdk, experiment["id"]).status_code == 202
    assert search(sdk, filters=[{"key": "experiment_id", "operator": "in", "value": [experiment["id"]]}]).total == 0


def test_a_name_alone_finds_or_makes_the_experiment(sdk: Any) -> None:
    first = create_id(sdk, _in_experiment("by-name-1", name="exp-by-name", description="made by a job"))
    made = [i["metadata"] for i in _list(sdk)["items"]]
    assert [(e["name"], e["description"]) for e in made] == [("exp-by-name", "made by a job")]
    second = create_id(sdk, _in_experiment("by-name-2", name="exp-by-name"))
    refs = [show_json(sdk, j)["metadata"]["training_experiment_reference"] for j in (first, second)]
    assert refs == [{"name": "exp-by-name", "id": made[0]["id"], "serial_number": str(n)} for n in (1, 2)]
    assert _list(sdk)["total"] == 1 and _show(sdk, made[0]["id"])["statistic"] == {"job_count": 2}


@pytest.mark.parametrize(("reference", "status", "code", "words"), [
    ({"id": "no-such-experiment"}, 400, "ModelArts.2775", "no-such-experiment"),
    ({"name": "bad name"}, 400, "ModelArts.2788", "training_experiment_reference.name"),
    ({"id": 7}, 400, "ModelArts.2788", "training_experiment_reference.id"),
])
def test_a_job_naming_a_bad_experiment_is_refused(sdk: Any, reference: dict[str, Any], status: int, code: str,
                                                  words: str) -> None:
    body = job_body("exp-refused", command="true")
    body["metadata"]["training_experiment_reference"] = reference
    exc = expect_error(lambda: sdk.create_training_job(m.CreateTrainingJobRequest(body=body)), status, code)
    assert words in exc.error_msg
    assert search(sdk).total == 0 and _list(sdk)["total"] == 0, "nothing was made"


def test_experiments_belong_to_their_project(server: Any, sdk: Any) -> None:
    from helpers import sdk_client

    other = sdk_client(server, "fedcba9876543210fedcba9876543210")
    mine = _create(sdk, "exp-mine")["metadata"]
    expect_error(lambda: _show(other, mine["id"]), 400, "ModelArts.2775")
    expect_error(lambda: other.create_training_job(m.CreateTrainingJobRequest(
        body=_in_experiment("exp-foreign", id=mine["id"]))), 400, "ModelArts.2775")
    assert _list(other)["total"] == 0 and not _taken(other, "exp-mine")
    assert _create(other, "exp-mine")["metadata"]["id"] != mine["id"], "names are unique per project"
