"""Calibration: ECE, reliability bins and temperature scaling against exact answers."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from toolkit import calibration as cal

fit_temperature = jax.jit(cal.fit_temperature)


def test_hand_computed_bins_and_ece():
    # Four predictions, 2 classes, confidences 0.6, 0.6, 0.9, 0.9; 5 bins of width 0.2.
    probs = jnp.array([[0.6, 0.4], [0.4, 0.6], [0.9, 0.1], [0.1, 0.9]])
    labels = jnp.array([0, 0, 0, 0])  # correct, wrong, correct, wrong
    count, confidence, accuracy = cal.reliability_bins(probs, labels, num_bins=5)
    np.testing.assert_allclose(count, [0, 0, 2, 0, 2])
    np.testing.assert_allclose(confidence, [0, 0, 0.6, 0, 0.9], rtol=1e-6)
    np.testing.assert_allclose(accuracy, [0, 0, 0.5, 0, 0.5], rtol=1e-6)
    # ECE = 0.5·|0.5 − 0.6| + 0.5·|0.5 − 0.9| = 0.25
    assert float(cal.ece(probs, labels, num_bins=5)) == pytest.approx(0.25, abs=1e-6)


def test_bin_edges_are_right_closed():
    # Confidence exactly 1.0 goes to the last bin, 0.55 to (0.4, 0.6] of 5 bins.
    probs = jnp.array([[1.0, 0.0], [0.55, 0.45]])
    count, _, _ = cal.reliability_bins(probs, jnp.array([0, 1]), num_bins=5)
    np.testing.assert_allclose(count, [0, 0, 1, 0, 1])


def test_perfectly_calibrated_predictor_has_ece_near_zero():
    k_logits, k_labels = jax.random.split(jax.random.key(0))
    logits = 2.0 * jax.random.normal(k_logits, (100_000, 10))
    labels = jax.random.categorical(k_labels, logits)  # labels drawn from the predictor
    probs = jax.nn.softmax(logits)
    assert float(cal.ece(probs, labels)) < 0.01
    # A systematically overconfident version of the same predictor is far from calibrated.
    assert float(cal.ece(jax.nn.softmax(3.0 * logits), labels)) > 0.1


@pytest.mark.parametrize("true_t", [0.5, 2.5])
def test_temperature_recovers_known_t(true_t):
    k_logits, k_labels = jax.random.split(jax.random.key(1))
    calibrated = 1.5 * jax.random.normal(k_logits, (20_000, 10))
    labels = jax.random.categorical(k_labels, calibrated)
    logits = calibrated * true_t  # miscalibrated by T: dividing by true_t recovers them
    fitted = float(fit_temperature(logits, labels))
    assert fitted == pytest.approx(true_t, rel=0.05)
    # The fit is the NLL minimum: nudging T either way does not lower the NLL.
    best = float(cal.nll(logits, labels, fitted))
    assert best <= float(cal.nll(logits, labels, fitted * 1.02)) + 1e-6
    assert best <= float(cal.nll(logits, labels, fitted / 1.02)) + 1e-6


def test_temperature_vmaps_like_one_by_one_and_keeps_accuracy():
    keys = jax.random.split(jax.random.key(2), 3)
    logits = jnp.stack([s * jax.random.normal(k, (2_000, 5)) for s, k in zip((1, 3, 6), keys)])
    labels = jax.random.randint(jax.random.key(3), (3, 2_000), 0, 5)
    labels = jnp.where(jnp.arange(2_000) % 2 == 0, jnp.argmax(logits, -1), labels)
    batched = jax.vmap(cal.fit_temperature)(logits, labels)
    single = jnp.stack([fit_temperature(z, y) for z, y in zip(logits, labels)])
    np.testing.assert_allclose(batched, single, rtol=1e-5)
    for z, t in zip(logits, batched):
        assert jnp.array_equal(jnp.argmax(z / t, -1), jnp.argmax(z, -1))


def test_entropy_rises_with_temperature():
    logits = jax.random.normal(jax.random.key(4), (500, 10)) * 4
    temps = jnp.geomspace(0.1, 50.0, 30)
    entropy = jax.jit(jax.vmap(lambda t: cal.mean_entropy(logits, t)))(temps)
    assert bool(jnp.all(jnp.diff(entropy) > 0))
    assert float(entropy[-1]) == pytest.approx(np.log(10), abs=0.01)
