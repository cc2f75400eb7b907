"""The sandbox's pure parts: bwrap's command line, image references, skopeo's errors, what the layout binds."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from openarts.config import ConfigError, validate_config
from openarts.core.layout import layout
from openarts.core.resources import build_catalog
from openarts.core.spec import parse_job
from openarts.executors import sandbox as sb
from openarts.executors.base import Mount
from openarts.executors.images import ImageError, ImageRef, Registry, _classify, parse_ref


def _box(tmp_path: Path, hidden: list[Path] | None = None) -> sb.Sandbox:
    ident = tmp_path / "ident"
    sb._write_identity(ident)
    return sb.Sandbox("/usr/bin/bwrap", [], hidden or [], ident)


def _pairs(argv: list[str], option: str) -> list[tuple[str, str]]:
    return [(argv[i + 1], argv[i + 2]) for i, a in enumerate(argv) if a == option]


def test_argv_namespaces_and_init(tmp_path: Path) -> None:
    argv = _box(tmp_path).argv([Mount("/data/jobs/j/home/ma-user", "/home/ma-user")], "/home/ma-user", (), None)
    for flag in ("--unshare-user", "--unshare-pid", "--unshare-ipc", "--as-pid-1", "--die-with-parent",
                 "--disable-userns"):
        assert flag in argv
    assert argv[argv.index("--cap-drop") + 1] == "ALL"
    assert "--unshare-net" not in argv and "--unshare-all" not in argv  # the host network stays
    assert argv[argv.index("--uid") + 1] == "1000" and argv[argv.index("--gid") + 1] == "100"
    assert ("/data/jobs/j/home/ma-user", "/home/ma-user") in _pairs(argv, "--bind")
    assert argv[argv.index("--chdir") + 1] == "/home/ma-user"
    assert argv[-4:] == ["/bin/sh", "-c", sb.INIT, "openarts-init"]  # the command follows
    assert argv[argv.index("--info-fd") + 1] == "3"
    ro = dict(_pairs(argv, "--ro-bind"))
    assert ro[str(tmp_path / "ident" / "passwd")] == "/etc/passwd"
    assert "/tmp" in [argv[i + 1] for i, a in enumerate(argv) if a == "--tmpfs"]


def test_hidden_paths_are_masked(tmp_path: Path) -> None:
    secret_dir = tmp_path / "data"
    secret_dir.mkdir()
    secret_file = tmp_path / "master.key"
    secret_file.write_text("k")
    argv = _box(tmp_path, [secret_dir, secret_file]).argv([], "/", (), None)
    assert str(secret_dir) in [argv[i + 1] for i, a in enumerate(argv) if a == "--tmpfs"]
    assert ("/dev/null", str(secret_file)) in _pairs(argv, "--ro-bind")


def test_only_assigned_gpus_are_bound(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    present = {f"/dev/nvidia{i}" for i in range(4)} | {"/dev/nvidiactl", "/dev/nvidia-uvm"}
    real_exists = os.path.exists
    monkeypatch.setattr(sb.os.path, "exists", lambda p: p in present or real_exists(p))
    argv = _box(tmp_path).argv([], "/", (1, 2), None)
    bound = [src for src, _ in _pairs(argv, "--dev-bind")]
    assert bound == ["/dev/nvidia1", "/dev/nvidia2", "/dev/nvidiactl", "/dev/nvidia-uvm"]
    assert _pairs(_box(tmp_path).argv([], "/", (), None), "--dev-bind") == []


def test_image_root_is_bound_entry_by_entry(tmp_path: Path) -> None:
    rootfs = tmp_path / "rootfs"
    for d in ("bin", "etc", "proc", "home/ma-user/anaconda3", "home/ma-user/modelarts"):
        (rootfs / d).mkdir(parents=True)
    os.symlink("bin", rootfs / "sbin")
    os.symlink("/root/.ssh", rootfs / "home/ma-user/.ssh")  # bwrap would resolve it on the host
    image = sb.RootImage("r/x:1", "sha256:" + "0" * 64, rootfs, 1000, 100, ("PATH=/bin",), "/")
    argv = _box(tmp_path).argv([Mount("/j/home/ma-user/modelarts", "/home/ma-user/modelarts")], "/", (), image)
    ro = _pairs(argv, "--ro-bind")
    assert (str(rootfs / "bin"), "/bin") in ro and (str(rootfs / "etc"), "/etc") in ro
    assert not any(dst == "/proc" for _, dst in ro)  # the sandbox makes its own
    assert ("bin", "/sbin") in _pairs(argv, "--symlink")
    assert (str(rootfs / "home/ma-user/anaconda3"), "/home/ma-user/anaconda3") in ro  # the image's home
    assert ("/root/.ssh", "/home/ma-user/.ssh") in _pairs(argv, "--symlink")  # a link stays a link
    assert not any(dst in ("/home/ma-user/modelarts", "/home/ma-user/.ssh") for _, dst in ro)
    # the image's home entries go into a fresh tmpfs, never into a directory the job could have changed
    assert argv.index("/home/ma-user") < argv.index(str(rootfs / "home/ma-user/anaconda3")) < argv.index("--bind")
    assert argv[argv.index("/home/ma-user") - 1] == "--tmpfs"
    assert not any(dst == "/etc/passwd" for _, dst in ro)  # the image's own users


def test_reserved_paths() -> None:
    assert sb.reserved_path("/usr/local/data") == "/usr"
    assert sb.reserved_path("/etc") == "/etc"
    assert sb.reserved_path("/usrdata") is None
    assert sb.reserved_path("/home/ma-user/x") is None


def test_secret_entries(tmp_path: Path) -> None:
    (tmp_path / "open").write_text("x")
    (tmp_path / "shadow").write_text("x")
    os.chmod(tmp_path / "shadow", 0o640)
    (tmp_path / "private").mkdir()
    (tmp_path / "private" / "key").write_text("x")
    os.chmod(tmp_path / "private", 0o700)
    assert sorted(sb.secret_entries(tmp_path)) == [tmp_path / "private", tmp_path / "shadow"]


REGS = [Registry("swr.example.com", default=True), Registry("127.0.0.1:5000", insecure=True)]


@pytest.mark.parametrize(("url", "ref"), [
    ("127.0.0.1:5000/org/img:1.2", ImageRef("127.0.0.1:5000", "org/img", "1.2", "")),
    ("localhost/img", ImageRef("localhost", "img", "latest", "")),
    ("org/Img:v1", ImageRef("swr.example.com", "org/img", "v1", "")),
    ("reg.io/a/b/c@sha256:" + "a" * 64, ImageRef("reg.io", "a/b/c", "", "sha256:" + "a" * 64)),
])
def test_parse_ref(url: str, ref: ImageRef) -> None:
    assert parse_ref(url, REGS) == ref


@pytest.mark.parametrize("url", ["", "has space/x:1", "docker://reg.io/x:1", "reg.io/x@md5:12", "reg.io/x:t@g!",
                                 "reg.io/bad$name:1", "reg.io/x@sha256:" + "g" * 64,
                                 "reg.io/x@sha256:../../jobs/a/home/ma-user/b" + "/" * 31])
def test_parse_ref_refuses(url: str) -> None:
    with pytest.raises(ImageError):
        parse_ref(url, REGS)


def test_parse_ref_without_default_registry() -> None:
    with pytest.raises(ImageError, match="default"):
        parse_ref("org/img:1", [Registry("reg.io")])


@pytest.mark.parametrize(("stderr", "says"), [
    ("FATA[0000] ... manifest unknown: manifest unknown", "does not exist"),
    ("reading manifest 1 in r/x: unauthorized: authentication required", "refused the credentials"),
    ("pinging container registry: dial tcp 127.0.0.1:9: connect: connection refused", "unreachable"),
    ("writing blob: write /x: no space left on device", "no space left"),
    ("http: server gave HTTP response to HTTPS client", "insecure = true"),
    ("something else entirely", "cannot pull"),
])
def test_skopeo_errors_are_classified(stderr: str, says: str) -> None:
    assert says in _classify(stderr, ImageRef("reg.io", "x", "1", ""))


def _spec(**algorithm: Any) -> Any:
    body = {"kind": "job", "metadata": {"name": "j"},
            "algorithm": {"command": "true", **algorithm},
            "spec": {"resource": {"flavor_id": "modelarts.local.cpu.1u", "node_count": 1}}}
    return parse_job(body, build_catalog({}, gpus=[]))


def test_layout_binds_and_paths_as_seen(tmp_path: Path) -> None:
    spec = _spec(inputs=[{"name": "data_url", "remote": {"obs": {"obs_url": "obs://b/i/"}}, "local_dir": "/data/in"}],
                 outputs=[{"name": "train_url", "remote": {"obs": {"obs_url": "obs://b/o/"}}}])
    lay = layout(spec, tmp_path, sandboxed=True)
    assert lay.seen(lay.outputs[0].local) == "/home/ma-user/modelarts/outputs/train_url_0"
    assert lay.seen(lay.inputs[0].local) == "/data/in"
    binds = dict((inside, host) for host, inside in lay.binds())
    assert binds == {"/home/ma-user": tmp_path / "home/ma-user", "/cache": tmp_path / "cache",
                     "/data/in": tmp_path / "data/in"}
    plain = layout(spec, tmp_path)
    assert plain.seen(plain.outputs[0].local) == str(tmp_path / "home/ma-user/modelarts/outputs/train_url_0")


def test_local_code_dir_is_copied_in_a_sandbox(tmp_path: Path) -> None:
    spec = _spec(code_dir=str(tmp_path / "code"), boot_file="train.py", command=None)
    assert layout(spec, tmp_path / "root").code_in_place
    boxed = layout(spec, tmp_path / "root", sandboxed=True)
    assert not boxed.code_in_place and boxed.seen(boxed.code) == "/home/ma-user/modelarts/user-job-dir/code"


def test_image_url_in_a_job() -> None:
    spec = _spec(engine={"image_url": "reg.io/org/img:1"})
    assert spec.image == "reg.io/org/img:1" and spec.engine.python == "python"
    # beside a preset engine's id: the engine's names, the image's own python (not the host's path)
    named = _spec(engine={"engine_id": "local-python3", "image_url": "reg.io/org/img:1"})
    assert named.engine.engine_id == "local-python3" and named.engine.python == "python"


@pytest.mark.parametrize(("raw", "where"), [
    ({"server": {"sandbox": "yes"}}, "sandbox"),
    ({"server": {"sandbox_read_only": ["relative"]}}, "sandbox_read_only"),
    ({"registries": [{"username": "u"}]}, "host"),
    ({"registries": [{"host": "r", "insecure": "true"}]}, "insecure"),
])
def test_config_checks_sandbox_and_registries(raw: dict[str, Any], where: str) -> None:
    with pytest.raises(ConfigError, match=where):
        validate_config(Path("config.toml"), raw)


def test_data_dir_under_a_visible_directory_is_masked(tmp_path: Path) -> None:
    """A data directory inside a directory the sandbox shows (here a `sandbox_read_only` one) is an empty
    directory to the worker; the rest of that directory stays visible. Real bwrap."""
    import subprocess

    shared = tmp_path / "shared"
    data = shared / "openarts-data"
    (data / "jobs").mkdir(parents=True)
    (data / "openarts.db").write_text("the database")
    (shared / "models.txt").write_text("a model\n")
    key = tmp_path / "elsewhere.key"  # not under anything shown: nothing to mask
    box = sb.Sandbox.create(data, [key], [shared])
    assert data in box.hidden and key not in box.hidden
    argv = [*box.argv([], "/", (), None, info_fd=False), "/bin/sh", "-c",
            f"cat {shared}/models.txt; ls -A {data} | wc -l; cat {data}/openarts.db"]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=30)
    assert done.stdout.splitlines()[:2] == ["a model", "0"], (done.stdout, done.stderr)
    assert "No such file" in done.stderr and "the database" not in done.stdout


def test_staging_replaces_links_a_job_left_with_real_directories(tmp_path: Path) -> None:
    from openarts.supervisor.workspace import first_link, real_dir

    root, victim = tmp_path / "job", tmp_path / "victim"
    victim.mkdir()
    inputs = root / "home/ma-user/modelarts/inputs"
    inputs.mkdir(parents=True)
    os.symlink(victim, inputs / "data_url_0")
    assert first_link(root, inputs / "data_url_0" / "x") == inputs / "data_url_0"
    real_dir(root, inputs / "data_url_0")
    assert (inputs / "data_url_0").is_dir() and not (inputs / "data_url_0").is_symlink()
    assert first_link(root, inputs / "data_url_0") is None
    assert list(victim.iterdir()) == []


def test_upload_follows_no_link(tmp_path: Path) -> None:
    from openarts.storage.obs import LocalObjectStore

    store = LocalObjectStore(tmp_path / "obs")
    secret = tmp_path / "secret.txt"
    secret.write_text("host secret")
    src = tmp_path / "out"
    (src / "sub").mkdir(parents=True)
    (src / "sub" / "model.bin").write_text("weights")
    os.symlink(secret, src / "leak.txt")
    os.symlink(tmp_path, src / "everything")
    os.mkfifo(src / "pipe")
    assert store.upload(src, "obs://b/o/") == 1
    assert [p.relative_to(tmp_path / "obs") for p in (tmp_path / "obs").rglob("*") if p.is_file()] == \
        [Path("b/o/sub/model.bin")]
    os.symlink(tmp_path, tmp_path / "linked-out")
    with pytest.raises(ValueError, match="symbolic link"):
        store.upload(tmp_path / "linked-out", "obs://b/x/")


@pytest.mark.parametrize(("field", "value", "says"), [
    ("local_dir", "/", "root directory"),
    ("local_dir", "/attempts/1/worker-0", "/attempts"),
    ("local_dir", "/data/../attempts", "/attempts"),
    ("working_dir", "/attempts", "/attempts"),
    ("local_code_dir", "/", "root directory"),
    ("local_dir", "relative/dir", "absolute"),
])
def test_container_paths_cannot_name_the_services_files(field: str, value: str, says: str) -> None:
    from openarts.core.errors import InvalidRequest

    algorithm: dict[str, Any] = {}
    if field == "local_dir":
        algorithm["outputs"] = [{"name": "o", "remote": {"obs": {"obs_url": "obs://b/o/"}}, "local_dir": value}]
    else:
        algorithm[field] = value
    with pytest.raises(InvalidRequest, match=says):
        _spec(**algorithm)


class _Images:
    def __init__(self, image: sb.RootImage) -> None:
        self.image = image

    def lookup(self, url: str) -> sb.RootImage:
        return self.image


def test_an_image_environment_cannot_add_bwrap_options(tmp_path: Path) -> None:
    """The worker's environment reaches bwrap as NUL-separated `--setenv` arguments: a NUL inside an
    image's Env entry would start an option of its own (`--bind / /host`)."""
    from openarts.executors.agent import NodeAgent
    from openarts.executors.base import StartError, TaskLaunch

    rootfs = tmp_path / "rootfs"
    (rootfs / "bin").mkdir(parents=True)
    evil = sb.RootImage("r/x:1", "sha256:" + "0" * 64, rootfs, 1000, 100,
                        ("PATH=/bin", "A=x\0--bind\0/\0/host"), "/")
    ex = NodeAgent(_box(tmp_path), _Images(evil))  # type: ignore[arg-type]
    launch = TaskLaunch("j", 1, "worker-0", ["true"], {"MA_JOB_ID": "j"}, "/", tmp_path / "run", image="r/x:1")
    with pytest.raises(StartError, match="NUL"):
        ex.start(launch)
    assert not (tmp_path / "run").exists()


