"""Batch size, sharp and flat minima, and generalization on MNIST-1D (C18, C08).

Command: ``toolkit run exp_sharp_flat --seeds 10``

An MLP 40-100-100-10 (15k parameters) is trained with SGD + heavy-ball momentum 0.9
(the noise-scale theory is for SGD) at batch sizes 16 … 4,000 (the full training set;
Keskar's "large batch" is 10% of the data), under two learning-rate policies:
``fixed`` (lr 0.02 for every batch size) and ``scaled`` (lr = 0.02·B/64, constant
lr/B noise scale, the linear scaling rule). Two budgets:

- ``epochs``: 40 epochs for every run (steps = 40·⌈4000/B⌉: 10,000 at B=16, 40 at B=4000);
- ``matched``: each run stops when its full-train cross-entropy first reaches 0.1
  (checked at every evaluation; Jiang et al. 2020 compared at matched loss) with a cap
  of max(60 epochs, 800 steps) (the paper profile: 5,000 steps). The cross-entropy Hessian shrinks as the loss goes
  to zero, so only runs stopped at the same loss have comparable curvature. Runs that
  do not reach the target are reported and left out of the matched comparisons.

Measured per run on its final parameters (dropout off), on a fixed subset of the
first 1,000 training examples: top Hessian eigenvalue (Lanczos, 20 iterations),
trace (Hutchinson, 20 Rademacher probes, with its standard error), Keskar
ε-sharpness (ε = 1e-3 and 5e-4; projected sign-gradient ascent, 10 steps, instead of
Keskar's 10 L-BFGS-B iterations), the rescaling-invariant adaptive sharpness
(box |δᵢ| ≤ 5e-3·|θᵢ|) and top eigenvalue of diag|θ|·H·diag|θ|, the same after a
function-preserving rescaling of the first hidden layer (×4, next ×¼), the minibatch
gradient variance at B = 16, 64, 256, 1024 on the full training set (C08), and a
filter-normalized 1-D slice (2-D for seed 0).

Cost: default profile (5 batch sizes × 2 policies × 2 budgets × 10 seeds = 200 runs,
10 cohorts) ≈ 4–5 minutes on a 2-core CPU (measured time in the README); a minute on
one GPU. Quick profile: seconds.

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
from typing import ClassVar

import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from toolkit import figures as fig
from toolkit import measures as M
from toolkit import models
from toolkit.data import steps_per_epoch
from toolkit.engine import CohortSpec, per_example_loss
from toolkit.results import ResultsFolder
from toolkit.spec import RunConfig
from toolkit.stats import seed_verdict, spearman_over_seeds, verdict_row

CLAIMS = ("C18", "C08")
#: The figure the claims report links for each claim.
CLAIM_FIGURES = {"C18": "sharpness_vs_batch", "C08": "gradient_noise"}
CURVATURE_EXAMPLES = 1000
NOISE_BATCHES = (16, 64, 256, 1024)
SLICE_ALPHAS = np.linspace(-1.0, 1.0, 41)
CONTOUR_ALPHAS = np.linspace(-1.0, 1.0, 21)
RESCALE = 4.0


@dataclass(frozen=True)
class Config(RunConfig):
    # scientific: the factors under study
    batch_size: int = 64
    lr_policy: str = "fixed"  # "fixed": base_lr for all B; "scaled": base_lr · B / reference_batch
    budget: str = "epochs"  # "epochs": budget_epochs for all; "matched": stop at target_train_loss
    # fixed: the protocol
    base_lr: float = 0.02
    reference_batch: int = 64
    budget_epochs: int = 40
    target_train_loss: float = 0.1
    matched_min_epochs: int = 60  # matched budget cap: max(min epochs, max steps)
    matched_max_steps: int = 800
    widths: tuple[int, ...] = (100, 100)
    optimizer: str = "sgd"
    momentum: float = 0.9
    history_points: int = 50

    DERIVED: ClassVar[dict[str, str]] = {
        "learning_rate": "set base_lr, lr_policy or reference_batch instead",
        "epochs": "set budget_epochs, matched_min_epochs or matched_max_steps instead",
        "stop_train_loss": "set budget or target_train_loss instead",
    }

    def run_epochs(self) -> int:
        if self.budget == "epochs":
            return self.budget_epochs
        per_epoch = steps_per_epoch(4000, self.batch_size)
        epochs = max(self.matched_min_epochs, math.ceil(self.matched_max_steps / per_epoch))
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
    "budget": ["epochs", "matched"],
    "lr_policy": ["fixed", "scaled"],
    "batch_size": [16, 64, 256, 1024, 4000],
}

PROFILES = {
    "quick": {
        "seeds": 2,
        "budget_epochs": 2,
        "matched_min_epochs": 2,
        "matched_max_steps": 2,  # every quick run has 2 epochs: one cohort
        "target_train_loss": 2.0,
        "widths": (16,),
        "grid": {
            "budget": ["epochs", "matched"],
            "lr_policy": ["fixed"],
            "batch_size": [100, 4000],
        },
    },
    "default": {"seeds": 10},
    "paper": {"seeds": 20, "matched_min_epochs": 100, "matched_max_steps": 5000},
}


# ----- measurements (vmapped over the runs of a cohort) ---------------------------------
@functools.cache
def _measure_fns(model_kind: str, widths: tuple, num_classes: int, activation: str, loss_kind: str):
    """Per-run measurement functions, built once per architecture so every cohort of
    the same architecture reuses one compiled program."""
    model = models.build(model_kind, widths, num_classes, activation)

    def loss(params, x, y):  # eval mode: no dropout
        return per_example_loss(loss_kind, model.apply(params, x), y).mean()

    def per_run(params, key, x, y, xf, yf):
        keys = jax.random.split(key, 8)
        top, smallest = M.lanczos_eigs(loss, params, x, y, keys[0], num_iters=20, k=1)
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
    # The same probe keys for run r of every cohort: differences are not probe noise.
    keys = jax.random.split(jax.random.key(20260), len(runs))
    values = trained.map(per_run, (params, keys), (x_sub, y_sub, x_full, y_full))
    slices = values.pop("slice")

    slice_rows = [
        trained.row(r, alpha=float(a), loss=float(v))
        for r in range(len(runs))
        for a, v in zip(SLICE_ALPHAS, slices[r])
    ]
    contour_rows = []
    first = np.array([r for r, run in enumerate(runs) if run.seed == 0], dtype=int)
    if len(first):
        picked = jax.tree_util.tree_map(lambda a: a[first], params)
        grids = trained.map(contour, (picked, keys[first]), (x_sub, y_sub))
        contour_rows = trained.grid_rows(first, grids, CONTOUR_ALPHAS, CONTOUR_ALPHAS)
    return {**values, "slices": pd.DataFrame(slice_rows), "contours": pd.DataFrame(contour_rows)}


# ----- analysis --------------------------------------------------------------------------
def _with_derived(summary: pd.DataFrame) -> pd.DataFrame:
    frame = summary.copy()
    frame["gap_acc"] = frame["final_train_acc"] - frame["final_test_acc"]
    frame["gap_loss"] = frame["final_test_loss"] - frame["final_train_loss"]
    frame["log_batch"] = np.log(frame["batch_size"])
    frame["reached_target"] = frame["stopped_epoch"] >= 0
    noise = np.array([frame[f"grad_var_b{b}"] for b in NOISE_BATCHES]).T
    n = 4000
    corrected = noise * (n - 1) / (n - np.array(NOISE_BATCHES))  # finite-population factor
    logb = np.log(np.array(NOISE_BATCHES, float))
    frame["grad_var_slope"] = [np.polyfit(logb, np.log(row), 1)[0] for row in corrected]
    return frame


def usable(frame: pd.DataFrame, budget: str) -> pd.DataFrame:
    """Runs of one budget arm that count: not diverged, and at target for ``matched``."""
    part = frame[(frame["budget"] == budget) & ~frame["diverged"].astype(bool)]
    if budget == "matched":
        part = part[part["reached_target"]]
    return part


def analyze(results: ResultsFolder) -> list[dict]:
    frame = _with_derived(results.summary())
    rows: list[dict] = []
    for budget in ("matched", "epochs"):
        for policy in ("fixed", "scaled"):
            part = usable(frame[frame["lr_policy"] == policy], budget)
            condition = f"{budget} budget, {policy} lr"
            dropped = int(
                ((frame["budget"] == budget) & (frame["lr_policy"] == policy)).sum()
            ) - len(part)
            note = f" ({dropped} runs diverged or missed the target, left out)" if dropped else ""
            if part["batch_size"].nunique() < 2:
                continue
            measures = [("lambda_max", "top Hessian eigenvalue")]
            if budget == "matched" and policy == "fixed":
                measures += [
                    ("hessian_trace", "Hessian trace"),
                    ("keskar_1e-3", "Keskar ε-sharpness (1e-3)"),
                    ("adaptive_sharpness", "adaptive (rescaling-invariant) sharpness"),
                ]
            for column, name in measures:
                rho, low, high = spearman_over_seeds(part, "log_batch", column)
                ratio = _ratio(part, column)
                rows.append(
                    verdict_row(
                        "C18",
                        f"Larger batches end in sharper minima ({name} rises with batch size)",
                        f"Spearman ρ(log B, {column})",
                        rho,
                        low,
                        high,
                        part["seed"].nunique(),
                        "greater",
                        f"{name}: ρ = {rho:.2f} [{low:.2f}, {high:.2f}]; largest/smallest batch "
                        f"mean ratio {ratio:.2g}{note}.",
                        condition=condition,
                    )
                )
            rho, low, high = spearman_over_seeds(part, "log_batch", "gap_acc")
            rows.append(
                verdict_row(
                    "C18",
                    "Larger batches generalize worse (train−test accuracy gap rises with batch size)",
                    "Spearman ρ(log B, train acc − test acc)",
                    rho,
                    low,
                    high,
                    part["seed"].nunique(),
                    "greater",
                    f"Gap vs batch: ρ = {rho:.2f} [{low:.2f}, {high:.2f}]; test accuracy "
                    f"{_mean_at(part, 'final_test_acc', 'min'):.1%} at B={part['batch_size'].min()} vs "
                    f"{_mean_at(part, 'final_test_acc', 'max'):.1%} at B={part['batch_size'].max()}.",
                    condition=condition,
                )
            )
    matched = usable(frame, "matched")
    if len(matched) > 2:
        rho, low, high = spearman_over_seeds(matched, "lambda_max", "gap_acc")
        rows.append(
            verdict_row(
                "C18",
                "Sharpness correlates with the generalization gap across runs",
                "Spearman ρ(top eigenvalue, accuracy gap), matched loss, both policies",
                rho,
                low,
                high,
                matched["seed"].nunique(),
                "greater",
                f"Across {len(matched)} runs at matched train loss: ρ = {rho:.2f} [{low:.2f}, {high:.2f}].",
                condition="matched budget",
            )
        )
    if "rescaled_lambda_max" in frame:
        base = frame[frame["budget"] == "matched"]
        log_raw = np.log(base["rescaled_lambda_max"] / base["lambda_max"])
        log_adaptive = np.log(base["rescaled_adaptive_lambda_max"] / base["adaptive_lambda_max"])
        rows.append(
            seed_verdict(
                "C18",
                "Raw sharpness is not invariant to a function-preserving ReLU rescaling (×4 / ×¼)",
                "|log(λ_max rescaled / λ_max)|",
                np.abs(log_raw.groupby(base["seed"]).mean()),
                "greater",
                "Rescaling changed the raw top eigenvalue by a factor e^{estimate:.2f} "
                f"[e^{{low:.2f}}, e^{{high:.2f}}]; the adaptive one by at most "
                f"{float(np.abs(log_adaptive).max()):.1e} (log-ratio).".replace("{{", "{").replace(
                    "}}", "}"
                ),
                smallest_effect=0.1,
                condition="reparametrization caveat",
            )
        )
    slopes = frame.groupby("seed")["grad_var_slope"].mean()
    rows.append(
        seed_verdict(
            "C08",
            "Minibatch gradient variance falls as 1/B (log-log slope within ±0.15 of −1)",
            "slope of log variance vs log B, + 1",
            slopes + 1.0,
            "within",
            "Slope of log gradient variance (finite-population corrected) vs log B: "
            "−1 {estimate:+.3f} [{low:+.3f}, {high:+.3f}].",
            smallest_effect=0.15,
        )
    )
    return rows


def _ratio(part: pd.DataFrame, column: str) -> float:
    means = part.groupby("batch_size")[column].mean()
    return float(means.iloc[-1] / means.iloc[0]) if means.iloc[0] else float("nan")


def _mean_at(part: pd.DataFrame, column: str, which: str) -> float:
    b = part["batch_size"].min() if which == "min" else part["batch_size"].max()
    return float(part.loc[part["batch_size"] == b, column].mean())


# ----- figures ---------------------------------------------------------------------------
STYLES = {"matched": "-", "epochs": "--"}


def figures(results: ResultsFolder, out_dir: Path) -> list[Path]:
    fig.style()
    frame = _with_derived(results.summary())
    frame = frame[~frame["diverged"].astype(bool)]
    frame = frame[(frame["budget"] == "epochs") | frame["reached_target"]]
    n = fig.n_seeds(frame)
    paths = []

    panels = [
        ("lambda_max", "top Hessian eigenvalue"),
        ("hessian_trace", "Hessian trace"),
        ("keskar_1e-3", "Keskar ε-sharpness (ε=1e-3)"),
        ("adaptive_sharpness", "adaptive sharpness (invariant)"),
    ]
    figure, axes = plt.subplots(1, len(panels), figsize=(3.2 * len(panels), 3.2))
    for ax, (column, title) in zip(axes, panels):
        _lines(ax, frame, column)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_title(title)
        ax.set_xlabel("batch size")
    axes[0].legend(fontsize=7)
    figure.suptitle(f"Sharpness vs batch size ({fig.BAND_NOTE}, n = {n})", fontsize=10)
    paths.append(fig.save(figure, out_dir, "sharpness_vs_batch"))

    figure, axes = plt.subplots(1, 3, figsize=(10, 3.2))
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
        ax.set_title(title)
        ax.set_xlabel("batch size")
    axes[2].set_yscale("log")
    axes[0].legend(fontsize=7)
    figure.suptitle(f"Generalization vs batch size ({fig.BAND_NOTE}, n = {n})", fontsize=10)
    paths.append(fig.save(figure, out_dir, "generalization_vs_batch"))

    matched = frame[frame["budget"] == "matched"]
    if len(matched) > 2:
        figure, ax = plt.subplots(figsize=(4.4, 3.4))
        points = ax.scatter(
            matched["lambda_max"],
            matched["gap_acc"],
            c=np.log2(matched["batch_size"]),
            cmap="viridis",
            s=14,
            marker="o",
        )
        bar = figure.colorbar(points, ax=ax)
        bar.set_label("log₂ batch size")
        rho, low, high = spearman_over_seeds(matched, "lambda_max", "gap_acc")
        ax.set_xscale("log")
        ax.xaxis.set_minor_formatter(plt.NullFormatter())
        ax.set_xlabel("top Hessian eigenvalue")
        ax.set_ylabel("train − test accuracy")
        ax.set_title(f"At matched train loss: Spearman ρ = {rho:.2f} [{low:.2f}, {high:.2f}]")
        paths.append(fig.save(figure, out_dir, "gap_vs_sharpness"))

    # Landscapes at matched train loss, per policy: the smallest and the largest batch
    # size whose runs reached the target (unreached runs sit at other losses).
    slices = results.table("slices")
    slices = slices[slices["run_id"].isin(frame.loc[frame["budget"] == "matched", "run_id"])]
    if not slices.empty:
        figure, axes = plt.subplots(1, 2, figsize=(8, 3.2), sharey=True)
        for ax, policy in zip(axes, ("fixed", "scaled")):
            part = slices[slices["lr_policy"] == policy]
            if part.empty:
                continue
            ends = [part["batch_size"].min(), part["batch_size"].max()]
            chosen = part[part["batch_size"].isin(ends)].copy()
            chosen["batch"] = "B = " + chosen["batch_size"].astype(str)
            fig.band(ax, chosen, "alpha", "loss", hue="batch")
            ax.set_xlabel("α (filter-normalized direction)")
            ax.set_title(f"{policy} lr (n = {fig.n_seeds(chosen)} seeds)")
            ax.legend()
        axes[0].set_ylabel("train loss (1,000 examples)")
        figure.suptitle("1-D loss slices at matched train loss (runs that reached it)", fontsize=10)
        paths.append(fig.save(figure, out_dir, "slices_1d"))

    contours = results.table("contours")
    contours = contours[contours["run_id"].isin(frame.loc[frame["budget"] == "matched", "run_id"])]
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
        figure.suptitle("2-D filter-normalized loss surface at matched train loss", fontsize=10)
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
    ax.set_title(f"Minibatch gradient variance (n = {n} seeds)")
    paths.append(fig.save(figure, out_dir, "gradient_noise"))
    return paths


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
