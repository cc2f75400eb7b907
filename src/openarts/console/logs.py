"""A job page's log (docs/CONSOLE.md): one task's log of one attempt (earlier attempts' logs are kept),
its tail followed while the job runs, or searched.

Following is htmx polling with an offset: the page holds the log's last LOG_LINES lines and a poller
that asks for the lines after the last one it has (`/log/follow?after=N`); an answer appends them to the
log (an out-of-band swap) and replaces the poller with one that asks after the new last line; nothing
new is a 204 (htmx keeps polling). A poll brings the log's last FOLLOW_LINES lines at most: a page that
fell further behind skips the lines between, with a note. The poller stops once the attempt it follows
has ended (the job ended, or a later attempt started): the answer then brings its log's end. While
it runs, a last line not yet ended by '\\n' (being written) is held back until it is whole. A search
lists the lines that contain a text, ignoring case, with their numbers (service/logsearch.py: at most
MAX_MATCHES lines, the log's first GiB).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from openarts.console.fragments import FRAGMENTS, is_final, job_fragment, jobs_of, observe_of
from openarts.core import errors
from openarts.core.search import SEARCH_KIND
from openarts.service.logsearch import MAX_SCAN, Found, search
from openarts.service.observe import LineQuery

LOG_LINES = 200  # the tail shown
FOLLOW_LINES = 1000  # lines one poll appends at most
QUERY_CHARS = 200  # longest search text
MAX_CHARS = 1 << 20  # of log text one answer carries at most: its end is kept
SEARCHES = asyncio.Semaphore(1)  # the server's log searches, run one at a time


@dataclass(frozen=True)
class LogView:
    """What the log part of a job's page shows."""

    project: str
    job_id: str
    tasks: list[str]
    task: str
    attempts: int  # the latest attempt's number (0: none yet)
    attempt: int  # the attempt shown
    latest: bool  # the latest was asked for (not a number)
    q: str = ""  # the search
    follow: bool = True  # following was asked for
    final: bool = False  # the job has ended
    content: str = ""  # the tail
    first: int = 0  # its first line's number
    last: int = 0  # its last line's number: the poller asks for the lines after it
    found: Found | None = None  # a search's lines

    @property
    def live(self) -> bool:
        """The attempt shown may still write to its log."""
        return not self.final and self.attempts > 0 and self.attempt == self.attempts

    @property
    def following(self) -> bool:
        return self.follow and self.live and self.found is None

    @property
    def waiting(self) -> bool:
        """No attempt yet: the view asks again until one starts."""
        return not self.final and self.attempts == 0

    @property
    def scan_cut(self) -> bool:
        """The search stopped at MAX_SCAN bytes, before the log's end."""
        return self.found is not None and not self.found.more and self.found.scanned < self.found.size

    @property
    def max_scan_mib(self) -> int:
        return MAX_SCAN >> 20

    def url(self, what: str, **changes: Any) -> str:
        """The URL of this view (`log`) or of its poller (`log/follow`), with `changes` to its query."""
        params: dict[str, Any] = {"task": self.task, "attempt": "" if self.latest else self.attempt,
                                  "q": self.q, "follow": "1" if self.follow else "0"}
        if what == "log/follow":
            params.update(attempt=self.attempt, after=self.last)
            del params["q"]
        params.update(changes)
        query = urlencode({k: v for k, v in params.items() if v not in ("", None)})
        return f"/console/{self.project}/jobs/{self.job_id}/{what}?{query}"


def _choice(request: Request, doc: dict[str, Any], attempts: int) -> LogView:
    """The task, attempt, search and follow a request asks for (the first task and the latest attempt
    when it names none, or one the job does not have)."""
    params = request.query_params
    tasks = list(doc["status"]["tasks"])
    task = params.get("task", "")
    asked = params.get("attempt", "")
    number = int(asked) if asked.isdigit() and len(asked) < 10 and 1 <= int(asked) <= attempts else 0
    follows = params.getlist("follow")  # the form sends follow=0, and follow=1 when it is ticked
    return LogView(project=request.path_params["project_id"], job_id=doc["metadata"]["id"], tasks=tasks,
                   task=task if task in tasks else tasks[0], attempts=attempts, attempt=number or attempts,
                   latest=not number, q=params.get("q", "").strip()[:QUERY_CHARS],
                   follow="1" in follows or not follows, final=is_final(doc))


def _latest_attempt(request: Request, project: str, job_id: str) -> int:
    tasks = observe_of(request).tasks(project, job_id, None)
    return max((int(t["schedule_count"]) for t in tasks), default=0)


