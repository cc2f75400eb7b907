"""Every write to the store. `transition()` is the only writer of a job's phase.

All functions take the connection inside a transaction (`Database.begin()`); none does I/O outside
the database. Statements are SQL text on the sqlite3 connection (see store/db.py for why).
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterable
from typing import Any

import orjson

from openarts.core import errors, roles
from openarts.core.faults import RecoveryState
from openarts.core.notify import Notification, event_of, wants
from openarts.core.phases import DEFAULT_SECONDARY, Phase, Secondary, can_transition
from openarts.core.spec import JobSpec
from openarts.store.db import chunks, insert, placeholders
from openarts.store.schema import attempts, fences, jobs, metrics, node_counts, quotas, tasks

Conn = sqlite3.Connection

# Columns transition() may set beside the phase.
_TRANSITION_FIELDS = frozenset({"start_ms", "end_ms", "running_since_ms", "run_ms", "message", "queue_seq"})


def now_ms() -> int:
    return int(time.time() * 1000)


IllegalTransition = errors.IllegalTransition
LostRace = errors.LostRace


def create_job(conn: Conn, job_id: str, project_id: str, user_name: str, spec: JobSpec,
               doc: dict[str, Any], at_ms: int, notification: Notification | None = None,
               parent_id: str = "", experiment_id: str = "", algorithm_id: str = "") -> None:
    """Insert a new job in phase Creating, with its 'created' event (and its notification). `parent_id`:
    the search a trial belongs to; `experiment_id`: the training experiment the job is in; `algorithm_id`:
    the algorithm it was made from."""
    try:
        insert(conn, jobs, dict(
            id=job_id, project_id=project_id, workspace_id=spec.workspace_id, name=spec.name,
            kind=spec.kind, parent_id=parent_id, experiment_id=experiment_id, algorithm_id=algorithm_id,
            description=spec.description,
            user_name=user_name, create_ms=at_ms,
            update_ms=at_ms, phase=Phase.CREATING.value, secondary_phase=Secondary.CREATING.value,
            flavor_id=spec.flavor.flavor_id, node_count=spec.node_count, pool_id=spec.pool_id,
            priority=spec.priority, preemptible=spec.preemptible, engine_id=spec.engine.engine_id,
            request=orjson.dumps(spec.request).decode(), doc=orjson.dumps(doc).decode(),
            roles=roles.encode(spec.shapes()) if spec.roles else "",
        ))
    except sqlite3.IntegrityError as exc:
        raise errors.DuplicateJobName(f"Training job name {spec.name!r} already exists.") from exc
    add_event(conn, job_id, f"Training job {spec.name} created.", at_ms)
    set_notification(conn, job_id, notification)


def set_notification(conn: Conn, job_id: str, notification: Notification | None) -> None:
    """A job's spec.notification, or none (core/notify.py): what transition() queues messages for."""
    if notification is None:
        conn.execute("DELETE FROM notifications WHERE job_id = ?", (job_id,))
    else:
        conn.execute("INSERT OR REPLACE INTO notifications (job_id, topic_urn, events) VALUES (?, ?, ?)",
                     (job_id, notification.topic_urn, notification.stored_events()))


_SET_PHASE = "UPDATE jobs SET phase = ?, secondary_phase = ?, update_ms = ?{extra} WHERE id = ? AND phase = ?"


