"""Hyperparameter search (a job of kind `autosearch_job`): the search its `algorithm.policies.auto_search`
describes, and the algorithms a search may use, with their parameters.

`parse_search` validates the block at create (and again when a stored request is read: it is pure) and
returns a `SearchSpec`: the searched parameters (continuous ranges, optionally cut into
`discrete_points_num` points, or discrete values), the rewards read from each trial's log by regex (the
first is the objective), the algorithm with every one of its parameters given or defaulted, the trial
budget and parallelism. The supervisor (supervisor/search.py) runs trials as jobs of their own; the
algorithms themselves are libraries behind core/searchers.py. docs/AUTOSEARCH.md.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import regex as rx

from openarts.core import errors

SEARCH_KIND = "autosearch_job"
MAX_SEARCH_PARAMS = 64
MAX_REWARDS = 16
MAX_VALUES = 1000  # discrete values, or points of a continuous parameter
MAX_GRID = 10_000
MAX_BUDGET = 10_000
MAX_PARALLEL = 64
MAX_REGEX = 1024
NAME_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")  # as a hyperparameter's name (core/spec.py)


def _bad(path: str, why: str) -> errors.InvalidRequest:
    return errors.InvalidRequest(f"Invalid parameter {path}: {why}.")


@dataclass(frozen=True)
class SearchParam:
    """One searched hyperparameter. Continuous: [lower, upper], or `points` values evenly spread over it
    (discrete_points_num); discrete: `values`, as given. What a trial's program gets is a string."""
    name: str
    continuous: bool
    lower: float = 0.0
    upper: float = 0.0
    points: int = 0
    values: tuple[str, ...] = ()

    @property
    def choices(self) -> tuple[str, ...]:
        """The finite set of values the parameter takes: the discrete values, or the continuous points;
        () for a real range."""
        if not self.continuous:
            return self.values
        if not self.points:
            return ()
        if self.points == 1:
            return (self.format(self.lower),)
        step = (self.upper - self.lower) / (self.points - 1)
        return tuple(self.format(self.lower + i * step if i < self.points - 1 else self.upper)
                     for i in range(self.points))

    @staticmethod
    def format(x: float) -> str:
        """A continuous value as its trial's program sees it: the shortest form that reads back the same
        at 12 significant digits (0.1, not 0.10000000000000001; 1e-05)."""
        return f"{x:.12g}"

    def numeric(self, value: str) -> float | None:
        """A value of this parameter as a number (for plots and analysis); None for a non-numeric one."""
        try:
            v = float(value)
        except ValueError:
            return None
        return v if math.isfinite(v) else None


@dataclass(frozen=True)
class Reward:
    """A metric read from a trial's log: the last match of `regex` (its first group if it has groups,
    else the whole match) read as a number. `mode` max or min. The pattern is compiled by the `regex`
    package (the `re` syntax), whose matching takes a timeout: a user's pattern that backtracks
    catastrophically on some line is stopped, not left to hold a thread."""
    name: str
    mode: str
    regex: str
    pattern: rx.Pattern[str] = field(compare=False, repr=False)

    @property
    def maximize(self) -> bool:
        return self.mode == "max"

    def read(self, line: str, timeout: float | None = None) -> tuple[str, float | None] | None:
        """The last match on `line`: (the text captured, its value or None when it is not a finite
        number); None when the line does not match. TimeoutError past `timeout` seconds."""
        last = None
        for m in self.pattern.finditer(line, timeout=timeout, concurrent=True):  # the GIL released while it runs
            last = m
        if last is None:
            return None
        text = next((g for g in last.groups() if g is not None), None) if last.groups() else last.group(0)
        text = (text or "").strip()
        try:
            value: float | None = float(text)
        except ValueError:
            value = None
        if value is not None and not math.isfinite(value):
            value = None
        return text[:64], value

    def better(self, a: float, b: float) -> bool:
        """Is `a` better than `b`?"""
        return a > b if self.maximize else a < b


@dataclass(frozen=True)
class AlgoParam:
    key: str
    type: str  # int | float | str, as AutoSearchAlgoConfigParameter.type says it
    default: str  # "" : none
    description: str
    choices: tuple[str, ...] = ()
    lo: float | None = None
    hi: float | None = None


