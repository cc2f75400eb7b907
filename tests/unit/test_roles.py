"""A heterogeneous job's roles (core/roles.py, core/spec.py): parsing tasks[] into one spec per role, the
stored request parsed again to the same job, task names and indexes, field paths in errors, and the
scheduler's gang placement of every role at once."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest

from openarts.core import errors
from openarts.core.resources import build_catalog
from openarts.core.roles import Shape, encode, env_name, shape_at, shapes, task_index, task_names
from openarts.core.spec import parse_job
from openarts.scheduler.plan import Demand, NodeFree, PendingJob, can_ever_fit, plan

CATALOG = build_catalog({"nodes": [{"name": "local", "cpu_cores": 64, "memory_gb": 1024}]})
FLAVOR = "modelarts.local.cpu.1u"


def _body() -> dict[str, Any]:
    return {"kind": "job", "metadata": {"name": "rl"}, "tasks": [
        {"role": "learner", "algorithm": {"code_dir": "/code/learner", "boot_file": "main.py",
                                          "job_config": {"parameters": [{"name": "lr", "value": 0.1}]}},
         "task_resource": {"flavor_id": "modelarts.local.cpu.2u", "node_count": 1}},
        {"role": "actor", "algorithm": {"command": "python actor.py", "environments": {"A": "1"},
                                        "outputs": [{"name": "out", "remote": {"obs": {"obs_url": "obs://b/o/"}}}]},
         "task_resource": {"flavor_id": FLAVOR, "node_count": 2},
         "log_export_path": {"obs_url": "obs://b/logs/"}}]}


def test_each_role_is_parsed_as_a_job_of_its_own() -> None:
    spec = parse_job(_body(), CATALOG)
    assert spec.node_count == 3 and spec.task_names() == ["learner-0", "actor-0", "actor-1"]
    learner, actor = spec.roles
    assert (learner.name, learner.first, learner.spec.boot_file, learner.spec.parameters) == (
        "learner", 0, "main.py", [("lr", "0.1")])
    assert (actor.name, actor.first, actor.spec.command, actor.spec.environments) == (
        "actor", 1, "python actor.py", {"A": "1"})
    assert actor.spec.log_export_url == "obs://b/logs/" and spec.log_export_url is None
    assert [c.name for c in actor.spec.outputs] == ["out"] and not learner.spec.outputs
    assert [spec.role_at(i).name for i in range(3)] == ["learner", "actor", "actor"]
    assert spec.shapes() == (Shape("learner", "modelarts.local.cpu.2u", 1), Shape("actor", FLAVOR, 2))
    assert "spec" not in spec.request and "algorithm" not in spec.request
    again = parse_job(json.loads(json.dumps(spec.request)), CATALOG)  # as the store gives it back
    assert again.request == spec.request and again.shapes() == spec.shapes()
    assert again.roles[0].spec.parameters == [("lr", "0.1")]


def test_a_plain_job_is_one_worker_role() -> None:
    spec = parse_job({"kind": "job", "metadata": {"name": "p"}, "algorithm": {"command": "true"},
                      "spec": {"resource": {"flavor_id": FLAVOR, "node_count": 2}}}, CATALOG)
    assert spec.roles == () and [r.name for r in spec.role_list()] == ["worker"]
    assert spec.task_names() == ["worker-0", "worker-1"] and spec.role_at(1).spec is spec


@pytest.mark.parametrize("change, error, fragment", [
    (lambda b: b["tasks"].clear(), errors.InvalidRequest, "tasks: must be a non-empty array"),
    (lambda b: b["tasks"][1].update(role="actor-"), errors.InvalidRequest, "tasks[1].role"),
    (lambda b: b["tasks"][1].update(role="a" * 33), errors.InvalidRequest, "tasks[1].role"),
    (lambda b: b["tasks"][0]["algorithm"].update(engine={"engine_id": "nope"}), errors.EngineNotFound, "tasks[0]"),
    (lambda b: b["tasks"][1]["algorithm"].update(environments={"A": "$B"}), errors.InvalidRequest,
     "tasks[1].algorithm.environments.A"),
    (lambda b: b["tasks"][1]["algorithm"]["outputs"][0].update(remote={}), errors.InputsOutputsError,
     "tasks[1].algorithm.outputs[0].remote"),
    (lambda b: b["tasks"][1]["task_resource"].update(pool_id="other"), errors.InvalidRequest,
     "tasks[1].task_resource.pool_id"),
    (lambda b: b["tasks"][1].update(log_export_path={"obs_url": "bad"}), errors.InvalidObsPath,
     "tasks[1].log_export_path.obs_url"),
    (lambda b: b["tasks"][0]["algorithm"].update(summary={"log_type": "tensorboard"}), errors.InvalidRequest,
     "tasks[0].algorithm.summary"),
])
def test_errors_name_the_role_field(change: Any, error: type[Exception], fragment: str) -> None:
    body = copy.deepcopy(_body())
    change(body)
    with pytest.raises(error) as info:
        parse_job(body, CATALOG)
    assert fragment in str(info.value)


def test_names_indexes_and_shapes_from_the_row() -> None:
    roles = shapes(encode([Shape("ps", "f1", 1), Shape("worker", "f2", 2)]), "ignored", 3)
    assert task_names(roles) == ["ps-0", "worker-0", "worker-1"]
    assert [task_index(roles, t) for t in ("ps-0", "worker-1", "worker-2", "ps-1", "chief-0", "worker-01")] == [
        0, 2, None, None, None, None]
    assert shape_at(roles, 2) == (Shape("worker", "f2", 2), 1)
    assert shapes("", "f", 4) == (Shape("worker", "f", 4),)
    assert task_index(shapes("", "f", 1), "param-server-0") is None
    assert task_index((Shape("param-server", "f", 1),), "param-server-0") == 0
    assert env_name("param-server") == "PARAM_SERVER"


def _node(name: str, cpus: int) -> NodeFree:
    return NodeFree(name, "pool", "10.0.0.1", cpus * 1000, 64 * 1024)


BIG, SMALL = Demand(2000, 1024, 0), Demand(1000, 1024, 0)


def test_every_role_is_placed_at_once_or_none_is() -> None:
    job = PendingJob("rl", "pool", BIG, 1, 1, 1, more=((SMALL, 2),))
    assert job.worker_demands() == [BIG, SMALL, SMALL] and job.total() == Demand(4000, 3072, 0)
    p = plan([job], [_node("n0", 3)])  # 3 cores: the learner fits, the actors would not all
    assert p.placements == [] and "2 CPU" in p.waiting["rl"].message and "1 CPU" in p.waiting["rl"].message
    p = plan([job], [_node("n0", 2), _node("n1", 2)])
    (placed,) = p.placements
    assert [w.node for w in placed.workers] == ["n0", "n1", "n1"]  # in task order: learner-0, actor-0, actor-1
    assert not can_ever_fit(job, [_node("n0", 3)]) and can_ever_fit(job, [_node("n0", 4)])


def test_spread_puts_every_task_of_every_role_on_its_own_node() -> None:
    job = PendingJob("rl", "pool", SMALL, 1, 1, 1, spread=True, more=((SMALL, 2),))
    assert plan([job], [_node("n0", 8), _node("n1", 8)]).placements == []
    (placed,) = plan([job], [_node(f"n{i}", 8) for i in range(3)]).placements
    assert len({w.node for w in placed.workers}) == 3


def test_roles_are_placed_largest_first_whatever_their_order() -> None:
    """First fit in the given order would put the small role on the big node and leave no room for the big
    role; the placements still come back in task order."""
    job = PendingJob("rl", "pool", Demand(2000, 1024, 0), 1, 1, 1, more=((Demand(4000, 1024, 0), 1),))
    nodes = [NodeFree("big", "pool", "10.0.0.1", 4000, 64 * 1024), NodeFree("small", "pool", "10.0.0.2", 2000,
                                                                             64 * 1024)]
    assert can_ever_fit(job, nodes)
    (placed,) = plan([job], nodes).placements
    assert [w.node for w in placed.workers] == ["small", "big"]


def test_roles_whose_variables_would_collide_are_refused() -> None:
    body = _body()
    body["tasks"][0]["role"], body["tasks"][1]["role"] = "ps-a", "ps_a"
    with pytest.raises(errors.InvalidRequest, match=r"tasks\[1\].role.*VC_PS_A_HOSTS"):
        parse_job(body, CATALOG)


def test_values_quoted_in_a_message_keep_their_text() -> None:
    body = _body()
    body["tasks"][0]["algorithm"]["code_dir"] = "rel/algorithm.d"
    with pytest.raises(errors.CodeDirError) as info:
        parse_job(body, CATALOG)
    assert "tasks[0].algorithm.code_dir 'rel/algorithm.d'" in str(info.value)
    body = _body()
    body["metadata"]["name"] = "bad name"
    with pytest.raises(errors.InvalidRequest) as bad:
        parse_job(body, CATALOG)
    assert str(bad.value).startswith("Invalid parameter metadata.name")
