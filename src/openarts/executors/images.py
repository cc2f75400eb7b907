"""Custom images: pulled from their registry with skopeo, unpacked with umoci, cached by digest.

    IMAGES/oci/            one OCI image layout: the blobs of every image pulled (layers shared)
    IMAGES/bundles/<hex>/  one unpacked image per manifest digest: rootfs/ and umoci's config.json
    IMAGES/refs.json       image reference -> manifest digest, as last pulled

Registry settings come from the config file (`[[registries]]`: host, username, password, insecure),
never from a job. A reference with a tag other than `latest` that is already unpacked is used without
asking the registry (Kubernetes' IfNotPresent); `latest` or no tag asks for the manifest each time
(skopeo then copies no layer it has). One lock file serializes writers of the layout.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import hashlib
import json
import os
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from openarts.executors.bundles import pack
from openarts.executors.sandbox import RootImage

PULL_TIMEOUT_S = 3600.0
DIGEST = re.compile(r"sha256:[0-9a-f]{64}")  # the only form a digest may take before it names a directory


class ImageError(Exception):
    """An image that cannot be had: one line that says why (unreachable, missing, credentials, space)."""


@dataclass(frozen=True)
class Registry:
    host: str
    username: str = ""
    password: str = ""
    insecure: bool = False  # plain HTTP (or TLS without verification)
    default: bool = False  # for references without a registry host ("org/image:tag", as SWR shows them)


@dataclass(frozen=True)
class ImageRef:
    registry: str
    repository: str
    tag: str  # "" when pinned by digest
    digest: str  # "sha256:..." when pinned

    def __str__(self) -> str:
        return f"{self.registry}/{self.repository}" + (f"@{self.digest}" if self.digest else f":{self.tag}")


def registries_of(raw: Sequence[Mapping[str, Any]]) -> list[Registry]:
    return [Registry(str(r["host"]), str(r.get("username", "")), str(r.get("password", "")),
                     bool(r.get("insecure", False)), bool(r.get("default", False))) for r in raw]


def parse_ref(url: str, registries: Sequence[Registry]) -> ImageRef:
    """`host[:port]/path/name[:tag|@sha256:...]`; without a host, the default registry's."""
    text = url.strip()
    if not text or any(c.isspace() for c in text) or "://" in text:
        raise ImageError(f"image_url {url!r} is not an image reference (host/organization/name:tag)")
    first, _, rest = text.partition("/")
    if rest and ("." in first or ":" in first or first == "localhost"):
        host, path = first, rest
    else:
        default = next((r for r in registries if r.default), None)
        if default is None:
            raise ImageError(f"image_url {url!r} names no registry host and no [[registries]] entry is the "
                             "default (default = true)")
        host, path = default.host, text
    digest = ""
    if "@" in path:
        path, digest = path.split("@", 1)
        if not DIGEST.fullmatch(digest):
            raise ImageError(f"image_url {url!r}: a digest must be sha256: and 64 hex digits")
    name, _, tag = path.rpartition(":") if ":" in path.rsplit("/", 1)[-1] else (path, "", "")
    if not name or not all(part and all(c.isalnum() or c in "._-" for c in part) for part in name.split("/")):
        raise ImageError(f"image_url {url!r}: {name!r} is not a repository name")
    if tag and not all(c.isalnum() or c in "._-" for c in tag):
        raise ImageError(f"image_url {url!r}: {tag!r} is not a tag")
    return ImageRef(host, name.lower(), tag or ("" if digest else "latest"), digest)


def _classify(stderr: str, ref: ImageRef) -> str:
    """skopeo's error as one line that says which of the usual causes it was."""
    text = stderr.strip()
    low = text.lower()
    last = text.splitlines()[-1] if text else "no message"
    if "no space left" in low:
        return f"no space left on device to store image {ref}"
    if "unauthorized" in low or "authentication required" in low or "invalid username/password" in low \
            or "requested access to the resource is denied" in low:
        return f"registry {ref.registry} refused the credentials for {ref} (unauthorized): check its " \
               "[[registries]] username and password"
    if "manifest unknown" in low or "name unknown" in low or "404 (not found)" in low:
        return f"image {ref} does not exist in registry {ref.registry}"
    if "server gave http response to https client" in low:
        return f"registry {ref.registry} speaks plain HTTP: set insecure = true in its [[registries]] entry"
    if "connection refused" in low or "no such host" in low or "timeout" in low or "dial tcp" in low \
            or "network is unreachable" in low:
        return f"registry {ref.registry} is unreachable: {last}"
    return f"cannot pull {ref}: {last}"