def test_sys_shows_devices_only_to_gpu_workers(tmp_path: Path) -> None:
    cpu = _box(tmp_path).argv([], "/", (), None)
    assert ("/sys/devices/system", "/sys/devices/system") in _pairs(cpu, "--ro-bind")
    assert ("/sys", "/sys") not in _pairs(cpu, "--ro-bind")
    gpu = _box(tmp_path).argv([], "/", (0,), None)
    assert ("/sys", "/sys") in _pairs(gpu, "--ro-bind")
    assert [gpu[i + 1] for i, a in enumerate(gpu) if a == "--tmpfs" and gpu[i + 1].startswith("/sys")] == \
        ["/sys/kernel", "/sys/firmware"]


def test_the_sandbox_init_is_signalled_only_once_it_catches_sigterm() -> None:
    import signal as sig
    import subprocess

    from openarts.executors.agent import _catches

    plain = subprocess.Popen(["sleep", "30"])
    trapping = subprocess.Popen(["sh", "-c", "trap 'exit 0' TERM; sleep 30 & wait"])
    try:
        from conftest import wait_for

        assert not _catches(plain.pid, sig.SIGTERM)
        wait_for(lambda: _catches(trapping.pid, sig.SIGTERM), timeout=5, message="the trap")
    finally:
        plain.kill()
        trapping.kill()
        plain.wait()
        trapping.wait()


