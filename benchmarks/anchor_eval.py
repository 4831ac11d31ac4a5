"""The anchor with the engine's evaluations, and the engine timed against it.

The twin is a hand-written JAX program doing exactly the work of ``bench_engine.py``'s
engine configuration: MLP 40-100-100-10 on MNIST-1D's 4,000 training examples, SGD
with momentum 0.9, lr 0.05, batch 100 (40 steps per epoch), E epochs, and the engine's
two evaluations per run (at init and after the last epoch: loss and accuracy on the
train, validation and test splits, 4,000 + 1,000 + 12,000 examples). One seed's run is
one function — init, evaluate, ``lax.scan`` over epochs and steps, evaluate — vmapped
over the seeds, jitted once, results to the host at the end. Its keys are the
engine's (``fold_in(fold_in(key(0), seed), stream)``, stream 0 for the init and 1 for
the data order; epoch e's order is ``permutation(fold_in(order_key, e), 4000)``), so
its metrics equal the engine's to float32 rounding (each row reports the largest
difference, over both evaluations and all six metrics).

``main`` times, in one process and alternating, the twin and the engine
(``toolkit.engine.Cohort.run``, one whole call) in the layouts asked for:

- ``twin``: all seeds vmapped (what a JAX user writes);
- ``twin_map1``: the same program, seeds one at a time (``lax.map``), the engine's
  CPU layout, to separate the layout's cost from the engine's own overheads;
- ``engine_map1``: the engine with ``run_batch=1`` (its choice on a CPU: run identity);
- ``engine_vmap``: the engine with every run vmapped (its choice on a GPU);
- ``engine_map<K>``, K > 1: groups of K runs vmapped, the groups one after another
  (``run_batch=K``; not the engine's choice anywhere, measured to price a run-block).

Compilation is excluded (one untimed call each first); each layout is timed
``--reps`` times in turn and the median wall time reported, with seed-steps per second
and the ratio to ``twin`` (a ratio of 0.9 means 0.9× the twin's speed). JSON lines.

Usage: ``python benchmarks/anchor_eval.py --seeds 1 10 100 --epochs 5 --reps 5``
(on a GPU: ``--seeds 10 1000 10000``; the default layouts there are ``twin`` and
``engine_vmap``). ``--profile`` adds, per engine layout, a row splitting the engine's
call into its pieces beside the twin's fixed cost (init and two evaluations).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from bench_engine import seed_keys

from toolkit import data, engine
from toolkit.parallel import unpad

WIDTHS = (100, 100)
BATCH, LR, MOMENTUM = 100, 0.05, 0.9
EVAL_BATCH = 1000  # divides every split (4,000 / 1,000 / 12,000): no padding
SPLITS = ("train", "val", "test")
LAYOUTS = ("twin", "twin_map1", "engine_map1", "engine_vmap")


class MLP(nn.Module):
    @nn.compact
    def __call__(self, x):
        for width in WIDTHS:
            x = nn.relu(nn.Dense(width)(x))
        return nn.Dense(10)(x)


def make_twin(ds: data.Dataset, epochs: int, one_at_a_time: bool = False) -> Callable:
    """seeds (int array) -> metrics (seeds, 2 evaluations, 6) as in ``engine.METRICS``."""
    model, tx = MLP(), optax.sgd(LR, momentum=MOMENTUM)
    x_train, y_train = jnp.asarray(ds.x_train), jnp.asarray(ds.y_train)
    splits = {
        name: (jnp.asarray(getattr(ds, f"x_{name}")), jnp.asarray(getattr(ds, f"y_{name}")))
        for name in SPLITS
    }
    num_train = len(ds.y_train)
    steps = num_train // BATCH

    def loss_fn(params, xb, yb):
        logits = model.apply(params, xb)
        return optax.softmax_cross_entropy_with_integer_labels(logits, yb).mean()

    def evaluate(params):
        """(loss, accuracy) of train, val, test: batches of EVAL_BATCH, summed in a scan."""
        out = []
        for x, y in splits.values():
            xs = x.reshape(-1, EVAL_BATCH, x.shape[1])
            ys = y.reshape(-1, EVAL_BATCH)

            def batch_sums(totals, batch):
                logits = model.apply(params, batch[0])
                loss = optax.softmax_cross_entropy_with_integer_labels(logits, batch[1]).sum()
                correct = (logits.argmax(-1) == batch[1]).sum()
                return totals + jnp.stack([loss, correct]), None

            totals, _ = jax.lax.scan(batch_sums, jnp.zeros(2), (xs, ys))
            out.append(totals / len(y))
        return jnp.concatenate(out)

    def step(state, index):
        params, opt_state = state
        grads = jax.grad(loss_fn)(params, x_train[index], y_train[index])
        updates, opt_state = tx.update(grads, opt_state, params)
        return (optax.apply_updates(params, updates), opt_state), None

    def run(seed):
        key = jax.random.fold_in(jax.random.key(0), seed)
        init_key, order_key = jax.random.fold_in(key, 0), jax.random.fold_in(key, 1)
        params = model.init(init_key, x_train[:1])
        before = evaluate(params)

        def epoch(state, e):
            order = jax.random.permutation(jax.random.fold_in(order_key, e), num_train)
            return jax.lax.scan(step, state, order.reshape(steps, BATCH))[0], None

        (params, _), _ = jax.lax.scan(epoch, (params, tx.init(params)), jnp.arange(epochs))
        return jnp.stack([before, evaluate(params)])

    if one_at_a_time:
        program = jax.jit(lambda seeds: jax.lax.map(run, seeds))
    else:
        program = jax.jit(jax.vmap(run))
    return lambda seeds: np.asarray(program(jnp.asarray(seeds, jnp.int32)))


def engine_cohort(ds: data.Dataset, seeds: int, epochs: int, run_batch: int | None):
    """(cohort, keys, hparams) of bench_engine's configuration."""
    spec = engine.CohortSpec("mnist1d", "mlp", WIDTHS, "relu", "sgd", "ce", BATCH, epochs)
    cohort = engine.Cohort(spec, ds, history_points=1, run_batch=run_batch)
    hparams = {h: np.zeros(seeds) for h in engine.HPARAMS}
    hparams.update(
        learning_rate=np.full(seeds, LR),
        momentum=np.full(seeds, MOMENTUM),
        init_scale=np.ones(seeds),
    )
    keys = seed_keys(seeds)  # the engine's own keys
    return cohort, keys, hparams


