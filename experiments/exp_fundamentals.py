"""Fundamentals: init, losses and temperature, backprop, step arithmetic (C01, C03, C06, C07).

Command: ``toolkit run exp_fundamentals --seeds 10``

Trained part (through the engine): the overfit model of ``exp_overfitting`` — MLP
40-256-256-10 (78,858 parameters), Adam (lr 1e-3, b1 0.9, batch 100), 80 epochs
(3,200 steps) on the 4,000 MNIST-1D training examples — trained once with
cross-entropy and once with MSE (``0.5·‖outputs − onehot‖²`` on the raw outputs, no
softmax), paired by seed (the same seed gives the same initialization under both
losses). Nothing else is tuned for MSE: the comparison is at the CE protocol. Each
loss is one compiled cohort. On every run's final parameters (vmapped): a temperature
T fitted on the 1,000 validation examples (NLL over log T, golden section + Newton,
:mod:`toolkit.calibration`), then on the 12,000 test examples the NLL, expected
calibration error (15 equal-width bins), predictive entropy and reliability bins at
T = 1 and at the fitted T, and NLL / entropy / ECE over a grid of 41 temperatures.
For MSE runs the probabilities are softmax(outputs / T).

Standalone part (no training; ``standalone``):

- C01: cross-entropy and accuracy at initialization on the test split, per seed, for
  the trained MLP (the same init keys as its cohort), the 1-D CNN (25-25-25) on
  MNIST-1D and the MLP on MNIST-5k.
- C03: the toolkit's own losses (``engine.per_example_loss``) on constructed outputs:
  CE against the probability of the true class (confident-and-right, unsure,
  confident-and-wrong), MSE against the size of the error.
- C06: autodiff gradients against central finite differences (ε = 1e-5, about the
  cube root of float64's machine epsilon) in float64 (a local ``jax.enable_x64``
  context; the rest of the toolkit stays float32), relative error per parameter
  tensor, on a batch of 64 MNIST-1D examples per seed: every coordinate of an MLP
  40-32-32-10 (CE and MSE); 64 sampled coordinates per tensor of the CNN and 128 of
  the trained MLP (every coordinate of smaller tensors). A coordinate whose ±ε step
  switches a ReLU on or off crosses a kink of the loss, where central differences do
  not estimate the gradient: such coordinates are counted and left out.
  Cost: XLA's FLOP count of one forward pass, one gradient (``jax.grad``) and one
  finite-difference gradient (2P forward passes) for MLPs 40-w-w-10, w = 16 … 512
  (1,098 … 288,778 parameters), on a batch of 1,000 examples; and wall-clock
  times (median of repeats; full finite-difference gradients timed up to 3,000
  parameters, beyond that 64 coordinates timed and scaled by P/64) in
  ``timings.csv`` with the machine. Verdicts use the FLOP counts, so every table but
  ``timings.csv`` is identical from run to run.
- C07: ``data.steps_per_epoch`` on the article's worked example and on this run.

Measured alone on the 2-core CPU: 112 s wall for ``toolkit run exp_fundamentals --seeds 10``
(the figures below were taken while other jobs shared the machine).

Cost: default profile (2 losses × 10 seeds = 20 runs, 64,000 run-steps, 2 cohorts,
plus the standalone part). Measured: 4 min 6 s wall time (2 min 39 s CPU) for
``toolkit run exp_fundamentals --seeds 10`` from an empty folder on the 2-core CPU
while other jobs shared it (load average 3–5): training ≈ 2 min with compilation,
standalone ≈ 1.7 min (the float64 gradient check and the timings about half each).
Quick profile: ~1 min on the same shared CPU (4 epochs, 32-wide, small standalone
part). Paper profile (20 seeds; 256 checked coordinates per CNN tensor, 512 per
trained-MLP tensor; timings up to 4.3M parameters on a batch of 4,000): sized for one
GPU, not yet run there.

Expected (science notes: Guo 2017, Hui & Belkin 2021; the article's arithmetic):
loss at init ≈ ln 10 = 2.303, accuracy ≈ 10%; CE ≈ MSE in test accuracy (within about
1 pp); the overfit CE model is overconfident (T > 1) and temperature scaling cuts its
test NLL a lot with accuracy unchanged; entropy rises monotonically with T;
autodiff matches finite differences to ~1e-9 in float64; a gradient costs about 3
forward passes at every size, a finite-difference gradient 2P; the article's
"10,000 iterations per epoch" is 1,000 (ceil(100,000 / 100)).

jax versions: the float64 context is ``jax.enable_x64(True)`` (jax ≥ 0.8; 0.10 checked
on CPU; the GPU image has jax 0.11, not checked). ``jax.experimental.enable_x64`` was
removed in 0.10 (``float64`` falls back to it on older jax); if jax 0.11 or later
drops or changes the context manager, run the gradient check in a subprocess with
``JAX_ENABLE_X64=1`` instead of flipping ``jax_enable_x64`` globally in this process.
"""

from __future__ import annotations

import contextlib
import functools
import math
import os
import platform
import time
from dataclasses import dataclass
from pathlib import Path

import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from jax.flatten_util import ravel_pytree

from toolkit import calibration as cal
from toolkit import data as datasets
from toolkit import figures as fig
from toolkit import models
from toolkit.claimtests import Test, exact, per_seed, usable
from toolkit.data import steps_per_epoch
from toolkit.engine import STREAMS, per_example_loss, run_keys
from toolkit.results import ResultsFolder
from toolkit.runner import root_seed
from toolkit.spec import RunConfig

NAME = "exp_fundamentals"
CLAIMS = ("C01", "C03", "C06", "C07")
#: The figure the claims report links for each claim.
CLAIM_FIGURES = {"C01": "init", "C03": "losses", "C06": "gradient_check", "C07": "steps"}
NUM_CLASSES = 10
TEMPERATURES = np.geomspace(0.05, 20.0, 41)
GRAD_TOLERANCE = 1e-6  # C06: float64 autodiff vs central differences, per tensor (relative)
FD_EPS = 1e-5
LOSS_NAMES = {"ce": "cross-entropy", "mse": "MSE"}


@dataclass(frozen=True)
class Config(RunConfig):
    # scientific: the factor under study
    loss: str = "ce"  # "ce" (softmax cross-entropy) or "mse" (on the raw outputs)
    # fixed: exp_overfitting's default protocol (the overfit model)
    dataset: str = "mnist1d"
    model: str = "mlp"
    widths: tuple[int, ...] = (256, 256)
    optimizer: str = "adam"
    learning_rate: float = 1e-3
    momentum: float = 0.9  # Adam's b1
    batch_size: int = 100
    epochs: int = 80
    history_points: int = 40  # evaluate every 2 epochs (evaluation never changes training)


GRID = {"loss": ["ce", "mse"]}

PROFILES = {
    "quick": {"seeds": 2, "epochs": 4, "widths": (32, 32)},
    "default": {"seeds": 10},
    "paper": {"seeds": 20},
}

