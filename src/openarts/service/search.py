"""The auto-search operations (hyperparameter search: a job of kind autosearch_job, core/search.py) and what
a search's document shows of its trials (service/document.py).

The algorithms and their YAML templates come from core/search.py's catalogue. A search's trials are read
from the store (store/trials.py), as the supervisor's search pass records them (supervisor/search.py);
early stop records the intent and wakes the supervisor, which ends the trial. The parameters' importance
is core/searchers.py's (run off the event loop); a parameter's sensitivity plot is an SVG drawn here,
saved under the search's directory and served by its own route. docs/API.md, "Auto search".
"""

from __future__ import annotations

import asyncio
import math
import os
import re
import sqlite3
from collections.abc import Callable, Mapping, Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape

import orjson
import yaml

from openarts.config import Settings
from openarts.core import errors
from openarts.core.inputs import query_int
from openarts.core.phases import TERMINABLE, Phase
from openarts.core.search import (
    ALGORITHMS,
    COMMON,
    SEARCH_KIND,
    Algorithm,
    Observation,
    Reward,
    SearchParam,
    SearchSpec,
    TrialState,
    algorithm_catalogue,
    search_of_request,
)
from openarts.core.searchers import importance
from openarts.store import jobs as w
from openarts.store import queries as q
from openarts.store import trials as st
from openarts.store.db import Database
from openarts.store.rows import JobRow, TrialRow

TEMPLATE_TYPE = ("search_algorithm", "搜索算法")  # (algorithm_type_en, algorithm_type_zh)
TRIALS_LIMIT, TRIALS_LIMIT_MAX = 10, 1000
USER_STOP = "stopped early by the user (autosearch-trial-earlystop)"
HISTORY_HEADER = ("line", "metric", "value")
ANALYSIS_HEADER = ("parameter", "importance", "best_value", "trials")
PENDING_PHASES = (Phase.CREATING, Phase.PENDING)
Conn = sqlite3.Connection
STATE_ORDER = (TrialState.RUNNING, TrialState.COMPLETED, TrialState.FAILED, TrialState.EARLY_STOPPED,
               TrialState.TIMEOUT, TrialState.TERMINATED)


# -- a search's spec and its trials as rows --------------------------------------------------------------


@lru_cache(maxsize=32)
def _spec_of_request(request: str) -> SearchSpec:
    return search_of_request(orjson.loads(request))


def search_spec(row: JobRow) -> SearchSpec:
    """The search a job of kind autosearch_job was created with (its stored request, validated at create)."""
    return _spec_of_request(row.request)


def _num(x: Any) -> str:
    """A metric or importance as the tables show it: 12 significant digits at most; '' for none."""
    return SearchParam.format(float(x)) if isinstance(x, int | float) and not isinstance(x, bool) else ""


def _ms(ms: int) -> str:
    return str(ms) if ms else ""


def _dict(text: str) -> dict[str, Any]:
    """A JSON object column ({} if it is anything else)."""
    try:
        value = orjson.loads(text) if text else {}
    except orjson.JSONDecodeError:
        value = {}
    return value if isinstance(value, dict) else {}


def _history(text: str) -> list[tuple[Any, str, Any]]:
    """A trial's `history` column: its [line, reward, value] entries."""
    try:
        value = orjson.loads(text) if text else []
    except orjson.JSONDecodeError:
        value = []
    return [(h[0], str(h[1]), h[2]) for h in value if isinstance(h, list) and len(h) == 3] if isinstance(
        value, list) else []


def trial_header(spec: SearchSpec) -> list[str]:
    return ["trial_id", "status", *(p.name for p in spec.params), *(r.name for r in spec.rewards), "job_id",
            "exit_code", "create_time", "end_time", "message"]


def trial_status(t: TrialRow, job_phase: str | None) -> str:
    """The trial's state; a running trial whose job waits for resources (Creating/Pending) is "pending"."""
    return "pending" if t.state == TrialState.RUNNING and job_phase in PENDING_PHASES else t.state


