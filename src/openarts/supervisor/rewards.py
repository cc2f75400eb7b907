"""Metrics read from a task's log by regular expressions (core/search.py `Reward`): what a search's
trials report (supervisor/search.py). `RewardScan` reads one attempt's log from where it stopped, line
by line, in a worker thread: a regex runs on one line at a time (its first LINE_MAX characters, within
MATCH_TIMEOUT), never on the server's loop."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from openarts.core.search import Reward

READ_MAX = 4 << 20  # log bytes read per call
HISTORY_MAX = 2000  # values kept per reward (the first ones, steps 0...); its last value is always kept
LINE_MAX = 16 << 10  # characters of a line the regexes see
MATCH_TIMEOUT = 0.05  # seconds a regex may take on one line (catastrophic backtracking is cut short) ...
SLOW_MAX = 3  # ... and after this many such lines it is no longer applied to the log
PARTIAL_MAX = 1 << 20  # a line longer than this is read as it stands, not kept whole


@dataclass
class RewardScan:
    """How far one attempt's log has been read, and what the rewards' regexes found in it."""
    seq: int
    offset: int = 0
    line: int = 0
    partial: bytes = b""
    at_end: bool = False  # the last read reached the end of the file
    last: dict[str, float] = field(default_factory=dict)
    history: list[list[Any]] = field(default_factory=list)  # [line, reward, value], HISTORY_MAX per reward
    counts: dict[str, int] = field(default_factory=dict)  # reward -> values in history
    objective: list[float] = field(default_factory=list)  # rewards[0]'s values in history, in order
    notes: dict[str, str] = field(default_factory=dict)  # reward -> its first unreadable capture
    slow: dict[str, int] = field(default_factory=dict)  # reward -> lines on which its regex timed out
    disabled: set[str] = field(default_factory=set)  # rewards whose regex timed out SLOW_MAX times

    def read(self, path: Path, rewards: tuple[Reward, ...], limit: int = READ_MAX, final: bool = False) -> bool:
        """Read up to `limit` bytes more of the log; True if a reward changed. `final`: the task has ended,
        so at the end of the file its last line counts even without a newline. A file shorter than what
        was read is a new one: read from its start, as if nothing had been."""
        try:
            with open(path, "rb") as f:
                size = os.fstat(f.fileno()).st_size
                if size < self.offset:
                    self.__dict__.update(RewardScan(self.seq).__dict__)
                f.seek(self.offset)
                data = f.read(min(limit, size - self.offset))
        except FileNotFoundError:
            self.at_end = True
            return False
        self.offset += len(data)
        self.at_end = self.offset >= size
        lines = (self.partial + data).split(b"\n")
        self.partial = lines.pop()
        if len(self.partial) > PARTIAL_MAX or (final and self.at_end and self.partial):
            lines.append(self.partial)
            self.partial = b""
        changed = False
        for raw in lines:
            self.line += 1
            changed |= self._line(raw[:LINE_MAX * 4].decode("utf-8", "replace")[:LINE_MAX], rewards)
        return changed

    def _line(self, text: str, rewards: tuple[Reward, ...]) -> bool:
        changed = False
        for r in rewards:
            if r.name in self.disabled:
                continue
            try:
                found = r.read(text, MATCH_TIMEOUT)
            except TimeoutError:
                self.slow[r.name] = self.slow.get(r.name, 0) + 1
                if self.slow[r.name] >= SLOW_MAX:
                    self.disabled.add(r.name)
                    self.notes[r.name] = (f"reward {r.name!r}: its regex took over {MATCH_TIMEOUT:g} s on "
                                          f"{SLOW_MAX} lines (the last: log line {self.line}); no longer read")
                continue
            if found is None:
                continue
            captured, value = found
            if value is None:
                self.notes.setdefault(r.name, f"reward {r.name!r}: {captured!r} on log line {self.line} is "
                                              "not a number")
                continue
            changed = True
            self.last[r.name] = value
            if self.counts.get(r.name, 0) < HISTORY_MAX:
                self.counts[r.name] = self.counts.get(r.name, 0) + 1
                self.history.append([self.line, r.name, value])
                if r is rewards[0]:
                    self.objective.append(value)
        return changed

    def message(self, rewards: tuple[Reward, ...], ended: bool) -> str:
        """What went wrong reading the rewards: unreadable captures; once the trial ended, rewards never found."""
        notes = list(self.notes.values())
        if ended:
            notes += [f"reward {r.name!r} not found in the log (regex {r.regex!r})" for r in rewards
                      if r.name not in self.last and r.name not in self.notes]
        return "; ".join(notes)
