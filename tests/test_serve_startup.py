"""`openarts serve` refuses to start on bad ground with one clear line, exit status 2, no traceback and
nothing half-started (no server.json, nothing listening, no process left): a malformed or wrong config
file, a port in use, an unusable data directory, a data directory another server holds. Real processes."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from conftest import DEFAULT_CONFIG, wait_for


def serve(data_dir: Path, *args: str, config: str | None = None) -> subprocess.CompletedProcess[str]:
    if config is not None:
        data_dir.mkdir(parents=True, exist_ok=True)
        (data_dir / "config.toml").write_text(config)
    return subprocess.run([sys.executable, "-m", "openarts.cli.main", "serve", "--port", "0", "--data-dir",
                           str(data_dir), "--log-level", "warning", *args],
                          capture_output=True, text=True, timeout=60, start_new_session=True, check=False)


def assert_refused(result: subprocess.CompletedProcess[str], *fragments: str) -> str:
    """Exit 2, nothing on stdout (no "serving on"), exactly one line on stderr containing `fragments`."""
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("openarts: ")
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


CONFIGS = [
    # (config.toml, what the one line must say); every other config check: tests/unit/test_config.py
    ('[[engines]]\nengine_name = "PyTorch"\npython = "/usr/bin/python3"\n',
     ["[[engines]] entry 1", "missing required key 'engine_id'"]),
    ("[server\nterminate_grace_seconds = 3\n", ["not valid TOML", "line 1"]),
    ("[server]\nterminate_grace_secs = 3\n",
     ["[server] terminate_grace_secs", "unknown key", "did you mean 'terminate_grace_seconds'?"]),
    ('[[nodes]]\nname = "a"\ncpu_cores = "eight"\n', ["[[nodes]] entry 1 cpu_cores", "must be a number", "'eight'"]),
    ("[security]\nclock_skew = 5\n", ["[security] clock_skew", "unknown key"]),
]


@pytest.mark.parametrize(("config", "says"), CONFIGS, ids=[c[1][0] for c in CONFIGS])
def test_bad_config_is_one_clear_line(tmp_path: Path, config: str, says: list[str]) -> None:
    data_dir = tmp_path / "d"
    line = assert_refused(serve(data_dir, config=config), str(data_dir / "config.toml"), *says)
    assert "Traceback" not in line
    assert not (data_dir / "server.json").exists()
    assert sorted(p.name for p in data_dir.iterdir()) == ["config.toml"]  # nothing written beside it


def test_missing_config_file_named_with_config(tmp_path: Path) -> None:
    assert_refused(serve(tmp_path / "d", "--config", str(tmp_path / "nope.toml")), "nope.toml", "no such file")
    assert not (tmp_path / "d").exists()


def test_port_in_use(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        result = subprocess.run([sys.executable, "-m", "openarts.cli.main", "serve", "--port", str(port),
                                 "--data-dir", str(tmp_path / "d")], capture_output=True, text=True, timeout=60)
    assert_refused(result, f"cannot listen on 127.0.0.1:{port}", "already in use")
    assert not (tmp_path / "d").exists()  # refused before anything was written


def test_bad_port_argument(tmp_path: Path) -> None:
    result = serve(tmp_path / "d", "--port", "70000")
    assert result.returncode == 2 and "not a TCP port" in result.stderr and "Traceback" not in result.stderr


def test_unusable_data_directory(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    assert_refused(serve(tmp_path / "file" / "d"), f"cannot use the data directory {tmp_path / 'file' / 'd'}",
                   "Not a directory")


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes to a read-only directory")
def test_read_only_data_directory(tmp_path: Path) -> None:
    data_dir = tmp_path / "ro"
    data_dir.mkdir()
    data_dir.chmod(0o500)
    try:
        assert_refused(serve(data_dir), f"cannot use the data directory {data_dir}", "Permission denied")
    finally:
        data_dir.chmod(0o700)


def test_second_server_on_the_same_data_directory_and_clean_stop(tmp_path: Path) -> None:
    data_dir = tmp_path / "d"
    data_dir.mkdir()
    (data_dir / "config.toml").write_text(DEFAULT_CONFIG)
    log = (tmp_path / "server.log").open("w")
    first = subprocess.Popen([sys.executable, "-m", "openarts.cli.main", "serve", "--port", "0", "--data-dir",
                              str(data_dir), "--log-level", "warning"], stdout=log, stderr=log, start_new_session=True)
    try:
        info = data_dir / "server.json"
        url = wait_for(lambda: info.exists() and json.loads(info.read_text())["url"], timeout=30,
                       message="server.json")
        assert httpx.get(f"{url}/health", timeout=5).status_code == 200  # written once it answers
        assert "openarts serving on " + url in (tmp_path / "server.log").read_text()
        assert_refused(serve(data_dir), f"another server is already using {data_dir}")
        assert json.loads(info.read_text())["pid"] == first.pid  # the refused one did not touch it
    finally:
        first.send_signal(signal.SIGTERM)
        first.wait(timeout=30)
        log.close()
    assert not (data_dir / "server.json").exists()  # a stopped server leaves no address behind
