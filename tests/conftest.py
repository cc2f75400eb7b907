"""Shared fixtures: a real `openarts serve` process on an ephemeral port, and the official SDK."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import ssl
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

PROJECT = "0123456789abcdef0123456789abcdef"

# Enough virtual capacity that tests never queue behind each other unless they mean to.
DEFAULT_CONFIG = """
[server]
terminate_grace_seconds = 3
metrics_interval_seconds = 1
reconcile_interval_seconds = 0.5
output_period_seconds = 2

[[nodes]]
name = "local"
cpu_cores = 64
memory_gb = 256
"""


def wait_for(predicate: Callable[[], Any], timeout: float = 30.0, interval: float = 0.05,
             message: str = "condition") -> Any:
    """Poll `predicate` until it returns a truthy value; fail the test after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {message} (last value: {last!r})")


def with_test_files_visible(config: str, data_dir: Path) -> str:
    """Let sandboxed workers read the test's own files (gates, code, markers), read-only: the directory
    that holds the data directory (the test's tmp_path), unless the config says otherwise. The data
    directory in it stays hidden from jobs, as the sandbox hides a data directory under anything it
    shows."""
    if "sandbox_read_only" in config:
        return config
    line = f'sandbox_read_only = ["{data_dir.parent}"]'
    if "[server]\n" in config:
        return config.replace("[server]\n", f"[server]\n{line}\n", 1)
    return f"[server]\n{line}\n\n{config}"


@dataclass
class Server:
    data_dir: Path
    config: str
    log_path: Path
    proc: subprocess.Popen[bytes] | None = None
    url: str = ""
    env: dict[str, str] | None = None  # extra environment for the server process (fault points)
    flags: list[str] = field(default_factory=list)  # extra `openarts serve` flags (--tls-cert ...)
    ca_file: Path | None = None  # trust this CA for the health check (a TLS server)

    def start(self) -> Server:
        (self.data_dir / "server.json").unlink(missing_ok=True)
        (self.data_dir / "config.toml").write_text(with_test_files_visible(self.config, self.data_dir))
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "openarts.cli.main", "serve", "--port", "0", "--data-dir", str(self.data_dir),
             "--log-level", "warning", *self.flags],
            stdout=log, stderr=log, start_new_session=True, env={**os.environ, **(self.env or {})},
        )

        def ready() -> bool:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise AssertionError(f"server exited: {self.log_path.read_text()[-3000:]}")
            info = self.data_dir / "server.json"
            if not info.exists():
                return False
            self.url = json.loads(info.read_text())["url"]
            try:
                verify: Any = ssl.create_default_context(cafile=str(self.ca_file)) if self.ca_file else True
                return httpx.get(f"{self.url}/health", timeout=1, verify=verify).status_code == 200
            except httpx.HTTPError:
                return False

        wait_for(ready, timeout=30, message="server health")
        return self

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def kill9(self) -> None:
        self.stop(signal.SIGKILL)

    @property
    def api(self) -> str:
        return f"{self.url}/v2/{PROJECT}"


@pytest.fixture
def make_server(tmp_path: Path) -> Iterator[Callable[..., Server]]:
    servers: list[Server] = []

    def make(config: str = DEFAULT_CONFIG, data_dir: Path | None = None) -> Server:
        d = data_dir or tmp_path / f"data{len(servers)}"
        d.mkdir(parents=True, exist_ok=True)
        s = Server(d, config, tmp_path / f"server{len(servers)}.log").start()
        servers.append(s)
        return s

    yield make
    for s in servers:
        s.stop()
        _kill_leftover_workers(s.data_dir)


def _kill_leftover_workers(data_dir: Path) -> None:
    """Tests must not leave processes behind, even when they fail half-way."""
    for pid_file in (data_dir / "jobs").glob("*/attempts/*/*/worker.pid"):
        with contextlib.suppress(OSError, ValueError):
            os.killpg(int(pid_file.read_text()), signal.SIGKILL)


@pytest.fixture
def server(make_server: Callable[..., Server]) -> Server:
    return make_server()


@pytest.fixture
def http(server: Server) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.api, timeout=30) as client:
        yield client


@pytest.fixture(autouse=True)
def _sdk_home(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """The SDK writes ~/.huaweicloud on import; keep it out of the real HOME."""
    monkeypatch.setenv("HOME", str(tmp_path_factory.mktemp("home")))


def sdk_client(server: Server) -> Any:
    from huaweicloudsdkcore.auth.credentials import BasicCredentials
    from huaweicloudsdkmodelarts.v1 import ModelArtsClient

    creds = BasicCredentials("TESTAK0000000000", "TESTSK0000000000000000000000000000000000", PROJECT)
    return ModelArtsClient.new_builder().with_credentials(creds).with_endpoint(server.url).build()


@pytest.fixture
def sdk(server: Server) -> Any:
    return sdk_client(server)


@pytest.fixture
def sdk_for() -> Callable[[Server], Any]:
    return sdk_client


def job_body(name: str, command: str | None = None, node_count: int = 1, **algorithm: Any) -> dict[str, Any]:
    algo: dict[str, Any] = dict(algorithm)
    if command is not None:
        algo["command"] = command
    return {
        "kind": "job",
        "metadata": {"name": name, "description": "test job"},
        "algorithm": algo,
        "spec": {"resource": {"flavor_id": "modelarts.local.cpu.1u", "node_count": node_count}},
    }


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Any, str]]:
    """A real registry on 127.0.0.1 holding a small image (tests/registry_support.py), and the image's
    reference; one per test module that asks for it."""
    from registry_support import build_and_push, start_registry

    reg = start_registry(tmp_path_factory.mktemp("registry"))
    try:
        yield reg, build_and_push(reg, tmp_path_factory.mktemp("image"))
    finally:
        reg.stop()


@pytest.fixture(scope="module")
def s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """A real S3-compatible server on 127.0.0.1 that checks signatures (SeaweedFS, tests/s3_support.py),
    with bucket `bkt`; one per test module that asks for it."""
    from s3_support import start_s3

    server = start_s3(tmp_path_factory.mktemp("s3"))
    server.create_bucket("bkt")
    try:
        yield server
    finally:
        server.stop()