#: Settings of the standalone part per profile (it trains nothing, so they are not
#: Config fields). ``fd_max_params``: full finite-difference gradients are timed up to
#: this many parameters; ``grad_sample``: coordinates checked per tensor of the trained MLP.
STANDALONE = {
    "quick": {
        "grad_sample": 16,
        "grad_full_widths": (),
        "grad_cnn": (4, 4, 4),
        "grad_cnn_sample": None,
        "timing_widths": (8, 32),
        "timing_batch": 256,
        "repeats": 2,
        "fd_max_params": 1_000,
        "fd_subset": 64,
    },
    "default": {
        "grad_sample": 128,
        "grad_full_widths": (32,),
        "grad_cnn": (25, 25, 25),
        "grad_cnn_sample": 64,
        "timing_widths": (16, 32, 64, 128, 256, 512),
        "timing_batch": 1000,
        "repeats": 9,
        "fd_max_params": 3_000,
        "fd_subset": 64,
    },
    "paper": {
        "grad_sample": 512,
        "grad_full_widths": (32,),
        "grad_cnn": (25, 25, 25),
        "grad_cnn_sample": 256,
        "timing_widths": (16, 32, 64, 128, 256, 512, 1024, 2048),
        "timing_batch": 4000,
        "repeats": 11,
        "fd_max_params": 10_000,
        "fd_subset": 256,
    },
}
GRAD_BATCH = 64


# ----- measurements on the trained runs (vmapped) ------------------------------------
@functools.cache
def _calibration_fn(model_kind: str, widths: tuple, num_classes: int, activation: str):
    model = models.build(model_kind, widths, num_classes, activation)
    temperatures = jnp.asarray(TEMPERATURES, jnp.float32)

    def per_run(params, x_val, y_val, x_test, y_test):
        val_logits = model.apply(params, x_val)
        test_logits = model.apply(params, x_test)
        t_fit = cal.fit_temperature(val_logits, y_val)

        def at(t):
            probs = jax.nn.softmax(test_logits / t)
            return {
                "test_nll": cal.nll(test_logits, y_test, t),
                "val_nll": cal.nll(val_logits, y_val, t),
                "test_ece": cal.ece(probs, y_test),
                "test_entropy": cal.mean_entropy(test_logits, t),
                "test_acc": jnp.mean(jnp.argmax(probs, -1) == y_test),
                "bins": cal.reliability_bins(probs, y_test),
            }

        before, after = at(jnp.float32(1.0)), at(t_fit)
        curve = jax.vmap(at)(temperatures)
        curve.pop("bins")
        curve.pop("test_acc")
        out = {"temperature": t_fit}
        for stage, values in (("t1", before), ("fit", after)):
            out |= {f"{k}_{stage}": v for k, v in values.items()}
        return out | {"curve": curve}

    return per_run


def measure(trained) -> dict:
    spec, data = trained.cohort.spec, trained.cohort.data
    per_run = _calibration_fn(spec.model, tuple(spec.widths), data.num_classes, spec.activation)
    shared = tuple(jnp.asarray(a) for a in (data.x_val, data.y_val, data.x_test, data.y_test))
    values = trained.map(per_run, (trained.result.state["params"],), shared)
    curve = values.pop("curve")
    bins = {stage: values.pop(f"bins_{stage}") for stage in ("t1", "fit")}
    curve_rows = [
        trained.row(r, temperature=float(t), **{k: float(v[r, i]) for k, v in curve.items()})
        for r in range(len(trained.runs))
        for i, t in enumerate(TEMPERATURES)
    ]
    reliability_rows = [
        trained.row(
            r,
            stage=stage,
            bin=b,
            bin_low=b / cal.NUM_BINS,
            bin_high=(b + 1) / cal.NUM_BINS,
            count=int(count[r, b]),
            confidence=float(confidence[r, b]),
            accuracy=float(accuracy[r, b]),
        )
        for stage, (count, confidence, accuracy) in bins.items()
        for r in range(len(trained.runs))
        for b in range(cal.NUM_BINS)
    ]
    return {
        **values,
        "temperature_curves": pd.DataFrame(curve_rows),
        "reliability": pd.DataFrame(reliability_rows),
    }


# ----- standalone: init, loss shapes, gradient check, cost, step arithmetic -------------
def standalone(profile: str, seeds: int) -> dict[str, pd.DataFrame]:
    settings = STANDALONE.get(profile, STANDALONE["default"])
    widths = tuple(PROFILES.get(profile, {}).get("widths", Config.widths))
    cost, timings = _cost_tables(settings)
    return {
        "init": _init_table(seeds, widths),
        "loss_shapes": _loss_shapes(),
        "gradient_check": _gradient_check(seeds, settings, widths),
        "cost": cost,
        "timings": timings,
        "step_arithmetic": _step_arithmetic(),
    }


def _init_table(seeds: int, widths: tuple) -> pd.DataFrame:
    """Test-set CE, accuracy and logit scale at init; the same init keys as the cohorts."""
    keys = run_keys(root_seed(NAME), {s: list(range(seeds)) for s in STREAMS})["init"]
    conditions = [
        ("mnist1d", "mlp", widths),
        ("mnist1d", "cnn", (25, 25, 25)),
        ("mnist5k", "mlp", widths),
    ]
    rows = []
    for dataset, kind, model_widths in conditions:
        data = datasets.load(dataset)
        model = models.build(kind, model_widths, data.num_classes)
        at_init = _init_fn(model, jnp.asarray(data.x_test), jnp.asarray(data.y_test))
        label = f"{kind.upper()} {'-'.join(map(str, model_widths))} on {dataset}"
        for seed in range(seeds):
            loss, acc, scale = at_init(keys[seed])
            rows.append(
                {
                    "condition": label,
                    "dataset": dataset,
                    "model": kind,
                    "seed": seed,
                    "num_classes": data.num_classes,
                    "init_test_loss": float(loss),
                    "init_test_acc": float(acc),
                    "logit_std": float(scale),
                }
            )
    return pd.DataFrame(rows)


def _init_fn(model, x, y):
    """jit: init key → (test CE, test accuracy, logit SD) of the freshly initialized model."""

    @jax.jit
    def at_init(key):
        logits = model.apply(model.init(key, x[:1]), x)
        loss = per_example_loss("ce", logits, y).mean()
        return loss, jnp.mean(jnp.argmax(logits, -1) == y), jnp.std(logits)

    return at_init


def _loss_shapes() -> pd.DataFrame:
    """The toolkit's CE and MSE on constructed outputs (K = 10, true class 0)."""
    k = NUM_CLASSES
    rows = []
    # CE vs probability of the true class; the rest of the mass on one wrong class
    # (90%) and spread over the others, so low p(true) is "confident and wrong".
    for p_true in np.geomspace(1e-4, 0.9999, 61):
        probs = np.full(k, 0.1 * (1 - p_true) / (k - 2))
        probs[0], probs[1] = p_true, 0.9 * (1 - p_true)
        rows.append(_ce_row("sweep", probs))
    named = {
        "confident and right": [0.99] + [0.01 / (k - 1)] * (k - 1),
        "unsure (uniform)": [1.0 / k] * k,
        "confident and wrong": [0.001, 0.99] + [0.009 / (k - 2)] * (k - 2),
    }
    for scenario, probs in named.items():
        rows.append(_ce_row(scenario, np.array(probs)))
    # MSE vs the size of one output's error, and one error of 2 vs two errors of 1.
    onehot = np.eye(k, dtype=np.float32)[0]
    label = jnp.zeros(1, jnp.int32)
    for size in np.arange(41) / 10:  # exact 1.0 and 2.0
        outputs = onehot.copy()
        outputs[1] += size
        rows.append(_mse_row("error sweep", outputs, label, size))
    for scenario, errors in {
        "one error of 2": [2.0, 0.0],
        "two errors of 1": [1.0, 1.0],
    }.items():
        outputs = onehot.copy()
        outputs[1:3] += errors
        rows.append(_mse_row(scenario, outputs, label, float(np.sum(np.abs(errors)))))
    return pd.DataFrame(rows)


