"""Linear probes and Gram-form CKA: exact answers on tiny cases, vmapped == one by one."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from scipy.optimize import minimize

from toolkit import probes


def _blobs(key, n=200, d=6, k=3, spread=0.3):
    """k well-separated Gaussian blobs in d dimensions (linearly separable)."""
    k_centers, k_labels, k_noise = jax.random.split(key, 3)
    centers = 3.0 * jax.random.normal(k_centers, (k, d))
    y = jax.random.randint(k_labels, (n,), 0, k)
    return centers[y] + spread * jax.random.normal(k_noise, (n, d)), y


def test_separable_data_is_probed_perfectly():
    x, y = _blobs(jax.random.key(0))
    out = probes.probe(x[:150], y[:150], x[150:], y[150:], num_classes=3)
    assert float(out["train_acc"]) == 1.0 and float(out["test_acc"]) == 1.0


def test_fit_matches_the_exact_optimum_on_a_tiny_problem():
    x, y = _blobs(jax.random.key(1), n=60, d=3, k=3, spread=2.0)  # overlapping: finite optimum
    l2 = 0.1

    def objective(flat):
        w, b = flat[:9].reshape(3, 3), flat[9:]
        logits = np.asarray(x, np.float64) @ w + b
        logits -= logits.max(axis=1, keepdims=True)
        log_p = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
        return -log_p[np.arange(len(y)), np.asarray(y)].mean() + 0.5 * l2 * np.sum(w**2)

    exact = minimize(objective, np.zeros(12), method="BFGS", options={"gtol": 1e-10}).fun
    w, b = probes.fit_logistic(x, y, 3, l2=l2, steps=3000, learning_rate=0.03)
    found = objective(np.concatenate([np.asarray(w).ravel(), np.asarray(b)]))
    assert abs(found - exact) < 1e-4


def test_vmapped_over_runs_equals_one_by_one():
    keys = jax.random.split(jax.random.key(2), 3)
    x_runs = jnp.stack([_blobs(k, spread=1.5)[0] for k in keys])  # different features per run
    _, y = _blobs(keys[0], spread=1.5)
    fit = jax.jit(lambda xs: probes.probe(xs[:150], y[:150], xs[150:], y[150:], 3, steps=100))
    batched = jax.jit(jax.vmap(fit))(x_runs)
    for r in range(len(keys)):
        single = fit(x_runs[r])
        for name in single:
            np.testing.assert_allclose(batched[name][r], single[name], rtol=1e-5, atol=1e-6)


def test_standardize_uses_train_statistics_and_zeroes_constant_features():
    train = jnp.array([[1.0, 5.0], [3.0, 5.0]])
    test = jnp.array([[2.0, 7.0]])
    z_train, z_test = probes.standardize(train, test)
    np.testing.assert_allclose(z_train, [[-1.0, 0.0], [1.0, 0.0]])
    np.testing.assert_allclose(z_test, [[0.0, 0.0]])
