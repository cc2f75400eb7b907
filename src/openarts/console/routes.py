"""Every route of the console, in matching order: the fixed paths under /console/{project_id}/jobs/
(new, rows) before pages.py's /jobs/{job_id}."""

from __future__ import annotations

from openarts.console.actions import ACTION_ROUTES
from openarts.console.joblist import JOBLIST_ROUTES
from openarts.console.pages import CONSOLE_ROUTES as PAGE_ROUTES
from openarts.console.queue import QUEUE_ROUTES

CONSOLE_ROUTES = [*ACTION_ROUTES, *JOBLIST_ROUTES, *QUEUE_ROUTES, *PAGE_ROUTES]