def transition(
    conn: Conn,
    job_id: str,
    expected: Phase,
    to: Phase,
    *,
    at_ms: int,
    secondary: Secondary | None = None,
    event: str | None = None,
    level: str = "Info",
    notify: str | None = None,
    **fields: Any,
) -> None:
    """Compare-and-set the phase: moves `job_id` from `expected` to `to` and records an event.

    Raises `LostRace` when the job is no longer in `expected` (as SkyPilot's `set_started_async` raises
    when no row changed): the caller's transaction rolls back, side writes included, and a lost
    guarded write can never be ignored. `expected == to` changes only the secondary phase, and with
    `event=""` serves as a guard for side writes that need the job to still be in `expected`. The
    change is announced to the job's notification as `notify` (a core/notify.py event), by default
    as the event the phase change is by itself (""; none).
    """
    if expected != to and not can_transition(expected, to):
        raise IllegalTransition(f"{expected} -> {to} is not an allowed transition")
    unknown = set(fields) - _TRANSITION_FIELDS
    if unknown:
        raise IllegalTransition(f"transition() cannot set {sorted(unknown)}")
    sec = secondary or DEFAULT_SECONDARY[to]
    extra = "".join(f", {name} = ?" for name in fields)
    cur = conn.execute(_SET_PHASE.format(extra=extra),
                       (to.value, sec.value, at_ms, *fields.values(), job_id, expected.value))
    if cur.rowcount != 1:
        raise LostRace(job_id, expected.value, to.value)
    if event is None:
        event = f"Job phase changed from {expected} to {to}" + (f" ({sec})" if sec.value != to.value else "")
    if event or expected != to:  # a same-phase guard may write no event (event="")
        add_event(conn, job_id, event, at_ms, level=level)
    announce = notify if notify is not None else event_of(expected, to)
    if announce:
        queue_notification(conn, job_id, announce, at_ms, str(fields.get("message", "")))


def queue_notification(conn: Conn, job_id: str, event: str, at_ms: int, message: str = "") -> None:
    """The message for `event` (core/notify.py) when the job's notification wants it, queued in the
    caller's transaction: it is sent if and only if what it announces is committed
    (supervisor/notifier.py). The job's phase is read as this transaction has it."""
    row = conn.execute("SELECT n.topic_urn, n.events, j.name, j.project_id, j.phase, j.secondary_phase "
                       "FROM notifications n JOIN jobs j ON j.id = n.job_id WHERE n.job_id = ?", (job_id,)).fetchone()
    if row is None or not wants(row[1], event):
        return
    payload = {"event": event, "topic_urn": row[0], "job_id": job_id, "job_name": row[2], "project_id": row[3],
               "phase": row[4], "secondary_phase": row[5], "time": at_ms, "message": message}
    conn.execute("INSERT INTO outbox (job_id, topic_urn, payload, tries, next_ms, last_error) "
                 "VALUES (?, ?, ?, 0, ?, '')", (job_id, row[0], orjson.dumps(payload).decode(), at_ms))


def add_event(conn: Conn, job_id: str, message: str, at_ms: int, *, level: str = "Info",
              source: str = "Job") -> None:
    conn.execute("INSERT INTO events (job_id, time_ms, level, source, message) VALUES (?, ?, ?, ?, ?)",
                 (job_id, at_ms, level, source, message))


def set_description(conn: Conn, job_id: str, description: str, at_ms: int) -> None:
    conn.execute("UPDATE jobs SET description = ?, update_ms = ? WHERE id = ?", (description, at_ms, job_id))


def set_priority(conn: Conn, job_id: str, priority: int, at_ms: int) -> None:
    conn.execute("UPDATE jobs SET priority = ?, update_ms = ? WHERE id = ?", (priority, at_ms, job_id))


def request_terminate(conn: Conn, job_id: str, at_ms: int, reason: str = "") -> None:
    """Record the intent to terminate; `reason` empty means the user asked (else e.g. auto_stop)."""
    conn.execute("UPDATE jobs SET terminate_requested = 1, terminate_reason = ?, update_ms = ? WHERE id = ?",
                 (reason, at_ms, job_id))
    add_event(conn, job_id, f"Termination requested: {reason}." if reason else "Termination requested by the user.",
              at_ms)


def request_preempt(conn: Conn, job_id: str, by_job: str, at_ms: int) -> bool:
    cur = conn.execute("UPDATE jobs SET preempt_requested = 1, preempt_ms = ?, preempted_by = ? "
                       "WHERE id = ? AND preempt_requested = 0", (at_ms, by_job, job_id))
    if cur.rowcount == 1:
        add_event(conn, job_id, f"Preempted by higher-priority job {by_job}: stopping its workers.", at_ms,
                  level="Warning", source="Scheduler")
        return True
    return False


