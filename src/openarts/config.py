"""Server settings: the data directory's layout and the optional config file (TOML).

Everything has a default, so `openarts serve` needs no configuration. The file, if present, is
`DATA_DIR/config.toml` or the path given with `--config`:

    [server]
    terminate_grace_seconds = 10     # SIGTERM -> SIGKILL
    metrics_interval_seconds = 10     # also the hang detector's sampling period
    hang_detect_minutes = 30          # per job: environment MA_HANG_DETECT_TIME (minutes)
    recovery_reset_seconds = 600      # an attempt that ran this long resets the recovery ladder
    taint_seconds = 300               # how long job_reschedule_with_taint fences a node
    staging_concurrency = 4           # jobs whose code and inputs are staged at once (in the background)
    upload_concurrency = 4            # output and log uploads at once
    output_period_seconds = 30        # outputs in upload_periodically mode without a period of their own
    staging_cache_gb = 50             # the node's cache of staged inputs (storage/cache.py); 0: none
    sandbox = "auto"                  # every worker in its own sandbox (bwrap): auto, on, off
    sandbox_read_only = ["/srv/models"]  # more host directories workers see, read-only
    executor = "local"                # or "ray": workers on a Ray cluster's nodes (docs/DEPLOY.md)
    ray_address = "auto"              # with executor = "ray": the cluster (`ray start --head`'s address)
    ray_namespace = "openarts-prod"   # default: derived from the data directory
    ray_node_dir = "/tmp/openarts-agent"  # where node agents keep the jobs' files on each node
    ray_server_url = "https://10.0.0.5:8443"  # where nodes reach this server (default: the URL it serves on)
    metrics_public = false            # /metrics without authentication (default: as the API, api/metrics.py)
    log_format = "text"               # or "json": one JSON object per line, with the request's id
    access_log = false                # a log line per API request (method, route, status, duration, id)

    [[ray_pools]]                      # with executor = "ray": Ray nodes that form a pool
    pool = "pool-gpu"
    resource = "A100"                  # nodes with this custom resource (or label = "key=value")

    [[registries]]                     # where custom images (engine.image_url) are pulled from
    host = "127.0.0.1:5000"
    username = "puller"                # optional; never taken from a job
    password = "..."
    insecure = true                    # plain HTTP, or TLS without verification
    default = true                     # for image_url without a host ("org/image:tag")

    [[nodes]]                          # default: one node, this machine
    name = "local"
    cpu_cores = 8                      # may exceed the real count (oversubscription)
    memory_gb = 32
    gpus = [0, 1]

    [[flavors]]                        # added to the ones derived from the machine
    flavor_id = "modelarts.vm.cpu.2u"
    cpu_cores = 2
    memory_gb = 8                      # may be a fraction (0.5: 512 MiB); see docs/FLAVORS.md
    gpus = 0

    [[engines]]                        # added to the service's own Python
    engine_id = "pytorch-local"
    engine_name = "PyTorch"
    engine_version = "2.3"
    python = "/opt/venvs/torch/bin/python"

    [storage]                          # what obs:// is (docs/STORAGE.md); default: DATA_DIR/obs
    backend = "s3"                     # or "local"
    endpoint = "http://127.0.0.1:8333"
    addressing_style = "path"          # or "virtual" (Huawei OBS)
    [storage.buckets.NAME]             # per-bucket overrides of the same keys

    [volumes]                          # spec.volumes[].nfs: shares this machine has mounted (docs/SANDBOX.md)
    discover = true                    # NFS mounts in /proc/self/mountinfo count too (default)
    [volumes.nfs]
    "10.10.10.10:/example/path" = "/mnt/example"   # nfs_server_path = where it is mounted here

    [datasets.DATASET_ID]              # inputs' remote.dataset{id, version_id} -> an obs:// URL
    name = "mnist"                     # optional: reported back in the job document
    versions = { VERSION_ID = "obs://bucket/datasets/mnist/v1/" }

The file is checked before the server starts: a TOML syntax error, an unknown section or key, a
value of the wrong type and an entry without its required key (`flavor_id`, `engine_id`) are each
reported as one `ConfigError` line that names the file and the key.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from openarts.core.channels import check_obs_url
from openarts.core.errors import InvalidObsPath
from openarts.core.notify import WEBHOOK_SCHEMES
from openarts.core.suggest import did_you_mean
from openarts.core.volumes import nfs_path


@dataclass
class Settings:
    data_dir: Path
    host: str = "127.0.0.1"
    port: int = 8080
    terminate_grace_seconds: float = 10.0
    metrics_interval_seconds: float = 10.0
    reconcile_interval_seconds: float = 1.0
    hang_detect_minutes: float = 30.0  # ModelArts' default window; MA_HANG_DETECT_TIME overrides per job
    recovery_reset_seconds: float = 600.0  # an attempt that ran this long resets the recovery ladder
    taint_seconds: float = 300.0  # how long job_reschedule_with_taint fences a node
    staging_concurrency: int = 4  # stagings at once (supervisor/transfers.py)
    upload_concurrency: int = 4  # uploads at once, periodic and final
    output_period_seconds: float = 30.0  # ModelArts' default period of upload_periodically
    staging_cache_gb: float = 50.0  # inputs kept for the next job that stages them; 0: no cache
    log_preview_bytes: int = 5 * 1024 * 1024
    sandbox: str = "auto"  # auto: on where bwrap works; on: refuse to start without it; off
    sandbox_read_only: list[str] = field(default_factory=list)
    sandboxed: bool = False  # resolved at start-up: workers do run in a sandbox
    executor: str = "local"  # local: this machine; ray: the nodes of a Ray cluster (executors/ray.py)
    ray_address: str = ""  # the cluster to join ("auto": the one `ray start` made on this machine)
    ray_namespace: str = ""  # default: one derived from the data directory
    ray_node_dir: str = "/tmp/openarts-agent"  # where node agents keep the jobs' files on each node
    ray_server_url: str = ""  # where nodes' agents reach this server; default: the URL it serves on
    metrics_public: bool = False  # /metrics open to anyone who reaches the port (a scraper on a trusted network)
    log_format: str = "text"  # or "json" (cli/logs.py)
    access_log: bool = False  # a log line per request (api/metrics.py)
    server_url: str = ""  # resolved at start-up: the URL this server serves on
    server_certificate: str = ""  # resolved at start-up: its TLS certificate (PEM), which agents trust
    secret_paths: list[Path] = field(default_factory=list)  # resolved at start-up: the master key's file
    raw: dict[str, Any] = field(default_factory=dict)
    config_path: Path | None = None  # the config file read, if any

    @property
    def one_worker_per_node(self) -> bool:
        """Whether the scheduler places each worker of a job on its own node: on Ray, as on ModelArts
        (its placement groups are STRICT_SPREAD); on one machine's configured nodes, workers may share."""
        return self.executor == "ray"

    @property
    def db_path(self) -> Path:
        return self.data_dir / "openarts.db"

    @property
    def jobs_dir(self) -> Path:
        return self.data_dir / "jobs"

    @property
    def obs_dir(self) -> Path:
        return self.data_dir / "obs"

    @property
    def images_dir(self) -> Path:
        return self.data_dir / "images"

    def job_dir(self, job_id: str) -> Path:
        return self.jobs_dir / job_id

    def attempts_dir(self, job_id: str, seq: int) -> Path:
        """One attempt's server-side files: its tasks' directories, and what the Ray executor offers its
        nodes (executors/bundles.py)."""
        return self.job_dir(job_id) / "attempts" / str(seq)

    def attempt_dir(self, job_id: str, seq: int, task: str) -> Path:
        """Where one task of one attempt keeps its log, worker.pid and exit files."""
        return self.attempts_dir(job_id, seq) / task