@dataclass(frozen=True)
class Algorithm:
    name: str
    description: str
    params: tuple[AlgoParam, ...]  # its own, after the COMMON ones
    library: str  # what runs it (core/searchers.py)


COMMON: tuple[AlgoParam, ...] = (
    AlgoParam("num_samples", "int", "10", "Trials to run (the budget). A grid's default is the whole grid.",
              lo=1, hi=MAX_BUDGET),
    AlgoParam("max_concurrent_num", "int", "1", "Trials that may run at once.", lo=1, hi=MAX_PARALLEL),
    AlgoParam("seed", "int", "", "Makes the search reproducible; by default one is derived from the job id.",
              lo=0, hi=2**31 - 1),
    AlgoParam("trial_timeout", "int", "0", "Seconds a trial may run before it is ended and recorded as timed "
              "out; 0: no limit.", lo=0, hi=10**7),
    AlgoParam("early_stop", "str", "none", "Ends hopeless trials: 'median' stops a trial whose objective is "
              "worse than the median of earlier trials at the same step (Optuna's MedianPruner).",
              choices=("none", "median")),
    AlgoParam("early_stop_startup_trials", "int", "3", "Trials that end before early stopping begins.",
              lo=0, hi=MAX_BUDGET),
    AlgoParam("early_stop_warmup_steps", "int", "0", "Reports (metric lines) of a trial before it may be "
              "stopped early.", lo=0, hi=10**6),
)

ALGORITHMS: dict[str, Algorithm] = {a.name: a for a in (
    Algorithm("bayes_opt_search", "Bayesian optimisation: a Gaussian-process model of the objective and an "
              "acquisition function (upper confidence bound, expected improvement or probability of "
              "improvement).", (
                  AlgoParam("kind", "str", "ucb", "Acquisition function: ucb, ei or poi.", ("ucb", "ei", "poi")),
                  AlgoParam("kappa", "float", "2.576", "ucb: exploration weight.", lo=0, hi=1e6),
                  AlgoParam("xi", "float", "0.0", "ei and poi: the improvement sought.", lo=0, hi=1e6),
              ), "bayesian-optimization"),
    Algorithm("tpe_search", "Tree-structured Parzen estimator: models good and bad trials apart and samples "
              "where good ones are likely.", (
                  AlgoParam("n_initial_points", "int", "20", "Random trials before the model is used.",
                            lo=0, hi=MAX_BUDGET),
                  AlgoParam("gamma", "float", "0.25", "Share of the trials taken as good (hyperopt's gamma: "
                            "ceil(gamma * sqrt(n)) of n trials, at most 25).", lo=1e-6, hi=1),
              ), "optuna"),
    Algorithm("anneal_search", "Simulated annealing around the best trials so far (hyperopt's anneal).", (
        AlgoParam("avg_best_idx", "float", "2.0", "Mean rank of the trial the next one starts from (an "
                  "exponential distribution over the best trials).", lo=1e-6, hi=1e6),
        AlgoParam("shrink_coef", "float", "0.1", "How fast the neighbourhood searched shrinks with the "
                  "trials run.", lo=1e-6, hi=1e6),
    ), "hyperopt"),
    Algorithm("random_search", "Random search: each trial's values drawn independently.", (), "optuna"),
    Algorithm("grid_search", "Grid search: every combination of the parameters' values, in order (a "
              "continuous parameter needs discrete_points_num).", (), "openarts"),
)}


@dataclass(frozen=True)
class SearchSpec:
    params: tuple[SearchParam, ...]
    rewards: tuple[Reward, ...]  # rewards[0] is the objective
    skip: tuple[str, ...]
    algorithm: str
    options: Mapping[str, int | float | str]  # every parameter of the algorithm, given or defaulted
    budget: int
    parallel: int
    seed: int | None
    trial_timeout_s: int
    early_stop: str
    early_stop_startup_trials: int
    early_stop_warmup_steps: int

    @property
    def objective(self) -> Reward:
        return self.rewards[0]

    def grid(self) -> list[dict[str, str]]:
        """Every combination, the first parameter varying slowest (grid_search)."""
        combos: list[dict[str, str]] = [{}]
        for p in self.params:
            combos = [{**c, p.name: v} for c in combos for v in p.choices]
        return combos

    def seed_for(self, job_id: str) -> int:
        """The search's seed: the given one, or one derived from the job id (stable across restarts)."""
        if self.seed is not None:
            return self.seed
        h = 0
        for ch in job_id.encode():
            h = (h * 131 + ch) % (2**31 - 1)
        return h


