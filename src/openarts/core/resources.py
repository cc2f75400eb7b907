"""Nodes, flavors and engines: what the service can run jobs on, and with what (and the dataset registry
that inputs' `remote.dataset` names resolve through).

Pure data plus `build_catalog()`, which derives the defaults from the machine (CPU cores, memory,
NVIDIA GPUs through NVML) and merges what the config file adds. What a flavor enforces on a worker
(threads, CPU affinity, memory) is described in docs/FLAVORS.md.
"""

from __future__ import annotations

import ctypes
import math
import os
import platform
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import psutil

DEFAULT_POOL = "pool-local"


@dataclass(frozen=True)
class Node:
    name: str
    cpu_milli: int
    memory_mb: int
    gpus: tuple[int, ...] = ()
    pool: str = DEFAULT_POOL
    labels: Mapping[str, str] = field(default_factory=dict)
    ip: str = "127.0.0.1"
    # The machine's CPU ids this node's workers may be pinned to, one per core; empty when the node's
    # cores are virtual (configured nodes that together claim more cores than the machine has).
    cpus: tuple[int, ...] = ()


@dataclass(frozen=True)
class Flavor:
    flavor_id: str
    flavor_type: str  # "CPU" | "GPU"
    cpu_cores: float
    memory_mb: int  # MiB; a worker whose processes hold more is ended as out of memory
    gpus: int = 0
    gpu_product: str = ""
    gpu_memory: str = ""
    arch: str = "x86"
    disk_gb: int = 0
    flavor_name: str = ""

    @property
    def cpu_milli(self) -> int:
        return round(self.cpu_cores * 1000)

    @property
    def memory_gb(self) -> float:
        return self.memory_mb / 1024

    @property
    def threads(self) -> int:
        """Threads a worker of this flavor should run per pool (OMP_NUM_THREADS and the like)."""
        return max(1, math.ceil(self.cpu_cores))


@dataclass(frozen=True)
class Engine:
    engine_id: str
    engine_name: str
    engine_version: str
    python: str  # interpreter that runs boot files
    run_user: str = ""
    image_url: str = ""  # runs in this image (the sandbox's custom images), with `python` from it


@dataclass(frozen=True)
class Dataset:
    """A dataset of the registry (`[datasets.ID]` in the config file): what an input's
    `remote.dataset{id, version_id}` names, resolved at create to the version's obs:// URL."""
    dataset_id: str
    name: str  # "" when the config gives none
    versions: Mapping[str, str]  # version id -> obs:// URL


@dataclass(frozen=True)
class GpuInfo:
    index: int
    product: str
    memory_gb: int


@dataclass
class Catalog:
    nodes: list[Node]
    flavors: dict[str, Flavor]
    engines: dict[str, Engine]
    default_engine: str
    datasets: dict[str, Dataset] = field(default_factory=dict)  # the dataset registry, by id

    def max_num(self, flavor: Flavor, pool: str = DEFAULT_POOL) -> int:
        """How many workers of this flavor the pool can hold at once (0: it never fits)."""
        total = 0
        for node in self.nodes:
            if node.pool != pool:
                continue
            fits = [
                node.cpu_milli // flavor.cpu_milli if flavor.cpu_milli else 10**6,
                node.memory_mb // flavor.memory_mb if flavor.memory_mb else 10**6,
                len(node.gpus) // flavor.gpus if flavor.gpus else 10**6,
            ]
            total += min(fits)
        return total

    def pools(self) -> set[str]:
        return {n.pool for n in self.nodes}

    def find_engine(self, engine_id: str | None, name: str | None, version: str | None) -> Engine | None:
        if engine_id:
            return self.engines.get(engine_id)
        if name:
            for e in self.engines.values():
                if e.engine_name.lower() == name.lower() and (
                    not version or e.engine_version.lower() == version.lower()
                ):
                    return e
            return None
        return self.engines[self.default_engine]


def detect_gpus() -> list[GpuInfo]:
    """NVIDIA GPUs through NVML, without a Python binding; [] when there is no driver."""
    try:
        nvml = ctypes.CDLL("libnvidia-ml.so.1")
    except OSError:
        return []
    try:
        if nvml.nvmlInit_v2() != 0:
            return []
        count = ctypes.c_uint(0)
        if nvml.nvmlDeviceGetCount_v2(ctypes.byref(count)) != 0:
            return []
        gpus = []
        for i in range(count.value):
            handle = ctypes.c_void_p()
            if nvml.nvmlDeviceGetHandleByIndex_v2(i, ctypes.byref(handle)) != 0:
                continue
            name = ctypes.create_string_buffer(96)
            nvml.nvmlDeviceGetName(handle, name, 96)

            class _Mem(ctypes.Structure):
                _fields_ = [("total", ctypes.c_ulonglong), ("free", ctypes.c_ulonglong),
                            ("used", ctypes.c_ulonglong)]

            mem = _Mem()
            nvml.nvmlDeviceGetMemoryInfo(handle, ctypes.byref(mem))
            gpus.append(GpuInfo(i, name.value.decode(errors="replace"), round(mem.total / 2**30)))
        nvml.nvmlShutdown()
        return gpus
    except (AttributeError, OSError):
        return []