def make_engine(ds: data.Dataset, seeds: int, epochs: int, run_batch: int | None) -> Callable:
    """One whole ``Cohort.run`` -> history (seeds, 2 evaluations, 6)."""
    cohort, keys, hparams = engine_cohort(ds, seeds, epochs, run_batch)
    return lambda: cohort.run(keys, hparams).history


def programs(ds: data.Dataset, seeds: int, epochs: int, layouts: list[str]) -> dict[str, Callable]:
    calls = {}
    for layout in layouts:
        if layout.startswith("twin"):
            twin = make_twin(ds, epochs, one_at_a_time=layout == "twin_map1")
            calls[layout] = (lambda t: lambda: t(np.arange(seeds)))(twin)
        else:
            calls[layout] = make_engine(ds, seeds, epochs, run_batch_of(layout))
    return calls


def run_batch_of(layout: str) -> int | None:
    """``engine_map<K>`` -> K; ``engine_vmap`` -> None (every run at once)."""
    return None if layout == "engine_vmap" else int(layout.removeprefix("engine_map"))


def layout_name(text: str) -> str:
    if text in LAYOUTS or (
        text.startswith("engine_map") and text[10:].isdigit() and int(text[10:]) > 0
    ):
        return text
    raise argparse.ArgumentTypeError(f"{text!r}: use one of {LAYOUTS} or engine_map<K>")


def twin_of(layout: str) -> str:
    """The twin layout computing the same arithmetic as ``layout``."""
    return "twin_map1" if layout.endswith("_map1") else "twin"


