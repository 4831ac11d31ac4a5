"""The learning rate: a U-shaped sweep, and full-batch GD at the edge of stability (C04).

Command: ``toolkit run exp_learning_rate --seeds 10``

Three arms, each one vmapped cohort (the learning rate rides the run axis, so every
learning rate × seed of an arm is ONE compiled program); all use plain SGD / GD
(momentum 0: the 2/lr stability bound of GD is for momentum 0).

- ``sweep`` (C04 as the article states it): an MLP 40-100-100-10 (ReLU, 15k
  parameters) trained with minibatch SGD (batch 100, cross-entropy) on MNIST-1D
  (4,000 train) for a fixed budget of 1,200 steps = 30 epochs (evaluated every 3
  epochs), at 11 learning rates on a half-decade log grid from 1e-4 to 10 (5 orders of
  magnitude). Runs that go non-finite (or past a loss of 1e4) are flagged ``diverged``
  by the engine, frozen at their last finite parameters, marked in the figures and
  left out of every statistic and figure mean (counted on each row).
- ``eos`` (Cohen et al. 2021, beyond the article): full-batch gradient descent (one
  step = one epoch) with MSE (0.5·‖f(x) − onehot‖², Cohen's loss) on real MNIST digits
  (``mnist5k``: 3,000 train), MLP 784-32-32-32-10 (ReLU, 27.5k parameters), at
  lr ∈ {0.05, 0.1, 0.2} for 300 steps (300 epochs). The top Hessian eigenvalue λ_max of
  the training loss on all 3,000 training examples is tracked every k = 5 steps (one
  evaluation every 5 epochs, 61 per run; ``track_sharpness``: Lanczos, 20 iterations,
  fixed start key), step 0 included: fine enough to see λ_max oscillate about 2/lr.
  300 steps bring lr 0.1 to its edge (2/lr = 20) and lr 0.2 starts beyond its edge
  (λ_max(init) ≈ 14 > 2/lr = 10), but lr 0.05 does not reach 2/lr = 40 (λ_max ≈ 14 →
  25): its long run (3,000 steps, λ_max every 5) is in the ``paper`` profile only, since
  3,000 full-batch steps with 600 Lanczos evaluations per run do not fit the default's
  ~5 CPU minutes; in the default its eos row is inconclusive (edge not reached) and it
  serves the progressive-sharpening secondary.
- ``threshold``: the same GD setting for 100 steps at lr ∈ {0.1, 0.2, …, 3.2} (factor
  2), to place each seed's divergence threshold against 2/λ_max at init (λ_max at
  step 0 and step 100). Runs whose ReLUs all die (train accuracy < 20%: a constant
  predictor) are counted as ``collapsed``, not as diverged.

MSE, not cross-entropy, for the edge of stability: with cross-entropy the sharpness
falls late in training as the loss → 0 (Cohen et al., science notes Claim 6), which
would confound "hovers at 2/lr" with "the loss saturated"; MSE is Cohen's main setting.
The architecture, the GD learning rates and the step budget were chosen from one
calibration seed (not one of the 10) so that λ_max(init) ≈ 13–20 lies between 2/lr
of the largest and the smallest eos rate.

Tests (``TESTS``; the statistics are the library's, see toolkit.claimtests):

- primary, U shape: per seed, over its non-diverged sweep runs (diverged runs are
  reported separately, by the ``diverges`` secondary), the smaller of (loss at
  the smallest lr − loss at the seed's best lr) and (loss at its largest non-diverging
  lr − loss at the best lr), final train CE; mean over seeds > 0.1 nats (a best lr at
  an end gives ≤ 0 and counts against).
- secondary: the fraction of seeds whose largest-lr run diverged (Clopper–Pearson,
  > 0.5); per eos lr, log of the last-quarter mean of λ_max·lr/2 within ±0.2 of 0
  (TOST; inconclusive where under half the seeds reached λ_max ≥ 0.9·2/lr before the
  last quarter); progressive sharpening at the smallest eos lr (log of the last-quarter
  λ_max over λ_max at init > ln 1.25, if 2/lr ≥ 2·λ_max(init)); the divergence
  threshold (geometric midpoint between the first diverging lr and the one below it)
  over 2/λ_max(init), log2 within ±1 (seeds that never diverge are left out).

Cost: default profile (10 seeds; 110 sweep, 30 eos and 60 threshold runs; 3 cohorts;
132,000 + 9,000 + 6,000 run-steps; 30 × 61 Lanczos evaluations of λ_max in the eos arm):
5 min 13 s of CPU time, which bounds the wall time when alone (with λ_max every 30 steps
it was 4 min 44 s of CPU time and 184 s wall alone); 15 min 54 s wall on the 2-core CPU
shared with other jobs at a load average of ≈ 14, of which the eos cohort took 10.5 min.
Paper profile (20 seeds, quarter-decade sweep of 2,000 steps, 7 eos rates for 3,000
steps with λ_max every 5 steps — 601 evaluations per eos run, so its history is longer
than the usual 200 points —, a √2 threshold grid of 200 steps): sized for a few minutes on
one H200 (not yet run there); it is where lr 0.05 (and 0.025, 0.035) gets the steps to
reach 2/lr.
Quick profile: seconds of training; ≈ 50 s in all under that load (three compilations).

Expected (science notes Claim 6; Cohen et al. 2021): final loss U-shaped in lr
(1e-4 barely moves in 1,200 steps; the largest rates diverge); under GD, λ_max rises
while below 2/lr and then hovers just above 2/lr; GD survives learning rates beyond
2/λ_max(init) (the sharpness first drops: catapult), so the threshold ratio may
exceed 1.

Result (default, 10 seeds, λ_max every 5 steps): over the non-diverging rates both ends
are ≥ 1.17 [0.71, 1.63] nats worse than each seed's best lr (lr 1e-4 +2.34; the largest
non-diverging lr, 3.16 or 1 where 3.16 diverged, +1.17); divergence separately: lr 10
diverged in 10 of 10 seeds, lr 3.16 in 2; λ_max settles at e^−0.025 [e^−0.071, e^+0.020]
× 2/lr (lr 0.1) and e^−0.000 [e^−0.022, e^+0.021] × 2/lr (lr 0.2), oscillating about it
from step to step; at lr 0.05 it rises 1.9× (14 → 25) without reaching 2/lr = 40 in 300
steps (inconclusive; the paper profile's 3,000 steps are for that); GD first diverges at
2^2.8 ≈ 7× [4.9×, 9.9×] 2/λ_max(init), beyond the factor-2 band.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Literal

import matplotlib.pyplot as plt
import matplotlib.ticker as mticker
import matplotlib.transforms as mtransforms
import numpy as np
import pandas as pd
import seaborn as sns

from toolkit import data as datasets
from toolkit import figures as fig
from toolkit.claimtests import Test, fraction, per_seed, usable
from toolkit.data import steps_per_epoch
from toolkit.engine import CohortSpec
from toolkit.results import ResultsFolder
from toolkit.spec import Count, LossName, RunConfig, SpecError, Widths

CLAIMS = ("C04",)
CLAIM_FIGURES = {"C04": "final_loss_vs_lr"}
ARMS = ("sweep", "eos", "threshold")
EOS_REACHED = 0.9  # "reached the edge": λ_max·lr/2 ≥ 0.9 before the last quarter
LAST_FRACTION = 0.25  # the last quarter of the steps
SHARPENING = math.log(1.25)  # smallest rise of λ_max that counts as progressive sharpening
COLLAPSED_ACC = 0.2  # train accuracy below this (not diverged): the network died


@dataclass(frozen=True)
class Config(RunConfig):
    # scientific: the factor under study
    learning_rate: float = 0.1
    # scientific: the protocol a run belongs to ("sweep", "eos" or "threshold")
    arm: Literal[ARMS] = "sweep"
    dataset: str = "mnist1d"  # set per arm by the grid: mnist1d (sweep), mnist5k (GD arms)
    # fixed: the protocol
    model: str = "mlp"
    activation: str = "relu"
    optimizer: str = "sgd"
    momentum: float = 0.0  # plain SGD and GD
    sweep_widths: Widths = (100, 100)
    sweep_loss: LossName = "ce"
    sweep_batch: Count = 100
    sweep_steps: Count = 1200  # fixed step budget (30 epochs of 40 steps on MNIST-1D)
    sweep_history: Count = 10  # evaluations per sweep run (every 3 epochs = 120 steps)
    gd_widths: Widths = (32, 32, 32)
    gd_loss: LossName = "mse"
    eos_steps: Count = 300  # full-batch steps = epochs
    threshold_steps: Count = 100  # evaluated (λ_max too) at init and at the end only
    sharpness_every: Count = 5  # k: λ_max every k steps (one evaluation) in the eos arm
    sharpness_examples: Count = 3000  # λ_max on the first N train examples (all of mnist5k)

    DERIVED: ClassVar[dict[str, str]] = {
        name: "set the arm's own field (sweep_*, gd_*, eos_steps, threshold_steps, sharpness_*)"
        for name in (
            "widths",
            "loss",
            "batch_size",
            "epochs",
            "history_points",
            "track_sharpness",
        )
    }

    def cohort_spec(self) -> CohortSpec:
        base = super().cohort_spec()
        num_train = len(datasets.load(self.dataset).y_train)
        if self.arm == "sweep":
            per_epoch = steps_per_epoch(num_train, self.sweep_batch)
            if self.sweep_steps % per_epoch:
                raise SpecError(f"sweep_steps must be a multiple of {per_epoch} (one epoch)")
            return dataclasses.replace(
                base,
                widths=tuple(self.sweep_widths),
                loss=self.sweep_loss,
                batch_size=self.sweep_batch,
                epochs=self.sweep_steps // per_epoch,
                history_points=self.sweep_history,
                track_sharpness=0,
            )
        if self.arm not in ARMS:
            raise SpecError(f"arm must be one of {ARMS}, got {self.arm!r}")
        steps = self.eos_steps if self.arm == "eos" else self.threshold_steps
        if self.arm == "eos" and steps % self.sharpness_every:
            raise SpecError("eos_steps must be a multiple of sharpness_every")
        return dataclasses.replace(
            base,
            widths=tuple(self.gd_widths),
            loss=self.gd_loss,
            batch_size=num_train,  # full batch: one step per epoch
            epochs=steps,
            history_points=steps // self.sharpness_every if self.arm == "eos" else 1,
            track_sharpness=min(self.sharpness_examples, num_train),
        )


def grid(sweep: list[float], eos: list[float], threshold: list[float]) -> list[dict]:
    """Grid points: each arm with its dataset and its learning rates."""
    points = [{"arm": "sweep", "dataset": "mnist1d", "learning_rate": lr} for lr in sweep]
    points += [{"arm": "eos", "dataset": "mnist5k", "learning_rate": lr} for lr in eos]
    points += [{"arm": "threshold", "dataset": "mnist5k", "learning_rate": lr} for lr in threshold]
    return points


def half_decades(low: int, high: int, per_decade: int = 2) -> list[float]:
    """A log grid from 10^low to 10^high, rounded to 3 significant digits."""
    exponents = np.linspace(low, high, (high - low) * per_decade + 1)
    return [float(f"{10.0**e:.3g}") for e in exponents]


SWEEP_LRS = half_decades(-4, 1)  # 1e-4 … 10, 11 rates
EOS_LRS = [0.05, 0.1, 0.2]
THRESHOLD_LRS = [0.1, 0.2, 0.4, 0.8, 1.6, 3.2]
GRID = grid(SWEEP_LRS, EOS_LRS, THRESHOLD_LRS)

PROFILES = {
    "quick": {
        "seeds": 2,
        "sweep_widths": (16,),
        "sweep_steps": 80,
        "sweep_history": 4,
        "gd_widths": (8,),
        "eos_steps": 20,
        "threshold_steps": 10,
        "sharpness_every": 5,
        "sharpness_examples": 500,
        "grid": grid([1e-3, 0.1, 10.0], [0.05, 0.2], [0.4, 3.2]),
    },
    "default": {"seeds": 10},
    "paper": {
        "seeds": 20,
        "sweep_steps": 2000,
        "sweep_history": 50,
        "eos_steps": 3000,  # lr 0.05 reaches 2/lr = 40 only here (≈ 14 → 25 in 300 steps)
        "threshold_steps": 200,
        "sharpness_every": 5,  # 600 evaluations per eos run
        "grid": grid(
            half_decades(-4, 1, per_decade=4),
            [0.025, 0.035, 0.05, 0.07, 0.1, 0.14, 0.2],
            [round(0.1 * 2 ** (i / 2), 3) for i in range(13)],
        ),
    },
}


# ----- analysis ----------------------------------------------------------------------
def _summary(results: ResultsFolder) -> pd.DataFrame:
    frame = results.summary().copy()
    frame["diverged"] = frame["diverged"].astype(bool)
    frame["collapsed"] = ~frame["diverged"] & (frame["final_train_acc"] < COLLAPSED_ACC)
    return frame


def u_gaps(summary: pd.DataFrame) -> pd.DataFrame:
    """Per seed, over its non-diverged sweep runs: final train loss at the smallest lr
    (``slow``) and at the largest non-diverging lr (``fast``) minus at the seed's best lr,
    and their minimum ``u`` (≤ 0 when the best lr is at an end)."""
    sweep, _ = usable(summary[summary["arm"] == "sweep"])
    rows = {}
    for seed, part in sweep.groupby("seed"):
        loss = part.set_index("learning_rate")["final_train_loss"].sort_index()
        slow, fast = loss.iloc[0] - loss.min(), loss.iloc[-1] - loss.min()
        rows[seed] = {"slow": slow, "fast": fast, "u": min(slow, fast), "largest": loss.index[-1]}
    return pd.DataFrame.from_dict(rows, orient="index", columns=["slow", "fast", "u", "largest"])


def eos_runs(results: ResultsFolder, summary: pd.DataFrame, arm: str = "eos") -> pd.DataFrame:
    """Per GD run: λ_max at init, the last-quarter mean of λ_max and of λ_max·lr/2,
    whether it reached the edge before the last quarter, and its outcome."""
    history = results.history()
    if "sharpness" not in history:
        return pd.DataFrame()
    runs = summary[summary["arm"] == arm].set_index("run_id")
    rows = []
    for run_id, h in history[history["run_id"].isin(runs.index)].groupby("run_id"):
        run, h = runs.loc[run_id], h.sort_values("epoch")
        lr, sharpness = float(run["learning_rate"]), h["sharpness"].to_numpy()
        late = h["epoch"].to_numpy() > (1 - LAST_FRACTION) * int(run["epochs"])
        late_lambda = float(np.mean(sharpness[late])) if late.any() else np.nan
        early_max = float(np.nanmax(sharpness[~late])) if (~late).any() else 0.0
        rows.append(
            {
                "run_id": run_id,
                "seed": int(run["seed"]),
                "learning_rate": lr,
                "lambda_init": float(sharpness[0]),
                "late_lambda": late_lambda,
                "late_ratio": late_lambda * lr / 2,
                "reached": early_max * lr / 2 >= EOS_REACHED,
                "diverged": bool(run["diverged"]),
                "collapsed": bool(run["collapsed"]),
            }
        )
    return pd.DataFrame(rows)


def thresholds(runs: pd.DataFrame) -> pd.DataFrame:
    """Per seed: divergence threshold (geometric midpoint between the first diverging lr
    and the one below it) and its ratio to 2/λ_max(init); NaN when no lr diverged."""
    rows = []
    for seed, part in runs.groupby("seed"):
        part = part.sort_values("learning_rate")
        lrs, failed = part["learning_rate"].to_numpy(), part["diverged"].to_numpy()
        lam0, threshold = float(part["lambda_init"].iloc[0]), math.nan
        if failed.any():
            first = int(np.argmax(failed))
            threshold = math.sqrt((lrs[first - 1] if first else lrs[0] / 2) * lrs[first])
        rows.append({"seed": seed, "threshold": threshold, "lambda_init": lam0})
    table = pd.DataFrame(rows, columns=["seed", "threshold", "lambda_init"])
    return table.assign(ratio=table["threshold"] * table["lambda_init"] / 2)


TESTS = [
    Test(
        "u_shape", "C04", "primary", "mean",
        "min(loss at the smallest lr − loss at the best lr, loss at the largest non-diverging "
        "lr − loss at the best lr): final train cross-entropy in nats, per seed",
        "Final train loss after a fixed step budget is U-shaped in the learning rate: too "
        "small and too large (yet stable) rates both end clearly worse than the best",
        "greater", 0.1,
        "0.1 nats = 10% less likelihood per example (e^0.1): less and an end rate is about "
        "as good as the best, not 'too small' or 'too large'",
        "Both ends at least {estimate:.2f} nats [{low:.2f}, {high:.2f}] worse than each seed's "
        "best lr ({n} of {planned} seeds; {verdict}): lr {small:g} +{slow:.2f}, largest "
        "non-diverging lr {largest} +{fast:.2f} (means); {runs_out}.",
        condition="sweep: SGD, fixed step budget, non-diverged runs",
    ),
    Test(
        "diverges", "C04", "secondary", "fraction",
        "fraction of seeds whose run at the largest lr diverged",
        "Too large a learning rate diverges", "greater", 0.5,
        "'the largest rates diverge' needs divergence in most seeds, not an occasional blow-up",
        "At lr {top:g} {estimate:.0%} [{low:.0%}, {high:.0%}] of {n} seeds diverged; {bounces}.",
        condition="sweep",
    ),
    *[
        Test(
            f"eos_lr{lr:g}", "C04", "secondary", "log_ratio",
            "log(last-quarter mean of λ_max·lr/2), per seed",
            "Full-batch GD: λ_max settles at 2/lr (edge of stability, Cohen et al. 2021)",
            "within", 0.2,
            "±0.2 in log ≈ within 20% of 2/lr either way: 'hovers at 2/lr', not merely below it",
            "λ_max·lr/2 over the last quarter = e^{estimate:+.3f} [e^{low:+.3f}, e^{high:+.3f}] "
            "(n = {n}); {reached:.0%} of seeds reached 0.9·2/lr before it; λ_max {lam0:.1f} at "
            "init, {late:.1f} at the end (2/lr = {edge:.3g}).",
            condition=f"GD lr {lr:g}",
        )
        for lr in EOS_LRS
    ],
    Test(
        "sharpening", "C04", "secondary", "log_ratio",
        "log(last-quarter mean λ_max / λ_max at init), per seed",
        "Full-batch GD below the edge: λ_max rises (progressive sharpening)",
        "greater", SHARPENING,
        "a rise of at least 25%: a clear climb, not drift",
        "λ_max rose by a factor e^{estimate:.2f} [e^{low:.2f}, e^{high:.2f}] (from {lam0:.1f} "
        "to {late:.1f}; 2/lr = {edge:.3g}; n = {n}).",
        condition=f"GD lr {EOS_LRS[0]:g}",
    ),
    Test(
        "threshold", "C04", "secondary", "log_ratio",
        "log2(divergence threshold · λ_max(init) / 2), per seed",
        "Full-batch GD diverges at about 2/λ_max(init) (the quadratic model's bound)",
        "within", 1.0,
        "a factor 2 either way: the quadratic model is a rough guide, not a precise bound",
        "Divergence threshold = 2^{estimate:.2f} [2^{low:.2f}, 2^{high:.2f}] × 2/λ_max(init) "
        "(λ_max(init) {lam0:.1f}; median threshold lr {median:.3g}; n = {n}); collapsed (dead "
        "ReLUs, counted as not diverged): {collapsed}.",
        condition="GD divergence threshold",
    ),
]  # fmt: skip


def analyze(results: ResultsFolder) -> dict:
    summary = _summary(results)
    seeds = summary["seed"].nunique()
    sweep = summary[summary["arm"] == "sweep"]
    gaps = u_gaps(summary)
    diverged = sweep.groupby("learning_rate")["diverged"].sum()
    runs_out = ", ".join(f"{int(k)} runs diverged at lr {lr:g}" for lr, k in diverged.items() if k)
    largest = gaps["largest"].agg(["min", "max"]) if len(gaps) else pd.Series([np.nan] * 2)
    evidence = {
        "u_shape": per_seed(
            gaps["u"],
            planned=seeds,
            small=sweep["learning_rate"].min(),
            slow=gaps["slow"].mean(),
            fast=gaps["fast"].mean(),
            largest="–".join(dict.fromkeys(f"{v:g}" for v in largest)),
            runs_out=(runs_out or "no run diverged") + " (left out)",
        )
    }
    top = sweep[sweep["learning_rate"] == sweep["learning_rate"].max()]
    evidence["diverges"] = fraction(
        top.set_index("seed")["diverged"],
        planned=seeds,
        top=top["learning_rate"].max(),
        bounces=_bounces(sweep, results.history()),
    )
    eos = eos_runs(results, summary, "eos")
    for lr in EOS_LRS:
        part, excluded = usable(eos[eos["learning_rate"] == lr]) if len(eos) else (eos, {})
        reached = float(part["reached"].mean()) if len(part) else math.nan
        evidence[f"eos_lr{lr:g}"] = ev = per_seed(
            np.log(part.set_index("seed")["late_ratio"]) if len(part) else [],
            planned=seeds,
            excluded=excluded,
            reached=reached,
            **_eos_extras(part, lr),
        )
        if reached < 0.5:
            ev.reason = (
                f"the edge was not reached: {reached:.0%} of seeds got to 0.9·2/lr before the "
                "last quarter, so where λ_max settles is not tested"
            )
        if lr == EOS_LRS[0]:
            rise = np.log(part["late_lambda"] / part["lambda_init"]) if len(part) else []
            extras = _eos_extras(part, lr)
            evidence["sharpening"] = ev = per_seed(rise, planned=seeds, excluded=excluded, **extras)
            if not extras["edge"] >= 2 * extras["lam0"]:
                ev.reason = "2/lr is not at least 2 × λ_max(init) here: no room to sharpen"
    runs = eos_runs(results, summary, "threshold")
    table = thresholds(runs) if len(runs) else thresholds(pd.DataFrame(columns=["seed"]))
    collapsed = runs[runs["collapsed"]].groupby("learning_rate").size() if len(runs) else {}
    evidence["threshold"] = per_seed(
        np.log2(table.set_index("seed")["ratio"]),
        planned=seeds,
        missing_reason="never diverged in the grid (threshold above the largest lr)",
        lam0=table["lambda_init"].mean(),
        median=table["threshold"].median(),
        collapsed=", ".join(f"{k} at lr {lr:g}" for lr, k in dict(collapsed).items()) or "none",
    )
    return evidence


def _eos_extras(part: pd.DataFrame, lr: float) -> dict:
    lam0 = part["lambda_init"].mean() if len(part) else math.nan
    late = part["late_lambda"].mean() if len(part) else math.nan
    return {"edge": 2 / lr, "lam0": lam0, "late": late}


def _bounces(sweep: pd.DataFrame, history: pd.DataFrame) -> str:
    """How often the train loss rose between evaluations ("bounces") at the largest lr
    with no diverged run vs at the lr with the lowest mean final loss."""
    healthy, _ = usable(sweep)
    stable = sweep.groupby("learning_rate")["diverged"].sum()
    if healthy.empty or not (stable == 0).any():
        return "no lr without divergence"
    largest = float(stable[stable == 0].index.max())
    best = float(healthy.groupby("learning_rate")["final_train_loss"].mean().idxmin())
    return (
        f"the train loss rose between evaluations in {_rise_fraction(sweep, history, largest):.0%}"
        f" of intervals at lr {largest:g} (the largest lr with no divergence) vs "
        f"{_rise_fraction(sweep, history, best):.0%} at lr {best:g}"
    )


def _rise_fraction(sweep: pd.DataFrame, history: pd.DataFrame, lr: float) -> float:
    runs = sweep.loc[sweep["learning_rate"] == lr, "run_id"]
    part = history[history["run_id"].isin(runs)].sort_values(["run_id", "epoch"])
    rises = part.groupby("run_id")["train_loss"].diff().dropna()
    return float((rises > 0).mean()) if len(rises) else float("nan")


# ----- figures ---------------------------------------------------------------------------
def figures(results: ResultsFolder, out_dir: Path) -> list[Path]:
    fig.style()
    summary = _summary(results)
    history = results.history()
    paths = []
    sweep = summary[summary["arm"] == "sweep"]
    if not sweep.empty:
        paths.append(_final_loss_figure(sweep, out_dir))
        paths.append(_curves_figure(sweep, history, out_dir))
    eos = summary[summary["arm"] == "eos"]
    if not eos.empty and "sharpness" in history:
        paths.append(_sharpness_figure(eos, history, analyze(results), out_dir))
    threshold = eos_runs(results, summary, "threshold")
    if not threshold.empty:
        steps = int(summary.loc[summary["arm"] == "threshold", "epochs"].max())
        ev = analyze(results)["threshold"]
        paths.append(_threshold_figure(threshold, steps, ev, out_dir))
    return paths


def _final_loss_figure(sweep: pd.DataFrame, out_dir: Path) -> Path:
    n = fig.n_seeds(sweep)
    figure, ax = plt.subplots(figsize=(5.2, 3.6))
    healthy, _ = usable(sweep)
    for column, label, color in (
        ("final_train_loss", "train loss", "C0"),
        ("final_test_loss", "test loss", "C1"),
    ):
        fig.band(ax, healthy, "learning_rate", column, color=color, label=label, marker="o", ms=3)
    ax.scatter(
        healthy["learning_rate"], healthy["final_train_loss"], s=5, color="C0", alpha=0.35, lw=0
    )
    top = mtransforms.blended_transform_factory(ax.transData, ax.transAxes)
    counts = sweep.groupby("learning_rate")["diverged"].agg(["sum", "count"])
    for i, (lr, (k, total)) in enumerate(counts.iterrows()):
        if k:
            ax.scatter([lr], [0.95], marker="x", color="C3", s=40, transform=top, zorder=5)
            ax.text(
                lr,
                0.88 - 0.13 * (i % 2),  # neighbours alternate height: no overlap
                f"{int(k)}/{int(total)}\ndiverged",
                transform=top,
                ha="center",
                va="top",
                fontsize=7,
                color="C3",
            )
    ax.set_xscale("log")
    ax.set_yscale("log")
    lrs = sweep["learning_rate"]
    ax.set_xlim(lrs.min() / 2, lrs.max() * 2)  # the diverged marks do not set the limits
    ax.set_xlabel("learning rate (SGD, batch 100)")
    ax.set_ylabel("loss after the fixed budget")
    steps = int(sweep["steps"].max())
    primary = per_seed(u_gaps(sweep)["u"]).interval
    low, high = primary.ci()
    ax.set_title(
        f"Both ends' train loss above the best lr's by ≥ {primary.estimate:.2f} "
        f"[{low:.2f}, {high:.2f}] nats (n = {primary.n} seeds)\nMNIST-1D MLP, {steps:,} SGD "
        f"steps; {fig.BAND_NOTE} (n = {n}), diverged runs left out;\ndots: train loss per "
        "seed; × diverged runs",
        fontsize=9,
    )
    ax.legend(loc="lower left")
    return fig.save(figure, out_dir, "final_loss_vs_lr")


def _curves_figure(sweep: pd.DataFrame, history: pd.DataFrame, out_dir: Path) -> Path:
    n = fig.n_seeds(sweep)
    part = history[history["run_id"].isin(sweep["run_id"])]
    diverged = set(sweep.loc[sweep["diverged"], "run_id"])
    lrs = sorted(sweep["learning_rate"].unique())
    colors = [tuple(c) for c in plt.get_cmap("turbo")(np.linspace(0.05, 0.95, len(lrs)))]
    figure, ax = plt.subplots(figsize=(6.4, 4.0))
    for color, lr in zip(colors, lrs):
        runs = part[part["learning_rate"] == lr]
        healthy = runs[~runs["run_id"].isin(diverged)]
        k = runs.loc[runs["run_id"].isin(diverged), "run_id"].nunique()
        label = f"lr {lr:g}" + (f" ({k}/{runs['run_id'].nunique()} diverged)" if k else "")
        if not healthy.empty:
            fig.band(ax, healthy, "step", "train_loss", color=color, label=label)
            label = None
        for _, run in runs[runs["run_id"].isin(diverged)].groupby("run_id"):
            until = run[run["step"] < run["step"].max()]
            stop = run[run["step"] == run["step"].max()].iloc[:1]
            ax.plot(until["step"], until["train_loss"], color=color, ls=":", lw=0.8, label=label)
            ax.scatter(stop["step"], stop["train_loss"], marker="x", color=color, s=40, zorder=5)
            label = None
    ax.set_yscale("log")
    ax.set_xlabel("SGD step")
    ax.set_ylabel("train loss (cross-entropy)")
    final = part[~part["run_id"].isin(diverged)].sort_values("step").groupby("run_id").last()
    means = final.groupby("learning_rate")["train_loss"].mean()
    best = float(means.idxmin()) if len(means) else math.nan
    ax.set_title(
        f"Smallest lr {lrs[0]:g} ends at train CE {means.get(lrs[0], math.nan):.2f}, best lr "
        f"{best:g} at {means.min():.3f}; {len(diverged)} runs diverged\n"
        f"Loss curves per learning rate ({fig.BAND_NOTE}, n = {n} seeds); "
        "dotted: diverged runs up to their last finite state (×)",
        fontsize=8,
    )
    ax.legend(fontsize=6.5, ncol=2, loc="lower left")
    return fig.save(figure, out_dir, "loss_curves")


def _edge_finding(evidence: dict, lrs: list[float]) -> str:
    """Per eos lr, where λ_max ends: at the edge (λ_max·lr/2 with its CI) or not reached."""
    parts = []
    for lr in lrs:
        ev = evidence.get(f"eos_lr{lr:g}")
        if ev is None:
            continue
        extras = ev.extras
        if ev.reason or not ev.interval.n:
            parts.append(
                f"lr {lr:g}: λ_max {extras['lam0']:.0f} → {extras['late']:.0f}, 2/lr = "
                f"{extras['edge']:.0f} not reached"
            )
        else:
            low, high = ev.interval.ci()
            parts.append(
                f"lr {lr:g}: λ_max·lr/2 = {math.exp(ev.interval.estimate):.2f} "
                f"[{math.exp(low):.2f}, {math.exp(high):.2f}]"
            )
    return "; ".join(parts)


def _sharpness_figure(
    eos: pd.DataFrame, history: pd.DataFrame, evidence: dict, out_dir: Path
) -> Path:
    healthy = eos[~eos["diverged"]]
    n = fig.n_seeds(healthy)
    part = history[history["run_id"].isin(healthy["run_id"])]
    lrs = sorted(healthy["learning_rate"].unique())
    colors = sns.color_palette("colorblind", len(lrs))
    figure, (left, right) = plt.subplots(1, 2, figsize=(9.6, 3.8))
    for color, lr in zip(colors, lrs):
        runs = part[part["learning_rate"] == lr]
        for _, run in runs.groupby("run_id"):
            left.plot(run["step"], run["sharpness"], color=color, lw=0.5, alpha=0.3)
        fig.band(left, runs, "step", "sharpness", color=color, label=f"lr {lr:g}")
        left.axhline(2 / lr, color=color, ls="--", lw=1.2)
        left.text(
            part["step"].max(),
            2 / lr,
            f"2/lr = {2 / lr:.3g}",
            color=color,
            ha="right",
            va="bottom",
            fontsize=7,
        )
        fig.band(right, runs, "step", "train_loss", color=color, label=f"lr {lr:g}")
    steps = int(healthy["steps"].max())
    k = int(np.diff(np.sort(part["step"].unique()))[0]) if part["step"].nunique() > 1 else 0
    left.set_xlabel("GD step (full batch)")
    left.set_ylabel("top Hessian eigenvalue λ_max")
    left.set_title(f"Sharpness every {k} steps; dashed: 2/lr", fontsize=9)
    left.legend(loc="upper left")
    right.set_yscale("log")
    right.yaxis.set_major_formatter(mticker.FormatStrFormatter("%g"))
    right.yaxis.set_minor_formatter(mticker.FormatStrFormatter("%g"))
    right.set_xlabel("GD step (full batch)")
    right.set_ylabel("train loss (MSE)")
    right.set_title("Training loss", fontsize=9)
    figure.suptitle(
        "Edge of stability, last quarter: "
        + _edge_finding(evidence, lrs)
        + f"\nMNIST-5k (3,000 train), MLP, {steps} GD steps ({fig.BAND_NOTE}, thin lines: "
        f"seeds; n = {n} seeds)",
        fontsize=9,
    )
    return fig.save(figure, out_dir, "sharpness_vs_step")


def _threshold_figure(runs: pd.DataFrame, steps: int, evidence, out_dir: Path) -> Path:
    n = runs["seed"].nunique()
    runs = runs.assign(init_ratio=runs["learning_rate"] * runs["lambda_init"] / 2)
    outcome = np.where(
        runs["diverged"], "diverged", np.where(runs["collapsed"], "collapsed", "did not diverge")
    )
    runs = runs.assign(outcome=outcome)
    figure, (left, right) = plt.subplots(1, 2, figsize=(9.6, 3.6))
    styles = {"did not diverge": ("o", "C0"), "collapsed": ("s", "C7"), "diverged": ("x", "C3")}
    lrs = sorted(runs["learning_rate"].unique())
    jitter = {lr: i for i, lr in enumerate(lrs)}
    for name, (marker, color) in styles.items():
        part = runs[runs["outcome"] == name]
        if part.empty:
            continue
        y = part["learning_rate"].map(jitter) + (part["seed"] - n / 2) * 0.03
        left.scatter(part["init_ratio"], y, marker=marker, color=color, s=18, label=name)
        kept = part[part["outcome"] != "diverged"]
        right.scatter(
            kept["init_ratio"], kept["late_ratio"], marker=marker, color=color, s=18, label=name
        )
    for ax in (left, right):
        ax.set_xscale("log")
        ax.xaxis.set_major_formatter(mticker.FormatStrFormatter("%g"))
        ax.axvline(1.0, color="k", ls="--", lw=1)
        ax.set_xlabel("lr · λ_max(init) / 2   (1 = the classical bound 2/λ_max(init))")
    left.set_yticks(range(len(lrs)), [f"{lr:g}" for lr in lrs])
    left.set_ylabel("learning rate (one mark per seed)")
    left.set_title(f"Outcome after {steps} steps", fontsize=9)
    left.legend(fontsize=7)
    right.axhline(1.0, color="k", ls=":", lw=1)
    right.set_yscale("log")
    right.yaxis.set_major_formatter(mticker.FormatStrFormatter("%g"))
    right.yaxis.set_minor_formatter(mticker.FormatStrFormatter("%g"))
    right.set_ylabel("λ_max · lr / 2 at the end (last quarter)")
    right.set_title("Sharpness at the end of the runs that did not diverge", fontsize=9)
    finding = "no seed diverged in the grid"
    if evidence.interval.n:
        low, high = evidence.interval.ci()
        finding = (
            f"GD first diverges at {2**evidence.interval.estimate:.1f}× [{2**low:.1f}×, "
            f"{2**high:.1f}×] 2/λ_max(init) (n = {evidence.interval.n} seeds that diverged)"
        )
    figure.suptitle(
        f"{finding}\nDivergence threshold vs 2/λ_max at init (GD, MNIST-5k, {steps} steps; "
        f"n = {n} seeds)",
        fontsize=9,
    )
    return fig.save(figure, out_dir, "divergence_threshold")
