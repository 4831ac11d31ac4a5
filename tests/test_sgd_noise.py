"""measures.gradient_noise_scaling: exact on a tiny case, ≈ 1/B on random data, vmappable."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from toolkit import measures as M
from toolkit import models
from toolkit.engine import per_example_loss


def _quadratic(params, x, y):
    """Mean of ½‖w − xᵢ‖²: the per-example gradient is w − xᵢ (y unused)."""
    return 0.5 * jnp.mean(jnp.sum((params["w"] - x) ** 2, axis=-1))


def test_exact_on_equilateral_triangle():
    # Three per-example gradients at the vertices of an equilateral triangle around
    # their mean: every draw of one example deviates by r², every draw of two by r²/4,
    # with no sampling noise. Divided by (N−B)/(N−1) they are r² and r²/2: slope −1.
    angles = 2 * np.pi * np.arange(3) / 3
    x = jnp.asarray(np.stack([np.cos(angles), np.sin(angles)], 1) * 2.0, jnp.float32)
    params = {"w": jnp.array([0.3, -0.7])}
    variances, slope = jax.jit(
        lambda p: M.gradient_noise_scaling(
            _quadratic, p, x, jnp.zeros(3), jax.random.key(0), (1, 2), num_batches=5
        )
    )(params)
    np.testing.assert_allclose(variances, [4.0, 1.0], rtol=1e-5)
    np.testing.assert_allclose(slope, -1.0, atol=1e-5)


def test_matches_trace_of_per_example_covariance():
    rng = np.random.default_rng(0)
    n = 400
    x = jnp.asarray(rng.normal(size=(n, 3)) * [1.0, 2.0, 0.5], jnp.float32)
    params = {"w": jnp.zeros(3)}
    sizes = (4, 16, 64, 200)
    variances, slope = jax.jit(
        lambda p: M.gradient_noise_scaling(
            _quadratic, p, x, None, jax.random.key(1), sizes, num_batches=400
        )
    )(params)
    deviations = np.asarray(x - x.mean(0))
    trace = np.mean(np.sum(deviations**2, 1))  # population covariance trace
    expected = trace / np.array(sizes) * (n - np.array(sizes)) / (n - 1)
    np.testing.assert_allclose(variances, expected, rtol=0.15)
    assert abs(float(slope) + 1.0) < 0.05


def test_vmapped_equals_one_by_one():
    model = models.build("mlp", (8,), 3, "relu")
    rng = np.random.default_rng(2)
    x = jnp.asarray(rng.normal(size=(60, 5)), jnp.float32)
    y = jnp.asarray(rng.integers(0, 3, 60), jnp.int32)

    def loss(p, xb, yb):
        return per_example_loss("ce", model.apply(p, xb), yb).mean()

    params = [model.init(jax.random.key(s), x[:1]) for s in range(3)]
    stacked = jax.tree.map(lambda *a: jnp.stack(a), *params)
    keys = jax.random.split(jax.random.key(3), 3)

    @jax.jit
    def one(p, k):
        return M.gradient_noise_scaling(loss, p, x, y, k, (5, 20), num_batches=4)

    var_v, slope_v = jax.jit(jax.vmap(one))(stacked, keys)
    for r in range(3):
        var_r, slope_r = one(params[r], keys[r])
        np.testing.assert_allclose(var_v[r], var_r, rtol=1e-5)
        np.testing.assert_allclose(slope_v[r], slope_r, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("sizes", [(4, 60), (8, 8), (0, 4)])
def test_rejects_bad_batch_sizes(sizes):
    x = jnp.zeros((60, 2))
    with pytest.raises(ValueError):
        M.gradient_noise_scaling(_quadratic, {"w": jnp.zeros(2)}, x, None, jax.random.key(0), sizes)