class ImageStore:
    def __init__(self, root: Path, registries: Sequence[Registry]) -> None:
        self.root = root
        self.registries = list(registries)
        self.layout = root / "oci"
        self.bundles = root / "bundles"

    def parse(self, url: str) -> ImageRef:
        return parse_ref(url, self.registries)

    # -- looking up (no network) -------------------------------------------------------------------
    def lookup(self, url: str) -> RootImage | None:
        """The unpacked image for `url`, if this node has it."""
        ref = self.parse(url)
        digest = ref.digest or self._refs().get(str(ref), "")
        return self.bundle(str(ref), digest) if digest else None

    def bundle(self, ref: str, digest: str) -> RootImage | None:
        """The unpacked image of manifest `digest`, if this node has it."""
        if not DIGEST.fullmatch(digest):
            return None
        bundle = self.bundles / digest.removeprefix("sha256:")
        try:
            config = json.loads((bundle / "config.json").read_text())
        except (OSError, ValueError):
            return None
        process = config.get("process", {})
        user = process.get("user", {})
        return RootImage(ref, digest, bundle / "rootfs", int(user.get("uid", 0)), int(user.get("gid", 0)),
                         tuple(str(e) for e in process.get("env", [])), str(process.get("cwd") or "/"))

    def bundle_dir(self, digest: str) -> Path:
        if not DIGEST.fullmatch(digest):
            raise ImageError(f"{digest!r} is not a manifest digest")
        return self.bundles / digest.removeprefix("sha256:")

    def pinned(self, url: str, digest: str) -> str:
        """`url` pinned to `digest`, with its registry host: the same image wherever it is looked up."""
        ref = self.parse(url)
        return str(ImageRef(ref.registry, ref.repository, "", digest))

    def bundle_tar(self, image: RootImage) -> Path:
        """The unpacked image as one tar file (its rootfs and runtime config), made once per digest: what
        a Ray node's agent fetches to run it (executors/bundles.py). Slow the first time."""
        dest = self.root / "tars" / (image.digest.removeprefix("sha256:") + ".tar")
        if not dest.exists():
            pack(dest, [(str(image.rootfs.parent), "bundle")])
        return dest

    def _refs(self) -> dict[str, str]:
        try:
            data = json.loads((self.root / "refs.json").read_text())
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    # -- pulling -------------------------------------------------------------------------------------
    def pull(self, url: str) -> tuple[RootImage, bool]:
        """Make `url` available on this node; returns it and whether anything was fetched. ImageError
        (one line) when it cannot be. Slow: never on the event loop."""
        ref = self.parse(url)
        if ref.tag != "latest":
            cached = self.lookup(url)
            if cached is not None:
                return cached, False
        for tool in ("skopeo", "umoci"):
            if shutil.which(tool) is None:
                raise ImageError(f"{tool} is not installed on this node (Debian package {tool})")
        self.root.mkdir(parents=True, exist_ok=True)
        with self._locked():
            digest, tag = self._copy(ref)
            image = self.bundle(str(ref), digest)
            if image is None:
                self._unpack(ref, digest, tag)
                image = self.bundle(str(ref), digest)
                if image is None:
                    raise ImageError(f"image {ref}: unpacked, but its runtime configuration is unreadable")
            if any("\0" in e for e in image.env):  # the executor refuses it too: it would start a bwrap option
                raise ImageError(f"image {ref}: its environment holds a NUL character")
            refs = self._refs()
            refs[str(ref)] = digest
            _write_atomic(self.root / "refs.json", json.dumps(refs, indent=1, sort_keys=True))
        return image, True

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        with open(self.root / "lock", "a") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    def _registry(self, host: str) -> Registry | None:
        return next((r for r in self.registries if r.host == host), None)

    def _copy(self, ref: ImageRef) -> tuple[str, str]:
        """skopeo copy into the layout under a tag of our own; the manifest digest it stored, and the tag."""
        tag = "r" + hashlib.sha256(str(ref).encode()).hexdigest()[:32]
        reg = self._registry(ref.registry)
        with tempfile.TemporaryDirectory(prefix="auth-", dir=self.root) as tmp:
            argv = ["skopeo", "copy", "--quiet", "--retry-times", "1"]
            if reg is not None and reg.insecure:
                argv.append("--src-tls-verify=false")
            if reg is not None and reg.username:
                auth = Path(tmp) / "auth.json"  # credentials in a 0600 file, never in argv
                token = f"{reg.username}:{reg.password}".encode()
                fd = os.open(auth, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                with os.fdopen(fd, "w") as fh:
                    json.dump({"auths": {ref.registry: {"auth": base64.b64encode(token).decode()}}}, fh)
                argv += ["--src-authfile", str(auth)]
            else:
                argv.append("--src-no-creds")
            argv += [f"docker://{ref}", f"oci:{self.layout}:{tag}"]
            done = self._run(argv, ref)
        if done.returncode != 0:
            raise ImageError(_classify(done.stderr, ref))
        for m in json.loads((self.layout / "index.json").read_text()).get("manifests", []):
            if m.get("annotations", {}).get("org.opencontainers.image.ref.name") == tag:
                if not DIGEST.fullmatch(str(m.get("digest"))):
                    raise ImageError(f"image {ref}: the registry gave an unusable digest {m.get('digest')!r}")
                return str(m["digest"]), tag
        raise ImageError(f"image {ref}: pulled, but the layout does not list it")

    def _unpack(self, ref: ImageRef, digest: str, tag: str) -> None:
        self.bundles.mkdir(parents=True, exist_ok=True)
        final = self.bundles / digest.removeprefix("sha256:")
        tmp = self.bundles / f".{final.name}.{os.getpid()}.{time.monotonic_ns()}"
        argv = ["umoci", "unpack", *([] if os.geteuid() == 0 else ["--rootless"]),
                "--image", f"{self.layout}:{tag}", str(tmp)]
        done = self._run(argv, ref)
        if done.returncode != 0:
            shutil.rmtree(tmp, ignore_errors=True)
            lines = done.stderr.strip().splitlines() or ["no message"]
            raise ImageError(_classify(done.stderr, ref) if "no space" in done.stderr.lower()
                             else f"cannot unpack {ref}: {lines[-1]}")
        if final.exists():  # a bundle without a readable runtime config: replaced (under the lock)
            shutil.rmtree(final)
        os.rename(tmp, final)

    def _run(self, argv: list[str], ref: ImageRef) -> subprocess.CompletedProcess[str]:
        try:
            return subprocess.run(argv, capture_output=True, text=True, timeout=PULL_TIMEOUT_S,
                                  stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired:
            raise ImageError(f"pulling {ref} took longer than {PULL_TIMEOUT_S:.0f} s") from None
        except OSError as exc:
            raise ImageError(f"cannot run {argv[0]}: {exc}") from None


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, path)
