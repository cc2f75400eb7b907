"""The request a log record was written for: its id (the X-Request-Id the client gets back), set by
api/app.py's RequestId for the request's whole handling (work it hands to `asyncio.to_thread` too,
which copies the context; a bare `run_in_executor` does not)."""

from __future__ import annotations

import logging
from contextvars import ContextVar

REQUEST_ID: ContextVar[str] = ContextVar("openarts_request_id", default="")


class RequestIdFilter(logging.Filter):
    """Puts the current request's id on every record (`record.request_id`; "" outside a request)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not getattr(record, "request_id", ""):
            record.request_id = REQUEST_ID.get()
        return True