def trial_message(t: TrialRow) -> str:
    stopping = f"stopping: {t.stop_reason}" if t.state == TrialState.RUNNING and t.stop_reason else ""
    return "; ".join(m for m in (stopping, t.message) if m)


def trial_rewards(spec: SearchSpec, t: TrialRow) -> dict[str, Any]:
    """The last value of each reward (the objective's from `value` when the rewards lack it)."""
    rewards = _dict(t.rewards)
    if t.value is not None:
        rewards.setdefault(spec.objective.name, t.value)
    return rewards


def trial_cells(spec: SearchSpec, t: TrialRow, job_phase: str | None) -> list[str]:
    """One row of the trials table, under `trial_header(spec)`: every cell a string, '' for none."""
    params, rewards = _dict(t.params), trial_rewards(spec, t)
    return [str(t.number), trial_status(t, job_phase), *(str(params.get(p.name, "")) for p in spec.params),
            *(_num(rewards.get(r.name)) for r in spec.rewards), t.job_id,
            "" if t.exit_code is None else str(t.exit_code), _ms(t.create_ms), _ms(t.end_ms), trial_message(t)]


def history_rows(t: TrialRow) -> list[list[str]]:
    """A trial's metric history under HISTORY_HEADER: [log line, reward, value] in log order."""
    return [[str(line), name, _num(value)] for line, name, value in _history(t.history)]


def observations(spec: SearchSpec, trials: Sequence[TrialRow]) -> list[Observation]:
    """The trials as the search algorithms see them (core/searchers.py)."""
    out = []
    for t in trials:
        objective = tuple(float(v) for _, name, v in _history(t.history)
                          if name == spec.objective.name and isinstance(v, int | float))
        out.append(Observation(t.number, _dict(t.params), t.state, t.value, objective))
    return out


def best_trial(objective: Reward, trials: Sequence[TrialRow]) -> TrialRow | None:
    """The completed trial with the best value of the objective (the earliest of equals)."""
    best = None
    for t in trials:
        if t.state == TrialState.COMPLETED and t.value is not None and math.isfinite(t.value) and (
                best is None or best.value is None or objective.better(t.value, best.value)):
            best = t
    return best


def analysis_rows(spec: SearchSpec, trials: Sequence[TrialRow], importance: Mapping[str, float]) -> list[list[str]]:
    """One row per searched parameter under ANALYSIS_HEADER: its importance ('' when too few trials), its
    value in the best completed trial, and how many completed trials with a value gave it one."""
    done = [_dict(t.params) for t in trials if t.state == TrialState.COMPLETED and t.value is not None]
    best = best_trial(spec.objective, trials)
    best_params = _dict(best.params) if best is not None else {}
    return [[p.name, f"{importance[p.name]:.4f}" if p.name in importance else "",
             str(best_params.get(p.name, "")), str(sum(1 for d in done if p.name in d))] for p in spec.params]


# -- the sensitivity plot: an SVG written by hand ----------------------------------------------------------

W, H = 640, 420
LEFT, RIGHT, TOP, BOTTOM = 80, 24, 48, 72


def _bounds(xs: Sequence[float], lo: float | None = None, hi: float | None = None) -> tuple[float, float]:
    a = min([*xs, *([lo] if lo is not None else [])], default=0.0)
    b = max([*xs, *([hi] if hi is not None else [])], default=1.0)
    if a == b:
        pad = abs(a) * 0.1 or 0.5
        return a - pad, b + pad
    return a, b


def _text(x: float, y: float, s: str, anchor: str = "middle", extra: str = "") -> str:
    return f'<text x="{x:.1f}" y="{y:.1f}" text-anchor="{anchor}"{extra}>{escape(s[:64])}</text>'


