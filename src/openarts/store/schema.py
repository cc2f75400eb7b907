"""SQLAlchemy Core tables. Times: *_ms columns are epoch milliseconds, *_at columns epoch seconds."""

from __future__ import annotations

from sqlalchemy import (
    Boolean,
    Column,
    Float,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    and_,
    literal_column,
)

metadata = MetaData()

jobs = Table(
    "jobs", metadata,
    Column("id", String(36), primary_key=True),
    Column("project_id", String(64), nullable=False),
    Column("workspace_id", String(64), nullable=False, default="0"),
    Column("name", String(64), nullable=False),
    Column("kind", String(16), nullable=False, default="job"),
    Column("description", Text, nullable=False, default=""),
    Column("user_name", String(128), nullable=False, default=""),
    Column("create_ms", Integer, nullable=False),
    Column("update_ms", Integer, nullable=False),
    Column("phase", String(16), nullable=False),
    Column("secondary_phase", String(32), nullable=False),
    Column("start_ms", Integer, nullable=False, default=0),  # first time it ran
    Column("end_ms", Integer, nullable=False, default=0),
    Column("running_since_ms", Integer, nullable=False, default=0),  # current attempt, 0 if not running
    Column("run_ms", Integer, nullable=False, default=0),  # running time of finished attempts
    Column("flavor_id", String(128), nullable=False),
    Column("node_count", Integer, nullable=False),
    Column("pool_id", String(128), nullable=False),
    Column("priority", Integer, nullable=False, default=1),
    Column("preemptible", Boolean, nullable=False, default=False),
    Column("engine_id", String(128), nullable=False, default=""),
    Column("request", Text, nullable=False),  # normalised create body (JSON), parsed again to run
    Column("doc", Text, nullable=False),  # the static parts of the job document (JSON)
    Column("message", Text, nullable=False, default=""),
    Column("terminate_requested", Boolean, nullable=False, default=False),
    Column("terminate_reason", Text, nullable=False, default=""),  # e.g. auto_stop; empty: the user
    Column("preempt_requested", Boolean, nullable=False, default=False),
    Column("preempt_ms", Integer, nullable=False, default=0),
    Column("preempted_by", String(36), nullable=False, default=""),
    Column("delete_requested", Boolean, nullable=False, default=False),
    Column("attempt", Integer, nullable=False, default=0),  # seq of the latest attempt
    Column("queue_seq", Integer, nullable=False, default=0),  # FIFO order among pending jobs
    # fault tolerance (core/faults.py RecoveryState), kept here so that budgets survive the server
    Column("retries_used", Integer, nullable=False, default=0),
    Column("hang_restarts", Integer, nullable=False, default=0),
    Column("recover_tier", Integer, nullable=False, default=-1),
    Column("pod_retries_used", Integer, nullable=False, default=0),
    # a trial's search job (core/search.py, v6); '' for every other job. Trials are real jobs, kept out
    # of the project's list, counts and names (LIVE): a search's document and trial operations show them
    Column("parent_id", String(36), nullable=False, default=""),
    # the training experiment the job belongs to (store/experiments.py, v6); '' for none
    Column("experiment_id", String(36), nullable=False, default=""),
    # the algorithm the job was made from (algorithm.id or a subscribed version's; store/algorithms.py, v6)
    Column("algorithm_id", String(36), nullable=False, default=""),
    # a heterogeneous job's roles, [[role, flavor_id, node_count], ...] (core/roles.py, v7); '' for a plain
    # job, whose one role is worker: flavor_id x node_count
    Column("roles", Text, nullable=False, default=""),
)
# the supervisor's columns: all but the large JSON ones (request, doc), which read as '' (store/queries.py)
LIGHT_COLUMNS = ", ".join(f"'' AS {c.name}" if c.name in ("request", "doc") else c.name for c in jobs.c)
# The jobs a project's list shows: not being deleted, not a search's trial. Every query that wants the
# partial indexes below repeats LIVE_SQL word for word (SQLite matches a partial index's WHERE by its terms).
LIVE_SQL = "delete_requested IS 0 AND parent_id = ''"
LIVE = and_(jobs.c.delete_requested.is_(False), jobs.c.parent_id == literal_column("''"))
# A name is unique among a project's listed jobs (a trial's name is its search's, with a suffix).
Index("uq_jobs_project_name", jobs.c.project_id, jobs.c.name, unique=True, sqlite_where=LIVE)
Index("ix_jobs_phase", jobs.c.phase)
Index("ix_jobs_queue_seq", jobs.c.queue_seq)
Index("ix_jobs_deleting", jobs.c.delete_requested, sqlite_where=jobs.c.delete_requested.is_(True))
# An experiment's jobs (its job count, a search's experiment_id filter). Not partial: `experiment_id = ?`
# does not imply `experiment_id != ''` to SQLite's planner.
Index("ix_jobs_experiment", jobs.c.experiment_id)
Index("ix_jobs_algorithm", jobs.c.algorithm_id)  # is an algorithm in use (store/algorithms.py jobs_using)
# Searches and the console's job list (store/queries.py search_jobs), v5: a project's live jobs in each
# sort order, alone and within one phase, ending with the id that breaks ties, so that a page is an
# index walk whatever its depth (an offset is skipped in the index). Phase and name ride along: a phase
# filter and a name search are checked in the index, not in the job's row. Partial (live jobs only):
# SQLite uses them for a query that repeats `delete_requested IS 0`. By name, the unique index above
# serves (a name is unique there, so no tie).
SEARCH_INDEXES: dict[str, tuple[str, ...]] = {
    "ix_jobs_live_create": ("project_id", "create_ms", "id", "phase", "name"),
    "ix_jobs_live_update": ("project_id", "update_ms", "id", "phase", "name"),
    "ix_jobs_live_phase": ("project_id", "phase", "id", "name"),
    "ix_jobs_live_phase_create": ("project_id", "phase", "create_ms", "id", "name"),
    "ix_jobs_live_phase_update": ("project_id", "phase", "update_ms", "id", "name"),
    "ix_jobs_live_phase_name": ("project_id", "phase", "name", "id"),
}
for _name, _columns in SEARCH_INDEXES.items():
    Index(_name, *(jobs.c[c] for c in _columns), sqlite_where=LIVE)
