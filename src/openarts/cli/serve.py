"""`openarts serve`: the whole service in the foreground, zero configuration.

Start-up checks everything that can be checked before the first request, in this order, and stops at
the first problem with one `openarts: ...` line on stderr and exit status 2 (no traceback, no
server.json, nothing listening): the config file (syntax, sections, keys, types, required keys; see
openarts.config), the catalog it describes, the TLS files, the port (bound, not yet listening), the
data directory (created if missing, and written to), the security mode, the data directory's lock.
Only then is the application started; "serving on URL" is printed and DATA_DIR/server.json written
once it answers, and server.json is removed when the server stops.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import fcntl
import json
import logging
import os
import socket
import sys
from collections.abc import Callable
from pathlib import Path
from typing import IO

import uvicorn

from openarts.api.app import create_app, sandbox_of
from openarts.cli.logs import setup_logging
from openarts.config import (
    Check,
    ConfigError,
    Settings,
    any_string,
    check_table,
    integer,
    load_settings,
    number,
    private_dirs,
)
from openarts.core.resources import Catalog, build_catalog
from openarts.executors.sandbox import Sandbox, SandboxUnavailable
from openarts.security.config import SecurityConfig
from openarts.security.modes import BindRefused, Mode, decide

STARTUP_FAILED = 2


class StartupError(Exception):
    """A reason the server cannot start, as the one line the user sees."""


def security_config(settings: Settings) -> SecurityConfig:
    """The [security] section, checked key by key (its keys are SecurityConfig's fields)."""
    path = settings.config_path or settings.data_dir / "config.toml"
    kinds: dict[str, Check] = {"float": number(0), "int": integer(0)}
    keys = {f.name: kinds.get(str(f.type), any_string) for f in dataclasses.fields(SecurityConfig)
            if f.name != "data_dir"}
    check_table(path, "[security]", settings.raw.get("security", {}), keys)
    try:
        return SecurityConfig.from_settings(settings)
    except (ValueError, TypeError) as exc:
        raise ConfigError(path, "[security]", str(exc).removeprefix("[security] ")) from None


def catalog_of(settings: Settings) -> Catalog:
    try:
        return build_catalog(settings.raw)
    except (KeyError, TypeError, ValueError) as exc:  # validate_config should have caught it: say where
        raise ConfigError(settings.config_path or settings.data_dir / "config.toml", "", f"unusable: {exc!r}") from None


def prepare_data_dir(settings: Settings) -> None:
    """Create the data directory and its subdirectories, and prove that it can be written."""
    try:
        for d in (settings.data_dir, settings.jobs_dir, settings.obs_dir):
            d.mkdir(parents=True, exist_ok=True)
        private_dirs(settings)
        probe = settings.data_dir / f".write-test-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        where = f"{exc.filename}: " if exc.filename and Path(exc.filename) != settings.data_dir else ""
        raise StartupError(f"cannot use the data directory {settings.data_dir}: {where}{exc.strerror or exc}") from None


def lock_data_dir(settings: Settings) -> IO[str]:
    try:
        lock = open(settings.data_dir / "server.lock", "w")  # noqa: SIM115 - held for the process lifetime
    except OSError as exc:
        raise StartupError(f"cannot use the data directory {settings.data_dir}: {exc.strerror or exc}") from None
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        lock.close()
        raise StartupError(f"another server is already using {settings.data_dir}") from None
    return lock


def bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))  # a port in use fails here (listen() comes once every check passed)
    except (OSError, OverflowError) as exc:
        sock.close()
        if isinstance(exc, OSError) and exc.errno == errno.EADDRINUSE:
            why = "the address is already in use (another server? choose another --port)"
        else:
            why = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise StartupError(f"cannot listen on {host}:{port}: {why}") from None
    sock.set_inheritable(False)
    return sock


def check_ray(address: str) -> None:
    """Ray is installed and, for a HOST:PORT address, something listens there: ray.init would otherwise
    retry for a minute before it fails with a traceback."""
    import importlib.util

    if importlib.util.find_spec("ray") is None:
        raise StartupError('the Ray executor needs Ray: pip install "openarts[ray]"')
    host, sep, port = address.removeprefix("ray://").rpartition(":")
    if not sep or not port.isdigit():
        return  # "auto" or a name Ray resolves itself
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=5).close()
    except OSError as exc:
        raise StartupError(f"cannot reach the Ray cluster at {address} ([server] ray_address): "
                           f"{exc.strerror or exc}") from None


