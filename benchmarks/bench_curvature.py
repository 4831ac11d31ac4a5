"""Cost of curvature measurements: one HVP, and a cohort's top eigenvalue + trace.

Model and data: MLP 40-100-100-10 (15,210 parameters) on the 4,000 MNIST-1D training
examples, mean cross-entropy, float32 at "highest" matmul precision.

1. Milliseconds per Hessian–vector product for one model (forward-over-reverse),
   against PyHessian's ≈ 8.6 ms on the same model and data on the 2-core CPU
   (``shared/research/measured.md``; PyHessian is PyTorch and not a dependency).
2. Top eigenvalue (Lanczos, 20 iterations) + Hutchinson trace (20 probes) for a cohort
   of R runs: vmapped over the runs in one program vs one run at a time, and the
   vmapped cost in units of one gradient of the whole cohort.

Times exclude compilation. Usage: ``python benchmarks/bench_curvature.py --runs 10``.
"""

from __future__ import annotations

import argparse
import json
import time

import jax
import jax.numpy as jnp
import numpy as np

from toolkit import data, engine
from toolkit import measures as M

PYHESSIAN_MS = 8.6


def timed(fn, *args, repeats: int = 5) -> float:
    """Median seconds per call after one warm-up (compile) call."""
    jax.block_until_ready(fn(*args))
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(fn(*args))
        samples.append(time.perf_counter() - start)
    return float(np.median(samples))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10)
    args = parser.parse_args()
    ds = data.load("mnist1d")
    spec = engine.CohortSpec("mnist1d", "mlp", (100, 100), "relu", "sgd", "ce", 100, 2)
    cohort = engine.Cohort(spec, ds)
    r = args.runs
    hparams = {h: np.zeros(r) for h in engine.HPARAMS}
    hparams.update(learning_rate=np.full(r, 0.05), momentum=np.full(r, 0.9), init_scale=np.ones(r))
    trained = cohort.run(engine.run_keys(0, {s: list(range(r)) for s in engine.STREAMS}), hparams)
    params = jax.tree_util.tree_map(jnp.asarray, trained.state["params"])
    x, y = jnp.asarray(ds.x_train), jnp.asarray(ds.y_train)
    loss = cohort.loss
    one = jax.tree_util.tree_map(lambda a: a[0], params)
    keys = jax.random.split(jax.random.key(0), r)

    hvp = jax.jit(lambda p, v: M.hvp(loss, p, x, y, v))
    hvp_ms = 1e3 * timed(hvp, one, one, repeats=50)

    def measure(p, key):
        k1, k2 = jax.random.split(key)
        top, _ = M.lanczos_eigs(loss, p, x, y, k1, num_iters=20, k=1)
        trace, _ = M.hutchinson_trace(loss, p, x, y, k2, num_probes=20)
        return top[0], trace

    vmapped = jax.jit(jax.vmap(measure))
    single = jax.jit(measure)

    def one_by_one(p, k):
        runs = [jax.tree_util.tree_map(lambda a, i=i: a[i], p) for i in range(r)]
        return [single(run, k[i]) for i, run in enumerate(runs)]

    cohort_grad = jax.jit(jax.vmap(jax.grad(lambda p: loss(p, x, y))))
    t_vmapped = timed(vmapped, params, keys, repeats=3)
    t_loop = timed(one_by_one, params, keys, repeats=3)
    t_grad = timed(cohort_grad, params)
    print(
        json.dumps(
            {
                "device": jax.devices()[0].device_kind,
                "jax": jax.__version__,
                "runs": r,
                "hvp_ms_one_model": round(hvp_ms, 3),
                "hvp_vs_pyhessian_cpu": round(hvp_ms / PYHESSIAN_MS, 3),
                "eig_trace_vmapped_s": round(t_vmapped, 4),
                "eig_trace_one_by_one_s": round(t_loop, 4),
                "speedup_vmapped": round(t_loop / t_vmapped, 2),
                "vmapped_in_cohort_gradients": round(t_vmapped / t_grad, 1),
            }
        ),
        flush=True,
    )


if __name__ == "__main__":
    main()
