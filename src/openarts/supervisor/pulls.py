"""Image pulls, off the reconcile pass: a job waits in Creating while its image is pulled in a thread.

One pull per image at a time, whatever the number of jobs waiting on it. A pull's outcome answers the jobs
created before it ended; a later job starts a pull of its own: after a failure the registry may be back
or the credentials fixed, and a `latest` tag may have moved (a pinned tag that is on the node already
costs no request: executors/images.py).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum

from openarts.executors.images import ImageError, ImageStore

log = logging.getLogger("openarts.images")


class PullState(StrEnum):
    STARTED = "started"  # a pull began for this job (the caller records an event)
    PULLING = "pulling"
    READY = "ready"
    FAILED = "failed"


@dataclass
class _Outcome:
    at_ms: int
    error: str = ""
    detail: str = ""


@dataclass
class _Pull:
    task: asyncio.Task[None]
    waiting: set[str] = field(default_factory=set)


class Pulls:
    def __init__(self, store: ImageStore | None, wake: Callable[[str], None]) -> None:
        self.store = store
        self.wake = wake
        self._running: dict[str, _Pull] = {}
        self._done: dict[str, _Outcome] = {}

    def poll(self, url: str, job_id: str, created_ms: int) -> tuple[PullState, str]:
        """Where `job_id`'s image stands; READY and FAILED come with a line for the job's events."""
        done = self._done.get(url)
        if done is not None and done.at_ms >= created_ms:
            return (PullState.FAILED, done.error) if done.error else (PullState.READY, done.detail)
        pull = self._running.get(url)
        if pull is not None:
            started = job_id not in pull.waiting
            pull.waiting.add(job_id)
            return (PullState.STARTED if started else PullState.PULLING), ""
        if self.store is None:
            return PullState.FAILED, "custom images need the sandbox, which is off on this server"
        self._done.pop(url, None)
        task = asyncio.get_running_loop().create_task(self._pull(url), name=f"pull {url}")
        self._running[url] = _Pull(task, {job_id})
        return PullState.STARTED, ""

    async def _pull(self, url: str) -> None:
        assert self.store is not None
        began = time.monotonic()
        try:
            image, fetched = await asyncio.to_thread(self.store.pull, url)
            took = time.monotonic() - began
            outcome = _Outcome(int(time.time() * 1000), detail=(
                f"Image {url} pulled in {took:.1f} s ({image.digest[:19]})." if fetched else
                f"Image {url} is on this node already ({image.digest[:19]})."))
        except ImageError as exc:
            outcome = _Outcome(int(time.time() * 1000), error=str(exc))
        except Exception as exc:  # any failure ends the jobs waiting, with a line
            log.exception("pulling %s failed", url)
            outcome = _Outcome(int(time.time() * 1000), error=f"cannot pull {url}: {exc}")
        pull = self._running.pop(url)
        self._done[url] = outcome
        for job_id in pull.waiting:
            self.wake(job_id)