def _float(value: Any, path: str) -> float:
    """A bound: ModelArts sends strings ("0.001"); numbers are taken too."""
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise _bad(path, "must be a number")
    try:
        x = float(value)
    except ValueError:
        raise _bad(path, f"{value!r} is not a number") from None
    if not math.isfinite(x):
        raise _bad(path, "must be a finite number")
    return x


def _count(value: Any, path: str, lo: int, hi: int) -> int:
    try:
        n = int(str(value).strip()) if not isinstance(value, bool) else None
    except ValueError:
        n = None
    if n is None or not lo <= n <= hi:
        raise _bad(path, f"must be an integer from {lo} to {hi}")
    return n


def _search_param(item: Any, path: str) -> SearchParam:
    if not isinstance(item, dict):
        raise _bad(path, "must be an object")
    name = item.get("name")
    if not isinstance(name, str) or not NAME_RE.match(name):
        raise _bad(f"{path}.name", "a hyperparameter name is required: letters, digits, '_', '-' and '.'")
    kind = item.get("param_type")
    if kind == "continuous":
        if item.get("discrete_values"):
            raise _bad(f"{path}.discrete_values", "a continuous parameter takes lower_bound and upper_bound")
        if item.get("lower_bound") in (None, "") or item.get("upper_bound") in (None, ""):
            raise _bad(path, "a continuous parameter needs lower_bound and upper_bound")
        lower = _float(item["lower_bound"], f"{path}.lower_bound")
        upper = _float(item["upper_bound"], f"{path}.upper_bound")
        if lower > upper:
            raise _bad(path, f"lower_bound {lower:g} is greater than upper_bound {upper:g}")
        raw_points = item.get("discrete_points_num")
        points = 0 if raw_points in (None, "") else _count(raw_points, f"{path}.discrete_points_num", 1, MAX_VALUES)
        if lower == upper and points != 1:
            points = 1  # one value: the range is a point
        return SearchParam(name, True, lower, upper, points)
    if kind == "discrete":
        values = item.get("discrete_values")
        if not isinstance(values, list) or not values:
            raise _bad(f"{path}.discrete_values", "a discrete parameter needs a non-empty list of values")
        if len(values) > MAX_VALUES:
            raise _bad(f"{path}.discrete_values", f"at most {MAX_VALUES} values are allowed")
        out = []
        for j, v in enumerate(values):
            if isinstance(v, bool) or not isinstance(v, str | int | float):
                raise _bad(f"{path}.discrete_values[{j}]", "must be a string or a number")
            s = str(v)
            if not s or len(s) > 256 or any(c in s for c in "\x00\n\r"):
                raise _bad(f"{path}.discrete_values[{j}]", "must be 1 to 256 characters on one line")
            out.append(s)
        if len(set(out)) != len(out):
            raise _bad(f"{path}.discrete_values", "values must be distinct")
        return SearchParam(name, False, values=tuple(out))
    raise _bad(f"{path}.param_type", "must be 'continuous' or 'discrete'")


def _reward(item: Any, path: str) -> Reward:
    if not isinstance(item, dict):
        raise _bad(path, "must be an object")
    name = item.get("name")
    if not isinstance(name, str) or not name.strip():
        raise _bad(f"{path}.name", "every reward needs a name")
    if not NAME_RE.match(name):
        raise _bad(f"{path}.name", "use letters, digits, '_', '-' and '.'")
    mode = item.get("mode", "max") or "max"
    if mode not in ("max", "min"):
        raise _bad(f"{path}.mode", "must be 'max' or 'min'")
    text = item.get("regex")
    if not isinstance(text, str) or not text:
        raise _bad(f"{path}.regex", f"reward {name!r} needs a regular expression that finds its value in the log")
    if len(text) > MAX_REGEX:
        raise _bad(f"{path}.regex", f"must be at most {MAX_REGEX} characters")
    try:
        pattern = rx.compile(text)
    except (rx.error, ValueError) as exc:
        raise _bad(f"{path}.regex", f"{text!r} does not compile: {exc}") from None
    return Reward(name, mode, text, pattern)


