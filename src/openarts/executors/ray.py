"""The Ray executor: openarts' queue, scheduler and recovery, with the workers on a Ray cluster's nodes.

openarts decides what runs where, as on one machine; Ray provides the nodes and keeps their resources:

- **Nodes** are Ray's alive nodes, read every NODE_SECONDS: CPU, memory and GPUs from their resources,
  labels from their labels and custom resources, the pool from `[[ray_pools]]`. Each gets a node agent
  (executors/ray_agent.py), a detached actor named `openarts-agent-<node id>` in this server's namespace,
  pinned to its node; a node enters the scheduler's catalog once its agent answered, and leaves it when
  Ray no longer lists it. The catalog's node list is replaced, never edited in place.
- **Reservations**: each attempt reserves one bundle per worker (the flavor's CPU, memory and GPUs) in a
  detached placement group `<namespace>:<job>:<attempt>`, each bundle on the node openarts chose (Ray's
  `ray.io/node-id` label), STRICT_SPREAD when the nodes differ; other Ray work cannot take them. The GPUs
  Ray gave each bundle become its worker's GPUs (and the task's record), whatever the scheduler had
  picked. It is removed when the attempt ends, with the attempt's files on its nodes.
- **Workers** are started by their node's agent under the same shim and sandbox as on one machine, at
  ModelArts' paths. The job's directories (code, inputs, home), staged on the server, are packed once
  per attempt; each agent fetches them from the server's own HTTP with the attempt's token, and sends
  the output channels back the same way when a task ends, before the supervisor uploads them
  (executors/bundles.py). Agents reach the server at `[server] ray_server_url`, by default the URL it
  serves on (this machine's address in the cluster when it listens on every interface).
- **Logs** are followed while tasks run (every FOLLOW_SECONDS, one call per node) into the server's own
  copy, which the log API reads and which outlives the node; a task's log is complete when its end is
  reported.
- **Ends**: each node's agent watches its shims with pidfds; the server holds one long poll per node
  (`wait_exits`) and wakes the supervisor within milliseconds of a task's end.
- **Faults**: an agent that Ray is restarting answers nothing for a while (the task reads as running);
  a task whose node left the cluster is lost, which the supervisor's recovery handles.

Every call to an agent is awaited, never blocking the event loop; Ray's own blocking calls (the node
list, actor creation) run in a worker thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
import json
import logging
import os
import stat
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from openarts.config import Settings
from openarts.core.resources import DEFAULT_POOL, Catalog, Node
from openarts.executors.base import Key, Mount, StartError, TaskHandle, TaskLaunch, TaskState, Usage
from openarts.executors.bundles import IMAGE, INPUTS, SERVED, STAGED, WORKSPACE, Server, pack
from openarts.executors.images import ImageStore
from openarts.executors.ray_agent import LOG_CHUNK, PROTOCOL, RayNodeAgent
from openarts.executors.sandbox import RootImage
from openarts.storage.cache import CachedInputs, digest

log = logging.getLogger("openarts.ray")

AGENT_PREFIX = "openarts-agent-"
NODE_SECONDS = 1.0
FOLLOW_SECONDS = 0.5  # logs are followed this often
EXIT_WAIT_SECONDS = 10.0  # the longest an agent holds a long poll of task ends
CALL_SECONDS = 30.0  # an agent call that takes longer is given up (and tried again by the caller's next pass)
TRANSFER_SECONDS = 3600.0  # the longest a node may take to fetch an attempt's files or send its outputs
AGENT_START_SECONDS = 120.0
AGENT_LOST_SECONDS = 300.0  # a node alive without an agent this long: its tasks are lost
RESERVE_SECONDS = 30.0


class NodeGone(Exception):
    """The node is not (or no longer) in the cluster."""


def namespace_of(settings: Settings) -> str:
    """This server's Ray namespace: configured, or one derived from its data directory, so that a
    restarted server finds its own agents and placement groups, and two servers never share them."""
    return settings.ray_namespace or "openarts-" + hashlib.sha256(str(settings.data_dir).encode()).hexdigest()[:12]


def pool_of(node: dict[str, Any], pools: list[dict[str, Any]]) -> str:
    """The first `[[ray_pools]]` entry whose custom resource the node has or whose label it carries."""
    labels = node.get("Labels") or {}
    for p in pools:
        if "resource" in p and node["Resources"].get(str(p["resource"]), 0) > 0:
            return str(p["pool"])
        if "label" in p:
            key, _, value = str(p["label"]).partition("=")
            if labels.get(key) == value:
                return str(p["pool"])
    return DEFAULT_POOL


BUILTIN = {"CPU", "GPU", "memory", "object_store_memory"}


def node_of(node: dict[str, Any], pools: list[dict[str, Any]]) -> Node:
    res = node["Resources"]
    custom = {k: f"{v:g}" for k, v in res.items() if k not in BUILTIN and not k.startswith("node:")}
    return Node(name=node["NodeID"], cpu_milli=int(res.get("CPU", 0) * 1000),
                memory_mb=int(res.get("memory", 0) // 2**20), gpus=tuple(range(int(res.get("GPU", 0)))),
                pool=pool_of(node, pools), labels={**custom, **(node.get("Labels") or {})},
                ip=str(node["NodeManagerAddress"]))


def server_url_of(settings: Settings, node_ip: str) -> str:
    """Where agents reach this server: `ray_server_url`, else the URL it serves on, with this machine's
    address in the cluster when it listens on every interface."""
    if settings.ray_server_url:
        return settings.ray_server_url.rstrip("/")
    scheme, sep, rest = settings.server_url.partition("://")
    host, _, port = rest.rpartition(":")
    if not sep or not port:
        return ""
    if host in ("0.0.0.0", "[::]", ""):
        host = f"[{node_ip}]" if ":" in node_ip else node_ip
    return f"{scheme}://{host}:{port}"


def pack_attempt(where: Path, dirs: list[tuple[str, str]], inputs: tuple[CachedInputs, ...]) -> None:
    """The attempt's tar of its directories (each (directory, m<i>)) in `where`, but the files of the
    cached `inputs`: those are listed in the tar's first member, and the server's file for each is noted
    for the route that serves them."""
    listed, served = _on_nodes(inputs, dirs)
    where.mkdir(parents=True, exist_ok=True)
    _write(where / STAGED, CachedInputs.dumps([c for c in inputs if any(c.url == x.url for x in listed)]))
    _write(where / SERVED, json.dumps(served))
    _write(where / INPUTS, CachedInputs.dumps(listed))
    left_out = {f"{c.dir}/{o.rel}" for c in listed for o in c.objects}
    pack(where / WORKSPACE, [(str(where / INPUTS), INPUTS), *dirs],
         (lambda name, size, mtime: name not in left_out) if left_out else None)


def _write(path: Path, text: str) -> None:
    """Replace a file whole: a reader sees the old or the new one."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}")
    tmp.write_text(text)
    os.replace(tmp, path)


