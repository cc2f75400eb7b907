"""Code, data and arguments through the official SDK: a boot_file job with input/output channels and
a hyperparameter, code from obs://, a two-worker job talking over TCP, and hyperparameters that carry
shell metacharacters."""

from __future__ import annotations

import json
import shlex
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from conftest import Server, job_body
from helpers import create_id, expect_error, preview, run_to_end, show_json, wait_phase

TRAIN_PY = textwrap.dedent('''
    import argparse
    import os

    parser = argparse.ArgumentParser()
    parser.add_argument("--data_url", required=True)
    parser.add_argument("--train_url", required=True)
    parser.add_argument("--epochs", type=int, required=True)
    args, unknown = parser.parse_known_args()
    print("unknown args:", unknown)

    with open(os.path.join(args.data_url, "numbers.txt")) as fh:
        numbers = [int(line) for line in fh if line.strip()]
    with open(os.path.join(args.data_url, "nested", "extra.txt")) as fh:
        extra = fh.read().strip()
    os.makedirs(os.path.join(args.train_url, "model"), exist_ok=True)
    with open(os.path.join(args.train_url, "model", "result.txt"), "w") as fh:
        fh.write(f"epochs={args.epochs} sum={sum(numbers) * args.epochs} extra={extra}\\n")
    print(f"trained for {args.epochs} epochs on {len(numbers)} numbers")
''')


def _obs(server: Server, bucket: str, key: str) -> Path:
    """Where obs://<bucket>/<key> lives in the server's local object store."""
    return server.data_dir / "obs" / bucket / key


def _host(server: Server, job_id: str, seen: str, *more: str) -> Path:
    """Where a path a sandboxed worker saw is on the host: under its job's directory."""
    return Path(server.data_dir, "jobs", job_id, seen.lstrip("/"), *more)


def _put(server: Server, bucket: str, key: str, text: str) -> None:
    path = _obs(server, bucket, key)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def _channels(body: dict[str, Any]) -> None:
    body["algorithm"]["inputs"] = [{"name": "data_url", "remote": {"obs": {"obs_url": "obs://bucket/data/"}}}]
    body["algorithm"]["outputs"] = [{"name": "train_url", "remote": {"obs": {"obs_url": "obs://bucket/out/"}}}]
    body["algorithm"]["parameters"] = [{"name": "epochs", "value": "2"}]


def test_boot_file_job_reads_inputs_and_uploads_outputs(sdk: Any, server: Server, tmp_path: Path) -> None:
    code = tmp_path / "code"
    code.mkdir()
    (code / "train.py").write_text(TRAIN_PY)
    _put(server, "bucket", "data/numbers.txt", "1\n2\n3\n4\n")
    _put(server, "bucket", "data/nested/extra.txt", "deep\n")

    _put(server, "bucket", "extra/readme.txt", "a single object\n")
    body = job_body("boot-file", code_dir=str(code), boot_file="train.py")
    _channels(body)
    # a second input in ModelArts' scheme-less form, naming one object rather than a prefix
    extra_channel = {"name": "extra_url", "remote": {"obs": {"obs_url": "/bucket/extra/readme.txt"}}}
    body["algorithm"]["inputs"].append(extra_channel)
    job_id, job = run_to_end(sdk, body)
    log = preview(sdk, job_id).content
    assert job.status.phase == "Completed", log
    assert "trained for 2 epochs on 4 numbers" in log
    assert "unknown args: ['--extra_url=" in log, "channels the program does not parse are left to it"

    result = _obs(server, "bucket", "out/model/result.txt")
    assert result.read_text() == "epochs=2 sum=20 extra=deep\n"

    doc = show_json(sdk, job_id)
    [inp, extra], [out] = doc["algorithm"]["inputs"], doc["algorithm"]["outputs"]
    # the paths the worker saw (its sandbox's), kept under the job's directory on the host
    assert extra["local_dir"] == "/home/ma-user/modelarts/inputs/extra_url_0"
    assert _host(server, job_id, extra["local_dir"], "readme.txt").read_text() == "a single object\n"
    assert inp["name"] == "data_url" and inp["local_dir"] == "/home/ma-user/modelarts/inputs/data_url_0"
    assert out["name"] == "train_url" and out["local_dir"] == "/home/ma-user/modelarts/outputs/train_url_0"
    assert inp["remote"]["obs"]["obs_url"] == "obs://bucket/data/"
    assert doc["algorithm"]["boot_file"] == "train.py"
    assert doc["algorithm"]["parameters"] == [{"name": "epochs", "value": "2"}]
    # the input was copied into the job, not read in place
    assert _host(server, job_id, inp["local_dir"], "numbers.txt").read_text() == "1\n2\n3\n4\n"