def clear_preempt(conn: Conn, job_id: str) -> None:
    conn.execute("UPDATE jobs SET preempt_requested = 0, preempt_ms = 0, preempted_by = '' WHERE id = ?", (job_id,))


def set_quota(conn: Conn, project_id: str, resource: str, quota: int) -> None:
    conn.execute("DELETE FROM quotas WHERE project_id = ? AND resource = ?", (project_id, resource))
    if quota >= 0:
        insert(conn, quotas, {"project_id": project_id, "resource": resource, "quota": quota})


def request_delete(conn: Conn, job_ids: Iterable[str], at_ms: int) -> None:
    for chunk in chunks(list(job_ids)):
        conn.execute(f"UPDATE jobs SET delete_requested = 1, terminate_requested = 1, update_ms = ? "
                     f"WHERE id IN ({placeholders(chunk)})", (at_ms, *chunk))


def purge_job(conn: Conn, job_id: str) -> None:
    """Remove every row of a job; its files are removed by the caller, outside the transaction."""
    for table in ("events", "node_counts", "metrics", "log_metrics", "tasks", "attempts", "notifications",
                  "job_tags"):  # not its
        # queued messages: a job deleted right after it ended still has its end announced
        conn.execute(f"DELETE FROM {table} WHERE job_id = ?", (job_id,))
    conn.execute("DELETE FROM jobs WHERE id = ?", (job_id,))


def next_queue_seq(conn: Conn) -> int:
    return int(conn.execute("SELECT coalesce(max(queue_seq), 0) FROM jobs").fetchone()[0]) + 1


def open_attempt(conn: Conn, job_id: str, seq: int, task_rows: list[dict[str, Any]], master_port: int,
                 at_ms: int, start_type: str = "init_or_rescheduled") -> None:
    insert(conn, attempts, {"job_id": job_id, "seq": seq, "master_port": master_port, "start_type": start_type,
                            "opened_ms": at_ms})
    conn.execute("UPDATE jobs SET attempt = ? WHERE id = ?", (seq, job_id))
    for row in task_rows:
        insert(conn, tasks, {"job_id": job_id, "seq": seq, **row})


def set_task_gpus(conn: Conn, job_id: str, seq: int, gpus: dict[str, tuple[int, ...]]) -> None:
    """The GPUs the executor assigned (Ray's, for its reservation) in place of the scheduler's choice."""
    conn.executemany("UPDATE tasks SET gpus = ? WHERE job_id = ? AND seq = ? AND task = ?",
                     [(",".join(map(str, g)), job_id, seq, task) for task, g in gpus.items()])


def mark_attempt_started(conn: Conn, job_id: str, seq: int, start_at: int,
                         spawned: list[dict[str, Any]], at_ms: int) -> None:
    conn.execute("UPDATE attempts SET started = 1, start_at = ?, started_ms = ? WHERE job_id = ? AND seq = ?",
                 (start_at, at_ms, job_id, seq))
    conn.executemany("UPDATE tasks SET pid = ?, pid_start = ?, start_ms = ? WHERE job_id = ? AND seq = ? AND task = ?",
                     [(s["pid"], s["pid_start"], at_ms, job_id, seq, s["task"]) for s in spawned])


def record_task_exit(conn: Conn, job_id: str, seq: int, task: str, exit_code: int, message: str,
                     at_ms: int) -> bool:
    """Record a task's exit once; returns False when it was already recorded."""
    cur = conn.execute("UPDATE tasks SET exit_code = ?, message = ?, end_ms = ? "
                       "WHERE job_id = ? AND seq = ? AND task = ? AND exit_code IS NULL",
                       (exit_code, message, at_ms, job_id, seq, task))
    return cur.rowcount == 1


