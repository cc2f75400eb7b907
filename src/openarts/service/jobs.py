"""Job operations behind the API. They validate, record intent in the store and wake the supervisor;
they never start or signal processes themselves."""

from __future__ import annotations

import re
import uuid
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import orjson

from openarts.config import Settings
from openarts.core import errors
from openarts.core.inputs import parse_search, tag_window
from openarts.core.layout import role_layouts
from openarts.core.notify import parse_notification
from openarts.core.phases import TERMINABLE, Phase, is_terminal
from openarts.core.resources import DEFAULT_POOL, Catalog
from openarts.core.roles import task_index
from openarts.core.search import SEARCH_KIND
from openarts.core.spec import JobSpec, parse_job
from openarts.executors.images import ImageError, parse_ref, registries_of
from openarts.executors.volumes import VolumeError, host_dirs, nfs_shares
from openarts.scheduler.plan import Affinity, NodeFree, PendingJob, can_ever_fit, demand_of
from openarts.service.algorithms import resolve as resolve_algorithm
from openarts.service.buckets import BucketCheck
from openarts.service.document import job_document, static_document
from openarts.service.experiments import join
from openarts.service.queue import free_now, most_workers
from openarts.service.update import apply_static, parse_update
from openarts.storage.obs import ObjectStore
from openarts.store import amend
from openarts.store import jobs as w
from openarts.store import queries as q
from openarts.store.algorithms import get_algorithm
from openarts.store.db import Database
from openarts.store.rows import JobRow

SEARCH_LIMIT_MAX = 50
ENDED_DOCUMENTS = 2048  # documents of ended jobs kept rendered (least recently read dropped first)
REPORT_TYPES = ("training-event",)  # POST .../tasks/{task_id}/reports/{report_type}: the one ModelArts documents
REPORTED_TYPE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")  # a report's `type`, e.g. ProfilingRunning


def static_renderer(settings: Settings, catalog: Catalog) -> Callable[[JobSpec, str], dict[str, Any]]:
    """A new job's static document (service/document.py): the API's, and a search's trials' (the
    supervisor gets it from api/app.py)."""
    def render(spec: JobSpec, job_id: str) -> dict[str, Any]:
        return static_document(spec, job_id, catalog, role_layouts(spec, settings.job_dir(job_id), settings.sandboxed))
    return render


