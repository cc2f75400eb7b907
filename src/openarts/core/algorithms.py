"""Algorithms (ModelArts' algorithm management, /v2/{project_id}/algorithms) and the jobs made from them.

Pure rules, no store: the shape of an algorithm's create and change bodies (`parse_algorithm`), and the
resolution of a job's `algorithm.id` (or a subscribed, published version) into the algorithm a job runs
(`resolve_job_algorithm`), which checks the job's parameters against the algorithm's constraints. The
service (service/algorithms.py) finds the algorithm and stores what was resolved in the job's request,
so an algorithm changed later moves no existing job.

An algorithm's `job_config`:
- `code_dir` + `boot_file`, or `command` (the checks of a job's algorithm, core/spec.py);
- `engine` {engine_id | engine_name + engine_version, image_url}: an engine of the catalog or an image;
- `parameters[]` {name, value (the default), description, constraint {type: String | Integer | Float |
  Boolean, editable, required, sensitive, valid_type: None | Range | Choice, valid_range[]}}: a Range is
  [min, max] (either may be ""), a Choice the allowed values;
- `inputs[]` / `outputs[]` {name, description, remote_constraints[]}; openarts also takes a default
  location `remote.obs.obs_url` (an extension), used when a job does not give the channel;
- `parameters_customization`: whether a job may add parameters the algorithm does not declare.
"""

from __future__ import annotations

import copy
import math
import re
from typing import Any

import orjson

from openarts.core import errors
from openarts.core.channels import MAX_CHANNELS, check_obs_url
from openarts.core.experiments import check_description, parse_create
from openarts.core.fields import PARAM_NAME_RE
from openarts.core.resources import Catalog
from openarts.core.spec import MAX_PARAMETERS, check_code

TYPES = ("String", "Integer", "Float", "Boolean")
VALID_TYPES = ("None", "Range", "Choice")
SORTABLE = {"create_time": "create_ms", "update_time": "update_ms", "name": "name"}
LIST_LIMIT_DEFAULT = 10
LIST_LIMIT_MAX = 100
MAX_REQUIREMENTS = 20
JOB_FIELDS_FROM_ALGORITHM = ("code_dir", "boot_file", "command", "engine")


def _bad(path: str, why: str) -> errors.InvalidRequest:
    return errors.InvalidRequest(f"Invalid parameter {path}: {why}.")


