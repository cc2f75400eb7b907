"""Helpers for the security tests (tests/test_security_*.py): credentials through the real CLI, a
server started with extra `serve` flags (TLS), SDK clients with given keys, and signed raw requests."""

from __future__ import annotations

import http.client
import json
import os
import subprocess
import sys
import uuid
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import requests

from conftest import PROJECT, Server
from openarts.security.client import SdkHmacAuth
from openarts.security.signer import sign

PROJECT_B = "fedcba9876543210fedcba9876543210"
MISSING_JOB = "00000000-0000-4000-8000-000000000000"


def cli(data_dir: Path, *args: str, stdin: str | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run `openarts ARGS --data-dir DATA_DIR` as a user would."""
    proc = subprocess.run([sys.executable, "-m", "openarts.cli.main", *args, "--data-dir", str(data_dir)],
                          input=stdin, capture_output=True, text=True, timeout=60, env=dict(os.environ))
    if check and proc.returncode != 0:
        raise AssertionError(f"openarts {' '.join(args)} failed ({proc.returncode}): {proc.stderr}")
    return proc


@dataclass(frozen=True)
class Key:
    access_key: str
    secret_key: str
    project_id: str
    user_name: str


def create_key(data_dir: Path, project: str = PROJECT, user: str = "alice", *more_projects: str) -> Key:
    extra = [a for p in more_projects for a in ("--project", p)]
    out = json.loads(cli(data_dir, "credentials", "create", "--project", project, *extra, "--user", user,
                         "--json").stdout)
    assert set(out) >= {"access_key", "secret_key", "project_id", "user_name"}
    return Key(out["access_key"], out["secret_key"], out["project_id"], out["user_name"])


def create_token(data_dir: Path, key: Key, project: str | None = None, ttl: float = 3600) -> dict[str, Any]:
    out: dict[str, Any] = json.loads(cli(data_dir, "token", "create", "--access-key", key.access_key, "--project",
                                         project or key.project_id, "--ttl", str(ttl), "--json").stdout)
    return out


def sdk_for_key(server: Server, key: Key, project: str | None = None, http_config: Any = None) -> Any:
    from huaweicloudsdkcore.auth.credentials import BasicCredentials
    from huaweicloudsdkmodelarts.v1 import ModelArtsClient

    builder = ModelArtsClient.new_builder().with_credentials(
        BasicCredentials(key.access_key, key.secret_key, project or key.project_id)).with_endpoint(server.url)
    if http_config is not None:
        builder = builder.with_http_config(http_config)
    return builder.build()


def signed_client(server: Server, key: Key, project: str | None = None, **kw: Any) -> httpx.Client:
    """httpx with AK/SK signing (plus a signed nonce) against /v2/{project}."""
    project = project or key.project_id
    return httpx.Client(base_url=f"{server.url}/v2/{project}", timeout=30,
                        auth=SdkHmacAuth(key.access_key, key.secret_key, project), **kw)


def signed_headers(method: str, url: str, key: Key, body: bytes = b"", when: datetime | None = None,
                   headers: dict[str, str] | None = None) -> dict[str, str]:
    """The headers of a request signed exactly like the SDK (no nonce), for tampering with afterwards."""
    h = {"Content-Type": "application/json", "X-Project-Id": key.project_id, **(headers or {})}
    h.update(sign(method, url, h, body, key.access_key, key.secret_key, when=when,
                  sign_only=("content-type", "host", "x-project-id", "x-sdk-date", "user-agent")))
    return h


def raw_request(server: Server, method: str, raw_path: str, headers: dict[str, str],
                body: bytes = b"") -> tuple[int, bytes]:
    """Send the path exactly as given (no client normalises '..' or percent-escapes away)."""
    parts = urlsplit(server.url)
    conn = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port, timeout=30)
    try:
        conn.putrequest(method, raw_path, skip_host=True, skip_accept_encoding=True)
        conn.putheader("Host", parts.netloc)
        for k, v in headers.items():
            conn.putheader(k, v)
        conn.putheader("Content-Length", str(len(body)))
        conn.endheaders(body)
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


class RequestsSigner(requests.auth.AuthBase):
    """requests auth (used by schemathesis) signing the prepared request's final bytes."""

    def __init__(self, key: Key) -> None:
        self.key = key

    def __call__(self, r: requests.PreparedRequest) -> requests.PreparedRequest:
        body = r.body or b""
        if isinstance(body, str):
            body = body.encode()
        r.headers["X-Openarts-Nonce"] = uuid.uuid4().hex
        r.headers.update(sign(r.method or "GET", r.url or "", dict(r.headers), body, self.key.access_key,
                              self.key.secret_key))
        return r


FlagServer = Server  # flags and ca_file live on conftest's Server


def error_of(resp: httpx.Response) -> tuple[int, str, str]:
    body = resp.json()
    return resp.status_code, body["error_code"], body["error_msg"]
