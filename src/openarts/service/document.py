"""The job document (GET training-job details) assembled from the store: the wire format lives here.

Static parts (metadata, algorithm with the directories used, spec) are rendered once at creation
(`static_document`) and kept in `jobs.doc`; a PUT may change some of them (service/update.py). The
status is rendered from the job row, its attempts, its latest tasks and its node-count history on
every read.

Every field comes from a real source (the request, the catalog, the store) or is left out, as
ModelArts leaves out what does not apply; values have the types the official SDK's response models
declare (tests/test_api_fidelity.py checks both).
"""

from __future__ import annotations

from typing import Any

import orjson

from openarts.core.layout import Layout, document_algorithm
from openarts.core.resources import Catalog, Engine, Flavor
from openarts.core.roles import task_names
from openarts.core.spec import JobSpec, Role
from openarts.service.search import search_status
from openarts.store.queries import Details
from openarts.store.rows import AttemptRow, JobRow


def flavor_info(flavor: Flavor, max_num: int) -> dict[str, Any]:
    cpu: dict[str, Any] = {"arch": flavor.arch}
    if float(flavor.cpu_cores).is_integer():  # the SDK types core_num as an integer: a fraction is left out
        cpu["core_num"] = int(flavor.cpu_cores)
    info: dict[str, Any] = {
        "max_num": max_num,
        "cpu": cpu,
        # whole GB as ModelArts lists them; a configured flavor below or between GB in MB (size is an integer)
        "memory": ({"size": flavor.memory_mb // 1024, "unit": "GB"} if flavor.memory_mb % 1024 == 0
                   else {"size": flavor.memory_mb, "unit": "MB"}),
    }
    if flavor.gpus:
        gpu: dict[str, Any] = {"unit_num": flavor.gpus}
        if flavor.gpu_product:
            gpu["product_name"] = flavor.gpu_product
        if flavor.gpu_memory:
            gpu["memory"] = flavor.gpu_memory
        info["gpu"] = gpu
    return info


def engine_block(engine: Engine, requested: dict[str, Any] | None = None) -> dict[str, Any]:
    """The engine as the catalog knows it, whichever way the request named it (id, or name and version);
    a custom image as requested, with the names it was given; an engine that is an image, with it."""
    block = dict(requested or {})
    if engine.engine_id:
        block.update(engine_id=engine.engine_id, engine_name=engine.engine_name,
                     engine_version=engine.engine_version)
    if engine.image_url:
        block["image_url"] = engine.image_url
    return block


def _channel(item: dict[str, Any], local_dir: str, output: bool) -> dict[str, Any]:
    """A role's input or output channel as the SDK's AlgorithmInput / AlgorithmOutput has it."""
    remote = item.get("remote") or {}
    url = (remote.get("obs") or {}).get("obs_url") or (remote.get("dataset") or {}).get("obs_url")
    out: dict[str, Any] = {"name": item["name"], "local_dir": local_dir, "remote": {"obs": {"obs_url": url}}}
    if output:
        out["mode"] = item.get("mode") or "upload_periodically"
        if item.get("period") is not None:
            out["period"] = str(item["period"])
    return out


def task_document(role: Role, lay: Layout, catalog: Catalog) -> dict[str, Any]:
    """A heterogeneous job's role (tasks[] of the response, the SDK's TaskResponse): its algorithm with the
    directories used, and its flavor. The response holds one input and one output channel per role (the
    SDK's model has an object, not a list): the first of each."""
    spec = role.spec
    given = spec.request["algorithm"]
    algo = document_algorithm(spec, lay)
    algorithm: dict[str, Any] = {"engine": engine_block(spec.engine, given.get("engine")),
                                 "working_dir": algo["working_dir"], "environments": spec.environments}
    if spec.code_dir:
        algorithm["code_dir"] = spec.code_dir
        algorithm["local_code_dir"] = algo["local_code_dir"]
    if spec.code_dir and spec.boot_file:
        algorithm["boot_file"] = spec.code_dir.rstrip("/") + "/" + spec.boot_file
    for key, dirs in (("inputs", lay.inputs), ("outputs", lay.outputs)):
        if dirs:
            algorithm[key] = _channel(given[key][0], lay.seen(dirs[0].local), key == "outputs")
    flavor = spec.flavor
    max_num = catalog.max_num(flavor, spec.pool_id)
    resource: dict[str, Any] = {"pool_id": spec.pool_id, "flavor_id": flavor.flavor_id, "max_num": max_num,
                                "flavor_type": flavor.flavor_type, "flavor_info": flavor_info(flavor, max_num)}
    if flavor.flavor_name:
        resource["flavor_name"] = flavor.flavor_name
    out: dict[str, Any] = {"role": role.name, "algorithm": algorithm, "task_resource": resource}
    if spec.log_export_url:
        out["log_export_path"] = {"obs_url": spec.log_export_url}
    return out


def static_document(spec: JobSpec, job_id: str, catalog: Catalog, layouts: list[tuple[Role, Layout]]
                    ) -> dict[str, Any]:
    """`layouts`: each role's (core/layout.py role_layouts). A heterogeneous job's document has its roles
    (tasks[]) in place of algorithm and spec, as its request has."""
    req = spec.request
    if spec.roles:
        doc: dict[str, Any] = {"annotations": spec.annotations,
                               "tasks": [task_document(role, lay, catalog) for role, lay in layouts]}
        if "endpoints" in req:
            doc["endpoints"] = req["endpoints"]
        return doc
    layout = layouts[0][1]
    spec_doc = dict(req["spec"])
    flavor = spec.flavor
    resource = {
        **spec_doc.get("resource", {}),
        "flavor_id": flavor.flavor_id,
        "node_count": spec.node_count,
        "pool_id": spec.pool_id,
        "flavor_detail": {"flavor_type": flavor.flavor_type,
                          "flavor_info": flavor_info(flavor, catalog.max_num(flavor, spec.pool_id))},
    }
    if flavor.flavor_name:
        resource["flavor_name"] = flavor.flavor_name
    spec_doc["resource"] = resource
    spec_doc["schedule_policy"] = {**spec_doc.get("schedule_policy", {}), "priority": spec.priority,
                                   "preemptible": spec.preemptible}
    algorithm = document_algorithm(spec, layout)
    algorithm["engine"] = engine_block(spec.engine, req["algorithm"].get("engine"))
    doc = {
        "annotations": spec.annotations,
        "algorithm": algorithm,
        "spec": spec_doc,
    }
    if "endpoints" in req:
        doc["endpoints"] = req["endpoints"]
    return doc


def _running_record(a: AttemptRow) -> dict[str, Any]:
    rec: dict[str, Any] = {"start_at": a.start_at, "start_type": a.start_type}
    if a.end_at:
        rec["end_at"] = a.end_at
        rec["end_reason"] = a.end_reason
        if a.end_related_task:
            rec["end_related_task"] = a.end_related_task
        if a.end_recover:
            rec["end_recover"] = a.end_recover
        if a.end_recover_before_downgrade:
            rec["end_recover_before_downgrade"] = a.end_recover_before_downgrade
    records = orjson.loads(a.recover_records)
    if records:
        rec["recover_records"] = records
    return rec


def job_document(row: JobRow, details: Details, now_ms: int) -> dict[str, Any]:
    doc = orjson.loads(row.doc)
    duration = row.run_ms + (now_ms - row.running_since_ms if row.running_since_ms else 0)
    names = task_names(row.shapes())
    tasks = details["tasks"]
    if tasks:
        task_statuses = []
        for t in tasks:
            st: dict[str, Any] = {"task": t.task}
            if t.exit_code is not None:
                st["exit_code"] = t.exit_code
            if t.message:
                st["message"] = t.message
            task_statuses.append(st)
    elif row.message:
        task_statuses = [{"task": n, "message": row.message} for n in names]
    else:
        task_statuses = []
    status: dict[str, Any] = {
        "phase": row.phase,
        "secondary_phase": row.secondary_phase,
        "duration": duration,
        "start_time": row.start_ms,
        "node_count_metrics": [[n.time_ms, n.count] for n in details["node_counts"]],
        "tasks": names,
        "task_statuses": task_statuses,
        "running_records": [_running_record(a) for a in details["attempts"]],
    }
    if tasks:  # host_ip is left out: the local executor knows one address per worker, not a host behind it
        status["task_ips"] = [{"task": t.task, "ip": t.ip, "schedule_count": t.seq} for t in tasks]
    notes: dict[str, str] = {}
    if "trials" in details:  # a search: its tasks are its trials (service/search.py)
        status["tasks"], status["task_statuses"], notes = search_status(row, details["trials"])
    metadata: dict[str, Any] = {
        "id": row.id,
        "name": row.name,
        "workspace_id": row.workspace_id,
        "description": row.description,
        "create_time": row.create_ms,
        "user_name": row.user_name,
    }
    if doc["annotations"] or notes:
        metadata["annotations"] = {**doc["annotations"], **notes}
    if "training_experiment_reference" in doc:  # {name, id, serial_number}: service/experiments.py join()
        metadata["training_experiment_reference"] = doc["training_experiment_reference"]
    out: dict[str, Any] = {"kind": row.kind, "metadata": metadata, "status": status}
    for key in ("algorithm", "tasks", "spec"):  # a plain job's algorithm and spec; a heterogeneous job's tasks
        if key in doc:
            out[key] = doc[key]
    policy = doc.get("spec", {}).get("schedule_policy")
    if policy is not None:  # both may change after creation (PUT)
        policy["priority"] = row.priority
        policy["preemptible"] = bool(row.preemptible)
    if doc.get("endpoints"):
        out["endpoints"] = doc["endpoints"]
    return out
