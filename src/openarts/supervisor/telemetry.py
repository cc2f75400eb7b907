"""The supervisor's Prometheus metrics, served at /metrics (api/metrics.py).

They are created unregistered, and each server (an app) registers them in a registry of its own
(api/metrics.py), so that building a second app in one process raises no duplicate-name error; the
values are the process's, shared by such apps (one server per process outside tests). Counters only
count what this process did: a
restarted server starts them at zero, as Prometheus expects of a counter (`rate()` handles the reset).
The jobs by phase and the queue depth are read from the store at each scrape (service/telemetry.py).
"""

from __future__ import annotations

from prometheus_client import Counter, Histogram

# a pass is milliseconds when nothing waits on a remote node; seconds when one does
PASS_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
WAIT_BUCKETS = (0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 15.0, 60.0, 300.0, 900.0, 3600.0, 4 * 3600.0, 24 * 3600.0)

PASS_SECONDS = Histogram("openarts_scheduling_pass_seconds", "Duration of one reconcile pass (scheduling "
                         "included)", buckets=PASS_BUCKETS, registry=None)
QUEUE_WAIT = Histogram("openarts_queue_wait_seconds", "From a job's creation to its first placement",
                       buckets=WAIT_BUCKETS, registry=None)
STARTS = Counter("openarts_attempt_starts", "Attempts whose workers were started", registry=None)
FAILURES = Counter("openarts_attempt_failures", "Attempts that ended other than completed or terminated, "
                   "and starts that failed, by reason", ["reason"], registry=None)
FINISHED = Counter("openarts_jobs_finished", "Jobs that reached a final phase, by phase", ["phase"], registry=None)
RECOVERIES = Counter("openarts_recoveries", "Fault recoveries begun, by tier (docs/STATES.md)", ["tier"],
                     registry=None)
PREEMPTIONS = Counter("openarts_preemptions", "Running jobs sent back to the queue for a higher priority",
                      registry=None)
EXECUTOR_ERRORS = Counter("openarts_executor_errors", "Executor calls that failed, by operation", ["operation"],
                          registry=None)
RECONCILE_ERRORS = Counter("openarts_reconcile_errors", "A job's reconcile step that raised (logged)",
                           registry=None)
TRANSFERS = Counter("openarts_transfers", "Background transfers (staging, uploads) ended, by kind and outcome",
                    ["kind", "outcome"], registry=None)
TRANSFER_SECONDS = Histogram("openarts_transfer_seconds", "Duration of background transfers, by kind", ["kind"],
                             buckets=WAIT_BUCKETS, registry=None)

NOTIFICATIONS = Counter("openarts_notifications", "spec.notification messages, by outcome: delivered, retried "
                        "(a failed try), failed (given up), unroutable (no webhook)", ["outcome"], registry=None)

ALL = (PASS_SECONDS, QUEUE_WAIT, STARTS, FAILURES, FINISHED, RECOVERIES, PREEMPTIONS, EXECUTOR_ERRORS,
       RECONCILE_ERRORS, TRANSFERS, TRANSFER_SECONDS, NOTIFICATIONS)