def private_dirs(settings: Settings) -> None:
    """Make the jobs' and images' directories the server's alone (0700): a job may leave a setuid file
    in its home (it is the server's user to the kernel) and an image may carry setuid-root programs;
    no other user of the machine may reach them."""
    for d in (settings.jobs_dir, settings.images_dir):
        d.mkdir(parents=True, exist_ok=True)
        d.chmod(0o700)


class ConfigError(ValueError):
    """A config file the server cannot use: one line that names the file and the key."""

    def __init__(self, path: Path, where: str, problem: str) -> None:
        super().__init__(f"{path}: {where}: {problem}" if where else f"{path}: {problem}")
        self.path = path
        self.where = where


# A check returns None when the value is fine, else what it should be ("a number greater than 0").
Check = Callable[[Any], str | None]


def _is_number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def number(minimum: float = 0.0, strict: bool = False) -> Check:
    def check(v: Any) -> str | None:
        ok = _is_number(v) and (v > minimum if strict else v >= minimum)
        return None if ok else f"a number {'greater than' if strict else 'of at least'} {minimum:g}"
    return check


def integer(minimum: int = 0) -> Check:
    def check(v: Any) -> str | None:
        return None if isinstance(v, int) and not isinstance(v, bool) and v >= minimum else \
            f"an integer of at least {minimum}"
    return check


