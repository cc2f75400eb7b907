"""NFS volumes (spec.volumes[].nfs) end to end through a real sandboxed server and the SDK. The config
declares shares "mounted" at temporary directories: that is what `[volumes.nfs]` means (where this
machine has the share mounted), so a local directory stands in for a real NFS mount."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from huaweicloudsdkmodelarts.v1 import CreateTrainingJobRequest, ShowTrainingJobLogsPreviewRequest

from conftest import DEFAULT_CONFIG, Server, job_body, sdk_client
from helpers import create_id, expect_error, show_json, wait_phase

SHARE_RO = "127.0.0.1:/exports/models"
SHARE_RW = "127.0.0.1:/exports/scratch"


def _log(sdk: Any, job_id: str) -> str:
    resp = sdk.show_training_job_logs_preview(ShowTrainingJobLogsPreviewRequest(training_job_id=job_id,
                                                                                task_id="worker-0"))
    return str(resp.content or "") if resp.status_code == 200 else ""


def _config(ro: Path, rw: Path, server: str = "") -> str:
    return (DEFAULT_CONFIG.replace("[server]\n", f"[server]\n{server}")
            + f'\n[volumes]\ndiscover = false\n[volumes.nfs]\n"{SHARE_RO}" = "{ro}"\n"{SHARE_RW}" = "{rw}"\n')


def _shares(tmp_path: Path) -> tuple[Path, Path]:
    ro, rw = tmp_path / "nfs-models", tmp_path / "nfs-scratch"
    (ro / "v1").mkdir(parents=True)
    rw.mkdir()
    (ro / "v1" / "weights.txt").write_text("weights from the share\n")
    return ro, rw


def _volumes(*items: tuple[str, str, bool | None]) -> list[dict[str, Any]]:
    out = []
    for server, local, read_only in items:
        nfs: dict[str, Any] = {"nfs_server_path": server, "local_path": local}
        if read_only is not None:
            nfs["read_only"] = read_only
        out.append({"nfs": nfs})
    return out


def test_read_only_and_writable_volumes(make_server: Callable[..., Server], tmp_path: Path) -> None:
    ro, rw = _shares(tmp_path)
    server = make_server(_config(ro, rw))
    sdk = sdk_client(server)
    script = ("cat /mnt/models/weights.txt; "
              "echo tampered > /mnt/models/weights.txt || echo RO-WRITE-REFUSED; "
              "touch /mnt/models/new.txt || echo RO-CREATE-REFUSED; "
              "echo checkpoint > /home/ma-user/work/ckpt.txt && echo RW-WRITTEN; ls -ld /home/ma-user/modelarts; "
              "test -s /mnt/models/weights.txt")
    body = job_body("volumes-ro-rw", command=script)
    given = _volumes((f"{SHARE_RO}/v1", "/mnt/models", True), (SHARE_RW, "/home/ma-user/work", None))
    body["spec"]["volumes"] = given
    job_id = create_id(sdk, body)
    job = wait_phase(sdk, job_id, timeout=60)
    log = _log(sdk, job_id)
    assert job.status.phase == "Completed", log
    assert "weights from the share" in log
    assert "RO-WRITE-REFUSED" in log and "RO-CREATE-REFUSED" in log and "Read-only file system" in log
    assert "RW-WRITTEN" in log
    assert (ro / "v1" / "weights.txt").read_text() == "weights from the share\n"
    assert not (ro / "v1" / "new.txt").exists()
    assert (rw / "ckpt.txt").read_text() == "checkpoint\n"  # on the share itself
    assert "/home/ma-user/modelarts" in log  # the job's own directory is still there beside the volume
    doc = show_json(sdk, job_id)
    assert doc["spec"]["volumes"] == given  # shown back as given


def test_unmounted_share_and_other_kinds_refused_at_create(make_server: Callable[..., Server],
                                                           tmp_path: Path) -> None:
    ro, rw = _shares(tmp_path)
    server = make_server(_config(ro, rw))
    sdk = sdk_client(server)

    def create(volumes: list[dict[str, Any]]) -> Callable[[], Any]:
        body = job_body("volumes-refused", command="true")
        body["spec"]["volumes"] = volumes
        return lambda: sdk.create_training_job(CreateTrainingJobRequest(body=body))

    exc = expect_error(create(_volumes(("10.9.9.9:/not/here", "/mnt/x", True))), 400, "ModelArts.2788")
    assert "spec.volumes[0].nfs.nfs_server_path" in exc.error_msg
    assert "10.9.9.9:/not/here is not mounted on this machine" in exc.error_msg
    assert "[volumes.nfs]" in exc.error_msg
    exc = expect_error(create([{"obs": {"obs_path": "obs://b/x", "local_path": "/mnt/x"}}]), 400, "ModelArts.2788")
    assert "only nfs volumes are supported" in exc.error_msg
    exc = expect_error(create(_volumes((SHARE_RO, "/home/ma-user/modelarts/x", True))), 400, "ModelArts.2788")
    assert "spec.volumes[0].nfs.local_path" in exc.error_msg


def test_volumes_need_the_sandbox(make_server: Callable[..., Server], tmp_path: Path) -> None:
    ro, rw = _shares(tmp_path)
    server = make_server(_config(ro, rw, server='sandbox = "off"\n'))
    sdk = sdk_client(server)
    body = job_body("volumes-no-sandbox", command="true")
    body["spec"]["volumes"] = _volumes((SHARE_RO, "/mnt/models", True))
    exc = expect_error(lambda: sdk.create_training_job(CreateTrainingJobRequest(body=body)), 400, "ModelArts.2788")
    assert "sandbox" in exc.error_msg and "off" in exc.error_msg