class JobService:
    def __init__(self, settings: Settings, db: Database, catalog: Catalog,
                 wake: Callable[[str | None], None], store: ObjectStore | None = None) -> None:
        self.settings = settings
        self.db = db
        self._ended: OrderedDict[str, tuple[JobRow, bytes]] = OrderedDict()  # job id -> (its row, its JSON)
        self.catalog = catalog
        self.wake = wake
        self.buckets = BucketCheck(store)

    async def create(self, project_id: str, user_name: str, body: Any) -> dict[str, Any]:
        with self.db.connect() as conn:  # algorithm.id or a subscription: resolved once, here, and stored
            algorithm_id = resolve_algorithm(conn, project_id, body)
        spec = parse_job(body, self.catalog, self.catalog.datasets)  # datasets resolved once, here, and stored
        # checked here, not by parse_job, which also reads back stored requests (a job created before the
        # check must still run); kept in the store's notifications table, where transition() reads it
        notification = parse_notification(spec.request.get("spec", {}).get("notification"))
        self._check_satisfiable(spec)
        images = list(dict.fromkeys(r.spec.image for r in spec.roles if r.spec.image))
        if len(images) > 1 and self.settings.executor == "ray":
            i = next(i for i, r in enumerate(spec.roles) if r.spec.image == images[1])
            raise errors.InvalidRequest(
                f"Invalid parameter tasks[{i}].algorithm.engine.image_url: on the Ray executor the roles of a "
                f"job run in one image at most ({images[0]!r} is another role's); use it, or a preset engine.")
        for i, role in enumerate(spec.role_list()):
            if role.spec.image:
                self._check_image(role.spec.image, f"tasks[{i}].algorithm.engine.image_url" if spec.roles
                                  else "algorithm.engine.image_url")
        if spec.volumes:
            self._check_volumes(spec)
        await self.buckets.check(spec)  # a missing bucket or refused credentials: refused now (service/buckets.py)
        job_id = str(uuid.uuid4())
        doc = static_renderer(self.settings, self.catalog)(spec, job_id)
        now = w.now_ms()
        with self.db.begin() as conn:
            if algorithm_id and spec.request.get("algorithm", {}).get("id"):  # not deleted while this create awaited
                get_algorithm(conn, project_id, algorithm_id)
            experiment_id = ""
            if spec.experiment is not None:  # found or made in this transaction (service/experiments.py)
                reference = doc["training_experiment_reference"] = join(conn, project_id, spec.workspace_id,
                                                                        spec.experiment, now)
                experiment_id = reference["id"]
                spec.request["metadata"]["training_experiment_reference"] = {"id": experiment_id,
                                                                             "name": reference["name"]}
            w.create_job(conn, job_id, project_id, user_name, spec, doc, now, notification,
                         experiment_id=experiment_id, algorithm_id=algorithm_id)
        self.wake(None)
        return self.get(project_id, job_id)

    def _check_image(self, url: str, field: str = "algorithm.engine.image_url") -> None:
        if not self.settings.sandboxed:
            raise errors.EngineNotFound(
                f"Custom images ({field}={url!r}) run in the sandbox, which is off on this "
                "server ([server] sandbox, docs/SANDBOX.md); use an engine from GET /training-job-engines.")
        try:
            parse_ref(url, registries_of(self.settings.raw.get("registries", [])))
        except ImageError as exc:
            raise errors.InvalidRequest(f"Invalid parameter {field}: {exc}.") from None

    def _check_volumes(self, spec: JobSpec) -> None:
        """Each NFS volume's share must be mounted on this machine (openarts mounts none itself), and the
        workers must have a sandbox to see it at its local_path (executors/volumes.py)."""
        try:
            host_dirs(spec, nfs_shares(self.settings), self.settings.sandboxed)
        except VolumeError as exc:
            raise errors.InvalidRequest(f"Invalid parameter {exc.field}: {exc.why}.") from None

    def _check_satisfiable(self, spec: JobSpec) -> None:
        """Refuse what the pool could never hold, even empty, rather than let it wait forever."""
        spread = self.settings.one_worker_per_node
        roles = spec.role_list()
        job = PendingJob("new", spec.pool_id, demand_of(spec.flavor), roles[0].spec.node_count, spec.priority, 0, "",
                         Affinity(*spec.affinity) if spec.affinity else None, spread,
                         tuple((demand_of(r.spec.flavor), r.spec.node_count) for r in roles[1:]))
        capacity = [NodeFree(n.name, n.pool, n.ip, n.cpu_milli, n.memory_mb, list(n.gpus), n.labels)
                    for n in self.catalog.nodes]
        if not can_ever_fit(job, capacity):
            grouping = (f" in groups of {spec.affinity[1]} nodes sharing a {spec.affinity[0]} label"
                        if spec.affinity else "")
            grouping += " (one worker per node)" if spread else ""
            raise errors.FlavorOutOfRange(
                "The request can never be satisfied: "
                + " + ".join(f"{r.spec.node_count} x {r.spec.flavor.flavor_id}" for r in roles)
                + f"{grouping} does not fit pool {spec.pool_id} even when it is empty.")

    def get(self, project_id: str, job_id: str) -> dict[str, Any]:
        """The job document."""
        with self.db.connect() as conn:
            row = q.get_job(conn, project_id, job_id)
            details = q.job_details(conn, [row])[row.id]
        return job_document(row, details, w.now_ms())

    def get_json(self, project_id: str, job_id: str) -> bytes:
        """The job document, as JSON. An ended job's is rendered once and kept: after its last transition
        only a PUT changes it, and a PUT changes the job's row, which is read every time (access,
        deletion) and must equal the one the kept document was rendered from. Its running time is fixed
        by then."""
        with self.db.connect() as conn:
            row = q.get_job(conn, project_id, job_id)
            ended = is_terminal(Phase(row.phase)) and row.kind != SEARCH_KIND  # a search's: its trials' rows too
            cached = self._ended.get(row.id) if ended else None
            if cached is not None and cached[0] == row:
                self._ended.move_to_end(row.id)
                return cached[1]
            details = q.job_details(conn, [row])[row.id]
        doc = orjson.dumps(job_document(row, details, w.now_ms()))
        if ended:
            self._ended[row.id] = (row, doc)
            if len(self._ended) > ENDED_DOCUMENTS:
                self._ended.popitem(last=False)
        return doc

    def phase_counts(self, project_id: str) -> dict[str, int]:
        """The project's jobs by phase (the console's filter counts)."""
        with self.db.connect() as conn:
            return q.project_phase_counts(conn, project_id)

    def search(self, project_id: str, body: Any) -> dict[str, Any]:
        offset, limit, sort_by, order, clean, workspace_id, group_by = parse_search(body, q.SORTABLE,
                                                                                    SEARCH_LIMIT_MAX)
        clean = tag_window(clean, w.now_ms())
        with self.db.connect() as conn:
            total, rows = q.search_jobs(conn, project_id, filters=clean, sort_by=sort_by, order=order,
                                        offset=offset, limit=limit, workspace_id=workspace_id)
            details = q.job_details(conn, rows)
        now = w.now_ms()
        return {
            "total": total, "count": len(rows), "limit": limit, "offset": offset, "sort_by": sort_by,
            "order": order, "group_by": group_by, "workspace_id": workspace_id or "0",
            "items": [job_document(r, details[r.id], now) for r in rows],
        }

    def update(self, project_id: str, job_id: str, body: Any) -> None:
        """Apply what ModelArts lets a PUT change (service/update.py); refuse the rest, changing nothing."""
        change = parse_update(body)
        now = w.now_ms()
        with self.db.begin() as conn:
            row = q.get_job(conn, project_id, job_id)
            if change.priority is not None and change.priority != row.priority:
                if row.phase not in (Phase.CREATING, Phase.PENDING):
                    raise errors.JobStatusChanged(
                        f"The priority of training job (ID: {job_id}) can change only while it is pending; "
                        f"it is {row.phase}.")
                w.set_priority(conn, job_id, change.priority, now)
                w.add_event(conn, job_id, f"Priority changed from {row.priority} to {change.priority}.", now)
            if change.preemptible is not None and change.preemptible != bool(row.preemptible):
                if is_terminal(row.phase):
                    raise errors.JobStatusChanged(
                        f"Whether training job (ID: {job_id}) may be preempted can change only until it ends; "
                        f"it is {row.phase}.")
                amend.set_preemptible(conn, job_id, change.preemptible, now)
                w.add_event(conn, job_id, f"Preemptible changed to {str(change.preemptible).lower()}.", now)
            if change.description is not None:
                w.set_description(conn, job_id, change.description, now)
            if change.changes_static:
                request, doc = apply_static(change, orjson.loads(row.request), orjson.loads(row.doc), self.catalog)
                amend.set_static(conn, job_id, request, doc, now)
                if change.annotations:
                    w.add_event(conn, job_id, f"Annotations changed: {', '.join(sorted(change.annotations))}.",
                                now)
            if change.notification is not None:
                w.set_notification(conn, job_id, parse_notification(change.notification))
        if change.priority is not None or change.preemptible is not None or change.annotations:
            self.wake(job_id)  # re-plan; the supervisor reads the changed annotations again

    def terminate(self, project_id: str, job_id: str, body: Any) -> dict[str, Any]:
        if not isinstance(body, dict) or body.get("action_type") != "terminate":
            raise errors.InvalidRequest("Invalid parameter action_type: the only action is 'terminate'.")
        with self.db.begin() as conn:
            row = q.get_job(conn, project_id, job_id)
            if Phase(row.phase) not in TERMINABLE and row.phase != Phase.TERMINATING:
                raise errors.NotAllowedToTerminate(
                    f"Training job (ID: {job_id}) is {row.phase} and cannot be terminated.")
            if not row.terminate_requested:
                w.request_terminate(conn, job_id, w.now_ms())
        self.wake(job_id)
        return self.get(project_id, job_id)

    def delete(self, project_id: str, job_ids: list[str]) -> None:
        with self.db.begin() as conn:
            for job_id in job_ids:
                q.get_job(conn, project_id, job_id)
            w.request_delete(conn, job_ids, w.now_ms())
        self.wake(None)

    QUOTA_RESOURCES = ("running_jobs", "cpu_cores", "gpus")

    def quotas(self, project_id: str, resource: str | None = None) -> dict[str, Any]:
        with self.db.connect() as conn:
            limits = q.project_quotas(conn, project_id).get(project_id, {})
            rows = [r for r in q.active_jobs(conn) if r.project_id == project_id and r.kind != SEARCH_KIND
                    and r.phase in (Phase.RUNNING, Phase.TERMINATING)]  # a search holds nothing: its trials do
        used = {"running_jobs": len(rows), "cpu_cores": 0, "gpus": 0}
        for r in rows:
            for s in r.shapes():
                flavor = self.catalog.flavors.get(s.flavor_id)
                if flavor is not None:
                    used["cpu_cores"] += int(flavor.cpu_cores * s.count)
                    used["gpus"] += flavor.gpus * s.count
        items = [{"resource": k, "quota": limits.get(k, -1), "used": used[k]} for k in self.QUOTA_RESOURCES
                 if resource in (None, "", k)]
        return {"quotas": items}

    def set_quotas(self, project_id: str, body: Any) -> dict[str, Any]:
        items = body.get("quotas") if isinstance(body, dict) else None
        if not isinstance(items, list) or not items or len(items) > len(self.QUOTA_RESOURCES):
            raise errors.InvalidRequest("Invalid parameter quotas: an array of {resource, quota}.")
        clean = []
        for item in items:
            resource = item.get("resource") if isinstance(item, dict) else None
            quota = item.get("quota") if isinstance(item, dict) else None
            if resource not in self.QUOTA_RESOURCES:
                raise errors.InvalidRequest(f"Invalid quota resource {resource!r}: use one of "
                                            f"{list(self.QUOTA_RESOURCES)}.")
            if isinstance(quota, bool) or not isinstance(quota, int) or not -1 <= quota <= 10**9:
                raise errors.InvalidRequest(f"Invalid quota for {resource}: an integer, -1 for unlimited.")
            clean.append((resource, quota))
        with self.db.begin() as conn:
            for resource, quota in clean:
                w.set_quota(conn, project_id, resource, quota)
        self.wake(None)
        return self.quotas(project_id)

    def name_taken(self, project_id: str, name: str) -> bool:
        with self.db.connect() as conn:
            return q.name_exists(conn, project_id, name)

    def require(self, project_id: str, job_id: str) -> Any:
        with self.db.connect() as conn:
            return q.get_job(conn, project_id, job_id)

    def is_final(self, phase: str) -> bool:
        return is_terminal(phase)

    def report(self, project_id: str, job_id: str, task_id: str, report_type: str, body: Any) -> None:
        """A task reports a training event (POST .../tasks/{task_id}/reports/training-event, body {type}):
        recorded as an event of the job (GET .../events), source "Task", naming the task."""
        with self.db.begin() as conn:
            row = q.get_job(conn, project_id, job_id)
            if task_index(row.shapes(), task_id) is None:
                raise errors.TaskNotFound(job_id, task_id)
            if report_type not in REPORT_TYPES:
                raise errors.InvalidRequest(f"Invalid parameter report_type: {report_type[:64]!r}; the report "
                                            f"types are {', '.join(REPORT_TYPES)}.")
            if not isinstance(body, dict):
                raise errors.InvalidRequest("Invalid parameter body: a report is an object, {\"type\": ...}.")
            extra = sorted(set(body) - {"type"})
            if extra:
                raise errors.InvalidRequest(f"Invalid parameter {extra[0][:64]!r}: a report has only type.")
            kind = body.get("type")
            if not isinstance(kind, str) or not REPORTED_TYPE.fullmatch(kind):
                raise errors.InvalidRequest("Invalid parameter type: 1 to 64 letters, digits, '_', '.' or '-', "
                                            "starting with a letter or digit (e.g. ProfilingRunning).")
            w.add_event(conn, job_id, f"Task {task_id} reported a training event: {kind}.", w.now_ms(),
                        source="Task")

    def flavor_resources(self, flavor_id: str | None, pool_id: str | None) -> dict[str, int]:
        """The most a job of `flavor_id` in `pool_id` (the default pool when absent, as at create) could get
        now: the CPU cores and memory (GB, both rounded down) of the largest node_count the scheduler would
        place at once in what is free now (service/queue.py), no more than the flavor's max_num there."""
        if not flavor_id:
            raise errors.QueryParamsError("flavor_id is required.")
        flavor = self.catalog.flavors.get(flavor_id)
        if flavor is None:
            raise errors.FlavorNotFound(f"Flavor {flavor_id[:128]!r} not found; available: "
                                        f"{', '.join(sorted(self.catalog.flavors))}.")
        pool = pool_id or DEFAULT_POOL
        pools = self.catalog.pools()
        if pool not in pools:
            raise errors.QueryParamsError(f"pool_id {pool[:128]!r} does not exist; the pools are "
                                          f"{', '.join(sorted(pools))}.")
        count = most_workers(flavor, pool, self.catalog.max_num(flavor, pool), free_now(self.db, self.catalog),
                             self.settings.one_worker_per_node)
        return {"cpu_core_num": count * flavor.cpu_milli // 1000, "mem_size": count * flavor.memory_mb // 1024}