def test_code_dir_from_obs_is_copied_into_the_job(sdk: Any, server: Server) -> None:
    program = textwrap.dedent('''
        import os, sys
        print("file=" + os.path.abspath(__file__))
        print("cwd=" + os.getcwd())
        print("helper=" + open(os.path.join(os.path.dirname(__file__), "lib", "helper.txt")).read().strip())
        print("args=" + repr(sys.argv[1:]))
    ''')
    _put(server, "bucket", "src/project/main.py", program)
    _put(server, "bucket", "src/project/lib/helper.txt", "from obs\n")
    body = job_body("obs-code", code_dir="obs://bucket/src/project/", boot_file="obs://bucket/src/project/main.py")
    body["algorithm"]["parameters"] = [{"name": "lr", "value": 0.01}]
    job_id, job = run_to_end(sdk, body)
    log = preview(sdk, job_id).content
    assert job.status.phase == "Completed", log

    lines = dict(line.split("=", 1) for line in log.splitlines())
    assert lines["file"] == "/home/ma-user/modelarts/user-job-dir/project/main.py", \
        "ModelArts downloads code_dir to ${MA_JOB_DIR}/<last dir name>"
    assert _host(server, job_id, lines["file"]).read_text() == program
    assert lines["helper"] == "from obs"
    assert lines["args"] == repr(["--lr=0.01"])
    assert lines["cwd"] == "/home/ma-user/modelarts/user-job-dir/project"


NODE_PY = textwrap.dedent('''
    import os, socket, time

    env = {k: os.environ.get(k) for k in
           ("RANK", "WORLD_SIZE", "MASTER_ADDR", "VC_WORKER_NUM", "VC_TASK_INDEX", "MA_NUM_HOSTS", "MA_TASK_NAME")}
    print("env " + " ".join(f"{k}={v}" for k, v in sorted(env.items())), flush=True)
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    addr, port = os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"])
    if rank == 0:
        srv = socket.create_server((addr, port))
        srv.settimeout(20)
        conn, _ = srv.accept()
        with conn:
            data = b""
            while chunk := conn.recv(4096):
                data += chunk
        print("rank 0 received: " + data.decode(), flush=True)
    else:
        deadline = time.time() + 20
        while True:
            try:
                sock = socket.create_connection((addr, port), timeout=5)
                break
            except OSError:
                if time.time() > deadline:
                    raise
                time.sleep(0.05)
        with sock:
            sock.sendall(f"hello from rank {rank} of {world}".encode())
        print("rank 1 sent", flush=True)
''')


def test_two_workers_talk_over_tcp(sdk: Any, tmp_path: Path) -> None:
    code = tmp_path / "dist"
    code.mkdir()
    (code / "node.py").write_text(NODE_PY)
    body = job_body("two-nodes", code_dir=str(code), boot_file="node.py", node_count=2)
    job_id, job = run_to_end(sdk, body)
    log0, log1 = preview(sdk, job_id, "worker-0").content, preview(sdk, job_id, "worker-1").content
    assert job.status.phase == "Completed", (log0, log1)
    assert "rank 0 received: hello from rank 1 of 2" in log0
    assert "rank 1 sent" in log1
    common = "MASTER_ADDR=127.0.0.1 MA_NUM_HOSTS=2 MA_TASK_NAME=worker"
    assert f"env {common} RANK=0 VC_TASK_INDEX=0 VC_WORKER_NUM=2 WORLD_SIZE=2" in log0
    assert f"env {common} RANK=1 VC_TASK_INDEX=1 VC_WORKER_NUM=2 WORLD_SIZE=2" in log1
    assert [t.exit_code for t in job.status.task_statuses] == [0, 0]
    assert [c for _, c in job.status.node_count_metrics] == [2, 0]


NASTY = {
    "semicolon": "; rm -rf /",
    "subst": "$(id)",
    "backticks": "`id`",
    "quotes": "it's \"quoted\"",
    "pipe": "x | cat /etc/passwd && echo pwned",
    "spaces": "  two  spaces  ",
    "newline": "line1\nline2",
    "dollar": "$HOME ${PATH}",
    "glob": "*",
    "empty": "",
    "unicode": "数据 ✓ é",
    "equals": "a=b=c",
    "dashes": "--not-an-option",
}


