"""Did-you-mean suggestions by edit distance, for keys a user may have mistyped (a config file key,
a field of a job body)."""

from __future__ import annotations

from collections.abc import Iterable


def edit_distance(a: str, b: str) -> int:
    """Levenshtein distance (insertions, deletions, substitutions; each costs 1)."""
    if len(a) < len(b):
        a, b = b, a
    previous = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        current = [i]
        for j, cb in enumerate(b, 1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (ca != cb)))
        previous = current
    return previous[-1]


def did_you_mean(word: str, candidates: Iterable[str]) -> str | None:
    """The closest candidate when it is close enough to be a typo (a third of the word's length, at
    least 1, at most 3 edits; case is ignored), else None. Ties go to the first candidate."""
    best: tuple[int, str] | None = None
    limit = min(3, max(1, len(word) // 3))
    for candidate in candidates:
        d = edit_distance(word.lower(), candidate.lower())
        if d <= limit and (best is None or d < best[0]):
            best = (d, candidate)
    return best[1] if best else None
