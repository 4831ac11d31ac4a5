"""Curvature and loss-landscape measurements on Flax parameter pytrees.

Every function is pure JAX with fixed iteration counts and explicit keys, so a cohort of
runs is measured in one program: ``jax.vmap(lambda p, k: lanczos_eigs(loss_fn, p, x, y, k))
(params_R, keys_R)`` with the data broadcast.

Conventions:

* ``loss_fn(params, x, y)`` returns the mean loss over the examples (eval mode, no dropout).
  The slice and interpolation functions also accept a function returning an array of
  mean metrics, e.g. ``jnp.stack([loss, accuracy])``.
* ``chunk_size`` bounds memory: the examples are split into equal chunks that a
  ``lax.scan`` walks through, and the per-chunk means are averaged.  The leading data
  dimension must be divisible by ``chunk_size`` (checked, since shapes are static); equal
  chunks make the average of chunk means the exact mean, with no padding or masking.
* Every function that evaluates the loss traces under ``default_matmul_precision("highest")``:
  TF32 on GPU shifts a top Hessian eigenvalue by ~5e-5 relative (no effect on CPU).

Lanczos is hand-written rather than taken from ``matfree`` 0.6.3, whose
``decomp.tridiag_sym`` vmaps and matches on generic spectra but has no breakdown handling
(an invariant Krylov space: ``H = 0`` gives NaN, ``H = 2I`` with ``num_matvecs = n`` gives
spurious Ritz values 7.4 and -3.4), raises for ``num_matvecs > n`` instead of clamping, and
is not a project dependency.  Here a breakdown restarts from a fresh orthogonal vector.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
from jax import lax
from jax.flatten_util import ravel_pytree

PyTree = Any
Array = jax.Array
Chunk = int | None  # examples per chunk; None evaluates all at once
LossFn = Callable[[PyTree, Any, Any], Array]


def _highest_precision(fn: Callable) -> Callable:
    """Trace ``fn`` at full float32 matmul precision; the setting is read at trace time."""

    @functools.wraps(fn)
    def wrapped(*args, **kwargs):
        with jax.default_matmul_precision("highest"):
            return fn(*args, **kwargs)

    return wrapped


def _num_examples(x: PyTree) -> int:
    return jax.tree.leaves(x)[0].shape[0]


def _chunk_mean(f: Callable, x: PyTree, y: PyTree, chunk_size: Chunk) -> PyTree:
    """Mean of ``f(x_chunk, y_chunk)`` over equal chunks, scanned so memory holds one chunk."""
    n = _num_examples(x)
    if chunk_size is None or chunk_size >= n:
        return f(x, y)
    if n % chunk_size:
        raise ValueError(f"{n} examples are not divisible by chunk_size={chunk_size}")
    chunks = jax.tree.map(lambda a: a.reshape(n // chunk_size, chunk_size, *a.shape[1:]), (x, y))
    first = jax.tree.map(lambda a: a[0], chunks)
    zeros = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), jax.eval_shape(f, *first))

    def add_chunk(total, xy):
        return jax.tree.map(jnp.add, total, f(*xy)), None

    total, _ = lax.scan(add_chunk, zeros, chunks)
    return jax.tree.map(lambda t: t / (n // chunk_size), total)


def _mean_loss(loss_fn: LossFn, params: PyTree, x, y, chunk_size: Chunk) -> Array:
    return _chunk_mean(lambda xc, yc: loss_fn(params, xc, yc), x, y, chunk_size)


def _add_scaled(params: PyTree, direction: PyTree, scale) -> PyTree:
    """``params + scale * direction``, keeping each leaf's dtype."""
    return jax.tree.map(lambda p, d: (p + scale * d).astype(p.dtype), params, direction)


@_highest_precision
def hvp(loss_fn: LossFn, params: PyTree, x, y, v: PyTree, chunk_size: Chunk = None) -> PyTree:
    """Hessian-vector product H v of the mean loss, by forward-over-reverse differentiation."""

    def chunk_hvp(xc, yc):
        grad_fn = lambda p: jax.grad(loss_fn)(p, xc, yc)
        return jax.jvp(grad_fn, (params,), (v,))[1]

    return _chunk_mean(chunk_hvp, x, y, chunk_size)


