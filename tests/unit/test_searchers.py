"""core/searchers.py: the search algorithms behind their libraries. Valid and deterministic values for
every algorithm, with any history; the model-based ones beat random search on a smooth objective; the
median rule of early stopping; parameter importance."""

from __future__ import annotations

import math
import statistics
import warnings
from typing import Any

import pytest

from openarts.core import searchers
from openarts.core.search import Observation, SearchParam, SearchSpec, TrialState, parse_search

MODEL_BASED = ["tpe_search", "bayes_opt_search", "anneal_search"]
ALGOS = ["random_search", *MODEL_BASED]
SPACE = [
    {"name": "lr", "param_type": "continuous", "lower_bound": "0.0001", "upper_bound": "1"},
    {"name": "momentum", "param_type": "continuous", "lower_bound": "0.5", "upper_bound": "0.99",
     "discrete_points_num": "8"},
    {"name": "optimizer", "param_type": "discrete", "discrete_values": ["adam", "sgd", "rmsprop"]},
    {"name": "batch_size", "param_type": "discrete", "discrete_values": [16, 32, 64, 128]},
    {"name": "fixed", "param_type": "continuous", "lower_bound": "3", "upper_bound": "3"},
]


def make_spec(algo: str, params: list[dict[str, Any]] | None = None, mode: str = "max",
              **options: Any) -> SearchSpec:
    return parse_search({
        "search_params": params or SPACE,
        "reward_attrs": [{"name": "acc", "mode": mode, "regex": r"acc=([0-9.eE+-]+)"}],
        "algo_configs": [{"name": algo, "params": [{"key": k, "value": str(v)} for k, v in options.items()]}],
    }, [])


def check_values(spec: SearchSpec, values: dict[str, str]) -> None:
    assert list(values) == [p.name for p in spec.params]
    for p in spec.params:
        v = values[p.name]
        assert isinstance(v, str)
        if p.choices:
            assert v in p.choices, (p.name, v)
        else:
            assert p.lower <= float(v) <= p.upper and v == SearchParam.format(float(v)), (p.name, v)


def score(values: dict[str, str]) -> float:
    return (1 - (math.log10(float(values["lr"])) + 2) ** 2 - (float(values["momentum"]) - 0.9) ** 2
            - {"adam": 0.0, "sgd": 0.1, "rmsprop": 0.2}[values["optimizer"]])


def mixed_history(spec: SearchSpec, n: int = 24) -> list[Observation]:
    """Trials in every state, from values the search itself suggested (random search's)."""
    states = [TrialState.COMPLETED, TrialState.COMPLETED, TrialState.FAILED, TrialState.EARLY_STOPPED,
              TrialState.COMPLETED, TrialState.TIMEOUT, TrialState.TERMINATED, TrialState.RUNNING]
    rnd = make_spec("random_search")
    out = []
    for i in range(n):
        values = searchers.suggest(rnd, 99, out, i)
        state = states[i % len(states)]
        value = score(values)
        steps = tuple(value - 1 / (k + 1) for k in range(5))
        if state == TrialState.COMPLETED:
            out.append(Observation(i, values, state, value, steps))
        elif state in (TrialState.EARLY_STOPPED, TrialState.RUNNING):
            out.append(Observation(i, values, state, steps[2], steps[:3]))
        else:
            out.append(Observation(i, values, state, None, steps[:1]))
    out.append(Observation(n, {}, TrialState.FAILED, None))  # no values at all
    out.append(Observation(n + 1, {"lr": "oops", "optimizer": "lbfgs"}, TrialState.COMPLETED, 0.5))  # unknown ones
    out.append(Observation(n + 2, {**out[0].params, "momentum": "0.7"}, TrialState.COMPLETED, None))  # off the points
    return out


@pytest.mark.parametrize("algo", ALGOS)
@pytest.mark.parametrize("mode", ["max", "min"])
def test_values_are_valid_with_empty_and_mixed_histories(algo: str, mode: str) -> None:
    spec = make_spec(algo, mode=mode)
    check_values(spec, searchers.suggest(spec, 7, [], 0))
    history = mixed_history(spec)
    for number in range(len(history), len(history) + 3):
        values = searchers.suggest(spec, 7, history, number)
        check_values(spec, values)
        assert values["fixed"] == "3"
        history.append(Observation(number, values, TrialState.COMPLETED, score(values)))


