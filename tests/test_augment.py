"""Augmentations: label-preserving shapes, keyed randomness, identities; exp_regularization's plan."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from toolkit import augment, data, engine, runner, spec


@pytest.fixture(scope="module")
def batches():
    rng = np.random.default_rng(0)
    return {
        "shift_noise": jnp.asarray(rng.normal(size=(6, 40)), jnp.float32),
        "affine": jnp.asarray(rng.uniform(size=(6, 784)), jnp.float32),
    }


@pytest.mark.parametrize("kind", ["shift_noise", "affine"])
def test_shapes_keys_and_determinism(kind, batches):
    x = batches[kind]
    a = augment.augment(kind, x, jax.random.key(0))
    assert a.shape == x.shape and a.dtype == x.dtype
    assert np.all(np.isfinite(np.asarray(a)))
    np.testing.assert_array_equal(a, augment.augment(kind, x, jax.random.key(0)))
    b = augment.augment(kind, x, jax.random.key(1))
    assert not np.allclose(a, b)
    # one draw per example: identical inputs get different transforms
    same = jnp.broadcast_to(x[:1], x.shape)
    out = np.asarray(augment.augment(kind, same, jax.random.key(2)))
    assert not np.allclose(out[0], out[1])


def test_none_is_the_identity(batches):
    x = batches["affine"]
    assert augment.augment("none", x, jax.random.key(0)) is x
    with pytest.raises(ValueError, match="unknown augmentation"):
        augment.augment("flip", x, jax.random.key(0))


def test_zero_shift_and_zero_affine_are_identities(batches):
    x = batches["shift_noise"][0]
    np.testing.assert_array_equal(augment.circular_shift(x, jnp.int32(0)), x)
    np.testing.assert_array_equal(augment.circular_shift(x, jnp.int32(40)), x)
    np.testing.assert_array_equal(augment.circular_shift(x, jnp.int32(3))[3:], x[:-3])
    image = batches["affine"][0].reshape(28, 28)
    np.testing.assert_allclose(augment.affine(image, 0.0, 0.0, 0.0), image, atol=1e-5)
    # an integer translation moves pixels exactly; 360° comes back to the image
    moved = augment.affine(image, 0.0, 2.0, -1.0)
    np.testing.assert_allclose(moved[2:, :-1], image[:-2, 1:], atol=1e-5)
    np.testing.assert_allclose(augment.affine(image, 360.0, 0.0, 0.0), image, atol=1e-4)


def test_mnist5k_split_is_stratified_and_rescaled():
    ds = data.load("mnist5k")
    assert ds.sizes() == {"train": 3000, "val": 500, "test": 1500}
    assert ds.input_shape == (784,) and ds.x_train.dtype == np.float32
    assert 0.0 <= ds.x_train.min() and ds.x_train.max() <= 1.0
    for labels, per_class in ((ds.y_train, 300), (ds.y_val, 50), (ds.y_test, 150)):
        assert np.all(np.bincount(labels, minlength=10) == per_class)
    assert len(set(ds.y_train[:20].tolist())) > 3  # shuffled, not sorted by class


def test_augment_stream_is_appended_last():
    # run_keys folds in the stream's index: earlier streams keep their keys
    assert engine.STREAMS[:4] == ("init", "order", "dropout", "noise")
    assert engine.STREAMS[4] == "augment"


def test_regularization_default_plan_is_four_cohorts():
    experiment = spec.load("exp_regularization")
    runs = runner.plan_runs(experiment, "default", 10, {})
    cohorts = runner.group_cohorts(runs)
    assert len(cohorts) == 4  # dataset × augmentation; dropout and weight decay ride the run axis
    kinds = {(s.dataset, s.augment) for s in cohorts}
    assert kinds == {
        ("mnist1d", "none"),
        ("mnist1d", "shift_noise"),
        ("mnist5k", "none"),
        ("mnist5k", "affine"),
    }
    assert len(runs) == sum(len(r) for r in cohorts.values())
