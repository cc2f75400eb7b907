"""A task is named <role>-N with N in ASCII digits: worker- and an Arabic-Indic one is no task."""

from __future__ import annotations

from openarts.core.roles import TASK_RE, Shape, task_index


def test_task_names_take_ascii_digits_only() -> None:
    assert [bool(TASK_RE.fullmatch(n)) for n in ("worker-0", "worker-12", "worker-01", "worker-\u0661",
                                                  "worker-\uff11")] == [True, True, False, False, False]
    assert task_index((Shape("worker", "f", 2),), "worker-\u0661") is None