class _Server(uvicorn.Server):
    """uvicorn's server, calling `on_ready` once the application has started and is listening, and
    `on_stop` once it has shut down (uvicorn then re-raises the signal that stopped it: code after
    run() does not run)."""

    def __init__(self, config: uvicorn.Config, on_ready: Callable[[], None], on_stop: Callable[[], None]) -> None:
        super().__init__(config)
        self.on_ready = on_ready
        self.on_stop = on_stop

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets=sockets)
        if self.started and not self.should_exit:
            self.on_ready()

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        try:
            await super().shutdown(sockets=sockets)
        finally:
            self.on_stop()


def serve(host: str, port: int, data_dir: Path, config: Path | None, log_level: str = "info", *,
          insecure: bool = False, tls_cert: Path | None = None, tls_key: Path | None = None,
          executor: str | None = None, ray_address: str | None = None, log_format: str | None = None) -> int:
    try:
        return _serve(host, port, data_dir, config, log_level, insecure, tls_cert, tls_key, executor, ray_address,
                      log_format)
    except (StartupError, ConfigError, BindRefused) as exc:
        print(f"openarts: {exc}", file=sys.stderr, flush=True)
        return STARTUP_FAILED


def _serve(host: str, port: int, data_dir: Path, config: Path | None, log_level: str, insecure: bool,
           tls_cert: Path | None, tls_key: Path | None, executor: str | None, ray_address: str | None,
           log_format: str | None = None) -> int:
    settings = load_settings(data_dir, config, host=host, port=port, executor=executor, ray_address=ray_address)
    if log_format:
        settings.log_format = log_format
    if settings.executor == "ray":
        check_ray(settings.ray_address)
    security = security_config(settings)
    catalog = catalog_of(settings)
    if (tls_cert is None) != (tls_key is None) or not all(p is None or p.is_file() for p in (tls_cert, tls_key)):
        raise StartupError("--tls-cert and --tls-key go together and must name readable PEM files")
    sock = bind(host, port)  # before anything is written: a port in use leaves no data directory behind
    try:
        prepare_data_dir(settings)
        mode = decide(security, host, insecure)
        try:
            sandbox = sandbox_of(settings, catalog, [p.resolve() for p in (tls_key, tls_cert) if p])
        except SandboxUnavailable as exc:
            raise StartupError(f'the sandbox cannot be used here ([server] sandbox = "on"): {exc}') from None
        lock = lock_data_dir(settings)
        try:
            sock.listen(2048)
            return _run(settings, catalog, sandbox, mode, sock, log_level, tls_cert, tls_key)
        finally:
            lock.close()
    finally:
        sock.close()


def _run(settings: Settings, catalog: Catalog, sandbox: tuple[Sandbox | None, str], mode: Mode,
         sock: socket.socket, log_level: str, tls_cert: Path | None, tls_key: Path | None) -> int:
    host = settings.host
    actual = sock.getsockname()[1]
    scheme = "https" if tls_cert else "http"
    url = f"{scheme}://{'[' + host + ']' if ':' in host else host}:{actual}"
    info = settings.data_dir / "server.json"
    settings.server_url = url  # for the nodes' agents (executors/bundles.py)

    def ready() -> None:
        tmp = settings.data_dir / "server.json.tmp"
        tmp.write_text(json.dumps({"url": url, "pid": os.getpid()}))
        os.replace(tmp, info)  # readers never see half a file
        print(f"openarts serving on {url} (data in {settings.data_dir}; security: {mode.name})", flush=True)

    json_logs = settings.log_format == "json"
    config = uvicorn.Config(create_app(settings, catalog, sandbox), log_level=log_level, access_log=False, loop="auto",
                            log_config=None if json_logs else uvicorn.config.LOGGING_CONFIG,
                            http="auto", timeout_graceful_shutdown=5, lifespan="on",
                            ssl_certfile=str(tls_cert) if tls_cert else None,
                            ssl_keyfile=str(tls_key) if tls_key else None)
    try:
        config.load()  # reads the TLS files
        settings.server_certificate = tls_cert.read_text() if tls_cert else ""
    except (OSError, ValueError) as exc:
        raise StartupError(f"cannot use --tls-cert {tls_cert} / --tls-key {tls_key}: {exc}") from None
    setup_logging(log_level, settings.log_format)
    if sandbox[0] is None and settings.sandbox != "off" and settings.executor == "local":
        print(f"openarts: warning: workers run WITHOUT a sandbox: {sandbox[1]} (docs/SANDBOX.md)",
              file=sys.stderr, flush=True)
    if mode.warning:
        print(mode.message, file=sys.stderr, flush=True)
        logging.getLogger("openarts.security").warning("%s", mode.message)

    def stopped() -> None:
        with contextlib.suppress(OSError, ValueError):
            if json.loads(info.read_text()).get("pid") == os.getpid():
                info.unlink()  # a stopped server leaves no address behind

    server = _Server(config, ready, stopped)
    try:
        server.run(sockets=[sock])
    finally:
        stopped()
    return 0 if server.started else 1
