"""The Ray executor's pure parts: Ray's node records as the scheduler's nodes, pools from config."""

from __future__ import annotations

from pathlib import Path

from openarts.config import Settings
from openarts.core.resources import DEFAULT_POOL
from openarts.executors.ray import namespace_of, node_of, pool_of
from openarts.executors.ray_agent import pack, unpack

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
    unpack(pack([(str(src), "m0"), (str(tmp_path / "missing"), "m1")]), tmp_path / "out")
    assert (tmp_path / "out" / "m0" / "code" / "train.py").read_text() == "print(1)\n"
    assert (tmp_path / "out" / "m0" / "code" / "link").is_symlink()
    assert not (tmp_path / "out" / "m1").exists()
