"""The engine's checkpoint hook, its donated chunk state, and programs that die with
their cohort."""

from __future__ import annotations

import gc
import warnings
import weakref
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tests.test_engine import _flat, hparams, keys
from toolkit import data, engine, runner
from toolkit.parallel import RunAxis
from toolkit.results import ResultsFolder

#: Six epochs evaluated every second one (history_points=3), batch 200: 20 steps an epoch.
SPEC = engine.CohortSpec("mnist1d", "mlp", (16,), "relu", "sgd", "ce", 200, 6, history_points=3)


@pytest.fixture(scope="module")
def dataset():
    return data.load("mnist1d")


def _trained_to(dataset, epochs: int, k, h, history_points: int):
    spec = engine.CohortSpec(
        "mnist1d", "mlp", (16,), "relu", "sgd", "ce", 200, epochs, history_points=history_points
    )
    return engine.Cohort(spec, dataset, run_batch=1).run(k, h)


def test_checkpoint_is_the_run_trained_to_that_epoch(dataset):
    """Run 0 trains, run 1 diverges in epoch 1, run 2 stops at the evaluation of epoch 2.
    A checkpoint equals, bitwise, the final parameters of the same runs trained to that
    epoch (on a CPU every run is computed alone, by the same epoch code): under the same
    evaluation schedule at an evaluation epoch (2), and under another one between
    evaluations (3) for the runs no evaluation stops (evaluated every epoch, run 2 would
    stop at epoch 1). A frozen run's checkpoints are the parameters it froze with."""
    h = hparams([0.05, 1e4, 0.1], stop_train_loss=[0.0, 0.0, 2.0])
    k = keys([0, 1, 2])
    spec = engine.CohortSpec(**{**SPEC.__dict__, "checkpoints": (2, 3, 6)})
    result = engine.Cohort(spec, dataset, run_batch=1).run(k, h)
    assert sorted(result.checkpoints) == [2, 3, 6] and "checkpoints" not in result.state
    assert list(result.state["diverged"]) == [False, True, False]
    assert result.state["stopped_epoch"][2] == 2
    same_schedule = _trained_to(dataset, 2, k, h, history_points=1)  # evaluated at 2
    other_schedule = _trained_to(dataset, 3, k, h, history_points=3)  # at 1, 2, 3
    for r in range(3):
        kept, short = result.checkpoints[2], same_schedule.state["params"]
        assert np.array_equal(_flat(kept, r), _flat(short, r))
    for r in (0, 1):
        kept, short = result.checkpoints[3], other_schedule.state["params"]
        assert np.array_equal(_flat(kept, r), _flat(short, r))
    for r in range(3):  # the last epoch's checkpoint is the final parameters
        assert np.array_equal(_flat(result.checkpoints[6], r), _flat(result.state["params"], r))
    for r in (1, 2):  # frozen runs: every checkpoint is the parameters they froze with
        for epoch in (2, 3):
            final = result.state["params"]
            assert np.array_equal(_flat(result.checkpoints[epoch], r), _flat(final, r))
    assert not np.array_equal(_flat(result.checkpoints[3], 0), _flat(result.checkpoints[6], 0))


@pytest.mark.parametrize("checkpoints", [(0,), (7,), (3, 2), (2, 2), (2.5,), (True,)])
def test_checkpoints_that_cannot_be_kept_are_a_one_line_error(dataset, checkpoints):
    spec = engine.CohortSpec(**{**SPEC.__dict__, "checkpoints": checkpoints})
    with pytest.raises(ValueError, match=r"strictly increasing whole epochs from 1 to 6") as err:
        engine.Cohort(spec, dataset)
    assert "\n" not in str(err.value)


def test_checkpoints_are_counted_in_the_memory_estimate(dataset):
    plain = engine.estimate_memory(SPEC, dataset)
    kept = engine.estimate_memory(
        engine.CohortSpec(**{**SPEC.__dict__, "checkpoints": (2, 4)}), dataset
    )
    num_params = 40 * 16 + 16 + 16 * 10 + 10
    assert kept.state - plain.state == 2 * 4 * num_params and kept.work == plain.work


def test_donated_chunk_state_gives_the_same_training(dataset):
    """The chunk's state is donated (its buffers reused, and deleted for the caller);
    training is bitwise what the same program without donation gives."""
    h, k = hparams([0.05, 0.1], dropout=[0.0, 0.1]), keys([0, 1])
    spec = engine.CohortSpec(**{**SPEC.__dict__, "checkpoints": (3,)})
    cohort = engine.Cohort(spec, dataset, run_batch=1)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "donated buffers were not usable" here
        donated = cohort.run(k, h)
    kept = engine.Cohort(spec, dataset, run_batch=1)
    kept._chunks = {
        (drop, noise): kept.run_axis.program(
            partial(kept._chunk_run, use_dropout=drop, use_noise=noise), 3, 1
        )
        for drop in (False, True)
        for noise in (False, True)
    }
    reference = kept.run(k, h)
    assert np.array_equal(donated.history, reference.history)
    for r in range(2):
        assert np.array_equal(
            _flat(donated.state["params"], r), _flat(reference.state["params"], r)
        )
        assert np.array_equal(_flat(donated.checkpoints[3], r), _flat(reference.checkpoints[3], r))


