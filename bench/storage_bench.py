"""Staging from the object store against a plain copy with standard tools (issue 12).

    .venv/bin/python bench/storage_bench.py [--big-mb 1024] [--small 10000] [--small-kb 10] [--runs 3]

Two data sets: one BIG-MB file, and SMALL files of SMALL-KB each in 100 directories. Each is staged
as a job's input channel is, into an empty directory: from the local store, a copy
(LocalObjectStore.download); from S3, through the node's staging cache (StagingCache.stage: fetched
into the cache, then linked; storage/cache.py), with the cache empty, and a second time with the cache
holding it ("cached"). And copied by hand:

- the local store (`DATA_DIR/obs`, storage/obs.py) against `cp -r`;
- an S3-compatible server on 127.0.0.1 (SeaweedFS `weed mini`, tests/s3_support.py; storage/s3.py)
  against curl fetching presigned URLs (`curl --parallel --parallel-max 16`: one standard client with
  the same concurrency as openarts').

The page cache is warm for both arms (each run reads what the previous one read). Median of RUNS
runs each; the targets: within 1.2x of the plain copy. Results: bench/results/storage.json and
docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import result_line, table, verdict, write_result

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
import s3_support
from openarts.storage.cache import StagingCache
from openarts.storage.obs import LocalObjectStore, ObjectStore
from openarts.storage.s3 import S3ObjectStore, S3Options


def make_data(root: Path, big_mb: int, small: int, small_kb: int) -> None:
    (root / "big").mkdir(parents=True)
    with open(root / "big" / "data.bin", "wb") as fh:
        for _ in range(big_mb):
            fh.write(os.urandom(1 << 20))
    chunk = os.urandom(small_kb * 1024)
    for i in range(small):
        d = root / "small" / f"d{i % 100:03d}"
        d.mkdir(parents=True, exist_ok=True)
        (d / f"f{i:05d}.bin").write_bytes(chunk)


def timed(fn: Callable[[], Any], runs: int, reset: Callable[[], None]) -> list[float]:
    out = []
    for _ in range(runs):
        reset()
        t = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t)
    return out


def curl_parallel(urls: list[tuple[str, Path]], work: Path) -> None:
    """One curl process fetching every URL, 16 at a time (a config file: 10,000 URLs exceed argv)."""
    config = work / "curl.cfg"
    with open(config, "w") as fh:
        fh.write("create-dirs\nfail\nsilent\n")
        for url, dest in urls:
            fh.write(f'url = "{url}"\noutput = "{dest}"\n')
    subprocess.run(["curl", "--no-progress-meter", "--parallel", "--parallel-max", "16", "-K", str(config)],
                   check=True)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--big-mb", type=int, default=1024)
    p.add_argument("--small", type=int, default=10000)
    p.add_argument("--small-kb", type=int, default=10)
    p.add_argument("--runs", type=int, default=3)
    args = p.parse_args()
    work = Path(tempfile.mkdtemp(prefix="openarts-storage-bench-"))
    s3 = None
    results: dict[str, Any] = {"params": vars(args)}
    rows = []
    try:
        obs = work / "obs"
        t = time.perf_counter()
        make_data(obs / "bkt", args.big_mb, args.small, args.small_kb)
        print(f"data made in {time.perf_counter() - t:.1f} s", flush=True)
        local = LocalObjectStore(obs)
        s3 = s3_support.start_s3(work / "s3")
        s3.create_bucket("bkt")
        remote = S3ObjectStore(S3Options(endpoint=s3.endpoint, access_key_id=s3_support.ACCESS_KEY,
                                         secret_access_key=s3_support.SECRET_KEY))
        for name in ("big", "small"):
            t = time.perf_counter()
            n = remote.upload(obs / "bkt" / name, f"obs://bkt/{name}/")
            results[f"s3_upload_{name}_s"] = time.perf_counter() - t
            print(f"uploaded {name} ({n} files) to S3 in {results[f's3_upload_{name}_s']:.1f} s", flush=True)
        dest = work / "dest"
        cache = StagingCache(work / "cache", 1 << 40, "s3")

        def reset() -> None:
            shutil.rmtree(dest, ignore_errors=True)
            os.sync()  # the previous arm's dirty pages written back now, not during the next arm's run

        def reset_all() -> None:
            reset()
            shutil.rmtree(cache.root, ignore_errors=True)

        def stage(store: ObjectStore, url: str) -> None:
            cache.stage(store, url, dest, "bench")

        raw = remote._store("bkt")
        import obstore

        for name in ("big", "small"):
            keys = [str(o["path"]) for chunk in obstore.list(raw, prefix=name) for o in chunk]
            signed = [(str(obstore.sign(raw, "GET", k, timedelta(hours=1))), dest / k.removeprefix(name + "/"))
                      for k in keys]
            arms: list[tuple[str, Callable[[], None], Callable[[], Any]]] = [
                ("local store", reset, lambda n=name: local.download(f"obs://bkt/{n}/", dest)),
                ("cp -r", reset, lambda n=name: subprocess.run(["cp", "-r", str(obs / "bkt" / n), str(dest)],
                                                               check=True)),
                ("S3 store", reset_all, lambda n=name: stage(remote, f"obs://bkt/{n}/")),
                ("S3, cached", reset, lambda n=name: stage(remote, f"obs://bkt/{n}/")),
                ("curl, presigned", reset, lambda s=signed: curl_parallel(s, work)),
            ]
            got = {}
            runs: dict[str, list[float]] = {label: [] for label, _, _ in arms}
            for r in range(args.runs):  # the arms interleaved, run by run, each round in a rotated order: the
                # machine's noise (and whatever an arm leaves the next one) hits all alike. "S3, cached" finds
                # the data in the cache: the first round runs "S3 store" before it, and no reset clears it after.
                for label, arm_reset, fn in arms[r % len(arms):] + arms[:r % len(arms)]:
                    runs[label] += timed(fn, 1, arm_reset)
            for label, times in runs.items():
                got[label] = statistics.median(times)
                results[f"{name}:{label}"] = {"runs_s": times, "median_s": got[label]}
                print(f"  {name:5} {label:16} median {got[label]:.3f} s  {[round(t, 3) for t in times]}", flush=True)
            results[f"{name}:cached_vs_fetched"] = got["S3, cached"] / got["S3 store"]
            size = args.big_mb if name == "big" else args.small * args.small_kb / 1024
            rows.append([name, f"{size:.0f} MB", f"{got['local store']:.2f}", f"{got['cp -r']:.2f}",
                         f"{got['local store'] / got['cp -r']:.2f}x", f"{got['S3 store']:.2f}",
                         f"{got['S3, cached']:.3f}", f"{got['curl, presigned']:.2f}",
                         f"{got['S3 store'] / got['curl, presigned']:.2f}x"])
            results[f"{name}:ratio_local"] = got["local store"] / got["cp -r"]
            results[f"{name}:ratio_s3"] = got["S3 store"] / got["curl, presigned"]
        remote.close()
    finally:
        if s3 is not None:
            s3.stop()
        shutil.rmtree(work, ignore_errors=True)
    print(table(["data", "size", "local store s", "cp -r s", "ratio", "S3 store s", "cached s", "curl s", "ratio"],
                rows))
    worst = max(v for k, v in results.items() if k.endswith((":ratio_local", ":ratio_s3")))
    write_result("storage", results)
    result_line("storage", f"worst ratio to the plain copy {worst:.2f}x (target <= 1.2): {verdict(worst <= 1.2)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
