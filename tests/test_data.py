"""Tests for toolkit.data's MNIST-1D builders: the sized generator and the registered sets."""

from __future__ import annotations

import random

import numpy as np
import pytest

from toolkit import data

#: mnist1d's content hash since its first results (every meta.json records it): a change
#: to the builder must leave these arrays byte for byte as they were.
MNIST1D_HASH = "34c59e3046ef1d89"


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("TOOLKIT_CACHE", str(tmp_path))
    return tmp_path


def test_default_mnist1d_is_unchanged(cache):
    dataset = data.mnist1d()  # generated afresh into an empty cache (3–9 s on the 2-core CPU)
    assert dataset.content_hash == MNIST1D_HASH
    assert dataset.sizes() == {"train": 4000, "val": 1000, "test": 12000}
    assert data.mnist1d().content_hash == MNIST1D_HASH  # and read back from it
    assert data.load("mnist1d").content_hash == MNIST1D_HASH


def test_the_40k_variant_is_registered_with_the_same_val_and_test_sizes():
    assert {"mnist1d", "mnist1d_40k"} <= set(data.available())
    assert data.MNIST1D_40K_SPLIT == {"train": 40000, "val": 1000, "test": 12000}


def test_sized_builder_splits_normalizes_caches_and_leaves_global_rngs_alone(cache):
    random.seed(7)
    np.random.seed(7)
    before = (random.random(), np.random.random())
    random.seed(7)
    np.random.seed(7)
    small = data.mnist1d_sized("mnist1d_small", train=300, val=100, test=600)
    assert (random.random(), np.random.random()) == before  # the generator reseeds them
    assert small.name == "mnist1d_small"
    assert small.sizes() == {"train": 300, "val": 100, "test": 600}
    assert small.x_train.dtype == np.float32 and small.y_train.dtype == np.int32
    assert small.input_shape == (40,) and small.num_classes == 10
    assert np.bincount(small.y_val, minlength=10).tolist() == [10] * 10  # stratified
    everything = np.concatenate([small.x_train, small.x_val, small.x_test]).astype(np.float64)
    assert abs(everything.mean()) < 1e-5 and abs(everything.std() - 1) < 1e-5
    assert len(list(cache.glob("mnist1d_small-*.npz"))) == 1
    again = data.mnist1d_sized("mnist1d_small", train=300, val=100, test=600)  # from the cache
    assert again.content_hash == small.content_hash
    other = data.mnist1d_sized("mnist1d_small", train=400, val=100, test=500)  # own cache entry
    assert other.content_hash != small.content_hash
    assert len(list(cache.glob("mnist1d_small-*.npz"))) == 2


@pytest.mark.parametrize("split", [(305, 100, 600), (300, 105, 595), (0, 100, 600)])
def test_sized_builder_refuses_sizes_the_generator_cannot_make(cache, split):
    train, val, test = split
    with pytest.raises(ValueError, match="multiples of 10"):
        data.mnist1d_sized("bad", train=train, val=val, test=test)


def test_train_size_matches_the_generated_arrays():
    for name in ("mnist1d", "mnist5k"):
        dataset = data.load(name)
        assert data.outline(name) == (len(dataset.y_train), tuple(dataset.input_shape))
    assert data.train_size("mnist1d_40k") == 40_000  # known without generating it