def _option(spec: AlgoParam, value: Any, path: str) -> int | float | str:
    text = str(value).strip() if not isinstance(value, bool) and isinstance(value, str | int | float) else None
    if text is None:
        raise _bad(path, "must be a string")
    if spec.type == "str":
        if spec.choices and text not in spec.choices:
            raise _bad(path, f"must be one of {', '.join(spec.choices)}")
        return text
    try:
        num: int | float = int(text) if spec.type == "int" else float(text)
    except ValueError:
        raise _bad(path, f"{text!r} is not {'an integer' if spec.type == 'int' else 'a number'}") from None
    if isinstance(num, float) and not math.isfinite(num):
        raise _bad(path, "must be a finite number")
    if (spec.lo is not None and num < spec.lo) or (spec.hi is not None and num > spec.hi):
        raise _bad(path, f"must be from {spec.lo:g} to {spec.hi:g}")
    return num


def _skip(raw: Any) -> tuple[str, ...]:
    if raw in (None, ""):
        return ()
    items = raw if isinstance(raw, list) else str(raw).split(",") if isinstance(raw, str) else None
    if items is None:
        raise _bad("algorithm.policies.auto_search.skip_search_params", "a comma-separated list of names")
    names = tuple(str(s).strip() for s in items if str(s).strip())
    for n in names:
        if not NAME_RE.match(n):
            raise _bad("algorithm.policies.auto_search.skip_search_params", f"{n!r} is not a parameter name")
    return names


def parse_rewards(raw: Any, path: str) -> tuple[Reward, ...]:
    """`reward_attrs` (at `path`): a search's rewards, or a plain job's custom metrics."""
    if not isinstance(raw, list) or not raw:
        raise _bad(path, "give at least one reward: {name, mode, regex}")
    if len(raw) > MAX_REWARDS:
        raise _bad(path, f"at most {MAX_REWARDS} rewards are allowed")
    rewards = tuple(_reward(r, f"{path}[{i}]") for i, r in enumerate(raw))
    if len({r.name for r in rewards}) != len(rewards):
        raise _bad(path, "reward names must be distinct")
    return rewards


SEARCH_KEYS = ("search_params", "algo_configs", "skip_search_params")  # what makes auto_search a search


def parse_metrics(auto_search: Any) -> tuple[Reward, ...]:
    """`algorithm.policies.auto_search` of a plain job (kind `job`): `reward_attrs` alone, its custom
    metrics, read from its tasks' logs like a search's rewards (supervisor/log_metrics.py); () without
    them. A search's other keys make it a search, which needs its kind."""
    base = "algorithm.policies.auto_search"
    if not auto_search:
        return ()
    if not isinstance(auto_search, dict):
        raise _bad(base, "must be an object")
    if any(auto_search.get(k) not in (None, "", []) for k in SEARCH_KEYS):
        raise _bad("kind", f"a job with algorithm.policies.auto_search is a hyperparameter search: create it "
                   f"with kind {SEARCH_KIND!r} (a plain job may give reward_attrs alone: its custom metrics)")
    if auto_search.get("reward_attrs") is None:
        return ()
    return parse_rewards(auto_search["reward_attrs"], f"{base}.reward_attrs")


def request_metrics(request: Mapping[str, Any]) -> tuple[Reward, ...]:
    """The custom metrics of a stored (validated) request: its reward_attrs, a plain job's metrics or a
    search's rewards; () when it has none (or, a request of an older version, they do not parse)."""
    algorithm = request.get("algorithm")
    policies = algorithm.get("policies") if isinstance(algorithm, dict) else None
    auto_search = policies.get("auto_search") if isinstance(policies, dict) else None
    raw = auto_search.get("reward_attrs") if isinstance(auto_search, dict) else None
    if not raw:
        return ()
    try:
        return parse_rewards(raw, "algorithm.policies.auto_search.reward_attrs")
    except errors.InvalidRequest:
        return ()


