"""What the server gives its nodes' agents: an attempt's packed directories and custom image, and a home
for the outputs they send back (executors/bundles.py). Every call names the attempt and carries its token."""

from __future__ import annotations

import asyncio
import json
import os
import re
import stat
import tarfile
from collections.abc import AsyncIterator
from pathlib import Path

from openarts.config import Settings
from openarts.core import errors
from openarts.core.layout import ROLES_DIR
from openarts.core.roles import TASK_RE, role_of, shapes, task_index
from openarts.executors.bundles import IMAGE, SERVED, WORKSPACE, unpack
from openarts.security.attempt_tokens import AttemptTokens
from openarts.store import queries as q
from openarts.store.db import Database

JOB_RE = re.compile(r"[0-9a-f-]{1,64}")
DIGEST_RE = re.compile(r"[0-9a-f]{64}")
SERVED_KEPT = 64  # attempts whose served inputs are kept parsed
PACKED = {"workspace": WORKSPACE, "image": IMAGE}
NOT_OUTPUTS = ("attempts",)  # the server's records of the job's attempts; an agent sends outputs only


class AttemptFiles:
    def __init__(self, settings: Settings, tokens: AttemptTokens, db: Database) -> None:
        self.settings = settings
        self.tokens = tokens
        self.db = db
        self._served_cache: dict[Path, tuple[int, dict[str, tuple[str, int]]]] = {}  # see _served

    def _attempt(self, job_id: str, seq: str, authorization: str) -> Path:
        token = authorization.removeprefix("Bearer ").strip()
        if not (JOB_RE.fullmatch(job_id) and seq.isdigit() and token
                and self.tokens.valid(job_id, int(seq), token)):
            raise errors.AuthenticationFailed("This attempt's token is required.")
        return self.settings.attempts_dir(job_id, int(seq))

    def packed(self, job_id: str, seq: str, what: str, authorization: str) -> Path:
        """The attempt's packed directories (`workspace`) or its custom image (`image`)."""
        attempt = self._attempt(job_id, seq, authorization)
        path = attempt / PACKED.get(what, "-")
        if what not in PACKED or not path.is_file():
            raise errors.AttemptFilesNotFound(f"No {what} for attempt {seq} of job {job_id}: it ended or never "
                                              "started, or it has none.")
        return path

    def cached_input(self, job_id: str, seq: str, name: str, authorization: str) -> Path:
        """One of the attempt's inputs a node's cache lacks, by its entry's digest: only those the attempt's
        tar listed (executors/bundles.py), and only while the file is as it was staged: a regular file
        (no link, none on its way) of its size."""
        attempt = self._attempt(job_id, seq, authorization)
        served = self._served(attempt / SERVED) if DIGEST_RE.fullmatch(name) else {}
        path, size = served.get(name, ("", -1))
        try:
            st = os.lstat(path) if path else None
        except OSError:
            st = None
        if st is None or not stat.S_ISREG(st.st_mode) or st.st_size != size or os.path.realpath(path) != path:
            raise errors.AttemptFilesNotFound(f"No input {name[:64]!r} for attempt {seq} of job {job_id}.")
        return Path(path)

    def _served(self, path: Path) -> dict[str, tuple[str, int]]:
        """An attempt's served inputs (digest -> file, size), parsed once per version of the file: a node
        asks for each of thousands of files in turn."""
        try:
            version = os.stat(path).st_mtime_ns
        except OSError:
            return {}
        held = self._served_cache.get(path)
        if held is not None and held[0] == version:
            return held[1]
        try:
            doc = json.loads(path.read_text())
            served = {str(k): (str(v[0]), int(v[1])) for k, v in doc.items()}
        except (OSError, ValueError, TypeError, IndexError, AttributeError):
            return {}
        if len(self._served_cache) >= SERVED_KEPT:
            self._served_cache.pop(next(iter(self._served_cache)))
        self._served_cache[path] = (version, served)
        return served

    def _root(self, job_id: str, task: str) -> Path:
        """Where a task's container paths are on the server: the job's directory, or for a heterogeneous
        job its task's role's tree (core/layout.py role_layouts)."""
        with self.db.connect() as conn:
            roles = q.job_roles(conn, job_id)
        job = self.settings.job_dir(job_id)
        if not roles:  # a plain job (or none by that id any more: its attempt's files are checked already)
            return job
        if task_index(shapes(roles, "", 0), task) is None:
            raise errors.InvalidRequest(f"Unknown task {task[:40]!r} of job {job_id}.")
        return job / ROLES_DIR / role_of(task)

    async def receive_outputs(self, job_id: str, seq: str, task: str, authorization: str,
                              body: AsyncIterator[bytes]) -> None:
        """Stream the agent's tar of a task's output directories to a file, then unpack it into the
        job's directories, where the supervisor uploads outputs from."""
        attempt = self._attempt(job_id, seq, authorization)
        if not TASK_RE.fullmatch(task):  # a task's name, any role's (core/roles.py)
            raise errors.InvalidRequest(f"Unknown task {task[:40]!r}.")
        if not attempt.is_dir():
            raise errors.AttemptFilesNotFound(f"Attempt {seq} of job {job_id} is not on this server.")
        tmp = attempt / f"outputs-{task}.{os.getpid()}.tar"
        try:
            with open(tmp, "wb") as fh:
                async for chunk in body:
                    fh.write(chunk)
            try:
                await asyncio.to_thread(unpack, tmp, self._root(job_id, task), NOT_OUTPUTS)
            except (tarfile.TarError, OSError) as exc:
                raise errors.InvalidRequest(f"The outputs of {task} could not be unpacked: {exc}") from None
        finally:
            tmp.unlink(missing_ok=True)