def _flat_hvp(loss_fn: LossFn, params: PyTree, x, y, chunk_size: Chunk) -> Callable:
    """The Hessian as a function on flat vectors, for the Krylov and trace routines."""
    _, unravel = ravel_pytree(params)
    return lambda v: ravel_pytree(hvp(loss_fn, params, x, y, unravel(v), chunk_size))[0]


def _lanczos(matvec: Callable, like: Array, key: Array, num_iters: int) -> Array:
    """Ascending Ritz values of a symmetric operator after ``min(num_iters, n)`` Lanczos steps.

    Full reorthogonalisation (two Gram-Schmidt passes against all stored vectors) keeps
    the basis orthonormal in float32, so no spurious copies of converged eigenvalues appear.
    """
    n, dtype = like.shape[0], like.dtype
    m = min(num_iters, n)  # the Krylov space cannot exceed the dimension
    start_key, restart_key = jax.random.split(key)
    eps = jnp.finfo(dtype).eps

    def orthogonalise(basis, w):
        w = w - basis.T @ (basis @ w)
        return w - basis.T @ (basis @ w)

    def step(i, state):
        basis, alphas, betas, v = state
        basis = basis.at[i].set(v)
        w = matvec(v)
        alphas = alphas.at[i].set(jnp.vdot(v, w))
        scale = jnp.linalg.norm(w)
        w = orthogonalise(basis, w)
        beta = jnp.linalg.norm(w)
        # Breakdown (invariant Krylov space) leaves only rounding noise in w; continuing
        # from a fresh random vector orthogonal to the basis, with zero coupling, keeps the
        # basis orthonormal and T its exact projection of the operator.
        broke = beta <= 10 * eps * jnp.sqrt(n) * scale
        fresh = orthogonalise(
            basis, jax.random.normal(jax.random.fold_in(restart_key, i), (n,), dtype)
        )
        v_next = jnp.where(broke, fresh / jnp.linalg.norm(fresh), w / jnp.where(broke, 1, beta))
        betas = betas.at[i].set(jnp.where(broke, 0, beta))
        return basis, alphas, betas, v_next

    v0 = jax.random.normal(start_key, (n,), dtype)
    zeros = jnp.zeros(m, dtype)
    init = (jnp.zeros((m, n), dtype), zeros, zeros, v0 / jnp.linalg.norm(v0))
    _, alphas, betas, _ = lax.fori_loop(0, m, step, init)
    off = betas[:-1]
    tridiagonal = jnp.diag(alphas) + jnp.diag(off, 1) + jnp.diag(off, -1)
    return jnp.linalg.eigvalsh(tridiagonal)


@_highest_precision
def lanczos_eigs(
    loss_fn: LossFn,
    params: PyTree,
    x,
    y,
    key: Array,
    num_iters: int = 40,
    k: int = 3,
    chunk_size: Chunk = None,
) -> tuple[Array, Array]:
    """Top-``k`` Hessian eigenvalues (descending) and the smallest (algebraic) eigenvalue.

    Lanczos with full reorthogonalisation on the flattened parameters; ``num_iters`` HVPs,
    clamped to the parameter count.  Extreme eigenvalues converge first, which is why both
    ends are returned; ``k`` is clamped to the number of Ritz values.  Memory holds
    ``num_iters`` parameter-sized vectors.  On the 203-parameter test MLP the default 40
    iterations give the top 3 and the smallest to ~1e-15 relative in float64 and ~4e-7 in
    float32 (20 iterations: ~2e-6 in float64).
    """
    flat, _ = ravel_pytree(params)
    ritz = _lanczos(_flat_hvp(loss_fn, params, x, y, chunk_size), flat, key, num_iters)
    return ritz[::-1][:k], ritz[0]


