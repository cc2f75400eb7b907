"""Per-call wall times of openarts' main steps, measured inside a benchmark's server (`--trace`).

`install(path)` wraps the functions named in TARGETS (those that exist: the code is still changing) with
a timer before the server starts, and writes {name: [calls, total_s, max_s]} to `path` as JSON when the
process exits. Times are inclusive (a step's callees count in it) and, for coroutines, include the time
spent awaiting (a thread hop, or other requests served by the event loop meanwhile). A sampling profiler
says where CPU goes; this says how long each step of one job's life takes.
"""

from __future__ import annotations

import atexit
import functools
import importlib
import inspect
import json
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

TARGETS: list[tuple[str, str | None, list[str]]] = [
    ("openarts.service.jobs", "JobService", ["create", "get", "search", "terminate"]),
    ("openarts.supervisor.loop", "Supervisor",
     ["reconcile", "_prepare", "_schedule", "_launch", "_start", "_supervise", "_observe", "_record_exit",
      "_finish", "_free_capacity"]),
    ("openarts.executors.local", "LocalExecutor", ["start", "poll", "watch", "cleanup", "signal"]),
    ("openarts.executors.agent", "NodeAgent", ["start", "poll", "cleanup", "signal", "usage"]),
    ("openarts.supervisor.workspace", None, ["stage", "upload_outputs", "check_code"]),
    ("openarts.store.jobs", None,
     ["create_job", "transition", "add_event", "next_queue_seq", "open_attempt", "mark_attempt_started",
      "record_task_exit", "close_attempt", "add_node_count"]),
    ("openarts.store.queries", None,
     ["active_jobs", "current_tasks", "current_attempts", "fenced_nodes", "get_job", "job_details",
      "search_jobs"]),
    ("openarts.service.document", None, ["job_document"]),
    ("openarts.api.render", None, ["job_document"]),  # snapshots from before it moved below the API
]

STATS: dict[str, list[float]] = {}


def _wrap(name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
    stat = STATS.setdefault(name, [0, 0.0, 0.0])

    def record(t0: float) -> None:
        dt = time.perf_counter() - t0
        stat[0] += 1
        stat[1] += dt
        if dt > stat[2]:
            stat[2] = dt

    if inspect.iscoroutinefunction(fn):
        @functools.wraps(fn)
        async def awrapper(*args: Any, **kwargs: Any) -> Any:
            t0 = time.perf_counter()
            try:
                return await fn(*args, **kwargs)
            finally:
                record(t0)

        return awrapper

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        t0 = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            record(t0)

    return wrapper


def install(out: Path) -> list[str]:
    wrapped = []
    for module_name, cls_name, names in TARGETS:
        try:
            module = importlib.import_module(module_name)
        except ImportError:
            continue
        owner = getattr(module, cls_name, None) if cls_name else module
        if owner is None:
            continue
        for attr in names:
            fn = owner.__dict__.get(attr) if cls_name else getattr(owner, attr, None)
            if not callable(fn):
                continue
            label = f"{cls_name}.{attr}" if cls_name else f"{module_name.rsplit('.', 1)[-1]}.{attr}"
            setattr(owner, attr, _wrap(label, fn))
            wrapped.append(label)

    def dump() -> None:
        out.write_text(json.dumps(STATS, indent=1))

    def on_term(signum: int, _frame: Any) -> None:
        # uvicorn re-raises SIGTERM once it has shut down, which would skip atexit
        dump()
        raise SystemExit(128 + signum)

    atexit.register(dump)
    signal.signal(signal.SIGTERM, on_term)
    return wrapped
