"""Weight matching, CKA and divergences (toolkit.alignment); saved-parameter files."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from toolkit import alignment, measures, models
from toolkit.results import load_params, save_params

WIDTHS = (12, 10)


@pytest.fixture(scope="module")
def net():
    model = models.build("mlp", WIDTHS, 4)
    x = jax.random.normal(jax.random.key(1), (256, 6))
    params = model.init(jax.random.key(0), x[:1])
    # non-zero biases, so that they carry the permutation too
    params = jax.tree.map(
        lambda p: p + 0.1 * jax.random.normal(jax.random.key(2), p.shape) if p.ndim == 1 else p,
        params,
    )
    return model, jax.tree.map(np.asarray, params), x


def _permute(params, seed):
    rng = np.random.default_rng(seed)
    perms = {f"Dense_{i}": rng.permutation(w) for i, w in enumerate(WIDTHS)}
    return perms, alignment.apply_permutation(params, perms)


def test_spec_is_derived_from_the_tree(net):
    _, params, _ = net
    spec = alignment.mlp_permutation_spec(params)
    assert list(spec.perm_to_axes) == ["Dense_0", "Dense_1"]  # the output layer is not permuted
    assert spec.axes_of(("params", "Dense_1", "kernel")) == {0: "Dense_0", 1: "Dense_1"}
    assert spec.axes_of(("params", "Dense_2", "kernel")) == {0: "Dense_1"}
    with pytest.raises(ValueError):
        alignment.mlp_permutation_spec({"params": {"Conv_0": {}, "Dense_0": {}}})


def test_permuted_network_computes_the_same_function(net):
    model, params, x = net
    _, permuted = _permute(params, 0)
    np.testing.assert_allclose(model.apply(params, x), model.apply(permuted, x), atol=1e-5)
    assert not np.allclose(
        params["params"]["Dense_0"]["kernel"], permuted["params"]["Dense_0"]["kernel"]
    )


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_weight_matching_recovers_a_known_permutation(net, seed):
    model, params, x = net
    perms, permuted = _permute(params, seed)
    found = alignment.weight_matching(params, permuted)
    for name, perm in perms.items():  # b's unit perm[j] is a's unit j: found inverts perm
        np.testing.assert_array_equal(found[name], np.argsort(perm))
    aligned = alignment.apply_permutation(permuted, found)
    jax.tree.map(np.testing.assert_array_equal, aligned, params)

    def loss(p, xb, yb):
        return -jnp.mean(jax.nn.log_softmax(model.apply(p, xb))[jnp.arange(len(yb)), yb])

    y = jnp.argmax(model.apply(params, x), -1)  # a task the network solves: endpoints low
    ts = np.linspace(0, 1, 25)
    raw = measures.barrier(np.asarray(measures.interpolate(loss, params, permuted, x, y, ts)))
    matched = measures.barrier(np.asarray(measures.interpolate(loss, params, aligned, x, y, ts)))
    assert matched < 1e-5
    assert raw > 0.05


def test_weight_matching_of_independent_nets_is_a_permutation_that_helps(net):
    model, params, x = net
    other = jax.tree.map(np.asarray, model.init(jax.random.key(7), x[:1]))
    found = alignment.weight_matching(params, other)
    for name, width in zip(found, WIDTHS):
        assert sorted(found[name]) == list(range(width))
    aligned = alignment.apply_permutation(other, found)
    np.testing.assert_allclose(model.apply(other, x), model.apply(aligned, x), atol=1e-5)
    before = alignment.flat_similarity(params, other)["cosine"]
    after = alignment.flat_similarity(params, aligned)["cosine"]
    assert after > before


def test_linear_cka():
    key1, key2, key3 = jax.random.split(jax.random.key(0), 3)
    x = jax.random.normal(key1, (200, 8))
    q, _ = jnp.linalg.qr(jax.random.normal(key2, (8, 8)))
    assert jnp.isclose(alignment.linear_cka(x, x), 1.0, atol=1e-6)
    assert jnp.isclose(alignment.linear_cka(x, 3.0 * x @ q), 1.0, atol=1e-5)  # orthogonal, scale
    assert jnp.isclose(alignment.linear_cka(x, x[:, ::-1] + 5.0), 1.0, atol=1e-6)  # perm, shift
    unrelated = alignment.linear_cka(x, jax.random.normal(key3, (200, 8)))
    assert 0.0 < unrelated < 0.2
    assert alignment.linear_cka(x, jnp.ones((200, 3))) == 0.0  # dead layer: no NaN


def test_similarity_and_divergences():
    a = {"w": jnp.array([1.0, 0.0]), "b": jnp.array([0.0])}
    b = {"w": jnp.array([0.0, 1.0]), "b": jnp.array([0.0])}
    sim = alignment.flat_similarity(a, b)
    assert jnp.isclose(sim["cosine"], 0.0) and jnp.isclose(sim["relative_distance"], jnp.sqrt(2.0))
    logits = jax.random.normal(jax.random.key(0), (50, 5))
    same = alignment.predictive_divergences(logits, logits)
    assert same["disagreement"] == 0 and abs(same["kl"]) < 1e-6 and abs(same["js"]) < 1e-6
    sure_a, sure_b = 20.0 * jnp.eye(5)[jnp.zeros(50, int)], 20.0 * jnp.eye(5)[jnp.ones(50, int)]
    apart = alignment.predictive_divergences(sure_a, sure_b)
    assert apart["disagreement"] == 1 and jnp.isclose(apart["js"], jnp.log(2.0), atol=1e-4)


def test_saved_params_round_trip(net, tmp_path):
    _, params, _ = net
    params = {**params, "extra": {"half": np.arange(3, dtype=np.float16), "n": np.int32(7)}}
    path = save_params(tmp_path, "abc123", params)
    assert path == tmp_path / "params" / "abc123.npz"
    with np.load(path, allow_pickle=False) as raw:
        assert "params/Dense_0/kernel" in raw.files
    loaded = load_params(path)
    assert jax.tree.structure(loaded) == jax.tree.structure(params)

    def same(a, b):
        assert np.asarray(a).dtype == np.asarray(b).dtype
        np.testing.assert_array_equal(a, b)

    jax.tree.map(same, loaded, params)
    with pytest.raises(ValueError):
        save_params(tmp_path, "bad", {"a/b": np.zeros(2)})


def test_gram_cka_equals_the_feature_form():
    kx, ky = jax.random.split(jax.random.key(4))
    x = jax.random.normal(kx, (50, 7))
    y = jnp.tanh(x @ jax.random.normal(ky, (7, 30))) + 0.1 * jax.random.normal(ky, (50, 30))
    gx, gy = alignment.centered_gram(x), alignment.centered_gram(y)
    np.testing.assert_allclose(alignment.gram_cka(gx, gy), alignment.linear_cka(x, y), rtol=1e-5)
    np.testing.assert_allclose(alignment.gram_cka(gx, gx), 1.0, rtol=1e-6)
    zero = alignment.centered_gram(jnp.ones((50, 3)))
    assert float(alignment.gram_cka(gx, zero)) == 0.0
