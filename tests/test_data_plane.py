"""The data plane at create and after, against the real server: dataset inputs resolved through the
registry in config.toml and reported back as ModelArts does; on S3 (SeaweedFS, tests/s3_support.py) a
missing bucket or refused credentials refuse the create with the field's ModelArts error, an
unreachable store does not; and the log link of an exported log is a presigned S3 URL that plain httpx
follows without AK/SK."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import obstore
import pytest

from conftest import DEFAULT_CONFIG, Server, job_body, sdk_client, wait_for
from helpers import FINAL_PHASES, ONE_CORE, create, create_id, expect_error, preview, show_json, wait_phase
from openarts.storage.s3 import S3ObjectStore, S3Options, StorageError
from s3_support import ACCESS_KEY, SECRET_KEY, S3Server

# prints the input channel's d.txt: a command gets the channels as --name=path arguments, after it
READ_INPUT = 'show() { for a; do case "$a" in --data_url=*) cat "${a#--data_url=}/d.txt";; esac; done; }; show'


def registry(url: str, name: str = "mnist") -> str:
    return f'\n[datasets.ds-1]\nname = "{name}"\n[datasets.ds-1.versions]\nv1 = "{url}"\n'


def dataset_input(dataset_id: str = "ds-1", version_id: str = "v1") -> dict[str, Any]:
    return {"name": "data_url", "remote": {"dataset": {"id": dataset_id, "version_id": version_id}}}


def put_local(data_dir: Path, key: str, text: str) -> None:
    path = data_dir / "obs" / key
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


# -- datasets, on the local store ---------------------------------------------------------------------

def test_a_dataset_input_is_staged_and_reported_back_as_modelarts_does(make_server: Callable[..., Server],
                                                                       tmp_path: Path) -> None:
    data_dir = tmp_path / "d"
    put_local(data_dir, "bkt/datasets/mnist/v1/d.txt", "from the dataset\n")
    server = make_server(DEFAULT_CONFIG + registry("obs://bkt/datasets/mnist/v1/"), data_dir=data_dir)
    sdk = sdk_client(server)
    created = create(sdk, job_body("ds-job", command=READ_INPUT, inputs=[dataset_input()]))
    assert created.algorithm.inputs[0].remote.dataset.obs_url == "obs://bkt/datasets/mnist/v1/"
    job = wait_phase(sdk, created.metadata.id, timeout=60)
    assert job.status.phase == "Completed", job.status
    assert preview(sdk, created.metadata.id).content == "from the dataset\n"
    remote = show_json(sdk, created.metadata.id)["algorithm"]["inputs"][0]["remote"]
    assert remote == {"dataset": {"id": "ds-1", "version_id": "v1", "obs_url": "obs://bkt/datasets/mnist/v1/",
                                  "name": "mnist"}}

    for dataset, says in ((dataset_input("ds-2"), "dataset 'ds-2' is not in this server's dataset registry"),
                          (dataset_input(version_id="v2"), "dataset 'ds-1' has no version 'v2'")):
        exc = expect_error(lambda d=dataset: create(sdk, job_body("ds-bad", command="true", inputs=[d])),
                           400, "ModelArts.2753")
        assert says in exc.error_msg, exc.error_msg


def test_a_queued_dataset_job_keeps_the_url_it_was_created_with(make_server: Callable[..., Server],
                                                                tmp_path: Path) -> None:
    """Resolved once, at create: a registry changed while the job waits (and the server restarted to
    read it) moves only jobs created after the change."""
    data_dir = tmp_path / "d"
    put_local(data_dir, "bkt/a/d.txt", "version a\n")
    put_local(data_dir, "bkt/b/d.txt", "version b\n")
    gate = tmp_path / "gate"
    server = make_server(ONE_CORE + registry("obs://bkt/a/"), data_dir=data_dir)
    sdk = sdk_client(server)
    holder = create_id(sdk, job_body("holder", command=f'while [ ! -e "{gate}" ]; do sleep 0.05; done'))
    wait_phase(sdk, holder, "Running")
    queued = create_id(sdk, job_body("queued", command=READ_INPUT, inputs=[dataset_input()]))
    time.sleep(1)
    assert show_json(sdk, queued)["status"]["phase"] in ("Creating", "Pending")
    server.stop()
    again = make_server(ONE_CORE + registry("obs://bkt/b/", name="mnist-b"), data_dir=data_dir)
    sdk = sdk_client(again)
    gate.touch()
    assert wait_phase(sdk, queued, timeout=60).status.phase == "Completed"
    assert preview(sdk, queued).content == "version a\n"
    assert show_json(sdk, queued)["algorithm"]["inputs"][0]["remote"]["dataset"]["name"] == "mnist"
    later = create_id(sdk, job_body("later", command=READ_INPUT, inputs=[dataset_input()]))
    assert wait_phase(sdk, later, timeout=60).status.phase == "Completed"
    assert preview(sdk, later).content == "version b\n"


# -- S3: create-time bucket checks, datasets, presigned log links ---------------------------------------

def closed_endpoint() -> str:
    """An endpoint on a port nothing listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{sock.getsockname()[1]}"


