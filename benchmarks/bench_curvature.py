"""Cost of curvature measurements: one HVP, and a cohort's top eigenvalue + trace.

Model and data: MLP 40-100-100-10 (15,210 parameters) on the 4,000 MNIST-1D training
examples, mean cross-entropy, float32 at "highest" matmul precision.

1. Milliseconds per Hessian–vector product for one model (forward-over-reverse),
   side by side with PyHessian on the same model, weights and data in the same process,
   alternating (``pip install -e ".[bench]"`` brings PyTorch's CPU build and PyHessian;
   without them this part is skipped). PyHessian's HVP is its own
   ``hessian_vector_product`` on the gradient graph it keeps (one double-backward per
   product, as inside its power iteration); ours recomputes the forward pass every time.
2. Top eigenvalue (Lanczos, 20 iterations) + Hutchinson trace (20 probes) for a cohort
   of R runs: vmapped over the runs in one program vs one run at a time, and the
   vmapped cost in units of one gradient of the whole cohort.

Times exclude compilation. Usage: ``python benchmarks/bench_curvature.py --runs 10``.
No stored constants: every ratio printed is of two timings taken in this process.
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


def timed(fn, *args, repeats: int = 5) -> float:
    """Median seconds per call after one warm-up (compile) call."""
    jax.block_until_ready(fn(*args))
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(fn(*args))
        samples.append(time.perf_counter() - start)
    return float(np.median(samples))


def _torch_twin(params, ds):
    """PyHessian's side: the same MLP (the JAX weights copied), loss and data, and the
    gradient graph PyHessian builds once (``create_graph=True``); None if not installed."""
    try:
        import torch
        from pyhessian.utils import hessian_vector_product
    except ImportError:
        return None
    layers = [params["params"][f"Dense_{i}"] for i in range(3)]
    model = torch.nn.Sequential(
        torch.nn.Linear(40, 100), torch.nn.ReLU(), torch.nn.Linear(100, 100), torch.nn.ReLU(),
        torch.nn.Linear(100, 10),
    )  # fmt: skip
    with torch.no_grad():
        for linear, layer in zip((model[0], model[2], model[4]), layers):
            linear.weight.copy_(torch.from_numpy(np.asarray(layer["kernel"]).T.copy()))
            linear.bias.copy_(torch.from_numpy(np.asarray(layer["bias"]).copy()))
    x = torch.from_numpy(ds.x_train)
    y = torch.from_numpy(ds.y_train.astype(np.int64))
    loss = torch.nn.functional.cross_entropy(model(x), y)
    weights = [p for p in model.parameters()]
    grads = torch.autograd.grad(loss, weights, create_graph=True)
    v = [torch.randn_like(p) for p in weights]

    def product():
        return hessian_vector_product(list(grads), weights, v)

    return product, float(loss)


def side_by_side(hvp, one, ds, rounds: int) -> tuple[float, float | None]:
    """Milliseconds per HVP, ours and PyHessian's, timed alternately in this process
    (each round: 10 products of each, after warm-ups); medians over the rounds."""
    twin = _torch_twin(one, ds)
    ours, theirs = [], []
    jax.block_until_ready(hvp(one, one))
    if twin is not None:
        product, _ = twin
        product()
    for _ in range(rounds):
        start = time.perf_counter()
        for _ in range(10):
            jax.block_until_ready(hvp(one, one))
        ours.append((time.perf_counter() - start) / 10)
        if twin is not None:
            start = time.perf_counter()
            for _ in range(10):
                product()
            theirs.append((time.perf_counter() - start) / 10)
    return 1e3 * float(np.median(ours)), (1e3 * float(np.median(theirs)) if theirs else None)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=15, help="alternating timing rounds")
    parser.add_argument("--threads", type=int, default=2, help="PyTorch's intra-op threads")
    args = parser.parse_args()
    try:
        import torch

        torch.set_num_threads(args.threads)
    except ImportError:
        pass
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
    hvp_ms, pyhessian_ms = side_by_side(hvp, one, ds, rounds=args.rounds)

    # As the eigenvalue and trace routines use it: 20 products inside one compiled loop
    # (no per-call dispatch; PyHessian's figure is per call of its own Python loop).
    def twenty(p, v):
        return jax.lax.scan(lambda w, _: (M.hvp(loss, p, x, y, w), None), v, None, length=20)[0]

    in_loop_ms = 1e3 * timed(jax.jit(twenty), one, one, repeats=args.rounds) / 20
    twin = _torch_twin(one, ds)
    same_model = None if twin is None else abs(twin[1] - float(loss(one, x, y)))

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
                "pyhessian_hvp_ms_same_process": None
                if pyhessian_ms is None
                else round(pyhessian_ms, 3),
                "hvp_vs_pyhessian": None
                if pyhessian_ms is None
                else round(hvp_ms / pyhessian_ms, 3),
                "hvp_ms_in_compiled_loop": round(in_loop_ms, 3),
                "in_loop_vs_pyhessian": None
                if pyhessian_ms is None
                else round(in_loop_ms / pyhessian_ms, 3),
                "threads": args.threads,
                "loss_difference_jax_vs_torch": same_model,
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
