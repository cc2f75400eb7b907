"""The OpenAPI description served at /openapi.json, built from the route table, with the request and
response schemas of each operation (what the property-based fuzz run checks responses against).

Schemas are deliberately open (extra properties allowed): they pin what clients rely on - types,
required fields, enums, the error shape - not every field ModelArts may add.
"""

from __future__ import annotations

import re
from typing import Any

from starlette.routing import Route

JSON = "application/json"

_ERROR: dict[str, Any] = {
    "type": "object",
    "properties": {"error_code": {"type": "string", "pattern": r"^(ModelArts|APIGW)\.\d{4}$"},
                   "error_msg": {"type": "string", "minLength": 1}, "request_id": {"type": "string"}},
    "required": ["error_code", "error_msg"],
}

_STR = {"type": "string"}
_INT = {"type": "integer"}
_STR_MAP = {"type": "object", "additionalProperties": {"type": "string"}}


def _obj(props: dict[str, Any], required: list[str] | None = None) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "object", "properties": props}
    if required:
        schema["required"] = required
    return schema


def _arr(items: dict[str, Any], max_items: int | None = None) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "array", "items": items}
    if max_items is not None:
        schema["maxItems"] = max_items
    return schema


_CHANNEL = _obj({"name": {"type": "string", "pattern": "^[A-Za-z0-9_-]{1,64}$"}, "local_dir": _STR,
                 "remote": _obj({"obs": _obj({"obs_url": {"type": "string", "pattern": "^obs://[a-z0-9-]+/"}},
                                             ["obs_url"])}, ["obs"])}, ["name", "remote"])

# a training experiment's name and description (core/experiments.py)
_EXPERIMENT_NAME = {"type": "string", "pattern": "^[A-Za-z0-9_-]{1,64}$"}
_EXPERIMENT_DESCRIPTION = {"type": "string", "maxLength": 256, "pattern": "^[^!<>=&\"']*$"}

JOB_REQUEST = _obj({
    "kind": {"type": "string", "enum": ["job"]},
    "metadata": _obj({"name": {"type": "string", "pattern": "^[A-Za-z0-9_-]{1,64}$"},
                      "description": {"type": "string", "maxLength": 256},
                      "workspace_id": _STR, "annotations": _STR_MAP,
                      "training_experiment_reference": _obj({"id": {"type": "string", "maxLength": 64},
                                                             "name": _EXPERIMENT_NAME,
                                                             "description": _EXPERIMENT_DESCRIPTION})}, ["name"]),
    "algorithm": _obj({
        "command": {"type": "string", "minLength": 1, "maxLength": 4096},
        "parameters": _arr(_obj({"name": {"type": "string", "pattern": "^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$"},
                                 "value": _STR}, ["name", "value"]), 500),
        "environments": {"type": "object", "maxProperties": 100,
                         "additionalProperties": {"type": "string", "pattern": r"^[^$\x00]*$"}},
        "inputs": _arr(_CHANNEL, 100), "outputs": _arr(_CHANNEL, 100),
        "engine": _obj({"engine_id": _STR, "engine_name": _STR, "engine_version": _STR}),
    }, ["command"]),
    "spec": _obj({"resource": _obj({"flavor_id": _STR, "node_count": {"type": "integer", "minimum": 1}},
                                   ["flavor_id", "node_count"]),
                  "schedule_policy": _obj({"priority": {"type": "integer", "minimum": 1, "maximum": 3},
                                           "preemptible": {"type": "boolean"}})}, ["resource"]),
    # a heterogeneous job (docs/HETEROGENEOUS.md): its roles in place of algorithm and spec
    # (the role's pattern is looser than core/roles.py ROLE_RE, which has a look-ahead: the server says the rest)
    "tasks": _arr(_obj({"role": {"type": "string", "pattern": "^[a-z][a-z0-9_-]{0,31}$"},
                        "algorithm": {"type": "object"},
                        "task_resource": _obj({"flavor_id": _STR, "node_count": {"type": "integer", "minimum": 1},
                                               "pool_id": _STR}, ["flavor_id"]),
                        "log_export_path": _obj({"obs_url": _STR})}, ["role", "algorithm", "task_resource"]), 16),
}, ["kind", "metadata"])