def render_plot(param: SearchParam, objective: Reward, points: Sequence[tuple[int, str, float]],
                best: int | None) -> str:
    """A scatter of (parameter value, objective value), one point per (trial number, value, objective) in
    `points`, trial `best` highlighted. A parameter whose values are not all numbers is plotted by category
    (its discrete values' order), each category labelled; a number axis has its min and max labelled."""
    numeric = all(param.numeric(v) is not None for v in (*param.values, *(p[1] for p in points)))
    cats = list(dict.fromkeys([*param.values, *(p[1] for p in points)])) if not numeric else []
    xs = [(param.numeric(v) or 0.0) if numeric else float(cats.index(v)) for _, v, _ in points]
    ys = [y for _, _, y in points]
    if numeric:
        x0, x1 = _bounds(xs, *((param.lower, param.upper) if param.continuous else (None, None)))
    else:
        x0, x1 = -0.5, max(len(cats) - 0.5, 0.5)
    y0, y1 = _bounds(ys)
    pw, ph = W - LEFT - RIGHT, H - TOP - BOTTOM

    def px(x: float) -> float:
        return LEFT + (x - x0) / (x1 - x0) * pw

    def py(y: float) -> float:
        return TOP + ph - (y - y0) / (y1 - y0) * ph

    fmt = SearchParam.format
    title = f"{param.name}: {objective.name} ({objective.mode}) of {len(points)} completed trial(s)"
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" viewBox="0 0 {W} {H}" '
           'font-family="sans-serif" font-size="12">',
           f'<rect width="{W}" height="{H}" fill="white"/>', _text(W / 2, 24, title, extra=' font-size="14"'),
           f'<line x1="{LEFT}" y1="{TOP + ph}" x2="{LEFT + pw}" y2="{TOP + ph}" stroke="black"/>',
           f'<line x1="{LEFT}" y1="{TOP}" x2="{LEFT}" y2="{TOP + ph}" stroke="black"/>',
           _text(LEFT + pw / 2, H - 16, param.name),
           _text(18, TOP + ph / 2, objective.name, extra=f' transform="rotate(-90 18 {TOP + ph / 2:.1f})"'),
           _text(LEFT - 6, TOP + ph + 4, fmt(y0), "end"), _text(LEFT - 6, TOP + 4, fmt(y1), "end")]
    if numeric:
        out += [_text(LEFT, TOP + ph + 18, fmt(x0)), _text(LEFT + pw, TOP + ph + 18, fmt(x1))]
    else:
        step = max(1, math.ceil(len(cats) / 20))  # at most about 20 labels
        out += [_text(px(i), TOP + ph + 18, c[:16]) for i, c in enumerate(cats) if i % step == 0]
    if not points:
        out.append(_text(LEFT + pw / 2, TOP + ph / 2, "no completed trial with a value yet", extra=' fill="gray"'))
    for (number, value, y), x in zip(points, xs, strict=True):
        is_best = number == best
        tip = escape(f"trial-{number}: {param.name}={value}, {objective.name}={SearchParam.format(y)}")
        style = 'r="7" fill="#e4572e" stroke="black"' if is_best else 'r="4" fill="#2e86ab" fill-opacity="0.8"'
        out.append(f'<circle cx="{px(x):.1f}" cy="{py(y):.1f}" {style}><title>{tip}</title></circle>')
        if is_best:
            out.append(_text(px(x) + 10, py(y) - 10, f"best: trial-{number}", "start"))
    out.append("</svg>")
    return "\n".join(out) + "\n"


def plot_points(param: SearchParam, trials: Sequence[TrialRow]) -> list[tuple[int, str, float]]:
    out = []
    for t in trials:
        value = _dict(t.params).get(param.name)
        if t.state == TrialState.COMPLETED and t.value is not None and math.isfinite(t.value) and value is not None:
            out.append((t.number, str(value), t.value))
    return out


# -- YAML templates ------------------------------------------------------------------------------------

# A trial's program: its values arrive as --name=value; it prints the metric the reward's regex reads.
TEMPLATE_COMMAND = (
    "python -c \"import sys; a = dict(s[2:].split('=', 1) for s in sys.argv[1:] if s.startswith('--')); "
    "lr, bs = float(a['learning_rate']), int(a['batch_size']); "
    "[print('epoch=%d accuracy=%.4f' % (e, (1 - abs(lr - 0.01) * 5 - abs(bs - 32) / 256) * (e + 1) / 5), "
    "flush=True) for e in range(5)]\"")
