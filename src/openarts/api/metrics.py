"""Prometheus: `/metrics` in the text exposition format, and the API's own request metrics.

`/metrics` serves one registry per app: the supervisor's counters and histograms
(supervisor/telemetry.py), jobs by phase and the queue depth read from the store at each scrape
(service/telemetry.py), the requests counted here, and the process's RSS, CPU and open files
(prometheus_client's process collector). It is authenticated like the API (open on a server without
credentials; AK/SK or X-Auth-Token otherwise), unless `[server] metrics_public = true` opens it to any
scraper that reaches the port (api/auth.py): it holds counts and route templates, never a job's data.

Requests are labelled by route template (`/v2/{project_id}/training-jobs/{job_id}`), never by
raw path, so that ids do not multiply the series; one refused before routing (authentication, size
limits) is matched against the routes afterwards.
"""

from __future__ import annotations

import asyncio
import logging
import time

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Match, Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

access = logging.getLogger("openarts.access")  # a line per request with `[server] access_log`

PATH = "/metrics"
UNMATCHED = "(unmatched)"
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})  # any other: "other"
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

REQUESTS = Counter("openarts_http_requests", "API requests answered, by method, route template and status",
                   ["method", "route", "status"], registry=None)
LATENCY = Histogram("openarts_http_request_duration_seconds", "API request latency, by method and route "
                    "template", ["method", "route"], buckets=LATENCY_BUCKETS, registry=None)


def registry_of(collectors: list[Collector]) -> CollectorRegistry:
    """A registry of this app's own: every collector given, the request metrics and the process's."""
    registry = CollectorRegistry(auto_describe=True)
    for c in (*collectors, REQUESTS, LATENCY):
        registry.register(c)
    ProcessCollector(registry=registry)
    return registry


async def metrics(request: Request) -> Response:
    registry: CollectorRegistry = request.app.state.metrics
    request.app.state.stored_jobs.refresh()  # the store is read on the event loop only
    body = await asyncio.to_thread(generate_latest, registry)  # the formatting: off it
    return Response(body, media_type=CONTENT_TYPE_LATEST)


METRICS_ROUTES = [Route(PATH, metrics, methods=["GET"])]


class RequestMetrics:
    """Counts every HTTP request and times it, refused ones included (outermost middleware)."""

    def __init__(self, app: ASGIApp, routes: list[BaseRoute], access_log: bool = False) -> None:
        self.app = app
        self.routes = routes
        self.access_log = access_log
        self._series: dict[tuple[str, str, int], tuple[Counter, Histogram]] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        began = time.perf_counter()
        status = 500

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            method = scope["method"] if scope["method"] in METHODS else "other"
            key = (method, self._route(scope), status)
            series = self._series.get(key)
            if series is None:
                series = self._series[key] = (REQUESTS.labels(key[0], key[1], str(status)),
                                              LATENCY.labels(key[0], key[1]))
            took = time.perf_counter() - began
            series[0].inc()
            series[1].observe(took)
            if self.access_log:
                rid = scope.get("openarts.request_id", "")
                access.info("%s %s %d %.1f ms", method, scope["path"], status, took * 1000, extra={
                    "request_id": rid, "method": method, "route": key[1], "path": scope["path"], "status": status,
                    "duration_ms": round(took * 1000, 3)})

    def _route(self, scope: Scope) -> str:
        route = scope.get("route")
        if route is None:  # refused before routing: which route it was for
            route = next((r for r in self.routes if r.matches(scope)[0] is not Match.NONE), None)
        path = getattr(route, "path", None)
        return path if isinstance(path, str) else UNMATCHED
