"""Tests for toolkit.measures against dense Hessians of tiny MLPs.

float64 is switched on only inside the tests that compare against exact linear algebra
(the ``x64`` fixture restores the flag), so no other test file sees it.
"""

from collections.abc import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.flatten_util import ravel_pytree

from toolkit import measures


class MLP(nn.Module):
    widths: tuple[int, ...] = (12, 8, 3)
    act: Callable = nn.tanh

    @nn.compact
    def __call__(self, x):
        for width in self.widths[:-1]:
            # Non-zero biases so adaptive measures give biases room to move.
            x = self.act(nn.Dense(width, bias_init=nn.initializers.normal(0.3))(x))
        return nn.Dense(self.widths[-1], bias_init=nn.initializers.normal(0.3))(x)


def make_problem(act=nn.tanh, n=64, seed=0, dtype=jnp.float64):
    """A 203-parameter MLP at initialisation (indefinite Hessian), 3-class data, CE loss."""
    model = MLP(act=act)
    kx, ky, kp = jax.random.split(jax.random.PRNGKey(seed), 3)
    x = jax.random.normal(kx, (n, 5), dtype)
    y = jax.random.randint(ky, (n,), 0, 3)
    params = jax.tree.map(lambda a: a.astype(dtype), model.init(kp, x))

    def loss_fn(p, x, y):
        return optax.softmax_cross_entropy_with_integer_labels(model.apply(p, x), y).mean()

    return model, loss_fn, params, x, y


def dense_hessian(loss_fn, params, x, y):
    flat, unravel = ravel_pytree(params)
    return jax.jit(jax.hessian(lambda f: loss_fn(unravel(f), x, y)))(flat)


@pytest.fixture
def x64():
    with jax.enable_x64(True):
        yield


@pytest.fixture(scope="module")
def tanh_problem():
    """The float64 tanh problem and its dense Hessian, built once for the exact-algebra tests."""
    with jax.enable_x64(True):
        model, loss_fn, params, x, y = make_problem()
        return loss_fn, params, x, y, np.asarray(dense_hessian(loss_fn, params, x, y))