def _ce_row(scenario: str, probs: np.ndarray) -> dict:
    logits = jnp.asarray(np.log(probs), jnp.float32)[None]
    ce = float(per_example_loss("ce", logits, jnp.zeros(1, jnp.int32))[0])
    return {
        "loss": "ce",
        "scenario": scenario,
        "p_true": float(probs[0]),
        "confidence": float(probs.max()),
        "correct": bool(np.argmax(probs) == 0),
        "error_size": np.nan,
        "value": ce,
        "reference": -math.log(probs[0]),
    }


def _mse_row(scenario: str, outputs: np.ndarray, label, error_size: float) -> dict:
    mse = float(per_example_loss("mse", jnp.asarray(outputs)[None], label)[0])
    return {
        "loss": "mse",
        "scenario": scenario,
        "p_true": np.nan,
        "confidence": np.nan,
        "correct": bool(np.argmax(outputs) == 0),
        "error_size": error_size,
        "value": mse,
        "reference": 0.5 * float(np.sum((outputs - np.eye(len(outputs))[0]) ** 2)),
    }


@contextlib.contextmanager
def float64():
    """JAX in float64 inside the block only (see the module docstring for jax versions)."""
    if hasattr(jax, "enable_x64"):  # jax ≥ 0.8
        with jax.enable_x64(True):
            yield
    else:  # older jax
        from jax.experimental import enable_x64

        with enable_x64():
            yield


def _gradient_check(seeds: int, settings: dict, widths: tuple) -> pd.DataFrame:
    """Relative error of autodiff vs central differences per parameter tensor (float64)."""
    data = datasets.load("mnist1d")
    checks = [
        (f"MLP 40-{w}-{w}-10", "mlp", (w, w), loss, None)
        for w in settings["grad_full_widths"]
        for loss in ("ce", "mse")
    ]
    cnn = settings["grad_cnn"]
    checks.append((f"CNN {'-'.join(map(str, cnn))}", "cnn", cnn, "ce", settings["grad_cnn_sample"]))
    trained = f"MLP 40-{'-'.join(map(str, widths))}-10 (trained model)"
    checks.append((trained, "mlp", widths, "ce", settings["grad_sample"]))
    rows = []
    with float64():
        x_all = jnp.asarray(data.x_train, jnp.float64)
        y_all = jnp.asarray(data.y_train)
        for name, kind, model_widths, loss_kind, sample in checks:
            model = models.build(kind, model_widths, NUM_CLASSES)
            # XLA's CPU convolutions batched over parameter copies are slow: one at a time.
            check = _fd_check_fn(model, loss_kind, batch=None if kind == "cnn" else 64)
            for seed in range(seeds):
                k_init, k_data = jax.random.split(jax.random.fold_in(jax.random.key(6), seed))
                index = jax.random.permutation(k_data, len(y_all))[:GRAD_BATCH]
                x, y = x_all[index], y_all[index]
                params = jax.tree_util.tree_map(
                    lambda p: p.astype(jnp.float64), model.init(k_init, x[:1])
                )
                named = jax.tree_util.tree_leaves_with_path(params)
                sizes = [leaf.size for _, leaf in named]
                offsets = np.concatenate([[0], np.cumsum(sizes)])
                rng = np.random.default_rng(seed)
                coords = [
                    start
                    + (
                        np.arange(size)
                        if sample is None or size <= sample
                        else np.sort(rng.choice(size, sample, replace=False))
                    )
                    for start, size in zip(offsets[:-1], sizes)
                ]
                autodiff, finite, crossed = (
                    np.asarray(a) for a in check(params, x, y, jnp.asarray(np.concatenate(coords)))
                )
                start = 0
                for (path, leaf), picked in zip(named, coords):
                    part = slice(start, start + len(picked))
                    start += len(picked)
                    a, f, smooth = autodiff[part], finite[part], ~crossed[part]
                    rows.append(
                        {
                            "model": name,
                            "loss": loss_kind,
                            "seed": seed,
                            "tensor": jax.tree_util.keystr(path),
                            "size": int(leaf.size),
                            "checked": len(picked),
                            "kinks": int((~smooth).sum()),
                            "grad_norm": float(np.linalg.norm(a[smooth])),
                            "abs_error": float(np.linalg.norm((a - f)[smooth])),
                            "rel_error": _relative_error(a[smooth], f[smooth]),
                            "rel_error_with_kinks": _relative_error(a, f),
                        }
                    )
    return pd.DataFrame(rows)


def _relative_error(autodiff: np.ndarray, finite: np.ndarray) -> float:
    """‖a − f‖ / max(‖a‖, ‖f‖); 0 when both are zero or empty."""
    scale = max(np.linalg.norm(autodiff), np.linalg.norm(finite))
    return float(np.linalg.norm(autodiff - finite) / scale) if scale > 0 else 0.0


def _fd_check_fn(model, loss_kind: str, batch: int | None = 64):
    """jit: (params, x, y, coords) → (autodiff gradient, central differences, kink crossed)
    at coords. A coordinate whose ±ε step flips any ReLU on or off (the loss has a kink
    inside the step) is flagged: there central differences do not estimate the gradient."""

    @jax.jit
    def check(params, x, y, coords):
        flat, unravel = ravel_pytree(params)

        def loss_and_pattern(theta):
            logits, features = model.apply(unravel(theta), x, return_features=True)
            pattern = jnp.concatenate([(f > 0).ravel() for f in features[1:]])
            return per_example_loss(loss_kind, logits, y).mean(), pattern

        _, base = loss_and_pattern(flat)

        def central(i):
            step = jnp.zeros_like(flat).at[i].set(FD_EPS)
            (up, up_pattern), (down, down_pattern) = (
                loss_and_pattern(flat + step),
                loss_and_pattern(flat - step),
            )
            crossed = jnp.any(up_pattern != base) | jnp.any(down_pattern != base)
            return (up - down) / (2 * FD_EPS), crossed

        finite, crossed = jax.lax.map(central, coords, batch_size=batch)
        autodiff = jax.grad(lambda theta: loss_and_pattern(theta)[0])(flat)
        return autodiff[coords], finite, crossed

    return check


