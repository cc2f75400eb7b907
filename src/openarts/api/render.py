"""The job document (GET training-job details) assembled from the store: the wire format lives here.

Static parts (metadata, algorithm with the directories used, spec) are rendered once at creation
(`static_document`) and kept in `jobs.doc`; the status is rendered from the job row, its attempts,
its latest tasks and its node-count history on every read.
"""

from __future__ import annotations

from typing import Any

import orjson

from openarts.core.resources import Catalog, Flavor
from openarts.core.spec import JobSpec
from openarts.store.db import Record
from openarts.supervisor import workspace as ws


def flavor_info(flavor: Flavor, max_num: int) -> dict[str, Any]:
    info: dict[str, Any] = {
        "max_num": max_num,
        "cpu": {"arch": flavor.arch, "core_num": int(flavor.cpu_cores) if float(flavor.cpu_cores).is_integer()
                else flavor.cpu_cores},
        "memory": {"size": flavor.memory_gb, "unit": "GB"},
    }
    if flavor.gpus:
        info["gpu"] = {"unit_num": flavor.gpus, "product_name": flavor.gpu_product, "memory": flavor.gpu_memory}
    return info


def static_document(spec: JobSpec, job_id: str, catalog: Catalog, layout: ws.Layout) -> dict[str, Any]:
    req = spec.request
    spec_doc = dict(req["spec"])
    flavor = spec.flavor
    resource = {
        **spec_doc.get("resource", {}),
        "policy": "regular",
        "flavor_id": flavor.flavor_id,
        "flavor_name": flavor.flavor_name or flavor.flavor_id,
        "node_count": spec.node_count,
        "pool_id": spec.pool_id,
        "pool_name": spec.pool_id,
        "flavor_detail": {"flavor_type": flavor.flavor_type,
                          "flavor_info": flavor_info(flavor, catalog.max_num(flavor, spec.pool_id))},
    }
    spec_doc["resource"] = resource
    spec_doc["schedule_policy"] = {**spec_doc.get("schedule_policy", {}), "priority": spec.priority,
                                   "preemptible": spec.preemptible}
    doc: dict[str, Any] = {
        "annotations": spec.annotations,
        "algorithm": ws.document_algorithm(spec, layout),
        "spec": spec_doc,
    }
    if "endpoints" in req:
        doc["endpoints"] = req["endpoints"]
    return doc


def _running_record(a: Record) -> dict[str, Any]:
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


def job_document(row: Record, details: dict[str, list[Record]], now_ms: int) -> dict[str, Any]:
    doc = orjson.loads(row.doc)
    duration = row.run_ms + (now_ms - row.running_since_ms if row.running_since_ms else 0)
    names = [f"worker-{i}" for i in range(row.node_count)]
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
    if tasks:
        status["task_ips"] = [{"task": t.task, "ip": t.ip, "host_ip": t.ip, "schedule_count": t.seq}
                              for t in tasks]
    out: dict[str, Any] = {
        "kind": row.kind,
        "metadata": {
            "id": row.id,
            "name": row.name,
            "workspace_id": row.workspace_id,
            "description": row.description,
            "create_time": row.create_ms,
            "user_name": row.user_name,
            "annotations": doc["annotations"],
        },
        "status": status,
        "algorithm": doc["algorithm"],
        "spec": doc["spec"],
    }
    policy = doc["spec"].get("schedule_policy")
    if policy is not None:
        policy["priority"] = row.priority  # may have changed since creation (PUT while pending)
    if "endpoints" in doc:
        out["endpoints"] = doc["endpoints"]
    return out