@pytest.mark.parametrize("algo", ALGOS)
def test_deterministic_and_varied(algo: str) -> None:
    spec = make_spec(algo)
    history = mixed_history(spec)
    n = len(history)
    first = searchers.suggest(spec, 3, history, n)
    assert searchers.suggest(spec, 3, list(history), n) == first
    assert searchers.suggest(spec, 3, [], 0) == searchers.suggest(spec, 3, [], 0)
    assert len({tuple(searchers.suggest(spec, 3, history, k).values()) for k in range(n, n + 4)}) > 1
    assert len({tuple(searchers.suggest(spec, s, [], 0).values()) for s in range(4)}) > 1


@pytest.mark.parametrize("algo", ALGOS)
def test_a_sequential_search_of_real_and_discrete_values(algo: str) -> None:
    """Only discrete values and points: every value one of the choices, and the search covers more than one."""
    params = [{"name": "depth", "param_type": "discrete", "discrete_values": ["2", "4", "8"]},
              {"name": "drop", "param_type": "continuous", "lower_bound": "0", "upper_bound": "0.3",
               "discrete_points_num": "4"},
              {"name": "act", "param_type": "discrete", "discrete_values": ["relu", "gelu"]}]
    spec = make_spec(algo, params, mode="min")
    history: list[Observation] = []
    for number in range(12):
        values = searchers.suggest(spec, 11, history, number)
        check_values(spec, values)
        loss = abs(float(values["depth"]) - 4) + float(values["drop"]) + (values["act"] == "relu")
        history.append(Observation(number, values, TrialState.COMPLETED, loss))
    assert len({tuple(o.params.values()) for o in history}) > 1


def test_bayes_falls_back_to_a_seeded_random_point(monkeypatch: pytest.MonkeyPatch) -> None:
    import bayes_opt

    def broken(self: Any) -> Any:
        raise ValueError("the GP fit failed")

    monkeypatch.setattr(bayes_opt.BayesianOptimization, "suggest", broken)
    spec = make_spec("bayes_opt_search")
    history = mixed_history(spec)
    got = [searchers.suggest(spec, 4, history, n) for n in (len(history), len(history), len(history) + 1)]
    for values in got:
        check_values(spec, values)
    assert got[0] == got[1] != got[2]


def test_hyperopt_gamma() -> None:
    assert [searchers._hyperopt_gamma(0.25, n) for n in (0, 1, 16, 17, 100)] == [0, 1, 1, 2, 3]
    assert searchers._hyperopt_gamma(1.0, 10_000) == 25


@pytest.mark.parametrize("algo", [*ALGOS, "grid_search"])
def test_nothing_to_search(algo: str) -> None:
    params = [{"name": "a", "param_type": "continuous", "lower_bound": "2", "upper_bound": "2"},
              {"name": "b", "param_type": "discrete", "discrete_values": ["z"]}]
    spec = make_spec(algo, params)
    history = [Observation(0, {"a": "2", "b": "z"}, TrialState.COMPLETED, 1.0),
               Observation(1, {"a": "2", "b": "z"}, TrialState.RUNNING, None)]
    assert searchers.suggest(spec, 1, [], 0) == {"a": "2", "b": "z"}
    if algo != "grid_search":
        assert searchers.suggest(spec, 1, history, 2) == {"a": "2", "b": "z"}


def test_no_warnings_logs_or_output(capfd: pytest.CaptureFixture[str]) -> None:
    filters = list(warnings.filters)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for algo in ALGOS:
            spec = make_spec(algo)
            history = mixed_history(spec)
            searchers.suggest(spec, 1, history, len(history))
        spec = make_spec("tpe_search", early_stop="median", early_stop_startup_trials=1)
        history = mixed_history(spec)
        searchers.should_stop(spec, history, Observation(99, history[0].params, TrialState.RUNNING, None, (-9.0,)))
        searchers.importance(spec, history)
    assert [str(w.message) for w in caught] == []
    assert warnings.filters == filters
    out, err = capfd.readouterr()
    assert out == "" and err == ""


# -- grid --------------------------------------------------------------------------------------------------


def test_grid_order_and_size() -> None:
    params = [{"name": "a", "param_type": "discrete", "discrete_values": ["x", "y"]},
              {"name": "b", "param_type": "continuous", "lower_bound": "0", "upper_bound": "1",
               "discrete_points_num": "3"},
              {"name": "c", "param_type": "discrete", "discrete_values": [1, 2]}]
    spec = make_spec("grid_search", params)
    assert spec.budget == 12
    got = [searchers.suggest(spec, 0, [], n) for n in range(spec.budget)]
    assert got == spec.grid()
    assert got[:3] == [{"a": "x", "b": "0", "c": "1"}, {"a": "x", "b": "0", "c": "2"},
                       {"a": "x", "b": "0.5", "c": "1"}]
    assert got[-1] == {"a": "y", "b": "1", "c": "2"}
    assert len({tuple(v.values()) for v in got}) == 12
    with pytest.raises(IndexError):
        searchers.suggest(spec, 0, [], 12)
    assert searchers.suggest(make_spec("grid_search", params, num_samples=5), 0, [], 4) == got[4]


