"""LogReader pages: the same lines as splitting the whole file, for every base, size and order,
while the log grows, when it is replaced, and with lines longer than the cap."""

from __future__ import annotations

import os
import random
from pathlib import Path

import pytest

from openarts.service import logs
from openarts.service.logs import LogReader


def reference(data: bytes, base: int | None, n: int, order: str, cap: int) -> tuple[int, list[bytes]]:
    lines = [(piece + b"\n")[-cap:] for piece in data.split(b"\n")[:-1]]
    if data and not data.endswith(b"\n"):
        lines.append(data.rsplit(b"\n", 1)[-1][-cap:])
    base = None if base is None else max(1, base)
    if order == "asc":
        first = max(1, base or 1)
        return (first, lines[first - 1:first - 1 + n]) if first <= len(lines) else (first, [])
    last = len(lines) if base is None else min(base, len(lines))
    first = max(1, last - n + 1)
    if last < 1:
        return 0, []
    return first, lines[first - 1:last]


@pytest.fixture(autouse=True)
def small_marks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(logs, "MARK", 64)  # many marks even in a small file
    monkeypatch.setattr(logs, "READ", 23)
    monkeypatch.setattr(logs, "LINE_CAP", 50)


def random_log(rng: random.Random, lines: int) -> bytes:
    out = []
    for i in range(lines):
        out.append(b"x" * rng.choice([0, 1, 5, 30, 70, 200]) + f"#{i}".encode() + b"\n")
    data = b"".join(out)
    return data + (b"partial" if rng.random() < 0.5 else b"")


def check_all(reader: LogReader, path: Path, data: bytes) -> None:
    total = len(reference(data, None, 10**9, "desc", 50)[1])
    for order in ("asc", "desc"):
        for base in [None, 0, 1, 2, total - 1, total, total + 1, total + 7, *range(3, total, 5)]:
            for n in (1, 2, 3, 10, 500):
                got = reader.page(path, base, n, order)
                want = reference(data, base, n, order, 50)
                if not want[1]:
                    assert got[1] == [], (order, base, n)
                else:
                    assert got == want, (order, base, n)


def test_pages_match_a_split_of_the_whole_file(tmp_path: Path) -> None:
    rng = random.Random(3)
    for k, size in enumerate((0, 1, 2, 9, 60, 333)):
        path = tmp_path / f"log{k}"
        data = random_log(rng, size)
        path.write_bytes(data)
        check_all(LogReader(), path, data)


def test_a_growing_log_is_indexed_incrementally(tmp_path: Path) -> None:
    rng = random.Random(5)
    path = tmp_path / "log"
    reader = LogReader()
    data = b""
    path.write_bytes(b"")
    for _ in range(12):
        more = random_log(rng, rng.randrange(0, 40))
        with path.open("ab") as fh:
            fh.write(more)
        data += more
        check_all(reader, path, data)
    index = reader._indexes[str(path)]
    assert index.scanned == len(data) and len(index.newlines) == len(data) // logs.MARK + 1


def test_a_replaced_log_is_indexed_again(tmp_path: Path) -> None:
    rng = random.Random(9)
    path = tmp_path / "log"
    reader = LogReader()
    first = random_log(rng, 200)
    path.write_bytes(first)
    check_all(reader, path, first)
    os.unlink(path)  # a discarded start's attempt directory is reused: a new, shorter log
    second = random_log(rng, 20)
    path.write_bytes(second)
    check_all(reader, path, second)
    # a new log of the same size on the same inode (rewritten in place): the tail check catches it
    third = bytes(b ^ 1 if b not in (10, 11) else b for b in second)
    with path.open("r+b") as fh:
        fh.write(third)
    assert path.stat().st_size == len(second)
    check_all(reader, path, third)


def test_missing_log_and_tail(tmp_path: Path) -> None:
    reader = LogReader()
    assert reader.page(tmp_path / "nope", None, 10, "desc") == (0, [])
    assert reader.tail(tmp_path / "nope", 100) == (b"", 0)
    path = tmp_path / "log"
    path.write_bytes(b"a" * 10 + b"\n" + b"b" * 10 + b"\n")
    assert reader.tail(path, 100) == (path.read_bytes(), 22)
    assert reader.tail(path, 15) == (b"b" * 10 + b"\n", 22)  # cut at a line boundary
