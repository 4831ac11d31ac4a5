"""Inside a cohort: every run vmapped at once vs ``lax.map`` over groups of runs.

The engine computes a cohort's runs all at once (``vmap``) unless its memory estimate
exceeds the budget; then it runs groups of ``run_batch`` runs one after another inside
the same program (``lax.map`` with a batch size). This measures what each layout costs
for an MLP (40-256-256-10) and the MNIST-1D CNN (3 conv layers, 32 channels) cohort of
R runs on MNIST-1D, batch 100, SGD + momentum: seed-steps per second of a compiled call
(two evaluations of 17,000 examples per run included, as in real use).

Usage: ``python benchmarks/bench_layout.py --runs 32 --epochs 2 --batches 0 8 1``
(0 = all runs vmapped, the engine's choice on a GPU whenever the cohort fits in memory;
1 = one run at a time, its choice on a CPU). ``--widths 100 100 --batch 64`` sets the
MLP's hidden widths and the batch size (e.g. an experiment's own shapes).
"""

from __future__ import annotations

import argparse
import json
import time

import jax
import numpy as np

from toolkit import data, engine

MODELS = {"mlp": (256, 256), "cnn": (32, 32, 32)}


def bench(
    ds: data.Dataset,
    model: str,
    runs: int,
    epochs: int,
    run_batch: int | None,
    widths: tuple[int, ...] | None = None,
    batch: int = 100,
) -> dict:
    widths = tuple(widths or MODELS[model])
    spec = engine.CohortSpec("mnist1d", model, widths, "relu", "sgd", "ce", batch, epochs)
    cohort = engine.Cohort(spec, ds, history_points=1, run_batch=run_batch)
    hparams = {h: np.zeros(runs) for h in engine.HPARAMS}
    hparams.update(
        learning_rate=np.full(runs, 0.05), momentum=np.full(runs, 0.9), init_scale=np.ones(runs)
    )
    keys = engine.run_keys(0, {s: list(range(runs)) for s in engine.STREAMS})
    start = time.perf_counter()
    cohort.run(keys, hparams)
    first = time.perf_counter() - start
    start = time.perf_counter()
    cohort.run(keys, hparams)
    wall = time.perf_counter() - start
    steps = runs * epochs * cohort.steps_per_epoch
    return {
        "device": jax.devices()[0].device_kind,
        "jax": jax.__version__,
        "model": model,
        "widths": list(widths),
        "batch": batch,
        "runs": runs,
        "run_batch": run_batch or runs,
        "layout": "vmap" if run_batch is None else "lax.map",
        "seed_steps_per_s": round(steps / wall),
        "wall_s": round(wall, 3),
        "compile_s": round(first - wall, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=32)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--batches", type=int, nargs="+", default=[0, 8, 1])
    parser.add_argument("--models", nargs="+", default=list(MODELS))
    parser.add_argument("--widths", type=int, nargs="+", help="MLP hidden widths")
    parser.add_argument("--batch", type=int, default=100)
    args = parser.parse_args()
    ds = data.load("mnist1d")
    for model in args.models:
        for run_batch in args.batches:
            widths = args.widths if model == "mlp" else None
            row = bench(ds, model, args.runs, args.epochs, run_batch or None, widths, args.batch)
            print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
