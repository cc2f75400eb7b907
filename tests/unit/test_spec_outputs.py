"""How outputs go up, as a job asks (core/spec.py): an output's `mode` and `period`, and
`algorithm.summary` (its log_dir synced like a periodic output; the real server: tests/test_outputs.py);
an end's upload tried again while the store is down (supervisor/workspace.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from openarts.core import errors
from openarts.core.layout import SUMMARY_DIR, layout
from openarts.core.resources import build_catalog
from openarts.core.spec import parse_job
from openarts.storage.obs import LocalObjectStore
from openarts.supervisor import workspace as ws
from openarts.supervisor.transfers import Note

CATALOG = build_catalog({"flavors": [{"flavor_id": "f", "cpu_cores": 1, "memory_gb": 1}]}, gpus=[])


def _job(**algorithm: Any) -> dict[str, Any]:
    return {"kind": "job", "metadata": {"name": "j"}, "algorithm": {"command": "true", **algorithm},
            "spec": {"resource": {"flavor_id": "f", "node_count": 1}}}


def _output(**kw: Any) -> dict[str, Any]:
    return {"name": "train_url", "remote": {"obs": {"obs_url": "obs://b/out/"}}, **kw}


@pytest.mark.parametrize(("given", "mode", "seconds"), [
    ({}, "", None),
    ({"mode": "upload_periodically"}, "upload_periodically", None),
    ({"mode": "upload_on_exit"}, "upload_on_exit", None),
    ({"period": "30s"}, "", 30.0),
    ({"period": "5m"}, "", 300.0),
    ({"period": "1h"}, "", 3600.0),
    ({"period": "2.5"}, "", 2.5),
    ({"period": 10}, "", 10.0),
])
def test_an_outputs_mode_and_period(given: dict[str, Any], mode: str, seconds: float | None) -> None:
    (out,) = parse_job(_job(outputs=[_output(**given)]), CATALOG).outputs
    assert (out.mode, out.period_s) == (mode, seconds)


@pytest.mark.parametrize("given", [{"mode": "sometimes"}, {"period": "0s"}, {"period": "2d"}, {"period": "soon"},
                                   {"period": True}, {"period": "25h"}])
def test_a_bad_mode_or_period_is_refused_naming_it(given: dict[str, Any]) -> None:
    with pytest.raises(errors.InvalidRequest, match=r"algorithm\.outputs\[0\]\.(mode|period)"):
        parse_job(_job(outputs=[_output(**given)]), CATALOG)


def test_a_summary_is_a_periodic_upload_from_its_own_directory(tmp_path: Path) -> None:
    spec = parse_job(_job(summary={"log_type": "tensorboard", "log_dir": {"pfs": {"pfs_path": "obs://b/tb/"}}}),
                     CATALOG)
    assert spec.summary is not None and spec.summary.obs_url == "obs://b/tb/"
    lay = layout(spec, tmp_path)
    assert lay.summary is not None and lay.summary.container_dir == SUMMARY_DIR
    assert lay.uploads == [lay.summary] and lay.outputs == []
    assert parse_job(_job(summary={}), CATALOG).summary is None  # no log_type: nothing to sync


@pytest.mark.parametrize("summary", [
    {"log_type": "tensorboard"},  # log_dir is required with a log_type
    {"log_type": "tensorboard", "log_dir": {"pfs": {}}},
    {"log_type": "visdom", "log_dir": {"pfs": {"pfs_path": "obs://b/tb/"}}},
    {"log_type": "tensorboard", "log_dir": {"pfs": {"pfs_path": "http://elsewhere/tb/"}}},
])
def test_a_bad_summary_is_refused(summary: dict[str, Any]) -> None:
    with pytest.raises(errors.OpenartsError, match=r"algorithm\.summary"):
        parse_job(_job(summary=summary), CATALOG)


class FlakyStore(LocalObjectStore):
    """The local store, refusing the first `failures` uploads (an outage of the object store)."""

    def __init__(self, root: Path, failures: int) -> None:
        super().__init__(root)
        self.failures = failures
        self.calls = 0

    def upload(self, src: Path, url: str, sent: Any = None, cancel: Any = None) -> int:
        self.calls += 1
        if self.calls <= self.failures:
            raise OSError("the object store is unreachable (connection refused)")
        return super().upload(src, url, sent, cancel)


@pytest.mark.parametrize(("failures", "line"), [
    (0, "Output train_url: uploaded 1 changed file(s) to obs://b/out/."),
    (1, "Output train_url: uploaded 1 changed file(s) to obs://b/out/ (at try 2)."),
    (2, "Output train_url: uploaded 1 changed file(s) to obs://b/out/ (at try 3)."),
    (3, "Output train_url: upload to obs://b/out/ failed after 3 tries: the object store is unreachable "
        "(connection refused)"),
])
def test_an_ends_upload_is_tried_again_before_it_is_reported_failed(tmp_path: Path, failures: int,
                                                                     line: str) -> None:
    spec = parse_job(_job(outputs=[_output()]), CATALOG)
    lay = layout(spec, tmp_path / "job")
    lay.outputs[0].local.mkdir(parents=True)
    (lay.outputs[0].local / "model.bin").write_bytes(b"weights")
    store = FlakyStore(tmp_path / "obs", failures)
    assert ws.upload_outputs(lay, store, {}, retry_seconds=(0.01, 0.01)) == [Note(line, failed=failures >= 3)]
    assert store.calls == min(failures + 1, 3)
    assert (tmp_path / "obs/b/out/model.bin").exists() == (failures < 3)
