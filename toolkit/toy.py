"""Optimizers on analytic 2-D surfaces: many runs as one vmapped, scanned program.

A run is (start point, optimizer kind, learning rate, momentum, gradient-noise std,
key). Every per-run quantity is an array axis, so a whole grid of optimizers ×
hyperparameters × starts × seeds is one ``jit(vmap(run))`` with ``lax.scan`` over
steps. Optimizer kinds differ in code, not only in numbers; in 2-D it is cheap to
compute every kind's update at every step and keep the run's own (its ``kind``
index into :data:`KINDS`), so all kinds share one program.

The optimizers are the engine's (:func:`toolkit.engine.optimizer`: "sgd" is
heavy-ball momentum, plain GD at momentum 0; "nesterov"; "adam" with b1 = momentum),
so a toy run and a network run with the same name follow the same update rule.
Gradient noise is isotropic Gaussian noise of std ``grad_noise`` added to the exact
gradient at every step (perturbed GD), from the run's key folded with the step.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import jax
import jax.numpy as jnp
from jax import lax

from toolkit.engine import optimizer

Surface = Callable[[jax.Array], jax.Array]  # (2,) point → scalar
KINDS = ("sgd", "nesterov", "adam")


def strict_saddle(p: jax.Array) -> jax.Array:
    """f(x, y) = x² − y² + y⁴/4: a strict saddle at 0 (Hessian diag(2, −2)), minima
    f = −1 at (0, ±√2)."""
    x, y = p[0], p[1]
    return x**2 - y**2 + y**4 / 4


def monkey_saddle(p: jax.Array) -> jax.Array:
    """f(x, y) = x³ − 3xy²: a degenerate saddle at 0 (zero Hessian), unbounded below."""
    x, y = p[0], p[1]
    return x**3 - 3 * x * y**2


def quadratic(p: jax.Array) -> jax.Array:
    """f(x, y) = (x² + 4y²)/2: a convex bowl (Hessian diag(1, 4)), for checks."""
    return 0.5 * (p[0] ** 2 + 4 * p[1] ** 2)


SURFACES: dict[str, Surface] = {
    "strict_saddle": strict_saddle,
    "monkey_saddle": monkey_saddle,
    "quadratic": quadratic,
}


def run(
    surface: Surface,
    num_steps: int,
    start: jax.Array,
    kind: jax.Array,
    learning_rate: jax.Array,
    momentum: jax.Array,
    grad_noise: jax.Array,
    key: jax.Array,
) -> dict[str, jax.Array]:
    """One run of ``num_steps`` steps from ``start``; arrays over steps 0 … num_steps.

    Returns ``points`` (T+1, 2), ``loss`` (T+1,) and ``grad_norm`` (T+1,) of the exact
    gradient (before noise). ``kind`` indexes :data:`KINDS`.
    """
    start = jnp.asarray(start, jnp.float32)
    txs = [
        optimizer(name)(learning_rate=learning_rate, momentum=momentum, weight_decay=0.0)
        for name in KINDS
    ]
    value_and_grad = jax.value_and_grad(surface)

    def step(carry, t):
        point, states = carry
        _, grad = value_and_grad(point)
        noise = jax.random.normal(jax.random.fold_in(key, t), point.shape, point.dtype)
        noisy = grad + grad_noise * noise
        outputs = [tx.update(noisy, state, point) for tx, state in zip(txs, states)]
        update = jnp.stack([u for u, _ in outputs])[kind]
        point = point + update
        return (point, tuple(s for _, s in outputs)), point

    init = (start, tuple(tx.init(start) for tx in txs))
    _, points = lax.scan(step, init, jnp.arange(num_steps))
    points = jnp.concatenate([start[None], points])
    losses, grads = jax.vmap(value_and_grad)(points)
    return {"points": points, "loss": losses, "grad_norm": jnp.linalg.norm(grads, axis=-1)}


@partial(jax.jit, static_argnums=(0, 1))
def run_many(
    surface: Surface,
    num_steps: int,
    starts: jax.Array,
    kinds: jax.Array,
    learning_rates: jax.Array,
    momenta: jax.Array,
    grad_noises: jax.Array,
    keys: jax.Array,
) -> dict[str, jax.Array]:
    """:func:`run` vmapped over runs (leading axis R of every array argument)."""
    return jax.vmap(partial(run, surface, num_steps))(
        starts, kinds, learning_rates, momenta, grad_noises, keys
    )


def kind_index(name: str) -> int:
    """The index of optimizer ``name`` in :data:`KINDS` (a clear error otherwise)."""
    if name not in KINDS:
        raise ValueError(f"unknown optimizer {name!r}; use one of {KINDS}")
    return KINDS.index(name)


def hessian_eigs(surface: Surface, point: jax.Array) -> jax.Array:
    """Ascending eigenvalues of the (exact, autodiff) Hessian of ``surface`` at ``point``."""
    return jnp.linalg.eigvalsh(jax.hessian(surface)(jnp.asarray(point, jnp.float32)))


def first_below(values: jax.Array, threshold: float) -> jax.Array:
    """Index of the first entry of ``values`` (last axis) below ``threshold``; −1 if none."""
    below = values < threshold
    return jnp.where(below.any(-1), jnp.argmax(below, -1), -1)
