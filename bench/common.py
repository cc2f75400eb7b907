"""Shared pieces of the benchmark suite: a real `openarts serve` process in a temporary data directory,
job bodies, statistics, tables, machine details, result files and an optional py-spy profile.

Everything talks to 127.0.0.1 only.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import orjson
import psutil

# OPENARTS_BENCH_SRC=DIR benchmarks the `openarts` package in DIR (a snapshot, see `run.py --snapshot`)
# instead of the working tree's, both in this process (the store fill) and in the servers.
SRC_OVERRIDE = os.environ.get("OPENARTS_BENCH_SRC") or None
if SRC_OVERRIDE:
    sys.path.insert(0, SRC_OVERRIDE)

PROJECT = "0123456789abcdef0123456789abcdef"
BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
RESULTS = BENCH_DIR / "results"
TINY_FLAVOR = "bench.tiny"

# Virtual capacity for 2,000 one-core jobs at once, and a one-core flavor to run them with. The
# [server] section is left at its defaults (reconcile 1 s, metrics 10 s, terminate grace 10 s).
CONFIG = f"""
[[nodes]]
name = "bench"
cpu_cores = 2000
memory_gb = 100000

[[flavors]]
flavor_id = "{TINY_FLAVOR}"
cpu_cores = 1
memory_gb = 1
"""

# Jobs run `python3` through /bin/sh: give the server (and the by-hand arm of the logs benchmark) a plain
# system PATH, so that `python3` is /usr/bin/python3 and not a pyenv shim (a bash script that costs
# ~120 ms per start and would swamp what is being measured).
BENCH_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

TERMINAL = ("Completed", "Failed", "Terminated", "Abnormal")


def bench_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPENARTS_")}
    env["PATH"] = BENCH_PATH
    return env


def job_body(name: str, command: str, flavor: str = TINY_FLAVOR) -> dict[str, Any]:
    return {
        "kind": "job",
        "metadata": {"name": name, "description": "benchmark job"},
        "algorithm": {"command": command},
        "spec": {"resource": {"flavor_id": flavor, "node_count": 1}},
    }


# -- the server ----------------------------------------------------------------------------------


@dataclass
class BenchServer:
    """`openarts serve --port 0` on a data directory; `stop()` also kills any worker left behind."""

    data_dir: Path
    name: str = "server"
    config: str = CONFIG
    trace: bool = False  # time openarts' main steps in the server (bench/tracer.py)
    trace_stats: dict[str, list[float]] = field(default_factory=dict)
    hooks: tuple[str, ...] = ()  # bench/ modules whose install() runs in the server first (servertiming)
    proc: subprocess.Popen[bytes] | None = None
    url: str = ""
    pid: int = 0
    _log: Any = None

    @property
    def api(self) -> str:
        return f"{self.url}/v2/{PROJECT}"

    @property
    def log_path(self) -> Path:
        return self.data_dir / "server.log"

    def start(self, timeout: float = 60.0) -> BenchServer:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        (self.data_dir / "server.json").unlink(missing_ok=True)
        (self.data_dir / "config.toml").write_text(self.config)
        self._log = self.log_path.open("ab")
        argv = ["serve", "--host", "127.0.0.1", "--port", "0", "--data-dir", str(self.data_dir),
                "--log-level", "warning"]
        # `python -c` rather than PYTHONPATH: the jobs inherit the server's environment
        boot = (f"import sys; sys.path.insert(0, {SRC_OVERRIDE!r}); " if SRC_OVERRIDE else "import sys; ")
        if self.trace:
            boot += (f"sys.path.insert(1, {str(BENCH_DIR)!r}); import pathlib, tracer; "
                     f"tracer.install(pathlib.Path({str(self.data_dir / 'trace.json')!r})); ")
        if self.hooks:
            boot += f"sys.path.insert(1, {str(BENCH_DIR)!r}); " + "".join(f"import {h}; {h}.install(); "
                                                                        for h in self.hooks)
        boot += f"from openarts.cli.main import main; sys.exit(main({argv!r}))"
        self.proc = subprocess.Popen(
            [sys.executable, "-c", boot],
            stdout=self._log, stderr=self._log, start_new_session=True, env=bench_env(),
        )
        deadline = time.monotonic() + timeout
        info = self.data_dir / "server.json"
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited early:\n{self.log_path.read_text()[-3000:]}")
            if info.exists():
                try:
                    data = json.loads(info.read_text())
                    self.url, self.pid = data["url"], int(data["pid"])
                    if httpx.get(f"{self.url}/health", timeout=2).status_code == 200:
                        return self
                except (ValueError, KeyError, httpx.HTTPError):
                    pass
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"server not healthy after {timeout}s")

    def process(self) -> psutil.Process:
        return psutil.Process(self.pid)

    def rss_mb(self) -> float:
        return self.process().memory_info().rss / 2**20

    def cpu_seconds(self) -> dict[str, float]:
        """CPU time of the server process (all threads, and the event loop's thread alone), and of its
        reaped children (the shims and the workers)."""
        proc = self.process()
        t = proc.cpu_times()
        main = next((th.user_time + th.system_time for th in proc.threads() if th.id == self.pid), 0.0)
        return {"server": t.user + t.system, "main_thread": main, "children": t.children_user + t.children_system}

    def stop(self) -> None:
        if self.proc is not None:
            if self.proc.poll() is None:
                self.proc.send_signal(signal.SIGTERM)
                try:
                    self.proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait()
            self.proc = None
        if self._log is not None:
            self._log.close()
            self._log = None
            RESULTS.mkdir(parents=True, exist_ok=True)
            with contextlib.suppress(OSError):
                shutil.copyfile(self.log_path, RESULTS / f"{self.name}.server.log")
            trace = self.data_dir / "trace.json"
            if self.trace and trace.exists():
                self.trace_stats = json.loads(trace.read_text())
                shutil.copyfile(trace, RESULTS / f"{self.name}.trace.json")
        kill_workers(self.data_dir)


def kill_workers(data_dir: Path) -> int:
    """SIGKILL every worker process group a server in `data_dir` started; returns how many were alive."""
    alive = 0
    for pid_file in (data_dir / "jobs").glob("*/attempts/*/*/worker.pid"):
        try:
            os.killpg(int(pid_file.read_text()), signal.SIGKILL)
            alive += 1
        except (OSError, ValueError):
            pass
    return alive


@contextlib.contextmanager
def temp_data_dir(name: str) -> Iterator[Path]:
    """A scratch data directory, removed afterwards (jobs' logs included)."""
    root = Path(tempfile.mkdtemp(prefix=f"openarts-bench-{name}-"))
    try:
        yield root / "data"
    finally:
        shutil.rmtree(root, ignore_errors=True)


@contextlib.contextmanager
def running_server(name: str, prepare: Callable[[Path], None] | None = None,
                   trace: bool = False) -> Iterator[BenchServer]:
    """Start a server on a fresh data directory (after `prepare(data_dir)`), stop it afterwards."""
    with temp_data_dir(name) as data_dir:
        data_dir.mkdir(parents=True)
        if prepare is not None:
            prepare(data_dir)
        server = BenchServer(data_dir, name, trace=trace).start()
        try:
            yield server
        finally:
            server.stop()


# -- small HTTP helpers --------------------------------------------------------------------------


class RawConnection:
    """A minimal HTTP/1.1 keep-alive client connection on asyncio streams, for load generation.

    httpx costs the benchmark process several ms of CPU per request, and on a 2-vCPU machine that CPU
    is taken from the server being measured; this costs ~0.1 ms. Bodies are JSON; responses must carry
    Content-Length (every openarts response does). Reconnects once if the server closed the connection.
    """

    def __init__(self, url: str) -> None:
        parsed = httpx.URL(url)
        self.host, self.port = parsed.host, parsed.port or 80
        self.prefix = parsed.raw_path.decode().rstrip("/")
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None
        self.reconnects = 0

    async def _connect(self) -> None:
        self.reader, self.writer = await asyncio.open_connection(self.host, self.port)

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            with contextlib.suppress(OSError, ConnectionError):
                await self.writer.wait_closed()
            self.writer = self.reader = None

    async def request(self, method: str, path: str, body: Any = None) -> tuple[int, bytes]:
        data = b"" if body is None else orjson.dumps(body)
        head = (f"{method} {self.prefix}{path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n"
                f"Content-Type: application/json\r\nContent-Length: {len(data)}\r\n\r\n").encode()
        for attempt in (0, 1):
            if self.writer is None:
                await self._connect()
            assert self.reader is not None and self.writer is not None
            try:
                self.writer.write(head + data)
                await self.writer.drain()
                status_line = await self.reader.readline()
                if not status_line:
                    raise ConnectionResetError("closed by the server")
                status = int(status_line.split()[1])
                length = 0
                while True:
                    line = await self.reader.readline()
                    if line in (b"\r\n", b"\n", b""):
                        break
                    name, _, value = line.partition(b":")
                    if name.strip().lower() == b"content-length":
                        length = int(value.strip())
                payload = await self.reader.readexactly(length) if length else b""
                return status, payload
            except (ConnectionError, asyncio.IncompleteReadError):
                await self.close()
                if attempt:
                    raise
                self.reconnects += 1  # a closed keep-alive connection: once more on a new one
        raise AssertionError("unreachable")



def count_phase(client: httpx.Client, api: str, phases: Sequence[str]) -> int:
    r = client.post(f"{api}/training-job-searches",
                    json={"limit": 1, "filters": [{"key": "phase", "operator": "in", "value": list(phases)}]})
    r.raise_for_status()
    return int(r.json()["total"])


def all_jobs(client: httpx.Client, api: str, phases: Sequence[str] | None = None) -> list[dict[str, Any]]:
    """Every job document (the search API pages by 50)."""
    out: list[dict[str, Any]] = []
    body: dict[str, Any] = {"limit": 50, "sort_by": "create_time", "order": "asc"}
    if phases:
        body["filters"] = [{"key": "phase", "operator": "in", "value": list(phases)}]
    while True:
        body["offset"] = len(out)
        r = client.post(f"{api}/training-job-searches", json=body)
        r.raise_for_status()
        items = r.json()["items"]
        out.extend(items)
        if len(items) < 50:
            return out


def run_to_completed(client: httpx.Client, api: str, body: dict[str, Any]) -> tuple[dict[str, Any], float]:
    """Create a job, poll it every 20 ms until it is final; its document (Completed, or AssertionError) and
    the seconds from the create request to the poll that saw it final."""
    began = time.time()
    r = client.post(f"{api}/training-jobs", json=body)
    r.raise_for_status()
    job_id = r.json()["metadata"]["id"]
    while True:
        doc: dict[str, Any] = client.get(f"{api}/training-jobs/{job_id}").json()
        if doc["status"]["phase"] in TERMINAL:
            break
        time.sleep(0.02)
    wall = time.time() - began
    assert doc["status"]["phase"] == "Completed", doc["status"]
    return doc, wall


def job_events(client: httpx.Client, api: str, job_id: str) -> list[dict[str, Any]]:
    r = client.get(f"{api}/training-jobs/{job_id}/events", params={"limit": 1000})
    r.raise_for_status()
    events: list[dict[str, Any]] = r.json()["events"]
    return events


def event_time(events: list[dict[str, Any]], prefix: str, suffix: str = "") -> int | None:
    for e in events:
        msg = str(e["message"])
        if msg.startswith(prefix) and msg.endswith(suffix):
            return int(e["time"])
    return None


# -- statistics and output -----------------------------------------------------------------------


def percentile(values: Sequence[float], p: float) -> float:
    """Linear interpolation between closest ranks (numpy's default); nan for no values."""
    if not values:
        return float("nan")
    xs = sorted(values)
    k = (len(xs) - 1) * p / 100.0
    lo = int(k)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (k - lo)


def summary(values: Sequence[float]) -> dict[str, float]:
    vals = [float(v) for v in values]
    return {
        "n": len(vals),
        "min": min(vals) if vals else float("nan"),
        "p50": percentile(vals, 50),
        "p90": percentile(vals, 90),
        "p99": percentile(vals, 99),
        "max": max(vals) if vals else float("nan"),
        "mean": sum(vals) / len(vals) if vals else float("nan"),
    }


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    def cell(v: Any) -> str:
        if isinstance(v, float):
            return f"{v:,.1f}" if abs(v) >= 100 else f"{v:.2f}"
        if isinstance(v, int) and not isinstance(v, bool):
            return f"{v:,}"
        return str(v)

    cells = [[cell(v) for v in row] for row in rows]
    numeric = [all(isinstance(row[i], int | float) for row in rows) if rows else False for i in range(len(headers))]
    widths = [max(len(h), *(len(r[i]) for r in cells)) if cells else len(h) for i, h in enumerate(headers)]
    line = "  ".join(h.rjust(w) if num else h.ljust(w) for h, w, num in zip(headers, widths, numeric, strict=True))
    out = [line, "  ".join("-" * w for w in widths)]
    for r in cells:
        out.append("  ".join(c.rjust(w) if num else c.ljust(w) for c, w, num in zip(r, widths, numeric, strict=True)))
    return "\n".join(out)


def verdict(ok: bool) -> str:
    return "MET" if ok else "MISSED"


def machine() -> dict[str, Any]:
    cpu_model = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    mem = psutil.virtual_memory()
    os_name = ""
    with contextlib.suppress(OSError):
        for line in Path("/etc/os-release").read_text().splitlines():
            if line.startswith("PRETTY_NAME="):
                os_name = line.split("=", 1)[1].strip('"')
    return {
        "cpu_model": cpu_model,
        "cores": os.cpu_count(),
        "memory_gib": round(mem.total / 2**30, 1),
        "kernel": platform.release(),
        "os": os_name,
        "python": platform.python_version(),
        "python_executable": sys.executable,
    }


def _git(*args: str) -> str:
    try:
        return subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return ""


def provenance() -> dict[str, Any]:
    """Which openarts was measured: a snapshot's revision, or the working tree's HEAD and local edits."""
    import openarts

    pkg = Path(openarts.__file__).resolve().parent
    if SRC_OVERRIDE:
        rev_file = Path(SRC_OVERRIDE).parent / "REVISION"
        rev = rev_file.read_text().strip() if rev_file.exists() else "unknown"
        return {"source": str(pkg), "snapshot_of": rev, "uncommitted_src_changes": []}
    changed = [line[3:] for line in _git("status", "--porcelain", "--", "src").splitlines()]
    return {"source": str(pkg), "git_head": _git("rev-parse", "--short", "HEAD").strip(),
            "uncommitted_src_changes": changed}


def _busy_jiffies() -> tuple[int, int]:
    """(busy, total) jiffies of the whole machine, from /proc/stat."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
    return sum(fields[:8]) - idle, sum(fields[:8])


def _own_cpu() -> float:
    """CPU seconds of this process and of every child it has reaped (the servers, their shims and jobs)."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


@dataclass
class MachineLoad:
    """How busy the machine was during a benchmark, with this benchmark's own CPU time taken out.

    Other work on the machine (test suites, other benchmarks) takes CPU from the server and skews the
    numbers; each result records it. Child processes count once reaped, i.e. once the server stopped.
    """

    t0: float = 0.0
    busy0: int = 0
    own0: float = 0.0
    load0: float = 0.0

    def __enter__(self) -> MachineLoad:
        self.t0, (self.busy0, _), self.own0 = time.monotonic(), _busy_jiffies(), _own_cpu()
        self.load0 = os.getloadavg()[0]
        return self

    def __exit__(self, *exc: object) -> None:
        pass

    def result(self) -> dict[str, float]:
        hz = os.sysconf("SC_CLK_TCK")
        wall = time.monotonic() - self.t0
        busy = (_busy_jiffies()[0] - self.busy0) / hz
        own = _own_cpu() - self.own0
        other = max(0.0, busy - own)
        cores = os.cpu_count() or 1
        return {"wall_seconds": round(wall, 1), "machine_busy_cpu_seconds": round(busy, 1),
                "benchmark_cpu_seconds": round(own, 1), "other_cpu_seconds": round(other, 1),
                "other_load_pct_of_machine": round(100 * other / max(wall * cores, 1e-9), 1),
                "loadavg_1m_at_start": round(self.load0, 2)}


def wait_quiet(max_wait: float, threshold_pct: float = 10.0) -> float:
    """Wait (up to max_wait s) until other processes use < threshold_pct of one core over 3 s; returns
    the last measured share."""
    deadline = time.monotonic() + max_wait
    hz = os.sysconf("SC_CLK_TCK")
    while True:
        b0, own0 = _busy_jiffies()[0], _own_cpu()
        time.sleep(3)
        share = 100 * max(0.0, (_busy_jiffies()[0] - b0) / hz - (_own_cpu() - own0)) / 3
        if share < threshold_pct or time.monotonic() >= deadline:
            return share
        print(f"  waiting for a quiet machine: other processes use {share:.0f}% of a core", flush=True)


def write_result(name: str, data: dict[str, Any]) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    doc = {
        "benchmark": name,
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "machine": machine(),
        "openarts": provenance(),
        **data,
    }
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(doc, indent=2, default=str) + "\n")
    return path


def result_line(name: str, text: str) -> None:
    print(f"RESULT {name}: {text}", flush=True)


def rerun_on_snapshot(script: Path, argv: list[str]) -> int:
    """Re-run `script argv` on a snapshot of HEAD's src/ (the working tree may be mid-edit), through
    OPENARTS_BENCH_SRC: `git archive` into a temporary directory, removed afterwards."""
    rev = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True,
                         check=True).stdout.strip()
    snap = Path(tempfile.mkdtemp(prefix=f"openarts-src-{rev[:10]}-"))
    try:
        archive = subprocess.run(["git", "archive", "--format=tar", rev, "src"], cwd=REPO, capture_output=True,
                                 check=True).stdout
        subprocess.run(["tar", "-x", "-C", str(snap)], input=archive, check=True)
        (snap / "REVISION").write_text(rev + "\n")
        print(f"measuring a snapshot of {rev[:10]} in {snap}", flush=True)
        env = {**os.environ, "OPENARTS_BENCH_SRC": str(snap / "src")}
        return subprocess.run([sys.executable, str(script), *argv], env=env).returncode
    finally:
        shutil.rmtree(snap, ignore_errors=True)


