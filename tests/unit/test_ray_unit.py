"""The Ray executor's pure parts: Ray's node records as the scheduler's nodes, pools from config, the
attempt files' packing and tokens, the URL agents reach the server at."""

from __future__ import annotations

import io
import json
import os
import tarfile
from pathlib import Path

import pytest

from openarts.config import Settings
from openarts.core.resources import DEFAULT_POOL
from openarts.executors.bundles import INPUTS, SERVED, WORKSPACE, pack, unpack
from openarts.executors.ray import earlier_inputs, namespace_of, node_of, pack_attempt, pool_of, server_url_of
from openarts.security.attempt_tokens import AttemptTokens
from openarts.storage.cache import CachedInputs, digest
from openarts.storage.obs import ObjectInfo

NODE = {"NodeID": "ab" * 28, "NodeManagerAddress": "10.0.0.7", "Alive": True,
        "Resources": {"CPU": 8.0, "GPU": 2.0, "memory": 64 * 2**30, "object_store_memory": 2**30,
                      "node:10.0.0.7": 1.0, "pool_gpu": 1.0},
        "Labels": {"ray.io/node-id": "ab" * 28, "accelerator": "a100"}}


def test_a_ray_node_becomes_a_scheduler_node() -> None:
    node = node_of(NODE, [])
    assert (node.name, node.ip, node.cpu_milli, node.memory_mb) == ("ab" * 28, "10.0.0.7", 8000, 65536)
    assert node.gpus == (0, 1)
    assert node.pool == DEFAULT_POOL and node.cpus == ()  # Ray's nodes are never pinned to CPU ids
    assert node.labels["pool_gpu"] == "1" and node.labels["accelerator"] == "a100"  # custom resources and labels
    assert not any(k.startswith("node:") or k in ("CPU", "memory") for k in node.labels)


def test_pools_bind_to_a_custom_resource_or_a_label_first_match_wins() -> None:
    gpu = {"pool": "gpu", "resource": "pool_gpu"}
    assert pool_of(NODE, [gpu]) == "gpu"
    assert pool_of(NODE, [{"pool": "a100", "label": "accelerator=a100"}, gpu]) == "a100"
    assert pool_of(NODE, [{"pool": "v100", "label": "accelerator=v100"}, {"pool": "x", "resource": "other"}]) \
        == DEFAULT_POOL


def test_the_namespace_follows_the_data_directory_unless_configured(tmp_path: Path) -> None:
    a, b = Settings(data_dir=tmp_path / "a"), Settings(data_dir=tmp_path / "b")
    assert namespace_of(a) == namespace_of(Settings(data_dir=tmp_path / "a")) != namespace_of(b)
    a.ray_namespace = "prod"
    assert namespace_of(a) == "prod"


def test_a_workspace_travels_with_its_links_and_cannot_escape(tmp_path: Path) -> None:
    src = tmp_path / "src"
    (src / "code").mkdir(parents=True)
    (src / "code" / "train.py").write_text("print(1)\n")
    (src / "code" / "link").symlink_to("train.py")
    pack(tmp_path / "a" / "ws.tar", [(str(src), "m0"), (str(tmp_path / "missing"), "m1")])
    unpack(tmp_path / "a" / "ws.tar", tmp_path / "out")
    assert (tmp_path / "out" / "m0" / "code" / "train.py").read_text() == "print(1)\n"
    assert (tmp_path / "out" / "m0" / "code" / "link").is_symlink()
    assert not (tmp_path / "out" / "m1").exists()


def _tar(path: Path, members: dict[str, bytes], link: tuple[str, str] | None = None) -> None:
    with tarfile.open(path, "w") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        if link:
            info = tarfile.TarInfo(link[0])
            info.type, info.linkname = tarfile.SYMTYPE, link[1]
            tar.addfile(info)


