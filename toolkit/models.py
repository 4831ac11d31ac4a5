"""Flax (linen) models: an MLP, the small 1-D CNN used on MNIST-1D and a 2-D CNN.

Dropout takes its rate as a call argument (an array under vmap, so the rate can be
a per-run hyperparameter) and an explicit key; with ``key=None`` the model is in
evaluation mode and dropout is off. ``features`` returns every layer's activations
(input first) for probes and CKA.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

ACTIVATIONS = {"relu": nn.relu, "tanh": jnp.tanh, "gelu": nn.gelu, "linear": lambda x: x}


def dropout(x: jax.Array, rate: jax.Array | float, key: jax.Array | None) -> jax.Array:
    """Inverted dropout with a traced rate; identity when ``key`` is None or rate is 0."""
    if key is None:
        return x
    keep = 1.0 - rate
    mask = jax.random.uniform(key, x.shape) < keep
    return jnp.where(mask, x / jnp.maximum(keep, 1e-6), 0.0)


class MLP(nn.Module):
    """Fully connected network: input → hidden widths (activation, dropout) → classes."""

    widths: Sequence[int]
    num_classes: int
    activation: str = "relu"

    @nn.compact
    def __call__(self, x, dropout_rate=0.0, key=None, return_features=False):
        act = ACTIVATIONS[self.activation]
        h = x.reshape(x.shape[0], -1)
        features = [h]
        keys = [None] * len(self.widths) if key is None else jax.random.split(key, len(self.widths))
        for width, layer_key in zip(self.widths, keys):
            h = act(nn.Dense(width)(h))
            features.append(h)
            h = dropout(h, dropout_rate, layer_key)
        logits = nn.Dense(self.num_classes)(h)
        return (logits, features) if return_features else logits


class CNN1D(nn.Module):
    """MNIST-1D's ConvBase: three 1-D convolutions (stride 2), then a linear readout."""

    channels: Sequence[int] = (25, 25, 25)
    kernels: Sequence[int] = (5, 3, 3)
    num_classes: int = 10
    activation: str = "relu"

    @nn.compact
    def __call__(self, x, dropout_rate=0.0, key=None, return_features=False):
        act = ACTIVATIONS[self.activation]
        h = x.reshape(x.shape[0], -1, 1) if x.ndim == 2 else x
        features = [h.reshape(h.shape[0], -1)]
        keys = (
            [None] * len(self.channels)
            if key is None
            else jax.random.split(key, len(self.channels))
        )
        for width, kernel, layer_key in zip(self.channels, self.kernels, keys):
            h = act(nn.Conv(width, (kernel,), strides=(2,), padding="SAME")(h))
            features.append(h.reshape(h.shape[0], -1))
            h = dropout(h, dropout_rate, layer_key)
        logits = nn.Dense(self.num_classes)(h.reshape(h.shape[0], -1))
        return (logits, features) if return_features else logits


class CNN2D(nn.Module):
    """A 2-D counterpart of ConvBase for square images (MNIST): three 2-D convolutions
    (stride 2, "SAME" padding), then a linear readout. Flat inputs of n² pixels are
    read as n × n row-major images with one channel."""

    channels: Sequence[int] = (8, 16, 32)
    kernels: Sequence[int] = (5, 3, 3)
    num_classes: int = 10
    activation: str = "relu"

    @nn.compact
    def __call__(self, x, dropout_rate=0.0, key=None, return_features=False):
        act = ACTIVATIONS[self.activation]
        if x.ndim == 2:
            side = math.isqrt(x.shape[1])
            if side * side != x.shape[1]:
                raise ValueError(f"CNN2D needs square images; got {x.shape[1]} features")
            h = x.reshape(x.shape[0], side, side, 1)
        else:
            h = x if x.ndim == 4 else x[..., None]
        features = [h.reshape(h.shape[0], -1)]
        keys = (
            [None] * len(self.channels)
            if key is None
            else jax.random.split(key, len(self.channels))
        )
        for width, kernel, layer_key in zip(self.channels, self.kernels, keys):
            h = act(nn.Conv(width, (kernel, kernel), strides=(2, 2), padding="SAME")(h))
            features.append(h.reshape(h.shape[0], -1))
            h = dropout(h, dropout_rate, layer_key)
        logits = nn.Dense(self.num_classes)(h.reshape(h.shape[0], -1))
        return (logits, features) if return_features else logits


def build(
    kind: str, widths: Sequence[int], num_classes: int, activation: str = "relu"
) -> nn.Module:
    """The model called ``kind`` ("mlp", "cnn" or "cnn2d"); ``widths`` are hidden widths /
    channels (the CNNs' kernels: 5, then 3 for every later layer)."""
    if kind == "mlp":
        return MLP(tuple(widths), num_classes, activation)
    if kind == "cnn":
        kernels = (5,) + (3,) * (len(widths) - 1)
        return CNN1D(tuple(widths), kernels, num_classes, activation)
    if kind == "cnn2d":
        kernels = (5,) + (3,) * (len(widths) - 1)
        return CNN2D(tuple(widths), kernels, num_classes, activation)
    raise ValueError(f"unknown model {kind!r}; use 'mlp', 'cnn' or 'cnn2d'")