def _raw(s3: S3Server) -> Any:
    return S3ObjectStore(S3Options(endpoint=s3.endpoint, access_key_id=ACCESS_KEY,
                                   secret_access_key=SECRET_KEY))._store("bkt")


def test_the_stores_bucket_check_and_presign(s3: S3Server) -> None:
    def store(secret: str = SECRET_KEY, endpoint: str = s3.endpoint) -> S3ObjectStore:
        return S3ObjectStore(S3Options(endpoint=endpoint, access_key_id=ACCESS_KEY, secret_access_key=secret))

    good = store()
    assert good.check_bucket("bkt") is True
    with pytest.raises(StorageError, match=r"^bucket 'nope' does not exist \(NoSuchBucket\)$"):
        good.check_bucket("nope")
    with pytest.raises(StorageError, match="refused the server's credentials for bucket 'bkt' "
                                           r"\(SignatureDoesNotMatch") as info:
        store(secret="wrong-secret").check_bucket("bkt")
    assert "wrong-secret" not in str(info.value)
    assert store(endpoint=closed_endpoint()).check_bucket("bkt") is False  # no answer: not a refusal

    obstore.put(good._store("bkt"), "signed/a.log", b"signed\n")
    url = good.presign("obs://bkt/signed/a.log", 60)
    assert url is not None and "X-Amz-Expires=60" in url and httpx.get(url).text == "signed\n"
    assert good.presign("obs://bkt/signed/missing.log", 60) is None
    assert good.presign("obs://bkt/signed/", 60) is None


def _body(name: str, **where: Any) -> dict[str, Any]:
    body = job_body(name, command="true", **{k: v for k, v in where.items() if k != "log_export"})
    if "log_export" in where:
        body["spec"]["log_export_path"] = {"obs_url": where["log_export"]}
    return body


def test_a_missing_bucket_refuses_the_create_with_the_fields_error(make_server: Callable[..., Server],
                                                                    s3: S3Server) -> None:
    sdk = sdk_client(make_server(DEFAULT_CONFIG + s3.config()))
    missing = "obs://no-such-bucket/x/"
    cases = [
        (_body("m-code", code_dir=missing, boot_file=missing + "train.py"), "ModelArts.2757", "algorithm.code_dir"),
        (_body("m-in", inputs=[{"name": "data_url", "remote": {"obs": {"obs_url": missing}}}]), "ModelArts.2753",
         "algorithm.inputs[0]"),
        (_body("m-out", outputs=[{"name": "train_url", "remote": {"obs": {"obs_url": "/no-such-bucket/o/"}}}]),
         "ModelArts.2753", "algorithm.outputs[0]"),
        (_body("m-logs", log_export="obs://no-such-bucket/logs/"), "ModelArts.2791", "spec.log_export_path.obs_url"),
    ]
    for body, code, field in cases:
        exc = expect_error(lambda b=body: create(sdk, b), 400, code)
        assert field in exc.error_msg and "bucket 'no-such-bucket' does not exist (NoSuchBucket)" in exc.error_msg, \
            exc.error_msg
    # a bucket that exists passes, inputs and outputs in it alike (the job then finds no input: staging's
    # own report)
    ok = create_id(sdk, _body("m-ok", inputs=[{"name": "data_url", "remote": {"obs": {"obs_url": "obs://bkt/none/"}}}],
                              outputs=[{"name": "train_url", "remote": {"obs": {"obs_url": "obs://bkt/o/"}}}],
                              log_export="obs://bkt/logs/"))
    assert wait_phase(sdk, ok, timeout=60).status.phase == "Abnormal"


def test_refused_credentials_refuse_the_create_without_showing_the_secret(make_server: Callable[..., Server],
                                                                          s3: S3Server) -> None:
    wrong = "a-wrong-secret-value"
    server = make_server(DEFAULT_CONFIG + s3.config(secret=wrong))
    sdk = sdk_client(server)
    body = _body("denied", inputs=[{"name": "data_url", "remote": {"obs": {"obs_url": "obs://bkt/data/"}}}])
    exc = expect_error(lambda: create(sdk, body), 400, "ModelArts.2753")
    assert "refused the server's credentials for bucket 'bkt' (SignatureDoesNotMatch" in exc.error_msg, exc.error_msg
    assert wrong not in exc.error_msg and SECRET_KEY not in exc.error_msg and ACCESS_KEY not in exc.error_msg
    r = httpx.post(f"{server.api}/training-jobs", json=body, timeout=30)  # the raw answer, as ModelArts shapes it
    assert r.status_code == 400 and set(r.json()) == {"error_code", "error_msg"}, r.text
    assert wrong not in r.text


