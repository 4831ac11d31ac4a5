"""toolkit.toy: vmapped runs equal single runs, and the updates match closed forms and optax."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from toolkit import toy


def _grid():
    """Six runs covering every optimizer kind, noise, and different starts and rates."""
    starts = jnp.array(
        [[1.0, 1e-3], [0.5, -1e-2], [1.0, 1e-4], [-0.3, 2e-3], [1.0, -1e-3], [0.2, 0.1]]
    )
    kinds = jnp.array([0, 0, 0, 1, 2, 0])
    lrs = jnp.array([0.01, 0.1, 0.02, 0.01, 0.05, 0.01])
    momenta = jnp.array([0.0, 0.0, 0.9, 0.9, 0.9, 0.0])
    noises = jnp.array([0.0, 0.0, 0.0, 0.0, 0.0, 1e-2])
    keys = jax.random.split(jax.random.key(3), 6)
    return starts, kinds, lrs, momenta, noises, keys


def test_vmapped_equals_one_by_one():
    args = _grid()
    many = toy.run_many(toy.strict_saddle, 50, *args)
    single = jax.jit(toy.run, static_argnums=(0, 1))  # one compile for all six runs
    for r in range(len(args[0])):
        one = single(toy.strict_saddle, 50, *(a[r] for a in args))
        for name in ("points", "loss", "grad_norm"):
            np.testing.assert_allclose(many[name][r], one[name], rtol=1e-5, atol=1e-7)


def test_gd_on_quadratic_matches_closed_form():
    # f = (x² + 4y²)/2: GD multiplies each coordinate by (1 − lr·h) per step.
    start, lr, steps = jnp.array([[0.7, -0.4]]), 0.1, 30
    out = toy.run_many(
        toy.quadratic,
        steps,
        start,
        jnp.array([toy.kind_index("sgd")]),
        jnp.array([lr]),
        jnp.array([0.0]),
        jnp.array([0.0]),
        jax.random.split(jax.random.key(0), 1),
    )
    t = np.arange(steps + 1)[:, None]
    expected = np.array([0.7, -0.4]) * (1 - lr * np.array([1.0, 4.0])) ** t
    np.testing.assert_allclose(out["points"][0], expected, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(out["loss"][0], 0.5 * (expected**2 @ [1.0, 4.0]), rtol=1e-5)


@pytest.mark.parametrize("kind", ["sgd", "nesterov", "adam"])
def test_updates_match_optax(kind):
    lr, momentum, steps = 0.03, 0.9, 40
    reference = {
        "sgd": optax.sgd(lr, momentum=momentum),
        "nesterov": optax.sgd(lr, momentum=momentum, nesterov=True),
        "adam": optax.adam(lr, b1=momentum),
    }[kind]

    @jax.jit
    def step(point, state):
        updates, state = reference.update(jax.grad(toy.strict_saddle)(point), state, point)
        return optax.apply_updates(point, updates), state

    point = jnp.array([1.0, 1e-2])
    state = reference.init(point)
    path = [point]
    for _ in range(steps):
        point, state = step(point, state)
        path.append(point)
    out = toy.run(
        toy.strict_saddle,
        steps,
        jnp.array([1.0, 1e-2]),
        toy.kind_index(kind),
        lr,
        momentum,
        0.0,
        jax.random.key(0),
    )
    np.testing.assert_allclose(out["points"], np.stack(path), rtol=1e-5, atol=1e-7)


def test_noise_is_injected_and_keyed():
    starts, kinds, lrs, momenta, _, keys = _grid()
    noises = jnp.full(len(starts), 1e-2)
    a = toy.run_many(toy.strict_saddle, 20, starts, kinds, lrs, momenta, noises, keys)
    b = toy.run_many(toy.strict_saddle, 20, starts, kinds, lrs, momenta, noises, keys)
    clean = toy.run_many(toy.strict_saddle, 20, starts, kinds, lrs, momenta, 0 * noises, keys)
    np.testing.assert_array_equal(a["points"], b["points"])
    assert not np.allclose(a["points"], clean["points"])


def test_saddle_hessian_and_escape_index():
    np.testing.assert_allclose(toy.hessian_eigs(toy.strict_saddle, jnp.zeros(2)), [-2.0, 2.0])
    np.testing.assert_allclose(toy.hessian_eigs(toy.monkey_saddle, jnp.zeros(2)), [0.0, 0.0])
    values = jnp.array([[3.0, 1.0, -1.0, -2.0], [3.0, 2.0, 1.0, 0.5]])
    np.testing.assert_array_equal(toy.first_below(values, 0.0), [2, -1])
    with pytest.raises(ValueError, match="unknown optimizer"):
        toy.kind_index("rmsprop")
