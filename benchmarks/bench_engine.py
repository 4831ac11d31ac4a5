"""Engine vs a tutorial-style training loop on the same work (seed-steps per second).

Work: MLP 40-100-100-10 on the 4,000 MNIST-1D training examples, SGD with momentum
0.9, lr 0.05, batch 100 (40 steps per epoch), N seeds.

- ``loop``: the tutorial way — a jitted step called from Python, seed after seed.
  Two styles: ``numpy`` slices each batch on the host and passes it in (the Flax
  MNIST tutorial); ``closure`` closes the jitted step over the dataset and passes
  the batch indices (``shared/bench/anchor_vmap.py``'s loop, the project's reference).
- ``engine``: ``toolkit.engine.Cohort`` — all seeds vmapped in one compiled scan,
  evaluated only at the start and the end (``history_points=1``). Two figures:
  end to end (one call of E epochs, its two 17,000-example evaluations included) and
  marginal (the time of ``--marginal-factor``·E epochs minus that of E, per extra
  step: the training loop alone, the same work as the anchor's scan).

Achieved FLOP/s count the training arithmetic only (3 × 2 × 15,000 multiply-adds per
example, as ``shared/bench/anchor_vmap.py`` counts it). Times exclude compilation
(each mode runs once to compile, then is timed).
Usage: ``python benchmarks/bench_engine.py --seeds 10 --epochs 5 [--loop-epochs 1]``.
"""

from __future__ import annotations

import argparse
import json
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

from toolkit import data, engine, models

WIDTHS = (100, 100)
BATCH, LR, MOMENTUM = 100, 0.05, 0.9
FLOP_PER_EXAMPLE = 3 * 2 * (40 * 100 + 100 * 100 + 100 * 10)
LOOPS = ("numpy", "closure")


def bench_loop(ds: data.Dataset, seeds: int, epochs: int, style: str) -> float:
    model = models.build("mlp", WIDTHS, ds.num_classes)
    tx = optax.sgd(LR, momentum=MOMENTUM)
    x, y = ds.x_train, ds.y_train  # host arrays: batches are sliced in NumPy, as in tutorials
    steps = data.steps_per_epoch(len(y), BATCH)

    x_closed, y_closed = jnp.asarray(x), jnp.asarray(y)

    def numpy_step(params, opt_state, index):
        return update(params, opt_state, x[index], y[index])

    @jax.jit
    def closure_step(params, opt_state, index):
        return update(params, opt_state, x_closed[index], y_closed[index])

    @jax.jit
    def update(params, opt_state, xb, yb):
        def loss_fn(p):
            logits = model.apply(p, xb)
            return optax.softmax_cross_entropy_with_integer_labels(logits, yb).mean()

        grads = jax.grad(loss_fn)(params)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state

    step = numpy_step if style == "numpy" else closure_step
    init = jax.jit(lambda key: model.init(key, jnp.zeros((1, x.shape[1]))))

    def go(num_seeds: int, num_epochs: int):
        for seed in range(num_seeds):
            params = init(jax.random.key(seed))
            opt_state = tx.init(params)
            rng = np.random.default_rng(seed)
            for _ in range(num_epochs):
                order = rng.permutation(len(y))
                for i in range(steps):
                    index = order[i * BATCH : (i + 1) * BATCH]
                    params, opt_state = step(params, opt_state, index)
            jax.block_until_ready(params)

    go(1, 1)  # compile
    start = time.perf_counter()
    go(seeds, epochs)
    return seeds * epochs * steps / (time.perf_counter() - start)


def seed_keys(seeds: int) -> dict:
    """The engine's keys for seeds 0 … seeds−1 (``engine.run_keys`` is vectorized)."""
    return engine.run_keys(0, {s: list(range(seeds)) for s in engine.STREAMS})


def engine_wall(ds: data.Dataset, seeds: int, epochs: int) -> tuple[float, float, int]:
    """(wall seconds of a compiled call, compile seconds, seed-steps) for E epochs."""
    spec = engine.CohortSpec("mnist1d", "mlp", WIDTHS, "relu", "sgd", "ce", BATCH, epochs)
    cohort = engine.Cohort(spec, ds, history_points=1)
    hparams = {h: np.zeros(seeds) for h in engine.HPARAMS}
    hparams.update(
        learning_rate=np.full(seeds, LR),
        momentum=np.full(seeds, MOMENTUM),
        init_scale=np.ones(seeds),
    )
    keys = seed_keys(seeds)
    start = time.perf_counter()
    cohort.run(keys, hparams)  # compile and run once
    first = time.perf_counter() - start
    start = time.perf_counter()
    cohort.run(keys, hparams)
    wall = time.perf_counter() - start
    return wall, first - wall, seeds * epochs * cohort.steps_per_epoch


def bench_engine(ds: data.Dataset, seeds: int, epochs: int, factor: int) -> dict:
    wall, compile_s, steps = engine_wall(ds, seeds, epochs)
    row = {"engine_seed_steps_per_s": round(steps / wall), "engine_compile_s": round(compile_s, 2)}
    if factor > 1:
        long_wall, _, long_steps = engine_wall(ds, seeds, epochs * factor)
        marginal = (long_steps - steps) / max(long_wall - wall, 1e-9)
        row["engine_marginal_seed_steps_per_s"] = round(marginal)
        row["engine_marginal_tflops"] = round(marginal * BATCH * FLOP_PER_EXAMPLE / 1e12, 4)
    row["engine_tflops"] = round(steps / wall * BATCH * FLOP_PER_EXAMPLE / 1e12, 4)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[10])
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--loop-epochs", type=int, default=1, help="the loop is slow: fewer epochs")
    parser.add_argument("--loop-seeds", type=int, default=None, help="cap on seeds for the loop")
    parser.add_argument(
        "--marginal-factor", type=int, default=5, help="also time factor × epochs (1: skip)"
    )
    args = parser.parse_args()
    ds = data.load("mnist1d")
    device = jax.devices()[0]
    for seeds in args.seeds:
        loop_seeds = min(seeds, args.loop_seeds or seeds)
        loops = {style: bench_loop(ds, loop_seeds, args.loop_epochs, style) for style in LOOPS}
        fast = bench_engine(ds, seeds, args.epochs, args.marginal_factor)
        speed = fast["engine_seed_steps_per_s"]
        row = {
            "device": device.device_kind,
            "jax": jax.__version__,
            "seeds": seeds,
            "epochs": args.epochs,
            **{f"loop_{k}_seed_steps_per_s": round(v) for k, v in loops.items()},
            **fast,
            **{f"engine_over_loop_{k}": round(speed / v, 2) for k, v in loops.items()},
        }
        print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
