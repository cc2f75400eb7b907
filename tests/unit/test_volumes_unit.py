"""NFS volumes (spec.volumes[].nfs): the spec's checks, the mountinfo parser, where a share is on this
machine, the worker's mounts and the bwrap options they become (core/volumes.py, executors/volumes.py)."""

from __future__ import annotations

import copy
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from openarts.config import ConfigError, Settings, validate_config
from openarts.core import errors
from openarts.core.layout import CACHE, MA_HOME, MA_MOUNT, layout
from openarts.core.resources import build_catalog
from openarts.core.spec import parse_job
from openarts.core.volumes import JOB_DIRS, Volume, nfs_path, parse_mountinfo, share_dir
from openarts.core.volumes import MA_HOME as VOLUMES_MA_HOME
from openarts.executors import sandbox as sb
from openarts.executors.base import Mount, StartError
from openarts.executors.volumes import Shares, VolumeError, host_dirs, nfs_shares, volume_mounts

MOUNTINFO = """\
22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw,errors=remount-ro
25 22 0:21 / /proc rw,nosuid,nodev,noexec,relatime shared:12 - proc proc rw
40 22 0:35 / /mnt/example rw,relatime shared:20 - nfs4 10.10.10.10:/example/path rw,vers=4.2,addr=10.10.10.10
41 22 0:36 / /mnt/old\\040share rw,relatime shared:21 - nfs nas.local:/export/old/ rw,vers=3
42 22 0:37 / /mnt/v6 rw,relatime - nfs4 [fd00::1]:/ rw,vers=4.1
43 22 0:35 /sub /srv/bound rw,relatime shared:20 - nfs4 10.10.10.10:/example/path rw,vers=4.2
44 22 0:35 / /mnt/again rw,relatime shared:20 - nfs4 10.10.10.10:/example/path rw,vers=4.2
45 22 0:38 / /proc/fs/nfsd rw,relatime - nfsd nfsd rw
46 22 0:39 / /data rw,relatime - fuse.sshfs host:/remote rw
"""


def test_mountinfo_parser_finds_nfs_mounts() -> None:
    assert parse_mountinfo(MOUNTINFO) == {
        "10.10.10.10:/example/path": "/mnt/example",  # the first mount point of a share
        "nas.local:/export/old": "/mnt/old share",  # octal escapes undone, the share normalised
        "[fd00::1]:/": "/mnt/v6",
    }  # a bind of a subdirectory (root /sub), nfsd and other file systems are left out
    assert parse_mountinfo("") == {} and parse_mountinfo("garbage\n1 2 3 - nfs\n") == {}


@pytest.mark.parametrize(("value", "norm"), [
    ("10.10.10.10:/example/path", "10.10.10.10:/example/path"),
    ("NAS.local:/export//a/./b/", "nas.local:/export/a/b"),
    ("[fd00::1]:/", "[fd00::1]:/"),
    ("10.0.0.1:/a/../b", None), ("10.0.0.1:relative", None), ("/just/a/path", None), (":/x", None),
    ("fd00::1:/x", None), ("host:", None), ("obs://bucket/x", None),
])
def test_nfs_path_form(value: str, norm: str | None) -> None:
    assert nfs_path(value) == norm


def test_share_dir_exact_and_below_a_mounted_share() -> None:
    mounted = {"10.0.0.1:/export": "/mnt/e", "10.0.0.1:/export/deep": "/mnt/deep", "10.0.0.2:/": "/mnt/root"}
    assert share_dir("10.0.0.1:/export/", mounted) == "/mnt/e"
    assert share_dir("10.0.0.1:/export/a/b", mounted) == "/mnt/e/a/b"
    assert share_dir("10.0.0.1:/export/deep/x", mounted) == "/mnt/deep/x"  # the closest share
    assert share_dir("10.0.0.2:/any/where", mounted) == "/mnt/root/any/where"
    assert share_dir("10.0.0.1:/exportx", mounted) is None  # not a path inside /export
    assert share_dir("10.0.0.3:/export", mounted) is None
    assert share_dir("not a share", mounted) is None


def _body(volumes: Any, **algorithm: Any) -> dict[str, Any]:
    return {"kind": "job", "metadata": {"name": "j"}, "algorithm": {"command": "true", **algorithm},
            "spec": {"resource": {"flavor_id": "modelarts.local.cpu.1u", "node_count": 1}, "volumes": volumes}}


def _spec(volumes: Any, **algorithm: Any) -> Any:
    return parse_job(_body(volumes, **algorithm), build_catalog({}, gpus=[]))


def _nfs(server: str = "10.10.10.10:/example/path", local: str = "/mnt/example", **more: Any) -> dict[str, Any]:
    return {"nfs": {"nfs_server_path": server, "local_path": local, **more}}