def _obj(value: Any, path: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise _bad(path, "must be an object")
    return value


def _items(value: Any, path: str, limit: int) -> list[Any]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise _bad(path, "must be a list")
    if len(value) > limit:
        raise _bad(path, f"at most {limit} items are allowed")
    return value


def _text(value: Any, path: str, limit: int = 1024) -> str:
    """A string, None being ""; numbers and booleans as ModelArts writes them."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return str(value)
    if not isinstance(value, str) or len(value) > limit or "\x00" in value:
        raise _bad(path, f"must be a string of at most {limit} characters")
    return value


def _flag(value: Any, path: str, default: bool) -> bool:
    if value is None:
        return default
    if not isinstance(value, bool):
        raise _bad(path, "must be true or false")
    return value


def _canonical(value: str, allowed: tuple[str, ...], path: str) -> str:
    for a in allowed:
        if value.lower() == a.lower():
            return a
    raise _bad(path, f"must be one of {', '.join(allowed)}")


_INTEGER_RE = re.compile(r"-?[0-9]{1,18}")  # ASCII digits only: the program, in any language, reads it
_FLOAT_RE = re.compile(r"-?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][-+]?[0-9]+)?")


def _number(text: str, kind: str) -> int | float | None:
    """`text` as a number of `kind` (Integer: an int, compared exactly; Float), written plainly in ASCII."""
    if kind == "Integer":
        return int(text) if _INTEGER_RE.fullmatch(text) else None
    if not _FLOAT_RE.fullmatch(text):
        return None
    n = float(text)
    return n if math.isfinite(n) else None


def _constraint(value: Any, path: str) -> dict[str, Any]:
    c = _obj(value, path)
    kind = _canonical(_text(c.get("type"), f"{path}.type", 16) or "String", TYPES, f"{path}.type")
    valid_type = _canonical(_text(c.get("valid_type"), f"{path}.valid_type", 16) or "None", VALID_TYPES,
                            f"{path}.valid_type")
    valid_range = [_text(v, f"{path}.valid_range[{i}]", 256)
                   for i, v in enumerate(_items(c.get("valid_range"), f"{path}.valid_range", 100))]
    if valid_type == "Range":
        if kind not in ("Integer", "Float"):
            raise _bad(f"{path}.valid_type", "Range needs a type Integer or Float")
        if len(valid_range) != 2:
            raise _bad(f"{path}.valid_range", "a Range is [min, max] (either may be \"\")")
        for i, bound in enumerate(valid_range):
            if bound != "" and _number(bound, kind) is None:
                raise _bad(f"{path}.valid_range[{i}]", f"must be a number of type {kind}")
    if valid_type == "Range" and "" not in valid_range and (_number(valid_range[0], kind) or 0) > (
            _number(valid_range[1], kind) or 0):
        raise _bad(f"{path}.valid_range", "a Range's min is greater than its max")
    if valid_type == "Choice" and not valid_range:
        raise _bad(f"{path}.valid_range", "a Choice lists its values")
    if valid_type == "Choice" and kind in ("Integer", "Float"):
        for i, v in enumerate(valid_range):
            if _number(v, kind) is None:
                raise _bad(f"{path}.valid_range[{i}]", f"must be a number of type {kind}")
    return {"type": kind, "editable": _flag(c.get("editable"), f"{path}.editable", True),
            "required": _flag(c.get("required"), f"{path}.required", False),
            "sensitive": _flag(c.get("sensitive"), f"{path}.sensitive", False),
            "valid_type": valid_type, "valid_range": valid_range}


def check_value(name: str, value: str, constraint: dict[str, Any], where: str) -> None:
    """`value` of parameter `name` within its constraint (type, valid_range), or InvalidRequest (2788)
    naming the parameter."""
    kind = constraint.get("type", "String")
    why = None
    if kind in ("Integer", "Float") and _number(value, kind) is None:
        why = f"{value!r} is not of type {kind}"
    elif kind == "Boolean" and value.lower() not in ("true", "false"):
        why = f"{value!r} is not of type Boolean (true or false)"
    elif constraint.get("valid_type") == "Choice" and value not in constraint.get("valid_range", []):
        why = f"{value!r} is not one of {', '.join(constraint.get('valid_range', []))}"
    elif constraint.get("valid_type") == "Range":
        n = _number(value, kind)
        lo, hi = (constraint.get("valid_range") or ["", ""])[:2]
        if n is not None and ((lo != "" and n < (_number(lo, kind) or 0))
                              or (hi != "" and n > (_number(hi, kind) or 0))):
            why = f"{value} is out of its valid range [{lo or '-inf'}, {hi or 'inf'}]"
    if why:
        raise errors.InvalidRequest(f"Invalid parameter {where}: hyperparameter {name!r}: {why}.")


def _channels(value: Any, path: str, inputs: bool) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for i, item in enumerate(_items(value, path, MAX_CHANNELS)):
        p = f"{path}[{i}]"
        item = _obj(item, p)
        name = _text(item.get("name"), f"{p}.name", 64)
        if not PARAM_NAME_RE.match(name):
            raise errors.InputsOutputsError(f"Inputs/outputs error: {p}.name: use letters, digits, '_', '-' and '.'.")
        if any(c["name"] == name for c in out):
            raise errors.InputsOutputsError(f"Inputs/outputs error: {p}.name: {name!r} is given twice.")
        channel: dict[str, Any] = {"name": name,
                                   "description": check_description(item.get("description"), f"{p}.description")}
        if inputs:
            constraints = []
            for j, rc in enumerate(_items(item.get("remote_constraints"), f"{p}.remote_constraints", 20)):
                rc = _obj(rc, f"{p}.remote_constraints[{j}]")
                attrs = _items(rc.get("attributes"), f"{p}.remote_constraints[{j}].attributes", 50)
                if not all(isinstance(a, dict) and all(isinstance(v, str) for v in a.values()) for a in attrs):
                    raise _bad(f"{p}.remote_constraints[{j}].attributes", "must be a list of maps of strings")
                constraints.append({"data_type": _text(rc.get("data_type"), f"{p}.remote_constraints[{j}].data_type",
                                                       64), "attributes": attrs})
            channel["remote_constraints"] = constraints
        url = _text(_obj(_obj(item.get("remote"), f"{p}.remote").get("obs"), f"{p}.remote.obs").get("obs_url"),
                    f"{p}.remote.obs.obs_url")
        if url:
            check_obs_url(url, f"{p}.remote.obs.obs_url")
            channel["remote"] = {"obs": {"obs_url": url}}
        out.append(channel)
    return out


def parse_job_config(value: Any, catalog: Catalog) -> dict[str, Any]:
    """An algorithm's job_config, normalised (what is stored and answered)."""
    jc = _obj(value, "job_config")
    code_dir = _text(jc.get("code_dir"), "job_config.code_dir")
    boot_file = _text(jc.get("boot_file"), "job_config.boot_file")
    command = _text(jc.get("command"), "job_config.command", 65536)
    check_code(command, code_dir, boot_file, "job_config")
    engine_req = _obj(jc.get("engine"), "job_config.engine")
    engine = {k: _text(engine_req.get(k), f"job_config.engine.{k}", 1024)
              for k in ("engine_id", "engine_name", "engine_version", "image_url")}
    found = catalog.find_engine(engine["engine_id"] or None, engine["engine_name"] or None,
                                engine["engine_version"] or None)
    if found is None and not engine["image_url"]:
        raise errors.EngineNotFound(f"Engine {engine['engine_id'] or engine['engine_name']!r} not found; "
                                    f"available: {', '.join(sorted(catalog.engines))}.")
    if found is not None and not engine["image_url"]:  # named as the catalog names it
        engine.update(engine_id=found.engine_id, engine_name=found.engine_name,
                      engine_version=found.engine_version)
    parameters: list[dict[str, Any]] = []
    for i, p in enumerate(_items(jc.get("parameters"), "job_config.parameters", MAX_PARAMETERS)):
        path = f"job_config.parameters[{i}]"
        p = _obj(p, path)
        name = _text(p.get("name"), f"{path}.name", 128)
        if not PARAM_NAME_RE.match(name):
            raise _bad(f"{path}.name", "use letters, digits, '_', '-' and '.'")
        if any(q["name"] == name for q in parameters):
            raise _bad(f"{path}.name", f"{name!r} is given twice")
        constraint = _constraint(p.get("constraint"), f"{path}.constraint")
        value = _text(p.get("value"), f"{path}.value", 4096)
        if value:
            check_value(name, value, constraint, f"{path}.value")
        parameters.append({"name": name, "value": value,
                           "description": check_description(p.get("description"), f"{path}.description"),
                           "constraint": constraint})
    return {"code_dir": code_dir, "boot_file": boot_file, "command": command, "engine": engine,
            "parameters": parameters, "inputs": _channels(jc.get("inputs"), "job_config.inputs", True),
            "outputs": _channels(jc.get("outputs"), "job_config.outputs", False),
            "parameters_customization": _flag(jc.get("parameters_customization"),
                                              "job_config.parameters_customization", False)}


def _requirements(value: Any) -> list[dict[str, Any]]:
    out = []
    for i, r in enumerate(_items(value, "resource_requirements", MAX_REQUIREMENTS)):
        p = f"resource_requirements[{i}]"
        r = _obj(r, p)
        raw = r.get("values", r.get("value"))  # the request's `values`, the response's `value`
        values = [_text(v, f"{p}.values[{j}]", 256) for j, v in enumerate(_items(raw, f"{p}.values", 50))]
        out.append({"key": _text(r.get("key"), f"{p}.key", 128), "value": values,
                    "operator": _text(r.get("operator"), f"{p}.operator", 32)})
    return out


def parse_algorithm(body: Any, catalog: Catalog) -> tuple[str, str, str, str, dict[str, Any]]:
    """A create body {metadata {name, description, workspace_id, ai_project}, job_config,
    resource_requirements, advanced_config}: (name, description, workspace id, ai_project, config), the
    config being {job_config, resource_requirements, advanced_config}."""
    name, description, workspace_id = parse_create(body)  # metadata's rules: an experiment's
    return (name, description, workspace_id, _text(body["metadata"].get("ai_project"), "metadata.ai_project", 64),
            parse_config(body, catalog))


def parse_config(body: dict[str, Any], catalog: Catalog) -> dict[str, Any]:
    advanced = _obj(body.get("advanced_config"), "advanced_config")
    unknown = sorted(k for k in advanced if k != "auto_search")  # the SDK's AdvancedConfig has only auto_search
    if unknown:
        raise _bad(f"advanced_config.{unknown[0][:64]}", "is not a field of advanced_config (auto_search is)")
    if len(orjson.dumps(advanced)) > 64 * 1024:
        raise _bad("advanced_config", "must be at most 64 KiB")
    return {"job_config": parse_job_config(body.get("job_config"), catalog),
            "resource_requirements": _requirements(body.get("resource_requirements")),
            "advanced_config": advanced}


def resolve_job_algorithm(algorithm: dict[str, Any], config: dict[str, Any], ref: dict[str, str]) -> dict[str, Any]:
    """The algorithm section of a job made from an algorithm (`config`, as parse_config stores it; `ref`
    names it: {id, name} or {subscription_id, item_version_id, name}): the algorithm's code, boot file or
    command and engine; its parameters, with the job's values where the constraints allow them; its
    inputs and outputs, at the job's locations or the algorithm's defaults. The job's other fields
    (environments, working_dir, local_code_dir, policies, summary, ...) are kept."""
    given = [k for k in JOB_FIELDS_FROM_ALGORITHM if algorithm.get(k)]
    if given:
        raise _bad(f"algorithm.{given[0]}", "comes from the algorithm when algorithm.id or a subscription is given")
    jc = config["job_config"]
    out = {k: v for k, v in algorithm.items()
           if k not in ("id", "name", "subscription_id", "item_version_id", "parameters", "inputs", "outputs")}
    out = {**ref, **out}
    if jc["command"]:
        out["command"] = jc["command"]
    if jc["code_dir"]:
        out["code_dir"] = jc["code_dir"]
    if jc["boot_file"]:
        out["boot_file"] = jc["boot_file"]
    out["engine"] = {k: v for k, v in jc["engine"].items() if v}
    out["parameters"] = _resolve_parameters(algorithm.get("parameters"), jc)
    _check_searched(algorithm, jc)
    out["inputs"] = _resolve_channels(algorithm.get("inputs"), jc["inputs"], "inputs")
    out["outputs"] = _resolve_channels(algorithm.get("outputs"), jc["outputs"], "outputs")
    return out


def _resolve_parameters(value: Any, jc: dict[str, Any]) -> list[dict[str, Any]]:
    given: dict[str, str] = {}
    for i, p in enumerate(_items(value, "algorithm.parameters", MAX_PARAMETERS)):
        path = f"algorithm.parameters[{i}]"
        p = _obj(p, path)
        name = _text(p.get("name"), f"{path}.name", 128)
        if not PARAM_NAME_RE.match(name):
            raise _bad(f"{path}.name", "use letters, digits, '_', '-' and '.'")
        given[name] = _text(p.get("value"), f"{path}.value", 4096)
    out = []
    declared = {p["name"] for p in jc["parameters"]}
    for p in jc["parameters"]:
        name, c = p["name"], p["constraint"]
        value = p["value"]
        if name in given and given[name] != value:
            if not c["editable"]:
                raise errors.InvalidRequest(f"Invalid parameter algorithm.parameters: hyperparameter {name!r} is "
                                            f"not editable in this algorithm (its value is {value!r}).")
            value = given[name]
        if value == "":
            if c["required"]:
                raise errors.InvalidRequest(f"Invalid parameter algorithm.parameters: hyperparameter {name!r} is "
                                            "required by the algorithm and has no default: give its value.")
            continue
        check_value(name, value, c, "algorithm.parameters")
        out.append({"name": name, "value": value, "description": p["description"], "constraint": copy.deepcopy(c)})
    extra = [n for n in given if n not in declared]
    if extra and not jc["parameters_customization"]:
        raise errors.InvalidRequest(f"Invalid parameter algorithm.parameters: hyperparameter {extra[0]!r} is not "
                                    "declared by the algorithm, which does not allow custom hyperparameters "
                                    "(job_config.parameters_customization).")
    out.extend({"name": n, "value": given[n]} for n in extra)
    return out


def _check_searched(algorithm: dict[str, Any], jc: dict[str, Any]) -> None:
    """A search (kind autosearch_job) from an algorithm searches only what its constraints allow: each
    searched parameter declared (or custom ones allowed) and editable, every value it may take within the
    constraint: each discrete value checked, a continuous range's bounds checked (an Integer or a Choice
    parameter must be searched by discrete values)."""
    search = ((algorithm.get("policies") or {}).get("auto_search") or {}) if isinstance(algorithm, dict) else {}
    skipped = {s.strip() for s in str(search.get("skip_search_params") or "").split(",")}
    declared = {p["name"]: p["constraint"] for p in jc["parameters"]}
    for i, item in enumerate(search.get("search_params") or []):
        if not isinstance(item, dict) or item.get("name") in skipped:
            continue  # its shape is core/search.py's to check
        name, where = str(item.get("name")), f"algorithm.policies.auto_search.search_params[{i}]"
        c = declared.get(name)
        if c is None:
            if not jc["parameters_customization"]:
                raise errors.InvalidRequest(f"Invalid parameter {where}: hyperparameter {name!r} is not declared "
                                            "by the algorithm, which does not allow custom hyperparameters.")
            continue
        if not c["editable"]:
            raise errors.InvalidRequest(f"Invalid parameter {where}: hyperparameter {name!r} is not editable in "
                                        "this algorithm: it cannot be searched.")
        if item.get("param_type") == "continuous":
            if c["type"] not in ("Float",) or c["valid_type"] == "Choice":
                raise errors.InvalidRequest(f"Invalid parameter {where}: hyperparameter {name!r} is "
                                            f"{c['type']}{' with a Choice' if c['valid_type'] == 'Choice' else ''}"
                                            ": search it by discrete values.")
            values = [str(item.get("lower_bound", "")), str(item.get("upper_bound", ""))]
        else:
            values = [str(v) for v in item.get("discrete_values") or []]
        for value in values:
            check_value(name, value, c, where)


def _resolve_channels(value: Any, declared: list[dict[str, Any]], key: str) -> list[dict[str, Any]]:
    given: dict[str, dict[str, Any]] = {}
    for i, item in enumerate(_items(value, f"algorithm.{key}", MAX_CHANNELS)):
        item = _obj(item, f"algorithm.{key}[{i}]")
        name = _text(item.get("name"), f"algorithm.{key}[{i}].name", 64)
        if not any(d["name"] == name for d in declared):
            raise errors.InputsOutputsError(
                f"Inputs/outputs error: algorithm.{key}[{i}].name: the algorithm has no {key[:-1]} {name!r} "
                f"(its {key}: {', '.join(d['name'] for d in declared) or 'none'}).")
        if name in given:
            raise errors.InputsOutputsError(f"Inputs/outputs error: algorithm.{key}[{i}].name: {name!r} is given "
                                            "twice.")
        given[name] = item
    out = []
    for d in declared:
        item = copy.deepcopy(given.get(d["name"]) or {"name": d["name"]})
        if not item.get("remote"):
            if "remote" not in d:
                raise errors.InputsOutputsError(
                    f"Inputs/outputs error: algorithm.{key}: the algorithm's {key[:-1]} {d['name']!r} needs a "
                    "location: give it with remote.obs.obs_url (the algorithm has no default).")
            item["remote"] = copy.deepcopy(d["remote"])
        out.append(item)
    return out