def string(v: Any) -> str | None:
    return None if isinstance(v, str) and v.strip() else "a non-empty string"


def any_string(v: Any) -> str | None:
    return None if isinstance(v, str) else "a string"


def integer_list(v: Any) -> str | None:
    ok = isinstance(v, list) and all(isinstance(i, int) and not isinstance(i, bool) and i >= 0 for i in v)
    return None if ok else "a list of integers (device indexes), e.g. [0, 1]"


def boolean(v: Any) -> str | None:
    return None if isinstance(v, bool) else "true or false"


def one_of(*choices: str) -> Check:
    def check(v: Any) -> str | None:
        return None if v in choices else "one of " + ", ".join(repr(c) for c in choices)
    return check


def absolute_path(v: Any) -> str | None:
    return None if isinstance(v, str) and v.startswith("/") else "must be an absolute path"


def absolute_paths(v: Any) -> str | None:
    ok = isinstance(v, list) and all(isinstance(p, str) and p.startswith("/") for p in v)
    return None if ok else 'a list of absolute paths, e.g. ["/srv/models"]'


def scalar_table(v: Any) -> str | None:
    ok = isinstance(v, dict) and all(isinstance(x, str | int | float | bool) for x in v.values())
    return None if ok else 'a table of plain values, e.g. { zone = "a" }'


SERVER_KEYS: dict[str, Check] = {
    "terminate_grace_seconds": number(0),
    "metrics_interval_seconds": number(0, strict=True),
    "reconcile_interval_seconds": number(0, strict=True),
    "hang_detect_minutes": number(0, strict=True),
    "recovery_reset_seconds": number(0),
    "taint_seconds": number(0),
    "staging_concurrency": integer(1),
    "upload_concurrency": integer(1),
    "output_period_seconds": number(0, strict=True),
    "staging_cache_gb": number(0),
    "sandbox": one_of("auto", "on", "off"),
    "sandbox_read_only": absolute_paths,
    "executor": one_of("local", "ray"),
    "ray_address": string,
    "ray_namespace": string,
    "ray_node_dir": absolute_path,
    "ray_server_url": string,
    "metrics_public": boolean,
    "log_format": one_of("text", "json"),
    "access_log": boolean,
}
RAY_POOL_KEYS: dict[str, Check] = {"pool": string, "resource": string, "label": string}
NODE_KEYS: dict[str, Check] = {"name": string, "cpu_cores": number(0, strict=True),
                               "memory_gb": number(0, strict=True), "gpus": integer_list, "pool": string,
                               "labels": scalar_table}
FLAVOR_KEYS: dict[str, Check] = {"flavor_id": string, "cpu_cores": number(0, strict=True),
                                 "memory_gb": number(0, strict=True),
                                 "gpus": integer(0), "gpu_product": any_string, "gpu_memory": any_string,
                                 "flavor_name": string}
ENGINE_KEYS: dict[str, Check] = {"engine_id": string, "engine_name": string, "engine_version": any_string,
                                 "python": string, "image_url": string}
REGISTRY_KEYS: dict[str, Check] = {"host": string, "username": any_string, "password": any_string,
                                   "insecure": boolean, "default": boolean}
STORAGE_KEYS: dict[str, Check] = {"endpoint": string, "region": string,
                                  "addressing_style": one_of("path", "virtual"), "access_key_id": any_string,
                                  "secret_access_key": any_string}
# section -> (an array of tables?, its keys, its required keys); None: its keys are checked by its owner
# ([security]: openarts.security.config, through check_table)
SECTIONS: dict[str, tuple[bool, dict[str, Check] | None, tuple[str, ...]]] = {
    "server": (False, SERVER_KEYS, ()),
    "nodes": (True, NODE_KEYS, ()),
    "flavors": (True, FLAVOR_KEYS, ("flavor_id",)),
    "engines": (True, ENGINE_KEYS, ("engine_id",)),
    "registries": (True, REGISTRY_KEYS, ("host",)),
    "ray_pools": (True, RAY_POOL_KEYS, ("pool",)),
    "security": (False, None, ()),
    "storage": (False, None, ()),  # checked by check_storage: [storage] and [storage.buckets.NAME]
    "volumes": (False, None, ()),  # checked by check_volumes: [volumes] and [volumes.nfs]
    "datasets": (False, None, ()),  # checked by check_datasets: [datasets.ID], its versions
    "notifications": (False, None, ()),  # checked by check_notifications: [notifications], its topics
}


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def check_table(path: Path, where: str, table: Mapping[str, Any], keys: Mapping[str, Check],
                required: tuple[str, ...] = ()) -> None:
    """Raise ConfigError for the first unknown key, missing required key or bad value of one table."""
    for key in required:
        if key not in table:
            raise ConfigError(path, where, f"missing required key {key!r}")
    for key, value in table.items():
        check = keys.get(key)
        if check is None:
            hint = did_you_mean(key, keys)
            raise ConfigError(path, f"{where} {key}", "unknown key" + (f" (did you mean {hint!r}?)" if hint else "")
                              + f"; known keys: {', '.join(sorted(keys))}")
        problem = check(value)
        if problem:
            raise ConfigError(path, f"{where} {key}", f"must be {problem}, not {_show(value)}")


