"""The config file is checked before the server starts: each problem is one ConfigError line naming the
file and the key (the real `openarts serve` refusing them: tests/test_serve_startup.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from openarts.cli.serve import catalog_of, security_config
from openarts.config import ConfigError, load_settings
from openarts.core.suggest import did_you_mean, edit_distance

GOOD = """
[server]
terminate_grace_seconds = 0
metrics_interval_seconds = 0.5

[[nodes]]
name = "a"
cpu_cores = 8
memory_gb = 32.5
gpus = [0, 1]
pool = "p"
labels = { zone = "z1", rack = 3 }

[[nodes]]
cpu_cores = 2

[[flavors]]
flavor_id = "modelarts.vm.cpu.2u"
cpu_cores = 0.5
memory_gb = 8
gpus = 0

[[engines]]
engine_id = "torch"
engine_name = "PyTorch"
engine_version = "2.3"
python = "/usr/bin/python3"

[security]
clock_skew_seconds = 60
rate_limit_burst = 10
replay_protection = "strict"
master_key_file = "/etc/openarts/master.key"

[storage]
backend = "s3"
endpoint = "http://127.0.0.1:8333"
access_key_id = "ak"
secret_access_key = "sk"

[storage.buckets.obs-bucket]
endpoint = "https://obs.example"
addressing_style = "virtual"
"""

BAD = [
    ('[[flavors]]\ncpu_cores = 2\n', "[[flavors]] entry 1: missing required key 'flavor_id'"),
    ('[[engines]]\nengine_id = ""\n', "[[engines]] entry 1 engine_id: must be a non-empty string, not ''"),
    ('[[engines]]\nengine_id = "a"\n[[engines]]\nengine_nme = "b"\n',
     "[[engines]] entry 2: missing required key 'engine_id'"),
    ('[[engines]]\nengine_id = "a"\npyhton = "/x"\n',
     "[[engines]] entry 1 pyhton: unknown key (did you mean 'python'?)"),
    ("[sever]\n", "[sever]: unknown section (did you mean [server]?)"),
    ("[server]\nreconcile_interval_seconds = 0\n",
     "[server] reconcile_interval_seconds: must be a number greater than 0"),
    ("[server]\nterminate_grace_seconds = -1\n", "[server] terminate_grace_seconds: must be a number of at least 0"),
    ("[server]\ntaint_seconds = true\n", "[server] taint_seconds: must be a number of at least 0, not True"),
    ("server = 3\n", "server: must be a table ([server])"),
    ("nodes = 3\n", "nodes: must be an array of tables ([[nodes]] entries)"),
    ("[nodes]\nname = 'a'\n", "nodes: must be an array of tables ([[nodes]] entries)"),
    ('[[nodes]]\ngpus = ["a"]\n', "[[nodes]] entry 1 gpus: must be a list of integers"),
    ('[[nodes]]\nlabels = { a = [1] }\n', "[[nodes]] entry 1 labels: must be a table of plain values"),
    ('[[nodes]]\nname = "a"\n[[nodes]]\nname = "a"\n', "[[nodes]] name: 'a' is used by more than one node"),
    ('[[flavors]]\nflavor_id = "f"\ngpus = 1.5\n', "[[flavors]] entry 1 gpus: must be an integer of at least 0"),
    ("[security]\nrate_limit_burst = 1.5\n", "[security] rate_limit_burst: must be an integer of at least 0"),
    ("[security]\nclock_skew_seconds = 'x'\n", "[security] clock_skew_seconds: must be a number of at least 0"),
    ("[security]\nclock_skew_seconds = 0\n", "[security]: clock_skew_seconds must be from 1 to 86400"),
    ("[security]\nreplay_protection = 'sometimes'\n", "[security]: replay_protection must be one of"),
    ("[security]\nclock_skew = 5\n", "[security] clock_skew: unknown key"),
    ("[server\n", "not valid TOML: "),
    ('[storage]\nbackend = "gcs"\n', "[storage] backend: must be one of 'local', 's3'"),
    ('[storage]\nbackend = "s3"\naddressing_style = "dns"\n', "[storage] addressing_style: must be one of"),
    ('[storage]\nendpiont = "http://x"\n', "[storage] endpiont: unknown key (did you mean 'endpoint'?)"),
    ('[storage]\nbackend = "s3"\naccess_key_id = "a"\n', "[storage]: access_key_id and secret_access_key go together"),
    ('[storage.buckets.b]\nbackend = "s3"\n', "[storage.buckets.b] backend: unknown key"),
    ('[storage]\nbuckets = 3\n', "[storage] buckets: must be tables"),
]


def check(tmp_path: Path, text: str) -> None:
    (tmp_path / "config.toml").write_text(text)
    settings = load_settings(tmp_path)
    security_config(settings)
    catalog_of(settings)


def test_a_good_config_passes_and_builds_the_catalog(tmp_path: Path) -> None:
    (tmp_path / "config.toml").write_text(GOOD)
    settings = load_settings(tmp_path)
    assert settings.config_path == tmp_path / "config.toml"
    assert security_config(settings).rate_limit_burst == 10
    catalog = catalog_of(settings)
    assert [n.name for n in catalog.nodes] == ["a", "node-1"]
    assert catalog.flavors["modelarts.vm.cpu.2u"].cpu_cores == 0.5
    assert catalog.engines["torch"].python == "/usr/bin/python3"
    assert settings.terminate_grace_seconds == 0.0


@pytest.mark.parametrize(("text", "says"), BAD)
def test_each_problem_is_one_line_naming_file_and_key(tmp_path: Path, text: str, says: str) -> None:
    with pytest.raises(ConfigError) as info:
        check(tmp_path, text)
    message = str(info.value)
    assert message.startswith(f"{tmp_path / 'config.toml'}: ")
    assert says in message, message
    assert "\n" not in message


def test_unreadable_and_missing_files(tmp_path: Path) -> None:
    (tmp_path / "config.toml").write_bytes(b"[server]\nx = '\xff'\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_settings(tmp_path)
    (tmp_path / "config.toml").unlink()
    (tmp_path / "config.toml").mkdir()
    with pytest.raises(ConfigError, match="cannot read it"):
        load_settings(tmp_path)
    with pytest.raises(ConfigError, match="no such file"):
        load_settings(tmp_path, tmp_path / "other.toml")


def test_suggestions_by_edit_distance() -> None:
    assert edit_distance("node_cont", "node_count") == 1
    assert edit_distance("kitten", "sitting") == 3
    assert edit_distance("", "abc") == 3
    assert did_you_mean("node_cont", ["flavor_id", "node_count", "pool_id"]) == "node_count"
    assert did_you_mean("Node_Count", ["node_count"]) == "node_count"
    assert did_you_mean("flavour_id", ["flavor_id", "pool_id"]) == "flavor_id"
    assert did_you_mean("zzz", ["kind", "spec"]) is None
    assert did_you_mean("x", ["id"]) is None  # too short to guess from: two edits