FLAVOR_PLACEHOLDER = "<flavor_id: one of GET /v2/{project_id}/training-job-flavors>"


def template_document(algo: Algorithm) -> dict[str, Any]:
    """A complete create body of kind autosearch_job searching with `algo`: every parameter of the
    algorithm that has a default listed with it (a grid's budget is its whole grid: num_samples left out),
    one continuous and one discrete searched parameter, a reward read by regex, a runnable command."""
    options = [{"key": p.key, "value": p.default, "type": p.type} for p in (*algo.params, *COMMON)
               if p.default and not (algo.name == "grid_search" and p.key == "num_samples")]
    rate: dict[str, Any] = {"name": "learning_rate", "param_type": "continuous", "lower_bound": "0.0001",
                            "upper_bound": "0.1"}
    if algo.name == "grid_search":
        rate["discrete_points_num"] = "5"  # a grid needs points of a continuous parameter
    return {
        "kind": SEARCH_KIND,
        "metadata": {"name": f"{algo.name.replace('_', '-')}-example",
                     "description": f"Hyperparameter search with {algo.name}."},
        "algorithm": {
            "command": TEMPLATE_COMMAND,
            "parameters": [{"name": "learning_rate", "value": "0.01"}, {"name": "batch_size", "value": "32"}],
            "policies": {"auto_search": {
                "skip_search_params": "",
                "search_params": [rate, {"name": "batch_size", "param_type": "discrete",
                                         "discrete_values": ["16", "32", "64"]}],
                "reward_attrs": [{"name": "accuracy", "mode": "max", "regex": r"accuracy=([-+0-9.eE]+)"}],
                "algo_configs": [{"name": algo.name, "params": options}],
            }},
        },
        "spec": {"resource": {"flavor_id": FLAVOR_PLACEHOLDER, "node_count": 1}},
    }


def template_yaml(algo: Algorithm) -> str:
    head = (f"# {algo.name}: {algo.description}\n"
            "# Set spec.resource.flavor_id, then create the job from this document (as JSON: POST "
            "/v2/{project_id}/training-jobs).\n")
    return head + yaml.safe_dump(template_document(algo), sort_keys=False, allow_unicode=True, width=4096)


# -- the document of a search (service/document.py) -------------------------------------------------------


def _spec_or_none(row: JobRow) -> SearchSpec | None:
    try:
        return search_spec(row)
    except errors.OpenartsError:  # a stored request that no longer parses: shown without its search
        return None


def trial_task_status(spec: SearchSpec | None, t: TrialRow) -> dict[str, Any]:
    """A trial as one of the search's task statuses: "<state>: <reward>=<value> ...; <its message>"."""
    rewards = trial_rewards(spec, t) if spec is not None else _dict(t.rewards)
    names = [r.name for r in spec.rewards] if spec is not None else list(rewards)
    shown = " ".join(f"{n}={_num(rewards[n])}" for n in names if n in rewards)
    head = f"{t.state}: {shown}" if shown else t.state
    status: dict[str, Any] = {"task": f"trial-{t.number}"}
    if t.exit_code is not None:
        status["exit_code"] = t.exit_code
    status["message"] = "; ".join(m for m in (head, trial_message(t)) if m)
    return status


def search_annotations(spec: SearchSpec | None, trials: Sequence[TrialRow]) -> dict[str, str]:
    """Read-only annotations of a search's document: its trials by state, and its best trial so far."""
    counts = {s: sum(1 for t in trials if t.state == s) for s in STATE_ORDER}
    of = f" of {spec.budget}" if spec is not None else ""
    by_state = ", ".join(f"{n} {s.replace('_', ' ')}" for s, n in counts.items() if n)
    out = {"autosearch/trials": f"{len(trials)}{of} trials" + (f": {by_state}" if by_state else "")}
    best = best_trial(spec.objective, trials) if spec is not None else None
    if spec is not None and best is not None:
        params = _dict(best.params)
        values = ", ".join(f"{p.name}={params[p.name]}" for p in spec.params if p.name in params)
        out["autosearch/best-trial"] = f"trial-{best.number}: {spec.objective.name}={_num(best.value)} ({values})"
    return out