def close_attempt(conn: Conn, job_id: str, seq: int, at_ms: int, end_reason: str, related_task: str | None,
                  end_recover: str = "", before_downgrade: str = "",
                  recover_record: dict[str, Any] | None = None) -> bool:
    """Close an attempt once (its running record gets end_at and the reason); False if already closed."""
    records = [recover_record] if recover_record else []
    cur = conn.execute(
        "UPDATE attempts SET end_at = ?, end_ms = ?, end_reason = ?, end_related_task = ?, end_recover = ?, "
        "end_recover_before_downgrade = ?, recover_records = ? WHERE job_id = ? AND seq = ? AND end_ms = 0",
        (at_ms // 1000, at_ms, end_reason, related_task or "", end_recover, before_downgrade,
         orjson.dumps(records).decode(), job_id, seq))
    return cur.rowcount == 1


def finish_recover_record(conn: Conn, job_id: str, seq: int, at_s: int, result: str) -> None:
    """Stamp the end and result of the recovery that followed attempt `seq`."""
    row = conn.execute("SELECT recover_records FROM attempts WHERE job_id = ? AND seq = ?", (job_id, seq)).fetchone()
    if row is None:
        return
    records = orjson.loads(row[0])
    if records and "recover_end_at" not in records[-1]:
        records[-1].update(recover_end_at=at_s, recover_result=result)
        conn.execute("UPDATE attempts SET recover_records = ? WHERE job_id = ? AND seq = ?",
                     (orjson.dumps(records).decode(), job_id, seq))


def set_recovery_state(conn: Conn, job_id: str, state: RecoveryState) -> None:
    conn.execute("UPDATE jobs SET retries_used = ?, hang_restarts = ?, recover_tier = ?, pod_retries_used = ? "
                 "WHERE id = ?", (state.retries_used, state.hang_restarts, state.tier, state.pod_retries_used, job_id))


def mark_task_hung(conn: Conn, job_id: str, seq: int, task: str, at_ms: int) -> bool:
    cur = conn.execute("UPDATE tasks SET hung_ms = ? WHERE job_id = ? AND seq = ? AND task = ? AND hung_ms = 0 "
                       "AND exit_code IS NULL", (at_ms, job_id, seq, task))
    return cur.rowcount == 1


def add_fence(conn: Conn, node: str, until_ms: int, job_id: str, reason: str) -> None:
    insert(conn, fences, {"node": node, "until_ms": until_ms, "job_id": job_id, "reason": reason})


def drop_unstarted_attempt(conn: Conn, job_id: str, seq: int) -> None:
    """Forget an attempt whose workers never all started (the server died while spawning them)."""
    conn.execute("DELETE FROM tasks WHERE job_id = ? AND seq = ?", (job_id, seq))
    conn.execute("DELETE FROM attempts WHERE job_id = ? AND seq = ?", (job_id, seq))
    conn.execute("UPDATE jobs SET attempt = ? WHERE id = ?", (seq - 1, job_id))


def add_node_count(conn: Conn, job_id: str, at_ms: int, count: int) -> None:
    insert(conn, node_counts, {"job_id": job_id, "time_ms": at_ms, "count": count})


def add_metric_samples(conn: Conn, samples: list[tuple[str, str, int, float, float]]) -> None:
    """(job_id, task, minute, cpu%, mem%) samples, folded into per-minute sums."""
    for job_id, task, minute, cpu, mem in samples:
        cur = conn.execute("UPDATE metrics SET cpu_sum = cpu_sum + ?, mem_sum = mem_sum + ?, samples = samples + 1 "
                           "WHERE job_id = ? AND task = ? AND minute = ?", (cpu, mem, job_id, task, minute))
        if cur.rowcount == 0:
            insert(conn, metrics, {"job_id": job_id, "task": task, "minute": minute, "cpu_sum": cpu,
                                   "mem_sum": mem, "samples": 1})


def mark_task_oom(conn: Conn, job_id: str, seq: int, task: str, at_ms: int, reason: str) -> bool:
    """Record that a running task's processes went over its flavor's memory (the sampler kills them
    next), so that its end is classified as out of memory; False when already marked or ended."""
    cur = conn.execute("UPDATE tasks SET oom_ms = ?, oom_reason = ? WHERE job_id = ? AND seq = ? AND task = ? "
                       "AND oom_ms = 0 AND exit_code IS NULL", (at_ms, reason, job_id, seq, task))
    return cur.rowcount == 1
