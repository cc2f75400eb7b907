"""Time-limited links to a task's log (`GET .../tasks/{task_id}/logs/url`): ModelArts answers with a
presigned OBS URL valid for 5 minutes; openarts signs a URL of its own that serves the server's copy of
the log (which every log has, whatever the storage backend) without AK/SK. The signature is an HMAC
under a key derived from the master key, over everything the link opens: project, job, task, attempt,
how it is served and when it expires. Nothing is stored; a link cannot be revoked, only expire."""

from __future__ import annotations

import hashlib
import hmac

VALID_SECONDS = 300


class LogLinks:
    def __init__(self, master_key: bytes) -> None:
        self._key = hmac.new(master_key, b"openarts log links v1", hashlib.sha256).digest()

    def sign(self, project_id: str, job_id: str, task: str, seq: int, disposition: str, expires: int) -> str:
        message = "\0".join((project_id, job_id, task, str(seq), disposition, str(expires))).encode()
        return hmac.new(self._key, message, hashlib.sha256).hexdigest()

    def valid(self, project_id: str, job_id: str, task: str, seq: int, disposition: str, expires: int,
              signature: str, now: float) -> bool:
        return now <= expires and hmac.compare_digest(
            self.sign(project_id, job_id, task, seq, disposition, expires), signature)
