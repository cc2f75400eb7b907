"""Every in-process table the server keeps per request, per credential, per log or per job is bounded:
a soak of hours must not grow the server's memory (issue 9). One test per table, each driving it past
its bound the way a long run (or a flood) would."""

from __future__ import annotations

import asyncio
import hashlib
from pathlib import Path

import pytest

from factories import Harness
from openarts.config import Settings
from openarts.core import errors
from openarts.core.resources import build_catalog
from openarts.executors.fake import FakeExecutor
from openarts.security import guard as guard_mod
from openarts.security.config import SecurityConfig
from openarts.security.guard import MAX_CACHE, Guard
from openarts.security.ratelimit import RateLimiter
from openarts.security.replay import ReplayCache
from openarts.service import logs
from openarts.service.logs import LogReader
from openarts.store import jobs as w
from openarts.store.db import open_db
from openarts.supervisor.metrics import MetricsSampler, _Seen


def _sig(i: int) -> str:
    return hashlib.sha256(str(i).encode()).hexdigest()


def test_the_replay_cache_holds_at_most_its_bound_and_forgets_when_windows_end() -> None:
    now = [1000.0]
    cache = ReplayCache(clock=lambda: now[0], max_entries=3)
    for i in range(3):
        assert not cache.seen(_sig(i))
        cache.remember(_sig(i), until=1000.0 + 10 * (i + 1))
    assert cache.full() and len(cache) == 3 and cache.seen(_sig(1))
    cache.remember(_sig(1), until=5000.0)  # a known signature is not added twice
    assert len(cache) == 3
    now[0] = 1011.5  # the first window has ended: room again, and that signature is forgotten
    assert not cache.full() and len(cache) == 2 and not cache.seen(_sig(0)) and cache.seen(_sig(1))
    now[0] = 1031.5
    assert not cache.seen(_sig(2)) and len(cache) == 0


def test_the_guard_refuses_a_new_write_while_the_replay_cache_is_full(tmp_path: Path) -> None:
    g = Guard(SecurityConfig(data_dir=tmp_path))
    g.replay = ReplayCache(max_entries=1)
    principal = guard_mod.Principal("aksk", "AK", "alice")
    g.admit(principal, guard_mod.Pending(_sig(1), until=9e9))
    with pytest.raises(errors.TooManyRequests):
        g.admit(principal, guard_mod.Pending(_sig(2), until=9e9))
    g.admit(principal, guard_mod.NOTHING_PENDING)  # a read is not remembered: never refused for room
    assert len(g.replay) == 1


def test_only_writes_are_guarded_unless_strict(tmp_path: Path) -> None:
    default = Guard(SecurityConfig(data_dir=tmp_path))
    strict = Guard(SecurityConfig(data_dir=tmp_path, replay_protection="strict"))
    off = Guard(SecurityConfig(data_dir=tmp_path, replay_protection="off"))
    jobs, searches = "/v2/p/training-jobs", "/v2/p/training-job-searches"
    for method, path, writes in [("GET", jobs, False), ("HEAD", jobs, False), ("POST", searches, False),
                                 ("POST", jobs, True), ("PUT", f"{jobs}/j", True), ("DELETE", f"{jobs}/j", True),
                                 ("PATCH", f"{jobs}/j", True), ("POST", "/v3/auth/tokens", True)]:
        assert default.guards_replay(method, path) is writes, (method, path)
        assert strict.guards_replay(method, path) is True
        assert off.guards_replay(method, path) is False


def test_replay_protection_names_and_their_former_names(tmp_path: Path) -> None:
    def mode(value: str) -> str:
        return SecurityConfig.from_settings(Settings(data_dir=tmp_path, raw={"security": {
            "replay_protection": value}})).replay_protection

    assert SecurityConfig(data_dir=tmp_path).replay_protection == "writes"
    assert [mode(v) for v in ("writes", "strict", "off", "mutating", "all")] == [
        "writes", "strict", "off", "writes", "writes"]
    with pytest.raises(ValueError, match="replay_protection"):
        mode("reads")