@pytest.mark.parametrize("members, link", [
    ({"../evil": b"x"}, None),
    ({}, ("home/escape", "/etc")),
    ({"attempts/1/worker-0/log": b"forged"}, None),
])
def test_outputs_that_would_leave_the_job_or_touch_its_records_are_refused(
        tmp_path: Path, members: dict[str, bytes], link: tuple[str, str] | None) -> None:
    _tar(tmp_path / "o.tar", members, link)
    with pytest.raises(tarfile.TarError):
        unpack(tmp_path / "o.tar", tmp_path / "job", ("attempts",))
    assert not (tmp_path / "evil").exists() and not (tmp_path / "job" / "attempts").exists()


def test_attempt_tokens_open_one_attempt_and_survive_a_restart() -> None:
    key = bytes(range(32))
    tokens = AttemptTokens(key)
    t = tokens.token("job-1", 2)
    assert AttemptTokens(key).valid("job-1", 2, t)  # the same key after a restart
    assert not tokens.valid("job-1", 3, t) and not tokens.valid("job-2", 2, t)
    assert not AttemptTokens(bytes(32)).valid("job-1", 2, t)


def test_agents_reach_the_server_at_its_url_or_the_configured_one(tmp_path: Path) -> None:
    s = Settings(data_dir=tmp_path, server_url="http://127.0.0.1:8080")
    assert server_url_of(s, "10.0.0.5") == "http://127.0.0.1:8080"
    s.server_url = "https://0.0.0.0:8443"
    assert server_url_of(s, "10.0.0.5") == "https://10.0.0.5:8443"
    s.ray_server_url = "http://head.example:9000/"
    assert server_url_of(s, "10.0.0.5") == "http://head.example:9000"
    assert server_url_of(Settings(data_dir=tmp_path), "10.0.0.5") == ""


def test_a_periodic_send_packs_only_what_changed_since_the_last(tmp_path: Path) -> None:
    """The agent's `send_outputs(changed_only=True)`: files whose size and mtime match what the last
    send recorded stay out of the tar; directories always go in (so that new files have a parent)."""
    out = tmp_path / "out"
    (out / "sub").mkdir(parents=True)
    (out / "a").write_text("a")
    (out / "sub" / "b").write_text("b")
    sent: dict[str, tuple[int, float]] = {}
    pack(tmp_path / "1.tar", [(str(out), "outputs")], lambda n, size, mtime: sent.get(n) != (size, mtime), sent)
    assert sorted(sent) == ["outputs/a", "outputs/sub/b"]
    (out / "sub" / "b").write_text("bb")  # changed size
    (out / "c").write_text("c")  # new
    packed: dict[str, tuple[int, float]] = {}
    pack(tmp_path / "2.tar", [(str(out), "outputs")], lambda n, size, mtime: sent.get(n) != (size, mtime), packed)
    with tarfile.open(tmp_path / "2.tar") as tar:
        files = sorted(m.name for m in tar.getmembers() if m.isfile())
    assert files == sorted(packed) == ["outputs/c", "outputs/sub/b"]
    unpack(tmp_path / "2.tar", tmp_path / "server")
    assert (tmp_path / "server" / "outputs" / "sub" / "b").read_text() == "bb"


