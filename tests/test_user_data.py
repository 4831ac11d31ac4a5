"""A researcher's own arrays: ``--set dataset=path/to/file.npz`` through any experiment."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from toolkit import data as datasets
from toolkit.cli import main


def _arrays(seed: int = 0, n: int = 800, features: int = 12, classes: int = 3) -> dict:
    rng = np.random.default_rng(seed)
    centers = rng.normal(0, 3, (classes, features))
    y = rng.integers(0, classes, n)
    x = centers[y] + rng.normal(0, 1, (n, features))
    y_test = rng.integers(0, classes, 90)
    x_test = centers[y_test] + rng.normal(0, 1, (90, features))
    return {"x_train": x, "y_train": y, "x_test": x_test, "y_test": y_test}


@pytest.fixture
def npz(tmp_path):
    path = tmp_path / "mine.npz"
    np.savez(path, **_arrays())
    return path


def test_file_dataset_loads_with_a_stratified_validation_split(npz):
    d = datasets.load_file(npz)
    assert d.num_classes == 3 and d.input_shape == (12,)
    assert len(d.y_val) == (160 // 3) * 3 and len(d.y_train) + len(d.y_val) == 800  # stratified
    assert len(d.y_test) == 90
    assert sorted(np.unique(d.y_val)) == [0, 1, 2]
    assert d.x_train.dtype == np.float32 and d.y_train.dtype == np.int32
    assert datasets.load_file(npz).content_hash == d.content_hash


def test_run_an_experiment_on_a_file(npz, tmp_path):
    out = tmp_path / "results"
    result = CliRunner().invoke(
        main,
        ["run", "exp_overfitting", "--profile", "quick", "--seeds", "1", "--quiet",
         "--set", f"dataset={npz}", "--out", str(out)],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    (folder,) = list((out / "exp_overfitting").iterdir())
    assert "/" not in folder.name and ".." not in folder.name
    meta = json.loads((folder / "meta.json").read_text())
    assert datasets.load_file(npz).content_hash in json.dumps(meta)


BAD = {
    "missing key": ({"x_train": 1}, "lacks"),
    "negative label": ({"y_train": -1}, "negative labels"),
    "length mismatch": ({"y_test": "short"}, "one label per row"),
    "non-finite": ({"x_test": "nan"}, "NaN"),
    "float labels": ({"y_train": "float"}, "integer class labels"),
    "shape mismatch": ({"x_test": "wide"}, "shape"),
    "one class": ({"y_train": 0}, "at least 2 classes"),
    "val without y": ({"x_val": 1}, "both x_val and y_val"),
}


def _broken(kind: str, arrays: dict) -> dict:
    change, _ = BAD[kind]
    ((key, how),) = change.items()
    arrays = dict(arrays)
    if kind == "missing key":
        del arrays[key]
    elif how == -1:
        arrays[key] = arrays[key].copy()
        arrays[key][0] = -1
    elif how == "short":
        arrays[key] = arrays[key][:-1]
    elif how == "nan":
        arrays[key] = arrays[key].copy()
        arrays[key][0, 0] = np.nan
    elif how == "float":
        arrays[key] = arrays[key].astype(float)
    elif how == "wide":
        arrays[key] = np.zeros((len(arrays["y_test"]), 13))
    elif how == 0:
        arrays[key] = np.zeros_like(arrays[key])
    elif key == "x_val":
        arrays["x_val"] = arrays["x_test"]
    return arrays


@pytest.mark.parametrize("kind", sorted(BAD))
def test_bad_files_are_refused_in_one_line(kind, tmp_path):
    path = tmp_path / "bad.npz"
    np.savez(path, **_broken(kind, _arrays()))
    out = tmp_path / "results"
    result = CliRunner().invoke(
        main,
        ["run", "exp_overfitting", "--profile", "quick", "--seeds", "1",
         "--set", f"dataset={path}", "--out", str(out)],
    )  # fmt: skip
    assert result.exit_code == 2, result.output
    message = result.output.strip()
    assert len(message.splitlines()) == 1 and BAD[kind][1] in message, message
    assert "Traceback" not in message and not out.exists()


def test_a_file_too_small_for_the_experiment_is_refused(tmp_path):
    """exp_overfitting monitors the loss on 512 training examples (C02)."""
    path = tmp_path / "small.npz"
    np.savez(path, **_arrays(n=300))
    result = CliRunner().invoke(
        main,
        ["run", "exp_overfitting", "--profile", "quick", "--seeds", "1",
         "--set", f"dataset={path}", "--out", str(tmp_path / "r")],
    )  # fmt: skip
    assert result.exit_code == 2 and "monitor_examples=512" in result.output, result.output


def test_not_a_file_and_not_a_zip(tmp_path):
    garbage = tmp_path / "garbage.npz"
    garbage.write_bytes(b"not a zip")
    for path, words in ((tmp_path / "absent.npz", "does not exist"), (garbage, "not a readable")):
        result = CliRunner().invoke(
            main,
            ["run", "exp_overfitting", "--profile", "quick", "--seeds", "1",
             "--set", f"dataset={path}", "--out", str(tmp_path / "r")],
        )  # fmt: skip
        assert result.exit_code == 2 and words in result.output, result.output
