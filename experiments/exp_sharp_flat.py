"""Batch size, sharp and flat minima, and generalization on MNIST-1D (C18, C08).

Command: ``toolkit run exp_sharp_flat --seeds 10``

An MLP 40-100-100-10 (15k parameters) is trained with SGD + heavy-ball momentum 0.9
(the noise-scale theory is for SGD) at batch sizes 16 … 4,000 (the full training set;
Keskar's "large batch" is 10% of the data), under two learning-rate policies:
``fixed`` (lr 0.02 for every batch size) and ``scaled`` (lr = 0.02·B/64, constant
lr/B noise scale, the linear scaling rule). Two budgets:

- ``matched`` (the default profile's only arm): each run stops when its full-train
  cross-entropy first reaches 0.2 (checked at every evaluation, ≤ 100 per run, so a run
  stops at most ~1% of its budget past the target; Jiang et al. 2020 compared at matched
  loss). The cross-entropy Hessian shrinks as the loss goes to zero, so only runs stopped
  at the same loss have comparable curvature. Cap: max(60 epochs, 1,800 steps) under the
  fixed lr, max(60 epochs, 800 steps) under the scaled lr. Why 0.2 and these caps
  (measured before the final run, 2 seeds, 2,400-step probes): at lr 0.02 batch sizes
  256 … 4,000 follow the same full-batch-like path and reach CE 0.2 at ~1,350–1,410 steps
  (0.1 at ~1,750); B = 16 at lr 0.02 has a noise floor near CE 0.1–0.35 and touched 0.1
  in only 6 of 10 seeds within 60 epochs, but reaches 0.2 in 20–28 epochs. A target of
  0.1 for every batch size would need B = 16 to be stopped on a lucky fluctuation and
  full-batch caps of ~2,200 steps, over the CPU budget. Runs that do not reach the
  target are reported (per point, in the figures and the finding) and left out of the
  matched comparisons. Under the scaled lr, B = 4,000 trains at lr 1.25 (with momentum
  0.9, past the 2(1+β)/λ_max stability limit at init): some seeds catapult to a dead
  network that never reaches any target; they are counted, not retried.
- ``epochs`` (paper profile only): 40 epochs for every run (steps = 40·⌈N/B⌉; on the
  paper profile's N = 40,000: 100,000 at B=16, 400 at B=4000). Losses differ across B
  there (the large-batch runs are simply underfit), so its curvature is not compared like
  with like; it is Keskar's setting.

Measured per run on its final parameters (dropout off), on a fixed subset of the
first 1,000 training examples: top and smallest Hessian eigenvalue (Lanczos, 80
iterations: the smallest Ritz value converges there; at 20 it sat up to 50% too close
to zero against the exact Hessian), trace (Hutchinson, 20 Rademacher probes, with its
standard error), Keskar ε-sharpness (ε = 1e-3 and 5e-4; projected sign-gradient ascent,
10 steps, instead of Keskar's 10 L-BFGS-B iterations), the rescaling-invariant adaptive
sharpness (box |δᵢ| ≤ 5e-3·|θᵢ|) and top eigenvalue of diag|θ|·H·diag|θ|, the same
after a function-preserving rescaling of the first hidden layer (×4, next ×¼), the
minibatch gradient variance at B = 16, 64, 256, 1024 on the full training set (C08),
and 1-D loss slices along two directions: the top Hessian eigenvector (30 power
iterations, unit norm: its curvature is λ_max) and a random filter-normalized direction
(Li et al. 2018: its curvature is an average over all directions, trace-like, so it need
not order runs as λ_max does); a 2-D filter-normalized slice for seed 0.

Cost: default profile (5 batch sizes × 2 policies × 10 seeds = 100 runs, 8 cohorts,
456,400 optimizer steps, 36,700 run-epochs, most of them the fixed-lr full-batch runs)
6.6 CPU-minutes measured (user time; 19.5 min wall on a 2-core CPU shared at load ~14,
so ~3.5–6.5 min when run alone; the 80-iteration Lanczos adds ~0.2–0.3 CPU-s per run). Paper
profile (one GPU): ``mnist1d_40k`` (40,000 training examples: the largest batch, 4,000, is
10% of the data, Keskar's large batch, not the full set), 20 seeds, both budgets: 400
runs in 12 cohorts, 13.7M optimizer steps, 353,000 of them sequential (the cohorts' step
counts; B = 16 trains 150,000 in the matched arm, 100,000 in the equal-epoch one).
Estimated on one H200 with an empty compilation cache (not yet measured): ~20–30 s of
training and evaluation, ~10 s of compilation per cohort and up to a minute per
measurement program, so 3–5 minutes; much less with the programs cached. Quick profile:
seconds.

Primary (C18): per seed, Kendall τ between λ_max and the generalization gap in the matched
quantity, test CE − train CE (train accuracy is not matched: at train CE 0.2 it rises
with B, so an accuracy gap would grow with B by construction; it is a secondary), over
all matched runs that reached the target (both policies, all batch sizes); τ ≥ 0.1 is
the smallest effect. Jiang et al.'s granulated τ and τ(B, λ_max) per policy are
secondaries.

Expected (Keskar et al. 2017; Hoffer 2017, Goyal 2017, Shallue 2019; Dinh 2017):
sharpness grows with batch size by a large factor while the test-accuracy gap is small
and shrinks when the learning rate is scaled with the batch; raw sharpness is not
invariant to rescaling; minibatch gradient variance ∝ 1/B.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Literal

import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import matplotlib.ticker as mticker
import numpy as np
import pandas as pd
from jax.flatten_util import ravel_pytree
from scipy.stats import kendalltau

from toolkit import data as datasets
from toolkit import figures as fig
from toolkit import measures as M
from toolkit import models
from toolkit.claimtests import Test, per_seed, rank, usable
from toolkit.data import steps_per_epoch
from toolkit.engine import CohortSpec, per_example_loss
from toolkit.results import ResultsError, ResultsFolder
from toolkit.spec import Count, NonNegative, Positive, RunConfig

CLAIMS = ("C18", "C08")
#: The figure the claims report links for each claim.
CLAIM_FIGURES = {"C18": "gap_vs_sharpness", "C08": "gradient_noise"}
CURVATURE_EXAMPLES = 1000
NOISE_BATCHES = (16, 64, 256, 1024)
SLICE_ALPHAS = np.linspace(-1.0, 1.0, 41)
CONTOUR_ALPHAS = np.linspace(-1.0, 1.0, 21)
RESCALE = 4.0
LANCZOS_ITERS = 80
RANDOM_DIRECTION = "random filter-normalized"
TOP_DIRECTION = "top eigenvector"
POWER_ITERS = 30


@dataclass(frozen=True)
class Config(RunConfig):
    # scientific: the factors under study
    batch_size: int = 64
    # "fixed": base_lr for all B; "scaled": base_lr · B / reference_batch
    lr_policy: Literal["fixed", "scaled"] = "fixed"
    # "epochs": budget_epochs for all; "matched": stop at target_train_loss
    budget: Literal["epochs", "matched"] = "epochs"
    # fixed: the protocol
    base_lr: Positive = 0.02
    reference_batch: Count = 64
    budget_epochs: Count = 40
    target_train_loss: NonNegative = 0.2
    # matched budget cap: max(min epochs, max steps), the steps depending on the policy
    matched_min_epochs: Count = 60
    matched_max_steps: Count = 800  # scaled lr
    matched_max_steps_fixed: Count = 1800  # fixed lr: large batches take ~1,400 steps to 0.2
    widths: tuple[int, ...] = (100, 100)
    optimizer: str = "sgd"
    momentum: float = 0.9
    history_points: int = 100  # also the stop checks: every ≤ 1% of a run's epochs

    DERIVED: ClassVar[dict[str, str]] = {
        "learning_rate": "set base_lr, lr_policy or reference_batch instead",
        "epochs": "set budget_epochs, matched_min_epochs or matched_max_steps(_fixed) instead",
        "stop_train_loss": "set budget or target_train_loss instead",
    }

    def run_epochs(self) -> int:
        if self.budget == "epochs":
            return self.budget_epochs
        per_epoch = steps_per_epoch(datasets.train_size(self.dataset), self.batch_size)
        cap = self.matched_max_steps_fixed if self.lr_policy == "fixed" else self.matched_max_steps
        epochs = max(self.matched_min_epochs, math.ceil(cap / per_epoch))
        # A round number has divisors, so evaluations (and stop checks) stay evenly spaced.
        return math.ceil(epochs / 10) * 10 if epochs >= 10 else epochs

    def cohort_spec(self) -> CohortSpec:
        if self.budget not in ("epochs", "matched") or self.lr_policy not in ("fixed", "scaled"):
            raise ValueError("budget must be epochs|matched and lr_policy fixed|scaled")
        spec = super().cohort_spec()
        return CohortSpec(**{**spec.__dict__, "epochs": self.run_epochs()})

    def hparams(self) -> dict[str, float]:
        scale = self.batch_size / self.reference_batch if self.lr_policy == "scaled" else 1.0
        target = self.target_train_loss if self.budget == "matched" else 0.0
        return {
            **super().hparams(),
            "learning_rate": self.base_lr * scale,
            "stop_train_loss": target,
        }


GRID = {
    "budget": ["matched"],  # the equal-epoch arm runs in the paper profile
    "lr_policy": ["fixed", "scaled"],
    "batch_size": [16, 64, 256, 1024, 4000],
}

PROFILES = {
    "quick": {
        "seeds": 2,
        "budget_epochs": 2,
        "matched_min_epochs": 2,
        "matched_max_steps": 2,  # every quick run has 2 epochs: one cohort
        "matched_max_steps_fixed": 2,
        "target_train_loss": 2.0,
        "widths": (16,),
        "grid": {
            "budget": ["epochs", "matched"],
            "lr_policy": ["fixed"],
            "batch_size": [100, 4000],
        },
    },
    "default": {"seeds": 10},
    # GPU: Keskar's scale of data. 40,000 training examples (mnist1d_40k), so the largest
    # batch, 4,000, is 10% of the data as in Keskar et al. rather than the whole set; 20
    # seeds; both budgets. The matched caps, probed on mnist1d_40k (1 seed, lr 0.02: B =
    # 1,024 and 4,000 reach train CE 0.2 at ~6,000 steps, B = 256 at ~6,500, B = 64 at
    # ~12,000, B = 16 at ~70,000–90,000 (its noise floor); scaled lr: B = 16 at ~50,000,
    # B = 256 at ~3,300, B = 1,024 and 4,000 within 1,000): 60 epochs (B = 16: 150,000
    # steps), else 9,000 steps (fixed lr) or 2,000 (scaled).
    "paper": {
        "seeds": 20,
        "dataset": "mnist1d_40k",
        "matched_max_steps_fixed": 9000,
        "matched_max_steps": 2000,
        "grid": {**GRID, "budget": ["epochs", "matched"]},
    },
}


# ----- measurements (vmapped over the runs of a cohort) ---------------------------------
def _top_direction(loss, params, x, y, key, iters: int = POWER_ITERS):
    """Unit-norm top Hessian eigenvector by power iteration, and its Rayleigh quotient."""
    flat, unravel = ravel_pytree(params)

    def hv(v):
        return ravel_pytree(M.hvp(loss, params, x, y, unravel(v)))[0]

    def step(_, v):
        w = hv(v)
        return w / jnp.linalg.norm(w)

    v0 = jax.random.normal(key, flat.shape, flat.dtype)
    v = jax.lax.fori_loop(0, iters, step, v0 / jnp.linalg.norm(v0))
    return unravel(v), jnp.vdot(v, hv(v))


@functools.cache
def _measure_fns(model_kind: str, widths: tuple, num_classes: int, activation: str, loss_kind: str):
    """Per-run measurement functions, built once per architecture so every cohort of
    the same architecture reuses one compiled program."""
    model = models.build(model_kind, widths, num_classes, activation)

    def loss(params, x, y):  # eval mode: no dropout
        return per_example_loss(loss_kind, model.apply(params, x), y).mean()

    def per_run(params, key, x, y, xf, yf):
        keys = jax.random.split(key, 8)
        # 80 iterations: the smallest Ritz value is converged (at 20 it sat up to 50% too
        # close to zero against the exact Hessian); the top one was already.
        top, smallest = M.lanczos_eigs(loss, params, x, y, keys[0], num_iters=LANCZOS_ITERS, k=1)
        trace, trace_se = M.hutchinson_trace(loss, params, x, y, keys[1], num_probes=20)
        out = {
            "lambda_max": top[0],
            "lambda_min": smallest,
            "hessian_trace": trace,
            "hessian_trace_se": trace_se,
            "keskar_1e-3": M.keskar_sharpness(loss, params, x, y, eps=1e-3, steps=10),
            "keskar_5e-4": M.keskar_sharpness(loss, params, x, y, eps=5e-4, steps=10),
            "adaptive_sharpness": M.adaptive_sharpness(loss, params, x, y, eps=5e-3, steps=10),
            "adaptive_lambda_max": M.adaptive_top_eig(loss, params, x, y, keys[2], num_iters=20),
            "curvature_loss": loss(params, x, y),
        }
        if len(widths) >= 2:
            rescaled = M.rescale_layers(params, "Dense_0", "Dense_1", RESCALE)
            out["rescaled_lambda_max"] = M.lanczos_eigs(
                loss, rescaled, x, y, keys[0], num_iters=20, k=1
            )[0][0]
            out["rescaled_adaptive_lambda_max"] = M.adaptive_top_eig(
                loss, rescaled, x, y, keys[2], num_iters=20
            )
        for b, k in zip(NOISE_BATCHES, jax.random.split(keys[3], len(NOISE_BATCHES))):
            out[f"grad_var_b{b}"] = M.gradient_noise(loss, params, xf, yf, k, b, num_batches=16)
        direction = M.filter_normalized_direction(params, keys[4])
        out["slice"] = M.slice_1d(loss, params, x, y, direction, SLICE_ALPHAS)
        # The top eigen-direction (power iteration, unit norm): the slice whose curvature
        # is λ_max. A random filter-normalized direction sees an average of the curvature
        # over all directions (trace-like), not the top eigenvalue.
        top_dir, out["top_direction_curvature"] = _top_direction(loss, params, x, y, keys[5])
        out["slice_top"] = M.slice_1d(loss, params, x, y, top_dir, SLICE_ALPHAS)
        return out

    def contour(params, key, x, y):
        k1, k2 = jax.random.split(key)
        d1 = M.filter_normalized_direction(params, k1)
        d2 = M.filter_normalized_direction(params, k2)
        return M.slice_2d(loss, params, x, y, d1, d2, CONTOUR_ALPHAS, CONTOUR_ALPHAS)

    return per_run, contour


def measure(trained) -> dict:
    spec, data = trained.cohort.spec, trained.cohort.data
    per_run, contour = _measure_fns(
        spec.model, tuple(spec.widths), data.num_classes, spec.activation, spec.loss
    )
    x_sub = jnp.asarray(data.x_train[:CURVATURE_EXAMPLES])
    y_sub = jnp.asarray(data.y_train[:CURVATURE_EXAMPLES])
    x_full, y_full = jnp.asarray(data.x_train), jnp.asarray(data.y_train)
    params = trained.result.state["params"]
    runs = trained.runs
    # Probe keys from each run's seed (the same for a seed at every grid point).
    keys = trained.run_keys(20260)
    values = trained.map(per_run, (params, keys), (x_sub, y_sub, x_full, y_full))
    slices = {RANDOM_DIRECTION: values.pop("slice"), TOP_DIRECTION: values.pop("slice_top")}

    slice_rows = [
        trained.row(r, direction=name, alpha=float(a), loss=float(v))
        for name, table in slices.items()
        for r in range(len(runs))
        for a, v in zip(SLICE_ALPHAS, table[r])
    ]
    contour_rows = []
    first = np.array([r for r, run in enumerate(runs) if run.seed == 0], dtype=int)
    if len(first):
        picked = jax.tree_util.tree_map(lambda a: a[first], params)
        grids = trained.map(contour, (picked, keys[first]), (x_sub, y_sub))
        contour_rows = trained.grid_rows(first, grids, CONTOUR_ALPHAS, CONTOUR_ALPHAS)
    return {**values, "slices": pd.DataFrame(slice_rows), "contours": pd.DataFrame(contour_rows)}


# ----- analysis --------------------------------------------------------------------------
def _train_size(results: ResultsFolder) -> int:
    """Training examples of the folder's dataset, from its meta.json (mnist1d: 4,000)."""
    sizes = {d["sizes"]["train"] for d in results.meta().get("datasets", {}).values()}
    if len(sizes) != 1:
        raise ResultsError(
            f"{results.path / 'meta.json'} names {len(sizes)} training-set sizes; the analysis "
            "needs one dataset per results folder (rerun it with one dataset)"
        )
    return sizes.pop()