def test_cached_inputs_are_listed_in_the_attempts_tar_not_packed(tmp_path: Path) -> None:
    job = tmp_path / "job"
    (job / "code").mkdir(parents=True)
    (job / "code" / "train.py").write_text("print(1)")
    data, other = job / "inputs" / "data", job / "inputs" / "other"
    (data / "sub").mkdir(parents=True)
    (data / "a.bin").write_bytes(b"x" * 100)
    (data / "sub" / "b.txt").write_bytes(b"y" * 10)
    other.mkdir()
    (other / "c.txt").write_bytes(b"changed since it was staged")
    objs = (ObjectInfo("a.bin", "obs://b/d/a.bin", 100, "e1"), ObjectInfo("sub/b.txt", "obs://b/d/sub/b.txt", 10, "e2"))
    inputs = (CachedInputs(str(data), "obs://b/d/", "proj", "s3:x", objs),
              CachedInputs(str(other), "obs://b/o/", "proj", "s3:x", (ObjectInfo("c.txt", "obs://b/o/c", 5, "e3"),)),
              CachedInputs(str(tmp_path / "elsewhere"), "obs://b/e/", "proj", "s3:x", ()))
    where = tmp_path / "attempt"
    pack_attempt(where, [(str(job), "m0")], inputs)
    with tarfile.open(where / WORKSPACE) as tar:
        names = tar.getnames()
        first = tar.getmembers()[0]
        listed = CachedInputs.loads(tar.extractfile(first).read().decode())  # type: ignore[union-attr]
    assert names[0] == INPUTS
    assert "m0/code/train.py" in names and "m0/inputs/other/c.txt" in names  # changed since: in the tar
    assert "m0/inputs/data/a.bin" not in names and "m0/inputs/data/sub/b.txt" not in names
    assert "m0/inputs/data/sub" in names  # its directories still travel
    assert [(c.dir, c.objects) for c in listed] == [("m0/inputs/data", objs)]
    served = json.loads((where / SERVED).read_text())
    assert served == {digest("s3:x", objs[0]): [str(data / "a.bin"), 100],
                      digest("s3:x", objs[1]): [str(data / "sub/b.txt"), 10]}


def test_a_restart_in_place_lists_the_inputs_its_earlier_attempt_staged(tmp_path: Path) -> None:
    job = tmp_path / "job"
    data = job / "inputs" / "data"
    data.mkdir(parents=True)
    (data / "a.bin").write_bytes(b"x" * 100)
    obj = ObjectInfo("a.bin", "obs://b/d/a.bin", 100, "e1")
    attempts = tmp_path / "attempts"
    pack_attempt(attempts / "1", [(str(job), "m0")], (CachedInputs(str(data), "obs://b/d/", "p", "s3:x", (obj,)),))
    assert earlier_inputs(attempts, 1) == earlier_inputs(attempts, 3)  # its own (a restarted server), or later
    assert [c.dir for c in earlier_inputs(attempts, 2)] == [str(data)]  # the server's directories, not m0/...
    pack_attempt(attempts / "2", [(str(job), "m0")], earlier_inputs(attempts, 2))
    with tarfile.open(attempts / "2" / WORKSPACE) as tar:
        assert "m0/inputs/data/a.bin" not in tar.getnames()
    assert earlier_inputs(tmp_path / "none", 1) == ()


def test_a_file_left_out_under_one_name_goes_in_whole_under_another(tmp_path: Path) -> None:
    """Two input directories holding the same cache entry (hard links of one inode): one is listed (its
    file left out), the other changed since and travels in the tar: as a file, not a link to nothing."""
    job = tmp_path / "job"
    (job / "inputs" / "one").mkdir(parents=True)
    (job / "inputs" / "two").mkdir(parents=True)
    (job / "inputs" / "one" / "f").write_bytes(b"y" * 10)
    os.link(job / "inputs" / "one" / "f", job / "inputs" / "two" / "f")
    obj = ObjectInfo("f", "obs://b/d/f", 10, "e")
    gone = ObjectInfo("g", "obs://b/d/g", 5, "e")  # listed, but not there: that directory travels whole
    pack_attempt(tmp_path / "a", [(str(job), "m0")],
                 (CachedInputs(str(job / "inputs" / "one"), "obs://b/d/", "p", "s", (obj,)),
                  CachedInputs(str(job / "inputs" / "two"), "obs://b/d/", "p", "s", (obj, gone))))
    unpack(tmp_path / "a" / WORKSPACE, tmp_path / "out")
    assert (tmp_path / "out" / "m0" / "inputs" / "two" / "f").read_bytes() == b"y" * 10
    assert not (tmp_path / "out" / "m0" / "inputs" / "one" / "f").exists()
