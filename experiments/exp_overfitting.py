"""Overfitting and memorization: real, noisy and random labels on MNIST-1D (C01, C02, C10, C11, C14).

Command: ``toolkit run exp_overfitting --seeds 10``

An MLP 40-256-256-10 (78k parameters) is trained with Adam (lr 1e-3, batch 100) for
80 epochs (3,200 steps) on the 4,000 MNIST-1D training examples with real labels,
with 20% of labels resampled uniformly, and with all labels random. The three
label conditions differ only in a number (``label_noise``). Train / validation / test
loss and accuracy are evaluated on the full splits after every epoch (dropout is off for
every evaluation); early stopping keeps the epoch with the lowest validation loss (C14's
declared monitor; the first maximum of validation accuracy is a secondary), and the
epochs it saves are reported.

C02 (each step makes predictions slightly less wrong): the real-label runs also record,
after EVERY optimizer step, the train cross-entropy on a fixed monitoring subset, the
first 512 training examples with the run's labels, in eval mode (the engine's
``monitor_examples``: computed inside the training scan, stored per epoch as the
monitored loss and the number of that epoch's 40 steps that lowered it). The primary is
the fraction of all 3,200 steps whose monitored loss is below the one before them, per
seed; declared before the run: greater than 0.6 (a clear majority, 3 of 5 steps; 1/2 is a
coin flip), t-interval over seeds. The first 5 epochs (200 steps) are a secondary, and
log(final / initial train loss), the old primary, is a secondary (it holds for any
training that fits). The monitor is part of the compiled step, so the real-label runs
are their own cohort; the other two conditions are not monitored.

Cost: default profile (10 seeds × 3 conditions, 96,000 run-steps, of which 32,000 also
evaluate the 512 monitored examples — about twice the cost of a plain step): 2 min 4 s of
CPU time (4 min 1 s wall on the 2-core CPU shared with other jobs at a load of ≈ 14; CPU
time bounds the wall time when alone). On one GPU seconds. Quick profile: seconds.

Result (default, 10 seeds): 61.7% [61.2%, 62.2%] of steps lowered the monitored loss
(supported, just above the 0.6 bar): 86% in the first 5 epochs, then about 0.6 from epoch
10 to 80 (60% in the last 5), while the monitored loss keeps falling (≈ 2.3 → 0.003).
C14 (monitor declared: validation loss): the early-stopped model tests 2.8 pp below the
final one (−1.8 pp [−2.3, −1.4] after the 1 pp margin: contradicted) while saving 77% of
the 80 epochs; monitored on validation accuracy (secondary) it is non-inferior, +0.5 pp
[+0.0, +0.9], saving 44%.

C01's tolerance: the primary here is init test accuracy within ±2 pp of 1/K; the loss at
init is tested in exp_fundamentals against the noise-logit prediction ln K + σ²(K−1)/2K
at the measured logit scale (±0.05 nats around it, not around ln K).

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
from dataclasses import dataclass, replace
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from toolkit import figures as fig
from toolkit.claimtests import Test, per_seed, usable
from toolkit.engine import CohortSpec
from toolkit.results import ResultsFolder
from toolkit.spec import RunConfig, Size

CLAIMS = ("C01", "C02", "C10", "C11", "C14")
#: The figure the claims report links for each claim.
CLAIM_FIGURES = {
    "C01": "curves",
    "C02": "step_falls",
    "C10": "curves",
    "C11": "curves",
    "C14": "early_stopping",
}
K = 10
MEMORIZED = 0.99  # C10: a random-label run memorized when its final train accuracy ≥ this
MARGIN = 0.01  # C14: non-inferiority margin (early stopping may lose up to 1 pp)
CONDITIONS = {0.0: "real labels", 0.2: "20% label noise", 1.0: "random labels"}
MONITORED = 512  # C02: the first N training examples, their loss after every step
EARLY_EPOCHS = 5  # C02 secondary: the first epochs (200 steps), where the loss falls fastest


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
    # measured: train loss on the first N training examples after every step (0: off)
    monitor_examples: Size = 0

    def cohort_spec(self) -> CohortSpec:
        return replace(super().cohort_spec(), monitor_examples=self.monitor_examples)


#: The real-label runs are monitored after every step (C02): a second cohort, since the
#: monitor is part of the compiled step; the other conditions skip its cost.
GRID = [
    {"label_noise": 0.0, "monitor_examples": MONITORED},
    {"label_noise": 0.2, "monitor_examples": 0},
    {"label_noise": 1.0, "monitor_examples": 0},
]

PROFILES = {
    "quick": {"seeds": 2, "epochs": 4, "widths": (32, 32), "grid": [GRID[0], GRID[2]]},
    "default": {"seeds": 10},
    "paper": {"seeds": 20, "epochs": 200, "widths": (512, 512)},
}


def _condition(noise: float) -> str:
    return CONDITIONS.get(float(noise), f"label noise {noise:g}")


STEP_FALLS = Test(
    "step_falls", "C02", "primary", "mean",
    f"fraction of optimizer steps that lower the train CE on the first {MONITORED} training "
    "examples (vs its value before the step), per seed",
    "Each small step makes predictions slightly less wrong: a clear majority of optimizer "
    "steps lower the training loss on a fixed set of training examples",
    "greater", 0.6,
    "0.6 = 0.1 above a coin flip (3 of 5 steps lower the loss): at 1/2 a step hurts as often as "
    "it helps and the loss falls only because falls outweigh rises, not because each step "
    "corrects errors; the claim's 'each' would ask for ~1, but minibatch noise makes some "
    "rises certain (CLAIMS.md: 'per-step increases happen')",
    "{estimate:.1%} of steps [{low:.1%}, {high:.1%}] lowered the train CE on {m} fixed training "
    "examples ({n} of {planned} seeds, all {steps:,} steps; first {early} epochs: "
    "{first:.0%}, last {early}: {last:.0%}).",
    condition=f"real labels, every step of the run; monitored: first {MONITORED} train examples",
)  # fmt: skip
LOSS_FALLS = Test(
    "loss_falls", "C02", "secondary", "log_ratio", "log(final train loss / init train loss)",
    "Training is iterated error correction: the full-train loss falls over training",
    "less", math.log(2),
    "log 2: the loss at least halves; a smaller fall would not be error correction at work",
    "Train CE fell by a factor e^{estimate:.2f} [e^{low:.2f}, e^{high:.2f}] ({n} of {planned} "
    "seeds); full-train CE rose between {rises:.1%} of consecutive epochs.",
    condition="real labels",
)  # fmt: skip
VAL_RISE = Test(
    "val_rise", "C11", "primary", "mean", "final val loss − min val loss (nats)",
    "More training does not always help: past a point validation loss rises while training "
    "loss keeps falling", "greater", 0.05,
    "0.05 nats, 5% of the minimum validation loss (≈ 1.0) and twice the 90th percentile of its "
    "epoch-to-epoch wobble (0.023): a rise that size is a turn, not noise",
    "Validation CE rose {estimate:.2f} nats [{low:.2f}, {high:.2f}] above its minimum (epoch "
    "{stop:.0f} of {budget}) while train CE fell from {train_stop:.2f} to {train_end:.3f} "
    "({n} of {planned} seeds).",
    condition="real labels",
)  # fmt: skip
EARLY_STOP = Test(
    "early_stop", "C14", "primary", "paired_difference",
    "test acc at the early stop − final test acc + 0.01 (non-inferiority, 1 pp)",
    "Early stopping on a held-out validation set saves the best model: it loses at most 1 pp "
    "test accuracy against training to the end", "greater", 0.0,
    "the 1 pp non-inferiority margin is built into the statistic, so any value above 0 "
    "supports the claim",
    "Early-stopped minus final test accuracy, plus 1 pp: {estimate:+.3f} [{low:+.3f}, "
    "{high:+.3f}] ({n} of {planned} seeds); it stopped at epoch {stop:.1f} of {budget}, "
    "{saved:.0%} of the epochs saved, with test CE {loss_cut:.2f} nats lower.",
    condition="real labels; monitored: validation loss (lowest, every epoch)",
)  # fmt: skip


def _secondary(test: Test, key: str, condition: str, **changes) -> Test:
    return replace(test, key=key, role="secondary", condition=condition, **changes)


TESTS = [
    STEP_FALLS,
    _secondary(
        STEP_FALLS, "step_falls_early",
        f"real labels, the first {EARLY_EPOCHS} epochs; monitored: first {MONITORED} train "
        "examples",
        finding="In the first {early} epochs ({steps} steps) {estimate:.1%} [{low:.1%}, "
        "{high:.1%}] of steps lowered the monitored train CE ({n} seeds).",
    ),
    Test(
        "init_acc", "C01", "primary", "mean", "init test accuracy − 1/K",
        "A freshly initialized network knows nothing: its test accuracy is chance (1/K) "
        "within ±2 pp", "within", 0.02,
        "2 pp is a fifth of chance accuracy (10%): less would be indistinguishable from noise",
        "At init test accuracy is chance {estimate:+.2%} [{low:+.2%}, {high:+.2%}] over {n} of "
        "{planned} seeds (seeds range {lowest:.1%}–{highest:.1%}).",
        condition="real-label runs, before the first step",
    ),
    LOSS_FALLS,
    _secondary(LOSS_FALLS, "loss_falls_noisy", _condition(0.2)),
    _secondary(LOSS_FALLS, "loss_falls_random", _condition(1.0)),
    Test(
        "random_test_chance", "C10", "primary", "mean", "final test accuracy − 1/K",
        "A network that memorized random labels predicts new data at chance: test accuracy "
        "within ±2 pp of 1/K", "within", 0.02,
        "2 pp is a fifth of chance accuracy (10%), as for C01",
        "Runs that memorized random labels (train accuracy ≥ 99%: {memorized} of {planned}) "
        "test at chance {estimate:+.2%} [{low:+.2%}, {high:+.2%}].",
        condition="random labels, runs that memorized (final train accuracy ≥ 0.99)",
    ),
    Test(
        "real_loss_gap", "C10", "secondary", "mean", "final test loss − final train loss (nats)",
        "With real labels train loss goes to ~0 while test loss is far higher", "greater", 0.5,
        "0.5 nats: the test likelihood per example e^0.5 ≈ 1.6× below the train one",
        "Final train CE {train:.3g}; test CE higher by {estimate:.2f} nats "
        "[{low:.2f}, {high:.2f}] ({n} seeds).",
        condition="real labels",
    ),
    VAL_RISE,
    _secondary(VAL_RISE, "val_rise_noisy", _condition(0.2)),
    EARLY_STOP,
    _secondary(
        EARLY_STOP, "early_stop_val_acc", "real labels; monitored: validation accuracy",
        finding="Monitoring validation accuracy (its first maximum): {estimate:+.3f} "
        "[{low:+.3f}, {high:+.3f}] ({n} seeds), stopping at epoch {stop:.1f} of {budget}.",
    ),
    _secondary(EARLY_STOP, "early_stop_noisy", f"{_condition(0.2)}; monitored: validation loss"),
]  # fmt: skip


def _runs(summary: pd.DataFrame, noise: float, reached=None):
    """Usable runs of one label condition, indexed by seed, and the excluded counts."""
    part = summary[np.isclose(summary["label_noise"], noise)]
    frame, excluded = usable(part, None if reached is None else reached(part))
    return frame.set_index("seed").sort_index(), excluded


def step_falls(history: pd.DataFrame, runs: pd.DataFrame, lo: float, hi: float) -> pd.Series:
    """Per seed (``runs`` indexed by seed): the fraction of the optimizer steps in epochs
    (lo, hi] after which the monitored train loss was lower than before the step."""
    part = history[history["run_id"].isin(runs["run_id"])]
    inside = part[(part["epoch"] > lo) & (part["epoch"] <= hi)]
    falls = inside.groupby("run_id")["monitor_falls"].sum()
    done = part[part["epoch"] <= hi].groupby("run_id")["step"].max()
    start = part[part["epoch"] <= lo].groupby("run_id")["step"].max()
    fraction = falls / (done - start)
    return pd.Series(fraction.reindex(runs["run_id"]).to_numpy(), index=runs.index)


def analyze(results: ResultsFolder) -> dict:
    summary, history = results.summary(), results.history()
    seeds = summary["seed"].nunique()
    real, real_out = _runs(summary, 0.0)
    budget = int(real["epochs"].max())
    early = min(EARLY_EPOCHS, budget)
    if "monitor_falls" in history:
        whole = step_falls(history, real, 0, budget)
        first, last = (
            step_falls(history, real, 0, early),
            step_falls(history, real, budget - early, budget),
        )
    else:  # results written before the monitor: no per-step record
        whole = first = last = pd.Series(np.nan, index=real.index)
    common = {"m": MONITORED, "early": early}
    ev_falls = {
        "step_falls": per_seed(
            whole, seeds, real_out, missing_reason="no per-step monitor in these results",
            steps=int(real["steps"].max()), first=first.mean(), last=last.mean(), **common,
        ),
        "step_falls_early": per_seed(
            first, seeds, real_out, missing_reason="no per-step monitor in these results",
            steps=int(early * real["steps"].max() / budget), **common,
        ),
    }  # fmt: skip
    acc = real["init_test_acc"]
    ev = {"init_acc": per_seed(acc - 1 / K, seeds, real_out, lowest=acc.min(), highest=acc.max())}
    ev.update(ev_falls)
    for key, noise in (("loss_falls", 0.0), ("loss_falls_noisy", 0.2), ("loss_falls_random", 1.0)):
        part, out = _runs(summary, noise)
        runs = history[history["run_id"].isin(part["run_id"])].sort_values("epoch")
        rises = runs.groupby("run_id")["train_loss"].apply(lambda s: (s.diff() > 0).mean())
        ratio = np.log(part["final_train_loss"] / part["init_train_loss"])
        ev[key] = per_seed(ratio, seeds, out, rises=rises.mean())
    random, out = _runs(summary, 1.0, lambda part: part["final_train_acc"] >= MEMORIZED)
    out = {("did not memorize" if "reach" in why else why): k for why, k in out.items()}
    chance = random["final_test_acc"] - 1 / K
    ev["random_test_chance"] = per_seed(chance, seeds, out, memorized=len(random))
    gap = real["final_test_loss"] - real["final_train_loss"]
    ev["real_loss_gap"] = per_seed(gap, seeds, real_out, train=real["final_train_loss"].mean())
    for suffix, noise in (("", 0.0), ("_noisy", 0.2)):
        part, out = _runs(summary, noise)
        common = {"stop": part["best_val_epoch"].mean(), "budget": part["epochs"].max()}
        ev["val_rise" + suffix] = per_seed(
            part["final_val_loss"] - part["best_val_loss"], seeds, out,
            train_stop=part["best_train_loss"].mean(), train_end=part["final_train_loss"].mean(),
            **common,
        )  # fmt: skip
        ev["early_stop" + suffix] = per_seed(
            part["best_test_acc"] - part["final_test_acc"] + MARGIN, seeds, out,
            saved=1 - (part["best_val_epoch"] / part["epochs"]).mean(),
            loss_cut=(part["final_test_loss"] - part["best_test_loss"]).mean(), **common,
        )  # fmt: skip
    # Monitoring validation accuracy instead: the epoch of its first maximum, per run.
    runs = history[history["run_id"].isin(real["run_id"])].sort_values("epoch")
    at_best = runs.loc[runs.groupby("run_id")["val_acc"].idxmax()].set_index("run_id")
    at_best = at_best.loc[real["run_id"]].set_index(real.index)
    ev["early_stop_val_acc"] = per_seed(
        at_best["test_acc"] - real["final_test_acc"] + MARGIN, seeds, real_out,
        stop=at_best["epoch"].mean(), budget=real["epochs"].max(),
    )  # fmt: skip
    return ev


def _stated(evidence, label: str, scale: float = 1.0, unit: str = "") -> str:
    """ "label: estimate [low, high] (n = k)" for a figure title, the verdict's numbers."""
    low, high = evidence.interval.ci()
    e = evidence.interval.estimate
    return (
        f"{label} {e * scale:+.2f} [{low * scale:+.2f}, {high * scale:+.2f}]{unit} "
        f"(n = {evidence.interval.n})"
    )