def test_a_donated_argument_is_consumed():
    axis = RunAxis()
    double = axis.program(lambda x: 2 * x, 1, donate_argnums=(0,))
    x = axis.put_runs(jnp.arange(4.0 * axis.num_devices).reshape(axis.num_devices, 4))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = double(x)
    assert x.is_deleted() and np.array_equal(np.asarray(out)[0], [0, 2, 4, 6])


def _squared_norm(params):  # a module-level measurement: cached across cohorts
    return sum(jnp.sum(leaf**2) for leaf in jax.tree_util.tree_leaves(params))


def _measure(cohort, params, dataset):
    x, y = dataset.x_test[:64], dataset.y_test[:64]
    cohort.map_runs(cohort.evaluate, (params,), (x, y))  # a bound method
    cohort.map_runs(lambda p, xb: cohort.model.apply(p, xb), (params,), (x,))
    return cohort.map_runs(_squared_norm, (params,))


def test_a_cohort_and_its_programs_die_with_it(dataset):
    """A shared RunAxis (one per experiment run) keeps no cohort alive: not its training
    programs, nor measurements mapped with its bound methods or lambdas over it; a
    module-level measurement function stays compiled across cohorts."""
    axis = RunAxis()
    spec = engine.CohortSpec(**{**SPEC.__dict__, "epochs": 2, "history_points": 1})
    h, k = hparams([0.05]), keys([0])
    refs, norms = [], []
    for _ in range(2):
        cohort = engine.Cohort(spec, dataset, axis, run_batch=1)
        result = cohort.run(k, h)
        norms.append(_measure(cohort, result.state["params"], dataset))
        refs.append(weakref.ref(cohort))
        del cohort
        gc.collect()
        assert refs[-1]() is None
    assert list(axis._mapped.keys()) == [_squared_norm]
    (program,) = axis._mapped[_squared_norm][1].values()
    assert program._cache_size() == 1  # compiled once for both cohorts
    assert np.array_equal(norms[0], norms[1])


def test_pending_cohort_keeps_its_checkpoints(tmp_path):
    """A cohort whose measurement failed is kept with its checkpoints (runner pending)."""
    folder = ResultsFolder(tmp_path / "exp" / "default")
    folder.prepare("exp")
    params = {"params": {"Dense_0": {"kernel": np.arange(6.0).reshape(2, 3)}}}
    result = engine.CohortResult(
        state={"params": params, "steps": np.array([3, 4])},
        history=np.zeros((2, 2, len(engine.METRICS))),
        steps=np.zeros((2, 2), np.int64),
        eval_epochs=np.array([0, 4]),
        timings={"run_s": 1.0},
        checkpoints={2: params, 3: jax.tree_util.tree_map(lambda a: a + 1, params)},
    )
    runs = [runner.Run(None, seed, {}, f"run{seed}") for seed in (0, 1)]
    runner._save_pending(folder, "key", runs, result)
    loaded = runner._load_pending(folder, "key", runs)
    assert sorted(loaded.checkpoints) == [2, 3]
    for epoch in (2, 3):
        assert np.array_equal(
            loaded.checkpoints[epoch]["params"]["Dense_0"]["kernel"],
            result.checkpoints[epoch]["params"]["Dense_0"]["kernel"],
        )


class _Scaler:
    def __init__(self, factor: float):
        self.factor = factor

    def apply(self, x):
        return self.factor * x


def test_equal_bound_methods_share_a_program_that_outlives_the_first():
    """Two bound methods of one object are equal, so the second finds the program cached
    for the first; dropping the first must not leave that program without its function."""
    axis = RunAxis()
    scaler = _Scaler(3.0)
    x = axis.put_runs(jnp.ones((axis.num_devices, 2)))
    first = axis.map_runs(scaler.apply, 1)
    first(x)
    second = axis.map_runs(scaler.apply, 1)  # a new, equal bound-method object
    del first
    gc.collect()
    y = axis.put_runs(jnp.ones((axis.num_devices, 5)))  # a new shape: traces again
    assert np.array_equal(np.asarray(second(y)), 3.0 * np.ones((axis.num_devices, 5)))
