"""Every write to the store. `transition()` is the only writer of a job's phase.

All functions take an open connection inside a transaction (`engine.begin()`); none does I/O
outside the database.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

import orjson
from sqlalchemy import Connection, delete, func, insert, select, update
from sqlalchemy.exc import IntegrityError

from openarts.core import errors
from openarts.core.faults import RecoveryState
from openarts.core.phases import DEFAULT_SECONDARY, Phase, Secondary, can_transition
from openarts.core.spec import JobSpec
from openarts.store.schema import attempts, events, fences, jobs, metrics, node_counts, quotas, tasks

# Columns transition() may set beside the phase.
_TRANSITION_FIELDS = frozenset({"start_ms", "end_ms", "running_since_ms", "run_ms", "message", "queue_seq"})


def now_ms() -> int:
    return int(time.time() * 1000)


class IllegalTransition(errors.OpenartsError):
    """A caller asked for a move that core.phases does not allow: a bug, never user input."""


def create_job(conn: Connection, job_id: str, project_id: str, user_name: str, spec: JobSpec,
               doc: dict[str, Any], at_ms: int) -> None:
    """Insert a new job in phase Creating, with its 'created' event."""
    try:
        conn.execute(insert(jobs).values(
            id=job_id, project_id=project_id, workspace_id=spec.workspace_id, name=spec.name,
            kind="job", description=spec.description, user_name=user_name, create_ms=at_ms,
            update_ms=at_ms, phase=Phase.CREATING.value, secondary_phase=Secondary.CREATING.value,
            flavor_id=spec.flavor.flavor_id, node_count=spec.node_count, pool_id=spec.pool_id,
            priority=spec.priority, preemptible=spec.preemptible, engine_id=spec.engine.engine_id,
            request=orjson.dumps(spec.request).decode(), doc=orjson.dumps(doc).decode(),
        ))
    except IntegrityError as exc:
        raise errors.DuplicateJobName(f"Training job name {spec.name!r} already exists.") from exc
    add_event(conn, job_id, f"Training job {spec.name} created.", at_ms)


def transition(
    conn: Connection,
    job_id: str,
    expected: Phase,
    to: Phase,
    *,
    at_ms: int,
    secondary: Secondary | None = None,
    event: str | None = None,
    level: str = "Info",
    **fields: Any,
) -> bool:
    """Compare-and-set the phase: moves `job_id` from `expected` to `to` and records an event.

    Returns False (and changes nothing) when the job is no longer in `expected`. `expected == to`
    changes only the secondary phase (e.g. Pending/Queuing with a new reason).
    """
    if expected != to and not can_transition(expected, to):
        raise IllegalTransition(f"{expected} -> {to} is not an allowed transition")
    unknown = set(fields) - _TRANSITION_FIELDS
    if unknown:
        raise IllegalTransition(f"transition() cannot set {sorted(unknown)}")
    sec = secondary or DEFAULT_SECONDARY[to]
    result = conn.execute(
        update(jobs)
        .where(jobs.c.id == job_id, jobs.c.phase == expected.value)
        .values(phase=to.value, secondary_phase=sec.value, update_ms=at_ms, **fields)
    )
    if result.rowcount != 1:
        return False
    if event is None:
        event = f"Job phase changed from {expected} to {to}" + (f" ({sec})" if sec.value != to.value else "")
    add_event(conn, job_id, event, at_ms, level=level)
    return True


def add_event(conn: Connection, job_id: str, message: str, at_ms: int, *, level: str = "Info",
              source: str = "Job") -> None:
    conn.execute(insert(events).values(job_id=job_id, time_ms=at_ms, level=level, source=source,
                                       message=message))


def set_description(conn: Connection, job_id: str, description: str, at_ms: int) -> None:
    conn.execute(update(jobs).where(jobs.c.id == job_id).values(description=description, update_ms=at_ms))


def set_priority(conn: Connection, job_id: str, priority: int, at_ms: int) -> None:
    conn.execute(update(jobs).where(jobs.c.id == job_id).values(priority=priority, update_ms=at_ms))


def request_terminate(conn: Connection, job_id: str, at_ms: int, reason: str = "") -> None:
    """Record the intent to terminate; `reason` empty means the user asked (else e.g. auto_stop)."""
    conn.execute(update(jobs).where(jobs.c.id == job_id).values(terminate_requested=True, terminate_reason=reason,
                                                                update_ms=at_ms))
    add_event(conn, job_id, f"Termination requested: {reason}." if reason else "Termination requested by the user.",
              at_ms)


def request_preempt(conn: Connection, job_id: str, by_job: str, at_ms: int) -> bool:
    result = conn.execute(update(jobs).where(jobs.c.id == job_id, jobs.c.preempt_requested.is_(False))
                          .values(preempt_requested=True, preempt_ms=at_ms, preempted_by=by_job))
    if result.rowcount == 1:
        add_event(conn, job_id, f"Preempted by higher-priority job {by_job}: stopping its workers.", at_ms,
                  level="Warning", source="Scheduler")
        return True
    return False


def clear_preempt(conn: Connection, job_id: str) -> None:
    conn.execute(update(jobs).where(jobs.c.id == job_id).values(preempt_requested=False, preempt_ms=0,
                                                                preempted_by=""))


def set_quota(conn: Connection, project_id: str, resource: str, quota: int) -> None:
    conn.execute(delete(quotas).where(quotas.c.project_id == project_id, quotas.c.resource == resource))
    if quota >= 0:
        conn.execute(insert(quotas).values(project_id=project_id, resource=resource, quota=quota))


def request_delete(conn: Connection, job_ids: Iterable[str], at_ms: int) -> None:
    ids = list(job_ids)
    conn.execute(update(jobs).where(jobs.c.id.in_(ids)).values(
        delete_requested=True, terminate_requested=True, update_ms=at_ms))


def purge_job(conn: Connection, job_id: str) -> None:
    """Remove every row of a job; its files are removed by the caller, outside the transaction."""
    for table in (events, node_counts, metrics, tasks, attempts):
        conn.execute(delete(table).where(table.c.job_id == job_id))
    conn.execute(delete(jobs).where(jobs.c.id == job_id))


def next_queue_seq(conn: Connection) -> int:
    return int(conn.execute(select(func.coalesce(func.max(jobs.c.queue_seq), 0))).scalar_one()) + 1


def open_attempt(conn: Connection, job_id: str, seq: int, task_rows: list[dict[str, Any]], master_port: int,
                 at_ms: int, start_type: str = "init_or_rescheduled") -> None:
    conn.execute(insert(attempts).values(job_id=job_id, seq=seq, master_port=master_port,
                                         start_type=start_type, opened_ms=at_ms))
    conn.execute(update(jobs).where(jobs.c.id == job_id).values(attempt=seq))
    for row in task_rows:
        conn.execute(insert(tasks).values(job_id=job_id, seq=seq, **row))


def mark_attempt_started(conn: Connection, job_id: str, seq: int, start_at: int,
                         spawned: list[dict[str, Any]], at_ms: int) -> None:
    conn.execute(update(attempts).where(attempts.c.job_id == job_id, attempts.c.seq == seq)
                 .values(started=True, start_at=start_at, started_ms=at_ms))
    for s in spawned:
        conn.execute(update(tasks).where(tasks.c.job_id == job_id, tasks.c.seq == seq,
                                         tasks.c.task == s["task"])
                     .values(pid=s["pid"], pid_start=s["pid_start"], start_ms=at_ms))


def record_task_exit(conn: Connection, job_id: str, seq: int, task: str, exit_code: int, message: str,
                     at_ms: int) -> bool:
    """Record a task's exit once; returns False when it was already recorded."""
    result = conn.execute(
        update(tasks)
        .where(tasks.c.job_id == job_id, tasks.c.seq == seq, tasks.c.task == task,
               tasks.c.exit_code.is_(None))
        .values(exit_code=exit_code, message=message, end_ms=at_ms)
    )
    return result.rowcount == 1


