"""Server time of each console page, measured inside a benchmark's server (`BenchServer(hooks=...)`).

`install()` wraps the Starlette application's entry point before the server starts: every response to
a /console/ path gets a `Server-Timing: bench;dur=MS` header, the wall time from the request reaching
the application (all of openarts' middleware included) to the start of its response, which for a
rendered page holds the whole body. It patches the framework, not openarts, so that any revision
(`--snapshot`, OPENARTS_BENCH_SRC) is measured the same way.
"""

from __future__ import annotations

import time
from typing import Any

from starlette.applications import Starlette
from starlette.types import Message, Receive, Scope, Send

HEADER = b"server-timing"
PREFIX = "/console/"


def install() -> None:
    original = Starlette.__call__

    async def timed(self: Any, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not str(scope.get("path", "")).startswith(PREFIX):
            await original(self, scope, receive, send)
            return
        t0 = time.perf_counter()

        async def send_timed(message: Message) -> None:
            if message["type"] == "http.response.start":
                ms = (time.perf_counter() - t0) * 1000
                message["headers"] = [*message.get("headers", []), (HEADER, f"bench;dur={ms:.3f}".encode())]
            await send(message)

        await original(self, scope, receive, send_timed)

    Starlette.__call__ = timed  # type: ignore[method-assign]


def parse(header: str) -> float:
    """The `bench` entry's duration (ms) of a Server-Timing header; nan when it has none."""
    for entry in header.split(","):
        name, _, params = entry.strip().partition(";")
        if name == "bench":
            for param in params.split(";"):
                key, _, value = param.strip().partition("=")
                if key == "dur":
                    return float(value)
    return float("nan")