RETIRED_INDEXES = ("ix_jobs_project_create", "ix_jobs_project_phase_create", "ix_jobs_search")  # dropped by v5

job_counts = Table(
    "job_counts", metadata,  # a project's live jobs in each phase, kept by COUNT_TRIGGERS (v5); n may be 0
    Column("project_id", String(64), primary_key=True),
    Column("phase", String(16), primary_key=True),
    Column("n", Integer, nullable=False),
    sqlite_with_rowid=False,
)
# Every write of a job's project, phase or deletion mark moves its count, in the writer's transaction
# (so a rollback takes it back): store/jobs.py's transition(), create_job(), request_delete() and
# purge_job(), and any bulk copy of rows. "Live" is the searches' `delete_requested IS 0`.
_ADD = ("INSERT INTO job_counts (project_id, phase, n) SELECT NEW.project_id, NEW.phase, 1 "
        "WHERE NEW.delete_requested IS 0 AND NEW.parent_id = '' "
        "ON CONFLICT (project_id, phase) DO UPDATE SET n = n + 1;")
_SUBTRACT = ("UPDATE job_counts SET n = n - 1 WHERE OLD.delete_requested IS 0 AND OLD.parent_id = '' "
             "AND (project_id, phase) = (OLD.project_id, OLD.phase);")
COUNT_TRIGGERS = (
    f"CREATE TRIGGER IF NOT EXISTS tr_job_counts_insert AFTER INSERT ON jobs BEGIN {_ADD} END",
    f"CREATE TRIGGER IF NOT EXISTS tr_job_counts_delete AFTER DELETE ON jobs BEGIN {_SUBTRACT} END",
    "CREATE TRIGGER IF NOT EXISTS tr_job_counts_update AFTER UPDATE OF project_id, phase, delete_requested, parent_id "
    "ON jobs WHEN OLD.project_id IS NOT NEW.project_id OR OLD.phase IS NOT NEW.phase "
    "OR OLD.delete_requested IS NOT NEW.delete_requested OR OLD.parent_id IS NOT NEW.parent_id "
    f"BEGIN {_SUBTRACT} {_ADD} END",
)

attempts = Table(
    "attempts", metadata,
    Column("job_id", String(36), primary_key=True),
    Column("seq", Integer, primary_key=True),
    Column("start_at", Integer, nullable=False, default=0),
    Column("end_at", Integer, nullable=False, default=0),
    Column("start_type", String(32), nullable=False, default="init_or_rescheduled"),
    Column("end_reason", Text, nullable=False, default=""),
    Column("end_related_task", String(64), nullable=False, default=""),
    Column("end_recover", String(64), nullable=False, default=""),
    Column("end_recover_before_downgrade", String(64), nullable=False, default=""),
    Column("recover_records", Text, nullable=False, default="[]"),
    Column("master_port", Integer, nullable=False, default=0),
    Column("started", Boolean, nullable=False, default=False),  # every worker was spawned
    Column("opened_ms", Integer, nullable=False, default=0),  # placed; preparing from here
    Column("started_ms", Integer, nullable=False, default=0),  # every worker spawned
    Column("end_ms", Integer, nullable=False, default=0),
)

