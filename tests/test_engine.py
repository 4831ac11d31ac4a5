"""The engine: vmapped equals one by one, divergence is contained, keys, step accounting."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import jax.numpy as jnp
import numpy as np
import pytest

from toolkit import data, engine, models
from toolkit.data import steps_per_epoch
from toolkit.parallel import RunAxis

SPEC = engine.CohortSpec("mnist1d", "mlp", (16,), "relu", "sgd", "ce", 200, 2)


def hparams(learning_rates, **fixed):
    n = len(learning_rates)
    values = {h: np.zeros(n) for h in engine.HPARAMS}
    values.update(momentum=np.full(n, 0.9), init_scale=np.ones(n))
    values["learning_rate"] = np.asarray(learning_rates, float)
    for name, value in fixed.items():
        values[name] = np.broadcast_to(np.asarray(value, float), (n,)).copy()
    return values


def keys(seeds, **pinned):
    return engine.run_keys(7, {s: [pinned.get(s, seed) for seed in seeds] for s in engine.STREAMS})


def pick(h: dict, i: int) -> dict:
    return {k: v[i : i + 1] for k, v in h.items()}


def pick_keys(k: dict, i: int) -> dict:
    return {s: v[i : i + 1] for s, v in k.items()}


@pytest.fixture(scope="module")
def dataset():
    return data.load("mnist1d")


def test_cohort_equals_runs_one_by_one(dataset):
    h = hparams([0.05, 0.1, 0.02], dropout=[0.0, 0.2, 0.1], label_noise=[0.0, 0.3, 0.0])
    k = keys([0, 1, 2])
    cohort = engine.Cohort(SPEC, dataset)
    together = cohort.run(k, h)
    for i in range(3):
        alone = cohort.run(pick_keys(k, i), pick(h, i))
        np.testing.assert_allclose(together.history[i], alone.history[0], rtol=2e-5, atol=2e-6)
        np.testing.assert_allclose(
            _flat(together.state["params"], i),
            _flat(alone.state["params"], 0),
            rtol=1e-4,
            atol=1e-5,
        )


def test_one_run_at_a_time_is_bitwise_the_same_alone_or_in_any_cohort(dataset):
    """run_batch=1 (the CPU layout): a run's numbers do not depend on the runs beside it
    (its place, their number, their hyperparameters, dropout used by a neighbour)."""
    h = hparams([0.05, 0.1, 0.02], dropout=[0.0, 0.2, 0.1], label_noise=[0.0, 0.3, 0.0])
    k = keys([0, 1, 2])
    cohort = engine.Cohort(SPEC, dataset, run_batch=1)
    together = cohort.run(k, h)
    order = [2, 0, 1]
    shuffled = cohort.run(
        {s: v[np.array(order)] for s, v in k.items()}, {name: v[order] for name, v in h.items()}
    )
    for i in range(3):  # run 0 alone is compiled without dropout: the same numbers
        alone = cohort.run(pick_keys(k, i), pick(h, i))
        assert np.array_equal(together.history[i], alone.history[0])
        assert np.array_equal(_flat(together.state["params"], i), _flat(alone.state["params"], 0))
    for place, i in enumerate(order):
        assert np.array_equal(together.history[i], shuffled.history[place])


def _leaves(tree, i):
    import jax

    return [np.asarray(leaf)[i] for leaf in jax.tree_util.tree_leaves(tree)]


def _flat(tree, i):
    return np.concatenate([leaf.ravel() for leaf in _leaves(tree, i)])


def test_one_compile_per_cohort_and_history_shape(dataset):
    spec = engine.CohortSpec("mnist1d", "mlp", (8,), "relu", "sgd", "ce", 400, 6)
    cohort = engine.Cohort(spec, dataset)
    result = cohort.run(keys([0, 1]), hparams([0.05, 0.05]))
    assert cohort.num_chunks > 1
    sizes = {variant: fn._cache_size() for variant, fn in cohort._chunks.items()}
    assert sizes == {(False, False): 1, (False, True): 0, (True, False): 0, (True, True): 0}
    assert result.history.shape == (2, 7, len(engine.METRICS))
    assert list(result.eval_epochs) == list(range(7))
    assert np.all(result.steps[:, -1] == 6 * steps_per_epoch(4000, 400))


def test_diverging_run_is_flagged_and_neighbours_unchanged(dataset):
    h = hparams([0.05, 1e4, 0.05])
    k = keys([0, 1, 2])
    cohort = engine.Cohort(SPEC, dataset)
    result = cohort.run(k, h)
    assert list(result.state["diverged"]) == [False, True, False]
    assert np.all(np.isfinite(_flat(result.state["params"], 1)))
    assert result.state["steps"][1] < result.state["steps"][0]
    for i in (0, 2):
        alone = cohort.run(pick_keys(k, i), pick(h, i))
        np.testing.assert_allclose(result.history[i], alone.history[0], rtol=2e-5, atol=2e-6)


def test_stop_at_train_loss_freezes_the_run(dataset):
    h = hparams([0.1, 0.1], stop_train_loss=[2.0, 0.0])
    result = engine.Cohort(SPEC, dataset).run(keys([0, 0]), h)
    stopped, free = result.state["stopped_epoch"]
    assert stopped >= 1 and free == -1
    assert result.history[0, stopped, 0] <= 2.0
    assert result.history[0, -1, 0] == result.history[0, stopped, 0]
    assert result.state["steps"][0] == stopped * steps_per_epoch(4000, 200)


def test_key_streams_are_independent(dataset):
    cohort = engine.Cohort(SPEC, dataset)
    h = hparams([0.05, 0.05, 0.05])
    result = cohort.run(keys([0, 1, 2], init=0), h)
    init_loss = result.history[:, 0, 0]
    assert init_loss[0] == init_loss[1] == init_loss[2]  # same init ...
    assert not np.allclose(result.history[0, -1], result.history[1, -1])  # ... other order
    fresh = cohort.run(keys([0, 1, 2]), h)
    assert fresh.history[1, 0, 0] != fresh.history[0, 0, 0]


def test_step_accounting():
    # The article's worked example (C07): 100,000 examples, batch 100, 10 epochs.
    assert steps_per_epoch(100_000, 100) == 1_000
    assert 10 * steps_per_epoch(100_000, 100) == 10_000
    assert steps_per_epoch(4_001, 100) == 41  # the last, short batch is a step too
    assert steps_per_epoch(4_000, 4_000) == 1
    with pytest.raises(ValueError):
        steps_per_epoch(10, 0)


def test_schedule_divides_epochs():
    for epochs in (1, 7, 80, 200, 201, 1000):
        every, per_chunk = engine.schedule(epochs)
        assert epochs % every == 0 and (epochs // every) % per_chunk == 0
        assert epochs // every <= engine.MAX_HISTORY_POINTS


def test_schedule_refuses_epochs_it_cannot_evaluate_often():
    """97 epochs at 50 points would evaluate once (no early stopping, no matched-loss
    stop): refused, with epoch counts that work."""
    with pytest.raises(engine.ScheduleError, match="allows only 1; use epochs 96 or 98"):
        engine.schedule(97, 50)
    assert engine.schedule(97, 200) == (1, 1)  # every epoch: fine
    for epochs in (96, 98, 99):
        every, _ = engine.schedule(epochs, 50)
        assert epochs // every >= 12


def test_unschedulable_epochs_are_a_one_line_error(tmp_path):
    from click.testing import CliRunner

    from toolkit.cli import main

    out = tmp_path / "r"
    result = CliRunner().invoke(
        main,
        ["run", "exp_overfitting", "--profile", "quick", "--seeds", "1",
         "--set", "epochs=97", "--set", "history_points=50", "--out", str(out)],
    )  # fmt: skip
    assert result.exit_code == 2 and "epochs=97" in result.output and not out.exists()


MULTI_DEVICE = textwrap.dedent(
    """
    import numpy as np, jax
    from toolkit import data, engine
    from toolkit.parallel import RunAxis
    assert jax.device_count() == 4
    spec = engine.CohortSpec("mnist1d", "mlp", (16,), "relu", "sgd", "ce", 200, 2)
    n = 3  # not a multiple of the device count
    h = {k: np.zeros(n) for k in engine.HPARAMS}
    h.update(learning_rate=np.array([0.05, 0.1, 0.02]), momentum=np.full(n, 0.9),
             init_scale=np.ones(n), dropout=np.array([0.0, 0.2, 0.1]))
    k = engine.run_keys(7, {s: [0, 1, 2] for s in engine.STREAMS})
    ds = data.load("mnist1d")
    one = engine.Cohort(spec, ds, RunAxis(jax.devices()[:1])).run(k, h)
    four = engine.Cohort(spec, ds, RunAxis(jax.devices())).run(k, h)
    assert four.history.shape == one.history.shape == (3, 3, 6)
    np.testing.assert_allclose(four.history, one.history, rtol=2e-5, atol=2e-6)
    for a, b in zip(jax.tree_util.tree_leaves(one.state["params"]),
                    jax.tree_util.tree_leaves(four.state["params"])):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
    print("OK")
    """
)


def test_four_devices_equal_one():
    env = dict(
        os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=4", JAX_PLATFORMS="cpu"
    )
    out = subprocess.run(
        [sys.executable, "-c", MULTI_DEVICE], env=env, capture_output=True, text=True, timeout=300
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert "OK" in out.stdout


def test_gradient_noise_is_per_run(dataset):
    """grad_noise > 0 perturbs only its own run; a zero-noise run in a noisy cohort
    trains exactly as in a cohort without noise."""
    spec = engine.CohortSpec("mnist1d", "mlp", (8,), "relu", "sgd", "ce", 400, 2)
    cohort = engine.Cohort(spec, dataset)
    clean = cohort.run(keys([0, 1]), hparams([0.05, 0.05]))
    noisy = cohort.run(keys([0, 1]), hparams([0.05, 0.05], grad_noise=[0.0, 0.1]))
    np.testing.assert_allclose(noisy.history[0], clean.history[0], rtol=1e-6)
    assert not np.allclose(noisy.history[1, 1:], clean.history[1, 1:])


TRACKED = 64  # examples the tracking tests compute sharpness on
TRACK_SPEC = engine.CohortSpec("mnist1d", "mlp", (4,), "relu", "sgd", "mse", 400, 2)


@pytest.fixture(scope="module")
def tracking_runs(dataset):
    """One cohort with sharpness tracking and the same cohort without (compiled once)."""
    k, h = keys([0, 1]), hparams([0.05, 0.1], label_noise=[0.0, 0.5])
    tracking = engine.CohortSpec(**{**TRACK_SPEC.__dict__, "track_sharpness": TRACKED})
    cohort = engine.Cohort(tracking, dataset)
    return cohort, cohort.run(k, h), engine.Cohort(TRACK_SPEC, dataset).run(k, h)


def test_tracked_sharpness_is_lanczos_on_final_params(dataset, tracking_runs):
    """The sharpness tracked at the last evaluation is lanczos_eigs on the final params
    (the run's own labels, the fixed key) and the top eigenvalue of the dense Hessian."""
    import jax
    import jax.numpy as jnp

    from toolkit import measures

    cohort, result, _ = tracking_runs
    sharpness = result.tracked["sharpness"]
    assert set(result.tracked) == {"sharpness"}
    assert sharpness.shape == result.history.shape[:2] and np.all(np.isfinite(sharpness))
    x = jnp.asarray(dataset.x_train[:TRACKED])
    loss = lambda p, xb, yb: cohort.loss(p, xb, yb)
    key = jax.random.key(engine.TRACK_SEED)
    lanczos = jax.jit(
        lambda p, y: measures.lanczos_eigs(loss, p, x, y, key, engine.TRACK_LANCZOS_ITERS, k=1)
    )
    dense = jax.jit(lambda p, y: _dense_hessian(loss, p, x, y))
    for r in range(2):
        params = jax.tree_util.tree_map(
            lambda leaf, r=r: jnp.asarray(leaf[r]), result.state["params"]
        )
        y = jnp.asarray(result.state["labels"][r][:TRACKED])
        np.testing.assert_allclose(sharpness[r, -1], lanczos(params, y)[0][0], rtol=1e-4)
        top = np.linalg.eigvalsh(np.asarray(dense(params, y), np.float64))[-1]
        np.testing.assert_allclose(sharpness[r, -1], top, rtol=1e-3)
    # The noisy-label run's sharpness uses its own labels, not the clean ones.
    assert not np.array_equal(result.state["labels"][1][:TRACKED], dataset.y_train[:TRACKED])


def _dense_hessian(loss, params, x, y):
    import jax

    flat, unravel = jax.flatten_util.ravel_pytree(params)
    return jax.hessian(lambda v: loss(unravel(v), x, y))(flat)


def test_tracking_leaves_training_unchanged(dataset, tracking_runs):
    _, tracked, plain = tracking_runs
    assert plain.tracked == {}
    np.testing.assert_array_equal(tracked.history, plain.history)
    np.testing.assert_array_equal(tracked.steps, plain.steps)
    too_many = engine.CohortSpec(**{**TRACK_SPEC.__dict__, "track_sharpness": 10**6})
    with pytest.raises(ValueError, match="track_sharpness"):
        engine.Cohort(too_many, dataset)


MONITORED = 64  # examples the per-step monitor computes the training loss on


def _monitor_spec(spec, **changes):
    return engine.CohortSpec(**{**spec.__dict__, "monitor_examples": MONITORED, **changes})


def _monitored_loss(cohort, result, r, x):
    import jax
    import jax.numpy as jnp

    params = jax.tree_util.tree_map(lambda leaf: jnp.asarray(leaf[r]), result.state["params"])
    y = jnp.asarray(result.state["labels"][r][:MONITORED])
    return float(jax.jit(cohort.loss)(params, x, y))


def test_monitored_loss_after_step_k_is_the_loss_of_the_params_after_k_steps(dataset):
    """Full batch (one step per epoch, evaluated every epoch): the monitored loss after
    step k equals the loss on the first examples of the params of the same run trained
    for k steps alone (its own labels), and ``monitor_falls`` counts exactly the steps
    whose monitored loss fell."""
    import jax.numpy as jnp

    steps = 4
    full = engine.CohortSpec("mnist1d", "mlp", (8,), "relu", "sgd", "ce", 4000, steps)
    k, h = keys([0, 1]), hparams([0.5, 3.0], label_noise=[0.0, 0.5], momentum=0.0)
    cohort = engine.Cohort(_monitor_spec(full), dataset, run_batch=1)
    result = cohort.run(k, h)
    loss, falls = result.tracked["monitor_loss"], result.tracked["monitor_falls"]
    assert loss.shape == falls.shape == (2, steps + 1) and falls[:, 0].tolist() == [0, 0]
    x = jnp.asarray(dataset.x_train[:MONITORED])
    for s in range(steps + 1):
        short = engine.CohortSpec(**{**full.__dict__, "epochs": max(s, 1)})
        alone = engine.Cohort(short, dataset, run_batch=1)
        if s == 0:  # before the first step: the init params
            state = alone._init(*alone.run_axis.put_runs((k, h)), alone.arrays)[0]
            before = engine.CohortResult(state, None, None, None, {})
        else:
            before = alone.run(k, h)
        for r in range(2):
            assert loss[r, s] == _monitored_loss(alone, before, r, x), (r, s)
    np.testing.assert_array_equal(falls[:, 1:], np.diff(loss, axis=1) < 0)
    assert falls[:, 1:].sum() > 0 and (falls[:, 1:] == 0).any()  # both outcomes occur


def test_monitor_counts_every_minibatch_step_and_leaves_training_unchanged(dataset):
    """20 steps per epoch: the last monitored loss is that of the final params, each
    evaluation counts falls among its own 20 steps; training is bitwise unchanged."""
    import jax.numpy as jnp

    k, h = keys([0, 1]), hparams([0.05, 0.1], label_noise=[0.0, 0.5])
    cohort = engine.Cohort(_monitor_spec(SPEC), dataset, run_batch=1)
    monitored, plain = cohort.run(k, h), engine.Cohort(SPEC, dataset, run_batch=1).run(k, h)
    assert plain.tracked == {} and "monitor_loss" not in plain.state
    assert set(monitored.tracked) == {"monitor_loss", "monitor_falls"}
    np.testing.assert_array_equal(monitored.history, plain.history)
    np.testing.assert_array_equal(
        _flat(monitored.state["params"], 1), _flat(plain.state["params"], 1)
    )
    x = jnp.asarray(dataset.x_train[:MONITORED])
    falls = monitored.tracked["monitor_falls"]
    assert np.all((falls >= 0) & (falls <= steps_per_epoch(4000, SPEC.batch_size)))
    for r in range(2):
        assert monitored.tracked["monitor_loss"][r, -1] == _monitored_loss(cohort, monitored, r, x)
    with pytest.raises(ValueError, match="monitor_examples"):
        engine.Cohort(_monitor_spec(SPEC, monitor_examples=10**6), dataset)


def _logit_sum(params, x):  # a module-level measurement, as experiments build them
    model = models.build("mlp", (16,), 10, "relu")
    return model.apply(params, x).sum(), jnp.abs(model.apply(params, x)).max()


def test_measurements_compile_once_for_cohorts_of_any_size():
    """A measurement maps runs in fixed-size blocks: cohorts of 3 and 5 runs share one
    compiled program, and a run's values are bitwise the same in either cohort."""
    from toolkit.distributed import CompileClock

    dataset = data.load("mnist1d")
    spec = engine.CohortSpec("mnist1d", "mlp", (16,), "relu", "sgd", "ce", 200, 1, history_points=1)
    axis = RunAxis()
    x = dataset.x_test[:50]
    outputs, clocks = [], []
    for seeds in ([0, 1, 2], [0, 1, 2, 3, 4]):
        cohort = engine.Cohort(spec, dataset, axis, run_batch=1)
        params = cohort.run(keys(seeds), hparams([0.05] * len(seeds))).state["params"]
        with CompileClock() as clock:
            outputs.append(cohort.map_runs(_logit_sum, (params,), (x,)))
        clocks.append(clock)
    assert clocks[0].programs >= 1 and clocks[1].programs == 0
    assert [len(o[0]) for o in outputs] == [3, 5]
    for a, b in zip(outputs[0], outputs[1]):
        assert np.array_equal(a, b[:3])


def test_measure_block_sizes():
    assert engine.measure_block(7, 1, 1) == 1  # CPU: a run at a time
    assert engine.measure_block(7, 2, 4) == 8  # groups of 4 on each of 2 devices
    assert engine.measure_block(5, 1, None) == 8 == engine.measure_block(8, 1, None)
    assert engine.measure_block(9, 2, None) == 16 and engine.measure_block(1, 1, None) == 1


def test_run_keys_are_the_one_by_one_folds():
    """The vectorized folds give bitwise the keys of folding seed by seed on the host."""
    import jax

    seeds = [0, 1, 7, 7, 2**31 + 5, 2**32 - 1] + list(range(100, 170))
    got = engine.run_keys(42, {s: seeds for s in engine.STREAMS})
    root = jax.random.key(42)
    for index, stream in enumerate(engine.STREAMS):
        want = [jax.random.fold_in(jax.random.fold_in(root, s), index) for s in seeds]
        assert np.array_equal(
            jax.random.key_data(got[stream]), jax.random.key_data(jnp.stack(want))
        )
    single = engine.fold_seeds(root, seeds[:3])
    assert np.array_equal(
        jax.random.key_data(single),
        jax.random.key_data(jnp.stack([jax.random.fold_in(root, s) for s in seeds[:3]])),
    )