def test_an_unreachable_store_does_not_refuse_the_job(make_server: Callable[..., Server], s3: S3Server) -> None:
    """No definite answer, no refusal: the job is accepted, and staging reports the store (the job ends)."""
    sdk = sdk_client(make_server(DEFAULT_CONFIG + s3.config().replace(s3.endpoint, closed_endpoint())))
    started = time.monotonic()
    job_id = create_id(sdk, _body("unreachable", inputs=[{"name": "data_url",
                                                           "remote": {"obs": {"obs_url": "obs://bkt/data/"}}}]))
    assert time.monotonic() - started < 10
    assert wait_phase(sdk, job_id, FINAL_PHASES, timeout=120).status.phase in ("Failed", "Abnormal")


def test_a_dataset_input_on_s3(make_server: Callable[..., Server], s3: S3Server) -> None:
    obstore.put(_raw(s3), "datasets/s3set/v1/d.txt", b"from the s3 dataset\n")
    sdk = sdk_client(make_server(DEFAULT_CONFIG + s3.config() + registry("obs://bkt/datasets/s3set/v1/")))
    job_id = create_id(sdk, job_body("s3-ds", command=READ_INPUT, inputs=[dataset_input()]))
    assert wait_phase(sdk, job_id, timeout=60).status.phase == "Completed"
    assert preview(sdk, job_id).content == "from the s3 dataset\n"
    assert show_json(sdk, job_id)["algorithm"]["inputs"][0]["remote"]["dataset"]["obs_url"] == \
        "obs://bkt/datasets/s3set/v1/"


def test_the_log_link_of_an_exported_log_is_a_presigned_s3_url(make_server: Callable[..., Server], s3: S3Server,
                                                                tmp_path: Path) -> None:
    server = make_server(DEFAULT_CONFIG + s3.config())
    sdk = sdk_client(server)
    gate = tmp_path / "gate"
    body = job_body("exported", command=f'echo first line; while [ ! -e "{gate}" ]; do sleep 0.05; done; '
                                        'echo last line')
    body["spec"]["log_export_path"] = {"obs_url": "obs://bkt/exported-logs/"}
    job_id = create_id(sdk, body)
    path = f"{server.api}/training-jobs/{job_id}/tasks/worker-0/logs/url"

    def link(content_type: str = "text/plain") -> str:
        r = httpx.get(path, headers={"Content-Type": content_type}, timeout=30)
        assert r.status_code == 200, r.text
        return str(r.json()["obs_url"])

    def logged() -> bool:  # 204 until the task has a log
        r = httpx.get(f"{server.api}/training-jobs/{job_id}/tasks/worker-0/logs/preview", timeout=30)
        return r.status_code == 200 and "first line" in r.json()["content"]

    wait_for(logged, timeout=60, message="the first line")
    running = link()  # not exported yet (at the attempt's end): the server's own link to its copy
    assert running.startswith(f"{server.url}/v2/") and httpx.get(running).text == "first line\n"
    gate.touch()
    assert wait_phase(sdk, job_id, timeout=60).status.phase == "Completed"
    for content_type in ("text/plain", "application/octet-stream"):
        url = link(content_type)
        assert url.startswith(f"{s3.endpoint}/bkt/exported-logs/modelarts-job-{job_id}-worker-0-attempt-1.log?"), url
        assert "X-Amz-Signature=" in url and "X-Amz-Expires=300" in url and SECRET_KEY not in url
        got = httpx.get(url)  # plain HTTP, no AK/SK
        assert got.status_code == 200 and got.text == "first line\nlast line\n", got.text
    tampered = url.replace("X-Amz-Expires=300", "X-Amz-Expires=3000")
    assert httpx.get(tampered).status_code == 403

    plain = create_id(sdk, job_body("not-exported", command="echo only here"))
    assert wait_phase(sdk, plain, timeout=60).status.phase == "Completed"
    r = httpx.get(f"{server.api}/training-jobs/{plain}/tasks/worker-0/logs/url", timeout=30)
    own = r.json()["obs_url"]
    assert own.startswith(f"{server.url}/v2/") and httpx.get(own).text == "only here\n"
