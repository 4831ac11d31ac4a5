"""Models: output and feature shapes, dropout only with a key."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import pytest

from toolkit import models


@pytest.mark.parametrize("kind, widths, n_features", [("mlp", (16, 8), 3), ("cnn", (4, 4, 4), 4)])
def test_shapes_and_eval_mode(kind, widths, n_features):
    model = models.build(kind, widths, num_classes=10)
    x = jax.random.normal(jax.random.key(0), (5, 40))
    params = model.init(jax.random.key(1), x)
    logits, features = model.apply(params, x, return_features=True)
    assert logits.shape == (5, 10) and len(features) == n_features
    assert jnp.array_equal(model.apply(params, x, 0.5), logits)  # no key: dropout off
    dropped = model.apply(params, x, 0.5, jax.random.key(2))
    assert not jnp.allclose(dropped, logits)


def test_unknown_model_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown model 'rnn'"):
        models.build("rnn", (8,), 10)


def test_cnn2d_shapes_and_eval_mode():
    model = models.build("cnn2d", (4, 8, 8), num_classes=10)
    x = jax.random.uniform(jax.random.key(0), (5, 784))  # flat 28 × 28 images
    params = model.init(jax.random.key(1), x)
    assert params["params"]["Conv_0"]["kernel"].shape == (5, 5, 1, 4)
    logits, features = model.apply(params, x, return_features=True)
    assert logits.shape == (5, 10)
    widths = [784, 14 * 14 * 4, 7 * 7 * 8, 4 * 4 * 8]  # input, then stride 2: 28 → 14 → 7 → 4
    assert [f.shape for f in features] == [(5, w) for w in widths]
    assert jnp.array_equal(model.apply(params, x.reshape(5, 28, 28)), logits)
    assert jnp.array_equal(model.apply(params, x, 0.5), logits)  # no key: dropout off
    assert not jnp.allclose(model.apply(params, x, 0.5, jax.random.key(2)), logits)
    with pytest.raises(ValueError, match="square images"):
        model.init(jax.random.key(1), jnp.zeros((2, 40)))
