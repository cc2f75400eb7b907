"""Encryption at rest for secret keys: AES-256-GCM under a master key that is kept outside the
database, so a copy of security.db alone reveals no secret key.

The master key comes from, in order: the environment variable OPENARTS_MASTER_KEY (base64 of 32
bytes; the executor passes none of the server's OPENARTS_* variables to jobs), the file named by
OPENARTS_MASTER_KEY_FILE or `[security] master_key_file`, or DATA_DIR/keys/master.key (created
with mode 0600 in a 0700 directory on first use).
"""

from __future__ import annotations

import base64
import os
import secrets
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

ENV_KEY = "OPENARTS_MASTER_KEY"
ENV_KEY_FILE = "OPENARTS_MASTER_KEY_FILE"
VERSION = b"\x01"
NONCE_BYTES = 12


class MasterKeyError(Exception):
    """The master key is missing, unreadable or malformed."""


def default_key_file(data_dir: Path) -> Path:
    return data_dir / "keys" / "master.key"


def _decode(text: str, where: str) -> bytes:
    try:
        key = base64.b64decode(text.strip(), validate=True)
    except ValueError as exc:
        raise MasterKeyError(f"the master key in {where} is not base64") from exc
    if len(key) != 32:
        raise MasterKeyError(f"the master key in {where} must be 32 bytes (base64), not {len(key)}")
    return key


def load_master_key(data_dir: Path, key_file: Path | None = None, create: bool = True) -> bytes:
    """The master key (see the module docstring for where it comes from); created when absent."""
    env = os.environ.get(ENV_KEY)
    if env:
        return _decode(env, f"${ENV_KEY}")
    path = key_file or (Path(os.environ[ENV_KEY_FILE]) if os.environ.get(ENV_KEY_FILE) else None)
    path = (path or default_key_file(data_dir)).expanduser()
    if path.is_file():
        return _decode(path.read_text(), str(path))
    if not create:
        raise MasterKeyError(f"no master key at {path}")
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    key = secrets.token_bytes(32)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(base64.b64encode(key).decode() + "\n")
    return key


class SecretBox:
    """Seals and opens small secrets; `context` (e.g. the access key) is bound as associated data,
    so a ciphertext moved to another row does not open."""

    def __init__(self, key: bytes) -> None:
        self._aead = AESGCM(key)

    def seal(self, plaintext: str, context: str) -> bytes:
        nonce = secrets.token_bytes(NONCE_BYTES)
        return VERSION + nonce + self._aead.encrypt(nonce, plaintext.encode(), context.encode())

    def open(self, sealed: bytes, context: str) -> str:
        if sealed[:1] != VERSION:
            raise MasterKeyError("unknown ciphertext version")
        nonce, body = sealed[1:1 + NONCE_BYTES], sealed[1 + NONCE_BYTES:]
        try:
            return self._aead.decrypt(nonce, body, context.encode()).decode()
        except InvalidTag as exc:
            raise MasterKeyError("a secret does not open with this master key (wrong key file?)") from exc
