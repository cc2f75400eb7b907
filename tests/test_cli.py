"""The client commands of `openarts`, run as real subprocesses against a real server."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from conftest import PROJECT, Server, job_body, wait_for
from openarts.cli import client

UUID_RE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
FINAL = ("Completed", "Failed", "Terminated", "Abnormal")


def cli(server: Server | str, *args: str, timeout: float = 90) -> subprocess.CompletedProcess[str]:
    url = server if isinstance(server, str) else server.url
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPENARTS_") and k != "COLUMNS"}
    return subprocess.run([sys.executable, "-m", "openarts.cli.main", *args, "--server", url, "--project", PROJECT],
                          capture_output=True, text=True, timeout=timeout, env=env, check=False)


def write_job(tmp_path: Path, name: str, command: str, suffix: str = ".json", **kw: Any) -> Path:
    path = tmp_path / f"{name}{suffix}"
    body = job_body(name, command=command, **kw)
    path.write_text(json.dumps(body) if suffix == ".json" else yaml.safe_dump(body))
    return path


def show(server: Server, job_id: str) -> dict[str, Any]:
    doc: dict[str, Any] = httpx.get(f"{server.api}/training-jobs/{job_id}", timeout=10).json()
    return doc


def create(server: Server, name: str, command: str) -> str:
    resp = httpx.post(f"{server.api}/training-jobs", json=job_body(name, command=command), timeout=10)
    assert resp.status_code == 201, resp.text
    job_id: str = resp.json()["metadata"]["id"]
    return job_id


def wait_phase(server: Server, job_id: str, *phases: str, timeout: float = 30) -> dict[str, Any]:
    def reached() -> dict[str, Any] | None:
        doc = show(server, job_id)
        return doc if doc["status"]["phase"] in phases else None

    doc: dict[str, Any] = wait_for(reached, timeout=timeout, message=f"job {job_id} in {phases}")
    return doc


def assert_clean_failure(result: subprocess.CompletedProcess[str], *fragments: str) -> None:
    assert result.returncode == 1, (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    assert result.stderr.startswith("error: ")
    for fragment in fragments:
        assert fragment in result.stderr


def test_submit_wait_completed(server: Server, tmp_path: Path) -> None:
    path = write_job(tmp_path, "cli-ok", "echo fine")
    result = cli(server, "submit", str(path), "--wait")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert UUID_RE.match(lines[0])
    assert "Completed" in result.stdout
    assert "worker-0: exit code 0" in result.stdout
    assert "end reason: job completed" in result.stdout
    assert "\x1b[" not in result.stdout + result.stderr  # not a terminal: no spinner, no colours
    assert show(server, lines[0])["status"]["phase"] == "Completed"


def test_submit_wait_failed(server: Server, tmp_path: Path) -> None:
    path = write_job(tmp_path, "cli-fail", "echo about to fail; exit 3")
    result = cli(server, "submit", str(path), "--wait")
    assert result.returncode == 1, result.stderr
    assert "Failed" in result.stdout
    assert "worker-0: exit code 3" in result.stdout
    assert "Traceback" not in result.stderr


def test_submit_wait_json(server: Server, tmp_path: Path) -> None:
    path = write_job(tmp_path, "cli-json", "true")
    result = cli(server, "submit", str(path), "--wait", "--json")
    assert result.returncode == 0, result.stderr
    doc = json.loads(result.stdout)
    assert doc["metadata"]["name"] == "cli-json"
    assert doc["status"]["phase"] == "Completed"


def test_submit_yaml_with_name_override(server: Server, tmp_path: Path) -> None:
    path = write_job(tmp_path, "cli-yaml", "true", suffix=".yaml", node_count=2)
    assert not path.read_text().lstrip().startswith("{")
    result = cli(server, "submit", str(path), "--name", "cli-renamed")
    assert result.returncode == 0, result.stderr
    job_id = result.stdout.strip()
    assert UUID_RE.match(job_id)
    doc = show(server, job_id)
    assert doc["metadata"]["name"] == "cli-renamed"
    assert doc["spec"]["resource"]["node_count"] == 2


def test_submit_rejected_by_server(server: Server, tmp_path: Path) -> None:
    path = tmp_path / "bad.json"
    path.write_text(json.dumps({**job_body("cli-bad", command="true"),
                                "spec": {"resource": {"flavor_id": "no.such.flavor", "node_count": 1}}}))
    assert_clean_failure(cli(server, "submit", str(path)), "ModelArts.2781")


def test_submit_bad_file(server: Server, tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("kind: [unclosed")
    assert_clean_failure(cli(server, "submit", str(bad)), "not valid YAML")
    assert_clean_failure(cli(server, "submit", str(tmp_path / "missing.json")), "cannot read")


def test_get(server: Server) -> None:
    job_id = create(server, "cli-get", "exit 4")
    wait_phase(server, job_id, *FINAL)
    result = cli(server, "get", job_id)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    for expected in ("cli-get", job_id, "Failed", "modelarts.local.cpu.1u", "node_count", "worker-0",
                     "exit with 4", "running records"):
        assert expected in out
    assert all(line == line.rstrip() for line in out.splitlines())
    as_json = cli(server, "get", job_id, "--json")
    assert json.loads(as_json.stdout)["metadata"]["id"] == job_id


def test_list_phase_and_name_filters(server: Server) -> None:
    ok_id = create(server, "cli-list-ok", "true")
    bad_id = create(server, "cli-list-bad", "exit 1")
    wait_phase(server, ok_id, *FINAL)
    wait_phase(server, bad_id, *FINAL)
    failed = cli(server, "list", "--phase", "Failed")
    assert failed.returncode == 0, failed.stderr
    assert bad_id in failed.stdout and ok_id not in failed.stdout
    both = cli(server, "list", "--phase", "completed", "Failed")
    assert bad_id in both.stdout and ok_id in both.stdout
    by_name = cli(server, "list", "--name", "list-ok", "--json")
    assert [j["metadata"]["id"] for j in json.loads(by_name.stdout)["items"]] == [ok_id]
    limited = cli(server, "list", "--limit", "1", "--json")
    doc = json.loads(limited.stdout)
    assert doc["total"] == 2 and len(doc["items"]) == 1 and doc["items"][0]["metadata"]["id"] in (ok_id, bad_id)


def test_list_pages_through_results(server: Server, monkeypatch: pytest.MonkeyPatch) -> None:
    ids = {create(server, f"cli-page-{i}", "true") for i in range(5)}
    monkeypatch.setattr(client, "SEARCH_PAGE_MAX", 2)
    api = client.Api(server.url, PROJECT)
    try:
        total, items = client.search_all(api, [], 50)
        assert total == 5 and {j["metadata"]["id"] for j in items} == ids
        total, items = client.search_all(api, [], 3)
        assert total == 5 and len({j["metadata"]["id"] for j in items}) == 3
    finally:
        api.close()


def test_logs(server: Server) -> None:
    job_id = create(server, "cli-logs", "echo hello-from-$MA_TASK_NAME-$VC_TASK_INDEX; echo second line")
    wait_phase(server, job_id, *FINAL)
    result = cli(server, "logs", job_id)
    assert result.returncode == 0, result.stderr
    assert "hello-from-worker-0\nsecond line\n" in result.stdout
    missing = cli(server, "logs", job_id, "--task", "worker-7")
    assert_clean_failure(missing, "worker-7", "ModelArts.2775")


def test_logs_follow(server: Server) -> None:
    command = "for i in 1 2 3 4; do echo tick $i; sleep 0.4; done; printf 'half'; sleep 0.6; echo ' line'"
    job_id = create(server, "cli-follow", command)
    result = cli(server, "logs", job_id, "--follow")
    assert result.returncode == 0, result.stderr
    assert result.stdout.endswith("tick 1\ntick 2\ntick 3\ntick 4\nhalf line\n")
    assert show(server, job_id)["status"]["phase"] == "Completed"


def test_stop(server: Server) -> None:
    job_id = create(server, "cli-stop", "sleep 60")
    wait_phase(server, job_id, "Running")
    result = cli(server, "stop", job_id)
    assert result.returncode == 0, result.stderr
    assert job_id in result.stdout
    wait_phase(server, job_id, "Terminated", timeout=30)
    again = cli(server, "stop", job_id)
    assert_clean_failure(again, "cannot be terminated", "ModelArts.2796")


def test_delete_one_and_many(server: Server) -> None:
    ids = [create(server, f"cli-del-{i}", "true") for i in range(3)]
    for job_id in ids:
        wait_phase(server, job_id, *FINAL)
    one = cli(server, "delete", ids[0])
    assert one.returncode == 0, one.stderr
    many = cli(server, "delete", ids[1], ids[2])
    assert many.returncode == 0, many.stderr
    for job_id in ids:
        assert f"deleted {job_id}" in one.stdout + many.stdout
        resp = httpx.get(f"{server.api}/training-jobs/{job_id}", timeout=10)
        assert resp.json()["error_code"] == "ModelArts.2775"
    listed = cli(server, "list", "--json")
    assert json.loads(listed.stdout)["total"] == 0


def test_get_unknown_job(server: Server) -> None:
    result = cli(server, "get", "no-such-job")
    assert_clean_failure(result)
    assert result.stderr.strip() == "error: Training job (ID: no-such-job) not found. (ModelArts.2775)"
    assert result.stdout == ""


def test_no_server() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    result = cli(f"http://127.0.0.1:{port}", "list")
    assert_clean_failure(result, "cannot connect", f"127.0.0.1:{port}")


def test_cli_signs_with_sdk_credentials(make_server: Any) -> None:
    """Against a server that enforces authentication, the CLI signs with HUAWEICLOUD_SDK_AK/SK."""
    server = make_server()
    out = subprocess.run([sys.executable, "-m", "openarts.cli.main", "credentials", "create", "--data-dir",
                          str(server.data_dir), "--project", PROJECT, "--user", "alice", "--json"],
                         capture_output=True, text=True, check=True)
    cred = json.loads(out.stdout)
    base = [sys.executable, "-m", "openarts.cli.main", "list", "--server", server.url, "--project", PROJECT]
    env = {k: v for k, v in os.environ.items() if not k.startswith("HUAWEICLOUD_SDK_")}
    refused = subprocess.run(base, capture_output=True, text=True, env=env)
    assert refused.returncode == 1 and "APIGW.0301" in refused.stderr
    signed = subprocess.run(base, capture_output=True, text=True, env={
        **env, "HUAWEICLOUD_SDK_AK": cred["access_key"], "HUAWEICLOUD_SDK_SK": cred["secret_key"]})
    assert signed.returncode == 0, signed.stderr
