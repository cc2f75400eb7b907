"""Server settings: the data directory's layout and the optional config file (TOML).

Everything has a default, so `openarts serve` needs no configuration. The file, if present, is
`DATA_DIR/config.toml` or the path given with `--config`:

    [server]
    terminate_grace_seconds = 10     # SIGTERM -> SIGKILL
    metrics_interval_seconds = 10     # also the hang detector's sampling period
    hang_detect_minutes = 30          # per job: environment MA_HANG_DETECT_TIME (minutes)
    recovery_reset_seconds = 600      # an attempt that ran this long resets the recovery ladder
    taint_seconds = 300               # how long job_reschedule_with_taint fences a node

    [[nodes]]                          # default: one node, this machine
    name = "local"
    cpu_cores = 8                      # may exceed the real count (oversubscription)
    memory_gb = 32
    gpus = [0, 1]

    [[flavors]]                        # added to the ones derived from the machine
    flavor_id = "modelarts.vm.cpu.2u"
    cpu_cores = 2
    memory_gb = 8
    gpus = 0

    [[engines]]                        # added to the service's own Python
    engine_id = "pytorch-local"
    engine_name = "PyTorch"
    engine_version = "2.3"
    python = "/opt/venvs/torch/bin/python"
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


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
    log_preview_bytes: int = 5 * 1024 * 1024
    raw: dict[str, Any] = field(default_factory=dict)

    @property
    def db_path(self) -> Path:
        return self.data_dir / "openarts.db"

    @property
    def jobs_dir(self) -> Path:
        return self.data_dir / "jobs"

    @property
    def obs_dir(self) -> Path:
        return self.data_dir / "obs"

    def job_dir(self, job_id: str) -> Path:
        return self.jobs_dir / job_id

    def attempt_dir(self, job_id: str, seq: int, task: str) -> Path:
        """Where one task of one attempt keeps its log, worker.pid and exit files."""
        return self.job_dir(job_id) / "attempts" / str(seq) / task


def load_settings(data_dir: Path, config_path: Path | None = None, **overrides: Any) -> Settings:
    data_dir = data_dir.expanduser().resolve()
    path = config_path or data_dir / "config.toml"
    raw: dict[str, Any] = {}
    if path.is_file():
        with path.open("rb") as fh:
            raw = tomllib.load(fh)
    elif config_path is not None:
        raise FileNotFoundError(f"config file {config_path} does not exist")
    server = raw.get("server", {})
    s = Settings(data_dir=data_dir, raw=raw)
    for key in ("terminate_grace_seconds", "metrics_interval_seconds", "reconcile_interval_seconds",
                "hang_detect_minutes", "recovery_reset_seconds", "taint_seconds"):
        if key in server:
            setattr(s, key, float(server[key]))
    for key, value in overrides.items():
        if value is not None:
            setattr(s, key, value)
    return s
