#!/usr/bin/env bash
# Everything this project runs on a lent GPU (the device time is short), in two calls:
#   PART=bench  benchmarks/gpu_session.sh   # items 1-3 of benchmarks/README.md
#   PART=paper  benchmarks/gpu_session.sh   # item 4: the paper profiles, results as a tarball
# Expects the mnist1d wheel in .whl/ and shared/bench/anchor_vmap.py copied to .devrun/.
# Writes JSON lines, logs and a tarball of results/ and paper_figures/ under $OUT.
set -uo pipefail
export PYTHONUNBUFFERED=1
if [ ! -d /tmp/site/mnist1d ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl || exit 1
fi
export PYTHONPATH=/tmp/site:$PWD
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
step() { echo "=== $* ($(date +%T))"; }
nvidia-smi -L
python3 -c "import jax, flax, optax; print('jax', jax.__version__, 'flax', flax.__version__, 'optax', optax.__version__, jax.devices())"

if [ "${PART:-bench}" = bench ]; then
  step engine
  timeout 200 python3 benchmarks/bench_engine.py --seeds ${BENCH_SEEDS:-1 10 100 1000 10000} \
    --epochs 5 --loop-seeds 2 --marginal-factor 5 | tee "$OUT/bench_engine.jsonl"
  step anchor
  timeout 60 python3 .devrun/anchor_vmap.py "${ANCHOR_PLAN:-[[\"loop\",2,1],[\"vmap\",1,5],[\"vmap\",10,5],[\"vmap\",100,5],[\"vmap\",1000,5],[\"vmap\",10000,5],[\"vmap\",10,25],[\"vmap\",1000,25]]}" | tee "$OUT/anchor.jsonl"
  step layout
  timeout 120 python3 benchmarks/bench_layout.py --runs 128 --epochs 2 --batches 0 16 1 | tee "$OUT/bench_layout.jsonl"
  step curvature
  timeout 60 python3 benchmarks/bench_curvature.py --runs 10 | tee "$OUT/bench_curvature.jsonl"
else
  for name in ${EXPERIMENTS:-exp_learning_rate exp_sgd_noise exp_saddle_momentum exp_representations exp_fundamentals}; do
    step "$name"
    /usr/bin/time -f "$name wall %e s" timeout "${EXPERIMENT_TIMEOUT:-80}" \
      python3 -m toolkit run "$name" --profile "${PROFILE:-paper}" --out "$OUT/gpu/results" --quiet \
      2>&1 | tail -n 40
  done
  tar czf "$OUT/gpu_results.tgz" -C "$OUT/gpu" . 2>/dev/null
fi
step done