def parse_search(auto_search: Any, parameters: list[tuple[str, str]]) -> SearchSpec:
    """`algorithm.policies.auto_search` of a search job; `parameters` are the job's own (name, value)."""
    base = "algorithm.policies.auto_search"
    if not isinstance(auto_search, dict) or not auto_search:
        raise _bad(base, f"a job of kind {SEARCH_KIND} needs its search: search_params, reward_attrs, algo_configs")
    skip = _skip(auto_search.get("skip_search_params"))
    raw_params = auto_search.get("search_params")
    if not isinstance(raw_params, list) or not raw_params:
        raise _bad(f"{base}.search_params", "the search space is empty: give at least one parameter")
    if len(raw_params) > MAX_SEARCH_PARAMS:
        raise _bad(f"{base}.search_params", f"at most {MAX_SEARCH_PARAMS} parameters are allowed")
    all_params = [_search_param(p, f"{base}.search_params[{i}]") for i, p in enumerate(raw_params)]
    names = [p.name for p in all_params]
    if len(set(names)) != len(names):
        raise _bad(f"{base}.search_params", "each parameter may appear once")
    known = set(names) | {n for n, _ in parameters}
    for n in skip:
        if n not in known:
            raise _bad(f"{base}.skip_search_params", f"{n!r} is neither a search parameter nor a parameter of "
                       "the algorithm")
    params = tuple(p for p in all_params if p.name not in skip)
    if not params:
        raise _bad(f"{base}.search_params", "the search space is empty: every parameter is skipped")

    rewards = parse_rewards(auto_search.get("reward_attrs"), f"{base}.reward_attrs")

    configs = auto_search.get("algo_configs")
    if not isinstance(configs, list) or len(configs) != 1 or not isinstance(configs[0], dict):
        raise _bad(f"{base}.algo_configs", f"give exactly one algorithm {{name, params}}: one of "
                   f"{', '.join(ALGORITHMS)}")
    cpath = f"{base}.algo_configs[0]"
    algo = ALGORITHMS.get(str(configs[0].get("name") or ""))
    if algo is None:
        raise _bad(f"{cpath}.name", f"unknown search algorithm {configs[0].get('name')!r}: use one of "
                   f"{', '.join(ALGORITHMS)} (GET /v2/{{project_id}}/search-algorithms)")
    specs = {s.key: s for s in (*COMMON, *algo.params)}
    given: dict[str, int | float | str] = {}
    raw_options = configs[0].get("params") or []
    if not isinstance(raw_options, list):
        raise _bad(f"{cpath}.params", "must be an array of {key, value, type}")
    for i, item in enumerate(raw_options):
        ppath = f"{cpath}.params[{i}]"
        key = item.get("key") if isinstance(item, dict) else None
        if not isinstance(key, str) or key not in specs:
            raise _bad(f"{ppath}.key", f"{algo.name} has no parameter {key!r}; its parameters: "
                       f"{', '.join(specs)}")
        if key in given:
            raise _bad(f"{ppath}.key", f"{key!r} is given twice")
        given[key] = _option(specs[key], item.get("value"), f"{ppath}.value")
    options: dict[str, int | float | str] = {}
    for key, s in specs.items():
        if key in given:
            options[key] = given[key]
        elif s.default:
            options[key] = _option(s, s.default, key)

    spec = SearchSpec(params, rewards, skip, algo.name, options, 0, int(options["max_concurrent_num"]),
                      int(options["seed"]) if "seed" in options else None, int(options["trial_timeout"]),
                      str(options["early_stop"]), int(options["early_stop_startup_trials"]),
                      int(options["early_stop_warmup_steps"]))
    budget = int(options["num_samples"])
    if algo.name == "grid_search":
        for p in params:
            if not p.choices:
                raise _bad(f"{base}.search_params", f"grid_search needs discrete_points_num for continuous "
                           f"parameter {p.name!r}")
        size = math.prod(len(p.choices) for p in params)
        if size > MAX_GRID:
            raise _bad(f"{base}.search_params", f"the grid has {size} points; at most {MAX_GRID} are allowed")
        budget = min(budget, size) if "num_samples" in given else size
        options["num_samples"] = budget
    return SearchSpec(spec.params, spec.rewards, spec.skip, spec.algorithm, options, budget, spec.parallel,
                      spec.seed, spec.trial_timeout_s, spec.early_stop, spec.early_stop_startup_trials,
                      spec.early_stop_warmup_steps)


def search_of_request(request: Mapping[str, Any]) -> SearchSpec:
    """The search of a stored (normalised) search job request: no catalog needed, so a search whose flavor
    or engine left the catalog can still be read (its trials ended, its results shown)."""
    algorithm = request.get("algorithm") or {}
    parameters = [(str(p.get("name")), str(p.get("value", ""))) for p in algorithm.get("parameters") or []
                  if isinstance(p, dict)]
    return parse_search((algorithm.get("policies") or {}).get("auto_search"), parameters)


