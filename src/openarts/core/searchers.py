"""The search algorithms of a hyperparameter search (core/search.py), run by their libraries: Optuna
(random_search, tpe_search, early stopping, importance), bayesian-optimization (bayes_opt_search) and
hyperopt (anneal_search); grid_search needs none.

Pure computation, called from a worker thread. Stateless: every call rebuilds the library's state from the
trials it is given, so a server restart changes nothing and each trial counts once. The libraries are
imported inside the functions (about a second each), never at start-up. docs/AUTOSEARCH.md.
"""

from __future__ import annotations

import functools
import logging
import math
import random
import threading
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from openarts.core.search import Observation, SearchParam, SearchSpec, TrialState

if TYPE_CHECKING:
    import optuna
    from optuna.distributions import BaseDistribution

BAYES_MAX_POINTS = 200  # the GP costs the cube of its points: it sees the best half and the latest half of these
BAYES_INIT_POINTS = 5  # random trials first, as BayesianOptimization.maximize(init_points=5)
IMPORTANCE_MAX_TRIALS = 1000  # fANOVA on the latest completed trials: 32 trees of depth 6 (64 x 64: seconds)
_QUIET = threading.RLock()


def _mix(seed: int, number: int) -> int:
    return (seed * 1_000_003 + number) % 2**31


@contextmanager
def _quiet() -> Iterator[None]:
    """No warnings from the libraries (experimental features, deprecated arguments, GP convergence). The
    filters are the process's: one call at a time, or two threads' saves and restores would interleave."""
    with _QUIET, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


@dataclass(frozen=True)
class _Dim:
    """A searched parameter, its choices computed once per call (SearchParam.choices formats every point)."""
    param: SearchParam
    choices: tuple[str, ...]
    index: dict[str, int] = field(repr=False)

    @classmethod
    def of(cls, p: SearchParam) -> _Dim:
        choices = p.choices
        return cls(p, choices, {c: i for i, c in enumerate(choices)})

    @property
    def name(self) -> str:
        return self.param.name

    @property
    def real(self) -> bool:
        """A real range: no finite set of values."""
        return not self.choices

    @property
    def points(self) -> bool:
        """Evenly spread points of a continuous range (an order the algorithms may use)."""
        return self.param.continuous and len(self.choices) > 1

    @property
    def fixed(self) -> bool:
        return len(self.choices) == 1

    @property
    def bounds(self) -> tuple[float, float]:
        """As a number (bayes_opt): the range; a discrete value's index, rounded."""
        return (self.param.lower, self.param.upper) if self.param.continuous else (-0.5, len(self.choices) - 0.5)

    def clamp(self, x: float) -> float:
        return min(max(x, self.param.lower), self.param.upper)

    def at(self, i: float) -> str:
        """The choice at index `i` (rounded, clamped)."""
        return self.choices[min(max(round(i), 0), len(self.choices) - 1)]

    def snap(self, x: float) -> str:
        """A number as this parameter's value: formatted within the range, or the nearest point."""
        if self.real:
            return SearchParam.format(self.clamp(x))
        if not self.param.continuous or self.fixed:
            return self.at(x)  # x is an index
        step = (self.param.upper - self.param.lower) / (len(self.choices) - 1)
        return self.at((x - self.param.lower) / step)

    def number(self, value: str | None) -> float | None:
        """A real value as a float (clamped into the range); None when it is none."""
        try:
            x = float(value) if value is not None else math.nan
        except ValueError:
            return None
        return self.clamp(x) if math.isfinite(x) else None

    def choice(self, value: str | None) -> int | None:
        """The index of a value among the choices; a point given in another form is snapped."""
        if value is None:
            return None
        if value in self.index:
            return self.index[value]
        if not self.param.continuous:
            return None
        x = self.number(value)
        return None if x is None else self.index[self.snap(x)]

    def point(self, value: str | None) -> float | None:
        """The value as a number on the range (bayes_opt, hyperopt): a point's value, a discrete value's index."""
        if self.real:
            return self.number(value)
        i = self.choice(value)
        if i is None or not self.param.continuous:
            return i
        return self.param.lower + i * (self.param.upper - self.param.lower) / (len(self.choices) - 1)


def _dims(spec: SearchSpec) -> list[_Dim]:
    return [_Dim.of(p) for p in spec.params]


def _finite(x: float | None) -> float | None:
    return x if x is not None and math.isfinite(x) else None


def _grid(spec: SearchSpec, number: int) -> dict[str, str]:
    """spec.grid()[number] without building the grid: the last parameter varies fastest."""
    sizes = [len(p.choices) for p in spec.params]
    if not 0 <= number < math.prod(sizes):
        raise IndexError(f"trial {number} is beyond the grid of {math.prod(sizes)} points")
    out: dict[str, str] = {}
    for p, size in zip(reversed(spec.params), reversed(sizes), strict=True):
        number, i = divmod(number, size)
        out[p.name] = p.choices[i]
    return {p.name: out[p.name] for p in spec.params}