@_highest_precision
def adaptive_top_eig(
    loss_fn: LossFn, params: PyTree, x, y, key: Array, num_iters: int = 40, chunk_size: Chunk = None
) -> Array:
    """Top eigenvalue of diag(|θ|) H diag(|θ|), a curvature invariant to ReLU layer rescaling.

    Rescaling θ→Dθ (D diagonal, positive) maps H to D⁻¹HD⁻¹ and |θ| to D|θ|, so the scaled
    operator is unchanged; the raw top eigenvalue is not (Dinh et al. 2017).  Zero-valued
    parameters (e.g. zero-initialised biases) drop out.
    """
    flat, _ = ravel_pytree(params)
    scale = jnp.abs(flat)
    flat_hvp = _flat_hvp(loss_fn, params, x, y, chunk_size)
    return _lanczos(lambda v: scale * flat_hvp(scale * v), flat, key, num_iters)[-1]


@_highest_precision
def hutchinson_trace(
    loss_fn: LossFn,
    params: PyTree,
    x,
    y,
    key: Array,
    num_probes: int = 100,
    chunk_size: Chunk = None,
) -> tuple[Array, Array]:
    """Hessian trace estimate from Rademacher probes zᵀHz: (mean, standard error over probes).

    Probes run sequentially (``lax.map``) so memory does not grow with ``num_probes``.
    """
    flat, _ = ravel_pytree(params)
    flat_hvp = _flat_hvp(loss_fn, params, x, y, chunk_size)
    probes = jax.random.rademacher(key, (num_probes, flat.shape[0]), flat.dtype)
    samples = lax.map(lambda z: jnp.vdot(z, flat_hvp(z)), probes)
    return samples.mean(), samples.std(ddof=1) / jnp.sqrt(num_probes)


def _box_sharpness(loss_fn, params, x, y, radius, steps, chunk_size, return_delta):
    """100·(max_u L(θ + radius⊙u) − L(θ)) / (1 + L(θ)) over u ∈ [-1, 1]ⁿ.

    Projected sign-gradient ascent: start at the gradient-sign corner u = sign(∇ᵤL), take
    ``steps`` sign steps of size 2.5/steps (Madry et al. 2018, so the iterate can cross the
    box), clip back into the box, and keep the best point seen.  Including θ and the corner
    among the points seen makes the result ≥ 0 and ≥ the one-step corner value.
    """
    flat, unravel = ravel_pytree(params)

    def value_and_grad(u):
        def chunk(xc, yc):
            return jax.value_and_grad(lambda u_: loss_fn(unravel(flat + radius * u_), xc, yc))(u)

        return _chunk_mean(chunk, x, y, chunk_size)

    loss0, grad0 = value_and_grad(jnp.zeros_like(flat))

    def step(_, state):
        u, best, best_u = state
        value, grad = value_and_grad(u)
        best_u = jnp.where(value > best, u, best_u)
        return jnp.clip(u + 2.5 / steps * jnp.sign(grad), -1, 1), jnp.maximum(value, best), best_u

    # steps + 1 evaluations: the corner plus one per ascent step (the last update is unused).
    init = (jnp.sign(grad0), loss0, jnp.zeros_like(flat))
    _, best, best_u = lax.fori_loop(0, steps + 1, step, init)
    value = 100 * (best - loss0) / (1 + loss0)
    return (value, unravel(radius * best_u)) if return_delta else value


@_highest_precision
def keskar_sharpness(
    loss_fn: LossFn,
    params: PyTree,
    x,
    y,
    eps: float = 1e-3,
    steps: int = 20,
    chunk_size: Chunk = None,
    return_delta: bool = False,
):
    """Keskar et al. (2017) sharpness, metric 2.1 in full space (A = I).

    100·(max_{|δᵢ| ≤ ε(|θᵢ|+1)} L(θ+δ) − L(θ)) / (1 + L(θ)).  Keskar used 10 L-BFGS-B
    iterations; here the max is taken by projected sign-gradient ascent from the
    gradient-sign corner, keeping the best value seen (``_box_sharpness``), so it is ≥ 0
    and ≥ the one-step corner value.  ``return_delta`` also returns the maximising δ.
    """
    radius = eps * (jnp.abs(ravel_pytree(params)[0]) + 1)
    return _box_sharpness(loss_fn, params, x, y, radius, steps, chunk_size, return_delta)


