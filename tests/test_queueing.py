"""Pending/Queuing while capacity is short, FIFO admission when it frees up."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx

from conftest import job_body, wait_for

SMALL = """
[server]
terminate_grace_seconds = 3
reconcile_interval_seconds = 0.5

[[nodes]]
name = "local"
cpu_cores = 2
memory_gb = 64
"""


def test_queues_fifo_until_capacity_frees(make_server: Any, tmp_path: Path) -> None:
    server = make_server(SMALL)
    c = httpx.Client(base_url=server.api, timeout=10)
    gate = tmp_path / "gate"
    hold = f'while [ ! -e "{gate}" ]; do sleep 0.05; done'
    ids = []
    for name in ("first", "second", "third"):
        r = c.post("/training-jobs", json=job_body(name, command=hold))
        assert r.status_code == 201, r.text
        ids.append(r.json()["metadata"]["id"])

    def phases() -> list[str]:
        return [c.get(f"/training-jobs/{i}").json()["status"]["phase"] for i in ids]

    wait_for(lambda: phases() == ["Running", "Running", "Pending"], message="two running, one queued")
    third = c.get(f"/training-jobs/{ids[2]}").json()
    assert third["status"]["secondary_phase"] == "Queuing"
    events = c.get(f"/training-jobs/{ids[2]}/events").json()["events"]
    assert any("insufficient resources" in e["message"] and e["source"] == "Scheduler" for e in events)

    gate.touch()
    wait_for(lambda: phases() == ["Completed"] * 3, message="all completed")
    starts = [c.get(f"/training-jobs/{i}").json()["status"]["start_time"] for i in ids]
    assert starts[2] >= max(starts[:2])