def validate_config(path: Path, raw: Mapping[str, Any]) -> None:
    """Check a parsed config file against SECTIONS (see the module docstring)."""
    for name, value in raw.items():
        if name not in SECTIONS:
            hint = did_you_mean(name, SECTIONS)
            raise ConfigError(path, f"[{name}]", "unknown section" + (f" (did you mean [{hint}]?)" if hint else "")
                              + f"; known sections: {', '.join(SECTIONS)}")
        many, keys, required = SECTIONS[name]
        if many:
            if not isinstance(value, list) or not all(isinstance(t, dict) for t in value):
                raise ConfigError(path, name, f"must be an array of tables ([[{name}]] entries)")
            for i, table in enumerate(value, 1):
                if keys is not None:
                    check_table(path, f"[[{name}]] entry {i}", table, keys, required)
        elif not isinstance(value, dict):
            raise ConfigError(path, name, f"must be a table ([{name}])")
        elif keys is not None:
            check_table(path, f"[{name}]", value, keys, required)
    if "storage" in raw:
        check_storage(path, raw["storage"])
    if "volumes" in raw:
        check_volumes(path, raw["volumes"])
    if "datasets" in raw:
        check_datasets(path, raw["datasets"])
    if "notifications" in raw:
        check_notifications(path, raw["notifications"])
    names = [str(n.get("name", f"node-{i}")) for i, n in enumerate(raw.get("nodes", []))]
    for name in names:
        if names.count(name) > 1:
            raise ConfigError(path, "[[nodes]] name", f"{name!r} is used by more than one node")


def check_storage(path: Path, table: Mapping[str, Any]) -> None:
    """`[storage]`: the backend and, for "s3", its endpoint, region, addressing style and credentials,
    with per-bucket overrides of the same keys in `[storage.buckets.NAME]`."""
    top = {k: v for k, v in table.items() if k != "buckets"}
    check_table(path, "[storage]", top, {"backend": one_of("local", "s3"), **STORAGE_KEYS})
    buckets = table.get("buckets", {})
    if not isinstance(buckets, dict) or not all(isinstance(t, dict) for t in buckets.values()):
        raise ConfigError(path, "[storage] buckets", "must be tables, [storage.buckets.NAME]")
    for name, bucket in buckets.items():
        check_table(path, f"[storage.buckets.{name}]", bucket, STORAGE_KEYS)
    if table.get("backend") == "s3" and ("access_key_id" in table) != ("secret_access_key" in table):
        raise ConfigError(path, "[storage]", "access_key_id and secret_access_key go together")


DATASET_ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")  # a dataset's id, and a version's


def check_datasets(path: Path, table: Mapping[str, Any]) -> None:
    """`[datasets.ID]`: the dataset registry that resolves an input's `remote.dataset{id, version_id}`
    to an obs:// URL: an optional `name` and a non-empty table `versions` of VERSION_ID = URL."""
    for ds_id, ds in table.items():
        where = f"[datasets.{ds_id}]"
        if not DATASET_ID_RE.fullmatch(ds_id):
            raise ConfigError(path, where, "a dataset id is 1 to 64 letters, digits, '_', '.' or '-'")
        if not isinstance(ds, dict):
            raise ConfigError(path, where, f"must be a table ({where}), not {_show(ds)}")
        check_table(path, where, ds, {"name": string, "versions": _versions})  # a misspelt key named first
        if "versions" not in ds:
            raise ConfigError(path, where, "missing required key 'versions'")
        for version, url in ds["versions"].items():
            if not DATASET_ID_RE.fullmatch(version):
                raise ConfigError(path, f"{where} versions {version}",
                                  "a version id is 1 to 64 letters, digits, '_', '.' or '-'")
            try:
                check_obs_url(url, "url")
            except InvalidObsPath:
                raise ConfigError(path, f"{where} versions {version}", "must be an OBS location, "
                                  f"obs://bucket/path or /bucket/path, not {_show(url)}") from None