@_highest_precision
def adaptive_sharpness(
    loss_fn: LossFn,
    params: PyTree,
    x,
    y,
    eps: float = 1e-3,
    steps: int = 20,
    chunk_size: Chunk = None,
    return_delta: bool = False,
):
    """Elementwise-adaptive sharpness: the Keskar max over the box |δᵢ| ≤ ε|θᵢ|.

    Kwon et al. (2021), Andriushchenko et al. (2023).  In the coordinates u = δ/|θ| the
    objective is the same function of u after a positive rescaling θ→Dθ, so the whole
    ascent, and the value, are invariant to ReLU layer rescaling.  Parameters equal to zero
    get no room to move.
    """
    radius = eps * jnp.abs(ravel_pytree(params)[0])
    return _box_sharpness(loss_fn, params, x, y, radius, steps, chunk_size, return_delta)


def filter_normalized_direction(params: PyTree, key: Array) -> PyTree:
    """Li et al. (2018) random direction with each filter scaled to its weight's norm.

    A Flax kernel's last axis indexes output units (Dense (in, out), Conv (..., in, out)),
    so the norms are taken over all other axes.  1-D parameters (biases, norm scales) get a
    zero direction, as in the paper.
    """
    leaves, treedef = jax.tree.flatten(params)
    keys = jax.random.split(key, len(leaves))

    def direction(p, k):
        if p.ndim < 2:
            return jnp.zeros_like(p)
        d = jax.random.normal(k, p.shape, p.dtype)
        axes = tuple(range(p.ndim - 1))
        norm = lambda a: jnp.sqrt(jnp.sum(a * a, axis=axes, keepdims=True))
        return d * norm(p) / norm(d)

    return jax.tree.unflatten(treedef, [direction(p, k) for p, k in zip(leaves, keys)])


@_highest_precision
def slice_1d(
    loss_fn: LossFn, params: PyTree, x, y, direction: PyTree, alphas, chunk_size: Chunk = None
) -> Array:
    """Loss (or metrics) at θ + α·d for each α; shape (len(alphas), *metric_shape)."""
    at = lambda a: _mean_loss(loss_fn, _add_scaled(params, direction, a), x, y, chunk_size)
    return lax.map(at, jnp.asarray(alphas))


@_highest_precision
def slice_2d(
    loss_fn: LossFn,
    params: PyTree,
    x,
    y,
    d1: PyTree,
    d2: PyTree,
    alphas,
    betas,
    chunk_size: Chunk = None,
) -> Array:
    """Loss (or metrics) on the grid θ + α·d1 + β·d2; shape (len(alphas), len(betas), ...)."""
    a_grid, b_grid = jnp.meshgrid(jnp.asarray(alphas), jnp.asarray(betas), indexing="ij")

    def at(ab):
        point = _add_scaled(_add_scaled(params, d1, ab[0]), d2, ab[1])
        return _mean_loss(loss_fn, point, x, y, chunk_size)

    values = lax.map(at, jnp.stack([a_grid.ravel(), b_grid.ravel()], axis=1))
    return values.reshape(*a_grid.shape, *values.shape[1:])


@_highest_precision
def interpolate(
    loss_fn: LossFn, params_a: PyTree, params_b: PyTree, x, y, ts, chunk_size: Chunk = None
) -> Array:
    """Loss (or metrics) at (1−t)·θa + t·θb for each t; shape (len(ts), *metric_shape).

    The convex combination is formed as written so t = 0 and t = 1 hit the endpoints exactly.
    """

    def at(t):
        mix = lambda a, b: ((1 - t) * a + t * b).astype(a.dtype)
        return _mean_loss(loss_fn, jax.tree.map(mix, params_a, params_b), x, y, chunk_size)

    return lax.map(at, jnp.asarray(ts))


