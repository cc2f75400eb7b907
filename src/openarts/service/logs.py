"""Reading task logs by lines without reading them from the start on every page.

A log only grows while its task runs, so each log gets a `LineIndex`: the number of newlines before
every MARK-th byte, extended by the bytes appended since the last look (counted in C by bytes.count).
A page then seeks to the last mark before its first line and reads from there: a page costs at most
MARK bytes of skipping plus the page itself, whatever the log's size. Lines are split on '\\n' only
(a '\\r' progress bar stays one line) and numbered from 1; a last line without '\\n' counts.

These functions do file I/O and run off the event loop (the routes use a worker thread).
"""

from __future__ import annotations

import os
import threading
from bisect import bisect_right
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

MARK = 1 << 20  # bytes between two index marks
READ = 1 << 20  # read size while counting
LINE_CAP = 1 << 20  # longest line returned whole (a log with no newline would otherwise be read at once)
MAX_INDEXES = 256  # logs whose index is kept (least recently used dropped)


@dataclass
class LineIndex:
    """newlines[k] = the number of '\\n' in the log's first k * MARK bytes."""

    inode: tuple[int, int]
    scanned: int = 0  # bytes counted so far
    counted: int = 0  # newlines in them
    last_byte: bytes = b""  # the last byte counted, to know whether the last line is complete
    newlines: list[int] = field(default_factory=lambda: [0])

    def extend(self, fh: BinaryIO, size: int) -> None:
        fh.seek(self.scanned)
        while self.scanned < size:
            boundary = len(self.newlines) * MARK
            data = fh.read(min(READ, size - self.scanned, boundary - self.scanned))
            if not data:
                break
            self.counted += data.count(b"\n")
            self.scanned += len(data)
            self.last_byte = data[-1:]
            if self.scanned == boundary:
                self.newlines.append(self.counted)

    @property
    def total_lines(self) -> int:
        return self.counted + (1 if self.scanned and self.last_byte != b"\n" else 0)

    def seek_point(self, line: int) -> tuple[int, int]:
        """(offset, first line number there) for a read that must reach `line`: the last mark with
        fewer than line - 1 newlines before it, so that `line` starts after the offset. The piece of
        text from the offset to the next newline belongs to line `first` (maybe only its end)."""
        k = max(0, bisect_right(self.newlines, line - 2) - 1)
        return k * MARK, self.newlines[k] + 1


class LogReader:
    """Line pages and previews of task logs, with one LineIndex per recently read log."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._indexes: OrderedDict[str, LineIndex] = OrderedDict()

    def _index(self, path: Path, fh: BinaryIO) -> tuple[LineIndex, int]:
        st = os.fstat(fh.fileno())
        inode = (st.st_dev, st.st_ino)
        key = str(path)
        with self._lock:
            index = self._indexes.pop(key, None)
            if index is None or index.inode != inode or index.scanned > st.st_size:  # a new file
                index = LineIndex(inode)
            self._indexes[key] = index
            while len(self._indexes) > MAX_INDEXES:
                self._indexes.popitem(last=False)
            index.extend(fh, st.st_size)
            return index, index.scanned

    def page(self, path: Path, base: int | None, n: int, order: str) -> tuple[int, list[bytes]]:
        """(number of the first line, the lines): `asc` reads n lines from `base` (default 1); `desc`
        the n lines ending at `base` (default, or past the end: the last line)."""
        try:
            fh = open(path, "rb")  # noqa: SIM115 - closed below, after the index is used
        except FileNotFoundError:
            return 0, []
        with fh:
            index, size = self._index(path, fh)
            total = index.total_lines
            if order == "asc":
                first = max(1, base or 1)
            else:
                last = total if base is None else min(base, total)
                first = max(1, last - n + 1)
                n = last - first + 1
            if first > total or n <= 0:
                return (first if order == "asc" else 0), []
            return first, _read_from(fh, index, first, min(n, total - first + 1), size)

    def tail(self, path: Path, limit: int) -> tuple[bytes, int]:
        """The last `limit` bytes (from a line boundary when cut) and the file's size."""
        try:
            with open(path, "rb") as fh:
                full = os.fstat(fh.fileno()).st_size
                fh.seek(max(0, full - limit))
                data = fh.read(limit)
        except FileNotFoundError:
            return b"", 0
        if full > limit:
            cut = data.find(b"\n")
            if 0 <= cut < len(data) - 1:
                data = data[cut + 1:]
        return data, full


def _read_from(fh: BinaryIO, index: LineIndex, first: int, n: int, size: int) -> list[bytes]:
    """Lines first..first+n-1, reading no further than `size` (what was counted: the page agrees
    with total_lines). A line longer than LINE_CAP is returned cut at LINE_CAP bytes."""
    offset, number = index.seek_point(first)
    fh.seek(offset)
    remaining = size - offset
    out: list[bytes] = []
    started = True  # the next piece starts a line (at the mark it may be a line's end only)
    while remaining > 0:
        piece = fh.readline(min(LINE_CAP, remaining))
        if not piece:
            break
        remaining -= len(piece)
        if started and number >= first:
            out.append(piece)
            if len(out) == n:
                break
        started = piece.endswith(b"\n")
        if started:
            number += 1
    return out