JOB = _obj({
    "kind": _STR,
    "metadata": _obj({"id": _STR, "name": _STR, "description": _STR, "create_time": _INT, "user_name": _STR,
                      "workspace_id": _STR, "annotations": {"type": "object"}}, ["id", "name", "create_time"]),
    "status": _obj({"phase": {"type": "string", "enum": ["Creating", "Pending", "Running", "Failed", "Completed",
                                                         "Terminating", "Terminated", "Abnormal"]},
                    "secondary_phase": _STR, "duration": _INT, "tasks": _arr(_STR),
                    "task_statuses": _arr(_obj({"task": _STR, "exit_code": _INT, "message": _STR}))}, ["phase"]),
    "algorithm": {"type": "object"}, "spec": {"type": "object"}, "tasks": _arr({"type": "object"}),
}, ["kind", "metadata", "status"])

SEARCH_REQUEST = _obj({
    "offset": {"type": "integer", "minimum": 0, "maximum": 10**9},
    "limit": {"type": "integer", "minimum": 1, "maximum": 50}, "group_by": _STR, "workspace_id": _STR,
    "sort_by": {"type": "string", "enum": ["create_time", "name", "phase", "update_time"]},
    "order": {"type": "string", "enum": ["asc", "desc"]},
    "filters": _arr(_obj({"key": {"type": "string", "enum": ["name", "phase", "create_time", "kind"]},
                          "operator": {"type": "string", "enum": ["like", "in", "between", "not"]},
                          "value": _arr(_STR, 100)}, ["key", "operator", "value"]), 20),
})

# What a PUT may change (service/update.py); anything else is refused.
UPDATE_REQUEST = {**_obj({
    "description": {"type": "string", "maxLength": 256},
    "spec": {**_obj({"schedule_policy": {**_obj({"priority": {"type": "integer", "minimum": 1, "maximum": 3},
                                                 "preemptible": {"type": "boolean"}}),
                                         "additionalProperties": False},
                     "notification": {**_obj({"topic_urn": _STR, "events": _arr(_STR, 100)}),
                                      "additionalProperties": False}}),
             "additionalProperties": False},
    "endpoints": {**_obj({"ssh": {**_obj({"key_pair_names": _arr(_STR, 100)}), "additionalProperties": False}}),
                  "additionalProperties": False},
    "metadata": {**_obj({"annotation": _STR_MAP}), "additionalProperties": False},
}), "additionalProperties": False}

_QUOTA_RESOURCES = ("running_jobs", "cpu_cores", "gpus")
_QUOTAS = _obj({"quotas": _arr(_obj({"resource": _STR, "quota": _INT, "used": _INT}, ["resource", "quota"]))},
               ["quotas"])

# An openarts extension to the two log operations (ModelArts has no such parameter; without it they read
# the latest attempt, as ModelArts does).
_ATTEMPT = {"type": "integer", "minimum": 1,
            "description": "openarts extension: read this attempt's log (its number, as the task list's "
                           "schedule_count; 1 is the first) instead of the latest attempt's."}

_TABLE = _obj({"header": _arr(_STR), "data": _arr(_arr(_STR))}, ["header", "data"])

_TAG = _obj({"key": _STR, "value": _STR}, ["key", "value"])
_TAG_KEY = {"type": "string", "minLength": 1, "maxLength": 128}
_TAG_IN = _obj({"key": _TAG_KEY, "value": {"type": "string", "maxLength": 255}}, ["key"])
_TAG_PAGE = [("limit", {"type": "integer", "minimum": 1, "maximum": 1000}, False),
             ("offset", {"type": "integer", "minimum": 0, "maximum": 10**9}, False)]
_TAG_FILTER = _obj({
    "workspace_id": _STR, "without_any_tag": {"type": "boolean"},
    "tags": _arr(_obj({"key": _TAG_KEY, "values": _arr({"type": "string", "maxLength": 255}, 10)}, ["key"]), 20),
    "matches": _arr(_obj({"key": {"type": "string", "enum": ["resource_name"]},
                          "value": {"type": "string", "minLength": 1, "maxLength": 255}}, ["key", "value"]), 1)})