def figures(results: ResultsFolder, out_dir: Path) -> list[Path]:
    fig.style()
    summary, _ = usable(results.summary())
    history = results.history()
    history = history[history["run_id"].isin(summary["run_id"])]
    ev = analyze(results)
    n = fig.n_seeds(summary)
    conditions = sorted(history["label_noise"].unique())
    long = history.melt(
        id_vars=["run_id", "seed", "label_noise", "epoch"],
        value_vars=["train_loss", "val_loss", "test_loss", "train_acc", "val_acc", "test_acc"],
        var_name="metric",
    )
    long["split"] = long["metric"].str.split("_").str[0]
    long["kind"] = long["metric"].str.split("_").str[1]
    shown = {"loss": ("train", "val"), "acc": ("train", "test")}
    colors = {"train": "C0", "val": "C1", "test": "C2"}
    size = (3.3 * len(conditions), 5.8)
    figure, axes = plt.subplots(2, len(conditions), figsize=size, sharex=True, squeeze=False)
    for col, noise in enumerate(conditions):
        stop = summary.loc[summary["label_noise"] == noise, "best_val_epoch"].mean()
        for row, kind in enumerate(("loss", "acc")):
            ax = axes[row, col]
            part = long[(long["label_noise"] == noise) & (long["kind"] == kind)]
            for split in shown[kind]:
                line = {"color": colors[split], "label": split}
                fig.band(ax, part[part["split"] == split], "epoch", "value", **line)
            ax.axvline(stop, color="0.3", ls="--", lw=0.8, label="early stop (mean)")
            if kind == "acc":
                ax.axhline(1 / K, color="0.6", ls=":", lw=0.8, label="chance")
            ax.set_title(_condition(noise) if row == 0 else "")
            ax.set_ylabel("cross-entropy" if kind == "loss" else "accuracy")
            ax.set_xlabel("epoch" if row == 1 else "")
    axes[0, 0].legend(loc="upper left")
    axes[1, 0].legend(loc="lower right")
    figure.suptitle(
        f"MNIST-1D MLP: train vs validation loss, train vs test accuracy ({fig.BAND_NOTE}, "
        f"n = {n} seeds)\n"
        + _stated(ev["init_acc"], "C01 init test acc − 1/K (pp):", 100)
        + "; "
        + "C02 steps lowering train CE on {m} ex.: {e:.1%} [{lo:.1%}, {hi:.1%}] (n = {n})".format(
            m=MONITORED,
            e=ev["step_falls"].interval.estimate,
            n=ev["step_falls"].interval.n,
            lo=ev["step_falls"].interval.ci()[0],
            hi=ev["step_falls"].interval.ci()[1],
        )  # fmt: skip
        + "\n"
        + _stated(ev["random_test_chance"], "C10 test acc − 1/K, random labels (pp):", 100)
        + "; "
        + _stated(ev["val_rise"], "C11 final − min val CE, real:", unit=" nats"),
        fontsize=9,
    )
    paths = [fig.save(figure, out_dir, "curves")]

    figure, ax = plt.subplots(figsize=(4.8, 3.4))
    labels = []
    for noise, key, color in ((0.0, "early_stop", "C0"), (0.2, "early_stop_noisy", "C1")):
        part = summary[summary["label_noise"] == noise]
        if part.empty:
            continue
        pairs = part[["best_test_acc", "final_test_acc"]].to_numpy().T  # one line per seed
        ax.plot([0, 1], pairs, color=color, alpha=0.5, marker="o", ms=3)
        labels.append(_stated(ev[key], f"{_condition(noise)}: Δ + 1 pp (pp) =", 100))
    ax.set_xticks([0, 1], ["early stop\n(lowest val loss)", "final epoch"])
    ax.set_ylabel("test accuracy")
    handles = [plt.Line2D([], [], color=c, marker="o") for c in ("C0", "C1")]
    ax.legend(handles[: len(labels)], labels, fontsize=7, loc="best")
    ax.set_title(
        "C14: early stopping on validation loss vs training on\n"
        + _stated(ev["early_stop"], "real labels, early − final + 1 pp (pp):", 100)
        + f"; one line per seed, n = {n}",
        fontsize=8,
    )
    paths.append(fig.save(figure, out_dir, "early_stopping"))
    if "monitor_falls" in history and history["monitor_falls"].notna().any():
        paths.append(_step_falls_figure(summary, history, ev["step_falls"], out_dir))
    return paths


