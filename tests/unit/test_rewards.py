"""RewardScan (supervisor/rewards.py): one attempt's log read incrementally, the rewards' regexes applied
line by line, with a timeout; what a search's trials and any job's custom metrics are read by."""

from __future__ import annotations

from pathlib import Path

import pytest

from openarts.core.search import Reward, parse_rewards
from openarts.supervisor import rewards as rw
from openarts.supervisor.rewards import RewardScan


def _rewards(*specs: tuple[str, str]) -> tuple[Reward, ...]:
    return parse_rewards([{"name": n, "mode": "min", "regex": r} for n, r in specs], "reward_attrs")


LOSS = _rewards(("loss", r"loss=(\S+)"))


def _values(scan: RewardScan, name: str = "loss") -> list[float]:
    return [v for _, n, v in scan.history if n == name]


def test_a_partial_last_line_is_read_once_a_later_read_completes_it(tmp_path: Path) -> None:
    log = tmp_path / "log"
    log.write_bytes(b"loss=0.5\nloss=0.2")  # the second line is still being written
    scan = RewardScan(1)
    assert scan.read(log, LOSS)
    assert _values(scan) == [0.5] and scan.last == {"loss": 0.5} and scan.line == 1
    with log.open("ab") as f:
        f.write(b"5 at step 2\n")
    assert scan.read(log, LOSS)
    assert _values(scan) == [0.5, 0.25] and scan.last == {"loss": 0.25}
    assert scan.history == [[1, "loss", 0.5], [2, "loss", 0.25]]  # log lines, counted from 1
    assert not scan.read(log, LOSS)  # nothing new


def test_a_capture_that_is_not_a_number_is_noted_and_reading_goes_on(tmp_path: Path) -> None:
    log = tmp_path / "log"
    log.write_bytes(b"loss=nan\nloss=abc\nloss=inf\nloss=0.1\n")
    scan = RewardScan(1)
    assert scan.read(log, LOSS)
    assert _values(scan) == [0.1]
    assert scan.notes == {"loss": "reward 'loss': 'nan' on log line 1 is not a number"}  # the first one
    assert scan.message(LOSS, ended=False) == scan.notes["loss"]


def test_a_log_that_shrank_was_replaced_and_is_read_from_its_start(tmp_path: Path) -> None:
    log = tmp_path / "log"
    log.write_bytes(b"loss=0.5\nloss=0.4\nloss=0.3\n")
    scan = RewardScan(1)
    scan.read(log, LOSS)
    log.write_bytes(b"loss=0.9\n")  # a new file, shorter
    assert scan.read(log, LOSS)
    assert scan.offset == len(b"loss=0.9\n") and scan.last == {"loss": 0.9}
    assert scan.history[-1] == [1, "loss", 0.9] and scan.line == 1  # its line 1


def test_a_read_is_limited_and_an_ended_tasks_last_line_counts_without_a_newline(tmp_path: Path) -> None:
    log = tmp_path / "log"
    lines = [f"loss={i}\n".encode() for i in range(100)]
    log.write_bytes(b"".join(lines) + b"loss=100")  # the last line has no newline
    scan = RewardScan(1)
    scan.read(log, LOSS, limit=len(lines[0]) * 3)
    assert _values(scan) == [0.0, 1.0, 2.0] and not scan.at_end
    while not scan.at_end:  # a running task's: the unterminated line may still grow
        scan.read(log, LOSS)
    assert _values(scan) == [float(i) for i in range(100)] and scan.partial == b"loss=100"
    assert scan.read(log, LOSS, final=True)  # the task ended: it counts
    assert _values(scan) == [float(i) for i in range(101)] and scan.offset == log.stat().st_size


def test_a_missing_log_is_nothing_yet(tmp_path: Path) -> None:
    scan = RewardScan(1)
    assert not scan.read(tmp_path / "no-log", LOSS)
    assert scan.message(LOSS, ended=True) == r"reward 'loss' not found in the log (regex 'loss=(\\S+)')"


def test_a_regex_that_backtracks_catastrophically_is_cut_short_then_disabled(tmp_path: Path) -> None:
    rewards = _rewards(("slow", r"(a|aa)+$"), ("loss", r"loss=(\S+)"))
    bad = b"a" * 40 + b"!\n"
    log = tmp_path / "log"
    log.write_bytes(b"loss=0.5\n" + bad * (rw.SLOW_MAX + 2) + b"loss=0.25\n")
    scan = RewardScan(1)
    assert scan.read(log, rewards)
    assert _values(scan) == [0.5, 0.25]  # the other reward is read on every line
    assert scan.slow == {"slow": rw.SLOW_MAX} and scan.disabled == {"slow"}  # not tried after SLOW_MAX lines
    assert "slow" not in scan.last
    assert scan.notes["slow"] == (f"reward 'slow': its regex took over {rw.MATCH_TIMEOUT:g} s on {rw.SLOW_MAX} "
                                  f"lines (the last: log line {1 + rw.SLOW_MAX}); no longer read")
    with log.open("ab") as f:
        f.write(bad + b"aa\n")  # would match, but it is no longer applied
    scan.read(log, rewards)
    assert "slow" not in scan.last and scan.slow == {"slow": rw.SLOW_MAX}


def test_the_values_kept_are_capped_per_reward_but_the_last_is_always_known(tmp_path: Path,
                                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(rw, "HISTORY_MAX", 3)
    log = tmp_path / "log"
    log.write_bytes(b"".join(f"loss={i} acc={i}\n".encode() for i in range(10)))
    rewards = _rewards(("loss", r"loss=(\S+)"), ("acc", r"acc=(\S+)"))
    scan = RewardScan(1)
    assert scan.read(log, rewards)
    assert _values(scan) == [0.0, 1.0, 2.0] and _values(scan, "acc") == [0.0, 1.0, 2.0]
    assert scan.last == {"loss": 9.0, "acc": 9.0}


def test_bytes_that_are_not_utf8_are_tolerated(tmp_path: Path) -> None:
    log = tmp_path / "log"
    log.write_bytes(b"\xff\xfe garbage \x80 loss=0.5\n\xc3(loss=0.25 \xe2\x82\n")
    scan = RewardScan(1)
    assert scan.read(log, LOSS)
    assert _values(scan) == [0.5, 0.25]