def close_attempt(conn: Connection, job_id: str, seq: int, at_ms: int, end_reason: str, related_task: str | None,
                  end_recover: str = "", before_downgrade: str = "",
                  recover_record: dict[str, Any] | None = None) -> bool:
    """Close an attempt once (its running record gets end_at and the reason); False if already closed."""
    records = [recover_record] if recover_record else []
    result = conn.execute(
        update(attempts)
        .where(attempts.c.job_id == job_id, attempts.c.seq == seq, attempts.c.end_ms == 0)
        .values(end_at=at_ms // 1000, end_ms=at_ms, end_reason=end_reason, end_related_task=related_task or "",
                end_recover=end_recover, end_recover_before_downgrade=before_downgrade,
                recover_records=orjson.dumps(records).decode())
    )
    return result.rowcount == 1


def finish_recover_record(conn: Connection, job_id: str, seq: int, at_s: int, result: str) -> None:
    """Stamp the end and result of the recovery that followed attempt `seq`."""
    row = conn.execute(select(attempts.c.recover_records).where(attempts.c.job_id == job_id,
                                                                attempts.c.seq == seq)).first()
    if row is None:
        return
    records = orjson.loads(row.recover_records)
    if records and "recover_end_at" not in records[-1]:
        records[-1].update(recover_end_at=at_s, recover_result=result)
        conn.execute(update(attempts).where(attempts.c.job_id == job_id, attempts.c.seq == seq)
                     .values(recover_records=orjson.dumps(records).decode()))


