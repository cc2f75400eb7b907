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
TAIL_CHECK = 64  # bytes compared to tell a replaced log from a grown one


@dataclass
class LineIndex:
    """newlines[k] = the number of '\\n' in the log's first k * MARK bytes. Used under its own lock."""

    inode: tuple[int, int]
    lock: threading.Lock = field(default_factory=threading.Lock)
    scanned: int = 0  # bytes counted so far
    counted: int = 0  # newlines in them
    tail: bytes = b""  # the last TAIL_CHECK bytes counted: a replaced file that reused the inode differs
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
            self.tail = (self.tail + data[-TAIL_CHECK:])[-TAIL_CHECK:]
            if self.scanned == boundary:
                self.newlines.append(self.counted)

    def reset(self) -> None:
        """Forget what was counted (the file was replaced); the caller holds `lock`."""
        self.scanned, self.counted, self.tail, self.newlines = 0, 0, b"", [0]

    def still_matches(self, fh: BinaryIO, size: int) -> bool:
        """Whether the file still holds what was counted (same bytes before `scanned`, as far as the
        last TAIL_CHECK of them tell)."""
        if size < self.scanned:
            return False
        fh.seek(self.scanned - len(self.tail))
        return fh.read(len(self.tail)) == self.tail

    @property
    def total_lines(self) -> int:
        return self.counted + (1 if self.scanned and not self.tail.endswith(b"\n") else 0)

    def seek_point(self, line: int) -> tuple[int, int]:
        """(offset, first line number there) for a read that must reach `line`: the last mark with
        fewer than line - 1 newlines before it, so that `line` starts after the offset. The piece of
        text from the offset to the next newline belongs to line `first` (maybe only its end)."""
        k = max(0, bisect_right(self.newlines, line - 2) - 1)
        return k * MARK, self.newlines[k] + 1


class LogReader:
    """Line pages and previews of task logs, with one LineIndex per recently read log. Thread-safe:
    the routes call it from worker threads."""

    def __init__(self) -> None:
        self._lock = threading.Lock()  # guards the dict only; each index has its own lock
        self._indexes: OrderedDict[str, LineIndex] = OrderedDict()

    def _index_of(self, path: Path, inode: tuple[int, int]) -> LineIndex:
        key = str(path)
        with self._lock:
            index = self._indexes.pop(key, None)
            if index is None or index.inode != inode:
                index = LineIndex(inode)
            self._indexes[key] = index
            while len(self._indexes) > MAX_INDEXES:
                self._indexes.popitem(last=False)
            return index

    def page(self, path: Path, base: int | None, n: int, order: str) -> tuple[int, list[bytes]]:
        """(number of the first line, the lines): `asc` reads n lines from `base` (default 1); `desc`
        the n lines ending at `base` (default, or past the end: the last line). A base below 1 is 1."""
        try:
            fh = open(path, "rb")  # noqa: SIM115 - closed below, after the index is used
        except FileNotFoundError:
            return 0, []
        with fh:
            st = os.fstat(fh.fileno())
            index = self._index_of(path, (st.st_dev, st.st_ino))
            with index.lock:
                if not index.still_matches(fh, st.st_size):  # replaced by a new log on the same inode
                    index.reset()
                index.extend(fh, st.st_size)
                size, total = index.scanned, index.total_lines
                base = None if base is None else max(1, base)
                if order == "asc":
                    first = base or 1
                else:
                    last = total if base is None else min(base, total)
                    first = max(1, last - n + 1)
                    n = last - first + 1
                if first > total or n <= 0:
                    return (first if order == "asc" else 0), []
                offset, number = index.seek_point(first)
            return first, _read_from(fh, offset, number, first, min(n, total - first + 1), size)

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


def _read_from(fh: BinaryIO, offset: int, number: int, first: int, n: int, size: int) -> list[bytes]:
    """Lines first..first+n-1, reading from `offset` (where line `number` is under way) and no further
    than `size` (what was counted: the page agrees with total_lines). A line longer than LINE_CAP is
    returned as its last LINE_CAP bytes: a '\r' progress bar's latest state is at its end."""
    fh.seek(offset)
    remaining = size - offset
    out: list[bytes] = []
    current: bytes | None = None  # the line being collected
    started = True  # the next piece starts a line (at the offset it may be a line's end only)
    while remaining > 0:
        piece = fh.readline(min(LINE_CAP, remaining))
        if not piece:
            break
        remaining -= len(piece)
        if started and number >= first:
            current = piece
        elif current is not None:
            current = (current + piece)[-LINE_CAP:]
        started = piece.endswith(b"\n")
        if started:
            number += 1
            if current is not None:
                out.append(current)
                current = None
                if len(out) == n:
                    return out
    if current is not None:  # the last line, without its newline
        out.append(current)
    return out