def test_volumes_parsed_and_kept_as_given() -> None:
    given = [_nfs(read_only=True), _nfs("nas:/export/b", "/home/ma-user/work/"), _nfs("nas:/c", "/tmp/c", pfs=None)]
    body = _body(given)
    spec = parse_job(body, build_catalog({}, gpus=[]))
    assert spec.volumes == (Volume("10.10.10.10:/example/path", "/mnt/example", True),
                            Volume("nas:/export/b", "/home/ma-user/work", False),
                            Volume("nas:/c", "/tmp/c", False))
    assert spec.request["spec"]["volumes"] == copy.deepcopy(given)  # the job document shows them as given
    assert _spec(None).volumes == () and "volumes" not in _spec(None).request["spec"]
    assert _spec([]).volumes == ()


@pytest.mark.parametrize(("volumes", "where", "says"), [
    ([{"obs": {"obs_path": "obs://b/x", "local_path": "/x"}}], "spec.volumes[0].obs", "only nfs volumes"),
    ([{"pfs": {"pfs_path": "pfs://b/x", "local_path": "/x"}}], "spec.volumes[0].pfs", "only nfs volumes"),
    ([{}], "spec.volumes[0].nfs", "required"),
    (["nas:/x"], "spec.volumes[0]", "must be an object"),
    ({"nfs": {}}, "spec.volumes", "must be an array"),
    ([_nfs("nas/x")], "nfs_server_path", "host:/path"),
    ([_nfs("nas:/a/../../etc")], "nfs_server_path", "'..'"),
    ([{"nfs": {"nfs_server_path": "nas:/x"}}], "local_path", "required"),
    ([_nfs(local="mnt/x")], "local_path", "absolute"),
    ([_nfs(local="/")], "local_path", "root directory"),
    ([_nfs(local="/attempts/x")], "local_path", "service's own files"),
    ([_nfs(local="/home/ma-user")], "local_path", "the job's home"),
    ([_nfs(local="/home")], "local_path", "the job's home"),
    ([_nfs(local="/home/ma-user/modelarts/inputs/x")], "local_path", "/home/ma-user/modelarts"),
    ([_nfs(local="/cache/data")], "local_path", "/cache"),
    ([_nfs(read_only="yes")], "read_only", "boolean"),
    ([_nfs(local="/mnt/a"), _nfs("nas:/b", "/mnt/a/b")], "spec.volumes[1].nfs.local_path",
     "overlaps spec.volumes[0].nfs.local_path"),
])
def test_volumes_refused(volumes: Any, where: str, says: str) -> None:
    with pytest.raises(errors.InvalidRequest) as info:
        _spec(volumes)
    assert where in info.value.message and says in info.value.message
    assert type(info.value) is errors.InvalidRequest  # 400 ModelArts.2788, InvalidParam


def test_volume_apart_from_the_jobs_own_directories() -> None:
    inputs = [{"name": "data_url", "remote": {"obs": {"obs_url": "obs://b/i/"}}, "local_dir": "/data/in"}]
    with pytest.raises(errors.InvalidRequest, match=r"overlaps algorithm\.inputs\[0\]\.local_dir"):
        _spec([_nfs(local="/data")], inputs=inputs)
    with pytest.raises(errors.InvalidRequest, match=r"overlaps algorithm\.local_code_dir"):
        _spec([_nfs(local="/code/nfs")], local_code_dir="/code")
    # a working directory in a volume is the volume's: it is not bound over it
    spec = _spec([_nfs(local="/mnt/example")], working_dir="/mnt/example/run")
    lay = layout(spec, Path("/jobs/j"), sandboxed=True)
    assert [inside for _, inside in lay.binds()] == ["/cache", "/home/ma-user"]
    assert lay.seen(lay.cwd) == "/mnt/example/run"


def test_job_dirs_are_the_layouts() -> None:
    assert JOB_DIRS == (MA_MOUNT, CACHE) and VOLUMES_MA_HOME == MA_HOME


def _settings(tmp_path: Path, volumes: dict[str, Any] | None = None) -> Settings:
    return Settings(data_dir=tmp_path / "data", raw={"volumes": volumes} if volumes is not None else {},
                    sandbox_read_only=["/srv/models"])


def test_shares_from_config_and_mountinfo(tmp_path: Path) -> None:
    shares = nfs_shares(_settings(tmp_path, {"nfs": {"10.10.10.10:/example/path/": "/data/ex/"}}), MOUNTINFO)
    assert shares.mounted["10.10.10.10:/example/path"] == "/data/ex"  # the config wins
    assert shares.mounted["nas.local:/export/old"] == "/mnt/old share"
    assert str((tmp_path / "data").resolve()) in shares.private
    assert "/usr" in shares.fixed and "/srv/models" in shares.fixed
    off = nfs_shares(_settings(tmp_path, {"discover": False, "nfs": {"nas:/x": "/mnt/x"}}), MOUNTINFO)
    assert off.mounted == {"nas:/x": "/mnt/x"}
    assert nfs_shares(_settings(tmp_path), "").mounted == {}


def test_volume_mounts_for_the_worker() -> None:
    spec = _spec([_nfs(read_only=True), _nfs("10.10.10.10:/example/path/sub", "/home/ma-user/work")])
    shares = Shares({"10.10.10.10:/example/path": "/mnt/example"}, ("/var/lib/openarts",), sb.RESERVED)
    assert volume_mounts(spec, shares) == (
        Mount("/mnt/example", "/mnt/example", read_only=True, shared=True),
        Mount("/mnt/example/sub", "/home/ma-user/work", read_only=False, shared=True))
    assert volume_mounts(_spec(None), shares, sandboxed=False) == ()


