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


class ConvNet(nn.Module):
    """Three strided convolutions (stride 2, "SAME" padding), then a linear readout.

    ``spatial_dims`` = 1 is MNIST-1D's ConvBase (flat inputs are sequences of one
    channel); 2 is its counterpart for square images (MNIST: flat inputs of n² pixels are
    read as n × n row-major images with one channel).
    """

    channels: Sequence[int] = (25, 25, 25)
    kernels: Sequence[int] = (5, 3, 3)
    num_classes: int = 10
    activation: str = "relu"
    spatial_dims: int = 1

    def _images(self, x: jax.Array) -> jax.Array:
        if self.spatial_dims == 1:
            return x.reshape(x.shape[0], -1, 1) if x.ndim == 2 else x
        if x.ndim == 2:
            side = math.isqrt(x.shape[1])
            if side * side != x.shape[1]:
                raise ValueError(f"a 2-D CNN needs square images; got {x.shape[1]} features")
            return x.reshape(x.shape[0], side, side, 1)
        return x if x.ndim == 4 else x[..., None]

    @nn.compact
    def __call__(self, x, dropout_rate=0.0, key=None, return_features=False):
        act = ACTIVATIONS[self.activation]
        h = self._images(x)
        features = [h.reshape(h.shape[0], -1)]
        keys = (
            [None] * len(self.channels)
            if key is None
            else jax.random.split(key, len(self.channels))
        )
        dims = self.spatial_dims
        for width, kernel, layer_key in zip(self.channels, self.kernels, keys):
            conv = nn.Conv(width, (kernel,) * dims, strides=(2,) * dims, padding="SAME")
            h = act(conv(h))
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
    if kind in ("cnn", "cnn2d"):
        kernels = (5,) + (3,) * (len(widths) - 1)
        dims = 2 if kind == "cnn2d" else 1
        return ConvNet(tuple(widths), kernels, num_classes, activation, spatial_dims=dims)
    raise ValueError(f"unknown model {kind!r}; use 'mlp', 'cnn' or 'cnn2d'")