def _with_derived(summary: pd.DataFrame, n: int) -> pd.DataFrame:
    """Derived columns; ``n``: training examples (the without-replacement factor)."""
    frame = summary.copy()
    frame["gap_acc"] = frame["final_train_acc"] - frame["final_test_acc"]
    frame["gap_loss"] = frame["final_test_loss"] - frame["final_train_loss"]
    frame["log_batch"] = np.log(frame["batch_size"])
    frame["reached_target"] = frame["stopped_epoch"] >= 0
    noise = np.array([frame[f"grad_var_b{b}"] for b in NOISE_BATCHES]).T
    corrected = noise * (n - 1) / (n - np.array(NOISE_BATCHES))  # finite-population factor
    logb = np.log(np.array(NOISE_BATCHES, float))
    frame["grad_var_slope"] = [np.polyfit(logb, np.log(row), 1)[0] for row in corrected]
    return frame


TESTS = [
    Test(
        "tau_sharp_gap", "C18", "primary", "rank_correlation",
        "Kendall τ(λ_max, test CE − train CE) across a seed's runs at matched train loss",
        "Flat minima generalize better: across runs stopped at the same train loss, the "
        "sharper the minimum, the larger the generalization gap (in the matched quantity, "
        "cross-entropy: train accuracy is not matched and rises with B, so an accuracy gap "
        "would grow with B by construction)",
        "greater", 0.1,
        "τ = 0.1 means 55% of run pairs ordered alike: below that sharpness ranks the gap "
        "little better than chance (Jiang et al. 2020 report τ ≈ 0.1–0.5 for sharpness)",
        "Per seed, τ over its runs at matched train CE {target:g} (all batch sizes and lr "
        "policies that reached it; {runs_out}): mean {estimate:.2f} [{low:.2f}, {high:.2f}] over {n} "
        "of {planned} seeds ({verdict}).",
        condition="matched train loss, both lr policies",
    ),
    Test(
        "tau_sharp_gap_acc", "C18", "secondary", "rank_correlation",
        "Kendall τ(λ_max, train − test accuracy) across a seed's runs at matched train loss",
        "Sharper minima have a larger accuracy gap", "greater", 0.1,
        "as the primary; caveat: train accuracy is not matched (it rises with B at a "
        "matched train loss), which widens the accuracy gap of the sharp large-batch runs",
        "Accuracy gap: mean τ {estimate:.2f} [{low:.2f}, {high:.2f}] (n = {n}); the loss "
        "gap (the primary) and this one disagree when train accuracy differs.",
        condition="matched train loss, both lr policies",
    ),
    Test(
        "granulated_tau", "C18", "secondary", "mean",
        "Jiang et al.'s granulated τ: τ(λ_max, test − train CE) within each factor (batch size, lr "
        "policy), averaged over factors, per seed",
        "Sharpness ranks the gap when one factor changes at a time", "greater", 0.0,
        "exploratory: any positive agreement is reported",
        "Granulated τ {estimate:.2f} [{low:.2f}, {high:.2f}] (n = {n}).",
        condition="matched train loss",
    ),
    Test(
        "tau_batch_sharp_fixed", "C18", "secondary", "rank_correlation",
        "Kendall τ(B, λ_max) per seed over the batch sizes that reached the target",
        "Larger batches end in sharper minima (fixed lr)", "greater", 0.0,
        "exploratory: the direction Keskar et al. report",
        "τ(B, λ_max) {estimate:.2f} [{low:.2f}, {high:.2f}] (n = {n}).",
        condition="matched train loss, fixed lr",
    ),
    Test(
        "tau_batch_sharp_scaled", "C18", "secondary", "rank_correlation",
        "Kendall τ(B, λ_max) per seed over the batch sizes that reached the target",
        "Larger batches end in sharper minima (lr ∝ B)", "greater", 0.0,
        "exploratory: the direction Keskar et al. report",
        "τ(B, λ_max) {estimate:.2f} [{low:.2f}, {high:.2f}] (n = {n}).",
        condition="matched train loss, scaled lr",
    ),
    Test(
        "tau_batch_gap_scaled", "C18", "secondary", "rank_correlation",
        "Kendall τ(B, train − test accuracy) per seed over the batch sizes that reached it",
        "Larger batches generalize worse (lr ∝ B)", "greater", 0.0,
        "exploratory: the direction Keskar et al. report",
        "τ(B, gap) {estimate:.2f} [{low:.2f}, {high:.2f}] (n = {n}).",
        condition="matched train loss, scaled lr",
    ),
    Test(
        "tau_batch_sharp_epochs", "C18", "secondary", "rank_correlation",
        "Kendall τ(B, λ_max) per seed, 40 epochs for every batch size (losses differ)",
        "Larger batches end in sharper minima at an equal epoch budget (fixed lr)",
        "greater", 0.0,
        "exploratory: the train losses differ across B here, so curvature is not compared "
        "like with like",
        "τ(B, λ_max) {estimate:.2f} [{low:.2f}, {high:.2f}] (n = {n}).",
        condition="equal epochs, fixed lr",
    ),
    Test(
        "rescaling", "C18", "secondary", "log_ratio",
        "|log(λ_max after a ×4/×¼ ReLU rescaling / λ_max)|, mean over a seed's matched runs",
        "Raw sharpness is not invariant to a function-preserving rescaling (Dinh et al. 2017)",
        "greater", 0.1,
        "a change under 10% (|log| < 0.1) would be within Lanczos' own accuracy here",
        "Rescaling changed the raw top eigenvalue by e^{estimate:.2f} [e^{low:.2f}, "
        "e^{high:.2f}]; the adaptive one by at most {adaptive:.1e} (log-ratio).",
        condition="reparametrization caveat",
    ),
    Test(
        "noise_slope", "C08", "secondary", "slope",
        "slope of log gradient variance vs log B (finite-population corrected), + 1",
        "Minibatch gradient variance falls as 1/B", "within", 0.15,
        "±0.15 around −1 separates 1/B from 1/√B (−0.5) and 1/B² (−2) with room for noise",
        "Slope −1 {estimate:+.3f} [{low:+.3f}, {high:+.3f}] (n = {n}).",
    ),
]  # fmt: skip


