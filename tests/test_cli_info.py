"""The client commands that replace curl (events, flavors, engines, quotas), what `stop` prints, tables
with long task messages, unknown-field warnings of `submit`, and a reader that closes the pipe early:
real `openarts` subprocesses against a real server."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import yaml

from conftest import PROJECT, Server, job_body, wait_for
from helpers import ONE_CORE
from test_cli import FINAL, UUID_RE, cli, create, show, wait_phase


def cli_env(server: Server, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """`cli` with extra environment variables (COLUMNS)."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("OPENARTS_") and k != "COLUMNS"}
    return subprocess.run([sys.executable, "-m", "openarts.cli.main", *args, "--server", server.url,
                           "--project", PROJECT], capture_output=True, text=True, timeout=60,
                          env={**base, **env}, check=False)


def test_events_say_why_a_job_waits(make_server: Any) -> None:
    server = make_server(ONE_CORE)
    busy = create(server, "cli-busy", "sleep 60")
    wait_phase(server, busy, "Running")
    waiting = create(server, "cli-waiting", "true")
    wait_phase(server, waiting, "Pending")

    def explained() -> subprocess.CompletedProcess[str] | None:
        out = cli(server, "events", waiting)
        return out if "Job is waiting:" in out.stdout else None

    out = wait_for(explained, timeout=20, message="a waiting event")
    assert out.returncode == 0, out.stderr
    assert "Job queued, waiting for resources." in out.stdout
    assert "the job is Pending" in out.stdout
    assert out.stdout.index("created") < out.stdout.index("Job is waiting:")  # oldest first
    as_json = json.loads(cli(server, "events", waiting, "--json", "--limit", "1").stdout)
    assert len(as_json["events"]) == 1 and as_json["total"] >= 3
    assert "Job is waiting:" in as_json["events"][0]["message"]  # the latest one
    assert cli(server, "events", waiting, "--level", "error").stdout.count("Job is waiting") == 0
    for job_id in (waiting, busy):
        assert cli(server, "stop", job_id).returncode == 0


def test_flavors_engines_quotas(server: Server) -> None:
    flavors = cli(server, "flavors")
    assert flavors.returncode == 0, flavors.stderr
    assert "modelarts.local.cpu.1u" in flavors.stdout and "max nodes" in flavors.stdout
    as_json = json.loads(cli(server, "flavors", "--json").stdout)
    assert "modelarts.local.cpu.1u" in [f["flavor_id"] for f in as_json["flavors"]]
    assert "modelarts.local.cpu" not in cli(server, "flavors", "--type", "GPU").stdout
    engines = cli(server, "engines")
    assert engines.returncode == 0 and "local-python3" in engines.stdout
    assert json.loads(cli(server, "engines", "--json").stdout)["items"][0]["engine_id"] == "local-python3"
    r = httpx.put(f"{server.api}/training-quotas", json={"quotas": [{"resource": "cpu_cores", "quota": 8}]}, timeout=10)
    assert r.status_code == 200, r.text
    quotas = cli(server, "quotas")
    assert quotas.returncode == 0, quotas.stderr
    rows = {cells[1]: cells[3] for cells in (line.split() for line in quotas.stdout.splitlines())
            if cells[0] == "│"}
    assert rows == {"running_jobs": "unlimited", "cpu_cores": "8", "gpus": "unlimited"}
    assert {q["resource"]: q["quota"] for q in json.loads(cli(server, "quotas", "--json").stdout)["quotas"]} == \
        {"running_jobs": -1, "cpu_cores": 8, "gpus": -1}


def test_stop_prints_the_phase_the_job_moved_to(server: Server) -> None:
    job_id = create(server, "cli-stop-phase", "sleep 60")
    wait_phase(server, job_id, "Running")
    out = cli(server, "stop", job_id)
    assert out.returncode == 0, out.stderr
    line = out.stdout.strip()
    assert line.startswith(f"{job_id}: Terminat"), line  # Terminating or Terminated, never Running
    assert "Running" not in line
    waited = create(server, "cli-stop-wait", "sleep 60")
    wait_phase(server, waited, "Running")
    out = cli(server, "stop", waited, "--wait", "--json")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["status"]["phase"] == "Terminated"