# -- Optuna ------------------------------------------------------------------------------------------------


def _distributions(dims: Sequence[_Dim]) -> dict[str, BaseDistribution]:
    """A real range: floats; points: their index (exact, ordered); discrete values: categories."""
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    out: dict[str, BaseDistribution] = {}
    for d in dims:
        if d.real:
            out[d.name] = FloatDistribution(d.param.lower, d.param.upper)
        elif d.points:
            out[d.name] = IntDistribution(0, len(d.choices) - 1)
        else:
            out[d.name] = CategoricalDistribution(d.choices)
    return out


def _optuna_params(dims: Sequence[_Dim], o: Observation) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for d in dims:
        value = o.params.get(d.name)
        v = d.number(value) if d.real else d.choice(value)
        if v is not None:
            out[d.name] = v if d.real or d.points else d.choices[int(v)]
    return out


def _frozen(dims: Sequence[_Dim], dists: dict[str, BaseDistribution], o: Observation) -> optuna.trial.FrozenTrial:
    """An observation as an Optuna trial: COMPLETE (with a value), PRUNED (early stopped), RUNNING, or FAIL."""
    from optuna.trial import TrialState as S
    from optuna.trial import create_trial

    params = _optuna_params(dims, o)
    steps = {i: v for i, v in enumerate(o.history) if math.isfinite(v)}
    value = _finite(o.value)
    kw: dict[str, Any] = {"params": params, "distributions": {k: dists[k] for k in params}}
    if o.state == TrialState.COMPLETED and value is not None:
        return create_trial(state=S.COMPLETE, value=value, intermediate_values=steps, **kw)
    if o.state == TrialState.EARLY_STOPPED:
        last = value if value is not None else (steps[max(steps)] if steps else None)
        return create_trial(state=S.PRUNED, value=_finite(last), intermediate_values=steps, **kw)
    if o.state == TrialState.RUNNING:
        return create_trial(state=S.RUNNING, intermediate_values=steps, **kw)
    return create_trial(state=S.FAIL, **kw)  # failed, timed out, terminated, completed without a value


def _study(spec: SearchSpec, **kw: Any) -> optuna.Study:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)  # no "A new study created in memory ..."
    return optuna.create_study(direction="maximize" if spec.objective.maximize else "minimize", **kw)


def _hyperopt_gamma(gamma: float, n: int) -> int:
    """hyperopt's split of n trials into good and bad: the best ceil(gamma * sqrt(n)), at most 25."""
    return min(math.ceil(gamma * math.sqrt(n)), 25)


def _optuna_suggest(spec: SearchSpec, dims: list[_Dim], seed: int, history: Sequence[Observation]) -> dict[str, str]:
    import optuna

    sampler: optuna.samplers.BaseSampler
    if spec.algorithm == "random_search":
        sampler = optuna.samplers.RandomSampler(seed=seed)
        history = ()  # independent of the trials so far: no study to build
    else:  # tpe_search; constant_liar: running trials count as bad ones, so parallel trials keep apart
        gamma = functools.partial(_hyperopt_gamma, float(spec.options["gamma"]))
        sampler = optuna.samplers.TPESampler(n_startup_trials=int(spec.options["n_initial_points"]), gamma=gamma,
                                             constant_liar=True, seed=seed)
    dists = _distributions(dims)
    study = _study(spec, sampler=sampler)
    study.add_trials([_frozen(dims, dists, o) for o in history])
    params = study.ask(dists).params
    return {d.name: d.at(params[d.name]) if d.points else str(params[d.name]) if d.choices
            else d.snap(params[d.name]) for d in dims}


def should_stop(spec: SearchSpec, history: Sequence[Observation], trial: Observation) -> bool:
    """Early stopping of the running `trial` (its `history`: the objective's values so far, one per step):
    Optuna's MedianPruner over the other trials. It compares with completed trials only, so only they are
    put in the study."""
    if spec.early_stop != "median" or not trial.history:
        return False
    with _quiet():
        import optuna
        from optuna.trial import TrialState as S
        from optuna.trial import create_trial

        pruner = optuna.pruners.MedianPruner(n_startup_trials=spec.early_stop_startup_trials,
                                             n_warmup_steps=spec.early_stop_warmup_steps)
        study = _study(spec, pruner=pruner)
        for o in history:
            value = _finite(o.value)
            if o.number != trial.number and o.state == TrialState.COMPLETED and value is not None:
                steps = {i: v for i, v in enumerate(o.history) if math.isfinite(v)}
                study.add_trial(create_trial(state=S.COMPLETE, value=value, intermediate_values=steps))
        steps = {i: v for i, v in enumerate(trial.history) if math.isfinite(v)}
        if not steps:
            return False
        return bool(pruner.prune(study, create_trial(state=S.RUNNING, intermediate_values=steps)))


