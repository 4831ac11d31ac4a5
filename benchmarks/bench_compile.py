"""Compile seconds per experiment: a first run with an empty compilation cache, then
the same run again (its programs now in JAX's persistent cache).

Each run is ``toolkit run NAME --profile P --seeds S`` in a fresh process writing to a
scratch folder; the figures come from the folder's meta.json (per cohort:
``compile_s.training`` and ``compile_s.measure``, from :class:`toolkit.distributed.CompileClock`)
and the invocation's wall time. Prints one JSON line per experiment and run::

    python benchmarks/bench_compile.py --seeds 2 exp_overfitting exp_sharp_flat
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import jax

from toolkit.data import cache_dir

EXPERIMENTS = (
    "exp_overfitting",
    "exp_sharp_flat",
    "exp_width_landscape",
    "exp_regularization",
    "exp_seed_variation",
    "exp_learning_rate",
    "exp_sgd_noise",
    "exp_saddle_momentum",
    "exp_fundamentals",
    "exp_representations",
)


def one_run(name: str, profile: str, seeds: int, cache: Path, out: Path) -> dict:
    env = os.environ | {"TOOLKIT_CACHE": str(cache)}
    command = [sys.executable, "-m", "toolkit", "run", name, "--profile", profile]
    command += ["--seeds", str(seeds), "--out", str(out), "--quiet"]
    start = time.perf_counter()
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if done.returncode != 0:
        return {"error": done.stderr.strip().splitlines()[-1:], "wall_s": round(wall, 1)}
    (meta_path,) = (out / name).glob("*/meta.json")
    meta = json.loads(meta_path.read_text())
    totals = {"training": 0.0, "measure": 0.0, "programs": 0, "cache_hits": 0}
    per_cohort = [
        [round(c["compile_s"][part]["total_s"], 1) for part in ("training", "measure")]
        for c in meta["cohorts"]
    ]
    for cohort in meta["cohorts"]:
        for part in ("training", "measure"):
            figures = cohort["compile_s"][part]
            totals[part] += figures["total_s"]
            totals["programs"] += figures["programs"]
            totals["cache_hits"] += figures["cache_hits"]
    return {
        "cohorts": len(meta["cohorts"]),
        "compile_training_s": round(totals["training"], 1),
        "compile_measure_s": round(totals["measure"], 1),
        "compile_s": round(totals["training"] + totals["measure"], 1),
        "programs": totals["programs"],
        "cache_hits": totals["cache_hits"],
        "wall_s": round(wall, 1),
        "per_cohort_training_measure_s": per_cohort,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("experiments", nargs="*", default=EXPERIMENTS)
    parser.add_argument("--profile", default="default")
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--cold-only", action="store_true", help="skip the warm rerun")
    args = parser.parse_args()
    device = jax.devices()[0].device_kind
    for name in args.experiments:
        with tempfile.TemporaryDirectory() as scratch:
            cache = Path(scratch) / "cache"
            # $TOOLKIT_CACHE also holds the generated datasets: copy them in, so the
            # first run's wall time is not dataset generation
            shutil.copytree(cache_dir(), cache, ignore=shutil.ignore_patterns("jax"))
            for attempt in ("empty cache", "warm cache")[: 1 if args.cold_only else 2]:
                out = Path(scratch) / attempt.replace(" ", "_")
                row = one_run(name, args.profile, args.seeds, cache, out)
                line = {"experiment": name, "profile": args.profile, "seeds": args.seeds}
                line |= {"run": attempt, "device": device, "jax": jax.__version__} | row
                print(json.dumps(line), flush=True)


if __name__ == "__main__":
    main()