def earlier_inputs(attempts: Path, seq: int) -> tuple[CachedInputs, ...]:
    """For an attempt not prepared here (a restart in place: nothing was staged since; or a server that
    restarted after the attempt's staging), the cached inputs of the job's latest attempt up to `seq` that
    listed some; `_on_nodes` checks they are still as listed."""
    with contextlib.suppress(OSError, ValueError):
        for n in sorted((int(d.name) for d in attempts.iterdir() if d.name.isdigit() and int(d.name) <= seq),
                        reverse=True):
            path = attempts / str(n) / STAGED
            if path.exists():
                return tuple(CachedInputs.loads(path.read_text()))
    return ()


def _on_nodes(inputs: tuple[CachedInputs, ...], dirs: list[tuple[str, str]]
              ) -> tuple[list[CachedInputs], dict[str, tuple[str, int]]]:
    """The cached input directories as the nodes see them (`dir` below the tar's m<i>), and the server's
    file for each entry's digest. A directory outside the packed ones, or one whose files are no longer as
    listed, is left in the tar."""
    listed: list[CachedInputs] = []
    served: dict[str, tuple[str, int]] = {}
    for c in inputs:
        here = Path(c.dir)
        inside = [(name, here.relative_to(host)) for host, name in dirs if here.is_relative_to(host)]
        if not inside or not all(_as_listed(here / o.rel, o.size) for o in c.objects):
            continue
        name, rel = min(inside, key=lambda x: len(x[1].parts))  # the deepest directory holding it
        listed.append(dataclasses.replace(c, dir=f"{name}/{rel}" if rel.parts else name))
        served.update({digest(c.store_id, o): (str(here / o.rel), o.size) for o in c.objects})
    return listed, served


