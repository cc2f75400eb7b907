"""The application: wires settings, store, catalog, executor, supervisor and routes together.

Start-up order matters: the supervisor's first full pass re-adopts every job the previous server left
behind before the first request is served.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from openarts import __version__
from openarts.api import errors as api_errors
from openarts.api.agents import AGENT_ROUTES
from openarts.api.auth import MAX_BODY, AuthMiddleware
from openarts.api.context import REQUEST_ID
from openarts.api.iam import IAM_ROUTES
from openarts.api.metrics import METRICS_ROUTES, RequestMetrics, registry_of
from openarts.api.metrics import PATH as METRICS_PATH
from openarts.api.openapi import build_openapi
from openarts.api.routes import ROUTES
from openarts.api.unimplemented import UNIMPLEMENTED_ROUTES
from openarts.config import Settings, private_dirs
from openarts.console.routes import CONSOLE_ROUTES
from openarts.core.errors import OpenartsError
from openarts.core.resources import Catalog, build_catalog
from openarts.executors.base import Executor
from openarts.executors.images import ImageStore, registries_of
from openarts.executors.local import LocalExecutor
from openarts.executors.sandbox import Sandbox, open_sandbox, sandbox_paths
from openarts.security.attempt_tokens import AttemptTokens
from openarts.security.config import SecurityConfig
from openarts.security.guard import Guard
from openarts.security.log_links import LogLinks
from openarts.security.secretbox import load_master_key
from openarts.service.algorithms import AlgorithmService
from openarts.service.attempt_files import AttemptFiles
from openarts.service.catalog import CatalogService
from openarts.service.experiments import ExperimentService
from openarts.service.jobs import JobService, static_renderer
from openarts.service.observe import ObserveService
from openarts.service.search import SearchService
from openarts.service.tags import TagService
from openarts.service.telemetry import StoredJobs
from openarts.storage.obs import LocalObjectStore, ObjectStore
from openarts.storage.s3 import S3ObjectStore, S3Options
from openarts.store.db import open_db
from openarts.supervisor import telemetry
from openarts.supervisor.loop import Supervisor
from openarts.supervisor.metrics import MetricsSampler
from openarts.supervisor.notifier import Notifier

log = logging.getLogger("openarts")


class RequestId:
    """Adds X-Request-Id to every response (the SDK reads it into its exceptions), and answers an
    unexpected exception with the ModelArts error body instead of a traceback."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        rid = os.urandom(16).hex().encode()  # a uuid4's randomness, without building a UUID
        scope["openarts.request_id"] = rid.decode()
        token = REQUEST_ID.set(rid.decode())  # on every log record of this request (api/context.py)

        started = False

        async def send_with_id(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                message["headers"] = [*message.get("headers", []), (b"x-request-id", rid)]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        except Exception as exc:
            log.error("unhandled error on %s %s", scope.get("method"), scope.get("path"), exc_info=exc)
            if started:
                raise
            body = api_errors.error_body("ModelArts.0050", "Internal error; see the server log.")
            await send({"type": "http.response.start", "status": 500,
                        "headers": [(b"content-type", b"application/json"), (b"x-request-id", rid),
                                    (b"content-length", str(len(body)).encode())]})
            await send({"type": "http.response.body", "body": body})
        finally:
            REQUEST_ID.reset(token)


def sandbox_of(settings: Settings, catalog: Catalog, secrets: list[Path] | None = None) -> tuple[Sandbox | None, str]:
    """The workers' sandbox, or None and why not (executors/sandbox.py); sets `settings.sandboxed`.
    Hidden from jobs beside the data directory and the config file: the master key wherever it is, and
    `secrets` (the TLS key)."""
    key = SecurityConfig.from_settings(settings).master_key_file
    env_key = os.environ.get("OPENARTS_MASTER_KEY_FILE")
    hidden = [Path(p) for p in (key, env_key, *(secrets or [])) if p]
    settings.secret_paths = hidden
    if settings.executor == "ray":  # each node's agent makes its own (executors/ray_agent.py)
        settings.sandboxed = True
        return None, "workers run in their Ray nodes' sandboxes"
    interpreters = [e.python for e in catalog.engines.values() if not e.image_url]
    sandbox, why = open_sandbox(settings, interpreters, hidden)
    settings.sandboxed = sandbox is not None
    return sandbox, why


async def executor_of(settings: Settings, catalog: Catalog, box: Sandbox | None,
                      images: ImageStore | None, tokens: AttemptTokens) -> Executor:
    """The executor `[server] executor` names: this machine's, or a Ray cluster's (connected in a thread:
    joining a cluster takes seconds; its nodes replace the catalog's)."""
    if settings.executor != "ray":
        return LocalExecutor(asyncio.get_running_loop(), box, images)
    from openarts.executors.ray import RayExecutor

    hidden, read_only = sandbox_paths(settings, [e.python for e in catalog.engines.values() if not e.image_url],
                                      settings.secret_paths)
    return await asyncio.to_thread(RayExecutor, settings, catalog, hidden, read_only, tokens.token, images)


def store_of(settings: Settings) -> ObjectStore:
    """The object store behind obs:// (`[storage]`): the embedded one under the data directory, or an
    S3-compatible service."""
    table = settings.raw.get("storage", {})
    if table.get("backend", "local") == "s3":
        return S3ObjectStore(S3Options.from_table(table))
    return LocalObjectStore(settings.obs_dir)


def create_app(settings: Settings, catalog: Catalog | None = None,
               sandbox: tuple[Sandbox | None, str] | None = None) -> Starlette:
    """The application; `catalog` (nodes, flavors, engines) is built from the settings when not given,
    and the sandbox (`sandbox_of`) is opened at start-up when not given."""
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    settings.jobs_dir.mkdir(parents=True, exist_ok=True)
    settings.obs_dir.mkdir(parents=True, exist_ok=True)
    private_dirs(settings)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        db = open_db(settings.db_path)
        cat = catalog or build_catalog(settings.raw)
        box, why = sandbox if sandbox is not None else sandbox_of(settings, cat)
        if box is None and settings.executor == "local":
            log.warning("workers run without a sandbox: %s (docs/SANDBOX.md)", why)
        images = (ImageStore(settings.images_dir, registries_of(settings.raw.get("registries", [])))
                  if box or settings.executor == "ray" else None)  # on Ray: pulled here, fetched by the nodes
        security = SecurityConfig.from_settings(settings)
        master_key = load_master_key(settings.data_dir, security.master_key_file)
        tokens = AttemptTokens(master_key)
        executor = await executor_of(settings, cat, box, images, tokens)
        store = store_of(settings)
        sampler = MetricsSampler(settings, db, cat, executor, settings.metrics_interval_seconds)
        supervisor = Supervisor(settings, db, cat, executor, store, sampler, images,
                                render=static_renderer(settings, cat))
        notifier = Notifier(settings, db)
        await supervisor.adopt()  # before serving
        app.state.supervisor = supervisor
        app.state.jobs = JobService(settings, db, cat, supervisor.poke, store)
        app.state.observe = ObserveService(settings, db, LogLinks(master_key), store)
        app.state.search = SearchService(settings, db, supervisor.poke)
        app.state.catalog = CatalogService(cat)
        app.state.experiments = ExperimentService(db)
        app.state.algorithms = AlgorithmService(db, cat)
        app.state.tags = TagService(db)
        app.state.attempt_files = AttemptFiles(settings, tokens, db)
        app.state.stored_jobs = StoredJobs(db)
        app.state.metrics = registry_of([*telemetry.ALL, app.state.stored_jobs])
        tasks = [asyncio.create_task(supervisor.run(), name="supervisor"),
                 asyncio.create_task(sampler.run(), name="metrics"),
                 asyncio.create_task(notifier.run(), name="notifier"),
                 asyncio.create_task(executor.run(), name="executor")]
        log.info("openarts %s ready: data in %s", __version__, settings.data_dir)
        try:
            yield
        finally:
            supervisor.stop()
            sampler.stop()
            notifier.stop()
            for t in tasks[:3]:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(t, timeout=5)
            executor.close()  # after the supervisor's last pass
            with contextlib.suppress(Exception):
                await asyncio.wait_for(tasks[3], timeout=5)
            app.state.observe.close()
            store.close()
            db.close()

    exception_handlers: dict[Any, Any] = {
        OpenartsError: api_errors.domain_error,
        HTTPException: api_errors.http_error,
    }
    routes = [*ROUTES, *IAM_ROUTES]  # what /openapi.json describes; the unimplemented ones only answer 501
    guard = Guard(SecurityConfig.from_settings(settings))
    app = Starlette(routes=[*routes, *METRICS_ROUTES, *CONSOLE_ROUTES, *UNIMPLEMENTED_ROUTES, *AGENT_ROUTES],
                    lifespan=lifespan,
                    exception_handlers=exception_handlers)
    app.router.redirect_slashes = False  # a 307 would look like success to the SDK
    app.state.version = __version__
    app.state.openapi = build_openapi(routes, __version__)
    app.state.guard = guard
    app.state.translate_error = api_errors.translate  # the console shows the API's error codes
    app.add_middleware(AuthMiddleware, guard=guard, max_body=MAX_BODY,  # inside RequestId: refusals get an id
                       open_paths=frozenset({METRICS_PATH}) if settings.metrics_public else frozenset())
    app.add_middleware(RequestId)
    app.add_middleware(RequestMetrics, routes=app.routes,  # outermost: refused requests counted too
                       access_log=settings.access_log)
    return app
