"""How a server runs, decided at start from its bind address and the credentials store:

- enforcing: security.db holds credentials, every API request must authenticate (any address);
- open: no credentials and a loopback address: anyone on this machine may call the API (a warning);
- insecure: no credentials on a non-loopback address, only with an explicit --insecure (a louder one).

Without credentials and without --insecure, binding to any other address is refused. Credentials
created while an open server runs switch it to enforcing on the next request.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from sqlalchemy import select

from openarts.security import credentials, db
from openarts.security.config import SecurityConfig
from openarts.security.secretbox import MasterKeyError, SecretBox, load_master_key


class BindRefused(Exception):
    """No credentials and a non-loopback address without --insecure, or credentials whose master key
    is missing or wrong (better refused at start than a 500 on every request)."""


@dataclass(frozen=True)
class Mode:
    name: str  # enforcing | open | insecure
    message: str

    @property
    def warning(self) -> bool:
        return self.name != "enforcing"


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def decide(cfg: SecurityConfig, host: str, insecure: bool) -> Mode:
    engine = db.open_security_db(cfg.db_path)
    try:
        with engine.connect() as conn:
            has = credentials.any_exist(conn)
    finally:
        engine.dispose()
    if has:
        _check_master_key(cfg)
        return Mode("enforcing", "authentication required on every API request (AK/SK signature or X-Auth-Token)")
    create = f"openarts credentials create --data-dir {cfg.data_dir} --project PROJECT_ID"
    if is_loopback(host):
        return Mode("open", f"WARNING: no credentials in {cfg.db_path}: the API is OPEN to every user and process "
                            f"on this machine (loopback only). To require authentication: {create}")
    if insecure:
        return Mode("insecure", f"WARNING: --insecure: no credentials and bound to {host}: ANYONE who can reach "
                                f"this address can run commands on this machine. Create credentials: {create}")
    raise BindRefused(f"refusing to serve on {host} without credentials: anyone who could reach it could run "
                      f"commands on this machine. Create credentials first ({create}), bind to 127.0.0.1, "
                      "or pass --insecure.")


def _check_master_key(cfg: SecurityConfig) -> None:
    engine = db.open_security_db(cfg.db_path)
    try:
        box = SecretBox(load_master_key(cfg.data_dir, cfg.master_key_file, create=False))
        with engine.connect() as conn:
            row = conn.execute(select(db.credentials.c.access_key, db.credentials.c.secret_enc).limit(1)).first()
        if row is not None:
            box.open(row.secret_enc, row.access_key)
    except MasterKeyError as exc:
        raise BindRefused(f"the credentials in {cfg.db_path} cannot be decrypted: {exc}") from exc
    finally:
        engine.dispose()