def _as_listed(path: Path, size: int) -> bool:
    try:
        st = path.lstat()
    except OSError:
        return False
    return stat.S_ISREG(st.st_mode) and st.st_size == size


def assigned_gpus() -> list[int]:
    """Run by Ray inside a bundle: the GPU ids Ray assigned to it."""
    import ray

    return [int(g) for g in ray.get_gpu_ids()]


class RayExecutor:
    sandboxed = True  # every node runs its workers in its own sandbox
    prepares = True  # the attempt's files are packed for its nodes to fetch

    def __init__(self, settings: Settings, catalog: Catalog, hidden: list[Path], read_only: list[Path],
                 token_of: Callable[[str, int], str], images: ImageStore | None = None) -> None:
        import ray

        self.ray = ray
        self.settings = settings
        self.catalog = catalog
        self.namespace = namespace_of(settings)
        ray.init(address=settings.ray_address or "auto", namespace=self.namespace, log_to_driver=False,
                 logging_level=logging.WARNING)
        self._agent_class: Any = ray.remote(RayNodeAgent)
        self._gpu_probe: Any = ray.remote(assigned_gpus)
        self.server_url = server_url_of(settings, ray.util.get_node_ip_address())
        self._agent_args = (settings.ray_node_dir, [str(p) for p in hidden], [str(p) for p in read_only],
                            int(settings.staging_cache_gb * 2**30))
        self.agents: dict[str, Any] = {}  # node id -> actor handle, for the nodes in the catalog
        self.alive: set[str] = set()
        self._watched: dict[Key, tuple[TaskHandle, Callable[[], None]]] = {}
        self._ended: set[Key] = set()  # tasks whose log and outputs were fetched after their end
        self.images = images  # where the server pulls custom images, which agents fetch from it
        self.token_of = token_of  # an attempt's token for the server's agents' routes (security/attempt_tokens.py)
        self._packed: set[tuple[str, int]] = set()  # attempts whose directories this server packed
        self._exit_loops: dict[str, asyncio.Task[None]] = {}  # node -> its long poll of task ends
        self._stopping = asyncio.Event()
        self._starting: dict[str, tuple[Any, Any, float]] = {}  # node -> its agent, its first answer, since
        self._agentless: dict[str, float] = {}  # alive node -> since when it has had no agent
        self._refused: dict[str, str] = {}  # node -> why its agent takes no work (no sandbox there)
        self._wait_for_agents()

    # -- nodes -------------------------------------------------------------------------------------
    def _wait_for_agents(self) -> None:
        """At start-up: the catalog once every alive node's agent answered (or AGENT_START_SECONDS passed),
        so that the first pass re-adopts the jobs on all of them."""
        deadline = time.monotonic() + AGENT_START_SECONDS
        while True:
            self.refresh_nodes()
            left = deadline - time.monotonic()
            if not self._starting or left <= 0:
                return
            self.ray.wait([ref for _, ref, _ in self._starting.values()], num_returns=len(self._starting),
                          timeout=min(left, NODE_SECONDS))

    def refresh_nodes(self) -> None:
        """Ray's alive nodes become the catalog's, each once its agent answered. Blocks only to read
        Ray's node list: an agent being started is looked at again on the next call."""
        nodes = [n for n in self.ray.nodes() if n.get("Alive")]
        self.alive = {n["NodeID"] for n in nodes}
        pools = list(self.settings.raw.get("ray_pools", []))
        catalog = []
        now = time.monotonic()
        for n in nodes:
            node_id = n["NodeID"]
            if n["Resources"].get("CPU", 0) <= 0:
                continue  # a node for Ray's own processes only (a head started with --num-cpus=0)
            if node_id not in self.agents and not self._agent_ready(node_id, str(n["NodeManagerAddress"])):
                self._agentless.setdefault(node_id, now)
                continue
            self._agentless.pop(node_id, None)
            catalog.append(node_of(n, pools))
        for gone in [k for k in self.agents if k not in self.alive]:
            log.warning("node %s left the Ray cluster", gone)
            del self.agents[gone]
        for table in (self._starting, self._agentless, self._refused):
            for gone in [k for k in table if k not in self.alive]:
                del table[gone]
        self.catalog.nodes = catalog

    def _agent_ready(self, node_id: str, address: str) -> bool:
        """Start (or find, after a restart of this server) the node's agent; True once it answered."""
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        if node_id not in self._starting:
            agent: Any = self._agent_class.options(
                name=AGENT_PREFIX + node_id, namespace=self.namespace, lifetime="detached", get_if_exists=True,
                max_restarts=-1, max_concurrency=16, num_cpus=0,
                scheduling_strategy=NodeAffinitySchedulingStrategy(node_id, soft=False),
            ).remote(*self._agent_args)
            self._starting[node_id] = (agent, agent.info.remote(), time.monotonic())
        agent, ref, since = self._starting[node_id]
        ready, _ = self.ray.wait([ref], timeout=0)
        if not ready:
            if time.monotonic() - since > AGENT_START_SECONDS:
                log.warning("node %s: its agent did not answer within %g s; trying again", node_id,
                            AGENT_START_SECONDS)
                del self._starting[node_id]
            return False
        del self._starting[node_id]
        try:
            info: dict[str, Any] = self.ray.get(ref)
        except Exception as exc:
            log.warning("node %s: its agent did not start: %s", node_id, exc)
            return False
        if info.get("protocol", 0) < PROTOCOL:  # an agent of an older openarts (detached: it outlived it)
            log.warning("node %s: its agent is of an older version; replacing it (its workers are re-adopted)",
                        node_id)
            with contextlib.suppress(Exception):
                self.ray.kill(agent, no_restart=True)
            return False
        if info["sandbox"]:
            if self._refused.get(node_id) != info["sandbox"]:  # said once, not every second
                log.warning("node %s takes no work: no sandbox there: %s", node_id, info["sandbox"])
            self._refused[node_id] = info["sandbox"]
            return False
        self._refused.pop(node_id, None)
        log.info("node %s (%s): agent ready (pid %s)", node_id, address, info["pid"])
        self.agents[node_id] = agent
        return True

    async def run(self) -> None:
        """Follow the cluster's nodes, the watched tasks' ends and their logs, until `close`."""
        last_nodes = 0.0
        loop = asyncio.get_running_loop()
        while not self._stopping.is_set():
            if loop.time() - last_nodes >= NODE_SECONDS:
                last_nodes = loop.time()
                try:
                    await asyncio.to_thread(self.refresh_nodes)
                except Exception:
                    log.exception("reading the Ray cluster's nodes failed")
                for node in self.agents:
                    if node not in self._exit_loops:
                        self._exit_loops[node] = asyncio.create_task(self._exits_of(node), name=f"exits-{node}")
                for node in [n for n in self._exit_loops if n not in self.agents]:
                    self._exit_loops.pop(node).cancel()
            by_node: dict[str, list[TaskHandle]] = {}
            for h, _ in list(self._watched.values()):
                by_node.setdefault(h.node, []).append(h)
            await asyncio.gather(*(self._sync_logs(node, hs) for node, hs in by_node.items()), return_exceptions=True)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), timeout=FOLLOW_SECONDS)
        for task in self._exit_loops.values():
            task.cancel()

    async def _exits_of(self, node: str) -> None:
        """One long poll at a time on the node's agent: each task end it reports wakes its watcher."""
        incarnation, since = "", 0
        while node in self.agents and not self._stopping.is_set():
            try:
                agent = self.agents[node]
                incarnation, since, ended = await agent.wait_exits.remote(incarnation, since, EXIT_WAIT_SECONDS)
            except Exception:  # restarting, or gone: the supervisor's passes poll meanwhile
                await asyncio.sleep(FOLLOW_SECONDS)
                continue
            for key in ended:
                watched = self._watched.pop(tuple(key), None)
                if watched is not None:
                    watched[1]()

    # -- calls to agents ---------------------------------------------------------------------------
    async def _call(self, node: str, method: str, *args: Any, timeout: float = CALL_SECONDS) -> Any:
        agent = self.agents.get(node)
        if agent is None:
            raise NodeGone(node)
        try:
            return await asyncio.wait_for(getattr(agent, method).remote(*args), timeout=timeout)
        except self.ray.exceptions.ActorDiedError:
            # dead for good (killed without restart, or out of restarts), not restarting: the next
            # refresh starts a new agent there, which re-adopts the node's workers
            if self.agents.get(node) is agent:
                log.warning("node %s: its agent died; starting another", node)
                del self.agents[node]
            raise

    def _unreachable(self, exc: BaseException) -> bool:
        return isinstance(exc, NodeGone | TimeoutError | self.ray.exceptions.RayError)

    # -- the Executor interface --------------------------------------------------------------------
    async def start(self, launch: TaskLaunch) -> TaskHandle:
        if launch.node not in self.agents:
            raise StartError(f"cannot start {launch.task}: node {launch.node} is not in the Ray cluster")
        attempt = (launch.job_id, launch.seq)
        image = self._image_of(launch) if launch.image else None
        timeout = CALL_SECONDS
        if attempt not in self._packed:  # once per attempt: what its nodes fetch from the server
            attempts = self.settings.attempts_dir(launch.job_id, launch.seq).parent
            await asyncio.to_thread(lambda: self._offer(launch.job_id, launch.seq, launch.packed or launch.mounts,
                                                        image, earlier_inputs(attempts, launch.seq)))
            timeout = TRANSFER_SECONDS  # not prepared: its nodes fetch its files in the start
        if image is not None and self.images is not None:  # every node runs the very image pulled here
            launch = dataclasses.replace(launch, image=self.images.pinned(launch.image, image.digest))
        try:
            handle: TaskHandle = await self._call(launch.node, "start", launch, self._server(launch.job_id, launch.seq),
                                                  timeout=timeout)
        except StartError:
            raise
        except Exception as exc:
            if self._unreachable(exc):
                raise StartError(f"cannot start {launch.task} on node {launch.node}: {exc}") from exc
            raise
        return handle

    def _image_of(self, launch: TaskLaunch) -> RootImage:
        """The job's image, pulled on this server before the start."""
        image = self.images.lookup(launch.image) if self.images is not None else None
        if image is None:
            raise StartError(f"cannot start {launch.task}: image {launch.image} is not on this server")
        return image

    async def prepare(self, job_id: str, seq: int, nodes: list[str], mounts: tuple[Mount, ...], image: str,
                      cancel: threading.Event, inputs: tuple[CachedInputs, ...] = ()) -> list[str]:
        """In the attempt's staging transfer: pack its directories, then have each of its nodes fetch
        them (and its image, unless the node has it, and the cached `inputs` its cache lacks), so that
        the start that follows copies nothing across the network. A node that cannot fetch now is left
        to fetch at its start (a start failure there is retried as such)."""
        pulled = None
        if image:
            pulled = self.images.lookup(image) if self.images is not None else None
            if pulled is None:
                raise StartError(f"image {image} is not on this server")
        await asyncio.to_thread(self._offer, job_id, seq, mounts, pulled, inputs)
        if cancel.is_set():
            raise StartError("cancelled")
        ref = self.images.pinned(image, pulled.digest) if pulled is not None and self.images is not None else ""
        server = self._server(job_id, seq)

        lines: list[str] = []

        async def fetch(node: str) -> None:
            try:
                amounts = await self._call(node, "fetch", job_id, seq, server, ref, timeout=TRANSFER_SECONDS)
            except Exception as exc:
                log.warning("job %s attempt %d: node %s did not fetch its files ahead of the start: %s",
                            job_id, seq, node, exc)
                return
            if amounts:
                lines.append(f"Inputs on node {node}: {amounts}.")
        pending = {asyncio.ensure_future(fetch(n)) for n in sorted(set(nodes))}
        while pending:  # a terminate stops the wait (the nodes' downloads end on their own; release removes them)
            _, pending = await asyncio.wait(pending, timeout=0.5)
            if cancel.is_set():
                for t in pending:
                    t.cancel()
                raise StartError("cancelled")
        return sorted(lines)

    def _offer(self, job_id: str, seq: int, mounts: tuple[Mount, ...], image: RootImage | None,
               inputs: tuple[CachedInputs, ...]) -> None:
        """Pack the attempt's directories but the cached `inputs` (listed in the tar instead, for the
        nodes' caches), and link its image's tar, where the agents' routes serve them (slow: in a thread)."""
        if not self.server_url:
            raise StartError("the Ray nodes cannot fetch the job's files: this server's URL is unknown "
                             "(set [server] ray_server_url)")
        where = self.settings.attempts_dir(job_id, seq)
        dirs = [(m.host, m.key or f"m{i}") for i, m in enumerate(mounts) if not m.shared]  # volumes: on each node
        try:
            pack_attempt(where, dirs, inputs)
            if image is not None and self.images is not None:
                tar = self.images.bundle_tar(image)
                (where / IMAGE).unlink(missing_ok=True)
                (where / IMAGE).symlink_to(tar)
        except OSError as exc:
            raise StartError(f"cannot offer the job's files to its nodes: {exc}") from exc
        self._packed.add((job_id, seq))

    async def poll(self, handle: TaskHandle) -> TaskState:
        key = (handle.job_id, handle.seq, handle.task)
        if handle.node not in self.alive:
            return TaskState(running=False, lost=True, detail=f"its node {handle.node} left the Ray cluster")
        agentless = self._agentless.get(handle.node)
        if agentless is not None and time.monotonic() - agentless > AGENT_LOST_SECONDS:
            return TaskState(running=False, lost=True, detail=f"its node {handle.node} has had no agent for "
                             f"{AGENT_LOST_SECONDS:g} s")
        try:
            state: TaskState = await self._call(handle.node, "poll", handle)
        except Exception as exc:
            if not self._unreachable(exc):
                raise
            return TaskState(running=True)  # its agent is restarting, or slow: looked at again later
        if not state.running and key not in self._ended:
            with contextlib.suppress(Exception):  # the rest of its log (for the failure message); its
                await self._sync_log(handle)      # outputs are gathered by the attempt's final upload
            self._ended.add(key)
        return state

    def _server(self, job_id: str, seq: int) -> Server:
        return Server(self.server_url, self.token_of(job_id, seq), self.settings.server_certificate)

    async def gather_outputs(self, handles: list[TaskHandle], changed_only: bool) -> list[str]:
        """Each task's agent sends its output channels to the server (api/agents.py unpacks them into
        the job's own directories), all tasks at once; with `changed_only` only the files changed since
        that agent's last send of the task."""
        async def send(h: TaskHandle) -> str:
            try:
                await self._call(h.node, "send_outputs", h, self._server(h.job_id, h.seq), changed_only,
                                 timeout=TRANSFER_SECONDS)
                return ""
            except Exception as exc:
                log.warning("job %s %s: outputs not sent from node %s: %s", h.job_id, h.task, h.node, exc)
                return f"Outputs of {h.task} not sent from node {h.node}: {exc or type(exc).__name__}"
        return [line for line in await asyncio.gather(*(send(h) for h in handles)) if line]

    async def _sync_log(self, handle: TaskHandle) -> None:
        await self._sync_logs(handle.node, [handle])

    async def _sync_logs(self, node: str, handles: list[TaskHandle]) -> None:
        """Bring the server's copies of these tasks' logs up to date: one agent call per round for all
        of them, rounds until every log is read to its end. Each piece is written at the offset it was
        read from, so two syncs of one log at once (the follow loop, and a task's end) write the same
        bytes at the same place instead of appending them twice."""
        pending = list(handles)
        while pending:
            offsets = [_size(h.run_dir / "log") for h in pending]
            chunks: list[bytes | None] = await self._call(node, "read_logs", list(zip(pending, offsets, strict=True)))
            again = []
            for h, offset, data in zip(pending, offsets, chunks, strict=True):
                if data is None or len(data) >= LOG_CHUNK:
                    again.append(h)  # not read this round, or more to come
                if data:
                    _write_at(h.run_dir / "log", offset, data)
            pending = again

    async def signal(self, handle: TaskHandle, signum: int) -> bool | None:
        if handle.node not in self.alive:
            return False
        try:
            sent: bool | None = await self._call(handle.node, "signal", handle, signum)
        except Exception as exc:
            if not self._unreachable(exc):
                raise
            return None  # tried again next pass
        return sent

    async def cleanup(self, handle: TaskHandle) -> None:
        self._watched.pop((handle.job_id, handle.seq, handle.task), None)
        with contextlib.suppress(Exception):
            await self._call(handle.node, "cleanup", handle)

    async def usage(self, tasks: dict[Key, tuple[TaskHandle, int]]) -> dict[Key, Usage]:
        by_node: dict[str, dict[Key, tuple[TaskHandle, int]]] = {}
        for key, (h, limit) in tasks.items():
            by_node.setdefault(h.node, {})[key] = (h, limit)
        answers = await asyncio.gather(*(self._call(node, "usage", part) for node, part in by_node.items()),
                                       return_exceptions=True)
        out: dict[Key, Usage] = {}
        for answer in answers:
            if isinstance(answer, dict):
                out.update(answer)
        return out

    async def kill(self, handle: TaskHandle, note: str) -> None:
        with contextlib.suppress(Exception):
            await self._call(handle.node, "kill", handle, note)

    def log_path(self, run_dir: Path) -> Path:
        return run_dir / "log"

    def watch(self, handle: TaskHandle, on_exit: Callable[[], None]) -> None:
        self._watched[(handle.job_id, handle.seq, handle.task)] = (handle, on_exit)

    async def free_port(self, node: str) -> int:
        try:
            port: int = await self._call(node, "free_port")
        except Exception as exc:
            raise StartError(f"no port for the workers' rendezvous on node {node}: {exc}") from exc
        return port

    # -- reservations ------------------------------------------------------------------------------
    def _pg_name(self, job_id: str, seq: int) -> str:
        return f"{self.namespace}:{job_id}:{seq}"

    async def reserve(self, job_id: str, seq: int, nodes: list[str],
                      resources: list[dict[str, float]]) -> list[tuple[int, ...]] | None:
        from ray.util.placement_group import placement_group

        await asyncio.to_thread(self._remove_pg, job_id, seq)  # left by a start interrupted before
        bundles = [{k: v for k, v in r.items() if v > 0} or {"CPU": 0.001} for r in resources]
        strategy = "STRICT_SPREAD" if len(set(nodes)) == len(nodes) else "PACK"
        pg = await asyncio.to_thread(placement_group, [dict(b) for b in bundles], strategy=strategy,
                                     name=self._pg_name(job_id, seq), lifetime="detached",
                                     bundle_label_selector=[{"ray.io/node-id": n} for n in nodes])
        try:
            await asyncio.wait_for(pg.ready(), timeout=RESERVE_SECONDS)
        except (TimeoutError, self.ray.exceptions.RayError) as exc:
            await asyncio.to_thread(self.ray.util.remove_placement_group, pg)
            shown = bundles[0] if all(b == bundles[0] for b in bundles) else bundles
            raise StartError(f"Ray did not reserve {shown} on each of {len(nodes)} node(s) within "
                             f"{RESERVE_SECONDS:g} s (other Ray work holds them, or a node left): {exc}") from None
        gpus = [int(b.get("GPU", 0)) for b in bundles]
        if not any(gpus):
            return None
        return await self._bundle_gpus(pg, gpus)

    async def _bundle_gpus(self, pg: Any, gpus: list[int]) -> list[tuple[int, ...]]:
        """The GPU ids Ray gave each bundle (`gpus`: how many each holds): a task asking for the bundle's
        GPUs, run in it, reads them (Ray fixes a bundle's GPU instances when it commits it, and hands them to
        whatever runs there)."""
        from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

        refs = {i: self._gpu_probe.options(num_cpus=0, num_gpus=n, scheduling_strategy=PlacementGroupSchedulingStrategy(
            pg, placement_group_bundle_index=i)).remote() for i, n in enumerate(gpus) if n}
        try:
            ids = await asyncio.wait_for(asyncio.gather(*refs.values()), timeout=RESERVE_SECONDS)
        except (TimeoutError, self.ray.exceptions.RayError) as exc:
            raise StartError(f"Ray reserved the GPUs but did not say which within {RESERVE_SECONDS:g} s: {exc}") \
                from None
        got = dict(zip(refs, ids, strict=True))
        return [tuple(int(g) for g in got.get(i, ())) for i in range(len(gpus))]

    def _remove_pg(self, job_id: str, seq: int) -> None:
        try:
            pg = self.ray.util.get_placement_group(self._pg_name(job_id, seq))
        except ValueError:
            return  # none by that name
        self.ray.util.remove_placement_group(pg)

    async def release(self, job_id: str, seq: int, nodes: list[str]) -> None:
        """The attempt's reservation and its files on its nodes; its processes were cleaned up before."""
        self._packed.discard((job_id, seq))
        for name in (WORKSPACE, IMAGE, SERVED):
            (self.settings.attempts_dir(job_id, seq) / name).unlink(missing_ok=True)
        self._ended = {k for k in self._ended if k[:2] != (job_id, seq)}
        await asyncio.to_thread(self._remove_pg, job_id, seq)
        await asyncio.gather(*(self._call(n, "release", job_id, seq) for n in set(nodes) if n in self.agents),
                             return_exceptions=True)

    async def sweep(self, live: set[tuple[str, int]]) -> None:
        """Remove this namespace's placement groups that no open attempt owns."""
        table = await asyncio.to_thread(self.ray.util.placement_group_table)
        prefix = self.namespace + ":"
        for pg in table.values():
            name = str(pg.get("name", ""))
            job_id, _, seq = name.removeprefix(prefix).rpartition(":")
            if (not name.startswith(prefix) or pg.get("state") == "REMOVED" or not seq.isdigit()
                    or (job_id, int(seq)) in live):
                continue
            log.warning("removing placement group %s: no open attempt owns it", name)
            await asyncio.to_thread(self._remove_pg, job_id, int(seq))

    def close(self) -> None:
        """Stop following; agents, workers and reservations stay for the next server to re-adopt."""
        self._stopping.set()
        with contextlib.suppress(Exception):
            self.ray.shutdown()


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


def _write_at(path: Path, offset: int, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        os.pwrite(fd, data, offset)
    finally:
        os.close(fd)

