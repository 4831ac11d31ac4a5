#!/usr/bin/env bash
# Everything this project runs on a lent GPU, in one call (the device time is short).
# Expects the mnist1d wheel in .whl/ and shared/bench/anchor_vmap.py copied to .devrun/.
# Writes JSON lines and a tarball of results/ and paper_figures/ under $OUT.
set -uo pipefail
export PYTHONUNBUFFERED=1
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
  --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
nvidia-smi -L
python3 -c "import jax, flax, optax; print('jax', jax.__version__, 'flax', flax.__version__, 'optax', optax.__version__, jax.devices())"
step() { echo "=== $* ($(date +%T))"; }
step engine; timeout 120 python3 benchmarks/bench_engine.py --seeds ${BENCH_SEEDS:-10 100 1000} --epochs 5 --loop-seeds 2 | tee "$OUT/bench_engine.jsonl"
step anchor; timeout 60 python3 .devrun/anchor_vmap.py "${ANCHOR_PLAN:-[[\"loop\",2,1],[\"vmap\",10,5],[\"vmap\",100,5],[\"vmap\",1000,5]]}" | tee "$OUT/anchor.jsonl"
step curvature; timeout 120 python3 benchmarks/bench_curvature.py --runs 10 | tee "$OUT/bench_curvature.jsonl"
for name in ${EXPERIMENTS:-exp_sharp_flat exp_overfitting exp_width_landscape}; do
  step "$name"; timeout "${EXPERIMENT_TIMEOUT:-100}" python3 -m toolkit run "$name" --profile "${PROFILE:-paper}" --out "$OUT/gpu/results" --quiet
done
tar czf "$OUT/gpu_results.tgz" -C "$OUT/gpu" . 2>/dev/null
step done
