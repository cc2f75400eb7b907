"""The server's log: plain text lines (the default) or, with `[server] log_format = "json"` or
`--log-format json`, one JSON object per line for a log pipeline: time (UTC, ISO 8601), level, logger,
message, the request's id when the record was written while serving one (api/context.py), the
access log's fields (api/metrics.py: method, route, path, status, duration_ms) and a traceback as
`exception`. uvicorn's own records go the same way."""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

import orjson

from openarts.api.context import RequestIdFilter

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
EXTRA = ("request_id", "method", "route", "path", "status", "duration_ms", "job_id")


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname, "logger": record.name, "message": record.getMessage()}
        for key in EXTRA:
            value = getattr(record, key, None)
            if value not in (None, ""):
                out[key] = value
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        return orjson.dumps(out, default=str).decode()


def setup_logging(level: str, fmt: str) -> None:
    """The root logger's one handler (on stderr), in `fmt` ("text" or "json")."""
    handler = logging.StreamHandler()
    handler.addFilter(RequestIdFilter())
    handler.setFormatter(JsonFormatter() if fmt == "json" else logging.Formatter(TEXT_FORMAT))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(getattr(logging, level.upper(), logging.INFO) if level != "trace" else 5)
