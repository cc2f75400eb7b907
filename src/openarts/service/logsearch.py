"""Searching a task's log: the lines that contain a text, case-insensitive, with their line numbers.

Lines are numbered as service/logs.py numbers them (split on '\\n' only, from 1). The log is read in
blocks of BLOCK bytes cut at a line's end; a block without a match costs a lower() and a find() in C
(an ASCII text is searched in bytes, without decoding). A search stops at `limit` matching lines and
reads at most MAX_SCAN bytes, so a request's cost is bounded whatever the log's size. A line longer
than LINE_CAP is searched in pieces (a match across two pieces is missed). File I/O: call it off the
event loop.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import BinaryIO, NamedTuple

BLOCK = 1 << 20  # bytes read at a time
LINE_CAP = 1 << 20  # a line longer than this is searched (and shown) in pieces
MAX_SCAN = 1 << 30  # bytes of a log searched at most (its first GiB)
MAX_MATCHES = 500  # matching lines returned at most
SHOWN_CHARS = 2000  # of a matching line shown


class Found(NamedTuple):
    """The matching lines (number, text) of one search."""

    matches: list[tuple[int, str]]
    more: bool  # more lines match than were returned
    scanned: int  # bytes searched
    size: int  # the log's size when the search began


def search(path: Path, text: str, limit: int = MAX_MATCHES, max_scan: int = MAX_SCAN) -> Found:
    """The lines of the log at `path` that contain `text` (not empty), ignoring case, at most `limit`."""
    try:
        fh = open(path, "rb")  # noqa: SIM115 - closed below
    except FileNotFoundError:
        return Found([], False, 0, 0)
    with fh:
        size = os.fstat(fh.fileno()).st_size
        return _scan(fh, text.lower(), min(size, max_scan), limit, size)


def _scan(fh: BinaryIO, needle: str, end: int, limit: int, size: int) -> Found:
    matches: list[tuple[int, str]] = []
    line, carry, scanned = 1, b"", 0  # line: the number of the line `carry` (the next body) starts in
    while True:
        data = fh.read(min(BLOCK, end - scanned)) if scanned < end else b""
        scanned += len(data)
        buf = carry + data
        if not buf:
            return Found(matches, False, scanned, size)
        cut = buf.rfind(b"\n") + 1
        if not data or (cut == 0 and len(buf) >= LINE_CAP):
            cut = len(buf)  # the end (search what is left), or a very long line (search this piece of it)
        elif cut == 0:  # no line's end yet
            carry = buf
            continue
        body, carry = buf[:cut], buf[cut:]
        if _find(body, needle, line, matches, limit + 1):
            return Found(matches[:limit], True, scanned, size)
        line += body.count(b"\n")


def _find(body: bytes, needle: str, first: int, matches: list[tuple[int, str]], stop: int) -> bool:
    """Append the lines of `body` (line `first` onwards) that contain `needle` (lower case); True once
    `matches` holds `stop` lines."""
    if needle.isascii():
        wanted = needle.encode()
        lowered = body.lower()  # ASCII letters only: enough for an ASCII needle
        if wanted not in lowered:
            return False
        lines = body.split(b"\n")
        for i, low in enumerate(lowered.split(b"\n")):
            if wanted in low and _new(matches, first + i):
                matches.append((first + i, _shown(lines[i].decode("utf-8", errors="replace"))))
                if len(matches) >= stop:
                    return True
        return False
    decoded = body.decode("utf-8", errors="replace")
    low_text = decoded.lower()  # lower() never makes or removes a '\n': the lines stay aligned
    if needle not in low_text:
        return False
    texts = decoded.split("\n")
    for i, low_line in enumerate(low_text.split("\n")):
        if needle in low_line and _new(matches, first + i):
            matches.append((first + i, _shown(texts[i])))
            if len(matches) >= stop:
                return True
    return False


def _new(matches: list[tuple[int, str]], line: int) -> bool:
    """Not found already (a long line's earlier piece)."""
    return not matches or matches[-1][0] != line


def _shown(line: str) -> str:
    line = line.rstrip("\r")
    return line if len(line) <= SHOWN_CHARS else line[:SHOWN_CHARS] + "…"
