"""benchmarks/diff_params.py: hardware drift read against the seed-to-seed scale, and
each side's software and device (C20's hardware twin)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from toolkit.results import ResultsFolder, save_params

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import diff_params  # noqa: E402

SOFTWARE = {"jax": "0.11.2", "flax": "0.12.10", "python": "3.12.3"}


def _side(path: Path, trees: dict, losses: list[float], device: str, versions: dict) -> Path:
    folder = ResultsFolder(path)
    folder.path.mkdir(parents=True)
    seeds = range(len(trees))
    pd.DataFrame(
        {
            "experiment": "exp_seed_variation",
            "run_id": list(trees),
            "seed": list(seeds),
            "widths": "64-64",
            "variation": "independent",
            "final_train_loss": losses,
            "final_test_loss": [loss + 1 for loss in losses],
            "final_test_acc": 0.6,
        }
    ).to_csv(folder.path / "summary.csv", index=False)
    meta = {"experiment": "exp_seed_variation", "schema_version": 1}
    meta |= {"versions": versions, "device_kind": device}
    (folder.path / "meta.json").write_text(json.dumps(meta))
    for run_id, tree in trees.items():
        save_params(folder, run_id, tree)
    return folder.path


def test_drift_is_read_against_the_seed_distance_and_the_software_is_named(tmp_path, capsys):
    rng = np.random.default_rng(0)
    cpu_trees = {
        f"r{s}": {"params": {"Dense_0": {"kernel": rng.normal(size=(40, 64)).astype(np.float32)}}}
        for s in range(4)
    }
    gpu_trees = {
        run_id: {"params": {"Dense_0": {"kernel": tree["params"]["Dense_0"]["kernel"] * 1.01}}}
        for run_id, tree in cpu_trees.items()
    }
    losses = [0.10, 0.20, 0.30, 0.40]  # SD 0.129
    cpu = _side(tmp_path / "cpu", cpu_trees, losses, "cpu", SOFTWARE)
    gpu = _side(tmp_path / "gpu", gpu_trees, [x + 0.001 for x in losses], "NVIDIA H200", SOFTWARE)

    assert diff_params.main([str(cpu), str(gpu)]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    provenance = lines[0]["provenance"]
    assert provenance["same_software"] and provenance["device"] == "cpu → NVIDIA H200"
    assert provenance["a"]["jax"] == provenance["b"]["jax"] == "0.11.2"
    width = lines[1]
    assert width["seed_pairs"] == 2  # seeds 0-1 and 2-3
    # independent Gaussian weights of equal norm: √2 apart, near-orthogonal
    assert abs(width["seed_relative_distance_mean"] - np.sqrt(2)) < 0.05
    assert abs(width["seed_cosine_mean"]) < 0.1
    # ×1.01: relative distance 0.01 / 1.005
    assert np.isclose(width["relative_distance_mean"], 0.01 / 1.005, rtol=1e-3)
    assert np.isclose(
        width["drift_over_seed_distance"],
        width["relative_distance_mean"] / width["seed_relative_distance_mean"],
    )
    assert np.isclose(width["seed_sd_final_test_loss"], np.std(losses, ddof=1))
    assert np.isclose(width["test_loss_delta_over_seed_sd"], 0.001 / np.std(losses, ddof=1))

    assert diff_params.main([str(cpu), str(cpu)]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert lines[1]["drift_over_seed_distance"] == 0 and lines[1]["bitwise_identical_runs"] == 4


def test_a_software_change_is_named(tmp_path, capsys):
    tree = {"params": {"Dense_0": {"kernel": np.ones((2, 2), np.float32)}}}
    old = _side(tmp_path / "old", {"r0": tree}, [0.1], "cpu", {**SOFTWARE, "jax": "0.10.2"})
    new = _side(tmp_path / "new", {"r0": tree}, [0.1], "NVIDIA H200", SOFTWARE)
    assert diff_params.main([str(old), str(new)]) == 0
    provenance = json.loads(capsys.readouterr().out.splitlines()[0])["provenance"]
    assert not provenance["same_software"]
    assert provenance["software_differences"] == ["jax 0.10.2 → 0.11.2"]