@pytest.mark.parametrize(("volumes", "shares", "sandboxed", "where", "says"), [
    ([_nfs("nas:/gone")], Shares({}), True, "spec.volumes[0].nfs.nfs_server_path", "is not mounted on this machine"),
    ([_nfs()], Shares({"10.10.10.10:/example/path": "/mnt/e"}), False, "spec.volumes", "sandbox"),
    ([_nfs("10.10.10.10:/")], Shares({"10.10.10.10:/": "/srv"}, ("/srv/openarts",)), True, "nfs_server_path",
     "where this server keeps its own files"),
    ([_nfs()], Shares({"10.10.10.10:/": "/srv/openarts/x"}, ("/srv/openarts",)), True, "nfs_server_path",
     "where this server keeps its own files"),
    ([_nfs(local="/opt/data")], Shares({"10.10.10.10:/": "/mnt"}, (), sb.RESERVED), True, "local_path",
     "lies under /opt"),
])
def test_volumes_this_machine_cannot_give(volumes: Any, shares: Shares, sandboxed: bool, where: str,
                                          says: str) -> None:
    spec = _spec(volumes)
    with pytest.raises(VolumeError) as info:
        host_dirs(spec, shares, sandboxed)
    assert info.value.field.endswith(where) and says in info.value.why
    with pytest.raises(StartError, match=says):
        volume_mounts(spec, shares, sandboxed)


def _pairs(argv: list[str]) -> list[tuple[str, str, str]]:
    return [(a, argv[i + 1], argv[i + 2]) for i, a in enumerate(argv) if a in ("--bind", "--ro-bind")]


def test_read_only_volume_is_a_ro_bind_after_the_home(tmp_path: Path) -> None:
    sb._write_identity(tmp_path / "ident")
    box = sb.Sandbox("/usr/bin/bwrap", [], [], tmp_path / "ident")
    argv = box.argv([Mount("/j/home/ma-user", "/home/ma-user"), Mount("/nfs/a", "/home/ma-user/data", True, True),
                     Mount("/nfs/b", "/mnt/b", False, True)], "/home/ma-user", (), None)
    binds = _pairs(argv)
    assert binds[-3:] == [("--bind", "/j/home/ma-user", "/home/ma-user"),
                          ("--ro-bind", "/nfs/a", "/home/ma-user/data"), ("--bind", "/nfs/b", "/mnt/b")]


@pytest.mark.skipif(shutil.which("bwrap") is None, reason="bwrap is not installed")
def test_real_bwrap_read_only_and_writable_volumes(tmp_path: Path) -> None:
    """A read-only volume cannot be written from inside, even where its files are writable on the host;
    a read-write one can. Real bwrap."""
    ro, rw, home = tmp_path / "ro", tmp_path / "rw", tmp_path / "home"
    for d in (ro, rw, home):
        d.mkdir()
    (ro / "data.txt").write_text("from the share\n")
    box = sb.Sandbox.create(tmp_path / "data", [], [])
    argv = box.argv([Mount(str(home), "/home/ma-user"), Mount(str(ro), "/home/ma-user/ro", True, True),
                     Mount(str(rw), "/mnt/rw", False, True)], "/home/ma-user", (), None, info_fd=False)
    script = ("cat /home/ma-user/ro/data.txt; echo x > /home/ma-user/ro/new.txt || echo RO-REFUSED; "
              "echo written > /mnt/rw/out.txt && echo RW-OK")
    done = subprocess.run([*argv, "/bin/sh", "-c", script], capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    assert "from the share" in done.stdout and "RO-REFUSED" in done.stdout and "RW-OK" in done.stdout
    assert "Read-only file system" in done.stderr
    assert not (ro / "new.txt").exists() and (rw / "out.txt").read_text() == "written\n"
    assert (home / "ro").is_dir()  # the mount point, made in the home's directory on the host


@pytest.mark.parametrize(("raw", "where"), [
    ({"volumes": {"nfs": {"nas/x": "/mnt/x"}}}, "'nas/x'"),
    ({"volumes": {"nfs": {"nas:/x": "mnt/x"}}}, "'nas:/x'"),
    ({"volumes": {"nfs": {"nas:/x": "/"}}}, "'nas:/x'"),
    ({"volumes": {"nfs": {"nas:/x": 3}}}, "'nas:/x'"),
    ({"volumes": {"nfs": "nas:/x"}}, "[volumes] nfs"),
    ({"volumes": {"discover": "yes"}}, "[volumes] discover"),
    ({"volumes": {"mounts": {}}}, "[volumes] mounts"),
])
def test_config_checks_volumes(raw: dict[str, Any], where: str) -> None:
    with pytest.raises(ConfigError) as info:
        validate_config(Path("config.toml"), raw)
    assert where in str(info.value)


def test_config_with_volumes_passes() -> None:
    validate_config(Path("config.toml"), {"volumes": {"discover": False, "nfs": {"10.10.10.10:/example/path":
                                                                                "/mnt/example"}}})