def importance(spec: SearchSpec, history: Sequence[Observation]) -> dict[str, float]:
    """Each searched parameter's importance to the objective, summing to 1: Optuna's fANOVA (seeded) over
    the completed trials with a value for every parameter. {} with fewer than two, or on any failure."""
    dims = _dims(spec)
    done = [o for o in history if o.state == TrialState.COMPLETED and _finite(o.value) is not None]
    done = sorted(done, key=lambda o: o.number)[-IMPORTANCE_MAX_TRIALS:]
    try:
        with _quiet():
            import optuna

            dists = _distributions(dims)
            trials = [_frozen(dims, dists, o) for o in done]
            trials = [t for t in trials if len(t.params) == len(dims)]
            if len(trials) < 2:
                return {}
            study = _study(spec)
            study.add_trials(trials)
            evaluator = optuna.importance.FanovaImportanceEvaluator(n_trees=32, max_depth=6, seed=0)
            found = optuna.importance.get_param_importances(study, evaluator=evaluator)
    except Exception:  # e.g. fANOVA of trials that all have the same value
        return {}
    out = {d.name: float(found.get(d.name, 0.0)) for d in dims}
    return out if all(math.isfinite(v) for v in out.values()) else {}


# -- bayesian-optimization ---------------------------------------------------------------------------------


def _bayes_points(spec: SearchSpec, free: list[_Dim],
                  history: Sequence[Observation]) -> list[tuple[tuple[float, ...], float]]:
    """The completed trials as (point, target to maximise), a repeated point's targets averaged: at most
    BAYES_MAX_POINTS, the best half and the latest of the others. Then the running trials' points with the
    worst target (a pessimistic constant liar, as Optuna's TPE does): else parallel trials get one point."""
    sums: dict[tuple[float, ...], list[float]] = {}
    latest: dict[tuple[float, ...], int] = {}
    running: list[tuple[float, ...]] = []
    for o in history:
        value = _finite(o.value)
        done = o.state == TrialState.COMPLETED and value is not None
        xs = [d.point(o.params.get(d.name)) for d in free]
        if not (done or o.state == TrialState.RUNNING) or any(v is None for v in xs):
            continue
        x = tuple(float(v) for v in xs if v is not None)
        if not done or value is None:
            running.append(x)
            continue
        acc = sums.setdefault(x, [0.0, 0.0])
        acc[0] += value if spec.objective.maximize else -value
        acc[1] += 1
        latest[x] = max(latest.get(x, -1), o.number)
    points = [(x, s / n) for x, (s, n) in sums.items()]
    if len(points) > BAYES_MAX_POINTS:
        half = BAYES_MAX_POINTS // 2
        by_value = sorted(points, key=lambda p: -p[1])
        points = by_value[:half] + sorted(by_value[half:], key=lambda p: -latest[p[0]])[:BAYES_MAX_POINTS - half]
    if points:
        lie = min(y for _, y in points)
        points += [(x, lie) for x in dict.fromkeys(running) if x not in sums]
    return points


def _bayes(spec: SearchSpec, dims: list[_Dim], seed: int, history: Sequence[Observation],
           number: int) -> dict[str, str]:
    """A real range or points: bounds [lower, upper] (snapped to the nearest point); discrete values: their
    index, a float dimension [-0.5, n - 0.5] rounded (bayes_opt's IntParameter would make it optimise the
    acquisition by differential evolution: seconds). The first BAYES_INIT_POINTS trials, or no completed
    one: a random point; a failure of the GP: a seeded random point."""
    free = [d for d in dims if not d.fixed]
    out = {d.name: d.choices[0] for d in dims if d.fixed}
    keys = [f"p{i:03d}" for i in range(len(free))]  # bayes_opt's keys, whatever the parameters' names
    try:
        import numpy as np
        from bayes_opt import BayesianOptimization, acquisition

        kind = spec.options["kind"]
        acq: acquisition.AcquisitionFunction
        if kind == "ei":
            acq = acquisition.ExpectedImprovement(xi=float(spec.options["xi"]))
        elif kind == "poi":
            acq = acquisition.ProbabilityOfImprovement(xi=float(spec.options["xi"]))
        else:
            acq = acquisition.UpperConfidenceBound(kappa=float(spec.options["kappa"]))
        pbounds = {k: d.bounds for k, d in zip(keys, free, strict=True)}
        bo = BayesianOptimization(f=None, pbounds=pbounds, acquisition_function=acq, random_state=seed, verbose=0)
        for x, y in _bayes_points(spec, free, history) if number >= BAYES_INIT_POINTS else ():
            bo.space.register(dict(zip(keys, x, strict=True)), y)  # not bo.register: it logs, O(n) each
        got = bo.suggest()
        xs = [float(np.asarray(got[k]).ravel()[0]) for k in keys]
        if not all(math.isfinite(x) for x in xs):
            raise ValueError(f"bayes_opt suggested {xs}")
    except Exception:  # the GP fit or the acquisition's optimiser failed
        rng = random.Random(seed)
        xs = [rng.uniform(*d.bounds) for d in free]
    out.update({d.name: d.snap(x) for d, x in zip(free, xs, strict=True)})
    return {d.name: out[d.name] for d in dims}