# -- the model-based algorithms beat random search -----------------------------------------------------


def bump(values: dict[str, str]) -> float:
    """A smooth 2-D objective with one optimum, at (0.3, 0.7)."""
    x, y = float(values["x"]), float(values["y"])
    return math.exp(-((x - 0.3) ** 2 + (y - 0.7) ** 2) / 0.05)


def best_of_search(spec: SearchSpec, seed: int, trials: int = 20) -> float:
    """A sequential search (suggest, evaluate, complete): the best bump found. Mode min minimises 1 - bump."""
    maximize = spec.objective.maximize
    history: list[Observation] = []
    for number in range(trials):
        values = searchers.suggest(spec, seed, history, number)
        value = bump(values) if maximize else 1 - bump(values)
        history.append(Observation(number, values, TrialState.COMPLETED, value))
    return max(o.value if maximize else 1 - o.value for o in history if o.value is not None)


PLANE = [{"name": "x", "param_type": "continuous", "lower_bound": "0", "upper_bound": "1"},
         {"name": "y", "param_type": "continuous", "lower_bound": "0", "upper_bound": "1"}]
SEEDS = range(1, 6)


@pytest.fixture(scope="module")
def random_median() -> float:
    return statistics.median(best_of_search(make_spec("random_search", PLANE), s) for s in SEEDS)


@pytest.mark.parametrize(("algo", "mode", "options"), [
    ("tpe_search", "max", {"n_initial_points": 5}), ("tpe_search", "min", {"n_initial_points": 5}),
    ("bayes_opt_search", "max", {}), ("bayes_opt_search", "min", {"kind": "ei"}),
    ("anneal_search", "max", {}), ("anneal_search", "min", {})])
def test_model_based_beats_random(algo: str, mode: str, options: dict[str, Any], random_median: float) -> None:
    """The median of the best found over 5 seeds, against random search's (about 0.71 of 1)."""
    spec = make_spec(algo, PLANE, mode=mode, **options)
    model_median = statistics.median(best_of_search(spec, s) for s in SEEDS)
    assert model_median >= random_median, (model_median, random_median)


@pytest.mark.parametrize("algo", MODEL_BASED)
def test_parallel_trials_get_different_values(algo: str) -> None:
    """Trials asked together (each added as running before the next is asked) do not repeat one point."""
    spec = make_spec(algo, PLANE, n_initial_points=5) if algo == "tpe_search" else make_spec(algo, PLANE)
    history: list[Observation] = []
    for number in range(10):
        values = searchers.suggest(spec, 2, history, number)
        history.append(Observation(number, values, TrialState.COMPLETED, bump(values)))
    for number in range(10, 14):
        history.append(Observation(number, searchers.suggest(spec, 2, history, number), TrialState.RUNNING, None))
    batch = {(o.params["x"], o.params["y"]) for o in history[10:]}
    assert len(batch) == 4
    assert min(abs(float(a[0]) - float(b[0])) + abs(float(a[1]) - float(b[1]))
               for a in batch for b in batch if a != b) > 0.001


# -- early stopping ----------------------------------------------------------------------------------------


def curve(final: float, steps: int = 10) -> tuple[float, ...]:
    return tuple(final * (k + 1) / steps for k in range(steps))


def stop_spec(rule: str = "median", startup: int = 3, warmup: int = 2, mode: str = "max") -> SearchSpec:
    return make_spec("random_search", PLANE, mode=mode, early_stop=rule, early_stop_startup_trials=startup,
                     early_stop_warmup_steps=warmup)


def done(number: int, final: float) -> Observation:
    return Observation(number, {"x": "0.5", "y": "0.5"}, TrialState.COMPLETED, final, curve(final))


