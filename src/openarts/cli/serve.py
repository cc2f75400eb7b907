"""`openarts serve`: the whole service in the foreground, zero configuration."""

from __future__ import annotations

import fcntl
import json
import logging
import os
import socket
from pathlib import Path

import uvicorn

from openarts.api.app import create_app
from openarts.config import load_settings


def serve(host: str, port: int, data_dir: Path, config: Path | None, log_level: str = "info") -> int:
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
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(2048)
    sock.set_inheritable(False)
    actual = sock.getsockname()[1]
    url = f"http://{'[' + host + ']' if ':' in host else host}:{actual}"
    tmp = settings.data_dir / "server.json.tmp"
    tmp.write_text(json.dumps({"url": url, "pid": os.getpid()}))
    os.replace(tmp, settings.data_dir / "server.json")  # readers never see half a file
    app = create_app(settings)
    config_ = uvicorn.Config(app, log_level=log_level, access_log=False, loop="auto", http="auto",
                             timeout_graceful_shutdown=5, lifespan="on")
    server = uvicorn.Server(config_)
    print(f"openarts serving on {url} (data in {settings.data_dir})", flush=True)
    server.run(sockets=[sock])
    return 0