# -- hyperopt ----------------------------------------------------------------------------------------------


def _anneal(spec: SearchSpec, dims: list[_Dim], seed: int, history: Sequence[Observation],
            number: int) -> dict[str, str]:
    """hyperopt's anneal over hp.uniform (a range or points, snapped) and hp.choice (indices). Completed
    trials are ok, with their loss; running ones in flight; the others (early stopped too) failed. Both count
    in the shrinking of the neighbourhood and rank after every ok trial as its centre (an infinite loss)."""
    import hyperopt
    from hyperopt import anneal, base, hp

    logging.getLogger("hyperopt").setLevel(logging.WARNING)

    free = [d for d in dims if not d.fixed]
    labels = [f"p{i:03d}" for i in range(len(free))]
    space = {k: hp.uniform(k, d.param.lower, d.param.upper) if d.param.continuous
             else hp.choice(k, list(range(len(d.choices)))) for k, d in zip(labels, free, strict=True)}
    domain = hyperopt.Domain(lambda _: 0.0, space)
    trials = hyperopt.Trials()
    tids, results, miscs, states = [], [], [], []
    for o in history:
        value = _finite(o.value)
        idxs: dict[str, list[int]] = {}
        vals: dict[str, list[float]] = {}
        for k, d in zip(labels, free, strict=True):
            v = d.point(o.params.get(d.name))
            idxs[k], vals[k] = ([o.number], [v]) if v is not None else ([], [])
        if o.state == TrialState.COMPLETED and value is not None:
            results.append({"status": base.STATUS_OK, "loss": -value if spec.objective.maximize else value})
            states.append(base.JOB_STATE_DONE)
        elif o.state == TrialState.RUNNING:
            results.append({"status": base.STATUS_RUNNING})
            states.append(base.JOB_STATE_RUNNING)
        else:
            results.append({"status": base.STATUS_FAIL})
            states.append(base.JOB_STATE_DONE)
        tids.append(o.number)
        miscs.append({"tid": o.number, "cmd": domain.cmd, "workdir": domain.workdir, "idxs": idxs, "vals": vals})
    docs = trials.new_trial_docs(tids, [None] * len(tids), results, miscs)
    for doc, state in zip(docs, states, strict=True):
        doc["state"] = state
    trials.insert_trial_docs(docs)
    trials.refresh()
    new = anneal.suggest([number], domain, trials, seed, avg_best_idx=float(spec.options["avg_best_idx"]),
                         shrink_coef=float(spec.options["shrink_coef"]))
    got = new[0]["misc"]["vals"]
    out = {d.name: d.choices[0] for d in dims if d.fixed}
    out.update({d.name: d.snap(float(got[k][0])) for k, d in zip(labels, free, strict=True)})
    return {d.name: out[d.name] for d in dims}


def suggest(spec: SearchSpec, seed: int, history: Sequence[Observation], number: int) -> dict[str, str]:
    """The values of trial `number` (every trial in `history`, running ones included, has a lower number).
    Deterministic in (spec, seed, history, number). Each value is one of the parameter's choices, or a
    formatted number within [lower, upper]."""
    if spec.algorithm == "grid_search":
        return _grid(spec, number)
    dims = _dims(spec)
    if all(d.fixed for d in dims):
        return {d.name: d.choices[0] for d in dims}  # nothing to search (hyperopt fails on an empty space)
    mixed = _mix(seed, number)
    with _quiet():
        if spec.algorithm in ("random_search", "tpe_search"):
            return _optuna_suggest(spec, dims, mixed, history)
        if spec.algorithm == "bayes_opt_search":
            return _bayes(spec, dims, mixed, history, number)
        if spec.algorithm == "anneal_search":
            return _anneal(spec, dims, mixed, history, number)
    raise ValueError(f"unknown search algorithm {spec.algorithm!r}")