# training experiments (core/experiments.py)
_EXPERIMENT = _obj({
    "metadata": _obj({"id": _STR, "name": _STR, "description": _STR, "workspace_id": _STR, "create_time": _INT,
                      "update_time": _INT}, ["id", "name", "create_time", "update_time"]),
    "statistic": _obj({"job_count": _INT}, ["job_count"])}, ["metadata", "statistic"])

# algorithms (core/algorithms.py): the SDK's Algorithm in, AlgorithmResponse out
_ALGORITHM_IN = _obj({
    "metadata": _obj({"name": {"type": "string", "pattern": "^[A-Za-z0-9_-]{1,64}$"},
                      "description": {"type": "string", "maxLength": 256}, "workspace_id": _STR, "ai_project": _STR},
                     ["name"]),
    "job_config": _obj({"code_dir": _STR, "boot_file": _STR, "command": _STR, "engine": {"type": "object"},
                        "parameters": _arr(_obj({"name": _STR, "value": _STR, "description": _STR,
                                                 "constraint": {"type": "object"}}, ["name"]), 500),
                        "inputs": _arr({"type": "object"}, 100), "outputs": _arr({"type": "object"}, 100),
                        "parameters_customization": {"type": "boolean"}}),
    "resource_requirements": _arr(_obj({"key": _STR, "values": _arr(_STR), "operator": _STR}, ["key"])),
    "advanced_config": {"type": "object"}}, ["metadata", "job_config"])
_ALGORITHM = _obj({
    "metadata": _obj({"id": _STR, "name": _STR, "description": _STR, "workspace_id": _STR, "ai_project": _STR,
                      "user_name": _STR, "version_num": _INT, "create_time": _INT, "update_time": _INT},
                     ["id", "name", "create_time"]),
    "job_config": {"type": "object"}, "resource_requirements": _arr({"type": "object"}),
    "advanced_config": {"type": "object"}}, ["metadata", "job_config"])

