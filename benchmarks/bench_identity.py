"""What run identity costs end to end: an experiment's default profile trained with the
engine's CPU layout (every run of a cohort alone, ``lax.map``; bitwise run identity)
vs all runs vmapped (the layout before, faster on a GPU, not identity-preserving).

Usage: ``python benchmarks/bench_identity.py exp_seed_variation --seeds 4`` (both
layouts, one after the other, into temporary folders); prints one JSON line each with
the wall time and the cohorts' summed init, first-chunk (compile), run and measure
times from meta.json.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from toolkit import runner, spec


def bench(name: str, seeds: int, layout: str) -> dict:
    original = runner.choose_run_batch
    if layout == "vmap":
        runner.choose_run_batch = lambda *args, **kwargs: None
    try:
        with tempfile.TemporaryDirectory() as out:
            started = time.perf_counter()
            report = runner.run_experiment(
                spec.load(name), "default", seeds=seeds, out=Path(out), progress=False
            )
            wall = time.perf_counter() - started
            cohorts = report.folder.meta()["cohorts"]
    finally:
        runner.choose_run_batch = original
    parts = ("init_s", "first_chunk_s", "run_s", "measure_s")
    sums = {k: round(sum(c["timings_s"].get(k, 0) for c in cohorts), 1) for k in parts}
    row = {"experiment": name, "seeds": seeds, "layout": layout, "runs": report.new_runs}
    return row | {"wall_s": round(wall, 1), **sums}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("experiment")
    parser.add_argument("--seeds", type=int, default=4)
    parser.add_argument("--layouts", nargs="+", default=["one-at-a-time", "vmap"])
    args = parser.parse_args()
    for layout in args.layouts:
        print(json.dumps(bench(args.experiment, args.seeds, layout)), flush=True)


if __name__ == "__main__":
    main()
