"""At create: every bucket a job names (code_dir, inputs, outputs, log_export_path) exists, and the object
store accepts the server's credentials for it, checked before the job is accepted, where the store can
tell (S3: `S3ObjectStore.check_bucket`; the local store's buckets are directories made on demand).

One request per distinct bucket, side by side, off the event loop; a bucket that answered is not asked
again for OK_SECONDS. A store that gives no definite answer (unreachable, slow, a 5xx) does not refuse
the job: the check is an early, clearer report of what staging would find anyway, and staging retries
and ends the job Abnormal/CreateFailed with the reason if the store stays down. Refusing instead would
turn a store's passing outage into failed submissions.
"""

from __future__ import annotations

import asyncio
import logging
import time

from openarts.core import errors
from openarts.core.spec import JobSpec
from openarts.storage.obs import ObjectStore
from openarts.storage.s3 import split

log = logging.getLogger("openarts")

OK_SECONDS = 60.0  # how long a bucket that answered is taken as fine
CHECK_SECONDS = 10.0  # the most a create waits on a check (the store's own probe gives up sooner)
MAX_REMEMBERED = 1024


class BucketCheck:
    def __init__(self, store: ObjectStore | None) -> None:
        self.store = store
        self._ok: dict[str, float] = {}  # bucket -> until when (time.monotonic()) it is taken as fine

    @staticmethod
    def locations(spec: JobSpec) -> list[tuple[str, str, type[errors.InvalidRequest]]]:
        """(field, obs:// URL, the error that refuses it) for every object-store location of the job (of
        each role of a heterogeneous one)."""
        out: list[tuple[str, str, type[errors.InvalidRequest]]] = []
        for i, role in enumerate(spec.roles or (None,)):
            one = role.spec if role is not None else spec
            at, log_field = (f"tasks[{i}].", f"tasks[{i}].log_export_path") if role else ("", "spec.log_export_path")
            if one.code_dir and one.code_dir.startswith("obs://"):  # else a local directory
                out.append((f"{at}algorithm.code_dir", one.code_dir, errors.CodeDirError))
            for key, channels in (("inputs", one.inputs), ("outputs", one.outputs)):
                out += [(f"{at}algorithm.{key}[{j}]", c.obs_url, errors.InputsOutputsError)
                        for j, c in enumerate(channels)]
            if one.log_export_url:
                out.append((f"{log_field}.obs_url", one.log_export_url, errors.InvalidObsPath))
        return out

    async def check(self, spec: JobSpec) -> None:
        """Refuse the job (the field's ModelArts error) if a bucket it names does not exist or refuses
        the server's credentials."""
        if self.store is None:
            return
        located = [(field, url, split(url)[0], error) for field, url, error in self.locations(spec)]
        now = time.monotonic()
        wanted = list(dict.fromkeys(b for _f, _u, b, _e in located if self._ok.get(b, 0.0) <= now))
        if not wanted:
            return
        problems = dict(zip(wanted, await asyncio.gather(*(self._check(b) for b in wanted)), strict=True))
        for field, url, bucket, error in located:
            why = problems.get(bucket)
            if why is not None:
                prefix = {errors.CodeDirError: "Code directory error", errors.InputsOutputsError:
                          "Inputs/outputs error"}.get(error, "Invalid OBS path")
                raise error(f"{prefix}: {field} {url!r}: {why}.")

    async def _check(self, bucket: str) -> str | None:
        """Why the bucket cannot be used, or None (fine, or no definite answer)."""
        assert self.store is not None
        try:
            ok = await asyncio.wait_for(asyncio.to_thread(self.store.check_bucket, bucket), CHECK_SECONDS)
        except TimeoutError:
            log.warning("bucket %s: no answer from the object store within %g s; job accepted", bucket,
                        CHECK_SECONDS)
            return None
        except OSError as exc:  # StorageError: a definite refusal, one line without credentials
            return str(exc)
        if ok:
            if len(self._ok) >= MAX_REMEMBERED:
                now = time.monotonic()
                self._ok = {b: until for b, until in self._ok.items() if until > now}
            self._ok[bucket] = time.monotonic() + OK_SECONDS
        return None
