"""Linear read-outs of frozen representations: logistic-regression probes.

A probe is multinomial logistic regression on one layer's activations, fitted on a
train split and scored on a test split (Alain & Bengio 2016). Every probe gets the
same fixed budget: features standardized by the train split's mean and SD
(constant features, e.g. dead ReLUs, become zeros), weights started at zero, and
``steps`` full-batch Adam steps on mean cross-entropy + ``l2``/2·‖W‖² (bias
unpenalized). No randomness enters, so a probe is a pure function of its data and
``jax.vmap`` over runs (activations with a leading run axis, shared labels) gives
what fitting the runs one by one gives.
(CKA between representations, feature and Gram forms, is in :mod:`toolkit.alignment`.)
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

#: The default probe budget (the same for every layer of every network).
PROBE_STEPS = 300
PROBE_LEARNING_RATE = 0.01
PROBE_L2 = 1e-3


def standardize(x_train: jax.Array, x_test: jax.Array, eps: float = 1e-6):
    """(train, test) features centered and scaled by the train split's mean and SD;
    features with SD ≤ ``eps`` on the train split become 0."""
    mean = x_train.mean(axis=0)
    sd = x_train.std(axis=0)
    scale = jnp.where(sd > eps, 1.0 / jnp.where(sd > eps, sd, 1.0), 0.0)
    return (x_train - mean) * scale, (x_test - mean) * scale


def fit_logistic(
    x: jax.Array,
    y: jax.Array,
    num_classes: int,
    l2: float = PROBE_L2,
    steps: int = PROBE_STEPS,
    learning_rate: float = PROBE_LEARNING_RATE,
) -> tuple[jax.Array, jax.Array]:
    """Weights (d, K) and bias (K,) of logistic regression on (x, y) by full-batch Adam."""
    params = (jnp.zeros((x.shape[1], num_classes), x.dtype), jnp.zeros(num_classes, x.dtype))
    tx = optax.adam(learning_rate)

    def objective(p):
        w, b = p
        ce = optax.softmax_cross_entropy_with_integer_labels(x @ w + b, y).mean()
        return ce + 0.5 * l2 * jnp.sum(w**2)

    def step(carry, _):
        p, state = carry
        grads = jax.grad(objective)(p)
        updates, state = tx.update(grads, state, p)
        return (optax.apply_updates(p, updates), state), None

    (params, _), _ = jax.lax.scan(step, (params, tx.init(params)), None, length=steps)
    return params


def probe(
    x_train: jax.Array,
    y_train: jax.Array,
    x_test: jax.Array,
    y_test: jax.Array,
    num_classes: int,
    l2: float = PROBE_L2,
    steps: int = PROBE_STEPS,
    learning_rate: float = PROBE_LEARNING_RATE,
) -> dict[str, jax.Array]:
    """Train/test accuracy and test cross-entropy of a logistic probe on (n, d) features."""
    x_train = x_train.reshape(x_train.shape[0], -1)
    x_test = x_test.reshape(x_test.shape[0], -1)
    z_train, z_test = standardize(x_train, x_test)
    w, b = fit_logistic(z_train, y_train, num_classes, l2, steps, learning_rate)
    logits_train, logits_test = z_train @ w + b, z_test @ w + b
    return {
        "train_acc": jnp.mean(jnp.argmax(logits_train, -1) == y_train),
        "test_acc": jnp.mean(jnp.argmax(logits_test, -1) == y_test),
        "test_loss": optax.softmax_cross_entropy_with_integer_labels(logits_test, y_test).mean(),
    }
