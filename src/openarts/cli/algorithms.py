"""`openarts algorithms list|get|create FILE|change ID FILE|delete ID|publish ID`: the project's algorithms
(/v2/{project_id}/algorithms) and their published versions (POST .../algorithms/{id}/publish, openarts'
extension), which a job names by algorithm.subscription_id + algorithm.item_version_id."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any
from urllib.parse import quote

from rich.table import Table

from openarts.cli.client import Api, add_command, load_job_file
from openarts.cli.output import cell, clipped, fmt_time_ms, out_console, print_json, show

PAGE = 100  # the most algorithms the server returns in one page


def _path(algorithm_id: str, *more: str) -> str:
    return "/".join(("/algorithms", quote(algorithm_id, safe=""), *more))


def cmd_list(api: Api, args: argparse.Namespace) -> int:
    items: list[Any] = []
    while True:
        page = api.call("GET", "/algorithms", params={"offset": len(items), "limit": PAGE})
        items += page.get("items") or []
        if not page.get("items") or len(items) >= int(page.get("total") or 0):
            break
    if args.json:
        print_json({"total": len(items), "count": len(items), "items": items})
        return 0
    table = Table(caption=f"{len(items)} algorithm(s)", caption_justify="left")
    for name in ("id", "name", "entry", "parameters", "versions", "created"):
        table.add_column(name, no_wrap=name != "entry")
    for a in items:
        meta, jc = a.get("metadata") or {}, a.get("job_config") or {}
        entry = jc.get("boot_file") or jc.get("command")
        table.add_row(cell(meta.get("id")), cell(meta.get("name")), clipped(entry),
                      cell(len(jc.get("parameters") or [])), cell(meta.get("version_num")),
                      cell(fmt_time_ms(meta.get("create_time"))))
    show(out_console(), table)
    return 0


def _print(algorithm: dict[str, Any]) -> None:
    meta, jc = algorithm.get("metadata") or {}, algorithm.get("job_config") or {}
    console = out_console()
    console.print(f"[bold]{meta.get('name')}[/bold] ({meta.get('id')}), {meta.get('version_num', 0)} published "
                  f"version(s), created {fmt_time_ms(meta.get('create_time'))}", highlight=False, markup=True)
    if meta.get("description"):
        console.print(meta["description"], highlight=False, markup=False)
    entry = f"{jc.get('code_dir')} {jc.get('boot_file')}" if jc.get("boot_file") else jc.get("command")
    console.print(f"runs: {entry}", highlight=False, markup=False)
    table = Table(title="parameters", title_justify="left")
    for name in ("name", "default", "type", "required", "editable", "valid"):
        table.add_column(name)
    for p in jc.get("parameters") or []:
        c = p.get("constraint") or {}
        valid = f"{c.get('valid_type')} {c.get('valid_range')}" if c.get("valid_type") not in (None, "None") else "-"
        table.add_row(cell(p.get("name")), cell(p.get("value")), cell(c.get("type")), cell(c.get("required")),
                      cell(c.get("editable")), cell(valid))
    show(console, table)
    for key in ("inputs", "outputs"):
        for ch in jc.get(key) or []:
            default = ((ch.get("remote") or {}).get("obs") or {}).get("obs_url")
            console.print(f"{key[:-1]} {ch.get('name')}" + (f" (default {default})" if default else ""),
                          highlight=False, markup=False)


def cmd_get(api: Api, args: argparse.Namespace) -> int:
    algorithm = api.call("GET", _path(args.id))
    if args.json:
        print_json(algorithm)
    else:
        _print(algorithm)
    return 0


def cmd_create(api: Api, args: argparse.Namespace) -> int:
    algorithm = api.call("POST", "/algorithms", body=load_job_file(args.file))
    if args.json:
        print_json(algorithm)
    else:
        print((algorithm.get("metadata") or {}).get("id"))
    return 0


def cmd_change(api: Api, args: argparse.Namespace) -> int:
    algorithm = api.call("PUT", _path(args.id), body=load_job_file(args.file))
    if args.json:
        print_json(algorithm)
    else:
        _print(algorithm)
    return 0


def cmd_delete(api: Api, args: argparse.Namespace) -> int:
    api.call("DELETE", _path(args.id))
    if args.json:
        print_json({"deleted": args.id})
    else:
        print(f"deleted {args.id}")
    return 0


def cmd_publish(api: Api, args: argparse.Namespace) -> int:
    version = api.call("POST", _path(args.id, "publish"))
    if args.json:
        print_json(version)
    else:
        print(f"subscription_id {version.get('subscription_id')}")
        print(f"item_version_id {version.get('item_version_id')}")
        print(f"version {version.get('version_num')}")
    return 0


def add_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    group = sub.add_parser("algorithms", help="the project's algorithms: list, get, create, change, delete, publish",
                           description="the project's algorithms, which jobs run by algorithm.id, and their "
                                       "published versions, which jobs run by subscription_id + item_version_id")
    asub = group.add_subparsers(dest="algorithms_command", required=True, metavar="COMMAND")
    add_command(asub, "list", cmd_list, "list the project's algorithms")
    p = add_command(asub, "get", cmd_get, "show an algorithm")
    p.add_argument("id")
    p = add_command(asub, "create", cmd_create, "create an algorithm from a JSON or YAML body; prints its id")
    p.add_argument("file", type=Path, help="the algorithm (.json, .yaml or .yml): {metadata, job_config, ...}")
    p = add_command(asub, "change", cmd_change, "change an algorithm (what the body gives replaces)")
    p.add_argument("id")
    p.add_argument("file", type=Path)
    p = add_command(asub, "delete", cmd_delete, "delete an algorithm (refused while jobs made from it run)")
    p.add_argument("id")
    p = add_command(asub, "publish", cmd_publish,
                    "freeze the algorithm as it is into a version: prints its subscription_id and item_version_id")
    p.add_argument("id")
