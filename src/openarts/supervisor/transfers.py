"""Staging and uploads, off the reconcile pass: background transfers with their own concurrency limits.

A pass starts a transfer and moves on; the transfer runs in a thread, at most `limit` of its kind at
once, and wakes its job when it ends; a later pass reads its outcome (level-triggered, like image pulls
in supervisor/pulls.py). A transfer is known by (job, attempt, kind):

- STAGE: code and inputs copied in for an attempt that is open but not started (the job shows
  Pending/Creating meanwhile, and its placement holds its capacity);
- FINAL: outputs and logs sent once an attempt's workers are gone, before the job ends or recovers;
- PERIODIC: outputs in `upload_periodically` mode sent while the attempt runs, only what changed.

Transfers live in memory. A server that restarts forgets those in flight: a half-staged attempt is
discarded and placed again (steps.py), and an end's upload simply runs again (uploads are idempotent).
A cancelled transfer (the job was terminated while staging) stops at its next file or part.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from enum import StrEnum

from openarts.core.errors import OpenartsError
from openarts.storage.obs import TransferCancelled
from openarts.supervisor import telemetry as tm

log = logging.getLogger("openarts.transfers")


class Kind(StrEnum):
    STAGE = "stage"
    FINAL = "final"
    PERIODIC = "periodic"


@dataclass(frozen=True)
class Note:
    """A line a transfer reports for the job's events: `failed` ones are Warnings (a periodic upload
    reports only those)."""

    text: str
    failed: bool = False

    @property
    def level(self) -> str:
        return "Warning" if self.failed else "Info"


Key = tuple[str, int, Kind]  # job id, attempt seq, kind
# returns lines for the job's events: a plain function runs in a thread, a coroutine function on the loop
Work = Callable[[threading.Event], list[Note] | Awaitable[list[Note]]]


@dataclass
class Transfer:
    key: Key
    cancel: threading.Event = field(default_factory=threading.Event)
    done: bool = False
    lines: list[Note] = field(default_factory=list)
    error: str = ""  # empty: it succeeded (or is still running)
    cancelled: bool = False
    task: asyncio.Task[None] | None = None


class Transfers:
    def __init__(self, wake: Callable[[str], None], stagings: int, uploads: int) -> None:
        self.wake = wake
        upload = asyncio.Semaphore(max(1, uploads))  # periodic and final uploads share their limit
        self._limits = {Kind.STAGE: asyncio.Semaphore(max(1, stagings)), Kind.FINAL: upload, Kind.PERIODIC: upload}
        self._all: dict[Key, Transfer] = {}

    def get(self, job_id: str, seq: int, kind: Kind) -> Transfer | None:
        return self._all.get((job_id, seq, kind))

    def pop(self, job_id: str, seq: int, kind: Kind) -> Transfer | None:
        return self._all.pop((job_id, seq, kind), None)

    def start(self, job_id: str, seq: int, kind: Kind, work: Work, after: Transfer | None = None) -> Transfer:
        """Start `work` in the background (the caller checked none of that key runs); `after` a transfer
        still running, once that one ended (waited for before taking a place in the limit)."""
        t = Transfer((job_id, seq, kind))
        self._all[t.key] = t
        t.task = asyncio.get_running_loop().create_task(self._run(t, work, after), name=f"{kind} {job_id}/{seq}")
        return t

    def cancel(self, job_id: str, kinds: tuple[Kind, ...] = tuple(Kind)) -> None:
        for k, t in self._all.items():
            if k[0] == job_id and k[2] in kinds:
                t.cancel.set()

    def prune(self, active: set[str]) -> None:
        """Forget the finished transfers of jobs no longer active; cancel those still running."""
        for k, t in list(self._all.items()):
            if k[0] not in active:
                t.cancel.set()
                if t.done:
                    del self._all[k]

    async def settle(self) -> bool:
        """Wait for every running transfer to end; whether there was one (for tests that step passes)."""
        tasks = [t.task for t in self._all.values() if t.task is not None and not t.done]
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        return bool(tasks)

    async def close(self) -> None:
        """Cancel every transfer and wait for their threads to stop (at their next file or part)."""
        for t in self._all.values():
            t.cancel.set()
        tasks = [t.task for t in self._all.values() if t.task is not None and not t.done]
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _run(self, t: Transfer, work: Work, after: Transfer | None) -> None:
        began = 0.0
        try:
            if after is not None and after.task is not None and not after.done:
                await asyncio.wait([after.task])
            async with self._limits[t.key[2]]:
                if t.cancel.is_set():
                    raise TransferCancelled("transfer cancelled")
                began = time.perf_counter()
                if inspect.iscoroutinefunction(work):
                    t.lines = await work(t.cancel)
                else:
                    t.lines = await asyncio.to_thread(work, t.cancel)  # type: ignore[arg-type]
        except TransferCancelled:
            t.cancelled, t.error = True, "cancelled"
        except OpenartsError as exc:
            t.error = exc.message
        except OSError as exc:
            t.error = str(exc)
        except Exception as exc:  # any failure is the job's to report, with a line
            log.exception("%s transfer of job %s failed", t.key[2], t.key[0])
            t.error = f"{type(exc).__name__}: {exc}"
        finally:
            t.done = True
            kind = t.key[2].value
            tm.TRANSFERS.labels(kind, "cancelled" if t.cancelled else "failed" if t.error else "ok").inc()
            if began:
                tm.TRANSFER_SECONDS.labels(kind).observe(time.perf_counter() - began)
            self.wake(t.key[0])