def _cost_tables(settings: dict) -> tuple[pd.DataFrame, pd.DataFrame]:
    """FLOPs (deterministic) and wall-clock times of forward, gradient and FD gradient."""
    data = datasets.load("mnist1d")
    batch = min(settings["timing_batch"], len(data.y_train))
    x, y = jnp.asarray(data.x_train[:batch]), jnp.asarray(data.y_train[:batch])
    repeats = settings["repeats"]
    machine = _machine()
    cost_rows, timing_rows = [], []
    for width in settings["timing_widths"]:
        model = models.build("mlp", (width, width), NUM_CLASSES)
        params = model.init(jax.random.key(0), x[:1])
        flat, unravel = ravel_pytree(params)
        num_params = int(flat.size)

        def loss(theta, model=model, unravel=unravel):
            return per_example_loss("ce", model.apply(unravel(theta), x), y).mean()

        def finite_differences(theta, coords, loss=loss):
            def central(i):
                step = jnp.zeros_like(theta).at[i].set(FD_EPS)
                return (loss(theta + step) - loss(theta - step)) / (2 * FD_EPS)

            return jax.lax.map(central, coords, batch_size=32)

        forward = jax.jit(loss).lower(flat).compile()
        gradient = jax.jit(jax.grad(loss)).lower(flat).compile()
        forward_flops = _flops(forward)
        gradient_flops = _flops(gradient)
        cost_rows.append(
            {
                "model": f"MLP 40-{width}-{width}-10",
                "width": width,
                "num_params": num_params,
                "batch": batch,
                "forward_flops": forward_flops,
                "gradient_flops": gradient_flops,
                "fd_flops": 2 * num_params * forward_flops,
                "gradient_per_forward": gradient_flops / forward_flops,
                "fd_per_forward": 2.0 * num_params,
            }
        )
        subset = jnp.arange(min(settings["fd_subset"], num_params))
        fd_subset = jax.jit(finite_differences).lower(flat, subset).compile()
        row = {
            **cost_rows[-1],
            "forward_s": _median_time(forward, (flat,), repeats),
            "gradient_s": _median_time(gradient, (flat,), repeats),
            "fd_subset_coords": int(subset.size),
            "fd_subset_s": _median_time(fd_subset, (flat, subset), max(1, repeats // 3)),
            "fd_full_s": np.nan,
        }
        row["fd_estimate_s"] = row["fd_subset_s"] * num_params / int(subset.size)
        if num_params <= settings["fd_max_params"]:
            coords = jnp.arange(num_params)
            fd_full = jax.jit(finite_differences).lower(flat, coords).compile()
            row["fd_full_s"] = _median_time(fd_full, (flat, coords), max(1, repeats // 3))
        timing_rows.append({**row, "repeats": repeats, **machine})
    return pd.DataFrame(cost_rows), pd.DataFrame(timing_rows)


def _flops(compiled) -> float:
    analysis = compiled.cost_analysis()
    if isinstance(analysis, list):  # older jax: one dict per computation
        analysis = analysis[0]
    return float(analysis.get("flops", np.nan))


def _median_time(compiled, args: tuple, repeats: int) -> float:
    jax.block_until_ready(compiled(*args))  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(compiled(*args))
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def _machine() -> dict:
    device = jax.devices()[0]
    return {
        "platform": jax.default_backend(),
        "device_kind": device.device_kind,
        "devices": ", ".join(str(d) for d in jax.devices()),
        "cpu_count": os.cpu_count(),
        "processor": platform.processor() or platform.machine(),
        "jax": jax.__version__,
        "load_average_1min": round(os.getloadavg()[0], 2),
    }


def _step_arithmetic() -> pd.DataFrame:
    cases = [
        ("the article's worked example", 100_000, 100, 10, 10_000, 100_000),
        ("this experiment: MNIST-1D train set", 4_000, 100, 80, None, None),
        ("last batch short", 4_000, 64, 1, None, None),
        ("batch larger than the data", 50, 100, 1, None, None),
    ]
    rows = []
    for case, examples, batch, epochs, article_per_epoch, article_total in cases:
        per_epoch = steps_per_epoch(examples, batch)
        rows.append(
            {
                "case": case,
                "examples": examples,
                "batch_size": batch,
                "epochs": epochs,
                "steps_per_epoch": per_epoch,
                "total_steps": per_epoch * epochs,
                "article_steps_per_epoch": article_per_epoch,
                "article_total_steps": article_total,
            }
        )
    return pd.DataFrame(rows)


# ----- analysis --------------------------------------------------------------------------
#: C01's settings (init table) and C06's checked models (gradient_check table) by key.
INIT = {
    "mlp_mnist1d": ("mlp", "mnist1d"),
    "cnn_mnist1d": ("cnn", "mnist1d"),
    "mlp_mnist5k": ("mlp", "mnist5k"),
}  # noqa: E501
INIT_NAMES = {
    "mlp_mnist1d": "MLP on MNIST-1D (the trained model at init)",
    "cnn_mnist1d": "CNN 25-25-25 on MNIST-1D",
    "mlp_mnist5k": "MLP on MNIST-5k",
}  # noqa: E501
GRADS = {
    "mlp_ce": "MLP 40-32-32-10, cross-entropy",
    "mlp_mse": "MLP 40-32-32-10, MSE",
    "cnn": "CNN 25-25-25, cross-entropy (64 coordinates per tensor)",
    "trained": "the trained MLP 40-256-256-10, cross-entropy (128 coordinates per tensor)",
}  # noqa: E501
INIT_TOLERANCE = 0.05  # C01: nats around the noise-logit prediction
FIT = "the overfit CE model (T fitted on validation, measured on test)"
EXPLORATORY = "exploratory: any effect in the predicted direction is reported"

TESTS = [
    *[
        test
        for key, name in INIT_NAMES.items()
        for test in (
            Test(
                f"init_loss_{key}", "C01", "secondary", "mean",
                "init test CE − (ln K + σ²(K−1)/2K) (nats; σ: the seed's logit SD)",
                "At init the loss is that of pure-noise logits at the network's logit scale",
                "within", INIT_TOLERANCE,
                "the tolerance is around the noise-logit prediction (its neglected terms are "
                "< 0.002 nats at σ ≤ 0.5), not ln K; 0.05 nats bounds label information",
                "Init test CE is ln K {raw:+.3f} nats; i.i.d. logits of the measured SD "
                "(σ = {sigma:.2f}) predict ln K {excess:+.3f}; measured − predicted "
                "{estimate:+.3f} [{low:+.3f}, {high:+.3f}] ({n} seeds).",
                condition=name,
            ),
            Test(
                f"init_acc_{key}", "C01", "secondary", "mean", "init test accuracy − 1/K",
                "At init test accuracy is chance (1/K) within ±2 pp", "within", 0.02,
                "2 pp is a fifth of chance accuracy (10%)",
                "Init test accuracy is chance {estimate:+.2%} [{low:+.2%}, {high:+.2%}] "
                "(seeds range {lowest:.1%}–{highest:.1%}).",
                condition=name,
            ),
        )
    ],
    Test(
        "ce_confident_wrong", "C03", "primary", "exact",
        "CE(confident and wrong) − CE(unsure, uniform) (nats)",
        "Cross-entropy is highest when confident and wrong: CE(p_true = 0.001, 0.99 on a "
        "wrong class) exceeds CE(uniform)", "greater", 0.0,
        "C03 is a property of the loss function itself, so an exact computation decides it "
        "(no seeds); any positive difference is the claim",
        "The toolkit's CE: confident and wrong {wrong:.2f} nats, unsure (uniform) "
        "{unsure:.2f}, confident and right {right:.3f}; along 61 values of p(true) it equals "
        "−ln p(true) to {error:.1e} and falls monotonically ({monotone}).",
    ),
    Test(
        "mse_quadruples", "C03", "check", "exact", "log2(MSE(error 2) / MSE(error 1)) − 2",
        "MSE squares errors: doubling an output's error quadruples the loss", "within", 1e-4,
        "float32 rounding: an exact identity holds to far better than 1e-4",
        "The toolkit's MSE: error 1 costs {one:.2f}, error 2 costs {two:.2f}; it equals "
        "½·Σ error² to {error:.1e}; so one error of 2 costs {big:.2f}, two errors of 1 "
        "{small:.2f}: large errors cost disproportionately.",
    ),
    Test(
        "ce_vs_mse", "C03", "secondary", "paired_difference", "test accuracy, CE − MSE",
        "Cross-entropy is the better classification loss: CE-trained test accuracy exceeds "
        "MSE-trained by more than 1 pp", "greater", 0.01,
        "1 pp: Hui & Belkin (2021) find CE and MSE within about 1 pp of each other",
        "CE − MSE test accuracy {estimate:+.2%} [{low:+.2%}, {high:+.2%}] ({n} of {planned} "
        "seeds): CE {ce:.1%} vs MSE {mse:.1%}; at the early-stopping epoch {early:+.2%}.",
        condition="the overfit model's protocol (80 epochs), final epoch, paired by seed",
    ),
    Test(
        "temperature", "C03", "secondary", "log_ratio", "log T (fitted on validation)",
        "The overfit model is overconfident: the NLL-optimal temperature is above 1",
        "greater", 0.0, "any T > 1 is overconfidence",
        "Fitted T = e^{estimate:.2f} [e^{low:.2f}, e^{high:.2f}] (mean T {mean:.2f}).",
        condition=FIT,
    ),
    Test(
        "temperature_nll", "C03", "secondary", "paired_difference",
        "test NLL at fitted T − test NLL at T = 1 (nats)", "Temperature scaling lowers test NLL",
        "less", 0.0, EXPLORATORY,
        "Test NLL changes by {estimate:+.2f} nats [{low:+.2f}, {high:+.2f}] from {before:.2f}; "
        "test accuracy by at most {acc:.1e} (the argmax is unchanged).", condition=FIT,
    ),
    Test(
        "temperature_ece", "C03", "secondary", "paired_difference",
        "test ECE at fitted T − test ECE at T = 1",
        "Temperature scaling lowers the expected calibration error (15 bins)", "less", 0.0,
        EXPLORATORY, "Test ECE changes by {estimate:+.3f} [{low:+.3f}, {high:+.3f}] from "
        "{before:.3f}.", condition=FIT,
    ),
    Test(
        "entropy_monotone", "C03", "secondary", "mean",
        f"smallest entropy step between neighbouring temperatures ({len(TEMPERATURES)}, "
        f"T = {TEMPERATURES[0]:g}…{TEMPERATURES[-1]:g}; nats)",
        "Temperature reshapes the output distribution: predictive entropy rises monotonically "
        "with T", "greater", 0.0, "any positive smallest step means monotone",
        "Smallest entropy step {estimate:.2e} [{low:.2e}, {high:.2e}] nats; entropy goes "
        "{first:.3f} → {last:.3f} nats.", condition=FIT,
    ),
    Test(
        "nll_optimum", "C03", "secondary", "mean",
        "test NLL at fitted T − min over the T grid of test NLL (nats)",
        "NLL has an optimum in T that validation finds", "within", 0.02,
        "0.02 nats, about 1% of the overfit model's test NLL",
        "Test NLL at the validation-fitted T is {estimate:+.4f} [{low:+.4f}, {high:+.4f}] "
        "nats from the best on the test grid.", condition=FIT,
    ),
    *[
        Test(
            f"grad_{key}", "C06", "primary" if key == "mlp_ce" else "secondary", "mean",
            f"log10(max over tensors of relative error / {GRAD_TOLERANCE:g})",
            "Backpropagation computes every weight's gradient: autodiff matches central finite "
            f"differences in float64 (relative error < {GRAD_TOLERANCE:g} in every tensor)",
            "less", 0.0,
            f"the declared bar is the {GRAD_TOLERANCE:g} relative tolerance itself (the log is "
            "taken against it), so any value below 0 passes",
            "Worst tensor's relative error 1e-6 × 10^{estimate:.2f} [10^{low:.2f}, 10^{high:.2f}]"
            " ({n} seeds, random inits); largest {worst:.1e}; {coords:,} of {total:,} "
            "coordinates per seed; {kinks} checks stepped across a ReLU kink and are left out "
            "(with them: {with_kinks:.1e}).",
            condition=name,
        )
        for key, name in GRADS.items()
    ],
    Test(
        "grad_cost", "C06", "check", "exact", "slope of log(gradient FLOPs / forward FLOPs) vs log P",
        "One gradient costs a small constant multiple of one forward pass, whatever the "
        "parameter count", "within", 0.1,
        "a slope under 0.1 is under 1.26× over a tenfold parameter range: constant",
        "XLA FLOP counts, {span}: a gradient costs {low_ratio:.2f}–{high_ratio:.2f} forward "
        "passes; wall-clock ratios are in timings.csv.",
    ),
    Test(
        "fd_cost", "C06", "check", "exact",
        "slope of log(FD gradient FLOPs / forward FLOPs) vs log P, − 1",
        "A finite-difference gradient's cost grows linearly with the parameter count",
        "within", 0.1, "linear growth within ±0.1 in the log-log slope",
        "Central differences need 2P forward passes ({span}): {low_ratio:,.0f}–"
        "{high_ratio:,.0f}× one autodiff gradient.",
    ),
    Test(
        "steps_per_epoch", "C07", "primary", "exact",
        "log10(article's iterations per epoch / toolkit steps_per_epoch(100000, 100))",
        "The article's worked example: 100,000 examples at batch size 100 make 10,000 "
        "iterations per epoch (100,000 in 10 epochs)", "within", 0.001,
        "C07 is arithmetic, so an exact computation decides it: the two counts agree or they "
        "do not (0.001 in log10 is 0.2%)",
        "steps_per_epoch(100,000, 100) = {per_epoch:,}, not {claimed:,}; 10 epochs make "
        "{total:,}, not {claimed_total:,}. The trained runs took {steps:,} steps = {epochs} "
        "epochs × {run_per_epoch} (ceil(4,000 / {batch})).",
    ),
]  # fmt: skip


def analyze(results: ResultsFolder) -> dict:
    ev = _init_evidence(results.table("init"))
    ev |= _loss_shape_evidence(results.table("loss_shapes"))
    ev |= _trained_evidence(results.summary(), results.table("temperature_curves"))
    ev |= _gradient_evidence(results.table("gradient_check"), results.table("cost"))
    ev |= _step_evidence(results.table("step_arithmetic"), results.summary())
    return ev


def _init_evidence(init: pd.DataFrame) -> dict:
    ev = {}
    for key, (model, dataset) in INIT.items():
        part = init[(init["model"] == model) & (init["dataset"] == dataset)].set_index("seed")
        k = part["num_classes"].max()
        # i.i.d. logits N(0, σ²) give E[CE] = ln K + σ²(K − 1)/2K to second order.
        excess = part["logit_std"] ** 2 * (k - 1) / (2 * k)
        raw = part["init_test_loss"] - np.log(k)
        ev[f"init_loss_{key}"] = per_seed(
            raw - excess, raw=raw.mean(), excess=excess.mean(), sigma=part["logit_std"].mean()
        )
        acc = part["init_test_acc"]
        ev[f"init_acc_{key}"] = per_seed(acc - 1 / k, lowest=acc.min(), highest=acc.max())
    return ev


def _loss_shape_evidence(shapes: pd.DataFrame) -> dict:
    ce = shapes[shapes["loss"] == "ce"]
    named = ce.set_index("scenario")["value"]
    sweep = ce[ce["scenario"] == "sweep"].sort_values("p_true")
    wrong, unsure = named["confident and wrong"], named["unsure (uniform)"]
    mse = shapes[shapes["loss"] == "mse"]
    errors = mse[mse["scenario"] == "error sweep"].set_index("error_size")["value"]
    big, small = mse.set_index("scenario")["value"][["one error of 2", "two errors of 1"]]
    return {
        "ce_confident_wrong": exact(
            wrong - unsure, wrong=wrong, unsure=unsure, right=named["confident and right"],
            error=(sweep["value"] - sweep["reference"]).abs().max(),
            monotone=bool((np.diff(sweep["value"]) < 0).all()),
        ),
        "mse_quadruples": exact(
            math.log2(errors.loc[2.0] / errors.loc[1.0]) - 2.0, one=errors.loc[1.0],
            two=errors.loc[2.0], error=(mse["value"] - mse["reference"]).abs().max(),
            big=big, small=small,
        ),
    }  # fmt: skip


def _trained_evidence(summary: pd.DataFrame, curves: pd.DataFrame) -> dict:
    frame, out = usable(summary)
    seeds = summary["seed"].nunique()
    ce = frame[frame["loss"] == "ce"].set_index("seed").sort_index()
    mse = frame[frame["loss"] == "mse"].set_index("seed").sort_index()
    runs = curves[curves["loss"] == "ce"].sort_values(["seed", "temperature"])
    runs = runs[runs["seed"].isin(ce.index)]
    steps = runs.groupby("seed")["test_entropy"].apply(lambda s: np.diff(s).min())
    entropy = runs.groupby("temperature")["test_entropy"].mean()
    grid_best = runs.groupby("seed")["test_nll"].min()
    early = (ce["best_test_acc"] - mse["best_test_acc"]).mean()
    acc_change = (ce["test_acc_fit"] - ce["test_acc_t1"]).abs().max()

    def ev(values, **extras):
        return per_seed(values, seeds, out, **extras)

    return {
        "ce_vs_mse": ev(
            ce["final_test_acc"] - mse["final_test_acc"], ce=ce["final_test_acc"].mean(),
            mse=mse["final_test_acc"].mean(), early=early,
        ),
        "temperature": ev(np.log(ce["temperature"]), mean=ce["temperature"].mean()),
        "temperature_nll": ev(
            ce["test_nll_fit"] - ce["test_nll_t1"], before=ce["test_nll_t1"].mean(), acc=acc_change
        ),
        "temperature_ece": ev(ce["test_ece_fit"] - ce["test_ece_t1"], before=ce["test_ece_t1"].mean()),
        "entropy_monotone": ev(
            steps, first=entropy.iloc[0] if len(entropy) else np.nan,
            last=entropy.iloc[-1] if len(entropy) else np.nan,
        ),
        "nll_optimum": ev(ce["test_nll_fit"] - grid_best),
    }  # fmt: skip


def _gradient_evidence(check: pd.DataFrame, cost: pd.DataFrame) -> dict:
    ev = {}
    trained, cnn = check["model"].str.contains("trained"), check["model"].str.startswith("CNN")
    which = np.where(trained, "trained", np.where(cnn, "cnn", "mlp_" + check["loss"]))
    for key in GRADS:
        part = check[which == key]
        worst = part.groupby("seed")["rel_error"].max()
        per_seed_sizes = part.groupby("seed")[["checked", "size"]].sum()
        ev[f"grad_{key}"] = per_seed(
            np.log10(np.maximum(worst, 1e-300) / GRAD_TOLERANCE), worst=worst.max(),
            coords=int(per_seed_sizes["checked"].max()) if len(part) else 0,
            total=int(per_seed_sizes["size"].max()) if len(part) else 0,
            kinks=int(part["kinks"].sum()), with_kinks=part["rel_error_with_kinks"].max(),
        )  # fmt: skip
    cost = cost.sort_values("num_params")
    log_p = np.log(cost["num_params"].to_numpy(float))
    span = f"P = {cost['num_params'].min():,} … {cost['num_params'].max():,}"
    grad_slope = np.polyfit(log_p, np.log(cost["gradient_per_forward"]), 1)[0]
    fd_slope = np.polyfit(log_p, np.log(cost["fd_per_forward"]), 1)[0]
    per_gradient = cost["fd_flops"] / cost["gradient_flops"]
    ev["grad_cost"] = exact(
        grad_slope, span=span, low_ratio=cost["gradient_per_forward"].min(),
        high_ratio=cost["gradient_per_forward"].max(),
    )  # fmt: skip
    ev["fd_cost"] = exact(
        fd_slope - 1.0, span=span, low_ratio=per_gradient.min(), high_ratio=per_gradient.max()
    )
    return ev


def _step_evidence(steps: pd.DataFrame, summary: pd.DataFrame) -> dict:
    example = steps[steps["case"] == "the article's worked example"].iloc[0]
    per_epoch, claimed = int(example["steps_per_epoch"]), int(example["article_steps_per_epoch"])
    run = summary.iloc[0]
    return {
        "steps_per_epoch": exact(
            math.log10(claimed / per_epoch), per_epoch=per_epoch, claimed=claimed,
            total=int(example["total_steps"]), claimed_total=int(example["article_total_steps"]),
            steps=int(run["steps"]), epochs=int(run["epochs"]),
            run_per_epoch=int(run["steps_per_epoch"]), batch=int(run["batch_size"]),
        )
    }  # fmt: skip


# ----- figures ---------------------------------------------------------------------------
def figures(results: ResultsFolder, out_dir: Path) -> list[Path]:
    fig.style()
    summary, _ = usable(results.summary())
    kept = {
        name: table[table["run_id"].isin(summary["run_id"])]
        for name, table in (
            ("history", results.history()),
            ("curves", results.table("temperature_curves")),
            ("reliability", results.table("reliability")),
        )
    }
    ev = analyze(results)
    return [
        _init_figure(ev, out_dir),
        _loss_shape_figure(results.table("loss_shapes"), ev, out_dir),
        _ce_vs_mse_figure(summary, kept["history"], ev, out_dir),
        _temperature_figure(summary, kept["curves"], out_dir),
        _reliability_figure(kept["reliability"], out_dir),
        _gradient_figure(results.table("gradient_check"), ev, out_dir),
        _cost_figure(results.table("timings"), out_dir),
        _steps_figure(ev["steps_per_epoch"].extras, out_dir),
    ]


def _stated(evidence, label: str, digits: int = 2) -> str:
    """ "label estimate [low, high] (n = k)" for a title: the verdict's numbers."""
    low, high = evidence.interval.ci()
    e = evidence.interval.estimate
    return f"{label} {e:+.{digits}f} [{low:+.{digits}f}, {high:+.{digits}f}] (n = {evidence.interval.n})"


def _init_figure(ev: dict, out_dir: Path) -> Path:
    figure, axes = plt.subplots(1, 2, figsize=(8.4, 3.4))
    for ax, test, tolerance, label in (
        (axes[0], "init_loss", INIT_TOLERANCE, "test CE at init − noise-logit prediction (nats)"),
        (axes[1], "init_acc", 0.02, "test accuracy at init − 1/K"),
    ):
        ax.axhspan(-tolerance, tolerance, color="0.85", lw=0)
        ax.axhline(0, color="0.3", ls="--", lw=0.9)
        for i, key in enumerate(INIT):
            evidence = ev[f"{test}_{key}"]
            values, interval = evidence.values, evidence.interval
            ax.plot(i + np.linspace(-0.15, 0.15, len(values)), values, "o", ms=3.5, alpha=0.6)
            low, high = interval.ci()
            yerr = [[interval.estimate - low], [high - interval.estimate]]
            ax.errorbar(i + 0.3, interval.estimate, yerr=yerr, fmt="s", color="k", ms=4, capsize=3)
        names = [INIT_NAMES[key].replace(" on ", "\non ").split(" (")[0] for key in INIT]
        ax.set_xticks(range(len(INIT)), names, fontsize=7)
        ax.set_ylabel(label)
    axes[0].set_title(f"Loss vs ln K + σ²(K−1)/2K (band ±{INIT_TOLERANCE:g})", fontsize=9)
    axes[1].set_title("Accuracy vs chance (band ±2 pp)", fontsize=9)
    n = max(ev[f"init_acc_{key}"].interval.n for key in INIT)
    figure.suptitle(
        f"C01 at initialization: the loss of pure-noise logits, chance accuracy (one dot per "
        f"seed; black: mean, 95% CI; n = {n} seeds)",
        fontsize=9,
    )
    return fig.save(figure, out_dir, "init")


def _loss_shape_figure(shapes: pd.DataFrame, ev: dict, out_dir: Path) -> Path:
    figure, axes = plt.subplots(1, 2, figsize=(8.4, 3.3))
    ce = shapes[shapes["loss"] == "ce"]
    sweep = ce[ce["scenario"] == "sweep"].sort_values("p_true")
    ax = axes[0]
    ax.plot(sweep["p_true"], sweep["value"], color="C0", label="toolkit CE")
    ax.plot(sweep["p_true"], sweep["reference"], "k:", lw=1, label="−ln p(true)")
    for i, row in enumerate(ce[ce["scenario"] != "sweep"].itertuples()):
        ax.plot(
            row.p_true,
            row.value,
            "osX"[i],
            ms=7,
            color=f"C{i + 1}",
            label=f"{row.scenario}: {row.value:.2f} nats",
        )
    ax.set_xscale("log")
    ax.set_xlabel("probability given to the true class (K = 10)")
    ax.set_ylabel("cross-entropy (nats)")
    ax.set_title("Cross-entropy: confident and wrong costs most")
    ax.legend(fontsize=7)
    ax = axes[1]
    mse = shapes[shapes["loss"] == "mse"]
    errors = mse[mse["scenario"] == "error sweep"].sort_values("error_size")
    ax.plot(errors["error_size"], errors["value"], color="C0", label="toolkit MSE, one output off")
    ax.plot(
        errors["error_size"],
        errors["error_size"],
        color="0.5",
        ls="--",
        lw=1,
        label="linear cost (for comparison)",
    )
    for i, row in enumerate(mse[mse["scenario"] != "error sweep"].itertuples()):
        ax.plot(
            row.error_size,
            row.value,
            "os"[i],
            color=f"C{i + 1}",
            label=f"{row.scenario}: {row.value:.1f}",
        )
    ax.set_xlabel("total absolute error of the outputs")
    ax.set_ylabel("MSE: ½·‖outputs − one-hot‖²")
    ax.set_title("MSE: large errors cost disproportionately")
    ax.legend(fontsize=7)
    check = ev["ce_confident_wrong"].interval.estimate
    figure.suptitle(
        "C03: the toolkit's losses on constructed outputs (exact computations, no seeds): "
        f"CE(confident and wrong) − CE(uniform) = {check:+.2f} nats",
        fontsize=9,
    )
    return fig.save(figure, out_dir, "losses")


def _ce_vs_mse_figure(summary, history, ev: dict, out_dir: Path) -> Path:
    figure, axes = plt.subplots(1, 2, figsize=(8.6, 3.3), gridspec_kw={"width_ratios": [3, 2]})
    history = history.copy()
    history["training loss"] = history["loss"].map(LOSS_NAMES)
    fig.band(axes[0], history, "epoch", "test_acc", hue="training loss")
    axes[0].set_xlabel("epoch")
    axes[0].set_ylabel("test accuracy")
    axes[0].set_title("Test accuracy during training")
    axes[0].legend()
    ax = axes[1]
    ce = summary[summary["loss"] == "ce"].set_index("seed").sort_index()
    mse = summary[summary["loss"] == "mse"].set_index("seed").sort_index()
    seeds = ce.index.intersection(mse.index)
    for seed in seeds:
        ax.plot(
            [0, 1],
            [ce.loc[seed, "final_test_acc"], mse.loc[seed, "final_test_acc"]],
            color="0.5",
            alpha=0.6,
            marker="o",
            ms=3,
        )
    ax.set_xticks([0, 1], ["cross-entropy", "MSE"])
    ax.set_xlim(-0.4, 1.4)
    ax.set_ylabel("final test accuracy")
    ax.set_title(_stated(ev["ce_vs_mse"], "CE − MSE:", 3) + "\n(one line per seed)", fontsize=9)
    figure.suptitle(
        f"CE vs MSE training, MNIST-1D MLP, Adam ({fig.BAND_NOTE}, "
        f"n = {fig.n_seeds(summary)} seeds)",
        fontsize=10,
    )
    return fig.save(figure, out_dir, "ce_vs_mse")


def _temperature_figure(summary, curves: pd.DataFrame, out_dir: Path) -> Path:
    ce_runs = summary[summary["loss"] == "ce"]
    curves = curves[curves["loss"] == "ce"]
    n = fig.n_seeds(ce_runs)
    figure, axes = plt.subplots(1, 3, figsize=(11, 3.3))
    long = curves.melt(
        id_vars=["seed", "temperature"], value_vars=["val_nll", "test_nll"], var_name="split"
    )
    long["split"] = long["split"].map({"val_nll": "validation", "test_nll": "test"})
    fig.band(axes[0], long, "temperature", "value", hue="split")
    axes[0].set_ylabel("NLL (nats)")
    axes[0].set_ylim(0, min(float(long["value"].max()), 4 * float(long["value"].min()) + 1))
    axes[0].set_title("NLL vs temperature")
    fig.band(axes[1], curves, "temperature", "test_entropy", color="C2", label="test")
    axes[1].axhline(math.log(NUM_CLASSES), color="0.4", ls=":", lw=0.9, label="ln K (uniform)")
    axes[1].set_ylabel("mean predictive entropy (nats)")
    axes[1].set_title("Entropy vs temperature")
    fig.band(axes[2], curves, "temperature", "test_ece", color="C3", label="test")
    axes[2].set_ylabel("ECE (15 bins)")
    axes[2].set_title("Calibration error vs temperature")
    t_fit = ce_runs["temperature"]
    for ax in axes:
        ax.set_xscale("log")
        ax.set_xlabel("temperature T")
        ax.axvline(1.0, color="0.6", lw=0.8, label="T = 1")
        ax.axvline(t_fit.mean(), color="k", ls="--", lw=0.9, label="fitted T (mean)")
        ax.legend(fontsize=7)
    figure.suptitle(
        f"Temperature on the overfit CE model (T fitted on validation, mean T = "
        f"{t_fit.mean():.2f}; {fig.BAND_NOTE}, n = {n} seeds)",
        fontsize=10,
    )
    return fig.save(figure, out_dir, "temperature")


def _reliability_figure(reliability: pd.DataFrame, out_dir: Path) -> Path:
    part = reliability[reliability["loss"] == "ce"].copy()
    n = fig.n_seeds(part)
    figure, axes = plt.subplots(
        2, 2, figsize=(8, 5.4), sharex=True, gridspec_kw={"height_ratios": [3, 1]}
    )
    width = 1.0 / cal.NUM_BINS
    for col, (stage, title) in enumerate((("t1", "T = 1"), ("fit", "fitted T"))):
        rows = part[(part["stage"] == stage) & (part["count"] > 0)].copy()
        rows["center"] = (rows["bin_low"] + rows["bin_high"]) / 2
        totals = rows.groupby("center")["count"].sum()
        pooled = rows.assign(hits=rows["accuracy"] * rows["count"]).groupby("center")["hits"].sum()
        conf = rows.assign(c=rows["confidence"] * rows["count"]).groupby("center")["c"].sum()
        ece = float((pooled - conf).abs().sum() / totals.sum())
        ax = axes[0, col]
        ax.bar(
            totals.index,
            pooled / totals,
            width=width * 0.95,
            color="C0",
            alpha=0.7,
            label="accuracy (pooled over seeds)",
        )
        ax.bar(
            totals.index,
            conf / totals - pooled / totals,
            bottom=pooled / totals,
            width=width * 0.95,
            color="C3",
            alpha=0.25,
            label="gap to confidence",
        )
        fig.band(
            ax,
            rows[rows["count"] >= 10],
            "center",
            "accuracy",
            color="k",
            marker=".",
            ms=4,
            lw=0.8,
            label="per-seed accuracy (bins ≥ 10 examples), mean ± 95% CI",
        )
        ax.plot([0, 1], [0, 1], "k:", lw=0.9, label="perfect calibration")
        ax.set_title(f"{title}: pooled ECE = {ece:.3f}")
        ax.set_ylabel("accuracy in bin")
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        axes[1, col].bar(totals.index, totals / totals.sum(), width=width * 0.95, color="0.5")
        axes[1, col].set_xlabel("confidence (max probability)")
        axes[1, col].set_ylabel("share of test set")
    axes[0, 0].legend(fontsize=6.5, loc="upper left")
    figure.suptitle(
        f"Reliability diagram, overfit CE model on the test set (15 bins; n = {n} seeds)",
        fontsize=10,
    )
    return fig.save(figure, out_dir, "reliability")


def _gradient_figure(check: pd.DataFrame, ev: dict, out_dir: Path) -> Path:
    check = check.copy()
    check["label"] = check["model"] + ", " + check["loss"].map(LOSS_NAMES)
    labels = list(dict.fromkeys(check["label"]))
    figure, ax = plt.subplots(figsize=(8.4, 3.6))
    ticks = []
    position = 0
    for i, label in enumerate(labels):
        part = check[check["label"] == label]
        for tensor in dict.fromkeys(part["tensor"]):
            values = part.loc[part["tensor"] == tensor, "rel_error"].to_numpy()
            jitter = np.linspace(-0.2, 0.2, len(values))
            ax.plot(
                position + jitter, np.maximum(values, 1e-17), "o", ms=2.5, color=f"C{i}", alpha=0.7
            )
            ticks.append(
                (position, tensor.replace("['params']", "").replace("']['", ".").strip("[]'"))
            )
            position += 1
        ax.plot([], [], "o", color=f"C{i}", label=label)
        position += 0.7
    ax.axhline(GRAD_TOLERANCE, color="k", ls="--", lw=0.9, label=f"tolerance {GRAD_TOLERANCE:g}")
    ax.set_yscale("log")
    ax.set_ylim(top=1e-4)  # room for the legend above the tolerance line
    ax.set_xticks([p for p, _ in ticks], [t for _, t in ticks], rotation=70, fontsize=6)
    ax.set_ylabel("‖g_autodiff − g_FD‖ / ‖g‖ per tensor")
    ax.legend(fontsize=7, loc="upper left", ncol=2)
    ax.set_title(
        f"Autodiff vs central differences (float64, ε = {FD_EPS:g}; steps across a ReLU kink "
        f"left out: {int(check['kinks'].sum())} of {int(check['checked'].sum()):,})\n"
        + _stated(
            ev["grad_mlp_ce"], "C06 primary, MLP 40-32-32-10 CE: log10(worst tensor / 1e-6) ="
        )
        + f"; one dot per seed and tensor, n = {fig.n_seeds(check)} seeds",
        fontsize=9,
    )
    return fig.save(figure, out_dir, "gradient_check")


def _steps_figure(example: dict, out_dir: Path) -> Path:
    figure, ax = plt.subplots(figsize=(5.2, 3.4))
    x = np.arange(2)
    article = [example["claimed"], example["claimed_total"]]
    toolkit = [example["per_epoch"], example["total"]]
    ax.bar(x - 0.2, article, width=0.38, color="C3", label="the article")
    ax.bar(x + 0.2, toolkit, width=0.38, color="C0", label="toolkit steps_per_epoch = ⌈N/B⌉")
    for i, (a, t) in enumerate(zip(article, toolkit)):
        ax.text(i - 0.2, a, f"{a:,}", ha="center", va="bottom", fontsize=8)
        ax.text(i + 0.2, t, f"{t:,}", ha="center", va="bottom", fontsize=8)
    ax.set_yscale("log")
    ax.set_ylim(top=max(article) * 4)
    ax.set_xticks(x, ["iterations per epoch", "iterations in 10 epochs"])
    ax.set_ylabel("optimizer steps (log scale)")
    ax.legend(fontsize=7, loc="upper left")
    ax.set_title(
        "C07: 100,000 examples at batch size 100 (exact arithmetic, no seeds):\n"
        f"{example['per_epoch']:,} steps per epoch, not {example['claimed']:,}",
        fontsize=9,
    )
    return fig.save(figure, out_dir, "steps")


def _cost_figure(timings: pd.DataFrame, out_dir: Path) -> Path:
    t = timings.sort_values("num_params")
    p = t["num_params"]
    figure, axes = plt.subplots(1, 2, figsize=(9, 3.5))
    ax = axes[0]
    ax.plot(p, t["forward_s"], "o-", color="C0", label="forward pass")
    ax.plot(p, t["gradient_s"], "s-", color="C1", label="gradient (backprop)")
    ax.plot(
        p,
        t["fd_estimate_s"],
        "^--",
        color="C3",
        mfc="none",
        label=f"FD gradient (timed on {int(t['fd_subset_coords'].iloc[-1])} coords, × P/"
        f"{int(t['fd_subset_coords'].iloc[-1])})",
    )
    full = t[t["fd_full_s"].notna()]
    ax.plot(full["num_params"], full["fd_full_s"], "^", color="C3", label="FD gradient, full")
    ax.set_ylabel("wall-clock seconds (median)")
    ax.set_title("Time per call")
    ax = axes[1]
    ax.plot(p, t["gradient_s"] / t["forward_s"], "s-", color="C1", label="gradient, measured time")
    ax.plot(p, t["gradient_per_forward"], "s:", color="C1", mfc="none", label="gradient, FLOPs")
    ax.plot(
        p,
        t["fd_estimate_s"] / t["forward_s"],
        "^--",
        color="C3",
        mfc="none",
        label="FD gradient, measured time",
    )
    ax.plot(p, t["fd_per_forward"], ":", color="C3", label="FD gradient, 2P (FLOPs)")
    ax.set_ylabel("cost in forward passes")
    ax.set_title("Cost relative to one forward pass")
    for ax in axes:
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("parameters P (MLP 40-w-w-10)")
        ax.legend(fontsize=7)
    row = t.iloc[0]
    figure.suptitle(
        f"Backprop vs finite differences, batch {int(row['batch'])} "
        f"(no seeds: median of {int(row['repeats'])} repeats; {row['platform']}: "
        f"{row['device_kind']}, {row['processor']}, {int(row['cpu_count'])} cores, "
        f"load average {row['load_average_1min']})",
        fontsize=9,
    )
    return fig.save(figure, out_dir, "cost")
