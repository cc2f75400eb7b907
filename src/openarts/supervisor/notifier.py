"""Delivering spec.notification messages (core/notify.py) to webhooks.

transition() queues a message in the store's outbox in the very transaction of the phase change it
announces (store/jobs.py), so a message exists if and only if its change was committed, and it
survives a restart. This loop posts the due ones as JSON to the webhook of their topic
(`[notifications.topics]`, or the topic itself when it is a URL and `allow_job_urls` is on), a few at
a time, each with a timeout; one job's in the order they were queued (its oldest first, each waiting
for the one before it, retries included; different jobs' side by side). A 2xx answer delivers it;
anything else is tried again after 1, 2, 4 ... seconds (at most 60) until `retries` more tries
failed. Each outcome is an event of the job (source "Notification"): delivered, a failed try and when
it is tried again, given up, or a topic with no webhook. Events name the topic, never the webhook's
URL (it often holds a token).

With a `secret`, each body is signed: `X-Openarts-Signature: sha256=<hex HMAC-SHA256 of the body>`.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import logging
from dataclasses import dataclass
from typing import Any, NamedTuple

import httpx
import orjson

from openarts import __version__
from openarts.config import Settings
from openarts.core.notify import WEBHOOK_SCHEMES
from openarts.store import jobs as w
from openarts.store.db import Database
from openarts.supervisor import telemetry as tm

log = logging.getLogger("openarts.notifier")

POLL_SECONDS = 0.5
BATCH = 32  # messages posted at once
BACKOFF_CAP_SECONDS = 60.0


@dataclass(frozen=True)
class Hook:
    url: str
    secret: str = ""


class Queued(NamedTuple):
    id: int
    job_id: str
    topic_urn: str
    payload: str
    tries: int
    event: str  # the payload's, read once (core/notify.py EVENTS)


class Notifier:
    def __init__(self, settings: Settings, db: Database) -> None:
        table: dict[str, Any] = settings.raw.get("notifications", {})
        self.db = db
        self.retries = int(table.get("retries", 5))
        self.timeout = float(table.get("timeout_seconds", 10.0))
        self.allow_job_urls = bool(table.get("allow_job_urls", False))
        self.topics = {topic: Hook(h) if isinstance(h, str) else Hook(h["url"], str(h.get("secret", "")))
                       for topic, h in table.get("topics", {}).items()}
        self._stopping = asyncio.Event()

    def hook_of(self, topic: str) -> Hook | None:
        hook = self.topics.get(topic)
        if hook is None and self.allow_job_urls and topic.startswith(WEBHOOK_SCHEMES):
            hook = Hook(topic)
        return hook

    async def run(self) -> None:
        async with httpx.AsyncClient(timeout=self.timeout, follow_redirects=False) as client:
            while not self._stopping.is_set():
                try:
                    await self.deliver_due(client)
                except Exception:  # the loop must outlive any one bad round
                    log.exception("notification round failed")
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stopping.wait(), POLL_SECONDS)

    def stop(self) -> None:
        self._stopping.set()

    async def deliver_due(self, client: httpx.AsyncClient) -> int:
        """Post the messages that are due; how many there were."""
        with self.db.connect() as conn:
            rows = [Queued(id_, job_id, topic, payload, tries, str(orjson.loads(payload).get("event", "")))
                    for id_, job_id, topic, payload, tries in conn.execute(
                        # each job's oldest message only: a job's messages arrive in order, a retried one
                        # before those after it (different jobs' are posted side by side)
                        "SELECT id, job_id, topic_urn, payload, tries FROM outbox o WHERE next_ms <= ? AND "
                        "id = (SELECT min(id) FROM outbox WHERE job_id = o.job_id) ORDER BY next_ms, id LIMIT ?",
                        (w.now_ms(), BATCH))]
        if not rows:
            return 0
        errors = await asyncio.gather(*(self._post(client, r) for r in rows))
        now = w.now_ms()
        with self.db.begin() as conn:
            outcomes = [self._record(conn, row, error, now) for row, error in zip(rows, errors, strict=True)]
        for outcome in outcomes:  # counted once committed
            tm.NOTIFICATIONS.labels(outcome).inc()
        return len(rows)

    async def _post(self, client: httpx.AsyncClient, row: Queued) -> str | None:
        """None once delivered; else what went wrong (without the URL)."""
        hook = self.hook_of(row.topic_urn)
        if hook is None:
            return ""  # no webhook: given up at once
        body = row.payload.encode()
        headers = {"Content-Type": "application/json", "User-Agent": f"openarts/{__version__}",
                   "X-Openarts-Event": row.event}
        if hook.secret:
            digest = hmac.new(hook.secret.encode(), body, hashlib.sha256).hexdigest()
            headers["X-Openarts-Signature"] = f"sha256={digest}"
        try:
            resp = await client.post(hook.url, content=body, headers=headers)
        except httpx.TransportError as exc:  # a refused connection, a timeout, ...
            return f"{type(exc).__name__}: {str(exc).replace(hook.url, '<webhook>') or 'no answer'}"
        except Exception as exc:  # a URL httpx cannot use (its text would quote the URL): a failure like any
            return f"{type(exc).__name__}: the webhook's URL cannot be used"
        if 200 <= resp.status_code < 300:
            return None
        return f"HTTP {resp.status_code}"

    def _record(self, conn: Any, row: Queued, error: str | None, now: int) -> str:
        """Write the outcome of one try (in the caller's transaction); which outcome it was."""
        job_url = row.topic_urn not in self.topics and row.topic_urn.startswith(WEBHOOK_SCHEMES)
        topic = "(the job's webhook URL)" if job_url else row.topic_urn  # never the URL itself
        what = f"Notification {row.event} to topic {topic}"
        tries = row.tries + 1
        if error is None:
            conn.execute("DELETE FROM outbox WHERE id = ?", (row.id,))
            self._event(conn, row.job_id, f"{what} delivered" + (f" at try {tries}." if tries > 1 else "."), now)
            return "delivered"
        if error == "":
            conn.execute("DELETE FROM outbox WHERE id = ?", (row.id,))
            self._event(conn, row.job_id, f"{what} not sent: no webhook is configured for the topic "
                        "([notifications.topics]).", now, "Warning")
            return "unroutable"
        if tries > self.retries:
            conn.execute("DELETE FROM outbox WHERE id = ?", (row.id,))
            self._event(conn, row.job_id, f"{what} not delivered after {tries} tries: {error}.", now, "Warning")
            return "failed"
        wait = min(BACKOFF_CAP_SECONDS, 2.0 ** (tries - 1))
        conn.execute("UPDATE outbox SET tries = ?, next_ms = ?, last_error = ? WHERE id = ?",
                     (tries, now + int(wait * 1000), error, row.id))
        self._event(conn, row.job_id, f"{what} failed (try {tries} of {self.retries + 1}): {error}; "
                    f"tried again in {wait:g} s.", now, "Warning")
        return "retried"

    @staticmethod
    def _event(conn: Any, job_id: str, message: str, now: int, level: str = "Info") -> None:
        if conn.execute("SELECT 1 FROM jobs WHERE id = ?", (job_id,)).fetchone() is not None:  # not purged
            w.add_event(conn, job_id, message, now, level=level, source="Notification")
