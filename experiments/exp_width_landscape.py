"""Width and the loss landscape: test error, sharpness, seed spread and barriers (C19, C16).

Command: ``toolkit run exp_width_landscape --seeds 10``

One-hidden-layer MLPs 40-h-10 with h = 8 … 1024 on MNIST-1D, clean labels and 15%
of training labels resampled uniformly (the MNIST-1D authors saw a double-descent
peak with noise). SGD + momentum 0.9, lr 0.05, batch 100, 100 epochs (4,000 steps),
no regularization and no early stopping (double descent needs neither). One hidden
layer keeps the widest net at 51k parameters, so the sweep fits a laptop; the
authors' sweep used two hidden layers and 500 epochs (their notebook, 11–13 min of
CPU per seed).

Per run (final parameters, dropout off, 1,000 training examples with the run's own
training labels): top Hessian eigenvalue (Lanczos, 20 iterations), the
rescaling-invariant top eigenvalue of diag|θ|·H·diag|θ| and adaptive sharpness
(|δᵢ| ≤ 5e-3·|θᵢ|, 10 ascent steps). Per disjoint seed pair (0–1, 2–3, …) of the same
width and noise: the loss and test-error barrier on the straight line between the two
solutions (25 points; barrier = max along the path − mean of the endpoints). Per
width: a filter-normalized 2-D slice of seed 0.

Cost: default profile (8 widths × 2 noise levels × 10 seeds = 160 runs, 8 cohorts)
≈ 3 minutes on a 2-core CPU; seconds on a GPU.

Expected (science notes; Nakkiran 2019, Li 2018, Ainsworth 2023): test error falls with
width overall, with a bump near the interpolation threshold under label noise; seed
spread of the final training loss shrinks with width; raw λ_max under standard
parameterization may even grow with width, while invariant sharpness and barriers fall.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from scipy.stats import spearmanr

from toolkit import figures as fig
from toolkit import measures as M
from toolkit import models
from toolkit.engine import per_example_loss
from toolkit.results import ResultsFolder
from toolkit.spec import RunConfig
from toolkit.stats import seed_bootstrap_statistic, spearman_over_seeds, verdict_row

CLAIMS = ("C19", "C16")
#: The figure the claims report links for each claim.
CLAIM_FIGURES = {"C19": "width_sweep", "C16": "seed_spread"}
CURVATURE_EXAMPLES = 1000
PATH_POINTS = np.linspace(0.0, 1.0, 25)
CONTOUR_ALPHAS = np.linspace(-1.0, 1.0, 21)


@dataclass(frozen=True)
class Config(RunConfig):
    # scientific: the factors under study
    widths: tuple[int, ...] = (64,)  # one hidden layer of this width
    label_noise: float = 0.0
    # fixed: the protocol
    optimizer: str = "sgd"
    learning_rate: float = 0.05
    momentum: float = 0.9
    batch_size: int = 100
    epochs: int = 100
    history_points: int = 50


WIDTHS = [8, 16, 32, 64, 128, 256, 512, 1024]
GRID = {"widths": [(w,) for w in WIDTHS], "label_noise": [0.0, 0.15]}

PROFILES = {
    "quick": {
        "seeds": 2,
        "epochs": 2,
        "grid": {"widths": [(8,), (32,)], "label_noise": [0.0, 0.15]},
    },
    "default": {"seeds": 10},
    "paper": {"seeds": 20, "epochs": 500},
}


@functools.cache
def _measure_fns(width: int, num_classes: int, activation: str, loss_kind: str):
    """Measurement functions built once per width (one compiled program per width)."""
    model = models.build("mlp", (width,), num_classes, activation)

    def loss(params, x, y):
        return per_example_loss(loss_kind, model.apply(params, x), y).mean()

    def loss_and_error(params, x, y):
        logits = model.apply(params, x)
        error = jnp.mean(jnp.argmax(logits, -1) != y)
        return jnp.stack([per_example_loss(loss_kind, logits, y).mean(), error])

    def per_run(params, labels, key, x):
        y = labels[: x.shape[0]]
        k1, k2 = jax.random.split(key)
        top, _ = M.lanczos_eigs(loss, params, x, y, k1, num_iters=20, k=1)
        return {
            "lambda_max": top[0],
            "adaptive_lambda_max": M.adaptive_top_eig(loss, params, x, y, k2, num_iters=20),
            "adaptive_sharpness": M.adaptive_sharpness(loss, params, x, y, eps=5e-3, steps=10),
        }

    def path(params_a, params_b, labels_a, x, x_test, y_test):
        y = labels_a[: x.shape[0]]
        train = M.interpolate(loss, params_a, params_b, x, y, PATH_POINTS)
        test = M.interpolate(loss_and_error, params_a, params_b, x_test, y_test, PATH_POINTS)
        return {"train_loss": train, "test_error": test[:, 1]}

    def contour(params, labels, key, x):
        y = labels[: x.shape[0]]
        k1, k2 = jax.random.split(key)
        d1 = M.filter_normalized_direction(params, k1)
        d2 = M.filter_normalized_direction(params, k2)
        return M.slice_2d(loss, params, x, y, d1, d2, CONTOUR_ALPHAS, CONTOUR_ALPHAS)

    return per_run, path, contour


def measure(trained) -> dict:
    spec, data = trained.cohort.spec, trained.cohort.data
    per_run, path, contour = _measure_fns(
        spec.widths[0], data.num_classes, spec.activation, spec.loss
    )
    state, runs = trained.result.state, trained.runs
    params, labels = state["params"], state["labels"]
    x_sub = jnp.asarray(data.x_train[:CURVATURE_EXAMPLES])
    x_test, y_test = jnp.asarray(data.x_test[:3000]), jnp.asarray(data.y_test[:3000])
    keys = trained.run_keys(20261)  # from each run's seed, not its place in the cohort
    values = trained.map(per_run, (params, labels, keys), (x_sub,))

    # disjoint pairs of seeds (0-1, 2-3, ...) within each noise level
    pairs = trained.seed_pairs(disjoint=True)
    pair_rows, path_rows = [], []
    if pairs:
        a, b = (np.array(side) for side in zip(*pairs))
        take = lambda tree, idx: jax.tree_util.tree_map(lambda leaf: leaf[idx], tree)
        curves = trained.map(
            path, (take(params, a), take(params, b), labels[a]), (x_sub, x_test, y_test)
        )
        for p, (ra, rb) in enumerate(pairs):
            loss_curve, error_curve = curves["train_loss"][p], curves["test_error"][p]
            pair_rows.append(
                trained.row(
                    ra,
                    pair=runs[ra].seed // 2,
                    partner=runs[rb].run_id,
                    barrier_loss=float(M.barrier(loss_curve)),
                    barrier_error=float(M.barrier(error_curve)),
                )
            )
            for t, lv, ev in zip(PATH_POINTS, loss_curve, error_curve):
                path_rows.append(
                    trained.row(ra, t=float(t), train_loss=float(lv), test_error=float(ev))
                )
    first = np.array([r for r, run in enumerate(runs) if run.seed == 0], dtype=int)
    contour_rows = []
    if len(first):
        take = lambda tree: jax.tree_util.tree_map(lambda leaf: leaf[first], tree)
        grids = trained.map(contour, (take(params), labels[first], keys[first]), (x_sub,))
        contour_rows = trained.grid_rows(first, grids, CONTOUR_ALPHAS, CONTOUR_ALPHAS)
    return {
        **values,
        "pairs": pd.DataFrame(pair_rows),
        "paths": pd.DataFrame(path_rows),
        "contours": pd.DataFrame(contour_rows),
    }


def _frame(results: ResultsFolder) -> pd.DataFrame:
    frame = results.summary()
    frame["width"] = frame["widths"].astype(int)
    frame["log_width"] = np.log(frame["width"])
    frame["test_error"] = 1.0 - frame["final_test_acc"]
    return frame[~frame["diverged"].astype(bool)]


def _condition(noise: float) -> str:
    return "clean labels" if noise == 0 else f"{noise:.0%} label noise"


def analyze(results: ResultsFolder) -> list[dict]:
    frame = _frame(results)
    pairs = results.table("pairs")
    rows: list[dict] = []
    for noise, part in frame.groupby("label_noise"):
        condition = _condition(noise)
        n = part["seed"].nunique()
        by_width = part.groupby("width")["test_error"].mean()
        peak = int(by_width.idxmax())
        bump = _bump(by_width)
        rho, low, high = spearman_over_seeds(part, "log_width", "final_test_acc")
        rows.append(
            verdict_row(
                "C19",
                "Wider networks generalize better (test accuracy rises with width)",
                "Spearman ρ(log width, test accuracy)",
                rho,
                low,
                high,
                n,
                "greater",
                f"Test error {by_width.iloc[0]:.1%} at h={by_width.index[0]} → "
                f"{by_width.iloc[-1]:.1%} at h={by_width.index[-1]}; worst at h={peak}"
                + (
                    f"; a double-descent bump of {bump:.1%} after the first minimum."
                    if bump > 0
                    else "."
                ),
                condition=condition,
            )
        )
        for column, name in (
            ("adaptive_lambda_max", "invariant top eigenvalue (diag|θ| H diag|θ|)"),
            ("lambda_max", "raw top Hessian eigenvalue"),
        ):
            rho, low, high = spearman_over_seeds(part, "log_width", column)
            means = part.groupby("width")[column].mean()
            rows.append(
                verdict_row(
                    "C19",
                    f"Wider networks sit in flatter minima ({name} falls with width)",
                    f"Spearman ρ(log width, {column})",
                    rho,
                    low,
                    high,
                    n,
                    "less",
                    f"{name}: {means.iloc[0]:.3g} at h={means.index[0]} → {means.iloc[-1]:.3g} "
                    f"at h={means.index[-1]}; ρ = {rho:.2f} [{low:.2f}, {high:.2f}].",
                    condition=condition,
                )
            )
        if not pairs.empty:
            part_pairs = pairs[pairs["label_noise"] == noise].copy()
            part_pairs["log_width"] = np.log(part_pairs["widths"].astype(int))
            rho, low, high = spearman_over_seeds(part_pairs, "log_width", "barrier_loss", "pair")
            means = part_pairs.groupby(part_pairs["widths"].astype(int))["barrier_loss"].mean()
            rows.append(
                verdict_row(
                    "C19",
                    "Interpolation barriers between seeds fall with width",
                    "Spearman ρ(log width, loss barrier), seed pairs",
                    rho,
                    low,
                    high,
                    part_pairs["pair"].nunique(),
                    "less",
                    f"Train-loss barrier {means.iloc[0]:.3f} at h={means.index[0]} → "
                    f"{means.iloc[-1]:.3f} at h={means.index[-1]} (unaligned; "
                    f"{part_pairs['pair'].nunique()} disjoint pairs).",
                    condition=condition,
                )
            )
        rho, low, high = seed_bootstrap_statistic(part, "seed", _spread_trend)
        spread = part.groupby("width")["final_train_loss"].std()
        rows.append(
            verdict_row(
                "C16",
                "Final losses across seeds cluster tightly, and their spread shrinks with width",
                "Spearman ρ(log width, across-seed SD of final train loss)",
                rho,
                low,
                high,
                n,
                "less",
                f"Across-seed SD of final train loss {spread.iloc[0]:.2g} at h={spread.index[0]} → "
                f"{spread.iloc[-1]:.2g} at h={spread.index[-1]} (mean loss "
                f"{part.groupby('width')['final_train_loss'].mean().iloc[-1]:.2g}).",
                condition=condition,
                n_resamples=2000,
            )
        )
    return rows


def _spread_trend(frame: pd.DataFrame) -> float:
    spread = frame.groupby("width")["final_train_loss"].std(ddof=0)
    if np.ptp(spread.to_numpy()) == 0:  # a resample of one seed: no spread to rank
        return float("nan")
    return float(spearmanr(np.log(spread.index), spread.to_numpy()).statistic)


def _bump(error_by_width: pd.Series) -> float:
    """Largest rise of test error after its first local minimum (0 when monotone)."""
    values = error_by_width.to_numpy()
    for i in range(1, len(values)):
        if values[i] > values[i - 1]:
            return float(values[i:].max() - values[i - 1])
    return 0.0


def figures(results: ResultsFolder, out_dir: Path) -> list[Path]:
    fig.style()
    frame = _frame(results)
    frame["labels"] = frame["label_noise"].map(_condition)
    n = fig.n_seeds(frame)
    paths = []
    panels = [
        ("test_error", "test error", False),
        ("final_train_loss", "final train loss", True),
        ("lambda_max", "raw top eigenvalue", True),
        ("adaptive_lambda_max", "invariant top eigenvalue", True),
    ]
    figure, axes = plt.subplots(1, len(panels), figsize=(3.2 * len(panels), 3.2))
    for ax, (column, title, log_y) in zip(axes, panels):
        fig.band(ax, frame, "width", column, hue="labels")
        ax.set_xscale("log", base=2)
        if log_y:
            ax.set_yscale("log")
        ax.set_title(title)
        ax.set_xlabel("hidden width h")
    axes[0].legend()
    figure.suptitle(f"MLP 40-h-10 on MNIST-1D vs width ({fig.BAND_NOTE}, n = {n})", fontsize=10)
    paths.append(fig.save(figure, out_dir, "width_sweep"))

    spread = (
        frame.groupby(["labels", "width"])["final_train_loss"].agg(["std", "mean"]).reset_index()
    )
    figure, ax = plt.subplots(figsize=(4.2, 3.2))
    for labels, part in spread.groupby("labels"):
        ax.plot(part["width"], part["std"], marker="o", label=labels)
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("hidden width h")
    ax.set_ylabel("across-seed SD of final train loss")
    ax.set_title(f"Seed-to-seed spread (n = {n} seeds per width)")
    ax.legend()
    paths.append(fig.save(figure, out_dir, "seed_spread"))

    paths_table = results.table("paths")
    if not paths_table.empty:
        paths_table["width"] = paths_table["widths"].astype(int)
        paths_table["labels"] = paths_table["label_noise"].map(_condition)
        shown = sorted(paths_table["width"].unique())
        shown = [shown[0], shown[len(shown) // 2], shown[-1]]
        figure, axes = plt.subplots(1, 2, figsize=(8, 3.2))
        clean = paths_table[paths_table["label_noise"] == 0]
        clean = clean[clean["width"].isin(shown)]  # "seed" is the pair's first seed
        for ax, column in zip(axes, ("train_loss", "test_error")):
            fig.band(ax, clean, "t", column, hue="width", label_format="h = {}")
            ax.set_xlabel("t  ((1−t)·θ_a + t·θ_b)")
            ax.set_title(column.replace("_", " "))
        axes[0].legend()
        figure.suptitle(
            "Linear interpolation between two seeds, clean labels (mean ± 95% CI over seed pairs)",
            fontsize=10,
        )
        paths.append(fig.save(figure, out_dir, "interpolation"))

    contours = results.table("contours")
    if not contours.empty:
        part = contours[contours["label_noise"] == 0].copy()
        part["width"] = part["widths"].astype(int)
        widths = [part["width"].min(), part["width"].max()]
        levels = np.linspace(0, float(np.quantile(part["loss"], 0.95)), 15)
        figure, axes = plt.subplots(1, 2, figsize=(8, 3.5), layout="constrained")
        for ax, width in zip(axes, widths):
            shown = fig.contour(ax, part[part["width"] == width], levels)
            ax.set_title(f"h = {width} (seed 0, clean labels)")
        figure.colorbar(shown, ax=axes, label="train loss")
        figure.suptitle("2-D filter-normalized loss surface", fontsize=10)
        paths.append(fig.save(figure, out_dir, "contours_2d"))
    return paths