_SCHEMAS: dict[str, dict[str, Any]] = {
    # operation -> {"body": request schema, "ok": (status, response schema or None), "query": [...]}
    "create_job": {"body": JOB_REQUEST, "ok": ("201", JOB)},
    "show_job": {"ok": ("200", JOB)},
    "search_jobs": {"body": SEARCH_REQUEST, "ok": ("200", _obj({
        "total": _INT, "count": _INT, "limit": _INT, "offset": _INT, "items": _arr(JOB)},
        ["total", "count", "items"]))},
    "update_job": {"body": UPDATE_REQUEST, "ok": ("200", None)},
    "delete_job": {"ok": ("202", None)},
    "batch_delete": {"body": _obj({"jobs": _arr(_obj({"kind": _STR, "metadata": _obj({"id": _STR}, ["id"])},
                                                    ["metadata"]), 1000)}, ["jobs"]), "ok": ("202", None)},
    "job_action": {"body": _obj({"action_type": {"type": "string", "enum": ["terminate"]}}, ["action_type"]),
                   "ok": ("202", JOB)},
    "list_tasks": {"query": [("schedule_count", {"type": "integer", "minimum": 0, "maximum": 2**63 - 1}, False)],
                   "ok": ("200", _arr(_obj({"task": _STR, "ip": _STR, "schedule_count": _INT})))},
    "log_preview": {"query": [("attempt", _ATTEMPT, False)],
                    "ok": ("200", _obj({"content": _STR, "current_size": _INT, "full_size": _INT},
                                       ["content", "current_size", "full_size"]))},
    "log_lines": {"query": [("base_line", {"type": "integer", "minimum": -2**63, "maximum": 2**63 - 1}, False),
                            ("lines", {"type": "integer", "minimum": 1, "maximum": 10000}, False),
                            ("order", {"type": "string", "enum": ["asc", "desc"]}, False),
                            ("attempt", _ATTEMPT, False)],
                  "ok": ("200", _obj({"start_line": _STR, "end_line": _STR, "lines": _INT, "content": _STR},
                                     ["content"]))},
    "job_events": {"query": [("offset", {"type": "integer", "minimum": 0, "maximum": 10**9}, False),
                             ("limit", {"type": "integer", "minimum": 1, "maximum": 1000}, False),
                             ("start_time", {"type": "integer", "minimum": 0, "maximum": 10**14}, False),
                             ("end_time", {"type": "integer", "minimum": 0, "maximum": 10**14}, False),
                             ("order", {"type": "string", "enum": ["asc", "desc"]}, False),
                             ("level", _STR, False), ("pattern", _STR, False)],
                   "ok": ("200", _obj({"total": _INT, "start_time": _STR, "end_time": _STR, "events": _arr(_obj(
                       {"message": _STR, "level": _STR, "time": _STR, "source": _STR}))}, ["events"]))},
    "job_metrics": {"ok": ("200", _obj({"metrics": _arr(_obj({"metric": _STR, "value": _arr({"type": "number"})}))},
                                       ["metrics"]))},
    "job_stages": {"ok": ("200", _obj({"total_count": _INT, "running_records": _arr({"type": "object"})}))},
    "route_plan": {"ok": ("200", _obj({"job_id": _STR, "status": {"type": "string", "enum": ["success", "failed"]},
                                       "rank_mapping": _STR}, ["job_id", "status", "rank_mapping"]))},
    "task_report": {"body": _obj({"type": {"type": "string", "pattern": "^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"}},
                                 ["type"]), "ok": ("200", None)},
    "event_categories": {"query": [("flavor_type", {"type": "string", "enum": ["CPU", "GPU", "Ascend"]}, False)],
                         "ok": ("200", _obj({"event-categories": _arr(_obj(
                             {"id": _STR, "name": _STR, "description": _STR, "notification": {"type": "boolean"}},
                             ["id", "name", "notification"]))}, ["event-categories"]))},
    "flavor_resources": {"query": [("flavor_id", {"type": "string", "minLength": 1}, True), ("pool_id", _STR, False)],
                         "ok": ("200", _obj({"cpu_core_num": _INT, "mem_size": _INT}, ["cpu_core_num", "mem_size"]))},
    "flavors": {"query": [("flavor_type", {"type": "string", "enum": ["CPU", "GPU", "Ascend"]}, False)],
                "ok": ("200", _obj({"total_count": _INT, "flavors": _arr(_obj(
                    {"flavor_id": _STR, "support_engines": _STR, "max_num": _INT}, ["flavor_id"]))}, ["flavors"]))},
    "engines": {"ok": ("200", _obj({"total": _INT, "items": _arr(_obj({"engine_id": _STR}, ["engine_id"]))},
                                   ["items"]))},
    "job_names": {"query": [("job_name", {"type": "string", "minLength": 1}, True)],
                  "ok": ("200", _obj({"is_duplicate": {"type": "boolean"}}, ["is_duplicate"]))},
    "show_quotas": {"query": [("resource", {"type": "string", "enum": list(_QUOTA_RESOURCES)}, False)],
                    "ok": ("200", _QUOTAS)},
    "modify_quotas": {"body": _obj({"quotas": _arr(_obj({
        "resource": {"type": "string", "enum": list(_QUOTA_RESOURCES)},
        "quota": {"type": "integer", "minimum": -1, "maximum": 10**9}}, ["resource", "quota"]), 3)}, ["quotas"]),
        "ok": ("200", _QUOTAS)},
    # hyperparameter search (service/search.py, docs/AUTOSEARCH.md): a table is {header, data} of strings
    "search_algorithms": {"ok": ("200", _obj({"search_algo_count": _INT, "search_algo_list": _arr(_obj(
        {"name": _STR, "description": _STR, "params": _arr(_obj({"key": _STR, "value": _STR, "type": _STR}))},
        ["name", "params"]))}, ["search_algo_count", "search_algo_list"]))},
    "autosearch_templates": {"ok": ("200", _obj({"yaml_templates": _arr(_obj(
        {"algorithm_type_en": _STR, "algorithm_type_zh": _STR, "algorithm_names": _arr(_STR)}))},
        ["yaml_templates"]))},
    "autosearch_template": {"ok": ("200", _obj({"file_name": _STR, "content": _STR}, ["file_name", "content"]))},
    "autosearch_trials": {"query": [("limit", {"type": "integer", "minimum": 1, "maximum": 1000}, False),
                                    ("offset", {"type": "integer", "minimum": 0, "maximum": 10**9}, False)],
                          "ok": ("200", _obj({"total": _INT, "count": _INT, "limit": _INT, "offset": _INT,
                                              "group_by": _STR, "items": _TABLE}, ["total", "items"]))},
    "autosearch_trial": {"ok": ("200", _TABLE)},
    "autosearch_early_stop": {"ok": ("200", _obj({"earlystop_trial": _STR}, ["earlystop_trial"]))},
    "autosearch_analysis": {"ok": ("200", _TABLE)},
    "autosearch_analysis_plot": {"ok": ("200", _obj({"file_path": _STR}, ["file_path"]))},
    "autosearch_plot": {"ok": ("200", None)},
    # tags (TMS, core/tags.py): limit and offset page the keys / the jobs
    "show_job_tags": {"ok": ("200", _obj({"tags": _arr(_TAG)}, ["tags"]))},
    "create_job_tags": {"body": _obj({"tags": _arr(_TAG_IN, 20)}, ["tags"]), "ok": ("204", None)},
    "delete_job_tags": {"body": _obj({"tags": _arr(_obj({"key": _STR, "value": _STR}, ["key"]), 20)}, ["tags"]),
                        "ok": ("204", None)},
    "project_tags": {"query": _TAG_PAGE, "ok": ("200", _obj({"tags": _arr(_obj(
        {"key": _STR, "values": _arr(_STR)}, ["key", "values"]))}, ["tags"]))},
    "filter_tagged_jobs": {"query": _TAG_PAGE, "body": _TAG_FILTER, "ok": ("200", _obj({
        "resources": _arr(_obj({"resource_id": _STR, "resource_name": _STR, "resource_detail": {"type": "object"},
                                "workspace_id": _STR, "tags": _arr(_TAG)}, ["resource_id", "resource_name", "tags"])),
        "total_count": _INT}, ["resources", "total_count"]))},
    "count_tagged_jobs": {"query": _TAG_PAGE, "body": _TAG_FILTER,
                          "ok": ("200", _obj({"total_count": _INT}, ["total_count"]))},
    "create_experiment": {"body": _obj({"metadata": _obj({
        "name": _EXPERIMENT_NAME, "description": _EXPERIMENT_DESCRIPTION,
        "workspace_id": {"type": "string", "maxLength": 64}}, ["name"])}, ["metadata"]), "ok": ("201", _EXPERIMENT)},
    "list_experiments": {"query": [("workspace_id", {"type": "string", "maxLength": 64}, False),
                                   ("limit", {"type": "integer", "minimum": 1, "maximum": 50}, False),
                                   ("offset", {"type": "integer", "minimum": 0, "maximum": 10**9}, False),
                                   ("sort_by", {"type": "string", "enum": ["create_time", "update_time", "name"]},
                                    False),
                                   ("order", {"type": "string", "enum": ["asc", "desc"]}, False)],
                         "ok": ("200", _obj({"total": _INT, "count": _INT, "limit": _INT, "offset": _INT,
                                             "sort_by": _STR, "order": _STR, "items": _arr(_EXPERIMENT)},
                                            ["total", "count", "items"]))},
    "show_experiment": {"ok": ("200", _EXPERIMENT)},
    "change_experiment": {"body": {**_obj({"name": _EXPERIMENT_NAME, "description": _EXPERIMENT_DESCRIPTION}),
                                   "additionalProperties": False},
                          "ok": ("200", _obj({"name": _STR, "description": _STR}, ["name", "description"]))},
    "delete_experiment": {"ok": ("202", None)},
    "experiment_names": {"query": [("experiment_name", {"type": "string", "minLength": 1}, True),
                                   ("workspace_id", _STR, False)],
                         "ok": ("200", _obj({"is_duplicate": {"type": "boolean"}}, ["is_duplicate"]))},
    "create_algorithm": {"body": _ALGORITHM_IN, "ok": ("201", _ALGORITHM)},
    "list_algorithms": {"query": [("workspace_id", {"type": "string", "maxLength": 64}, False),
                                  ("limit", {"type": "integer", "minimum": 1, "maximum": 100}, False),
                                  ("offset", {"type": "integer", "minimum": 0, "maximum": 10**9}, False),
                                  ("sort_by", {"type": "string", "enum": ["create_time", "update_time", "name"]},
                                   False),
                                  ("order", {"type": "string", "enum": ["asc", "desc"]}, False),
                                  ("searches", {"type": "string", "pattern": "^name:"}, False)],
                        "ok": ("200", _obj({"total": _INT, "count": _INT, "limit": _INT, "offset": _INT,
                                            "sort_by": _STR, "order": _STR, "items": _arr(_ALGORITHM)},
                                           ["total", "count", "items"]))},
    "show_algorithm": {"ok": ("200", _ALGORITHM)},
    "change_algorithm": {"body": _obj(_ALGORITHM_IN["properties"]), "ok": ("200", _ALGORITHM)},
    "delete_algorithm": {"ok": ("204", None)},
    "publish_algorithm": {"ok": ("201", _obj({"subscription_id": _STR, "item_version_id": _STR, "version_num": _INT,
                                              "algorithm_id": _STR, "name": _STR, "create_time": _INT},
                                             ["subscription_id", "item_version_id"]))},
    "health": {"ok": ("200", _obj({"status": _STR, "version": _STR}, ["status"]))},
    "openapi": {"ok": ("200", _obj({"openapi": _STR, "paths": {"type": "object"}}, ["openapi", "paths"]))},
    "create_token": {"body": _obj({"auth": _obj({
        "identity": _obj({"methods": _arr({"type": "string", "enum": ["hw_ak_sk", "password"]})}, ["methods"]),
        "scope": _obj({"project": _obj({"id": _STR, "name": _STR})}, ["project"])}, ["identity", "scope"])},
        ["auth"]), "ok": ("201", _obj({"token": _obj({"expires_at": _STR, "project": {"type": "object"}},
                                                      ["expires_at"])}, ["token"]))},
    "list_projects": {"query": [("name", _STR, False)],
                      "ok": ("200", _obj({"projects": _arr(_obj({"id": _STR}, ["id"]))}, ["projects"]))},
}

