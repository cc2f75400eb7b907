"""service/logsearch.py: the lines of a log that contain a text, ignoring case, numbered as
service/logs.py numbers them, across block boundaries, capped."""

from __future__ import annotations

from pathlib import Path

import pytest

from openarts.service import logsearch


@pytest.fixture
def log(tmp_path: Path) -> Path:
    path = tmp_path / "log"
    path.write_text("".join(f"step {i} {'ERROR disk' if i % 7 == 0 else 'ok'} Ünïcode\n" for i in range(1, 3001))
                    + "last line without newline Error")
    return path


@pytest.mark.parametrize("block", [logsearch.BLOCK, 97])  # 97: lines cut across blocks
def test_every_matching_line_with_its_number(log: Path, block: int, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(logsearch, "BLOCK", block)
    found = logsearch.search(log, "error", limit=10_000)
    assert [n for n, _ in found.matches] == [i for i in range(1, 3001) if i % 7 == 0] + [3001]
    assert found.matches[0] == (7, "step 7 ERROR disk Ünïcode") and found.matches[-1][1].endswith("Error")
    assert not found.more and found.scanned == found.size == log.stat().st_size


def test_non_ascii_text_ignores_case_too(log: Path) -> None:
    found = logsearch.search(log, "ÜNÏCODE", limit=2)
    assert found.matches == [(1, "step 1 ok Ünïcode"), (2, "step 2 ok Ünïcode")] and found.more


def test_capped_matches_and_bytes(log: Path) -> None:
    found = logsearch.search(log, "ok", limit=5)
    assert [n for n, _ in found.matches] == [1, 2, 3, 4, 5] and found.more
    early = logsearch.search(log, "error", max_scan=200)  # the first 200 bytes only
    assert [n for n, _ in early.matches] == [7] and not early.more and early.scanned == 200 < early.size


def test_a_missing_log_and_a_very_long_line(tmp_path: Path) -> None:
    assert logsearch.search(tmp_path / "none", "x") == logsearch.Found([], False, 0, 0)
    path = tmp_path / "long"
    path.write_bytes(b"a" * (3 * logsearch.LINE_CAP) + b"needle\nnext needle\n")
    found = logsearch.search(path, "NEEDLE")
    assert [n for n, _ in found.matches] == [1, 2]  # searched in pieces, numbered as one line
    assert found.matches == [(1, "needle"), (2, "next needle")]  # the piece of the long line that matched
    [(line, shown)] = logsearch.search(path, "aaa").matches  # once, though every piece matched
    assert line == 1 and len(shown) == logsearch.SHOWN_CHARS + 1 and shown.endswith("…")  # cut
