"""Custom images (algorithm.engine.image_url) from a real registry on 127.0.0.1, end to end: pulled with
skopeo using the config file's credentials, unpacked with umoci, run in the sandbox at ModelArts'
paths, reused by the next job; a missing image and a wrong password end CreateFailed with a clear line."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from huaweicloudsdkmodelarts.v1 import ListTrainingJobEventsRequest, ShowTrainingJobLogsPreviewRequest

from conftest import DEFAULT_CONFIG, Server, job_body, sdk_client
from helpers import create_id, show_json, wait_phase
from registry_support import MARKER, PASSWORD, USER, Registry


def _config(reg: Registry) -> str:
    port = reg.host.split(":")[1]
    # the same registry twice: by address with the right password, by name with a wrong one
    return DEFAULT_CONFIG + f"""
[[registries]]
host = "{reg.host}"
username = "{USER}"
password = "{PASSWORD}"
insecure = true

[[registries]]
host = "localhost:{port}"
username = "{USER}"
password = "not-the-password"
insecure = true

[[engines]]
engine_id = "busybox-image"
engine_name = "BusyBox"
engine_version = "1"
image_url = "{reg.host}/test/busybox:1"
"""


def _log(sdk: Any, job_id: str) -> str:
    resp = sdk.show_training_job_logs_preview(ShowTrainingJobLogsPreviewRequest(training_job_id=job_id,
                                                                                task_id="worker-0"))
    return str(resp.content or "") if resp.status_code == 200 else ""


def _events(sdk: Any, job_id: str) -> list[str]:
    resp = sdk.list_training_job_events(ListTrainingJobEventsRequest(training_job_id=job_id))
    return [e.message for e in resp.events or []]


def _image_job(name: str, image: str, command: str, **algorithm: Any) -> dict[str, Any]:
    return job_body(name, command=command, engine={"image_url": image}, **algorithm)


@pytest.fixture
def image_server(make_server: Callable[..., Server], registry: tuple[Registry, str]) -> Server:
    return make_server(_config(registry[0]))


def test_image_job_runs_inside_the_image_and_is_reused(image_server: Server, registry: tuple[Registry, str]) -> None:
    reg, image = registry
    sdk = sdk_client(image_server)
    obs = image_server.data_dir / "obs" / "bkt"
    (obs / "in").mkdir(parents=True)
    (obs / "in" / "d.txt").write_text("input for the image\n")
    script = ("cat /MARKER; id; pwd; echo IMAGE_VAR=$IMAGE_VAR; echo MA_JOB_ID=$MA_JOB_ID; "
              "ls /usr/bin/python3 2>&1; ls " + str(image_server.data_dir) + " 2>&1; cat /home/ma-user/.image-profile; "
              "cat /home/ma-user/modelarts/inputs/data_url_0/d.txt > /home/ma-user/modelarts/outputs/out_0/copy.txt; "
              "echo ARGS")  # the channels' arguments follow
    body = _image_job("image-job", image, script,
                      inputs=[{"name": "data_url", "remote": {"obs": {"obs_url": "obs://bkt/in/"}}}],
                      outputs=[{"name": "out", "remote": {"obs": {"obs_url": "obs://bkt/out/"}}}])
    first = create_id(sdk, body)
    job = wait_phase(sdk, first, timeout=60)
    log = _log(sdk, first)
    assert job.status.phase == "Completed", (log, _events(sdk, first))
    assert MARKER in log
    assert "uid=1000(ma-user) gid=100(ma-group)" in log  # the image's own user (its /etc/passwd)
    assert "\n/home/ma-user/modelarts/user-job-dir\n" in log
    assert "IMAGE_VAR=from-image" in log and f"MA_JOB_ID={first}" in log
    assert "/usr/bin/python3: No such file or directory" in log  # the image's files, not the host's
    assert f"{image_server.data_dir}: No such file or directory" in log
    assert "from the image" in log  # the image's own /home/ma-user stays visible
    assert (obs / "out" / "copy.txt").read_text() == "input for the image\n"
    events = _events(sdk, first)
    assert any(e.startswith(f"Pulling image {image}") for e in events), events
    assert any(e.startswith(f"Image {image} pulled in") for e in events), events
    doc = show_json(sdk, first)
    assert doc["algorithm"]["engine"]["image_url"] == image

    before = reg.requests("/v2/test/busybox/")
    second = create_id(sdk, _image_job("image-job-2", image, "cat /MARKER"))
    assert wait_phase(sdk, second, timeout=60).status.phase == "Completed"
    assert MARKER in _log(sdk, second)
    assert any(e.startswith(f"Image {image} is on this node already") for e in _events(sdk, second))
    assert reg.requests("/v2/test/busybox/") == before  # nothing pulled: not even the manifest
    bundles = list((image_server.data_dir / "images" / "bundles").iterdir())
    assert len(bundles) == 1, bundles


def test_image_engine_from_the_catalog(image_server: Server, registry: tuple[Registry, str]) -> None:
    _, image = registry
    sdk = sdk_client(image_server)
    engines = httpx.get(f"{image_server.api}/training-job-engines").json()["items"]
    entry = next(e for e in engines if e["engine_id"] == "busybox-image")
    assert entry["image_info"] == {"cpu_image_url": image, "gpu_image_url": image, "image_version": "1"}
    assert all("image_info" not in e for e in engines if e["engine_id"] != "busybox-image")
    job_id = create_id(sdk, job_body("image-engine", command="cat /MARKER",
                                     engine={"engine_id": "busybox-image"}))
    assert wait_phase(sdk, job_id, timeout=60).status.phase == "Completed"
    assert MARKER in _log(sdk, job_id)


@pytest.mark.parametrize(("which", "expected"), [
    ("missing", "does not exist in registry"),
    ("password", "refused the credentials"),
    ("unreachable", "is unreachable"),
])
def test_image_that_cannot_be_pulled_ends_create_failed(image_server: Server, registry: tuple[Registry, str],
                                                        which: str, expected: str, tmp_path: Path) -> None:
    reg, _ = registry
    port = int(reg.host.split(":")[1])
    url = {"missing": f"{reg.host}/test/nothere:1", "password": f"localhost:{port}/test/busybox:1",
           "unreachable": "127.0.0.1:9/test/busybox:1"}[which]
    sdk = sdk_client(image_server)
    job_id = create_id(sdk, _image_job(f"image-{which}", url, "true"))
    job = wait_phase(sdk, job_id, timeout=60)
    assert (job.status.phase, job.status.secondary_phase) == ("Abnormal", "CreateFailed")
    message = job.status.task_statuses[0].message
    assert expected in message and url.split("/")[0] in message, message
    assert "Traceback" not in message
    assert job.status.running_records == []


def test_image_url_is_checked_at_create(image_server: Server) -> None:
    resp = httpx.post(f"{image_server.api}/training-jobs",
                      json=_image_job("bad-image", "no host here:1", "true"))
    assert resp.status_code == 400
    assert resp.json()["error_code"] == "ModelArts.2788"
    assert "image_url" in resp.json()["error_msg"]


def test_image_needs_the_sandbox(make_server: Callable[..., Server], registry: tuple[Registry, str]) -> None:
    reg, image = registry
    server = make_server(_config(reg).replace("[server]\n", '[server]\nsandbox = "off"\n'))
    resp = httpx.post(f"{server.api}/training-jobs", json=_image_job("no-sandbox", image, "true"))
    assert resp.status_code == 400
    assert resp.json()["error_code"] == "ModelArts.2780"
    assert "sandbox" in resp.json()["error_msg"]
