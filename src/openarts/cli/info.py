"""Client commands that show what otherwise needs curl: a job's events (why is it waiting?), a search's
trials, the flavors, the engines and the project's quotas. Each prints a table, or the server's JSON with --json."""

from __future__ import annotations

import argparse
from typing import Any

from rich.table import Table
from rich.text import Text

from openarts.cli.client import Api, add_command, job_path, positive_int
from openarts.cli.output import cell, clipped, fmt_time_ms, out_console, phase_text, print_json, show

EVENTS_MAX = 1000  # the most events the server returns in one page
TRIALS_PAGE = 1000  # the most trials the server returns in one page
EVENT_LEVELS = ("Info", "Warning", "Error")


def event_time(value: Any) -> str:
    """An event's time: milliseconds since the epoch, as a number or a string of digits."""
    if isinstance(value, str) and value.isdigit():
        value = int(value)
    return fmt_time_ms(value) if isinstance(value, int | float) else str(value or "-")


def cmd_events(api: Api, args: argparse.Namespace) -> int:
    """The job's latest events, oldest first, under a line with its phase."""
    params: dict[str, Any] = {"offset": 0, "limit": args.limit, "order": "desc"}
    if args.level:
        params["level"] = args.level
    page = api.call("GET", job_path(args.id, "events"), params=params)
    if args.json:
        print_json(page)  # as the server answered: latest first
        return 0
    events = list(reversed(page.get("events") or []))
    status = api.job(args.id).get("status", {})
    total = int(page.get("total") or len(events))
    table = Table(caption=f"{len(events)} of {total} event(s); the job is {phase_text(status)}",
                  caption_justify="left")
    for name in ("time", "level", "source"):
        table.add_column(name, no_wrap=True)
    table.add_column("message")  # narrowed first on a narrow terminal; its cells never wrap (clipped)
    for e in events:
        table.add_row(cell(event_time(e.get("time"))), cell(e.get("level")), cell(e.get("source")),
                      clipped(e.get("message")))
    show(out_console(), table)
    return 0


def cmd_trials(api: Api, args: argparse.Namespace) -> int:
    """A hyperparameter search's trials: one row per trial, its values, rewards and outcome."""
    page = api.call("GET", job_path(args.id, "autosearch-trials"), params={"limit": TRIALS_PAGE, "offset": 0})
    items = page.get("items") or {}
    rows = list(items.get("data") or [])
    while len(rows) < int(page.get("total") or 0) and page.get("count"):  # offset counts pages
        page = api.call("GET", job_path(args.id, "autosearch-trials"),
                        params={"limit": TRIALS_PAGE, "offset": len(rows) // TRIALS_PAGE})
        rows += (page.get("items") or {}).get("data") or []
    if args.json:
        print_json({**page, "count": len(rows), "offset": 0, "limit": len(rows), "items": {**items, "data": rows}})
        return 0
    header: list[str] = list(items.get("header") or [])
    shown = [h for h in header if h not in ("job_id", "create_time", "end_time")]
    status = api.job(args.id).get("status", {})
    table = Table(caption=f"{page.get('total', 0)} trial(s); the search is {phase_text(status)}",
                  caption_justify="left")
    for name in shown:
        table.add_column(name, no_wrap=name != "message")
    for row in rows:
        values = dict(zip(header, row, strict=False))
        table.add_row(*(clipped(values.get(h)) if h == "message" else cell(values.get(h)) for h in shown))
    show(out_console(), table)
    return 0


def cmd_flavors(api: Api, args: argparse.Namespace) -> int:
    page = api.call("GET", "/training-job-flavors", params={"flavor_type": args.type} if args.type else None)
    if args.json:
        print_json(page)
        return 0
    table = Table(caption=f"{len(page.get('flavors') or [])} flavor(s)", caption_justify="left")
    for name in ("flavor", "type", "vCPUs", "memory", "GPUs", "max nodes", "pool"):  # max_num: nodes at once
        table.add_column(name, no_wrap=name != "flavor")
    for f in page.get("flavors") or []:
        info = f.get("flavor_info") or {}
        memory = info.get("memory") or {}
        gpu = info.get("gpu") or {}
        gpus = f"{gpu.get('unit_num')} x {gpu.get('product_name')}" if gpu.get("unit_num") else None
        table.add_row(cell(f.get("flavor_id")), cell(f.get("flavor_type")),
                      cell((info.get("cpu") or {}).get("core_num")),
                      cell(f"{memory.get('size')} {memory.get('unit') or 'GB'}" if memory.get("size") else None),
                      cell(gpus), cell(f.get("max_num")), cell(f.get("pool_id")))
    show(out_console(), table)
    return 0


def cmd_engines(api: Api, args: argparse.Namespace) -> int:
    page = api.call("GET", "/training-job-engines")
    if args.json:
        print_json(page)
        return 0
    table = Table(caption=f"{len(page.get('items') or [])} engine(s)", caption_justify="left")
    for name in ("engine_id", "name", "version", "image"):
        table.add_column(name)
    for e in page.get("items") or []:
        image = (e.get("image_info") or {}).get("cpu_image_url") or "-"
        table.add_row(cell(e.get("engine_id")), cell(e.get("engine_name")), cell(e.get("engine_version")),
                      cell(image))
    show(out_console(), table)
    return 0


def cmd_quotas(api: Api, args: argparse.Namespace) -> int:
    page = api.call("GET", "/training-quotas")
    if args.json:
        print_json(page)
        return 0
    table = Table()
    for name in ("resource", "quota", "used"):
        table.add_column(name)
    for q in page.get("quotas") or []:
        quota = q.get("quota")
        table.add_row(cell(q.get("resource")), Text("unlimited" if quota == -1 else str(quota)), cell(q.get("used")))
    show(out_console(), table)
    return 0


def level_arg(value: str) -> str:
    for level in EVENT_LEVELS:
        if level.lower() == value.lower():
            return level
    raise argparse.ArgumentTypeError(f"unknown level {value!r}; one of {', '.join(EVENT_LEVELS)}")


def limited(value: str) -> int:
    n = positive_int(value)
    if n > EVENTS_MAX:
        raise argparse.ArgumentTypeError(f"at most {EVENTS_MAX}")
    return n


def add_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = add_command(sub, "events", cmd_events, "show a training job's latest events (why is it waiting?)")
    p.add_argument("id")
    p.add_argument("--limit", type=limited, default=50, help=f"the latest N events (default 50, at most {EVENTS_MAX})")
    p.add_argument("--level", type=level_arg, help=f"only events of this level ({', '.join(EVENT_LEVELS)})")
    p = add_command(sub, "trials", cmd_trials, "show a hyperparameter search's trials (kind autosearch_job)")
    p.add_argument("id")
    p = add_command(sub, "flavors", cmd_flavors, "list the flavors jobs can use")
    p.add_argument("--type", choices=("CPU", "GPU", "Ascend"), help="only flavors of this type")
    add_command(sub, "engines", cmd_engines, "list the engines jobs can use")
    add_command(sub, "quotas", cmd_quotas, "show the project's quotas and what is in use")