def test_hyperparameters_arrive_verbatim_and_are_never_executed(sdk: Any, server: Server, tmp_path: Path) -> None:
    canary = "canary"  # relative: a shell would make it in the worker's (writable) working directory
    params = dict(NASTY)
    params["touch1"] = f"; touch {canary}1"
    params["touch2"] = f"$(touch {canary}2)"
    params["touch3"] = f"`touch {canary}3`"
    parameters = [{"name": k, "value": v} for k, v in params.items()]
    expected = [f"--{k}={v}" for k, v in params.items()]

    dump = "import json, sys; print('ARGV=' + json.dumps(sys.argv[1:]))"
    # a command job: the arguments follow the command as "$@"
    command_job = job_body("argv-command", command=f"{shlex.quote(sys.executable)} -c {shlex.quote(dump)}",
                           parameters=parameters)
    # a boot_file job: the arguments are the program's argv
    code = tmp_path / "argv"
    code.mkdir()
    (code / "dump.py").write_text(dump + "\n")
    boot_job = job_body("argv-boot-file", code_dir=str(code), boot_file="dump.py", parameters=parameters)

    ids = [create_id(sdk, command_job), create_id(sdk, boot_job)]
    for job_id in ids:
        job = wait_phase(sdk, job_id)
        log = preview(sdk, job_id).content
        assert job.status.phase == "Completed", log
        [line] = [ln for ln in log.splitlines() if ln.startswith("ARGV=")]
        assert json.loads(line[len("ARGV="):]) == expected
    for i in (1, 2, 3):
        assert not list(server.data_dir.rglob(f"{canary}{i}")), "a hyperparameter was executed by a shell"
    assert show_json(sdk, ids[0])["algorithm"]["parameters"] == [{"name": k, "value": v} for k, v in params.items()]


@pytest.mark.parametrize("command", ["echo args:\n", "echo args: ;", "echo first\necho args:\n\n"],
                         ids=["trailing-newline", "trailing-semicolon", "multi-line"])
def test_command_with_trailing_separator_gets_its_arguments(sdk: Any, command: str) -> None:
    """A command job's arguments follow the command; a script that ends with a newline (a YAML block) or
    a ';' must not turn the first argument into a command of its own."""
    job_id, job = run_to_end(sdk, job_body("trailing", command=command, parameters=[{"name": "epochs", "value": "2"}]))
    log = preview(sdk, job_id).content
    assert job.status.phase == "Completed", log
    assert "args: --epochs=2" in log


def _env_dump_job(name: str, keys: list[str], env: dict[str, str]) -> dict[str, Any]:
    dump = f"import json, os; print('ENV=' + json.dumps({{k: os.environ.get(k) for k in {sorted(keys)!r}}}))"
    return job_body(name, command=f"{shlex.quote(sys.executable)} -c {shlex.quote(dump)}", environments=env)


def _env_seen(sdk: Any, job_id: str) -> dict[str, Any]:
    job = wait_phase(sdk, job_id)
    log = preview(sdk, job_id).content
    assert job.status.phase == "Completed", log
    [line] = [ln for ln in log.splitlines() if ln.startswith("ENV=")]
    seen = json.loads(line[len("ENV="):])
    assert isinstance(seen, dict)
    return seen


def test_environment_values_arrive_verbatim(sdk: Any, server: Server) -> None:
    canary = "env-canary"  # relative: a shell would make it in the worker's (writable) working directory
    env = {"GREETING": "hello 'world' \"quoted\" `x`", "SEMI": f"; touch {canary}", "EMPTY": "", "SPACES": " a  b "}
    assert _env_seen(sdk, create_id(sdk, _env_dump_job("env-verbatim", list(env), env))) == env
    assert not list(server.data_dir.rglob(canary))


def test_environment_names_that_a_shell_would_drop_are_refused(sdk: Any) -> None:
    """/bin/sh silently drops variables whose names are not identifiers; refuse them up front."""
    for name in ("my.dotted", "with-dash", "1starts-with-digit"):
        exc = expect_error(lambda name=name: create_id(sdk, _env_dump_job("env-names", [name], {name: "1"})),
                           400, "ModelArts.2788")
        assert "not a valid variable name" in exc.error_msg