def set_recovery_state(conn: Connection, job_id: str, state: RecoveryState) -> None:
    conn.execute(update(jobs).where(jobs.c.id == job_id).values(
        retries_used=state.retries_used, hang_restarts=state.hang_restarts, recover_tier=state.tier,
        pod_retries_used=state.pod_retries_used))


def mark_task_hung(conn: Connection, job_id: str, seq: int, task: str, at_ms: int) -> bool:
    result = conn.execute(update(tasks).where(tasks.c.job_id == job_id, tasks.c.seq == seq, tasks.c.task == task,
                                              tasks.c.hung_ms == 0, tasks.c.exit_code.is_(None))
                          .values(hung_ms=at_ms))
    return result.rowcount == 1


def add_fence(conn: Connection, node: str, until_ms: int, job_id: str, reason: str) -> None:
    conn.execute(insert(fences).values(node=node, until_ms=until_ms, job_id=job_id, reason=reason))


def drop_unstarted_attempt(conn: Connection, job_id: str, seq: int) -> None:
    """Forget an attempt whose workers never all started (the server died while spawning them)."""
    conn.execute(delete(tasks).where(tasks.c.job_id == job_id, tasks.c.seq == seq))
    conn.execute(delete(attempts).where(attempts.c.job_id == job_id, attempts.c.seq == seq))
    conn.execute(update(jobs).where(jobs.c.id == job_id).values(attempt=seq - 1))


def add_node_count(conn: Connection, job_id: str, at_ms: int, count: int) -> None:
    conn.execute(insert(node_counts).values(job_id=job_id, time_ms=at_ms, count=count))


def add_metric_samples(conn: Connection, samples: list[tuple[str, str, int, float, float]]) -> None:
    """(job_id, task, minute, cpu%, mem%) samples, folded into per-minute sums."""
    for job_id, task, minute, cpu, mem in samples:
        result = conn.execute(
            update(metrics)
            .where(metrics.c.job_id == job_id, metrics.c.task == task, metrics.c.minute == minute)
            .values(cpu_sum=metrics.c.cpu_sum + cpu, mem_sum=metrics.c.mem_sum + mem,
                    samples=metrics.c.samples + 1)
        )
        if result.rowcount == 0:
            conn.execute(insert(metrics).values(job_id=job_id, task=task, minute=minute, cpu_sum=cpu,
                                                mem_sum=mem, samples=1))
