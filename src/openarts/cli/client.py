"""Client commands of `openarts`: submit, get, list, logs, stop, delete (and, in cli/info.py, events,
flavors, engines, quotas).

They talk to a running server over its ModelArts Training v2 REST API with httpx, and render with Rich
(cli/output.py; --json prints the server's answer instead). Expected failures (an error body from the
server, no server, a bad job file) print one `error: ...` line to stderr and exit 1; they never show a
traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO
from urllib.parse import quote

import httpx
import yaml
from rich.console import Console
from rich.table import Table
from rich.text import Text

from openarts import __version__
from openarts.cli.fields import MAX_WARNINGS, unknown_fields
from openarts.cli.output import (
    cell,
    clip,
    clipped,
    err_console,
    first_line,
    fmt_duration,
    fmt_time_ms,
    fmt_time_s,
    out_console,
    phase_text,
    print_json,
    show,
)
from openarts.core.roles import role_of
from openarts.security.client import SdkHmacAuth

DEFAULT_SERVER = "http://127.0.0.1:8080"
DEFAULT_PROJECT = "default"
PHASES = ("Creating", "Pending", "Running", "Failed", "Completed", "Terminating", "Terminated", "Abnormal")
FINAL_PHASES = frozenset({"Completed", "Failed", "Terminated", "Abnormal"})
LOG_NOT_READY = "ModelArts.2776"
SEARCH_PAGE_MAX = 50
LOG_PAGE = 1000
POLL_SECONDS = 0.5
HTTP_TIMEOUT = 30.0
STOP_WAIT_SECONDS = 10.0  # how long `stop` waits to see the job leave Running

Handler = Callable[[argparse.Namespace], int]


class CliError(Exception):
    """An expected failure: reported as one line on stderr, exit status 1."""


class ApiError(CliError):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(f"{message} ({code})")
        self.status = status
        self.code = code


# ---------------------------------------------------------------------------------------------------- HTTP


@dataclass
class Api:
    server: str
    project: str
    http: httpx.Client = field(init=False)

    def __post_init__(self) -> None:
        self.server = self.server.rstrip("/")
        base = f"{self.server}/v2/{quote(self.project, safe='')}"
        headers = {"User-Agent": f"openarts-cli/{__version__}"}
        auth: httpx.Auth | None = None
        ak, sk = os.environ.get("HUAWEICLOUD_SDK_AK"), os.environ.get("HUAWEICLOUD_SDK_SK")
        token = os.environ.get("OPENARTS_TOKEN")
        if ak and sk:  # the same variables the official SDK reads
            auth = SdkHmacAuth(ak, sk, self.project)
        elif token:
            headers["X-Auth-Token"] = token
        self.http = httpx.Client(base_url=base, timeout=HTTP_TIMEOUT, headers=headers, auth=auth)

    def call(self, method: str, path: str, body: Any = None, params: dict[str, Any] | None = None) -> Any:
        try:
            resp = self.http.request(method, path, json=body, params=params)
        except httpx.ConnectError as exc:
            raise CliError(f"cannot connect to the openarts server at {self.server} ({exc}); is it running? "
                           "Set --server or OPENARTS_SERVER.") from exc
        except httpx.TimeoutException as exc:
            raise CliError(f"the openarts server at {self.server} did not answer within {HTTP_TIMEOUT:g}s.") from exc
        except (httpx.HTTPError, httpx.InvalidURL) as exc:
            raise CliError(f"request to {self.server} failed: {exc}") from exc
        if resp.status_code >= 400:
            raise api_error(resp)
        if not resp.content.strip():
            return None
        try:
            return resp.json()
        except ValueError as exc:
            raise CliError(f"the server at {self.server} answered {method} {path} with invalid JSON.") from exc

    def job(self, job_id: str) -> dict[str, Any]:
        doc: dict[str, Any] = self.call("GET", f"/training-jobs/{quote(job_id, safe='')}")
        return doc

    def close(self) -> None:
        self.http.close()


def api_error(resp: httpx.Response) -> ApiError:
    try:
        body = resp.json()
    except ValueError:
        body = None
    if isinstance(body, dict) and "error_msg" in body:
        return ApiError(resp.status_code, str(body.get("error_code", resp.status_code)), str(body["error_msg"]))
    text = resp.text.strip()[:500] or resp.reason_phrase
    return ApiError(resp.status_code, f"HTTP {resp.status_code}", text)


def job_path(job_id: str, *rest: str) -> str:
    return "/".join(["/training-jobs", quote(job_id, safe=""), *(quote(r, safe="") for r in rest)])


# ---------------------------------------------------------------------------------------------------- job views


def task_lines(status: dict[str, Any]) -> list[str]:
    lines = []
    for st in status.get("task_statuses") or []:
        code = st.get("exit_code")
        text = f"{st.get('task')}: exit code {code}" if code is not None else f"{st.get('task')}: no exit code"
        msg = first_line(st.get("message"))
        lines.append(f"{text} - {msg}" if msg else text)
    return lines


def last_end_reason(status: dict[str, Any]) -> str | None:
    records = status.get("running_records") or []
    return records[-1].get("end_reason") if records else None


def print_summary(console: Console, job: dict[str, Any]) -> None:
    meta, status = job.get("metadata", {}), job.get("status", {})
    console.print(Text(f"{phase_text(status)}: {meta.get('name')} ({meta.get('id')}) "
                       f"after {fmt_duration(status.get('duration'))}"))
    for line in task_lines(status):
        console.print(Text(f"  {clip(line)}"), no_wrap=True, overflow="ellipsis")
    reason = last_end_reason(status)
    if reason:
        console.print(Text(f"  end reason: {reason}"))


def details_grid(job: dict[str, Any]) -> Table:
    meta, status = job.get("metadata", {}), job.get("status", {})
    resource = job.get("spec", {}).get("resource", {})
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold")
    grid.add_column()
    names = status.get("tasks") or []
    roles = [(f"role {t.get('role')}", f"{(t.get('task_resource') or {}).get('flavor_id')} x "
              f"{sum(1 for n in names if role_of(n) == t.get('role'))}") for t in job.get("tasks") or []]
    rows = [("name", meta.get("name")), ("id", meta.get("id")), ("phase", phase_text(status)),
            *(roles or [("flavor", resource.get("flavor_id")), ("node_count", resource.get("node_count"))]),
            ("created", fmt_time_ms(meta.get("create_time"))), ("started", fmt_time_ms(status.get("start_time"))),
            ("duration", fmt_duration(status.get("duration")))]
    if meta.get("description"):
        rows.insert(2, ("description", meta["description"]))
    for key, value in rows:
        grid.add_row(key, clipped(value))
    return grid


def tasks_table(status: dict[str, Any]) -> Table:
    by_task = {st.get("task"): st for st in status.get("task_statuses") or []}
    ips = {t.get("task"): t.get("ip") for t in status.get("task_ips") or []}
    table = Table(title="tasks", title_justify="left")
    for name in ("task", "ip", "exit code"):
        table.add_column(name, no_wrap=True)
    table.add_column("message")  # narrowed first on a narrow terminal; its cells never wrap (clipped)
    for task in status.get("tasks") or list(by_task):
        st = by_task.get(task, {})
        table.add_row(cell(task), cell(ips.get(task)), cell(st.get("exit_code")), clipped(st.get("message")))
    return table


def records_table(status: dict[str, Any]) -> Table:
    table = Table(title="running records", title_justify="left")
    for name in ("#", "start", "end", "start type", "end reason", "recovery"):
        table.add_column(name)
    for i, rec in enumerate(status.get("running_records") or [], 1):
        table.add_row(cell(i), cell(fmt_time_s(rec.get("start_at"))), cell(fmt_time_s(rec.get("end_at"))),
                      cell(rec.get("start_type")), clipped(rec.get("end_reason")), cell(rec.get("end_recover")))
    return table


# ---------------------------------------------------------------------------------------------------- submit


def load_job_file(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise CliError(f"cannot read {path}: {exc.strerror or exc}") from exc
    try:
        body = json.loads(text) if path.suffix.lower() == ".json" else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as exc:
        raise CliError(f"{path} is not valid {'JSON' if path.suffix.lower() == '.json' else 'YAML'}: {exc}") from exc
    if not isinstance(body, dict):
        raise CliError(f"{path} must hold a job object (a mapping), not {type(body).__name__}.")
    return body


def with_name(body: dict[str, Any], name: str | None) -> dict[str, Any]:
    if name is None:
        return body
    meta = body.get("metadata")
    return {**body, "metadata": {**(meta if isinstance(meta, dict) else {}), "name": name}}


def warn_unknown_fields(path: Path, body: dict[str, Any]) -> None:
    """One line on stderr for each field ModelArts does not know (the server ignores them)."""
    found = unknown_fields(body)
    for field_ in found[:MAX_WARNINGS]:
        print(f"warning: {path}: {field_}", file=sys.stderr)
    if len(found) > MAX_WARNINGS:
        print(f"warning: {path}: {len(found) - MAX_WARNINGS} more unknown field(s)", file=sys.stderr)


def cmd_submit(api: Api, args: argparse.Namespace) -> int:
    body = with_name(load_job_file(args.file), args.name)
    warn_unknown_fields(args.file, body)
    job: dict[str, Any] = api.call("POST", "/training-jobs", body)
    job_id = job["metadata"]["id"]
    if args.json and not args.wait:
        print_json(job)
    elif not args.json:
        out_console().print(Text(job_id))
    if not args.wait:
        return 0
    final = wait_final(api, job_id)
    if args.json:
        print_json(final)
    else:
        print_summary(out_console(), final)
    return 0 if final["status"]["phase"] == "Completed" else 1


def poll_job(api: Api, job_id: str) -> Iterator[dict[str, Any]]:
    """The job, every POLL_SECONDS, until (and including) its first final state."""
    while True:
        job = api.job(job_id)
        yield job
        if job.get("status", {}).get("phase") in FINAL_PHASES:
            return
        time.sleep(POLL_SECONDS)


def wait_final(api: Api, job_id: str) -> dict[str, Any]:
    console = err_console()
    job: dict[str, Any] = {}
    try:
        if console.is_terminal:
            with console.status("waiting for the job") as spinner:
                for job in poll_job(api, job_id):
                    spinner.update(Text(live_line(job)))
        else:
            shown = ""
            for job in poll_job(api, job_id):
                line = phase_text(job.get("status", {}))
                if line != shown:
                    console.print(Text(line))
                    shown = line
    except KeyboardInterrupt:
        raise CliError(f"stopped waiting; job {job_id} keeps running (openarts stop {job_id})") from None
    return job


def live_line(job: dict[str, Any]) -> str:
    status = job.get("status", {})
    name = job.get("metadata", {}).get("name")
    return f"{name}: {phase_text(status)}  {fmt_duration(status.get('duration'))}"


# ---------------------------------------------------------------------------------------------------- get, list


def cmd_get(api: Api, args: argparse.Namespace) -> int:
    job = api.job(args.id)
    if args.json:
        print_json(job)
        return 0
    console = out_console()
    status = job.get("status", {})
    show(console, details_grid(job))
    if status.get("tasks") or status.get("task_statuses"):
        show(console, tasks_table(status))
    if status.get("running_records"):
        show(console, records_table(status))
    return 0


def search_filters(args: argparse.Namespace) -> list[dict[str, Any]]:
    filters: list[dict[str, Any]] = []
    if args.phase:
        filters.append({"key": "phase", "operator": "in", "value": sorted(set(args.phase))})
    if args.name:
        filters.append({"key": "name", "operator": "like", "value": [args.name]})
    return filters


def search_all(api: Api, filters: list[dict[str, Any]], limit: int) -> tuple[int, list[dict[str, Any]]]:
    items: list[dict[str, Any]] = []
    total = 0
    while len(items) < limit:
        page = api.call("POST", "/training-job-searches", {
            "offset": len(items), "limit": min(SEARCH_PAGE_MAX, limit - len(items)), "filters": filters,
            "sort_by": "create_time", "order": "desc"})
        total = int(page.get("total", 0))
        items.extend(page.get("items") or [])
        if not page.get("items") or len(items) >= total:
            break
    return total, items


def jobs_table(items: list[dict[str, Any]], total: int) -> Table:
    table = Table(caption=f"{len(items)} of {total} job(s)", caption_justify="left")
    for name in ("name", "id", "phase", "created", "duration"):
        table.add_column(name, no_wrap=name in ("id", "created"))
    for job in items:
        meta, status = job.get("metadata", {}), job.get("status", {})
        table.add_row(cell(meta.get("name")), cell(meta.get("id")), cell(phase_text(status)),
                      cell(fmt_time_ms(meta.get("create_time"))), cell(fmt_duration(status.get("duration"))))
    return table


def cmd_list(api: Api, args: argparse.Namespace) -> int:
    total, items = search_all(api, search_filters(args), args.limit)
    if args.json:
        print_json({"total": total, "count": len(items), "items": items})
    else:
        show(out_console(), jobs_table(items, total))
    return 0


# ---------------------------------------------------------------------------------------------------- logs


@dataclass
class LogPrinter:
    """Writes a task's log as it grows. The last line seen stays open (no newline written yet): the file
    may end in half a line, so it is fetched again and only what was added to it is written."""

    api: Api
    job_id: str
    task: str
    out: TextIO
    attempt: int | None = None  # None: the latest attempt's log
    next_line: int = 1
    open_text: str | None = None

    def drain(self) -> None:
        while True:
            params: dict[str, Any] = {"base_line": self.next_line, "lines": LOG_PAGE, "order": "asc"}
            if self.attempt is not None:
                params["attempt"] = self.attempt  # an openarts extension of the ModelArts operation
            page = self.api.call("GET", job_path(self.job_id, "logs", self.task), params=params)
            if page is None:  # 204: ModelArts.2776 NotReadyToFetchLog, which HTTP lets carry no body
                raise ApiError(204, LOG_NOT_READY, f"the log of {self.task} is not ready: the task has not started.")
            count = int(page.get("lines") or 0)
            if count:
                self.write(int(page["start_line"]), str(page["content"]).removesuffix("\n").split("\n"))
            self.out.flush()
            if count <= 1:
                return

    def write(self, start: int, lines: list[str]) -> None:
        first = lines[0]
        if self.open_text is not None and start == self.next_line and first.startswith(self.open_text):
            self.out.write(first[len(self.open_text):])
        else:
            self.out.write(first if self.open_text is None else "\n" + first)
        for line in lines[1:]:
            self.out.write("\n" + line)
        self.next_line, self.open_text = start + len(lines) - 1, lines[-1]

    def close(self) -> None:
        if self.open_text is not None:
            self.out.write("\n")
            self.out.flush()
        self.next_line, self.open_text = 1, None


def cmd_logs(api: Api, args: argparse.Namespace) -> int:
    task = args.task or (api.job(args.id).get("status", {}).get("tasks") or ["worker-0"])[0]
    printer = LogPrinter(api, args.id, task, sys.stdout, args.attempt)
    try:
        follow_log(api, printer) if args.follow else printer.drain()
    except KeyboardInterrupt:
        return 130
    finally:
        printer.close()
    return 0


def follow_log(api: Api, printer: LogPrinter) -> None:
    attempts: int | None = None
    for job in poll_job(api, printer.job_id):
        status = job.get("status", {})
        records = len(status.get("running_records") or [])
        if printer.attempt is None and attempts is not None and records > attempts and printer.open_text is not None:
            printer.close()  # a new attempt writes a new log
            err_console().print(Text(f"--- attempt {records} ---"))
        attempts = records
        try:
            printer.drain()
        except ApiError as exc:
            if exc.code != LOG_NOT_READY or status.get("phase") in FINAL_PHASES:
                raise


# ---------------------------------------------------------------------------------------------------- stop, delete


def cmd_stop(api: Api, args: argparse.Namespace) -> int:
    """Terminate, then show the phase the job moved to: the answer to the action is the job as it was
    (often still Running), so wait a little for the supervisor to act on it; with --wait, until final."""
    job: dict[str, Any] = api.call("POST", job_path(args.id, "actions"), {"action_type": "terminate"})
    if args.wait:
        job = wait_final(api, args.id)
    else:
        deadline = time.monotonic() + STOP_WAIT_SECONDS
        while job.get("status", {}).get("phase") in ("Creating", "Pending", "Running") \
                and time.monotonic() < deadline:
            time.sleep(POLL_SECONDS / 2)
            job = api.job(args.id)
    if args.json:
        print_json(job)
        return 0
    status = job.get("status", {})
    line = f"{args.id}: {phase_text(status)}"
    if status.get("phase") in ("Creating", "Pending", "Running"):
        line += f" (termination requested; still {status.get('phase')} after {STOP_WAIT_SECONDS:g}s)"
    out_console().print(Text(line))
    return 0


def cmd_delete(api: Api, args: argparse.Namespace) -> int:
    ids: list[str] = list(dict.fromkeys(args.ids))
    if len(ids) == 1:
        api.call("DELETE", job_path(ids[0]))
    else:
        api.call("POST", "/training-jobs/batch-delete",
                 {"jobs": [{"kind": "job", "metadata": {"id": job_id}} for job_id in ids]})
    if args.json:
        print_json({"deleted": ids})
    else:
        console = out_console()
        for job_id in ids:
            console.print(Text(f"deleted {job_id}"))
    return 0


# ---------------------------------------------------------------------------------------------------- argparse


def run_command(command: Callable[[Api, argparse.Namespace], int]) -> Handler:
    def handler(args: argparse.Namespace) -> int:
        api: Api | None = None
        try:
            api = Api(args.server, args.project)
            return command(api, args)
        except (CliError, httpx.InvalidURL) as exc:
            sys.stdout.flush()
            print(f"error: {exc}", file=sys.stderr)
            return 1
        except KeyboardInterrupt:
            return 130
        finally:
            if api is not None:
                api.close()

    return handler


def common_options() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--server", default=os.environ.get("OPENARTS_SERVER", DEFAULT_SERVER),
                        help="server URL (env OPENARTS_SERVER; default %(default)s)")
    common.add_argument("--project", default=os.environ.get("OPENARTS_PROJECT", DEFAULT_PROJECT),
                        help="project id (env OPENARTS_PROJECT; default %(default)s)")
    common.add_argument("--json", action="store_true", help="print the raw JSON")
    return common


def phase_arg(value: str) -> str:
    for phase in PHASES:
        if phase.lower() == value.lower():
            return phase
    raise argparse.ArgumentTypeError(f"unknown phase {value!r}; one of {', '.join(PHASES)}")


def positive_int(value: str) -> int:
    try:
        n = int(value)
    except ValueError:
        n = 0
    if n < 1:
        raise argparse.ArgumentTypeError(f"{value!r} is not a positive integer")
    return n


def add_command(sub: argparse._SubParsersAction[argparse.ArgumentParser], name: str,
                command: Callable[[Api, argparse.Namespace], int], help_: str) -> argparse.ArgumentParser:
    """A client command with the common options (--server, --project, --json)."""
    parser: argparse.ArgumentParser = sub.add_parser(name, parents=[common_options()], help=help_,
                                                     description=help_)
    parser.set_defaults(handler=run_command(command))
    return parser


def add_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    def add(name: str, command: Callable[[Api, argparse.Namespace], int], help_: str) -> argparse.ArgumentParser:
        return add_command(sub, name, command, help_)

    p = add("submit", cmd_submit, "create a training job from a JSON or YAML job body")
    p.add_argument("file", type=Path, help="the job body (.json, .yaml or .yml)")
    p.add_argument("--wait", action="store_true", help="wait until the job is final; exit 0 only if Completed")
    p.add_argument("--name", help="override metadata.name")
    p = add("get", cmd_get, "show a training job")
    p.add_argument("id")
    p = add("list", cmd_list, "list training jobs, newest first")
    p.add_argument("--phase", type=phase_arg, action="extend", nargs="+", help="only jobs in these phases")
    p.add_argument("--name", help="only jobs whose name contains this")
    p.add_argument("--limit", type=positive_int, default=50, help="at most this many jobs (default 50)")
    p = add("logs", cmd_logs, "print a task's log")
    p.add_argument("id")
    p.add_argument("--task", help="the task (default: the job's first, worker-0 or a heterogeneous job's first "
                                  "role's <role>-0)")
    p.add_argument("--follow", "-f", action="store_true", help="keep printing until the job is final")
    p.add_argument("--attempt", type=positive_int, metavar="N",
                   help="the log of attempt N (1 is the first; see the running records of `get`) instead of "
                        "the latest attempt's")
    p = add("stop", cmd_stop, "terminate a training job and show the phase it moved to")
    p.add_argument("id")
    p.add_argument("--wait", action="store_true", help="wait until the job is final (Terminated)")
    p = add("delete", cmd_delete, "delete training jobs")
    p.add_argument("ids", nargs="+", metavar="ID")
