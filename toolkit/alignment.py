"""How far apart two trained networks are, before and after permutation alignment.

Hidden units of a network can be reordered without changing its function, so two
runs can compute nearly the same thing with weights that look unrelated. This module
aligns them by *weight matching* (Ainsworth, Hayase & Srinivasa 2023, "Git Re-Basin",
Algorithm 2) and measures similarity in weight space (relative distance, cosine),
function space (disagreement, KL and JS divergence) and representation space
(linear CKA, Kornblith et al. 2019).

A :class:`PermutationSpec` says which axes of which parameters each permutation
acts on; :func:`mlp_permutation_spec` derives it from a Flax MLP's parameter tree,
so nothing is written per model. The Hungarian step (``linear_sum_assignment``)
runs on the host with NumPy; the similarity measures are JAX functions meant to be
vmapped over pairs of runs.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree
from scipy.optimize import linear_sum_assignment

PyTree = Any
Path = tuple[str, ...]  # keys from the root of a nested dict to one array


@dataclass(frozen=True)
class PermutationSpec:
    """Permutation name → the (parameter path, axis) pairs it reorders."""

    perm_to_axes: Mapping[str, tuple[tuple[Path, int], ...]]

    def axes_of(self, path: Path) -> dict[int, str]:
        """Axis → permutation name for one parameter (axes no permutation touches are absent)."""
        return {
            axis: name
            for name, pairs in self.perm_to_axes.items()
            for p, axis in pairs
            if p == path
        }


def _get(tree: PyTree, path: Path):
    for key in path:
        tree = tree[key]
    return tree


def mlp_permutation_spec(params: PyTree) -> PermutationSpec:
    """The hidden-unit permutations of a Flax MLP made of ``Dense_0 … Dense_L``.

    Hidden layer i's units are the output axis of ``Dense_i``'s kernel (in, out) and
    bias, and the input axis of ``Dense_{i+1}``'s kernel; the input and output layers
    are not permuted. Accepts ``{'params': {...}}`` or the inner dict.
    """
    prefix: Path = ("params",) if "params" in params else ()
    layers = _get(params, prefix)
    if not layers or any(not re.fullmatch(r"Dense_\d+", name) for name in layers):
        raise ValueError(f"expected a chain of Dense_i layers, got {sorted(layers)}")
    names = sorted(layers, key=lambda name: int(name.removeprefix("Dense_")))
    perms = {}
    for this, following in zip(names[:-1], names[1:]):
        outputs, inputs = layers[this]["kernel"].shape[-1], layers[following]["kernel"].shape[0]
        if outputs != inputs:
            raise ValueError(f"{this} has {outputs} outputs but {following} takes {inputs} inputs")
        perms[this] = (
            ((*prefix, this, "kernel"), 1),
            ((*prefix, this, "bias"), 0),
            ((*prefix, following, "kernel"), 0),
        )
    return PermutationSpec(perms)


def _permuted(spec: PermutationSpec, perms: Mapping[str, np.ndarray], params, path, skip=None):
    """The array at ``path`` with every permutation applied except on axis ``skip``."""
    array = np.asarray(_get(params, path))
    for axis, name in spec.axes_of(path).items():
        if axis != skip:
            array = np.take(array, perms[name], axis=axis)
    return array


def weight_matching(
    params_a: PyTree,
    params_b: PyTree,
    spec: PermutationSpec | None = None,
    max_iter: int = 100,
    seed: int = 0,
) -> dict[str, np.ndarray]:
    """Permutations that make ``params_b`` as close as possible to ``params_a``.

    Maximizes Σ ⟨θ_a, π(θ_b)⟩ by coordinate descent: each permutation in turn (random
    order per sweep) is the linear assignment maximizing the inner product with the
    others held fixed. A permutation only changes when that strictly raises the
    objective, so ties cannot cycle; sweeps stop when none changes (or after
    ``max_iter``). Returns hidden layer → index array: aligned unit j is b's unit
    ``perm[j]``, and ``apply_permutation(params_b, result)`` is the aligned copy of b.
    """
    spec = spec or mlp_permutation_spec(params_a)
    sizes = {
        name: np.shape(_get(params_a, pairs[0][0]))[pairs[0][1]]
        for name, pairs in spec.perm_to_axes.items()
    }
    perms = {name: np.arange(n) for name, n in sizes.items()}
    rng = np.random.default_rng(seed)
    names = list(spec.perm_to_axes)
    for _ in range(max_iter):
        changed = False
        for name in rng.permutation(names):
            n = sizes[name]
            similarity = np.zeros((n, n))
            for path, axis in spec.perm_to_axes[name]:
                w_a = np.moveaxis(np.asarray(_get(params_a, path)), axis, 0).reshape(n, -1)
                w_b = _permuted(spec, perms, params_b, path, skip=axis)
                w_b = np.moveaxis(w_b, axis, 0).reshape(n, -1)
                similarity += w_a.astype(np.float64) @ w_b.T.astype(np.float64)
            _, best = linear_sum_assignment(similarity, maximize=True)
            rows = np.arange(n)
            gain = similarity[rows, best].sum() - similarity[rows, perms[name]].sum()
            if gain > 1e-12 * max(1.0, abs(similarity[rows, perms[name]].sum())):
                perms[name], changed = best, True
        if not changed:
            break
    return perms


def apply_permutation(
    params: PyTree, perms: Mapping[str, np.ndarray], spec: PermutationSpec | None = None
) -> PyTree:
    """A host (NumPy) copy of ``params`` with unit j of each layer taken from ``perm[j]``."""
    spec = spec or mlp_permutation_spec(params)

    def walk(tree, path: Path):
        if isinstance(tree, Mapping):
            return {k: walk(v, (*path, k)) for k, v in tree.items()}
        return _permuted(spec, perms, params, path)

    return walk(params, ())


def flat_similarity(params_a: PyTree, params_b: PyTree) -> dict[str, jax.Array]:
    """Relative L2 distance ‖a − b‖ / ½(‖a‖ + ‖b‖) and cosine of the flattened weights.

    Orthogonal vectors of equal norm are √2 ≈ 1.41 apart; identical ones 0.
    """
    a, _ = ravel_pytree(params_a)
    b, _ = ravel_pytree(params_b)
    norm_a, norm_b = jnp.linalg.norm(a), jnp.linalg.norm(b)
    return {
        "relative_distance": jnp.linalg.norm(a - b) / (0.5 * (norm_a + norm_b)),
        "cosine": jnp.vdot(a, b) / (norm_a * norm_b),
    }


def cosine(tree_a: PyTree, tree_b: PyTree) -> jax.Array:
    """Cosine similarity of two flattened pytrees (e.g. displacements from init)."""
    return flat_similarity(tree_a, tree_b)["cosine"]


def predictive_divergences(logits_a: jax.Array, logits_b: jax.Array) -> dict[str, jax.Array]:
    """Mean over examples of: argmax disagreement, symmetrized KL, and JS divergence (nats).

    ``logits_*``: (examples, classes). KL is ½[KL(p_a‖p_b) + KL(p_b‖p_a)]; JS is
    the divergence of each from their mixture m, ½[KL(p_a‖m) + KL(p_b‖m)] ≤ ln 2.
    """
    log_a, log_b = jax.nn.log_softmax(logits_a), jax.nn.log_softmax(logits_b)
    p_a, p_b = jnp.exp(log_a), jnp.exp(log_b)
    log_m = jnp.logaddexp(log_a, log_b) - jnp.log(2.0)
    kl = lambda p, log_p, log_q: jnp.sum(p * (log_p - log_q), axis=-1)
    return {
        "disagreement": jnp.mean(jnp.argmax(logits_a, -1) != jnp.argmax(logits_b, -1)),
        "kl": jnp.mean(0.5 * (kl(p_a, log_a, log_b) + kl(p_b, log_b, log_a))),
        "js": jnp.mean(0.5 * (kl(p_a, log_a, log_m) + kl(p_b, log_b, log_m))),
    }


def linear_cka(x: jax.Array, y: jax.Array) -> jax.Array:
    """Linear CKA between representations x (n, d1) and y (n, d2) of the same n inputs.

    ‖XᵀY‖²_F / (‖XᵀX‖_F ‖YᵀY‖_F) on column-centered X, Y (the biased HSIC estimator,
    feature form: cost n·d², no n×n Gram). 1 for x with itself; invariant to orthogonal
    transforms (so to unit permutations) and isotropic scaling. A constant
    representation (e.g. all units dead) gives 0.
    """
    x = x - x.mean(axis=0)
    y = y - y.mean(axis=0)
    cross = jnp.sum((x.T @ y) ** 2)
    return _cka_ratio(cross, jnp.linalg.norm(x.T @ x) * jnp.linalg.norm(y.T @ y))


def centered_gram(x: jax.Array) -> jax.Array:
    """K̃ = H X Xᵀ H for X (n, d) (rows are inputs), H the centering matrix."""
    x = x.reshape(x.shape[0], -1)
    x = x - x.mean(axis=0)
    return x @ x.T


def gram_cka(gram_x: jax.Array, gram_y: jax.Array) -> jax.Array:
    """Linear CKA from two centered Grams (:func:`centered_gram`) of the same n inputs:
    equal to :func:`linear_cka`, cheaper when many layers (of any widths) are compared
    with each other, since each Gram is n × n. A zero Gram gives 0."""
    norms = jnp.linalg.norm(gram_x) * jnp.linalg.norm(gram_y)
    return _cka_ratio(jnp.sum(gram_x * gram_y), norms)


def _cka_ratio(cross: jax.Array, norms: jax.Array) -> jax.Array:
    return jnp.where(norms > 0, cross / jnp.where(norms > 0, norms, 1.0), 0.0)
