"""Overfitting and memorization: real, noisy and random labels on MNIST-1D (C01, C02, C10, C11, C14).

Command: ``toolkit run exp_overfitting --seeds 10``

An MLP 40-256-256-10 (78k parameters) is trained with Adam (lr 1e-3, batch 100) for
80 epochs (3,200 steps) on the 4,000 MNIST-1D training examples with real labels,
with 20% of labels resampled uniformly, and with all labels random. The three
label conditions differ only in a number (``label_noise``), so all 30 runs of the
default profile are ONE compiled, vmapped program. Train / validation / test loss and
accuracy are evaluated on the full splits after every epoch (dropout is off for
every evaluation); early stopping keeps the epoch with the lowest validation loss.

Cost: default profile (10 seeds × 3 conditions, 96,000 run-steps) ≈ 2 minutes on a
2-core CPU; on one GPU seconds. Quick profile: seconds.

Expected (science notes; MNIST-1D notebooks, Zhang et al. 2017): at init loss ≈ ln 10
and accuracy ≈ 10%; the training loss falls towards zero in every condition; random
labels are memorized (train accuracy → 100%) with test accuracy at chance; with real
labels the validation *loss* turns up after ~15 epochs while validation *accuracy*
creeps up or stays flat — the loss rises from overconfidence, not from more
mistakes — so early stopping on validation loss saves the best loss, not
necessarily the best accuracy.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np

from toolkit import figures as fig
from toolkit.results import ResultsFolder
from toolkit.spec import RunConfig
from toolkit.stats import paired_difference, seed_verdict

CLAIMS = ("C01", "C02", "C10", "C11", "C14")
#: The figure the claims report links for each claim.
CLAIM_FIGURES = {
    "C01": "curves",
    "C02": "curves",
    "C10": "curves",
    "C11": "curves",
    "C14": "early_stopping",
}
NUM_CLASSES = 10
CONDITIONS = {0.0: "real labels", 0.2: "20% label noise", 1.0: "random labels"}


@dataclass(frozen=True)
class Config(RunConfig):
    # scientific: the factor under study
    label_noise: float = 0.0  # fraction of training labels resampled uniformly (1.0 = random)
    # fixed: the protocol
    dataset: str = "mnist1d"
    model: str = "mlp"
    widths: tuple[int, ...] = (256, 256)
    optimizer: str = "adam"
    learning_rate: float = 1e-3
    momentum: float = 0.9  # Adam's b1
    batch_size: int = 100
    epochs: int = 80


GRID = {"label_noise": [0.0, 0.2, 1.0]}

PROFILES = {
    "quick": {"seeds": 2, "epochs": 4, "widths": (32, 32), "grid": {"label_noise": [0.0, 1.0]}},
    "default": {"seeds": 10},
    "paper": {"seeds": 20, "epochs": 200, "widths": (512, 512)},
}


def _condition(noise: float) -> str:
    return CONDITIONS.get(float(noise), f"label noise {noise:g}")


def analyze(results: ResultsFolder) -> list[dict]:
    summary = results.summary()
    history = results.history()
    rows: list[dict] = []
    chance = 1.0 / NUM_CLASSES
    real = summary[summary["label_noise"] == 0.0].sort_values("seed")

    # C01: at init the network knows nothing.
    rows.append(
        seed_verdict(
            "C01",
            f"At init, test cross-entropy is within ±0.1 nats of ln K = {math.log(NUM_CLASSES):.3f}",
            "init test loss − ln K (nats)",
            real["init_test_loss"] - math.log(NUM_CLASSES),
            "within",
            "At init the test loss is ln K {estimate:+.3f} nats [{low:+.3f}, {high:+.3f}] "
            "across {n} seeds (tolerance ±0.1).",
            smallest_effect=0.1,
        )
    )
    rows.append(
        seed_verdict(
            "C01",
            "At init, test accuracy is within ±2 pp of chance 1/K",
            "init test accuracy − 1/K",
            real["init_test_acc"] - chance,
            "within",
            "At init test accuracy is chance {estimate:+.2%} [{low:+.2%}, {high:+.2%}].",
            smallest_effect=0.02,
        )
    )

    # C02: training is iterated error correction (the training loss falls).
    for noise, part in summary.groupby("label_noise"):
        runs = history[history["label_noise"] == noise]
        rises = runs.groupby("run_id")["train_loss"].apply(lambda s: float((s.diff() > 0).mean()))
        rows.append(
            seed_verdict(
                "C02",
                "The full-train loss falls over training: log(final / init) < 0",
                "log(final train loss / init train loss)",
                np.log(part["final_train_loss"] / part["init_train_loss"]),
                "less",
                "Training loss fell by a factor e^{estimate:.2f} [{low:.2f}, {high:.2f}]; "
                f"full-train loss rose between {rises.mean():.0%} of consecutive evaluations.",
                condition=_condition(noise),
            )
        )

    # C10: memorization.
    random = summary[summary["label_noise"] == 1.0]
    if len(random):
        rows.append(
            seed_verdict(
                "C10",
                "With random labels the training accuracy approaches 100% (≥ 90%)",
                "final train accuracy − 0.9 (random labels)",
                random["final_train_acc"] - 0.9,
                "greater",
                f"Random labels: train accuracy {random['final_train_acc'].mean():.1%} after "
                f"{int(random['epochs'].iloc[0])} epochs ({int(random['steps'].iloc[0])} steps); "
                "margin over 90%: {estimate:+.3f} [{low:+.3f}, {high:+.3f}].",
                condition="random labels",
            )
        )
        rows.append(
            seed_verdict(
                "C10",
                "With random labels test accuracy stays at chance (within ±2 pp of 1/K)",
                "final test accuracy − 1/K (random labels)",
                random["final_test_acc"] - chance,
                "within",
                "Random labels: test accuracy is chance {estimate:+.2%} [{low:+.2%}, {high:+.2%}].",
                smallest_effect=0.02,
                condition="random labels",
            )
        )
    rows.append(
        seed_verdict(
            "C10",
            "With real labels train loss → ~0 while test loss is far higher (gap > 0.5 nats)",
            "final test loss − final train loss (real labels)",
            real["final_test_loss"] - real["final_train_loss"],
            "greater",
            "Real labels: final train loss "
            f"{real['final_train_loss'].mean():.3g}, test loss higher by "
            "{estimate:.2f} nats [{low:.2f}, {high:.2f}].",
            smallest_effect=0.5,
            condition="real labels",
        )
    )

    # C11 and C14: validation loss turns up; early stopping.
    for noise in (0.0, 0.2):
        part = summary[summary["label_noise"] == noise].sort_values("seed")
        if part.empty:
            continue
        runs = history[history["label_noise"] == noise]
        min_val = runs.groupby("run_id")["val_loss"].min()
        rise = part["final_val_loss"].to_numpy() - min_val.loc[part["run_id"]].to_numpy()
        rows.append(
            seed_verdict(
                "C11",
                "Past a point validation loss rises while training loss keeps falling",
                "final val loss − min val loss (nats)",
                rise,
                "greater",
                "Validation loss rose {estimate:.2f} nats [{low:.2f}, {high:.2f}] above its "
                f"minimum (epoch {part['best_val_epoch'].mean():.0f} of "
                f"{int(part['epochs'].iloc[0])}) while train loss fell to "
                f"{part['final_train_loss'].mean():.2g}.",
                smallest_effect=0.05,
                condition=_condition(noise),
            )
        )
        acc_gain = part["best_test_acc"].to_numpy() - part["final_test_acc"].to_numpy()
        rows.append(
            seed_verdict(
                "C11",
                "The model at the best-validation-loss epoch has higher test accuracy than the final one",
                "test acc at early stop − final test acc",
                acc_gain,
                "greater",
                "Early-stopped minus final test accuracy: {estimate:+.2%} [{low:+.2%}, {high:+.2%}] "
                "(the rising loss is overconfidence when this is ≤ 0).",
                condition=_condition(noise),
            )
        )
        fraction = float((part["best_val_epoch"] / part["epochs"]).mean())
        rows.append(
            seed_verdict(
                "C14",
                "Early stopping on validation loss loses at most 1 pp test accuracy vs the final epoch",
                "test acc at early stop − final test acc + 0.01 (non-inferiority)",
                acc_gain + 0.01,
                "greater",
                "Early-stopped minus final test accuracy, plus the 1 pp margin: "
                "{estimate:+.3f} [{low:+.3f}, {high:+.3f}], "
                f"at {fraction:.0%} of the compute; its test loss is "
                f"{(part['final_test_loss'] - part['best_test_loss']).mean():.2f} nats lower.",
                condition=_condition(noise),
            )
        )
    return rows


def figures(results: ResultsFolder, out_dir: Path) -> list[Path]:
    fig.style()
    history = results.history()
    summary = results.summary()
    n = fig.n_seeds(summary)
    conditions = sorted(history["label_noise"].unique())
    long = history.melt(
        id_vars=["run_id", "seed", "label_noise", "epoch"],
        value_vars=["train_loss", "val_loss", "test_loss", "train_acc", "val_acc", "test_acc"],
        var_name="metric",
    )
    long["split"] = long["metric"].str.split("_").str[0]
    long["kind"] = long["metric"].str.split("_").str[1]
    figure, axes = plt.subplots(
        2, len(conditions), figsize=(3.3 * len(conditions), 5.2), sharex=True
    )
    axes = np.asarray(axes).reshape(2, len(conditions))
    for col, noise in enumerate(conditions):
        stop = summary.loc[summary["label_noise"] == noise, "best_val_epoch"].mean()
        for row, kind in enumerate(("loss", "acc")):
            ax = axes[row, col]
            part = long[(long["label_noise"] == noise) & (long["kind"] == kind)]
            part = part[part["split"] != "test"]
            fig.band(ax, part, "epoch", "value", hue="split")
            ax.axvline(stop, color="0.3", ls="--", lw=0.8, label="early stop (mean)")
            if kind == "acc":
                ax.axhline(1 / NUM_CLASSES, color="0.6", ls=":", lw=0.8, label="chance")
            ax.set_title(_condition(noise) if row == 0 else "")
            ax.set_ylabel("cross-entropy" if kind == "loss" else "accuracy")
            ax.set_xlabel("epoch" if row == 1 else "")
    axes[0, 0].legend(loc="upper left")
    axes[1, 0].legend(loc="lower right")
    figure.suptitle(
        f"MNIST-1D MLP: train vs validation ({fig.BAND_NOTE}, n = {n} seeds)", fontsize=10
    )
    paths = [fig.save(figure, out_dir, "curves")]

    figure, ax = plt.subplots(figsize=(4.6, 3.2))
    rows = []
    for noise in (0.0, 0.2):
        part = summary[summary["label_noise"] == noise].sort_values("seed")
        if part.empty:
            continue
        diff, low, high = paired_difference(part["best_test_acc"], part["final_test_acc"])
        rows.append((_condition(noise), diff, low, high))
        for seed_row in part.itertuples():
            ax.plot(
                [0, 1],
                [seed_row.best_test_acc, seed_row.final_test_acc],
                color="C0" if noise == 0 else "C1",
                alpha=0.5,
                marker="o",
                ms=3,
            )
    ax.set_xticks([0, 1], ["early stop\n(best val loss)", "final epoch"])
    ax.set_ylabel("test accuracy")
    handles = [plt.Line2D([], [], color=c, marker="o") for c in ("C0", "C1")]
    labels = [
        f"{name}: Δ(early − final) = {d:+.1%} [{lo:+.1%}, {hi:+.1%}]" for name, d, lo, hi in rows
    ]
    ax.legend(handles[: len(labels)], labels, fontsize=7, loc="best")
    ax.set_title(f"Early stopping vs training on (one line per seed, n = {n})")
    paths.append(fig.save(figure, out_dir, "early_stopping"))
    return paths
