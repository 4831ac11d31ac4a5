"""exp_seed_variation: how variations pin key streams; the CPU-vs-GPU parameter diff."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from experiments import exp_seed_variation as exp
from toolkit import spec
from toolkit.results import ResultsFolder, save_params


def test_variation_pins_one_stream_to_the_shared_seed():
    independent = exp.Config(variation="independent").stream_seeds(3)
    same_init = exp.Config(variation="same_init").stream_seeds(3)
    same_order = exp.Config(variation="same_order").stream_seeds(3)
    assert independent["init"] == independent["order"] == 3
    assert (same_init["init"], same_init["order"]) == (0, 3)
    assert (same_order["init"], same_order["order"]) == (3, 0)
    # seed 0 is the same run in every variation
    assert (
        len({tuple(exp.Config(variation=v).stream_seeds(0).items()) for v in exp.VARIATIONS}) == 1
    )
    with pytest.raises(spec.SpecError):
        exp.Config(variation="same_everything")
    with pytest.raises(spec.SpecError):
        spec.parse_overrides(spec.load("exp_seed_variation"), ["pin_init_seed=1"])


def test_hardware_diff_matches_runs_by_id(tmp_path):
    rng = np.random.default_rng(0)
    params = {"params": {"Dense_0": {"kernel": rng.normal(size=(3, 2)).astype(np.float32)}}}
    nudged = {"params": {"Dense_0": {"kernel": params["params"]["Dense_0"]["kernel"] + 1e-3}}}
    summary = pd.DataFrame(
        {
            "run_id": ["r0"],
            "seed": [0],
            "widths": ["2"],
            "variation": ["independent"],
            "final_train_loss": [0.1],
            "final_test_loss": [1.0],
            "final_test_acc": [0.6],
        }
    )
    for name, tree, loss in (("cpu", params, 0.1), ("gpu", nudged, 0.1001)):
        folder = ResultsFolder(tmp_path / name)
        folder.path.mkdir()
        summary.assign(final_train_loss=loss).to_csv(folder.path / "summary.csv", index=False)
        save_params(folder, "r0", tree)
    same = exp.hardware_diff(tmp_path / "cpu", tmp_path / "cpu")
    assert same["relative_distance"].item() == 0 and same["delta_final_train_loss"].item() == 0
    diff = exp.hardware_diff(tmp_path / "cpu", tmp_path / "gpu")
    assert 0 < diff["relative_distance"].item() < 1e-2
    assert np.isclose(diff["delta_final_train_loss"].item(), 1e-4)


def test_tensor_drift_and_diff_script(tmp_path, capsys):
    import json
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    import diff_params

    rng = np.random.default_rng(1)
    kernel = rng.normal(size=(3, 2)).astype(np.float32)
    bias = np.zeros(2, np.float32)
    trees = {
        "cpu": {"params": {"Dense_0": {"kernel": kernel, "bias": bias}}},
        "gpu": {"params": {"Dense_0": {"kernel": kernel * 1.001, "bias": bias}}},
    }
    summary = pd.DataFrame(
        {"run_id": ["r0"], "seed": [0], "widths": ["2"], "variation": ["independent"]}
        | {"final_train_loss": [0.1], "final_test_loss": [1.0], "final_test_acc": [0.6]}
    )
    for name, tree in trees.items():
        folder = ResultsFolder(tmp_path / name)
        folder.path.mkdir()
        summary.to_csv(folder.path / "summary.csv", index=False)
        save_params(folder, "r0", tree)
    drift = exp.tensor_drift(tmp_path / "cpu", tmp_path / "gpu").set_index("tensor")
    assert drift.loc["params/Dense_0/bias", "identical"]
    assert not drift.loc["params/Dense_0/kernel", "identical"]
    assert np.isclose(drift.loc["params/Dense_0/kernel", "relative_l2"], 1e-3, rtol=1e-2)
    assert diff_params.main([str(tmp_path / "cpu"), str(tmp_path / "cpu")]) == 0
    same = json.loads(capsys.readouterr().out.splitlines()[-1])
    assert same["bitwise_identical_runs"] == 1 and same["tensor_max_abs_diff"] == 0
    assert diff_params.main([str(tmp_path / "cpu"), str(tmp_path / "gpu")]) == 0
    moved = json.loads(capsys.readouterr().out.splitlines()[-1])
    assert moved["bitwise_identical_runs"] == 0 and moved["abs_delta_final_train_loss_max"] == 0