def test_long_task_messages_are_cut(server: Server) -> None:
    command = "i=0; while [ $i -lt 30 ]; do printf 'w%.0s' $(seq 190); echo; i=$((i+1)); done; exit 5"
    job_id = create(server, "cli-long-message", command)
    doc = wait_phase(server, job_id, *FINAL)
    assert len(doc["status"]["task_statuses"][0]["message"]) > 1000  # the last log lines are in it
    piped = cli(server, "get", job_id)
    assert piped.returncode == 0, piped.stderr
    assert "\u2026" in piped.stdout
    assert max(len(line) for line in piped.stdout.splitlines()) <= 160
    narrow = cli_env(server, "get", job_id, COLUMNS="80")
    assert narrow.returncode == 0, narrow.stderr
    assert max(len(line) for line in narrow.stdout.splitlines()) <= 80
    assert "Exit code 5." in narrow.stdout
    full = json.loads(cli(server, "get", job_id, "--json").stdout)
    assert full["status"]["task_statuses"][0]["message"] == doc["status"]["task_statuses"][0]["message"]


def test_submit_warns_about_fields_modelarts_does_not_know(server: Server, tmp_path: Path) -> None:
    body = job_body("cli-typo", command="echo typo")
    body["metadata"]["descripton"] = "misspelt"
    body["spec"]["resource"]["node_cont"] = 2
    body["algorithm"]["parameters"] = [{"name": "lr", "value": "0.1", "descripion": "learning rate"}]
    body["metadata"]["annotations"] = {"any-key/is-fine": "yes"}
    path = tmp_path / "typo.yaml"
    path.write_text(yaml.safe_dump(body))
    out = cli(server, "submit", str(path))
    assert out.returncode == 0, out.stderr  # the server accepts what ModelArts accepts
    assert UUID_RE.match(out.stdout.strip())
    assert out.stderr.splitlines() == [  # in the file's order (safe_dump sorts keys)
        f"warning: {path}: algorithm.parameters[0].descripion is not a ModelArts field (the server ignores "
        "it); did you mean 'description'?",
        f"warning: {path}: metadata.descripton is not a ModelArts field (the server ignores it); "
        "did you mean 'description'?",
        f"warning: {path}: spec.resource.node_cont is not a ModelArts field (the server ignores it); "
        "did you mean 'node_count'?",
    ]
    assert show(server, out.stdout.strip())["spec"]["resource"]["node_count"] == 1
    clean = tmp_path / "clean.json"
    clean.write_text(json.dumps(job_body("cli-clean", command="true", node_count=2)))
    out = cli(server, "submit", str(clean))
    assert out.returncode == 0 and out.stderr == ""


def test_a_reader_that_stops_early_gets_no_traceback(server: Server) -> None:
    job_id = create(server, "cli-pipe", "seq 1 50000")
    wait_phase(server, job_id, *FINAL)
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPENARTS_") and k != "COLUMNS"}
    for args in (["logs", job_id], ["get", job_id], ["get", job_id, "--json"], ["list"], ["events", job_id],
                 ["flavors"], ["engines"], ["quotas"]):
        proc = subprocess.Popen([sys.executable, "-m", "openarts.cli.main", *args, "--server", server.url,
                                 "--project", PROJECT], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
        assert proc.stdout is not None
        proc.stdout.close()  # like `| head -0`: gone before the command writes anything
        _, err = proc.communicate(timeout=60)
        assert err.decode() == "", (args, err.decode())
        assert proc.returncode == 141, args  # as a command killed by SIGPIPE
    head = subprocess.run(f"{sys.executable} -m openarts.cli.main logs {job_id} --server {server.url} "
                          f"--project {PROJECT} | head -3", shell=True, capture_output=True, text=True, env=env,
                          timeout=60)
    assert head.stdout == "1\n2\n3\n" and head.stderr == ""