_SUMMARY = {
    "create_job": "Create a training job",
    "show_job": "Query the details of a training job",
    "search_jobs": "List training jobs",
    "update_job": "Update a training job (description, priority, preemptible, notification, SSH keys, "
                  "annotations)",
    "delete_job": "Delete a training job",
    "batch_delete": "Delete training jobs in batches",
    "job_action": "Terminate a training job",
    "list_tasks": "List the tasks of a training job",
    "log_preview": "Preview the log of a task",
    "log_lines": "Read the log of a task by lines",
    "job_events": "List the events of a training job",
    "job_metrics": "Query the CPU and memory usage of a task",
    "job_stages": "List the stages of each running record",
    "route_plan": "The job's rank mapping (openarts plans no routes: a worker's rank is its index)",
    "task_report": "A task reports a training event (report_type training-event): an event of the job",
    "event_categories": "List the training event categories (what spec.notification.events may name)",
    "flavor_resources": "The most CPU and memory a job of a flavor could get in a pool now",
    "flavors": "List training flavors",
    "engines": "List training engines",
    "job_names": "Check whether a job name is taken",
    "show_quotas": "Show the project's training quotas",
    "modify_quotas": "Modify the project's training quotas",
    "search_algorithms": "List the hyperparameter search algorithms and their parameters",
    "autosearch_templates": "List the auto-search YAML templates",
    "autosearch_template": "Get an auto-search YAML template: a complete search job for one algorithm",
    "autosearch_trials": "List the trials of a search job (offset counts pages)",
    "autosearch_trial": "The metric history of one trial",
    "autosearch_early_stop": "Stop a running trial early",
    "autosearch_analysis": "Each searched parameter's importance to the objective",
    "autosearch_analysis_plot": "Draw the plot of one parameter against the objective; its path",
    "autosearch_plot": "openarts extension: the SVG plot of one parameter against the objective",
    "show_job_tags": "The tags of a training job",
    "create_job_tags": "Add tags to a training job (a key it has takes the new value)",
    "delete_job_tags": "Remove tags from a training job (by key; by key and value when a value is given)",
    "project_tags": "The tag keys of the project's training jobs, each with its values",
    "filter_tagged_jobs": "List the training jobs with the given tags (or none), by name",
    "count_tagged_jobs": "Count the training jobs with the given tags (or none), by name",
    "create_experiment": "Create a training experiment",
    "list_experiments": "List the project's training experiments, each with its job count",
    "show_experiment": "Query the details of a training experiment",
    "change_experiment": "Change a training experiment's name or description",
    "delete_experiment": "Delete a training experiment that no training job references",
    "experiment_names": "Check whether a training experiment name is taken",
    "create_algorithm": "Create an algorithm: a stored job configuration jobs run with algorithm.id",
    "list_algorithms": "List the project's algorithms",
    "show_algorithm": "Query the details of an algorithm",
    "change_algorithm": "Change an algorithm (jobs made from it keep what they resolved)",
    "delete_algorithm": "Delete an algorithm that no unfinished job was made from",
    "publish_algorithm": "openarts extension: publish an algorithm's current version to the local catalogue "
                         "(subscription_id + item_version_id)",
    "health": "Service health",
    "openapi": "This document",
    "create_token": "Get a token (IAM v3): AK/SK-signed, or a user name and password",
    "list_projects": "The projects the caller may act in (IAM v3)",
}

