"""Tokens that let a node's agent fetch one attempt's files from the server and send its outputs back.

A token is an HMAC of the job id and attempt number under a key derived from the master key: the
server issues and checks it without storing anything, it still holds after a server restart (an agent
sends outputs of a worker it re-adopted), and it opens that attempt's files only, nothing of the API.
It travels to the agent with the start call, inside the cluster (docs/SECURITY.md).
"""

from __future__ import annotations

import hashlib
import hmac


class AttemptTokens:
    def __init__(self, master_key: bytes) -> None:
        self._key = hmac.new(master_key, b"openarts attempt tokens v1", hashlib.sha256).digest()

    def token(self, job_id: str, seq: int) -> str:
        return hmac.new(self._key, f"{job_id}\0{seq}".encode(), hashlib.sha256).hexdigest()

    def valid(self, job_id: str, seq: int, token: str) -> bool:
        return hmac.compare_digest(self.token(job_id, seq), token)