def trial_parameters(base: list[tuple[str, str]], values: Mapping[str, str]) -> list[tuple[str, str]]:
    """A trial's hyperparameters: the job's own, with the searched ones set to the trial's values
    (added at the end when the job does not give them)."""
    out = [(n, values.get(n, v)) for n, v in base]
    have = {n for n, _ in base}
    return out + [(n, v) for n, v in values.items() if n not in have]


def algorithm_catalogue() -> list[dict[str, Any]]:
    """GET /v2/{project_id}/search-algorithms: each algorithm with its parameters and their defaults."""
    return [{"name": a.name, "description": f"{a.description} (runs on {a.library})",
             "params": [{"key": p.key, "value": p.default, "type": p.type} for p in (*a.params, *COMMON)]}
            for a in ALGORITHMS.values()]


class TrialState:
    """A trial's state in the `trials` table. Running until its job ends; then one of the others."""
    RUNNING = "running"
    COMPLETED = "completed"  # its job completed and its objective was read
    FAILED = "failed"  # its job failed, or completed without a value of the objective
    EARLY_STOPPED = "early_stopped"  # ended by early stopping (the platform's rule, or the API)
    TIMEOUT = "timeout"  # ended by the search's trial_timeout
    TERMINATED = "terminated"  # ended with the search (terminated by the user)
    ENDED = frozenset({COMPLETED, FAILED, EARLY_STOPPED, TIMEOUT, TERMINATED})


@dataclass(frozen=True)
class Observation:
    """A trial as a search algorithm sees it (core/searchers.py)."""
    number: int
    params: Mapping[str, str]  # the values its program got
    state: str  # TrialState
    value: float | None  # the objective's last value (None: none read)
    history: tuple[float, ...] = ()  # every value of the objective read, in log order (steps 0, 1, ...)


def trial_name(search_name: str, number: int) -> str:
    suffix = f"-trial-{number}"
    return search_name[:64 - len(suffix)] + suffix


def trial_request(search: Mapping[str, Any], number: int, values: Mapping[str, str],
                  timeout_s: int) -> dict[str, Any]:
    """The create body of trial `number` of a search (its normalised request): a plain job with the same
    code, data and resources, the trial's values among its parameters, no search of its own (the search's
    rewards alone, as its custom metrics) and no notification (the search announces itself). Its outputs
    and summary go to `trial-<n>/` under the search's, so trials do not overwrite each other; `timeout_s`
    (trial_timeout) is its auto_stop (the search's own auto_stop is the search's)."""
    import copy

    req = copy.deepcopy(dict(search))
    req["kind"] = "job"
    meta = req["metadata"]
    meta["name"] = trial_name(str(meta["name"]), number)
    algorithm = req["algorithm"]
    rewards = ((algorithm.pop("policies", None) or {}).get("auto_search") or {}).get("reward_attrs")
    if rewards:  # the search's rewards are the trial's custom metrics (its metrics endpoint shows them)
        algorithm["policies"] = {"auto_search": {"reward_attrs": rewards}}
    given = [p for p in algorithm.get("parameters") or [] if isinstance(p, dict)]
    have = {p.get("name") for p in given}
    algorithm["parameters"] = ([{**p, "value": values[p["name"]]} if p.get("name") in values else p for p in given]
                               + [{"name": n, "value": v} for n, v in values.items() if n not in have])
    for item in algorithm.get("outputs") or []:
        obs = (item.get("remote") or {}).get("obs") or {}
        if obs.get("obs_url"):
            obs["obs_url"] = f"{obs['obs_url'].rstrip('/')}/trial-{number}/"
    pfs = (((algorithm.get("summary") or {}).get("log_dir") or {}).get("pfs") or {})
    if pfs.get("pfs_path"):
        pfs["pfs_path"] = f"{pfs['pfs_path'].rstrip('/')}/trial-{number}/"
    spec = req["spec"]
    spec.pop("notification", None)
    spec.pop("auto_stop", None)  # the search's bounds the search (supervisor/search.py), not each trial
    if timeout_s:
        spec["auto_stop"] = {"time_unit": "SECONDS", "duration": timeout_s}
    return req