def _step_falls_figure(summary, history, evidence, out_dir: Path) -> Path:
    """C02: per epoch, the fraction of its steps that lowered the monitored train loss,
    and that loss (evaluated after every step, shown at the end of each epoch)."""
    runs = history[history["monitor_falls"].notna() & (history["epoch"] > 0)].copy()
    runs = runs.sort_values(["run_id", "epoch"])
    runs["steps_in"] = runs.groupby("run_id")["step"].diff().fillna(runs["step"])
    runs["fraction"] = runs["monitor_falls"] / runs["steps_in"]
    n = runs["seed"].nunique()
    figure, (left, right) = plt.subplots(1, 2, figsize=(9.2, 3.6))
    fig.band(left, runs, "epoch", "fraction", color="C0", label="per epoch")
    left.axhline(0.5, color="0.5", ls=":", lw=1, label="1/2 (a coin flip)")
    left.axhline(STEP_FALLS.smallest_effect, color="C3", ls="--", lw=1, label="declared bar 0.6")
    left.set_ylim(0, 1.02)
    left.set_xlabel("epoch (40 Adam steps each)")
    left.set_ylabel("fraction of steps lowering the loss")
    left.legend(fontsize=7, loc="lower left")
    left.set_title("Steps that lowered the monitored train CE", fontsize=9)
    fig.band(right, history[history["monitor_loss"].notna()], "epoch", "monitor_loss", color="C0")
    right.set_yscale("log")
    right.set_xlabel("epoch")
    right.set_ylabel(f"train CE on the first {MONITORED} examples")
    right.set_title("The monitored loss (after the epoch's last step)", fontsize=9)
    low, high = evidence.interval.ci()
    e = evidence.interval.estimate
    verdict = "a clear majority" if low > STEP_FALLS.smallest_effect else "not a clear majority"
    figure.suptitle(
        f"C02: {e:.1%} [{low:.1%}, {high:.1%}] of Adam steps lower the train CE on "
        f"{MONITORED} fixed examples: {verdict}\nMNIST-1D MLP, real labels; "
        f"{fig.BAND_NOTE}, n = {n} seeds",
        fontsize=9,
    )
    return fig.save(figure, out_dir, "step_falls")