def _granulated(part: pd.DataFrame) -> float:
    """Jiang et al. (2020) granulated τ for one seed: for each factor, the mean τ over
    groups where only that factor varies, then the mean over factors."""
    per_factor = []
    for factor, others in (("batch_size", "lr_policy"), ("lr_policy", "batch_size")):
        taus = []
        for _, group in part.groupby(others):
            if group[factor].nunique() >= 2 and group["lambda_max"].nunique() >= 2:
                taus.append(kendalltau(group["lambda_max"], group["gap_loss"]).statistic)
        taus = [t for t in taus if np.isfinite(t)]
        if taus:
            per_factor.append(float(np.mean(taus)))
    return float(np.mean(per_factor)) if per_factor else float("nan")


def matched_runs(frame: pd.DataFrame) -> tuple[pd.DataFrame, dict[str, int]]:
    """Runs of the matched arm that count: not diverged and at the target loss."""
    return usable(frame[frame["budget"] == "matched"], "reached_target")


def analyze(results: ResultsFolder) -> dict:
    frame = _with_derived(results.summary(), _train_size(results))
    seeds = frame["seed"].nunique()
    matched, excluded = matched_runs(frame)
    runs_out = "; ".join(f"{n} runs {why}" for why, n in excluded.items()) or "no run left out"
    arm = frame[frame["budget"] == "matched"]
    reach = arm.groupby(["lr_policy", "batch_size"])["reached_target"].sum().astype(int)
    runs_out += "; seeds at the target per batch size: " + "; ".join(
        f"{policy} lr " + ", ".join(f"B={b}: {k}" for (_, b), k in part.items())
        for policy, part in reach.groupby(level=0)
    )
    target = float(arm["stop_train_loss"].iloc[0]) if len(arm) else float("nan")
    per_seed_granulated = {s: _granulated(part) for s, part in matched.groupby("seed")}
    evidence = {
        "tau_sharp_gap_acc": rank(
            matched, "lambda_max", "gap_acc", levels="batch_size", planned=seeds
        ),
        "tau_sharp_gap": rank(
            matched,
            "lambda_max",
            "gap_loss",
            levels="batch_size",
            planned=seeds,
            runs_out=runs_out,
            target=target,
        ),
        "granulated_tau": per_seed(per_seed_granulated, planned=seeds),
    }
    for key, policy, column in (
        ("tau_batch_sharp_fixed", "fixed", "lambda_max"),
        ("tau_batch_sharp_scaled", "scaled", "lambda_max"),
        ("tau_batch_gap_scaled", "scaled", "gap_acc"),
    ):
        part = matched[matched["lr_policy"] == policy]
        evidence[key] = rank(part, "batch_size", column, planned=seeds)
    epochs, _ = usable(frame[(frame["budget"] == "epochs") & (frame["lr_policy"] == "fixed")])
    not_run = {} if len(epochs) else {"equal-epoch arm not run (paper profile only)": seeds}
    evidence["tau_batch_sharp_epochs"] = rank(
        epochs, "batch_size", "lambda_max", planned=seeds, excluded=not_run
    )
    base, _ = usable(frame[frame["budget"] == "matched"])
    if "rescaled_lambda_max" in base:  # models with two hidden layers
        log_raw = np.abs(np.log(base["rescaled_lambda_max"] / base["lambda_max"]))
        log_adaptive = np.log(base["rescaled_adaptive_lambda_max"] / base["adaptive_lambda_max"])
        log_raw, adaptive = log_raw.groupby(base["seed"]).mean(), np.abs(log_adaptive).max()
    else:
        log_raw, adaptive = pd.Series(np.nan, index=range(seeds)), np.nan
    evidence["rescaling"] = per_seed(log_raw, planned=seeds, adaptive=float(adaptive))
    valid, _ = usable(frame)
    evidence["noise_slope"] = per_seed(
        valid.groupby("seed")["grad_var_slope"].mean() + 1.0, planned=seeds
    )
    return evidence