def measure(ds: data.Dataset, seeds: int, epochs: int, layouts: list[str], reps: int) -> dict:
    calls = programs(ds, seeds, epochs, layouts)
    compile_s, outputs = {}, {}
    for name, call in calls.items():
        start = time.perf_counter()
        outputs[name] = call()
        compile_s[name] = time.perf_counter() - start
    walls = {name: [] for name in calls}
    cpus = {name: [] for name in calls}
    for _ in range(reps):  # alternating: drift on a shared machine hits every layout alike
        for name, call in calls.items():
            start, start_cpu = time.perf_counter(), time.process_time()
            call()
            walls[name].append(time.perf_counter() - start)
            cpus[name].append(time.process_time() - start_cpu)
    seed_steps = seeds * epochs * (len(ds.y_train) // BATCH)
    median = {name: statistics.median(w) for name, w in walls.items()}
    base = "twin"  # main() always measures it
    return {
        **_header(seeds, epochs, reps),
        "median_wall_s": {k: round(v, 4) for k, v in median.items()},
        "all_wall_s": {k: [round(x, 4) for x in v] for k, v in walls.items()},
        "seed_steps_per_s": {k: round(seed_steps / v) for k, v in median.items()},
        "speed_over_twin": {k: round(median[base] / v, 3) for k, v in median.items()},
        # CPU seconds of this process (all threads): on a loaded machine a steadier
        # measure of the work than wall time (on a GPU it counts only the host's share).
        "median_process_cpu_s": {k: round(statistics.median(v), 4) for k, v in cpus.items()},
        "cpu_speed_over_twin": {
            k: round(statistics.median(cpus[base]) / statistics.median(v), 3)
            for k, v in cpus.items()
        },
        "first_call_s": {k: round(v, 2) for k, v in compile_s.items()},
        "final_test_acc_mean": {k: round(float(v[:, -1, 5].mean()), 4) for k, v in outputs.items()},
        # Both evaluations, all six metrics, against the twin in the same layout (vmapped
        # and one-at-a-time arithmetic differ in rounding, which a long run can amplify).
        "max_abs_diff_vs_twin_same_layout": {
            k: float(np.max(np.abs(v - outputs[twin_of(k)])))
            for k, v in outputs.items()
            if twin_of(k) in outputs
        },
    }


def profile(ds: data.Dataset, seeds: int, epochs: int, layout: str, reps: int) -> dict:
    """Where an engine call's time goes, piece by piece, beside the twin's fixed cost.

    The pieces of ``Cohort.train`` (a benchmark may call the cohort's programs; this
    mirrors its order): placing keys, hyperparameters and data; the init program (init
    and the first evaluation); the chunk program (the epochs and the last evaluation);
    the host copies (metrics, final state). ``twin_0_epochs`` is the twin without
    training: its init and two evaluations. Medians in milliseconds.
    """
    run_batch = run_batch_of(layout)
    cohort, keys, hparams = engine_cohort(ds, seeds, epochs, run_batch)
    axis = cohort.run_axis
    twin_fixed = make_twin(ds, 0, one_at_a_time=run_batch == 1)
    chunk = cohort._chunks[False, False]
    times: dict[str, list[float]] = {}

    def timed(name, fn, *args):
        start = time.perf_counter()
        out = jax.block_until_ready(fn(*args))
        times.setdefault(name, []).append(1000 * (time.perf_counter() - start))
        return out

    def host_copies(metrics0, metrics, state):
        return np.asarray(metrics0), np.asarray(metrics), unpad(state, seeds)

    run_keys = {s: keys[s] for s in engine.STREAMS}
    run_hparams = {h: np.asarray(hparams[h], np.float32) for h in engine.HPARAMS}
    for rep in range(reps + 1):  # the first round compiles
        timed("whole_call", cohort.run, keys, hparams)
        placed_keys = timed("put_keys", axis.put_runs, run_keys)
        placed_hparams = timed("put_hparams", axis.put_runs, run_hparams)
        arrays = timed("put_data", axis.put_shared, cohort.arrays)
        state, metrics0, _ = timed(
            "init_program", cohort._init, placed_keys, placed_hparams, arrays
        )
        out = timed("chunk_program", chunk, state, placed_keys, placed_hparams, arrays)
        timed("host_copies", host_copies, metrics0, out[1], out[0])
        timed("twin_0_epochs", twin_fixed, np.arange(seeds))
        if rep == 0:
            times.clear()
    return {
        **_header(seeds, epochs, reps),
        "profile": layout,
        "median_ms": {k: round(statistics.median(v), 3) for k, v in times.items()},
    }


def _header(seeds: int, epochs: int, reps: int) -> dict:
    """What every output line starts with: the device, jax, and the call's size."""
    device = jax.devices()[0].device_kind
    return {
        "device": device,
        "jax": jax.__version__,
        "seeds": seeds,
        "epochs": epochs,
        "reps": reps,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[10])
    parser.add_argument("--epochs", type=int, nargs="+", default=[5])
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--layouts", nargs="+", type=layout_name, default=None)
    parser.add_argument(
        "--profile", action="store_true", help="also split the engine call into its pieces"
    )
    args = parser.parse_args()
    on_cpu = jax.devices()[0].platform == "cpu"
    layouts = args.layouts or (list(LAYOUTS) if on_cpu else ["twin", "engine_vmap"])
    layouts = ["twin"] + [name for name in layouts if name != "twin"]  # the reference
    ds = data.load("mnist1d")
    for epochs in args.epochs:
        for seeds in args.seeds:
            print(json.dumps(measure(ds, seeds, epochs, layouts, args.reps)), flush=True)
            for layout in [name for name in layouts if args.profile and name.startswith("engine")]:
                row = profile(ds, seeds, epochs, layout, args.reps)
                print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