def _arch() -> str:
    machine = platform.machine().lower()
    return "arm" if machine in ("aarch64", "arm64") else "x86"


def _local_node(gpus: list[GpuInfo]) -> Node:
    cores = os.cpu_count() or 1
    mem_mb = psutil.virtual_memory().total // 2**20
    return Node("local", cores * 1000, mem_mb, tuple(g.index for g in gpus))


def _derived_flavors(node: Node, gpus: list[GpuInfo]) -> list[Flavor]:
    cores = node.cpu_milli // 1000 or 1
    mem_gb_per_core = max(1, node.memory_mb // 1024 // cores)
    sizes = sorted({n for n in (1, 2, 4, 8, 16, 32, 64, 128) if n <= cores} | {cores})
    flavors = [
        Flavor(f"modelarts.local.cpu.{n}u", "CPU", n, n * mem_gb_per_core * 1024, arch=_arch(),
               flavor_name=f"CPU: {n} vCPUs {n * mem_gb_per_core}GB")
        for n in sizes
    ]
    if gpus:
        product = gpus[0].product
        per_gpu_cores = max(1, cores // len(gpus))
        for k in sorted({k for k in (1, 2, 4, 8) if k <= len(gpus)} | {len(gpus)}):
            flavors.append(Flavor(
                f"modelarts.local.gpu.{k}x", "GPU", k * per_gpu_cores, k * per_gpu_cores * mem_gb_per_core * 1024,
                gpus=k, gpu_product=product, gpu_memory=f"{gpus[0].memory_gb}GB", arch=_arch(),
                flavor_name=f"GPU: {k}*{product} | CPU: {k * per_gpu_cores} vCPUs",
            ))
    return flavors


def usable_cpus() -> list[int]:
    """The CPU ids this process may run on (its affinity mask: a container's cpuset, taskset)."""
    try:
        return sorted(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return list(range(os.cpu_count() or 1))


def assign_cpus(nodes: list[Node], usable: list[int]) -> list[Node]:
    """Give each node its own slice of the machine's CPU ids, in order, when the nodes' cores are real:
    every node has a whole number of cores and together they fit in `usable`. Otherwise (virtual,
    oversubscribed capacity) no node gets any, and workers are not pinned."""
    cores = [n.cpu_milli // 1000 for n in nodes]
    if any(n.cpu_milli % 1000 or c < 1 for n, c in zip(nodes, cores, strict=True)) or sum(cores) > len(usable):
        return [replace(n, cpus=()) for n in nodes]
    out, start = [], 0
    for n, c in zip(nodes, cores, strict=True):
        out.append(replace(n, cpus=tuple(usable[start:start + c])))
        start += c
    return out


def build_catalog(raw: Mapping[str, Any], gpus: list[GpuInfo] | None = None) -> Catalog:
    """The nodes, flavors and engines from the machine plus the config file's sections."""
    gpus = detect_gpus() if gpus is None else gpus
    local = _local_node(gpus)
    nodes = [
        Node(
            name=str(n.get("name", f"node-{i}")),
            cpu_milli=round(float(n.get("cpu_cores", local.cpu_milli / 1000)) * 1000),
            memory_mb=round(float(n.get("memory_gb", local.memory_mb / 1024)) * 1024),
            gpus=tuple(int(g) for g in n.get("gpus", ())),
            pool=str(n.get("pool", DEFAULT_POOL)),
            labels={str(k): str(v) for k, v in n.get("labels", {}).items()},
        )
        for i, n in enumerate(raw.get("nodes", []))
    ] or [local]
    nodes = assign_cpus(nodes, usable_cpus())
    flavors = {f.flavor_id: f for f in _derived_flavors(local, gpus)}
    for f in raw.get("flavors", []):
        fl = Flavor(
            flavor_id=str(f["flavor_id"]),
            flavor_type="GPU" if int(f.get("gpus", 0)) else "CPU",
            cpu_cores=float(f.get("cpu_cores", 1)),
            memory_mb=max(1, round(float(f.get("memory_gb", 1)) * 1024)),  # 0 would mean no limit
            gpus=int(f.get("gpus", 0)),
            gpu_product=str(f.get("gpu_product", gpus[0].product if gpus else "")),
            gpu_memory=str(f.get("gpu_memory", f"{gpus[0].memory_gb}GB" if gpus else "")),
            arch=_arch(),
            flavor_name=str(f.get("flavor_name", f["flavor_id"])),
        )
        flavors[fl.flavor_id] = fl
    ver = f"{sys.version_info.major}.{sys.version_info.minor}"
    own = Engine("local-python3", "Python", f"python{ver}", sys.executable)
    engines = {own.engine_id: own}
    for e in raw.get("engines", []):
        image = str(e.get("image_url", ""))
        eng = Engine(str(e["engine_id"]), str(e.get("engine_name", e["engine_id"])),
                     str(e.get("engine_version", "")), str(e.get("python", "python" if image else sys.executable)),
                     image_url=image)
        engines[eng.engine_id] = eng
    datasets = {str(i): Dataset(str(i), str(d.get("name", "")), {str(v): str(u) for v, u in d["versions"].items()})
                for i, d in raw.get("datasets", {}).items()}
    return Catalog(nodes=nodes, flavors=flavors, engines=engines, default_engine=own.engine_id, datasets=datasets)
