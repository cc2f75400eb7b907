"""The `[security]` section of the config file (DATA_DIR/config.toml), with defaults:

    [security]
    clock_skew_seconds = 900          # X-Sdk-Date must be this close to the server's clock (1-86400)
    replay_protection = "writes"      # which signed requests may not be sent twice: "writes" (requests that
                                      # can change state), "strict" (reads too) or "off"
    rate_limit_per_second = 50        # per credential (access key or token); 0 turns it off
    rate_limit_burst = 100
    token_ttl_seconds = 86400         # default lifetime of tokens from POST /v3/auth/tokens
    max_token_ttl_seconds = 86400
    master_key_file = "/etc/openarts/master.key"   # default: DATA_DIR/keys/master.key
    password_lockout_failures = 5     # consecutive wrong passwords before a user is locked ...
    password_lockout_seconds = 300    # ... for this long
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from openarts.config import Settings

REPLAY_MODES = ("writes", "strict", "off")
# Earlier names: "mutating" was "writes"; "all" was the default that also guarded reads sent on another
# connection, which refused real clients (the SDK's one-second X-Sdk-Date): it now means the default.
REPLAY_ALIASES = {"mutating": "writes", "all": "writes"}


@dataclass(frozen=True)
class SecurityConfig:
    data_dir: Path
    clock_skew_seconds: float = 900.0
    replay_protection: str = "writes"
    rate_limit_per_second: float = 50.0
    rate_limit_burst: int = 100
    token_ttl_seconds: int = 86400
    max_token_ttl_seconds: int = 86400
    master_key_file: Path | None = None
    password_lockout_failures: int = 5
    password_lockout_seconds: float = 300.0

    @property
    def db_path(self) -> Path:
        return self.data_dir / "security.db"

    @classmethod
    def from_settings(cls, settings: Settings) -> SecurityConfig:
        raw: dict[str, Any] = dict(settings.raw.get("security", {}) or {})
        kw: dict[str, Any] = {}
        for name in ("clock_skew_seconds", "rate_limit_per_second", "password_lockout_seconds"):
            if name in raw:
                kw[name] = float(raw[name])
        for name in ("rate_limit_burst", "token_ttl_seconds", "max_token_ttl_seconds", "password_lockout_failures"):
            if name in raw:
                kw[name] = int(raw[name])
        if not 1 <= kw.get("clock_skew_seconds", 900.0) <= 86400:
            raise ValueError("[security] clock_skew_seconds must be from 1 to 86400")
        if "replay_protection" in raw:
            mode = str(raw["replay_protection"])
            mode = REPLAY_ALIASES.get(mode, mode)
            if mode not in REPLAY_MODES:
                raise ValueError(f"[security] replay_protection must be one of {REPLAY_MODES}, not {mode!r}")
            kw["replay_protection"] = mode
        if raw.get("master_key_file"):
            kw["master_key_file"] = Path(str(raw["master_key_file"])).expanduser()
        return cls(data_dir=settings.data_dir, **kw)