tasks = Table(
    "tasks", metadata,
    Column("job_id", String(36), primary_key=True),
    Column("seq", Integer, primary_key=True),
    Column("task", String(64), primary_key=True),
    Column("idx", Integer, nullable=False),
    Column("node", String(128), nullable=False, default="local"),
    Column("ip", String(64), nullable=False, default="127.0.0.1"),
    Column("gpus", String(256), nullable=False, default=""),
    Column("pid", Integer, nullable=False, default=0),  # the shim's pid
    Column("pid_start", Float, nullable=False, default=0.0),  # its start time, against pid reuse
    Column("exit_code", Integer),
    Column("message", Text, nullable=False, default=""),
    Column("start_ms", Integer, nullable=False, default=0),
    Column("end_ms", Integer, nullable=False, default=0),
    Column("hung_ms", Integer, nullable=False, default=0),  # when hang detection marked it hung
    # when the metrics sampler found its processes over the flavor's memory and killed them (v3)
    Column("oom_ms", Integer, nullable=False, default=0),
    Column("oom_reason", Text, nullable=False, default=""),  # "out of memory: 812 MiB used, flavor limit ..."
    # CPU ids the worker is pinned to, "0,1" (like gpus); empty: not pinned (v3)
    Column("cpus", Text, nullable=False, default=""),
)

fences = Table(
    "fences", metadata,  # nodes kept out of new placements (job_reschedule_with_taint)
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("node", String(128), nullable=False),
    Column("until_ms", Integer, nullable=False),
    Column("job_id", String(36), nullable=False),
    Column("reason", Text, nullable=False, default=""),
)

quotas = Table(
    "quotas", metadata,  # per-project limits; a missing row is unlimited
    Column("project_id", String(64), primary_key=True),
    Column("resource", String(64), primary_key=True),  # running_jobs | cpu_cores | gpus
    Column("quota", Integer, nullable=False),
)

events = Table(
    "events", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("job_id", String(36), nullable=False),
    Column("time_ms", Integer, nullable=False),
    Column("level", String(16), nullable=False, default="Info"),
    Column("source", String(32), nullable=False, default="Job"),
    Column("message", Text, nullable=False),
)
Index("ix_events_job", events.c.job_id, events.c.id)

node_counts = Table(
    "node_counts", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("job_id", String(36), nullable=False),
    Column("time_ms", Integer, nullable=False),
    Column("count", Integer, nullable=False),
)
Index("ix_node_counts_job", node_counts.c.job_id, node_counts.c.id)

metrics = Table(
    "metrics", metadata,
    Column("job_id", String(36), primary_key=True),
    Column("task", String(64), primary_key=True),
    Column("minute", Integer, primary_key=True),  # epoch minute
    Column("cpu_sum", Float, nullable=False, default=0.0),
    Column("mem_sum", Float, nullable=False, default=0.0),
    Column("samples", Integer, nullable=False, default=0),
)

notifications = Table(
    "notifications", metadata,  # a job's spec.notification (core/notify.py); no row: none
    Column("job_id", String(36), primary_key=True),
    Column("topic_urn", Text, nullable=False),
    Column("events", Text, nullable=False),  # the events announced (core/notify.py EVENTS), comma-separated
)

outbox = Table(
    "outbox", metadata,  # notifications queued by transition(), until delivered (supervisor/notifier.py)
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("job_id", String(36), nullable=False),
    Column("topic_urn", Text, nullable=False),
    Column("payload", Text, nullable=False),  # the JSON body posted
    Column("tries", Integer, nullable=False, default=0),
    Column("next_ms", Integer, nullable=False),  # not before
    Column("last_error", Text, nullable=False, default=""),
)
Index("ix_outbox_next", outbox.c.next_ms)