def test_restaging_clears_links_planted_inside_an_input(tmp_path: Path) -> None:
    from openarts.storage.obs import LocalObjectStore
    from openarts.supervisor import workspace as ws

    store = LocalObjectStore(tmp_path / "obs")
    (tmp_path / "obs" / "b" / "in" / "sub").mkdir(parents=True)
    (tmp_path / "obs" / "b" / "in" / "sub" / "x.txt").write_text("data")
    victim = tmp_path / "victim"
    victim.mkdir()
    spec = _spec(inputs=[{"name": "data_url", "remote": {"obs": {"obs_url": "obs://b/in/"}}}])
    lay = layout(spec, tmp_path / "job", sandboxed=True)
    ws.stage(spec, lay, store)
    target = lay.inputs[0].local
    import shutil

    shutil.rmtree(target / "sub")
    os.symlink(victim, target / "sub")  # what an attempt could leave behind
    ws.stage(spec, lay, store)
    assert (target / "sub" / "x.txt").read_text() == "data" and not (target / "sub").is_symlink()
    assert list(victim.iterdir()) == []


def test_code_copied_into_a_sandboxed_job_leaves_out_what_others_may_not_read(tmp_path: Path) -> None:
    from openarts.storage.obs import LocalObjectStore
    from openarts.supervisor import workspace as ws

    code = tmp_path / "code"
    code.mkdir()
    (code / "train.py").write_text("print(1)\n")
    (code / "key.pem").write_text("secret")
    os.chmod(code / "key.pem", 0o600)
    spec = _spec(code_dir=str(code), boot_file="train.py", command=None)
    lay = layout(spec, tmp_path / "job", sandboxed=True)
    ws.stage(spec, lay, LocalObjectStore(tmp_path / "obs"), ws.CodeRules(roots=(tmp_path,)))
    assert lay.code is not None
    assert sorted(p.name for p in lay.code.iterdir()) == ["train.py"]


def test_uploads_drop_setuid_bits(tmp_path: Path) -> None:
    from openarts.storage.obs import LocalObjectStore

    src = tmp_path / "out"
    src.mkdir()
    (src / "tool").write_text("#!/bin/sh\n")
    os.chmod(src / "tool", 0o4755)
    LocalObjectStore(tmp_path / "obs").upload(src, "obs://b/o/")
    assert os.stat(tmp_path / "obs" / "b" / "o" / "tool").st_mode & 0o7777 == 0o755