_ERROR_STATUSES = ("400", "401", "403", "404", "405", "409", "413", "414", "415", "429")
_PUBLIC = {"health", "create_token"}
_OPTIONAL_BODY = {"search_jobs", "filter_tagged_jobs", "count_tagged_jobs"}


def _operation(name: str, params: list[dict[str, Any]]) -> dict[str, Any]:
    info = _SCHEMAS.get(name, {})
    error = {"description": "ModelArts / APIGW error", "content": {JSON: {"schema": _ERROR}}}
    status, schema = info.get("ok", ("200", None))
    ok: dict[str, Any] = {"description": "Success"}
    if schema is not None:
        ok["content"] = {JSON: {"schema": schema}}
    responses: dict[str, Any] = {status: ok, **{s: error for s in _ERROR_STATUSES}, "default": error}
    query = [{"name": q, "in": "query", "required": req, "schema": s} for q, s, req in info.get("query", [])]
    op: dict[str, Any] = {"operationId": name, "summary": _SUMMARY.get(name, name), "parameters": params + query,
                          "responses": responses}
    if name in _PUBLIC:
        op["security"] = []
    if "body" in info:
        op["requestBody"] = {"required": name not in _OPTIONAL_BODY, "content": {JSON: {"schema": info["body"]}}}
    return op


def build_openapi(routes: list[Route], version: str) -> dict[str, Any]:
    paths: dict[str, dict[str, Any]] = {}
    for route in routes:
        name = route.endpoint.__name__
        params = [{"name": p, "in": "path", "required": True,
                   "schema": {"type": "string", "pattern": "^[A-Za-z0-9_.-]{1,64}$"}}
                  for p in re.findall(r"{(\w+)}", route.path)]
        for method in sorted((route.methods or set()) - {"HEAD"}):
            paths.setdefault(route.path, {})[method.lower()] = _operation(name, params)
    return {
        "openapi": "3.0.3",
        "info": {"title": "openarts: ModelArts Training v2 API", "version": version},
        "components": {"securitySchemes": {
            "aksk": {"type": "apiKey", "in": "header", "name": "Authorization",
                     "description": "SDK-HMAC-SHA256 Access=AK, SignedHeaders=..., Signature=..."},
            "token": {"type": "apiKey", "in": "header", "name": "X-Auth-Token"}}},
        "security": [{"aksk": []}, {"token": []}],
        "paths": paths,
    }
