"""Calibration of a classifier's probabilities: reliability bins, ECE, temperature scaling.

Pure JAX with fixed shapes and iteration counts, so every function vmaps over runs
(``jax.vmap(fit_temperature)(logits_RxNxK, labels_RxN)``). Conventions (Guo et al.
2017): the confidence of a prediction is its largest class probability; equal-width
bins on [0, 1], bin b holding confidences in (b/B, (b+1)/B] (the first bin also holds
0); ECE = Σ_b (n_b / N) · |accuracy_b − confidence_b|. Temperature scaling divides the
logits by one scalar T > 0 fitted by minimizing the negative log-likelihood on held-out
data; it never changes the argmax, so accuracy is unchanged.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

NUM_BINS = 15
#: Bracket of the fitted temperature.
T_MIN, T_MAX = 1e-2, 1e2
_GOLDEN = (math.sqrt(5.0) - 1.0) / 2.0


def nll(logits: jax.Array, labels: jax.Array, temperature: jax.Array | float = 1.0) -> jax.Array:
    """Mean negative log-likelihood of ``labels`` under softmax(logits / T)."""
    log_probs = jax.nn.log_softmax(logits / temperature, axis=-1)
    return -jnp.mean(jnp.take_along_axis(log_probs, labels[:, None], axis=-1))


def mean_entropy(logits: jax.Array, temperature: jax.Array | float = 1.0) -> jax.Array:
    """Mean predictive entropy (nats) of softmax(logits / T) over the examples."""
    log_probs = jax.nn.log_softmax(logits / temperature, axis=-1)
    return -jnp.mean(jnp.sum(jnp.exp(log_probs) * log_probs, axis=-1))


def reliability_bins(
    probs: jax.Array, labels: jax.Array, num_bins: int = NUM_BINS
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Per confidence bin: (count, mean confidence, accuracy); empty bins hold 0, 0."""
    confidence = jnp.max(probs, axis=-1)
    correct = (jnp.argmax(probs, axis=-1) == labels).astype(probs.dtype)
    index = jnp.clip(jnp.ceil(confidence * num_bins).astype(jnp.int32) - 1, 0, num_bins - 1)
    onehot = jax.nn.one_hot(index, num_bins, dtype=probs.dtype)  # (N, bins)
    count = onehot.sum(axis=0)
    safe = jnp.maximum(count, 1.0)
    return count, (onehot.T @ confidence) / safe, (onehot.T @ correct) / safe


def ece(probs: jax.Array, labels: jax.Array, num_bins: int = NUM_BINS) -> jax.Array:
    """Expected calibration error with ``num_bins`` equal-width confidence bins."""
    count, confidence, accuracy = reliability_bins(probs, labels, num_bins)
    return jnp.sum(count * jnp.abs(accuracy - confidence)) / jnp.sum(count)


def fit_temperature(
    logits: jax.Array,
    labels: jax.Array,
    lower: float = T_MIN,
    upper: float = T_MAX,
    golden_steps: int = 40,
    newton_steps: int = 4,
) -> jax.Array:
    """The temperature T in [lower, upper] minimizing ``nll(logits, labels, T)``.

    NLL is convex in the inverse temperature β = 1/T, hence unimodal in log T: a
    golden-section search on log T (fixed steps) brackets the minimum, then Newton
    steps on β (clipped to the bracket) polish it past float32's flat NLL near the
    optimum. A minimum at a bound returns that bound.
    """

    def loss_of_log_t(log_t):
        return nll(logits, labels, jnp.exp(log_t))

    def golden(_, bracket):
        a, b = bracket
        c = b - _GOLDEN * (b - a)
        d = a + _GOLDEN * (b - a)
        left = loss_of_log_t(c) < loss_of_log_t(d)
        return jnp.where(left, a, c), jnp.where(left, d, b)

    dtype = logits.dtype
    bracket = (jnp.log(jnp.asarray(lower, dtype)), jnp.log(jnp.asarray(upper, dtype)))
    a, b = jax.lax.fori_loop(0, golden_steps, golden, bracket)
    log_t = 0.5 * (a + b)

    def loss_of_beta(beta):
        return nll(logits, labels, 1.0 / beta)

    grad = jax.grad(loss_of_beta)
    curvature = jax.grad(grad)

    def newton(_, beta):
        step = grad(beta) / jnp.maximum(curvature(beta), 1e-12)
        return jnp.clip(beta - step, 1.0 / upper, 1.0 / lower)

    start = jnp.exp(-log_t)
    beta = jax.lax.fori_loop(0, newton_steps, newton, start)
    # Keep the Newton result where it is closer to stationary (the NLL itself is too
    # flat near the optimum to compare in float32); at a bound the two agree.
    polished = jnp.abs(grad(beta)) <= jnp.abs(grad(start))
    return jnp.where(polished, 1.0 / beta, 1.0 / start)
