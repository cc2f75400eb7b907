"""What a flavor means for a worker, through the real server and the official SDK (docs/FLAVORS.md):
memory over the flavor ends the task as out of memory; thread-count variables follow the flavor;
workers are pinned to the flavor's cores on nodes whose cores are real."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import pytest
from huaweicloudsdkmodelarts.v1 import ListTrainingJobEventsRequest

from conftest import DEFAULT_CONFIG, job_body
from helpers import create_id, preview, show, wait_phase

FLAVORS = """
[[flavors]]
flavor_id = "test.tiny.64mib"
cpu_cores = 1
memory_gb = 0.0625

[[flavors]]
flavor_id = "test.cpu.2u"
cpu_cores = 2
memory_gb = 1
"""

# Each process of the task allocates MIB and holds it; argv: MIB PROCESSES
ALLOCATE = """
import os, sys, time
mib, processes = int(sys.argv[1]), int(sys.argv[2])
for _ in range(processes - 1):
    if os.fork() == 0:
        break
blocks = []
for _ in range(mib // 4):
    blocks.append(bytearray(b"x") * (4 << 20))
# one write per line: workers run with PYTHONUNBUFFERED, where print() writes word by word and
# the two processes' words would interleave in the shared log
os.write(1, f"allocated {mib} MiB in pid {os.getpid()}\\n".encode())
time.sleep(120)
"""

PROBE = (f"{sys.executable} -c \"import os; "
         "[print(k + '=' + os.environ.get(k, '-')) for k in ('OMP_NUM_THREADS', 'MKL_NUM_THREADS', "
         "'OPENBLAS_NUM_THREADS', 'NUMEXPR_NUM_THREADS', 'VECLIB_MAXIMUM_THREADS')]; "
         "print('affinity=' + ','.join(map(str, sorted(os.sched_getaffinity(0)))))\"")


def with_flavor(body: dict[str, Any], flavor_id: str) -> dict[str, Any]:
    body["spec"]["resource"]["flavor_id"] = flavor_id
    return body


def log_values(sdk: Any, job_id: str, task: str = "worker-0") -> dict[str, str]:
    return dict(line.split("=", 1) for line in preview(sdk, job_id, task).content.splitlines() if "=" in line)


def test_a_task_over_its_flavor_memory_ends_out_of_memory(make_server: Any, sdk_for: Any, tmp_path: Path) -> None:
    server = make_server(DEFAULT_CONFIG + FLAVORS)
    sdk = sdk_for(server)
    script = tmp_path / "allocate.py"
    script.write_text(ALLOCATE)
    # two processes of 40 MiB each: either alone fits in 64 MiB, the task does not
    body = with_flavor(job_body("oom", command=f"{sys.executable} {script} 40 2"), "test.tiny.64mib")
    # a retry budget: a worker killed by a signal would be retried, one out of memory is not (as ModelArts)
    body["metadata"]["annotations"] = {"fault-tolerance/job-retry-num": "2"}
    job_id = create_id(sdk, body)
    job = wait_phase(sdk, job_id, timeout=60)
    assert job.status.phase == "Failed"
    (record,) = job.status.running_records
    assert record.end_reason.startswith("out of memory: ") and record.end_reason.endswith(", flavor limit 64 MiB")
    assert int(record.end_reason.split()[3]) > 64  # MiB used
    assert record.end_related_task == "worker-0"
    (status,) = job.status.task_statuses
    assert status.exit_code == 137
    assert status.message.startswith(record.end_reason[0].upper() + record.end_reason[1:]), status.message
    events = sdk.list_training_job_events(ListTrainingJobEventsRequest(training_job_id=job_id)).events
    assert any(e.message.startswith("Task worker-0 ran out of memory (") for e in events)
    content = preview(sdk, job_id).content
    assert "allocated 40 MiB" in content
    assert f"[ModelArts Service Log] {record.end_reason}: the task's processes are killed." in content


def test_a_task_within_its_flavor_memory_completes(make_server: Any, sdk_for: Any, tmp_path: Path) -> None:
    server = make_server(DEFAULT_CONFIG + FLAVORS)
    sdk = sdk_for(server)
    script = tmp_path / "allocate.py"
    script.write_text(ALLOCATE.replace("time.sleep(120)", "time.sleep(3)"))  # three samples
    job_id = create_id(sdk, with_flavor(job_body("fits", command=f"{sys.executable} {script} 8 2"),
                                        "test.tiny.64mib"))
    assert wait_phase(sdk, job_id, timeout=60).status.phase == "Completed"


def test_thread_variables_follow_the_flavor_and_oversubscribed_nodes_do_not_pin(make_server: Any,
                                                                                sdk_for: Any) -> None:
    server = make_server(DEFAULT_CONFIG + FLAVORS)  # one node of 64 virtual cores
    sdk = sdk_for(server)
    body = with_flavor(job_body("threads", command=PROBE), "test.cpu.2u")
    body["algorithm"]["environments"] = {"MKL_NUM_THREADS": "5"}  # the job's own value wins
    job_id = create_id(sdk, body)
    assert wait_phase(sdk, job_id).status.phase == "Completed"
    values = log_values(sdk, job_id)
    assert values["OMP_NUM_THREADS"] == values["OPENBLAS_NUM_THREADS"] == values["NUMEXPR_NUM_THREADS"] == "2"
    assert values["VECLIB_MAXIMUM_THREADS"] == "2" and values["MKL_NUM_THREADS"] == "5"
    usable = sorted(os.sched_getaffinity(0))  # the server inherits the test's affinity
    assert values["affinity"] == ",".join(map(str, usable))


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="needs two usable CPUs")
def test_workers_are_pinned_to_their_own_cores_on_a_node_with_real_cores(make_server: Any, sdk_for: Any) -> None:
    usable = sorted(os.sched_getaffinity(0))
    config = DEFAULT_CONFIG.replace("cpu_cores = 64", f"cpu_cores = {len(usable)}")  # the machine's cores
    server = make_server(config)
    sdk = sdk_for(server)
    job_id = create_id(sdk, job_body("pinned", command=PROBE, node_count=2))  # modelarts.local.cpu.1u
    assert wait_phase(sdk, job_id).status.phase == "Completed"
    pinned = [log_values(sdk, job_id, f"worker-{i}")["affinity"] for i in range(2)]
    assert all(len(p.split(",")) == 1 and int(p) in usable for p in pinned), pinned
    assert pinned[0] != pinned[1], "each worker has a core of its own"
    assert show(sdk, job_id).status.phase == "Completed"