def barrier(curve, axis: int = 0):
    """Interpolation barrier: max along the path minus the mean of its two endpoints.

    ``curve`` holds a loss or error at evenly spaced t ∈ [0, 1] along ``axis`` (as
    :func:`interpolate` returns it); works on NumPy and JAX arrays. It is ≥ 0, and 0
    when the path never rises above the endpoints' mean (linear mode connectivity).
    """
    return curve.max(axis=axis) - 0.5 * (curve.take(0, axis=axis) + curve.take(-1, axis=axis))


@_highest_precision
def gradient_noise(
    loss_fn: LossFn,
    params: PyTree,
    x,
    y,
    key: Array,
    batch_size: int,
    num_batches: int = 32,
    chunk_size: Chunk = None,
) -> Array:
    """Minibatch gradient variance: mean over batches of ‖g_B − g_full‖².

    Each batch is drawn without replacement, so in expectation this is
    tr(Σ)/B·(N−B)/(N−1) with Σ the per-example gradient covariance.  ``batch_size`` is
    static; batches run sequentially.
    """
    n = _num_examples(x)
    full, _ = ravel_pytree(
        _chunk_mean(lambda xc, yc: jax.grad(loss_fn)(params, xc, yc), x, y, chunk_size)
    )

    def squared_deviation(k):
        idx = jax.random.permutation(k, n)[:batch_size]
        xb, yb = jax.tree.map(lambda a: a[idx], (x, y))
        batch, _ = ravel_pytree(jax.grad(loss_fn)(params, xb, yb))
        return jnp.sum((batch - full) ** 2)

    return lax.map(squared_deviation, jax.random.split(key, num_batches)).mean()


def rescale_layers(params: PyTree, first: str, second: str, alpha: float) -> PyTree:
    """θ with layer ``first`` (kernel and bias) × α and the kernel of ``second`` × 1/α.

    With a ReLU (positively homogeneous) between the two layers the network computes
    the same function, yet raw curvature changes (Dinh et al. 2017): the reparametrization
    behind the invariant measures above.
    """
    layers = dict(params["params"])
    layers[first] = {name: value * alpha for name, value in layers[first].items()}
    layers[second] = {**layers[second], "kernel": layers[second]["kernel"] / alpha}
    return {**params, "params": layers}


def gradient_noise_scaling(
    loss_fn: LossFn,
    params: PyTree,
    x,
    y,
    key: Array,
    batch_sizes: tuple[int, ...],
    num_batches: int = 32,
    chunk_size: Chunk = None,
) -> tuple[Array, Array]:
    """Minibatch gradient variance at each batch size, and its log-log slope against B.

    Returns (variances, slope): ``variances[i]`` is :func:`gradient_noise` at
    ``batch_sizes[i]`` (one subkey each); ``slope`` is the least-squares slope of
    log(variance / f) against log B, with f = (N−B)/(N−1) the without-replacement
    factor, so a fixed per-example gradient covariance gives slope −1 in expectation
    (variance ∝ 1/B).  Every batch size must be below N; at least two distinct ones.
    """
    n = _num_examples(x)
    sizes = tuple(int(b) for b in batch_sizes)
    if len(set(sizes)) < 2 or not all(0 < b < n for b in sizes):
        raise ValueError(f"need ≥ 2 distinct batch sizes in (0, {n}), got {sizes}")
    keys = jax.random.split(key, len(sizes))
    variances = jnp.stack(
        [
            gradient_noise(loss_fn, params, x, y, k, b, num_batches, chunk_size)
            for b, k in zip(sizes, keys)
        ]
    )
    b = jnp.asarray(sizes, variances.dtype)
    log_b = jnp.log(b)
    log_v = jnp.log(variances * (n - 1) / (n - b))
    centred = log_b - log_b.mean()
    slope = jnp.sum(centred * (log_v - log_v.mean())) / jnp.sum(centred**2)
    return variances, slope