def search_status(row: JobRow, trials: Sequence[TrialRow]) -> tuple[list[str], list[dict[str, Any]], dict[str, str]]:
    """What a search's document shows of its trials: status.tasks, status.task_statuses, and annotations."""
    spec = _spec_or_none(row)
    return ([f"trial-{t.number}" for t in trials], [trial_task_status(spec, t) for t in trials],
            search_annotations(spec, trials))


# -- the operations ------------------------------------------------------------------------------------


class SearchService:
    def __init__(self, settings: Settings, db: Database, wake: Callable[[str | None], None],
                 importance: Callable[[SearchSpec, Sequence[Observation]], dict[str, float]] = importance) -> None:
        self.settings = settings
        self.db = db
        self.wake = wake
        self.importance = importance
        self._analyses = asyncio.Semaphore(1)

    # the catalogue
    def algorithms(self) -> dict[str, Any]:
        algos = algorithm_catalogue()
        return {"search_algo_count": len(algos), "search_algo_list": algos}

    def templates(self) -> dict[str, Any]:
        return {"yaml_templates": [{"algorithm_type_en": TEMPLATE_TYPE[0], "algorithm_type_zh": TEMPLATE_TYPE[1],
                                    "algorithm_names": list(ALGORITHMS)}]}

    def template(self, algorithm_type: str, algorithm_name: str) -> dict[str, Any]:
        if algorithm_type != TEMPLATE_TYPE[0]:
            raise errors.SearchAlgorithmNotFound(
                f"Unknown auto-search template type {algorithm_type[:64]!r}: the only type is {TEMPLATE_TYPE[0]!r} "
                "(GET /v2/{project_id}/training-jobs/autosearch/yaml-templates).")
        algo = ALGORITHMS.get(algorithm_name)
        if algo is None:
            raise errors.SearchAlgorithmNotFound(
                f"Unknown search algorithm {algorithm_name[:64]!r}: use one of {', '.join(ALGORITHMS)}.")
        return {"file_name": f"{algo.name}.yaml", "content": template_yaml(algo)}

    # a search's trials
    def _search(self, conn: Conn, project_id: str, job_id: str) -> JobRow:
        row = q.get_job(conn, project_id, job_id)
        if row.kind != SEARCH_KIND:
            raise errors.NotAutoSearchJob(job_id, row.kind)
        return row

    def _loaded(self, project_id: str, job_id: str) -> tuple[JobRow, SearchSpec, list[TrialRow]]:
        with self.db.connect() as conn:
            row = self._search(conn, project_id, job_id)
            trials = st.trials_of(conn, [row.id], histories=False)[row.id]
        return row, search_spec(row), trials

    @staticmethod
    def _trial(conn: Conn, row: JobRow, trial_id: str) -> TrialRow:
        found = st.trial(conn, row.id, int(trial_id)) if re.fullmatch(r"[0-9]{1,9}", trial_id) else None
        if found is None:
            raise errors.TrialNotFound(row.id, trial_id, len(st.trials_of(conn, [row.id], histories=False)[row.id]))
        return found

    def trials(self, project_id: str, job_id: str, limit_raw: str | None, offset_raw: str | None) -> dict[str, Any]:
        """A page of the trials: `offset` counts pages of `limit` trials (0: the first), as the SDK says."""
        limit = query_int("limit", limit_raw, TRIALS_LIMIT, 1, TRIALS_LIMIT_MAX) or TRIALS_LIMIT
        offset = query_int("offset", offset_raw, 0, 0, 10**9) or 0
        with self.db.connect() as conn:
            row = self._search(conn, project_id, job_id)
            trials = st.trials_of(conn, [row.id], histories=False)[row.id]
            page = trials[offset * limit:offset * limit + limit]
            jobs = st.jobs_of_trials(conn, [t.job_id for t in page if t.state == TrialState.RUNNING])
        spec = search_spec(row)
        data = [trial_cells(spec, t, jobs[t.job_id].phase if t.job_id in jobs else None) for t in page]
        return {"total": len(trials), "count": len(data), "limit": limit, "offset": offset, "group_by": "",
                "items": {"header": trial_header(spec), "data": data}}

    def trial(self, project_id: str, job_id: str, trial_id: str) -> dict[str, Any]:
        with self.db.connect() as conn:
            found = self._trial(conn, self._search(conn, project_id, job_id), trial_id)
        return {"header": list(HISTORY_HEADER), "data": history_rows(found)}

    def early_stop(self, project_id: str, job_id: str, trial_id: str) -> dict[str, Any]:
        """Record that the user stops a running trial: the supervisor terminates its job and ends the trial
        early stopped (supervisor/search.py). Asking again while it stops changes nothing."""
        now = w.now_ms()
        with self.db.begin() as conn:
            row = self._search(conn, project_id, job_id)
            found = self._trial(conn, row, trial_id)
            if found.state != TrialState.RUNNING:
                raise errors.JobStatusChanged(
                    f"Trial {found.number} of auto-search job (ID: {row.id}) is {found.state}: only a running "
                    "trial can be stopped early.")
            if st.request_stop(conn, row.id, found.number, USER_STOP):
                job = st.jobs_of_trials(conn, [found.job_id]).get(found.job_id)
                if job is not None and Phase(job.phase) in TERMINABLE and not job.terminate_requested:
                    w.request_terminate(conn, job.id, now, f"trial {found.number} {USER_STOP}")
                w.add_event(conn, row.id, f"Trial {found.number} is stopped early by the user.", now, source="Search")
        self.wake(found.job_id)
        return {"earlystop_trial": str(found.number)}

    # analysis
    async def analysis(self, project_id: str, job_id: str) -> dict[str, Any]:
        _row, spec, trials = self._loaded(project_id, job_id)
        async with self._analyses:  # one at a time: fANOVA takes up to a second or so, in a thread
            found = await asyncio.to_thread(self.importance, spec, observations(spec, trials))
        return {"header": list(ANALYSIS_HEADER), "data": analysis_rows(spec, trials, found)}

    def _param(self, spec: SearchSpec, job_id: str, name: str) -> SearchParam:
        param = next((p for p in spec.params if p.name == name), None)
        if param is None:
            raise errors.InvalidRequest(
                f"Invalid parameter parameter_name: {name[:64]!r} is not a searched parameter of auto-search job "
                f"(ID: {job_id}); its searched parameters: {', '.join(p.name for p in spec.params)}.")
        return param

    def plot_file(self, job_id: str, name: str) -> Path:
        return self.settings.job_dir(job_id) / "autosearch" / f"{name}.svg"

    def write_plot(self, project_id: str, job_id: str, name: str) -> Path:
        """Draw parameter `name`'s sensitivity plot over the completed trials and save it (replacing the last)."""
        row, spec, trials = self._loaded(project_id, job_id)
        param = self._param(spec, row.id, name)
        best = best_trial(spec.objective, trials)
        svg = render_plot(param, spec.objective, plot_points(param, trials), best.number if best else None)
        path = self.plot_file(row.id, param.name)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_text(svg, encoding="utf-8")
        tmp.replace(path)
        return path

    def analysis_plot(self, project_id: str, job_id: str, name: str) -> dict[str, Any]:
        """Parameter `name`'s plot, drawn now; `file_path` is the API path that serves it (plot())."""
        self.write_plot(project_id, job_id, name)
        return {"file_path": f"/v2/{project_id}/training-jobs/{job_id}/autosearch-parameter-analysis/{name}/plot.svg"}

    def plot(self, project_id: str, job_id: str, name: str) -> Path:
        """The saved plot of parameter `name` (drawn now if it never was)."""
        row, spec, _trials = self._loaded(project_id, job_id)
        path = self.plot_file(row.id, self._param(spec, row.id, name).name)
        return path if path.is_file() else self.write_plot(project_id, job_id, name)
