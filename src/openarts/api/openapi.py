"""The OpenAPI description served at /openapi.json, built from the route table."""

from __future__ import annotations

import re
from typing import Any

from starlette.routing import Route

_ERROR = {
    "type": "object",
    "properties": {"error_code": {"type": "string"}, "error_msg": {"type": "string"}},
    "required": ["error_code", "error_msg"],
}

_SUMMARY = {
    "create_job": "Create a training job",
    "show_job": "Query the details of a training job",
    "search_jobs": "List training jobs",
    "update_job": "Modify the description of a training job",
    "delete_job": "Delete a training job",
    "batch_delete": "Delete training jobs in batches",
    "job_action": "Terminate a training job",
    "list_tasks": "List the tasks of a training job",
    "log_preview": "Preview the log of a task",
    "log_lines": "Read the log of a task by lines",
    "job_events": "List the events of a training job",
    "job_metrics": "Query the CPU and memory usage of a task",
    "job_stages": "List the stages of each running record",
    "flavors": "List training flavors",
    "engines": "List training engines",
    "job_names": "Check whether a job name is taken",
    "show_quotas": "Show the project's training quotas",
    "modify_quotas": "Modify the project's training quotas",
    "health": "Service health",
    "openapi": "This document",
}

_BODIES = {"create_job", "search_jobs", "update_job", "batch_delete", "job_action", "modify_quotas"}


def build_openapi(routes: list[Route], version: str) -> dict[str, Any]:
    paths: dict[str, dict[str, Any]] = {}
    for route in routes:
        name = route.endpoint.__name__
        params = [{"name": p, "in": "path", "required": True, "schema": {"type": "string"}}
                  for p in re.findall(r"{(\w+)}", route.path)]
        for method in sorted((route.methods or set()) - {"HEAD"}):
            op: dict[str, Any] = {
                "operationId": name,
                "summary": _SUMMARY.get(name, name),
                "parameters": params,
                "responses": {
                    "default": {"description": "ModelArts error",
                                "content": {"application/json": {"schema": _ERROR}}},
                    "2XX": {"description": "Success"},
                },
            }
            if name in _BODIES:
                op["requestBody"] = {"required": name != "search_jobs",
                                     "content": {"application/json": {"schema": {"type": "object"}}}}
            paths.setdefault(route.path, {})[method.lower()] = op
    return {
        "openapi": "3.0.3",
        "info": {"title": "openarts: ModelArts Training v2 API", "version": version},
        "paths": paths,
    }