def test_hvp_matches_dense_hessian_and_chunking(x64, tanh_problem):
    loss_fn, params, x, y, hessian = tanh_problem
    flat, unravel = ravel_pytree(params)
    v = unravel(jax.random.normal(jax.random.PRNGKey(1), flat.shape, flat.dtype))
    expected = hessian @ ravel_pytree(v)[0]
    hvp = jax.jit(measures.hvp, static_argnums=(0, 5))
    got = ravel_pytree(hvp(loss_fn, params, x, y, v))[0]
    chunked = ravel_pytree(hvp(loss_fn, params, x, y, v, 16))[0]
    np.testing.assert_allclose(got, expected, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(chunked, got, rtol=1e-10, atol=1e-12)
    with pytest.raises(ValueError, match="divisible"):
        measures.hvp(loss_fn, params, x, y, v, chunk_size=10)
    # Matmuls are traced at full precision (TF32 would otherwise apply on GPU).
    jaxpr = str(jax.make_jaxpr(lambda p: measures.hvp(loss_fn, p, x, y, v))(params))
    assert 0 < jaxpr.count("dot_general[") == jaxpr.count("Precision.HIGHEST, Precision.HIGHEST")


def test_lanczos_matches_eigvalsh(x64, tanh_problem):
    loss_fn, params, x, y, hessian = tanh_problem
    exact = np.linalg.eigvalsh(hessian)
    assert exact[0] < 0 < exact[-1]  # indefinite, so the smallest end is a real test
    top, smallest = jax.jit(
        lambda p, k: measures.lanczos_eigs(loss_fn, p, x, y, k, k=3, chunk_size=32)
    )(params, jax.random.PRNGKey(2))
    np.testing.assert_allclose(top, exact[::-1][:3], rtol=1e-4)
    np.testing.assert_allclose(smallest, exact[0], rtol=1e-4)


def test_lanczos_float32_follows_dtype(tanh_problem):
    loss_fn, params, x, y, hessian = tanh_problem
    exact = np.linalg.eigvalsh(hessian)
    # The same problem, rounded to float32 outside the x64 context.
    params, x = jax.tree.map(lambda a: jnp.asarray(np.asarray(a), jnp.float32), (params, x))
    y = jnp.asarray(np.asarray(y), jnp.int32)
    top, smallest = jax.jit(
        lambda p: measures.lanczos_eigs(loss_fn, p, x, y, jax.random.PRNGKey(2))
    )(params)
    assert top.dtype == jnp.float32
    np.testing.assert_allclose(top, exact[::-1][:3], rtol=1e-5)
    np.testing.assert_allclose(smallest, exact[0], rtol=1e-5)


def test_lanczos_more_iterations_than_parameters(x64):
    # Quadratic losses 0.5·Σ hᵢwᵢ² with known Hessians whose Krylov spaces close early
    # (breakdown); the diagonal h is passed as data, so one vmapped call covers all three.
    diagonals = jnp.array([[2.0] * 6, [0.0] * 6, [3.0, 3.0, 1.0, 1.0, -1.0, 0.0]])
    loss_fn = lambda p, h, y: 0.5 * jnp.sum(h * ravel_pytree(p)[0] ** 2)
    params = {"w": jnp.full((3, 2), 0.1)}
    eigs = lambda h: measures.lanczos_eigs(
        loss_fn, params, h, None, jax.random.PRNGKey(0), num_iters=50, k=10
    )
    top, smallest = jax.jit(jax.vmap(eigs))(diagonals)
    expected = np.sort(diagonals, axis=1)
    np.testing.assert_allclose(top, expected[:, ::-1], atol=1e-10)
    np.testing.assert_allclose(smallest, expected[:, 0], atol=1e-10)


def test_hutchinson_within_three_standard_errors(x64, tanh_problem):
    loss_fn, params, x, y, hessian = tanh_problem
    exact = np.trace(hessian)
    trace = jax.jit(lambda p: measures.hutchinson_trace(loss_fn, p, x, y, jax.random.PRNGKey(3)))
    mean, se = trace(params)
    assert 0 < se < abs(exact)
    assert abs(mean - exact) <= 3 * se


def rescale(params, alpha):
    """θ_0 → α·θ_0 (kernel and bias), W_1 → W_1/α: the same ReLU function."""
    p = jax.tree.map(lambda a: a, params)
    layer0, layer1 = p["params"]["Dense_0"], p["params"]["Dense_1"]
    layer0["kernel"], layer0["bias"] = alpha * layer0["kernel"], alpha * layer0["bias"]
    layer1["kernel"] = layer1["kernel"] / alpha
    return p


def test_adaptive_measures_are_rescaling_invariant(x64):
    model, loss_fn, params, x, y = make_problem(act=nn.relu)
    scaled = rescale(params, 3.0)
    np.testing.assert_allclose(model.apply(scaled, x), model.apply(params, x), rtol=1e-12)
    key = jax.random.PRNGKey(4)

    def both(fn):
        fn = jax.jit(fn)
        return [fn(p) for p in (params, scaled)]

    raw = both(lambda p: measures.lanczos_eigs(loss_fn, p, x, y, key, k=1)[0][0])
    assert abs(raw[1] / raw[0] - 1) > 0.1

    eig = both(lambda p: measures.adaptive_top_eig(loss_fn, p, x, y, key))
    np.testing.assert_allclose(eig[1], eig[0], rtol=1e-4)

    sharp = both(lambda p: measures.adaptive_sharpness(loss_fn, p, x, y, eps=0.05))
    assert sharp[0] > 0
    np.testing.assert_allclose(sharp[1], sharp[0], rtol=1e-3)


def test_vmap_over_runs_matches_individual_runs(x64):
    model, loss_fn, _, x, y = make_problem()
    runs = jax.tree.map(lambda *a: jnp.stack(a), *[make_problem(seed=s)[2] for s in (5, 6, 7)])
    keys = jax.random.split(jax.random.PRNGKey(6), 3)

    def measure(p, k):
        return {
            "lanczos": measures.lanczos_eigs(loss_fn, p, x, y, k, num_iters=20),
            "trace": measures.hutchinson_trace(loss_fn, p, x, y, k, num_probes=10),
            "keskar": measures.keskar_sharpness(loss_fn, p, x, y, eps=0.01, steps=5),
        }

    batched = jax.jit(jax.vmap(measure))(runs, keys)
    alone = jax.jit(measure)
    for r in range(3):
        single = alone(jax.tree.map(lambda a, r=r: a[r], runs), keys[r])
        for name in single:
            for b, a in zip(jax.tree.leaves(batched[name]), jax.tree.leaves(single[name])):
                np.testing.assert_allclose(b[r], a, rtol=1e-8, atol=1e-12, err_msg=name)


def test_filter_normalized_direction():
    params = {
        "conv": {"kernel": jnp.arange(72.0).reshape(3, 3, 2, 4) - 30, "bias": jnp.ones(4)},
        "dense": {"kernel": jnp.arange(15.0).reshape(5, 3) + 1, "bias": jnp.ones(3)},
    }
    d = jax.jit(measures.filter_normalized_direction)(params, jax.random.PRNGKey(7))
    for layer in params:
        kernel, dk = params[layer]["kernel"], d[layer]["kernel"]
        filter_norm = lambda a: np.sqrt((np.asarray(a) ** 2).sum(axis=tuple(range(a.ndim - 1))))
        np.testing.assert_allclose(filter_norm(dk), filter_norm(kernel), rtol=1e-5)
        assert not jnp.allclose(dk, kernel)
        np.testing.assert_array_equal(d[layer]["bias"], 0.0)


def test_sharpness_nonnegative_in_box_and_beats_corner_step(x64):
    _, loss_fn, params, x, y = make_problem()
    flat, unravel = ravel_pytree(params)
    eps = 1e-2
    keskar = jax.jit(
        lambda p, c: measures.keskar_sharpness(
            loss_fn, p, x, y, eps, chunk_size=c, return_delta=True
        ),
        static_argnums=1,
    )
    value, delta = keskar(params, None)
    radius = eps * (jnp.abs(flat) + 1)
    assert value >= 0
    assert jnp.all(jnp.abs(ravel_pytree(delta)[0]) <= radius * (1 + 1e-12))

    flat_loss = jax.jit(jax.value_and_grad(lambda f: loss_fn(unravel(f), x, y)))
    loss0, grad0 = flat_loss(flat)
    corner, _ = flat_loss(flat + radius * jnp.sign(grad0))
    assert value >= 100 * (corner - loss0) / (1 + loss0) > 0
    np.testing.assert_allclose(keskar(params, 16)[0], value, rtol=1e-8)

    adaptive = jax.jit(
        lambda p: measures.adaptive_sharpness(loss_fn, p, x, y, eps, return_delta=True)
    )
    _, delta = adaptive(params)
    assert jnp.all(jnp.abs(ravel_pytree(delta)[0]) <= eps * jnp.abs(flat) * (1 + 1e-12))


def test_slices_and_interpolation(x64):
    model, loss_fn, params_a, x, y = make_problem()
    params_b = make_problem(seed=1)[2]
    metrics = lambda p, x, y: jnp.stack(
        [loss_fn(p, x, y), (model.apply(p, x).argmax(-1) == y).mean()]
    )
    interpolate = jax.jit(measures.interpolate, static_argnums=0)
    path = interpolate(metrics, params_a, params_b, x, y, jnp.array([0.0, 0.5, 1.0]))
    assert path.shape == (3, 2)
    np.testing.assert_allclose(path[0], metrics(params_a, x, y), rtol=1e-12)
    np.testing.assert_allclose(path[-1], metrics(params_b, x, y), rtol=1e-12)

    direction = jax.jit(measures.filter_normalized_direction)
    d1, d2 = direction(params_a, jax.random.PRNGKey(8)), direction(params_a, jax.random.PRNGKey(9))
    line = jax.jit(measures.slice_1d, static_argnums=0)(
        loss_fn, params_a, x, y, d1, jnp.array([-1.0, 0.0, 1.0])
    )
    np.testing.assert_allclose(line[1], loss_fn(params_a, x, y), rtol=1e-12)
    alphas, betas = jnp.linspace(-1, 1, 3), jnp.linspace(-1, 1, 4)
    grid = jax.jit(measures.slice_2d, static_argnums=(0, 8))(
        loss_fn, params_a, x, y, d1, d2, alphas, betas, 32
    )
    assert grid.shape == (3, 4)
    point = jax.tree.map(lambda p, u, v: p + alphas[2] * u + betas[1] * v, params_a, d1, d2)
    np.testing.assert_allclose(grid[2, 1], loss_fn(point, x, y), rtol=1e-10)


def test_gradient_noise_scales_inversely_with_batch(x64):
    _, loss_fn, params, x, y = make_problem(n=256)
    key = jax.random.PRNGKey(10)
    noise = jax.jit(
        lambda b: measures.gradient_noise(loss_fn, params, x, y, key, b, num_batches=400),
        static_argnums=0,
    )
    # Compare with the finite-population formula tr(Σ)/B·(N−B)/(N−1).
    per_example = jax.vmap(lambda xi, yi: jax.grad(loss_fn)(params, xi[None], yi[None]))
    g = jax.jit(jax.vmap(lambda p: ravel_pytree(p)[0]))(jax.jit(per_example)(x, y))
    trace_sigma = jnp.mean(jnp.sum((g - g.mean(0)) ** 2, axis=1))
    small, large = noise(8), noise(16)
    assert noise(256) < 1e-12 * small  # the full batch has no sampling noise
    assert 1.4 <= small / large <= 2.8
    np.testing.assert_allclose(small, trace_sigma / 8 * (256 - 8) / 255, rtol=0.15)