trials = Table(
    "trials", metadata,  # a search's trials (core/search.py, supervisor/search.py; v6): one row per trial,
    # written with its job in one transaction, so a trial exists exactly once whatever the server does
    Column("search_id", String(36), primary_key=True),
    Column("number", Integer, primary_key=True),  # 0, 1, ...: its trial_id
    Column("job_id", String(36), nullable=False),  # the trial's own job (jobs.parent_id = search_id)
    Column("params", Text, nullable=False),  # JSON {name: value}: what its program got as --name=value
    Column("state", String(16), nullable=False, default="running"),  # core/search.py TrialState
    Column("value", Float),  # the objective's last value read; NULL: none yet
    Column("rewards", Text, nullable=False, default="{}"),  # JSON {reward name: last value}
    Column("history", Text, nullable=False, default="[]"),  # JSON [[log line, reward name, value], ...]
    Column("message", Text, nullable=False, default=""),  # unmatched rewards, bad captures, why it ended
    Column("exit_code", Integer),
    Column("create_ms", Integer, nullable=False),
    Column("end_ms", Integer, nullable=False, default=0),
    Column("stop_reason", Text, nullable=False, default=""),  # why the platform ends it early; '': it is not
)
Index("ix_trials_job", trials.c.job_id)

log_metrics = Table(
    "log_metrics", metadata,  # a job's custom metrics (v6): what its reward_attrs' regexes read from each
    # task's log of its current attempt (supervisor/log_metrics.py); replaced whole at every write
    Column("job_id", String(36), primary_key=True),
    Column("task", String(64), primary_key=True),
    Column("name", String(128), primary_key=True),  # the reward's name
    Column("last", Float),  # the last value read; NULL: none yet
    Column("values", Text, nullable=False, default="[]"),  # JSON [[log line, value], ...], in log order (capped)
    Column("message", Text, nullable=False, default=""),  # why a value could not be read (RewardScan's note)
)

experiments = Table(
    "experiments", metadata,  # a project's training experiments (core/experiments.py, store/experiments.py; v6)
    Column("id", String(36), primary_key=True),
    Column("project_id", String(64), nullable=False),
    Column("workspace_id", String(64), nullable=False, default="0"),
    Column("name", String(64), nullable=False),
    Column("description", Text, nullable=False, default=""),
    Column("create_ms", Integer, nullable=False),
    Column("update_ms", Integer, nullable=False),
    Column("job_seq", Integer, nullable=False, default=0),  # serial numbers given to its jobs so far
)
Index("uq_experiments_project_name", experiments.c.project_id, experiments.c.name, unique=True)

job_tags = Table(
    "job_tags", metadata,  # a job's TMS tags (core/tags.py, store/tags.py; v6): one row per key
    Column("job_id", String(36), primary_key=True),
    Column("key", String(128), primary_key=True),
    Column("value", String(255), nullable=False, default=""),
    sqlite_with_rowid=False,
)
Index("ix_job_tags_key_value", job_tags.c.key, job_tags.c.value)  # the jobs with a tag (filter, count)

algorithms = Table(
    "algorithms", metadata,  # a project's algorithms (core/algorithms.py, store/algorithms.py; v6)
    Column("id", String(36), primary_key=True),
    Column("project_id", String(64), nullable=False),
    Column("workspace_id", String(64), nullable=False, default="0"),
    Column("name", String(64), nullable=False),
    Column("description", Text, nullable=False, default=""),
    Column("ai_project", String(64), nullable=False, default=""),
    Column("user_name", String(128), nullable=False, default=""),
    Column("config", Text, nullable=False),  # JSON {job_config, resource_requirements, advanced_config}
    Column("subscription_id", String(36), nullable=False, default=""),  # '' until first published
    Column("create_ms", Integer, nullable=False),
    Column("update_ms", Integer, nullable=False),
)
Index("uq_algorithms_project_name", algorithms.c.project_id, algorithms.c.name, unique=True)

algorithm_versions = Table(
    "algorithm_versions", metadata,  # published, frozen versions of algorithms (openarts algorithms publish; v6)
    Column("item_version_id", String(36), primary_key=True),
    Column("subscription_id", String(36), nullable=False),
    Column("project_id", String(64), nullable=False),
    Column("algorithm_id", String(36), nullable=False),
    Column("version_num", Integer, nullable=False),  # 1, 2, ... in its subscription
    Column("name", String(64), nullable=False),  # the algorithm's name when published
    Column("config", Text, nullable=False),  # the algorithm's config when published
    Column("create_ms", Integer, nullable=False),
)
Index("ix_algorithm_versions_subscription", algorithm_versions.c.subscription_id)

schema_version = Table(
    "schema_version", metadata,
    Column("version", Integer, primary_key=True),
)