async def log_view(request: Request, doc: dict[str, Any]) -> LogView:
    """The log part of a job's page as the request asks for it: the tail of a task's log, or a search."""
    project, job_id = request.path_params["project_id"], doc["metadata"]["id"]
    view = _choice(request, doc, _latest_attempt(request, project, job_id))
    if not view.attempts:
        return view
    observe = observe_of(request)
    path = _log_path(request, view)
    if path is None:
        return replace(view, attempts=0)
    if view.q:
        async with SEARCHES:  # one at a time: a search may read a GiB, and shares the log readers' threads
            found = await observe.off_loop(search, path, view.q)
        return replace(view, found=found)
    page = await observe.off_loop(observe.lines, path, LineQuery(None, LOG_LINES, "desc"))
    content, first, last = _whole(str(page["content"]), int(page["start_line"]), int(page["end_line"]), view.live)
    content, first = _capped(content, first)
    return replace(view, content=content, first=first, last=last)


def _log_path(request: Request, view: LogView) -> Path | None:
    """The log file of the view's task and attempt; None if the job has no such attempt (any more: one
    that never started may be dropped)."""
    try:
        return observe_of(request).task_log(view.project, view.job_id, view.task, str(view.attempt))
    except (errors.LogNotReady, errors.QueryParamsError, errors.TaskNotFound):
        return None


def _capped(content: str, first: int) -> tuple[str, int]:
    """At most MAX_CHARS of `content` (whose first line is number `first`): its end, from a line's start
    where there is one; and the number of the first line kept."""
    if len(content) <= MAX_CHARS:
        return content, first
    cut = content.find("\n", len(content) - MAX_CHARS) + 1 or len(content) - MAX_CHARS
    return content[cut:], first + content.count("\n", 0, cut)


def _whole(content: str, first: int, last: int, live: bool) -> tuple[str, int, int]:
    """A page of lines without its last line while that one is being written (no '\\n' yet)."""
    if live and content and not content.endswith("\n"):
        content = content[:content.rfind("\n") + 1]
        last -= 1
    return content, first, last


@job_fragment
async def log_fragment(request: Request) -> Response:
    """The log part of a job's page (`_log_view.html`), for the form's task, attempt, search and follow."""
    project, job_id = request.path_params["project_id"], request.path_params["job_id"]
    doc = jobs_of(request).get(project, job_id)
    if doc["kind"] == SEARCH_KIND:
        return _no_log()
    return FRAGMENTS.TemplateResponse(request, "_log_view.html", {"logs": await log_view(request, doc)})


@job_fragment
async def follow(request: Request) -> Response:
    """The lines after line `after` of a task's attempt (at most the log's last FOLLOW_LINES: those before
    are skipped, with a note), appended to the page's log; 204 when none came and the attempt still runs.
    The poller stops once the attempt has ended (its log is then all shown)."""
    project, job_id = request.path_params["project_id"], request.path_params["job_id"]
    doc = jobs_of(request).get(project, job_id)  # the phase before the lines: a final job's log is whole
    if doc["kind"] == SEARCH_KIND:
        return _no_log()
    view = replace(_choice(request, doc, _latest_attempt(request, project, job_id)), q="")
    after = request.query_params.get("after", "")
    view = replace(view, last=int(after) if after.isdigit() and len(after) < 16 else 0)
    if not view.attempts:
        return Response(status_code=204) if view.waiting else _poller(request, view, "")
    observe = observe_of(request)
    path = _log_path(request, view)
    if path is None:
        return _poller(request, replace(view, follow=False), "")
    page = await observe.off_loop(observe.lines, path, LineQuery(None, FOLLOW_LINES, "desc"))  # the log's end
    content, first, last = _whole(str(page["content"]), int(page["start_line"]), int(page["end_line"]), view.live)
    skipped = max(0, first - view.last - 1)  # lines between the page's and these: too many to bring
    if last <= view.last:
        content = ""
    elif first <= view.last:  # drop the lines the page has already
        content = "\n".join(content.split("\n")[view.last - first + 1:])
        first = view.last + 1
    content, kept = _capped(content, first)
    skipped += kept - first if content else 0  # a few very long lines: only the end of them is brought
    view = replace(view, last=max(view.last, last))
    if not content and view.following:
        return Response(status_code=204)
    return _poller(request, view, content, skipped if content else 0)


def _poller(request: Request, view: LogView, chunk: str, skipped: int = 0) -> Response:
    return FRAGMENTS.TemplateResponse(request, "_log_follow.html", {"logs": view, "chunk": chunk,
                                                                     "skipped": skipped})


# a hyperparameter search runs no task of its own: its trials have the logs (its page links to them)
def _no_log() -> Response:
    return Response("A search has no log of its own: each of its trials has, on the trial's page.",
                    status_code=404, media_type="text/plain")

LOG_ROUTES = [
    Route("/console/{project_id}/jobs/{job_id}/log", log_fragment, methods=["GET"]),
    Route("/console/{project_id}/jobs/{job_id}/log/follow", follow, methods=["GET"]),
]