def test_the_rate_limiter_forgets_refilled_buckets_first_and_never_grows_past_its_bound() -> None:
    now = [0.0]
    limiter = RateLimiter(per_second=1.0, burst=2, clock=lambda: now[0], max_buckets=3)
    assert limiter.allow("a") == 0 and limiter.allow("a") == 0  # a: drained
    assert limiter.allow("b") == 0 and limiter.allow("c") == 0
    now[0] = 1.5  # b and c have refilled, a has not
    assert limiter.allow("d") == 0  # the table was full: b and c go, a stays
    assert limiter.allow("a") == 0 and limiter.allow("a") > 0  # a kept its half-drained bucket
    for i in range(1000):
        limiter.allow(f"k{i}")
        assert len(limiter._buckets) <= 3


def test_password_failures_are_bounded_and_a_flood_of_names_keeps_real_locks(tmp_path: Path) -> None:
    g = Guard(SecurityConfig(data_dir=tmp_path))
    for _ in range(5):
        g.password_result("alice", False)
    with pytest.raises(errors.AuthenticationFailed):
        g.password_locked("alice")
    for i in range(MAX_CACHE + 500):  # anyone may send any user name
        g.password_result(f"nobody-{i}", False)
        assert len(g._password_failures) <= MAX_CACHE
    with pytest.raises(errors.AuthenticationFailed):
        g.password_locked("alice")  # still locked: names that lock nobody went first
    huge = "x" * 1_000_000
    g.password_result(huge, False)
    g.password_result(huge + "y", False)  # past 64 characters no user exists: one short entry for all
    assert g._password_failures[huge[:guard_mod.USER_KEY_CHARS]][0] == 2
    assert max(len(k) for k in g._password_failures) <= guard_mod.USER_KEY_CHARS


def test_the_users_projects_cache_is_bounded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(guard_mod, "MAX_CACHE", 3)
    g = Guard(SecurityConfig(data_dir=tmp_path))
    for i in range(10):
        assert g.projects_of(f"user-{i}") == set()
        assert len(g._user_projects) <= 3


def test_the_log_reader_keeps_at_most_max_indexes_line_indexes(tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(logs, "MAX_INDEXES", 4)
    reader = LogReader()
    paths = []
    for i in range(10):
        path = tmp_path / f"log-{i}"
        path.write_bytes(b"one\ntwo\n")
        paths.append(path)
        assert reader.page(path, None, 1, "asc") == (1, [b"one\n"])
        assert len(reader._indexes) <= 4
    assert list(reader._indexes) == [str(p) for p in paths[-4:]]  # the least recently read went first


def test_the_metrics_sampler_forgets_tasks_that_no_longer_run(tmp_path: Path) -> None:
    db = open_db(tmp_path / "openarts.db")
    sampler = MetricsSampler(Settings(data_dir=tmp_path), db, build_catalog({}, gpus=[]), FakeExecutor(), interval=10)
    sampler._seen[("ended-job", 1, "worker-0")] = _Seen(cpu=1.0, log_size=10, at=0.0, progress_at=0.0)
    assert asyncio.run(sampler.sample()) == 0
    assert sampler._seen == {} and sampler.last_progress(("ended-job", 1, "worker-0")) is None


def test_the_supervisor_forgets_every_job_that_ended(tmp_path: Path) -> None:
    """Per-job bookkeeping (parsed specs, waiting reasons, start-failure backoff, SIGTERMs sent) is
    dropped once the job ends, whichever way it ends: completed, terminated while waiting, or
    terminated while running with a worker that ignores SIGTERM."""
    h = Harness(tmp_path, [{"name": "A", "cpu_cores": 1, "memory_gb": 1}])
    h.executor.obey_signals = False
    runs, waits = h.submit(), h.submit()
    h.run(3)
    assert h.job(runs).phase == "Running" and h.job(waits).phase == "Pending"
    sup = h.sup
    assert waits in sup._waiting_reason and waits in sup._specs

    with h.db.begin() as conn:  # terminated while it waits: it never runs
        w.request_terminate(conn, waits, w.now_ms())
    with h.db.begin() as conn:  # terminated while it runs: SIGTERM, ignored, then SIGKILL after the grace
        w.request_terminate(conn, runs, w.now_ms())
    h.run(1)
    assert any(k[0] == runs for k in sup._termed)
    h.run(4)
    assert h.job(waits).phase == "Terminated" and h.job(runs).phase == "Terminated"

    done = h.submit()
    h.run(3)
    h.executor.exit(done, "worker-0", 0)
    h.run(3)
    assert h.job(done).phase == "Completed"
    assert (sup._specs, sup._waiting_reason, sup._retry_at, sup._termed) == ({}, {}, {}, set())
