"""Output helpers of the client commands: consoles, tables' cells, times and durations.

Table cells hold one line: free text (a task message, which may hold many log lines) is cut with an
ellipsis to CELL_MAX characters and, on a terminal, to the terminal's width.
"""

from __future__ import annotations

import json
import os
import sys
from datetime import datetime
from typing import Any

from rich.console import Console
from rich.text import Text

PIPE_WIDTH = 500  # Rich's width when stdout is not a terminal: never wrap table rows in pipes and files
CELL_MAX = 100  # longest text in a table cell


def out_console() -> Console:
    console = Console(highlight=False)
    if not console.is_terminal and "COLUMNS" not in os.environ:
        console.width = PIPE_WIDTH
    return console


def err_console() -> Console:
    return Console(stderr=True, highlight=False)


def show(console: Console, renderable: Any) -> None:
    """Print a Rich renderable; in a pipe or a file, without the padding Rich leaves at line ends."""
    if console.is_terminal:
        console.print(renderable)
        return
    with console.capture() as captured:
        console.print(renderable)
    sys.stdout.write("".join(line.rstrip() + "\n" for line in captured.get().splitlines()))


def print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, ensure_ascii=False) + "\n")


def fmt_time_ms(ms: Any) -> str:
    if not isinstance(ms, int | float) or ms <= 0:
        return "-"
    return datetime.fromtimestamp(ms / 1000).strftime("%Y-%m-%d %H:%M:%S")


def fmt_time_s(seconds: Any) -> str:
    return fmt_time_ms(seconds * 1000) if isinstance(seconds, int | float) else "-"


def fmt_duration(ms: Any) -> str:
    if not isinstance(ms, int | float) or ms < 0:
        return "-"
    total = int(ms // 1000)
    hours, rest = divmod(total, 3600)
    minutes, seconds = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes:02d}m{seconds:02d}s"
    if minutes:
        return f"{minutes}m{seconds:02d}s"
    return f"{ms / 1000:.1f}s"


def phase_text(status: dict[str, Any]) -> str:
    phase = str(status.get("phase", "?"))
    secondary = status.get("secondary_phase")
    return f"{phase} ({secondary})" if secondary and secondary != phase else phase


def cell(value: Any) -> Text:
    return Text("-" if value is None or value == "" else str(value))


def clip(text: Any, limit: int = CELL_MAX) -> str:
    """`text` on one line (whitespace runs, newlines included, become one space), at most `limit`
    characters, ending in an ellipsis when cut."""
    one = " ".join(str(text).split()) if text is not None else ""
    return one if len(one) <= limit else one[:limit - 1].rstrip() + "\u2026"


def clipped(value: Any) -> Text:
    """A table cell of free text (a message): one line, cut to CELL_MAX, and never wrapped: when the
    terminal is narrower, the cell is cut to its column with an ellipsis. (Give its column the default
    no_wrap=False: Rich then narrows that column first, not the short ones beside it.)"""
    text = cell(clip(value) if value not in (None, "") else None)
    text.no_wrap, text.overflow = True, "ellipsis"
    return text


def first_line(message: Any) -> str:
    return str(message).splitlines()[0] if message else ""