def test_median_stops_a_bad_trial_after_the_startup_trials() -> None:
    spec = stop_spec()
    history = [done(0, 0.8), done(1, 0.9), done(2, 0.7)]
    bad = Observation(3, {"x": "0.1", "y": "0.1"}, TrialState.RUNNING, None, curve(0.1)[:5])
    good = Observation(4, {"x": "0.3", "y": "0.7"}, TrialState.RUNNING, None, curve(0.95)[:5])
    assert searchers.should_stop(spec, [*history, bad, good], bad)
    assert not searchers.should_stop(spec, [*history, bad, good], good)
    assert not searchers.should_stop(spec, history[:2], bad)  # 2 completed < 3 startup trials
    assert not searchers.should_stop(spec, history, Observation(3, {}, TrialState.RUNNING, None, curve(0.1)[:2]))
    assert not searchers.should_stop(spec, history, Observation(3, {}, TrialState.RUNNING, None, ()))
    others = [Observation(5, {}, TrialState.FAILED, None, curve(0.9)),
              Observation(6, {}, TrialState.EARLY_STOPPED, 0.9, curve(0.9)), good]
    assert not searchers.should_stop(spec, [*history[:2], *others], bad)  # only completed trials count


def test_median_minimising_and_none() -> None:
    spec = stop_spec(mode="min", startup=1, warmup=0)
    history = [done(0, 0.5), done(1, 0.6)]
    assert searchers.should_stop(spec, history, Observation(2, {}, TrialState.RUNNING, None, curve(3.0)[:4]))
    assert not searchers.should_stop(spec, history, Observation(2, {}, TrialState.RUNNING, None, curve(0.1)[:4]))
    never = stop_spec(rule="none", startup=0, warmup=0)
    assert not searchers.should_stop(never, history, Observation(2, {}, TrialState.RUNNING, None, curve(-99.0)))


# -- importance --------------------------------------------------------------------------------------------


def test_importance_of_the_parameter_that_matters() -> None:
    spec = make_spec("random_search", [*PLANE, {"name": "opt", "param_type": "discrete",
                                                "discrete_values": ["a", "b"]}])
    history = []
    for number in range(40):
        values = searchers.suggest(spec, 5, history, number)
        noise = (number * 7919 % 13) / 1300  # small, and independent of y and opt
        history.append(Observation(number, values, TrialState.COMPLETED, (float(values["x"]) - 0.3) ** 2 + noise))
    history.append(Observation(40, history[0].params, TrialState.FAILED, None))
    found = searchers.importance(spec, history)
    assert set(found) == {"x", "y", "opt"}
    assert math.isclose(sum(found.values()), 1.0)
    assert found["x"] > 0.5 and found["x"] > found["y"] and found["x"] > found["opt"]
    assert searchers.importance(spec, history) == found


def test_importance_needs_two_completed_trials() -> None:
    spec = make_spec("random_search", PLANE)
    assert searchers.importance(spec, []) == {}
    one = [Observation(0, {"x": "0.1", "y": "0.2"}, TrialState.COMPLETED, 1.0),
           Observation(1, {"x": "0.3", "y": "0.2"}, TrialState.FAILED, None),
           Observation(2, {"x": "0.5", "y": "0.2"}, TrialState.COMPLETED, None),
           Observation(3, {"x": "0.5", "y": "0.4"}, TrialState.RUNNING, None)]
    assert searchers.importance(spec, one) == {}


# -- cost --------------------------------------------------------------------------------------------------


STATES = [*[TrialState.COMPLETED] * 6, TrialState.FAILED, TrialState.EARLY_STOPPED, TrialState.TIMEOUT,
          TrialState.RUNNING]


@pytest.fixture(scope="module")
def thousand() -> list[Observation]:
    rnd = make_spec("random_search")
    history = []
    for number in range(1000):
        values = searchers.suggest(rnd, 1, [], number)
        state = STATES[number % len(STATES)]
        value = score(values) if state in (TrialState.COMPLETED, TrialState.EARLY_STOPPED) else None
        history.append(Observation(number, values, state, value, curve(score(values), 20)))
    return history


@pytest.mark.parametrize("algo", ALGOS)
def test_a_thousand_trials(algo: str, thousand: list[Observation]) -> None:
    """Works with a long history (speed is measured, not asserted)."""
    check_values(make_spec(algo), searchers.suggest(make_spec(algo), 1, thousand, 1000))


def test_early_stopping_and_importance_of_a_thousand_trials(thousand: list[Observation]) -> None:
    spec = make_spec("random_search", early_stop="median")
    assert searchers.should_stop(spec, thousand, Observation(1000, {}, TrialState.RUNNING, None, curve(-99.0)))
    found = searchers.importance(spec, thousand)
    assert found.keys() == {p.name for p in spec.params} and math.isclose(sum(found.values()), 1.0)
    assert max(found, key=lambda k: found[k]) == "lr"