# ----- figures ---------------------------------------------------------------------------
STYLES = {"matched": "-", "epochs": "--"}


def _trend(interval, zero: float = 0.0) -> str:
    low, high = interval.ci()
    if np.isfinite(low) and low > zero:
        return "rises"
    if np.isfinite(high) and high < -zero:
        return "falls"
    return "no clear trend"


def _target(frame: pd.DataFrame) -> float:
    matched = frame[frame["budget"] == "matched"]
    return float(matched["stop_train_loss"].iloc[0]) if len(matched) else float("nan")


def _mark_counts(ax, frame: pd.DataFrame, everything: pd.DataFrame, column: str) -> None:
    """Seeds per point of the matched lines where fewer than all reached the target
    (written next to the point) and an × on the x axis for a batch size whose matched
    runs never reached it."""
    planned = everything.groupby(["lr_policy", "batch_size"])["seed"].nunique()
    arm = everything[everything["budget"] == "matched"]
    for color, policy in zip(("C0", "C1"), ("fixed", "scaled")):
        part = frame[(frame["lr_policy"] == policy) & (frame["budget"] == "matched")]
        means = part.groupby("batch_size")[column].mean()
        counts = part.groupby("batch_size")["seed"].nunique()
        for b, value in means.items():
            if counts[b] < planned[(policy, b)]:
                ax.annotate(
                    f"n={counts[b]}",
                    (b, value),
                    textcoords="offset points",
                    xytext=(3, 4 if policy == "fixed" else -9),
                    fontsize=7,
                    color=color,
                )
        for b in sorted(arm.loc[arm["lr_policy"] == policy, "batch_size"].unique()):
            if b not in means.index:
                ax.plot(
                    b,
                    0.03,
                    marker="x",
                    color=color,
                    ms=7,
                    mew=2,
                    transform=ax.get_xaxis_transform(),
                )


