"""Diff the saved final parameters of two results folders (C20's hardware part).

Usage: ``python benchmarks/diff_params.py FOLDER_A FOLDER_B [--out DIR]``, e.g.
``results/exp_seed_variation/default`` (trained on the CPU) against the same command's
folder from a GPU (``toolkit run exp_seed_variation --seeds 10 --out /tmp/gpu``, then
``/tmp/gpu/exp_seed_variation/default``). Runs are matched by run id (config + seed):
``params/<run_id>.npz``, which exp_seed_variation saves for its independent runs with
h ≤ 256.

Prints a first JSON line with what made each side (device kind and software versions,
from meta.json) and whether the software is the same (a clean hardware twin runs the same
command with the same versions: on one GPU machine, once with ``JAX_PLATFORMS=cpu``, see
``benchmarks/c20_hardware_twin.sh``), then one JSON line per width (weight drift: relative
distance and cosine of the whole flattened network; per-tensor worst relative L2 and max
|Δw|; how many runs are bitwise identical; loss agreement: mean and max |Δ final
train/test loss| and |Δ test acc|) and a final JSON line over all runs.

Each drift is read against the seed-to-seed scale of folder A: the relative distance
between two different seeds' weights (disjoint pairs of its saved runs, by seed) and the
across-seed SD of its final losses. ``drift_over_seed_distance`` (hardware drift / seed
distance) and ``test_loss_delta_over_seed_sd`` (mean |Δ final test loss| / that SD) are
the two numbers C20's hardware part is about: weights that drift (> 0) while losses
agree far inside the seed spread (≪ 1).

``--out`` also writes the per-run (``runs.csv``) and per-tensor (``tensors.csv``) tables.
Two CPU folders of the same command give drift 0 (the engine's CPU layout is bitwise
reproducible); a GPU folder is expected to drift in weights while matching in loss.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from experiments.exp_seed_variation import hardware_diff, tensor_drift  # noqa: E402
from toolkit import alignment  # noqa: E402
from toolkit import compare as cmp  # noqa: E402
from toolkit.results import PARAMS_DIR, ResultsFolder, load_params  # noqa: E402

LOSSES = ("delta_final_train_loss", "delta_final_test_loss", "delta_final_test_acc")


def provenance(folder_a: Path, folder_b: Path) -> dict:
    """Device kind and versions of each side, and whether the software is the same."""
    a, b = cmp.load_side(folder_a, "A"), cmp.load_side(folder_b, "B")
    env = {side.label: cmp.environment(side.meta) for side in (a, b)}
    differ, _, device = cmp.version_differences(a, b)
    return {
        "a": {name: ", ".join(values) for name, values in env["A"].items()},
        "b": {name: ", ".join(values) for name, values in env["B"].items()},
        "same_software": not differ,
        "software_differences": differ,
        "device": device,
    }


def seed_scale(folder: Path, runs: pd.DataFrame) -> dict:
    """Folder A's seed-to-seed scale for these runs: the mean relative distance and
    cosine between different seeds' saved weights (disjoint pairs in seed order) and
    the across-seed SD of the final losses."""
    summary = ResultsFolder(folder).summary().set_index("run_id").loc[runs["run_id"]]
    ordered = runs.sort_values("seed")["run_id"].tolist()
    pairs = [(ordered[i], ordered[i + 1]) for i in range(0, len(ordered) - 1, 2)]
    similarity = [
        alignment.flat_similarity(
            load_params(folder / PARAMS_DIR / f"{left}.npz"),
            load_params(folder / PARAMS_DIR / f"{right}.npz"),
        )
        for left, right in pairs
    ]
    nan = float("nan")
    return {
        "seed_pairs": len(pairs),
        "seed_relative_distance_mean": float(
            np.mean([float(s["relative_distance"]) for s in similarity])
        )
        if pairs
        else nan,
        "seed_cosine_mean": float(np.mean([float(s["cosine"]) for s in similarity]))
        if pairs
        else nan,
        "seed_sd_final_train_loss": float(summary["final_train_loss"].std(ddof=1))
        if len(summary) > 1
        else nan,
        "seed_sd_final_test_loss": float(summary["final_test_loss"].std(ddof=1))
        if len(summary) > 1
        else nan,
    }


def summarize(runs, tensors) -> dict:
    worst = tensors.groupby("run_id")[["relative_l2", "max_abs_diff"]].max()
    identical = tensors.groupby("run_id")["identical"].all()
    out = {
        "runs": len(runs),
        "bitwise_identical_runs": int(identical.reindex(runs["run_id"]).fillna(False).sum()),
        "relative_distance_mean": float(runs["relative_distance"].mean()),
        "relative_distance_max": float(runs["relative_distance"].max()),
        "cosine_min": float(runs["cosine"].min()),
        "tensor_relative_l2_max": float(worst["relative_l2"].max()),
        "tensor_max_abs_diff": float(worst["max_abs_diff"].max()),
    }
    for column in LOSSES:
        values = np.abs(runs[column].to_numpy())
        name = column.removeprefix("delta_")
        out[f"abs_delta_{name}_mean"] = float(values.mean())
        out[f"abs_delta_{name}_max"] = float(values.max())
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder_a", type=Path)
    parser.add_argument("folder_b", type=Path)
    parser.add_argument("--out", type=Path, help="write runs.csv and tensors.csv here")
    args = parser.parse_args(argv)
    runs = hardware_diff(args.folder_a, args.folder_b)
    if runs.empty:
        print(f"no run saved in both {args.folder_a} and {args.folder_b}", file=sys.stderr)
        return 1
    print(json.dumps({"provenance": provenance(args.folder_a, args.folder_b)}))
    tensors = tensor_drift(args.folder_a, args.folder_b)
    for widths, part in runs.groupby("widths"):
        chosen = tensors[tensors["run_id"].isin(part["run_id"])]
        line = {"widths": str(widths), **summarize(part, chosen)}
        line.update(seed_scale(args.folder_a, part))
        line["drift_over_seed_distance"] = (
            line["relative_distance_mean"] / line["seed_relative_distance_mean"]
        )
        line["test_loss_delta_over_seed_sd"] = (
            line["abs_delta_final_test_loss_mean"] / line["seed_sd_final_test_loss"]
        )
        print(json.dumps(line))
    print(json.dumps({"widths": "all", **summarize(runs, tensors)}))
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        runs.to_csv(args.out / "runs.csv", index=False)
        tensors.to_csv(args.out / "tensors.csv", index=False)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
