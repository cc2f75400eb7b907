"""`openarts serve`: the whole service in the foreground, zero configuration."""

from __future__ import annotations

import fcntl
import json
import logging
import os
import socket
import sys
from pathlib import Path

import uvicorn

from openarts.api.app import create_app
from openarts.config import load_settings
from openarts.security.config import SecurityConfig
from openarts.security.modes import BindRefused, decide


def serve(host: str, port: int, data_dir: Path, config: Path | None, log_level: str = "info", *,
          insecure: bool = False, tls_cert: Path | None = None, tls_key: Path | None = None) -> int:
    settings = load_settings(data_dir, config, host=host, port=port)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    lock = open(settings.data_dir / "server.lock", "w")  # noqa: SIM115 - held for the process lifetime
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        print(f"openarts: another server is already using {settings.data_dir}")
        return 1
    logging.basicConfig(level=getattr(logging, log_level.upper(), logging.INFO),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if (tls_cert is None) != (tls_key is None) or not all(p is None or p.is_file() for p in (tls_cert, tls_key)):
        print("openarts: --tls-cert and --tls-key go together and must name readable PEM files", file=sys.stderr)
        return 2
    try:
        mode = decide(SecurityConfig.from_settings(settings), host, insecure)
    except BindRefused as exc:
        print(f"openarts: {exc}", file=sys.stderr)
        return 2
    if mode.warning:
        print(mode.message, file=sys.stderr, flush=True)
        logging.getLogger("openarts.security").warning("%s", mode.message)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(2048)
    sock.set_inheritable(False)
    actual = sock.getsockname()[1]
    scheme = "https" if tls_cert else "http"
    url = f"{scheme}://{'[' + host + ']' if ':' in host else host}:{actual}"
    tmp = settings.data_dir / "server.json.tmp"
    tmp.write_text(json.dumps({"url": url, "pid": os.getpid()}))
    os.replace(tmp, settings.data_dir / "server.json")  # readers never see half a file
    app = create_app(settings)
    config_ = uvicorn.Config(app, log_level=log_level, access_log=False, loop="auto", http="auto",
                             timeout_graceful_shutdown=5, lifespan="on",
                             ssl_certfile=str(tls_cert) if tls_cert else None,
                             ssl_keyfile=str(tls_key) if tls_key else None)
    server = uvicorn.Server(config_)
    print(f"openarts serving on {url} (data in {settings.data_dir}; security: {mode.name})", flush=True)
    server.run(sockets=[sock])
    return 0
