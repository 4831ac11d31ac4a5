#!/usr/bin/env bash
# C20's hardware part: the same exp_seed_variation runs (same configs, seeds and software)
# trained on this machine's CPU (JAX_PLATFORMS=cpu) and on its default device (the GPU on
# a GPU machine), both sides at once; then their saved final parameters are diffed
# (benchmarks/diff_params.py: weight drift against the seed-to-seed distance, loss
# agreement against the seed-to-seed spread) and their summaries compared (toolkit
# compare: its first line says whether the software versions are the same).
#
#   OUT=/tmp/out benchmarks/c20_hardware_twin.sh
#
# Settings (environment): TWIN_PROFILE (default), TWIN_SEEDS (10), TWIN_WIDTHS (256,256:
# the width of C20's primary test; its independent runs are the ones saved),
# TWIN_TIMEOUT (seconds per side, 200). Writes under $OUT/c20_twin/: cpu/ and device/
# (results/ and paper_figures/ of each side), diff.jsonl, diff/ (runs.csv, tensors.csv),
# compare.txt, and, when the runs are the default profile's (the committed folder saved
# them): diff_committed.jsonl, the committed CPU folder (this repository's jax and the
# engine's earlier CPU layout) against the device side (software, layout and hardware
# changed together), and diff_committed_cpu.jsonl, against this machine's CPU side (the
# software and layout alone, on another CPU). On a CPU-only machine both sides run on
# the CPU and must diff to 0.
#
# Cost on the H200 machine (estimated, not yet measured): the CPU side trains 10 runs of
# 2,400 steps of a 40-256-256-10 MLP one run at a time (the 2-core CPU took 90 s for 30
# such runs: ~30 s), then compiles and measures (~30 s); the device side mostly compiles
# (~20 s); they overlap, so ~1 min. The quick dry run (2 seeds, h = 16) took 52 s on the
# 2-core CPU (34 s per side, both at once, compilation cached).
set -uo pipefail
export PYTHONUNBUFFERED=1 XLA_PYTHON_CLIENT_PREALLOCATE=false
OUT=${OUT:-/tmp/out}
PROFILE=${TWIN_PROFILE:-default}
SEEDS=${TWIN_SEEDS:-10}
WIDTHS=${TWIN_WIDTHS:-256,256}
TIMEOUT=${TWIN_TIMEOUT:-200}
dir=$OUT/c20_twin
mkdir -p "$dir"

side() { # $1: folder name; the rest: the environment of that side
  local name=$1
  shift
  local start=$SECONDS code  # bash's own clock: the GPU image may lack /usr/bin/time
  env "$@" timeout "$TIMEOUT" \
    python3 -m toolkit run exp_seed_variation --profile "$PROFILE" --seeds "$SEEDS" \
    --set variation=independent --set "widths=$WIDTHS" --out "$dir/$name/results" --quiet \
    >"$dir/$name.log" 2>&1
  code=$?
  echo "c20 twin $name side: wall $((SECONDS - start)) s" >>"$dir/$name.log"
  echo "c20 twin $name side: exit $code ($(tail -n 2 "$dir/$name.log" | head -n 1))"
}
side cpu JAX_PLATFORMS=cpu &
side device &
wait

folder() { find "$dir/$1/results/exp_seed_variation" -mindepth 1 -maxdepth 1 -type d | head -n 1; }
cpu=$(folder cpu)
device=$(folder device)
if [ -z "$cpu" ] || [ -z "$device" ]; then
  echo "c20 twin: a side wrote no results folder (see $dir/cpu.log, $dir/device.log)"
  exit 1
fi
python3 benchmarks/diff_params.py "$cpu" "$device" --out "$dir/diff" | tee "$dir/diff.jsonl"
python3 -m toolkit compare "$cpu" "$device" --all >"$dir/compare.txt" 2>&1
head -n 5 "$dir/compare.txt"
committed=results/exp_seed_variation/default
if [ -d "$committed/params" ]; then # runs saved in both only when the command is default's
  python3 benchmarks/diff_params.py "$committed" "$device" >"$dir/diff_committed.jsonl" 2>&1 || true
  python3 benchmarks/diff_params.py "$committed" "$cpu" >"$dir/diff_committed_cpu.jsonl" 2>&1 || true
fi