def figures(results: ResultsFolder, out_dir: Path) -> list[Path]:
    fig.style()
    everything = _with_derived(results.summary(), _train_size(results))
    frame = everything[~everything["diverged"].astype(bool)]
    frame = frame[(frame["budget"] == "epochs") | frame["reached_target"]]
    if frame.empty:  # e.g. a --set that keeps only matched-budget runs that never got there
        return []
    n = fig.n_seeds(everything)
    target = _target(everything)
    grid_batches = sorted(everything["batch_size"].unique())
    matched = frame[frame["budget"] == "matched"]
    paths = []
    reached = f"{len(matched)} of {(everything['budget'] == 'matched').sum()} matched runs reached"
    count_note = (
        f"matched runs stop at train CE {target:g} ({reached}); "
        f"n = {n} seeds per point unless marked n=k (seeds that reached it); × on the axis: none did"
    )

    panels = [
        ("lambda_max", "top Hessian eigenvalue λ_max"),
        ("hessian_trace", "Hessian trace"),
        ("keskar_1e-3", "Keskar ε-sharpness (ε=1e-3)"),
        ("adaptive_sharpness", "adaptive sharpness (invariant)"),
    ]
    figure, axes = plt.subplots(1, len(panels), figsize=(3.8 * len(panels), 3.8))
    for ax, (column, title) in zip(axes, panels):
        _lines(ax, frame, column)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("batch size")
        ax.set_ylabel(title)
        _mark_counts(ax, frame, everything, column)
        _batch_ticks(ax, grid_batches)
    axes[0].legend(fontsize=7)
    taus = {
        policy: rank(matched[matched["lr_policy"] == policy], "batch_size", "lambda_max").interval
        for policy in ("fixed", "scaled")
    }
    said = "; ".join(
        f"{policy} lr: {_trend(t)} (τ(B, λ_max) = {t.estimate:+.2f})" for policy, t in taus.items()
    )
    figure.suptitle(
        f"At matched train loss, λ_max vs batch size — {said} (n = {n} seeds)\n"
        f"{fig.BAND_NOTE}; {count_note}",
        fontsize=8,
    )
    paths.append(fig.save(figure, out_dir, "sharpness_vs_batch"))

    figure, axes = plt.subplots(1, 3, figsize=(10, 3.4))
    for ax, (column, title) in zip(
        axes,
        [
            ("final_test_acc", "test accuracy"),
            ("gap_acc", "train − test accuracy"),
            ("steps", "optimizer steps taken"),
        ],
    ):
        _lines(ax, frame, column)
        ax.set_xscale("log")
        ax.set_title(title, fontsize=9)
        ax.set_ylabel(title)
        ax.set_xlabel("batch size")
        _mark_counts(ax, frame, everything, column)
        _batch_ticks(ax, grid_batches)
    axes[2].set_yscale("log")
    axes[0].legend(fontsize=7)
    gap_fixed = rank(matched[matched["lr_policy"] == "fixed"], "batch_size", "gap_acc").interval
    gap_scaled = rank(matched[matched["lr_policy"] == "scaled"], "batch_size", "gap_acc").interval
    figure.suptitle(
        f"At matched train loss the gap vs batch size: fixed lr {_trend(gap_fixed)} "
        f"(τ = {gap_fixed.estimate:+.2f}), scaled lr {_trend(gap_scaled)} "
        f"(τ = {gap_scaled.estimate:+.2f}) (n = {n} seeds)\n{fig.BAND_NOTE}; {count_note}",
        fontsize=8,
    )
    paths.append(fig.save(figure, out_dir, "generalization_vs_batch"))

    if len(matched) > 2:
        figure, ax = plt.subplots(figsize=(5.2, 3.9))
        for policy, marker in (("fixed", "o"), ("scaled", "^")):
            part = matched[matched["lr_policy"] == policy]
            points = ax.scatter(
                part["lambda_max"],
                part["gap_loss"],
                c=np.log2(part["batch_size"]),
                cmap="viridis",
                vmin=np.log2(everything["batch_size"].min()),
                vmax=np.log2(everything["batch_size"].max()),
                s=16,
                marker=marker,
                label=f"{policy} lr",
            )
        bar = figure.colorbar(points, ax=ax)
        bar.set_label("batch size")
        bar.set_ticks(np.log2(grid_batches))
        bar.set_ticklabels([str(b) for b in grid_batches])
        primary = rank(matched, "lambda_max", "gap_loss", levels="batch_size").interval
        low, high = primary.ci()
        ax.set_xscale("log")
        lo, hi = matched["lambda_max"].min(), matched["lambda_max"].max()
        nice = [v * 10.0**e for e in range(-2, 4) for v in (1, 2, 3, 5, 7)]
        ticks = [t for t in nice if lo / 1.05 <= t <= hi * 1.05] or [lo, hi]
        ax.xaxis.set_major_locator(mticker.FixedLocator(ticks))
        ax.xaxis.set_major_formatter(mticker.FormatStrFormatter("%g"))
        ax.xaxis.set_minor_formatter(mticker.NullFormatter())
        ax.set_xlabel("top Hessian eigenvalue λ_max (log scale)")
        ax.set_ylabel("test CE − train CE (nats)")
        ax.legend(fontsize=7)
        if np.isfinite(low) and low > 0.1:
            said = "sharper minima have larger gaps"
        elif np.isfinite(high) and high < 0.1:
            said = "sharpness does not rank the gap (τ < 0.1)"
        else:
            said = "sharpness ranks the gap weakly, if at all"
        ax.set_title(
            f"At matched train loss {said}:\n"
            f"mean per-seed Kendall τ = {primary.estimate:.2f} [{low:.2f}, {high:.2f}]\n"
            f"({len(matched)} runs at train CE {target:g}, n = {primary.n} seeds)",
            fontsize=8,
        )
        paths.append(fig.save(figure, out_dir, "gap_vs_sharpness"))

    # Landscapes at matched train loss, per policy and direction, every batch size that
    # reached the target (unreached runs sit at other losses).
    slices = results.table("slices")
    slices = slices[slices["run_id"].isin(matched["run_id"])]
    if not slices.empty:
        if "direction" not in slices:  # folders measured before the top-eigenvector slice
            slices = slices.assign(direction=RANDOM_DIRECTION)
        directions = [
            d for d in (TOP_DIRECTION, RANDOM_DIRECTION) if (slices["direction"] == d).any()
        ]
        agreement = _slice_agreement(slices, matched)
        figure, axes = plt.subplots(
            len(directions), 2, figsize=(8.5, 3.2 * len(directions)), squeeze=False
        )
        for row, direction in enumerate(directions):
            for ax, policy in zip(axes[row], ("fixed", "scaled")):
                part = slices[(slices["lr_policy"] == policy) & (slices["direction"] == direction)]
                if part.empty:
                    ax.set_visible(False)
                    continue
                part = part.copy()
                counts = part.groupby("batch_size")["seed"].nunique()
                labels = {b: f"B = {b} (n = {counts[b]})" for b in sorted(counts.index)}
                part["batch"] = pd.Categorical(
                    part["batch_size"].map(labels), categories=list(labels.values()), ordered=True
                )
                part = part.sort_values(["batch_size", "alpha"])
                fig.band(ax, part, "alpha", "loss", hue="batch")
                ax.set_xlabel(
                    "α (unit-norm top eigenvector)"
                    if direction == TOP_DIRECTION
                    else "α (random filter-normalized direction)"
                )
                ax.set_ylabel("train loss (1,000 examples)")
                ax.set_title(f"{policy} lr, {direction}", fontsize=9)
                ax.legend(fontsize=6)
        figure.suptitle(
            f"1-D slices at train CE {target:g} (n = {n} seeds; n per curve in the legend): "
            f"{agreement}.\nThe top-eigenvector slice's curvature is λ_max; a random "
            "filter-normalized direction averages the curvature over all directions, scaled "
            "by each filter's norm (trace-like),\nso it need not order batch sizes as λ_max "
            "does. Curvature = (L(0.1) + L(−0.1) − 2L(0)) / 0.1², Kendall τ across all runs.",
            fontsize=8,
        )
        paths.append(fig.save(figure, out_dir, "slices_1d"))

    contours = results.table("contours")
    contours = contours[contours["run_id"].isin(matched["run_id"])]
    if not contours.empty:
        policies = [p for p in ("fixed", "scaled") if (contours["lr_policy"] == p).any()]
        levels = np.linspace(0, float(np.quantile(contours["loss"], 0.95)), 15)
        figure, axes = plt.subplots(
            len(policies),
            2,
            figsize=(7.5, 3.2 * len(policies)),
            squeeze=False,
            layout="constrained",
        )
        for row, policy in enumerate(policies):
            part = contours[contours["lr_policy"] == policy]
            for ax, b in zip(axes[row], (part["batch_size"].min(), part["batch_size"].max())):
                shown = fig.contour(ax, part[part["batch_size"] == b], levels)
                ax.set_title(f"{policy} lr, B = {b} (seed 0)")
        figure.colorbar(shown, ax=axes, label="train loss (1,000 examples)")
        figure.suptitle(
            f"2-D filter-normalized loss surfaces at train CE {target:g}: random directions show "
            "little of the λ_max differences\n(smallest and largest batch size, one run per "
            "panel: seed 0, n = 1 seed)",
            fontsize=9,
        )
        paths.append(fig.save(figure, out_dir, "contours_2d"))

    noise_cols = [f"grad_var_b{b}" for b in NOISE_BATCHES]
    long = frame.melt(id_vars=["run_id", "seed"], value_vars=noise_cols, value_name="variance")
    long["B"] = long["variable"].str.removeprefix("grad_var_b").astype(int)
    figure, ax = plt.subplots(figsize=(4.2, 3.2))
    fig.band(ax, long, "B", "variance", label="measured (all runs)")
    reference = long.groupby("B")["variance"].mean()
    ax.plot(
        reference.index,
        reference.iloc[0] * reference.index[0] / reference.index,
        "k:",
        label="∝ 1/B",
    )
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("minibatch size B")
    ax.set_ylabel("E‖g_B − g‖²")
    ax.legend()
    derived = _with_derived(results.summary(), _train_size(results))
    slope = per_seed(derived.groupby("seed")["grad_var_slope"].mean())
    ax.set_title(
        f"Minibatch gradient variance falls as B^{slope.interval.estimate:.2f}\n"
        f"(≈ 1/B; finite-population-corrected log-log slope, n = {n} seeds)",
        fontsize=9,
    )
    paths.append(fig.save(figure, out_dir, "gradient_noise"))
    return paths