def _versions(v: Any) -> str | None:
    ok = isinstance(v, dict) and v and all(isinstance(u, str) for u in v.values())
    return None if ok else 'a non-empty table of version id = URL, e.g. { v1 = "obs://bucket/data/v1/" }'


def check_volumes(path: Path, table: Mapping[str, Any]) -> None:
    """`[volumes]`: `discover` (NFS mounts of /proc/self/mountinfo count) and `[volumes.nfs]`, the shares
    this machine has mounted: "host:/path" = the absolute path where it is mounted."""
    check_table(path, "[volumes]", table, {"discover": boolean, "nfs": _nfs_table})
    for share, where in table.get("nfs", {}).items():
        if nfs_path(share) is None:
            raise ConfigError(path, f"[volumes.nfs] {share!r}", "a share is host:/path, e.g. "
                              '"10.10.10.10:/example/path", without \'..\' segments')
        if not isinstance(where, str) or not where.startswith("/") or where.rstrip("/") == "":
            raise ConfigError(path, f"[volumes.nfs] {share!r}", "must be the absolute path where this machine has "
                              f"the share mounted (not /), not {_show(where)}")


def check_notifications(path: Path, table: Mapping[str, Any]) -> None:
    """`[notifications]` (supervisor/notifier.py): `retries`, `timeout_seconds`, `allow_job_urls`, and
    `[notifications.topics]`: a job's topic_urn = the webhook URL its messages are posted to, or a table
    { url = ..., secret = ... } (the secret signs each body: X-Openarts-Signature)."""
    check_table(path, "[notifications]", table, {"retries": integer(0), "timeout_seconds": number(0, strict=True),
                                                 "allow_job_urls": boolean, "topics": _topics_table})
    for topic, hook in table.get("topics", {}).items():
        where = f"[notifications.topics] {topic!r}"
        if isinstance(hook, dict):
            check_table(path, where, hook, {"url": string, "secret": any_string}, ("url",))
            hook = hook["url"]
        if not isinstance(hook, str) or not hook.startswith(WEBHOOK_SCHEMES):
            raise ConfigError(path, where, "must be a webhook URL (http:// or https://) or a table "
                              f"{{ url = ..., secret = ... }}, not {_show(hook)}")


def _topics_table(v: Any) -> str | None:
    return None if isinstance(v, dict) else 'a table of "topic_urn" = "https://webhook" ([notifications.topics])'


def _nfs_table(v: Any) -> str | None:
    return None if isinstance(v, dict) else 'a table of "host:/path" = "/mount/point" ([volumes.nfs])'


def read_config(path: Path) -> dict[str, Any]:
    """The parsed and checked config file; ConfigError (one line) for anything wrong with it."""
    try:
        with path.open("rb") as fh:
            raw = tomllib.load(fh)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(path, "", f"not valid TOML: {exc}") from None
    except UnicodeDecodeError:
        raise ConfigError(path, "", "not valid TOML: the file is not UTF-8 text") from None
    except OSError as exc:
        raise ConfigError(path, "", f"cannot read it: {exc.strerror or exc}") from None
    validate_config(path, raw)
    return raw


def load_settings(data_dir: Path, config_path: Path | None = None, **overrides: Any) -> Settings:
    data_dir = data_dir.expanduser().resolve()
    path = config_path or data_dir / "config.toml"
    raw: dict[str, Any] = {}
    if config_path is not None and not config_path.exists():
        raise ConfigError(config_path, "", "no such file (given with --config)")
    if path.exists():
        raw = read_config(path)
    server = raw.get("server", {})
    s = Settings(data_dir=data_dir, raw=raw, config_path=path if path.exists() else None)
    for key in ("terminate_grace_seconds", "metrics_interval_seconds", "reconcile_interval_seconds",
                "hang_detect_minutes", "recovery_reset_seconds", "taint_seconds", "output_period_seconds",
                "staging_cache_gb"):
        if key in server:
            setattr(s, key, float(server[key]))
    for key in ("staging_concurrency", "upload_concurrency"):
        if key in server:
            setattr(s, key, int(server[key]))
    s.sandbox = str(server.get("sandbox", s.sandbox))
    s.sandbox_read_only = [str(p) for p in server.get("sandbox_read_only", [])]
    s.metrics_public = bool(server.get("metrics_public", False))
    s.log_format = str(server.get("log_format", s.log_format))
    s.access_log = bool(server.get("access_log", False))
    for key in ("executor", "ray_address", "ray_namespace", "ray_node_dir", "ray_server_url"):
        if key in server:
            setattr(s, key, str(server[key]))
    for key, value in overrides.items():
        if value is not None:
            setattr(s, key, value)
    return s