# -- profiling -----------------------------------------------------------------------------------


@dataclass
class Profiler:
    """`py-spy record` attached to the server for the duration of a `with` block (if enabled).

    Writes collapsed stacks to bench/results/NAME.pyspy.txt and keeps a summary: the functions with the
    most samples on top of the stack (self) and anywhere in it (inclusive), as % of the busy samples.
    """

    name: str
    pid: int
    enabled: bool
    idle: bool = False  # also sample threads that wait (I/O, locks, the event loop's poll)
    rate: int = 250
    proc: subprocess.Popen[bytes] | None = None
    report: dict[str, Any] = field(default_factory=dict)

    @property
    def path(self) -> Path:
        return RESULTS / f"{self.name}.pyspy.txt"

    def __enter__(self) -> Profiler:
        if not self.enabled:
            return self
        spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
        if not Path(spy).exists():
            print("  (py-spy not installed: `.venv/bin/pip install py-spy`; profiling skipped)")
            self.enabled = False
            return self
        RESULTS.mkdir(parents=True, exist_ok=True)
        self.path.unlink(missing_ok=True)
        self.proc = subprocess.Popen(
            [spy, "record", "--pid", str(self.pid), "--rate", str(self.rate), "--format", "raw",
             "--nonblocking", *(["--idle"] if self.idle else []), "--output", str(self.path)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        time.sleep(0.5)  # let it attach
        return self

    def __exit__(self, *exc: object) -> None:
        if self.proc is None:
            return
        self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.proc = None
        if self.path.exists():
            self.report = summarize_collapsed(self.path)
            print_profile(self.report)

    def as_dict(self) -> dict[str, Any]:
        return {"file": str(self.path.relative_to(REPO)), **self.report} if self.report else {}


def _frame_name(frame: str) -> str:
    """'function (path/to/file.py:123)' -> 'function (file.py)'."""
    if " (" in frame and frame.endswith(")"):
        func, loc = frame.rsplit(" (", 1)
        file = loc[:-1].rsplit(":", 1)[0]
        parts = Path(file).parts
        file = "/".join(parts[parts.index("openarts"):]) if "openarts" in parts else Path(file).name
        return f"{func} ({file})"
    return frame


def _package_of(frame: str) -> str:
    """Where a leaf frame's time goes: a package, openarts' module, or the C call a frame stands for."""
    func, _, loc = frame.rpartition(" (")
    path = loc.rstrip(")").rsplit(":", 1)[0]
    if func in ("DefaultDialect.do_execute", "DefaultDialect.do_executemany", "DefaultDialect.do_commit",
                "Connection.commit") or "sqlite3" in path:
        return "sqlite3 (C library, called from SQLAlchemy)"
    parts = Path(path).parts  # py-spy names files relative to their sys.path entry
    if "site-packages" in parts:
        parts = parts[parts.index("site-packages") + 1:]
    if "openarts" in parts:
        return "openarts." + ".".join(parts[parts.index("openarts") + 1:]).removesuffix(".py")
    head = parts[0].removesuffix(".py") if parts else ""
    if not head or head.startswith("<") or head in sys.stdlib_module_names or Path(path).is_absolute():
        return "python stdlib / interpreter"
    return head


def summarize_collapsed(path: Path, top: int = 25) -> dict[str, Any]:
    self_count: Counter[str] = Counter()
    incl_count: Counter[str] = Counter()
    package: Counter[str] = Counter()
    total = 0
    for line in path.read_text().splitlines():
        stack, _, num = line.rpartition(" ")
        if not stack or not num.isdigit():
            continue
        n = int(num)
        raw = [f for f in stack.split(";") if not f.startswith(("process ", "thread "))]
        if not raw:
            continue
        frames = [_frame_name(f) for f in raw]
        total += n
        self_count[frames[-1]] += n
        package[_package_of(raw[-1])] += n
        for f in set(frames):
            incl_count[f] += n

    def pct(c: Counter[str], k: int = top) -> list[tuple[str, float]]:
        return [(f, round(100.0 * m / total, 1)) for f, m in c.most_common(k)] if total else []

    return {"samples": total, "self_pct": pct(self_count), "inclusive_pct": pct(incl_count, 60),
            "self_by_package_pct": pct(package, 15)}


def trace_table(stats: dict[str, list[float]], jobs: int) -> str:
    """bench/tracer.py's per-step times, largest total first."""
    rows = [(name, int(calls), calls / max(jobs, 1), 1000 * total / max(calls, 1), 1000 * total / max(jobs, 1),
             1000 * worst)
            for name, (calls, total, worst) in sorted(stats.items(), key=lambda kv: -kv[1][1]) if calls]
    return table(["step (inclusive wall time)", "calls", "per job", "ms/call", "ms/job", "max ms"], rows)


def print_profile(report: dict[str, Any], top: int = 15) -> None:
    print(f"\n  py-spy: {report['samples']} samples of the server")
    print(table(["self %", "where the time is spent (leaf frame's package)"],
                [(p, f) for f, p in report["self_by_package_pct"]]))
    print()
    print(table(["self %", "function"], [(p, f) for f, p in report["self_pct"][:top]]))
    print()
    # the outer frames (runner, uvicorn, middleware) are in nearly every sample: show what is under them
    inner = [(p, f) for f, p in report["inclusive_pct"] if p < 80][:top + 10]
    print(table(["incl %", "function (inclusive, below the outer frames)"], inner))
    print()
