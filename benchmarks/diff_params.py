"""Diff the saved final parameters of two results folders (C20's hardware part).

Usage: ``python benchmarks/diff_params.py FOLDER_A FOLDER_B [--out DIR]``, e.g.
``results/exp_seed_variation/default`` (trained on the CPU) against the same command's
folder from a GPU (``toolkit run exp_seed_variation --seeds 10 --out /tmp/gpu``, then
``/tmp/gpu/exp_seed_variation/default``). Runs are matched by run id (config + seed):
``params/<run_id>.npz``, which exp_seed_variation saves for its independent runs with
h ≤ 256.

Prints one JSON line per width (weight drift: relative distance and cosine of the whole
flattened network; per-tensor worst relative L2 and max |Δw|; how many runs are bitwise
identical; loss agreement: mean and max |Δ final train/test loss| and |Δ test acc|) and a
final JSON line over all runs. ``--out`` also writes the per-run (``runs.csv``) and
per-tensor (``tensors.csv``) tables. Two CPU folders of the same command give drift 0
(the engine's CPU layout is bitwise reproducible); a GPU folder is expected to drift in
weights while matching in loss.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from experiments.exp_seed_variation import hardware_diff, tensor_drift  # noqa: E402

LOSSES = ("delta_final_train_loss", "delta_final_test_loss", "delta_final_test_acc")


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
    tensors = tensor_drift(args.folder_a, args.folder_b)
    for widths, part in runs.groupby("widths"):
        chosen = tensors[tensors["run_id"].isin(part["run_id"])]
        print(json.dumps({"widths": str(widths), **summarize(part, chosen)}))
    print(json.dumps({"widths": "all", **summarize(runs, tensors)}))
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        runs.to_csv(args.out / "runs.csv", index=False)
        tensors.to_csv(args.out / "tensors.csv", index=False)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