def _slice_curvature(slices: pd.DataFrame, alpha: float = 0.1) -> pd.Series:
    """(L(α) + L(−α) − 2 L(0)) / α² per run and direction: the slice's curvature at 0."""
    at = lambda a: slices[np.isclose(slices["alpha"], a)].set_index(["direction", "run_id"])["loss"]
    return (at(alpha) + at(-alpha) - 2 * at(0.0)) / alpha**2


def _slice_agreement(slices: pd.DataFrame, matched: pd.DataFrame) -> str:
    curvature = _slice_curvature(slices).rename("curvature").reset_index()
    joined = curvature.merge(matched[["run_id", "lambda_max", "hessian_trace"]], on="run_id")
    tau = {}
    for direction in (TOP_DIRECTION, RANDOM_DIRECTION):
        part = joined[joined["direction"] == direction]
        if len(part) >= 3:
            tau[direction] = kendalltau(part["curvature"], part["lambda_max"]).statistic
            tau["trace"] = kendalltau(part["curvature"], part["hessian_trace"]).statistic
    if len(tau) < 3:
        return "too few runs to compare slice curvature with λ_max"
    top, random = tau[TOP_DIRECTION], tau[RANDOM_DIRECTION]
    how = "much less" if top - random > 0.2 else "about as well"
    return (
        f"top-eigenvector slices rank runs like λ_max (τ = {top:.2f}), random "
        f"filter-normalized ones {how} (τ = {random:.2f}; with the trace {tau['trace']:.2f})"
    )


def _batch_ticks(ax, batches) -> None:
    ax.xaxis.set_major_locator(mticker.FixedLocator(batches))
    ax.xaxis.set_major_formatter(mticker.FormatStrFormatter("%d"))
    ax.xaxis.set_minor_locator(mticker.NullLocator())


def _lines(ax, frame: pd.DataFrame, column: str) -> None:
    for color, policy in zip(("C0", "C1"), ("fixed", "scaled")):
        for budget, style in STYLES.items():
            part = frame[(frame["lr_policy"] == policy) & (frame["budget"] == budget)]
            if part.empty:
                continue
            fig.band(
                ax,
                part,
                "batch_size",
                column,
                color=color,
                ls=style,
                label=f"{policy} lr, {budget}",
            )
