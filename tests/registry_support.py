"""A real registry on 127.0.0.1 (Debian's docker-registry, htpasswd auth) and a small image built here:
a busybox-static root filesystem with a marker file and `ma-user`, assembled with umoci, pushed with
skopeo. Nothing is downloaded."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

from helpers import stop_process

USER, PASSWORD = "puller", "s3cret-pass"
MARKER = "marker-42-from-the-image"
APPLETS = ("sh", "ls", "cat", "id", "echo", "sleep", "env", "pwd", "whoami", "mkdir", "touch", "head", "kill",
           "wc", "readlink", "test", "[", "tr")


@dataclass
class Registry:
    host: str  # 127.0.0.1:PORT
    root: Path
    proc: subprocess.Popen[bytes]
    log: Path

    def requests(self, needle: str) -> int:
        """How many requests whose line in the registry's access log contains `needle`."""
        return sum(1 for line in self.log.read_text(errors="replace").splitlines()
                   if '"GET /v2/' in line and needle in line and "HTTP/1.1\" " in line)

    def stop(self) -> None:
        stop_process(self.proc)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_registry(root: Path) -> Registry:
    root.mkdir(parents=True, exist_ok=True)
    htpasswd = root / "htpasswd"
    subprocess.run(["htpasswd", "-Bbc", str(htpasswd), USER, PASSWORD], check=True, capture_output=True)
    port = _free_port()
    config = root / "config.yml"
    config.write_text(f"""version: 0.1
log:
  level: info
storage:
  filesystem:
    rootdirectory: {root / 'data'}
auth:
  htpasswd:
    realm: openarts-test
    path: {htpasswd}
http:
  addr: 127.0.0.1:{port}
""")
    log = root / "registry.log"
    with log.open("ab") as fh:
        proc = subprocess.Popen(["docker-registry", "serve", str(config)], stdout=fh, stderr=fh,
                                start_new_session=True)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/v2/", timeout=1).status_code in (200, 401):
                return Registry(f"127.0.0.1:{port}", root, proc, log)
        except httpx.HTTPError:
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError(f"the registry did not start: {log.read_text()[-2000:]}")


def build_and_push(registry: Registry, work: Path, repository: str = "test/busybox", tag: str = "1") -> str:
    """Build the image and push it; returns its reference."""
    rootfs = work / "rootfs"
    for d in ("bin", "etc", "home/ma-user", "tmp"):
        (rootfs / d).mkdir(parents=True, exist_ok=True)
    busybox = shutil.which("busybox") or "/bin/busybox"
    shutil.copy(busybox, rootfs / "bin" / "busybox")
    for applet in APPLETS:
        os.symlink("busybox", rootfs / "bin" / applet)
    (rootfs / "etc" / "passwd").write_text("root:x:0:0:root:/root:/bin/sh\n"
                                           "ma-user:x:1000:100:ma-user:/home/ma-user:/bin/sh\n")
    (rootfs / "etc" / "group").write_text("root:x:0:\nma-group:x:100:\n")
    (rootfs / "MARKER").write_text(MARKER + "\n")
    (rootfs / "home" / "ma-user" / ".image-profile").write_text("from the image\n")
    layout = work / "oci"
    run = lambda *argv: subprocess.run(argv, check=True, capture_output=True)  # noqa: E731
    run("umoci", "init", "--layout", str(layout))
    run("umoci", "new", "--image", f"{layout}:{tag}")
    run("umoci", "insert", "--rootless", "--image", f"{layout}:{tag}", str(rootfs), "/")
    run("umoci", "config", "--image", f"{layout}:{tag}", "--config.user", "ma-user",
        "--config.workingdir", "/home/ma-user", "--config.env", "PATH=/bin", "--config.env", "IMAGE_VAR=from-image")
    ref = f"{registry.host}/{repository}:{tag}"
    run("skopeo", "copy", "--dest-tls-verify=false", "--dest-creds", f"{USER}:{PASSWORD}",
        f"oci:{layout}:{tag}", f"docker://{ref}")
    return ref
