"""Representations: linear probes by depth, first-layer filters and CKA over training (C09).

Command: ``toolkit run exp_representations --seeds 10``

Four settings, one cohort each: an MLP (3 hidden layers of 128, ReLU) and a 3-layer
CNN on MNIST-1D (4,000 train / 1,000 val / 12,000 test; the CNN is MNIST-1D's
ConvBase: 25 channels, kernels 5/3/3, stride 2) and on MNIST-5k (real 28×28 digits,
3,000 / 500 / 1,500; the CNN is its 2-D counterpart ``cnn2d``: 8/16/32 channels,
kernels 5×5/3×3/3×3, stride 2). All are trained with SGD + heavy-ball momentum 0.9,
lr 0.05, batch 100: 24 epochs (960 steps) on MNIST-1D, 12 epochs (360 steps) on
MNIST-5k. Plain SGD, not Adam: Adam moves every weight that gets any gradient by
about the same step, which would spread the first-layer changes by construction.

Measured per run, on the final parameters and on the run's initial parameters
(rebuilt from its ``init`` key: the untrained network of the same architecture is
the random baseline; a random network's layers are themselves random features, so
no separate random-feature baseline is added):

- Linear probes on every layer (input = layer 0, then each hidden layer; the logits
  are not probed): multinomial logistic regression on the frozen activations of the
  whole train split, scored on the test split, with one budget for every layer —
  features standardized by train statistics, 300 full-batch Adam steps (lr 0.03)
  from zero, L2 1e-3 (:mod:`toolkit.probes`). JAX rather than scikit-learn: the
  probe is vmapped over runs and states (init, trained) and needs no new
  dependency. Against 3,000 steps, 300 lose < 0.1 pp on the MNIST-1D layers and
  0.6 pp on the widest MNIST layer (CNN layer 1, 1,568 features): a small bias in
  favour of the narrower deeper layers there, well below the gains measured.
- First-layer weights: every MLP unit's weights (28×28 images on MNIST, 40-long
  profiles on MNIST-1D) and the CNN kernels, at init and trained (figures: units
  0–15 and all kernels of seed 0). Localization of an MLP unit, fixed before any
  run: the largest fraction of its squared weight mass ``Σw²`` inside one 7×7
  window (MNIST; 1/16 of the image) or one window of 8 positions (MNIST-1D; 1/5), for
  the trained weights, the initial ones and the change ``Δw``. The null for ``Δw`` is
  a random unit spread over the pixels in proportion to the data: ``w = √var(x)·z``,
  ``z ~ N(0, I)`` (1,000 draws). On MNIST the border pixels are always 0, get no
  gradient and keep their initial weights, so ``Δw`` is the cleaner read-out.
- First-layer CNN kernels on MNIST (``cnn2d``: 8 kernels of 5×5 on one input channel),
  every kernel of every seed at init, trained and their change ``Δw`` (table
  ``kernels``): two edge/stroke statistics fixed before the run — *smoothness*, the
  lag-1 spatial autocorrelation of the centered kernel (i.i.d. random kernels: −1/24 ≈
  −0.04; stroke and edge detectors are coherent at the pixel scale), and *edge share*,
  the fraction of the centered kernel's energy explained by the best oriented ramp
  ``a·x + b·y`` (the Prewitt edge operator is such a ramp; i.i.d.: 2/24 ≈ 0.083). On a
  5×5 kernel "localized" is trivially true, so the filter claim is tested on a CNN by
  these two (figure ``kernel_structure``; seed 0's kernels in ``filters_kernels``).
- Linear CKA (Gram form, first 500 test examples) between every pair of layers at
  init and trained, and between each layer at epoch t and the same layer at the
  end, at t = 0, T/12, T/2, T. Checkpoints come from the engine: the cohort keeps the
  parameters at the end of epochs T/12 and T/2 of its one training run
  (``CohortSpec.checkpoints``, from ``checkpoint_fractions``); a grid factor over
  epochs would put them in other cohorts, which a per-cohort ``measure`` cannot
  compare. The checkpoint at T/2 gives the run's own train loss at that epoch
  exactly (column ``checkpoint_loss_mismatch``: 0 in every run). "Settled" is
  normalized: progress ``(CKA(t,T) − CKA(0,T)) / (1 − CKA(0,T))``, since lower layers
  start closer to their final form (they are nearer the shared input).

Tests (``TESTS``; per seed, t-intervals over seeds): the C09 primary is the slope of
probe test accuracy on the index of the *hidden* layers (the raw input is not a
layer; pp per layer, > 1 pp) of the trained MNIST-1D MLP. Secondary: the same slope in
the other settings, at init, and trained − init; localization of trained vs initial
weights and of ``Δw`` vs the null (MLPs); smoothness and edge share of the MNIST CNN's
first-layer kernels, trained − init paired by seed; the slope of settling progress on depth
(< 0: lower layers settle first; Zeiler & Fergus, beyond the article).

Cost: default profile (4 settings × 10 seeds = 40 runs, 4 cohorts, one training each:
the checkpoints are kept by it) 5 min 10 s wall on the 2-core CPU under load average
~3 from other jobs (341 s of CPU time at 108%, 63 s of it compiling; measured with
``time toolkit run exp_representations --seeds 10 --no-compile-cache``). The earlier
protocol, which trained every cohort again to each checkpoint inside ``measure``,
took 539 s of CPU time (238 s compiling) against this one's 360 s (148 s) side by
side under load 3–7, and wrote the same CSVs byte for byte. The CNNs dominate (their
first chunk and training: 1-D ~50 s, 2-D ~100 s), then the probes (300 steps on
3,000–4,000 examples × up to 1,568 features, 20 per layer). Paper profile: a hierarchy
read off three hidden layers is a weak case, so the paper MLP is deeper and wider (4
hidden layers of 256) and the CNNs wider (MNIST-1D 64/64/64 channels, MNIST 16/32/64), with
20 seeds, twice the epochs and CKA on 1,000 inputs; the primary's smallest effect stays
1 pp per layer, so a slope that flattens over the added layers is reported as such.
Sized for one GPU, about a minute plus compilation (not measured; a 5-hidden-layer MLP
was checked to run through the analysis and figures with the quick profile). Quick profile: tiny widths, 2 epochs, 2 seeds; ~2 min
20 s under load from other jobs.

Expected (Alain & Bengio 2016; science notes): on MNIST-1D probe accuracy climbs
steeply with depth from ~32% on the raw input; on MNIST the raw pixels are already
~90% linearly separable, so the gain is a few pp. Random networks' layers are
linearly probe-able too (random features), so part of any depth trend may exist at
init. First-layer MNIST MLP weights should look like localized strokes or blobs.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, ClassVar

import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from toolkit import alignment, probes
from toolkit import figures as fig
from toolkit.claimtests import Test, per_seed, usable
from toolkit.engine import METRICS, CohortSpec
from toolkit.results import ResultsFolder
from toolkit.spec import Count, NonNegative, Positive, Range, RunConfig, SpecError, Widths

CLAIMS = ("C09",)
#: The figure the claims report links for each claim.
CLAIM_FIGURES = {"C09": "probe_accuracy_vs_depth"}
DATASET_NAMES = {"mnist1d": "MNIST-1D", "mnist5k": "MNIST-5k"}
MODEL_NAMES = {"mlp": "MLP", "cnn": "CNN", "cnn2d": "CNN"}
SETTINGS = [("mnist1d", "mlp"), ("mnist1d", "cnn"), ("mnist5k", "mlp"), ("mnist5k", "cnn2d")]
NULL_DRAWS = 1000
NULL_SEED = 9


@dataclass(frozen=True)
class Config(RunConfig):
    # scientific: the setting (dataset × architecture)
    dataset: str = "mnist1d"  # "mnist1d" or "mnist5k"
    model: str = "mlp"  # "mlp", "cnn" (1-D, MNIST-1D) or "cnn2d" (2-D, MNIST-5k)
    # fixed: the architectures
    mlp_widths: Widths = (128, 128, 128)
    cnn_channels: Widths = (25, 25, 25)  # MNIST-1D ConvBase
    cnn2d_channels: Widths = (8, 16, 32)
    # fixed: the training protocol
    optimizer: str = "sgd"
    learning_rate: float = 0.05
    momentum: float = 0.9
    batch_size: int = 100
    epochs_mnist1d: Count = 24
    epochs_mnist5k: Count = 12
    history_points: int = 2  # evaluate at T/2 (checked against the checkpoint) and at T
    # fixed: the measurement protocol
    # of the epochs, each strictly between 0 and 1
    checkpoint_fractions: Annotated[tuple[float, ...], Range(gt=0, lt=1)] = (1 / 12, 1 / 2)
    probe_steps: Count = probes.PROBE_STEPS
    probe_learning_rate: Positive = probes.PROBE_LEARNING_RATE
    probe_l2: NonNegative = probes.PROBE_L2
    cka_examples: Count = 500  # the first test examples
    filter_units: Count = 16  # MLP units 0..n-1 of seed 0 kept for the filter figures
    window_2d: Count = 7  # localization window (MNIST): k × k pixels
    window_1d: Count = 8  # localization window (MNIST-1D): k positions

    DERIVED: ClassVar[dict[str, str]] = {
        "widths": "set mlp_widths, cnn_channels or cnn2d_channels instead",
        "epochs": "set epochs_mnist1d or epochs_mnist5k instead",
    }
    #: the measurement protocol: changing it re-measures the same training runs
    MEASURE_FIELDS: ClassVar[frozenset[str]] = frozenset(
        {"checkpoint_fractions", "probe_steps", "probe_learning_rate", "probe_l2"}
        | {"cka_examples", "filter_units", "window_2d", "window_1d"}
    )

    def cohort_spec(self) -> CohortSpec:
        allowed = {"mlp": ("mnist1d", "mnist5k"), "cnn": ("mnist1d",), "cnn2d": ("mnist5k",)}
        if self.dataset not in allowed.get(self.model, ()):
            raise SpecError(f"model {self.model!r} on {self.dataset!r}: use one of {SETTINGS}")
        widths = {"mlp": self.mlp_widths, "cnn": self.cnn_channels, "cnn2d": self.cnn2d_channels}
        return dataclasses.replace(
            super().cohort_spec(),
            widths=tuple(widths[self.model]),
            epochs=self.run_epochs(),
            checkpoints=tuple(self.checkpoint_epochs()),
        )

    def run_epochs(self) -> int:
        return self.epochs_mnist1d if self.dataset == "mnist1d" else self.epochs_mnist5k

    def checkpoint_epochs(self) -> list[int]:
        """Intermediate checkpoints (epochs strictly between 0 and the end)."""
        epochs = self.run_epochs()
        picked = {max(1, round(f * epochs)) for f in self.checkpoint_fractions}
        return sorted(e for e in picked if e < epochs)


GRID = [{"dataset": d, "model": m} for d, m in SETTINGS]

PROFILES = {
    "quick": {
        "seeds": 2,
        "mlp_widths": (16, 16, 16),
        "cnn_channels": (4, 4, 4),
        "cnn2d_channels": (2, 4, 4),
        "epochs_mnist1d": 2,
        "epochs_mnist5k": 2,
        "probe_steps": 20,
        "cka_examples": 100,
        "filter_units": 4,
    },
    "default": {"seeds": 10},
    "paper": {
        "seeds": 20,
        "mlp_widths": (256, 256, 256, 256),  # deeper and wider: the claim is about depth
        "cnn_channels": (64, 64, 64),
        "cnn2d_channels": (16, 32, 64),
        "epochs_mnist1d": 48,
        "epochs_mnist5k": 24,
        "cka_examples": 1000,
    },
}


# ----- measurements ------------------------------------------------------------------
def localization(weights_UxD: np.ndarray, window: int, side: int | None = None) -> np.ndarray:
    """Per unit: the largest fraction of ``Σ w²`` inside one window (NaN if all zero).

    ``side``: units are ``side × side`` images and windows ``window × window`` squares;
    otherwise units are 1-D profiles and windows ``window`` consecutive positions.
    """
    energy = np.asarray(weights_UxD, np.float64) ** 2
    total = energy.sum(axis=1)
    if side is None:
        cumulative = np.pad(np.cumsum(energy, axis=1), ((0, 0), (1, 0)))
        sums = cumulative[:, window:] - cumulative[:, :-window]
    else:
        images = energy.reshape(len(energy), side, side)
        c = np.pad(images.cumsum(1).cumsum(2), ((0, 0), (1, 0), (1, 0)))
        sums = c[:, window:, window:] - c[:, :-window, window:] - c[:, window:, :-window]
        sums = (sums + c[:, :-window, :-window]).reshape(len(energy), -1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(total > 0, sums.max(axis=1) / total, np.nan)


def kernel_structure(weights_RxUxD: np.ndarray, side: int) -> dict[str, np.ndarray]:
    """Edge/stroke structure of square single-channel kernels (``side × side``), per kernel.

    ``smoothness``: lag-1 spatial autocorrelation of the centered kernel (mean product of
    horizontally and vertically adjacent weights over the mean square); an i.i.d. random
    kernel has ≈ −1/(k²−1) (−0.04 for 5×5), a stroke or edge detector is coherent at the
    pixel scale (→ 1). ``edge``: share of the centered kernel's energy explained by the best
    oriented ramp ``a·x + b·y`` (the Prewitt edge operator is such a ramp); i.i.d. random
    kernels have 2/(k²−1) (0.083 for 5×5) in expectation.
    """
    w = np.asarray(weights_RxUxD, np.float64)
    w = w.reshape(*w.shape[:-1], side, side)
    c = w - w.mean(axis=(-2, -1), keepdims=True)
    energy = (c**2).sum(axis=(-2, -1))
    pairs = (c[..., 1:, :] * c[..., :-1, :]).sum(axis=(-2, -1))
    pairs = pairs + (c[..., :, 1:] * c[..., :, :-1]).sum(axis=(-2, -1))
    yy, xx = np.mgrid[:side, :side] - (side - 1) / 2
    ramp = (c * xx).sum(axis=(-2, -1)) ** 2 / (xx**2).sum()
    ramp = ramp + (c * yy).sum(axis=(-2, -1)) ** 2 / (yy**2).sum()
    with np.errstate(invalid="ignore", divide="ignore"):
        return {
            "smoothness": np.where(
                energy > 0, (pairs / (2 * side * (side - 1))) / (energy / side**2), np.nan
            ),
            "edge": np.where(energy > 0, ramp / energy, np.nan),
        }


def _first_kernel(params) -> np.ndarray:
    """First-layer weights as (runs, units, inputs): Dense_0 or Conv_0 kernel."""
    layers = params["params"]
    kernel = np.asarray(
        layers["Dense_0"]["kernel"] if "Conv_0" not in layers else layers["Conv_0"]["kernel"]
    )
    return np.moveaxis(kernel.reshape(kernel.shape[0], -1, kernel.shape[-1]), -1, 1)


def _window(config: Config, num_inputs: int) -> tuple[int, int | None]:
    side = math.isqrt(num_inputs)
    if config.dataset == "mnist5k" and side * side == num_inputs:
        return config.window_2d, side
    return config.window_1d, None


@functools.cache
def null_localization(dataset: str, window: int, side: int | None) -> float:
    """Mean localization of random units shaped by the data: w = √var(x)·z, z ~ N(0, I)."""
    from toolkit import data as datasets

    x = datasets.load(dataset).x_train
    z = np.random.default_rng(NULL_SEED).standard_normal((NULL_DRAWS, x.shape[1]))
    return float(np.nanmean(localization(np.sqrt(x.var(axis=0)) * z, window, side)))


@functools.cache
def input_probe(dataset: str, steps: int, learning_rate: float, l2: float) -> dict:
    """The probe on the raw input (the same for every run of a dataset)."""
    from toolkit import data as datasets

    d = datasets.load(dataset)
    fit = jax.jit(
        functools.partial(
            probes.probe, num_classes=d.num_classes, l2=l2, steps=steps, learning_rate=learning_rate
        )
    )
    out = fit(
        jnp.asarray(d.x_train), jnp.asarray(d.y_train), jnp.asarray(d.x_test), jnp.asarray(d.y_test)
    )
    return {k: float(v) for k, v in out.items()}


def _measurements(model, evaluate, config: Config, num_classes: int):
    """The per-run measurement program: initial parameters (rebuilt as the engine builds
    them), probes on every hidden layer at init and trained, the centered Grams of
    every layer at every checkpoint → CKA, and each checkpoint's training loss (the
    engine's ``evaluate``, on the run's own training labels)."""
    num_layers = len(config.cohort_spec().widths)
    fit = functools.partial(
        probes.probe,
        num_classes=num_classes,
        l2=config.probe_l2,
        steps=config.probe_steps,
        learning_rate=config.probe_learning_rate,
    )

    def features(params, x):
        return model.apply(params, x, return_features=True)[1]

    def per_run(
        key, init_scale, labels, *checkpoints_and_final, x_train, y_train, x_test, y_test, x_cka
    ):
        initial = model.init(key, x_train[:1])
        initial = jax.tree_util.tree_map(lambda p: p * init_scale, initial)
        final = checkpoints_and_final[-1]
        checkpoint_loss = [evaluate(p, x_train, labels)[0] for p in checkpoints_and_final[:-1]]
        scores = {}
        for layer in range(1, num_layers + 1):
            for state, params in (("init", initial), ("trained", final)):
                train_f, test_f = features(params, x_train)[layer], features(params, x_test)[layer]
                scores[(layer, state)] = fit(train_f, y_train, test_f, y_test)
        grams = jnp.stack(
            [
                jnp.stack([alignment.centered_gram(f) for f in features(params, x_cka)])
                for params in (initial, *checkpoints_and_final)
            ]
        )  # (checkpoints, layers + 1, n, n)
        pair = jax.vmap(jax.vmap(alignment.gram_cka, (None, 0)), (0, None))
        over_time = jax.vmap(jax.vmap(alignment.gram_cka, (0, None)), (1, 0))(grams, grams[-1])
        return {
            "initial": initial,
            "probes": scores,
            "cka_init": pair(grams[0], grams[0]),
            "cka_trained": pair(grams[-1], grams[-1]),
            "cka_time": over_time,  # (layers + 1, checkpoints)
            # (intermediate checkpoints,): none when the run is too short to have one
            "checkpoint_train_loss": jnp.stack(checkpoint_loss)
            if checkpoint_loss
            else jnp.zeros(0),
        }

    return per_run


def measure(trained) -> dict:
    cohort, runs = trained.cohort, trained.runs
    config: Config = runs[0].config
    data = cohort.data
    num_layers = len(cohort.spec.widths)
    final = trained.result.state["params"]
    checkpoint_epochs = config.checkpoint_epochs()
    checkpoints = [trained.result.checkpoints[t] for t in checkpoint_epochs]
    epochs = [0, *checkpoint_epochs, cohort.spec.epochs]
    per_run = _measurements(cohort.model, cohort.evaluate, config, data.num_classes)
    shared = {
        "x_train": jnp.asarray(data.x_train),
        "y_train": jnp.asarray(data.y_train),
        "x_test": jnp.asarray(data.x_test),
        "y_test": jnp.asarray(data.y_test),
        "x_cka": jnp.asarray(data.x_test[: config.cka_examples]),
    }
    scale = np.array([r.config.init_scale for r in runs], np.float32)
    labels = trained.result.state["labels"]
    run_args = (trained.keys["init"], scale, labels, *checkpoints, final)
    out = trained.map(lambda *args: per_run(*args[:-1], **args[-1]), run_args, (shared,))
    initial = out["initial"]

    base = input_probe(
        cohort.spec.dataset, config.probe_steps, config.probe_learning_rate, config.probe_l2
    )
    probe_rows, layer_rows, time_rows = [], [], []
    for r in range(len(runs)):
        for state in ("init", "trained"):
            probe_rows.append(trained.row(r, layer=0, state=state, **base))
        for layer in range(1, num_layers + 1):
            for state in ("init", "trained"):
                values = {k: float(v[r]) for k, v in out["probes"][(layer, state)].items()}
                probe_rows.append(trained.row(r, layer=layer, state=state, **values))
        for state in ("init", "trained"):
            matrix = np.asarray(out[f"cka_{state}"][r])
            for a in range(num_layers + 1):
                for b in range(num_layers + 1):
                    layer_rows.append(
                        trained.row(r, state=state, layer_a=a, layer_b=b, cka=float(matrix[a, b]))
                    )
        for layer in range(1, num_layers + 1):
            for s, epoch in enumerate(epochs):
                value = float(out["cka_time"][r][layer, s])
                time_rows.append(trained.row(r, layer=layer, epoch=epoch, cka_to_final=value))

    # Check of the checkpoints: a kept epoch's train loss vs the run's history there.
    mismatch = np.full(len(runs), np.nan)
    history_epochs = list(trained.result.eval_epochs)
    for c, t in enumerate(checkpoint_epochs):
        if t in history_epochs:
            main = trained.result.history[:, history_epochs.index(t), METRICS.index("train_loss")]
            gap = np.abs(np.asarray(out["checkpoint_train_loss"])[:, c] - main)
            mismatch = np.fmax(mismatch, gap)

    # First-layer weights: localization per unit, and the filters of seed 0.
    w_init, w_final = _first_kernel(initial), _first_kernel(final)
    unit_rows, filter_rows = [], []
    values = {"checkpoint_loss_mismatch": mismatch}
    if cohort.spec.model == "mlp":
        window, side = _window(config, w_init.shape[2])
        null = null_localization(cohort.spec.dataset, window, side)
        loc = {
            "init": np.stack([localization(w, window, side) for w in w_init]),
            "trained": np.stack([localization(w, window, side) for w in w_final]),
            "delta": np.stack([localization(w, window, side) for w in w_final - w_init]),
        }
        for r in range(len(runs)):
            for u in range(w_init.shape[1]):
                values_u = {k: float(v[r, u]) for k, v in loc.items()}
                unit_rows.append(trained.row(r, unit=u, **values_u, null=null))
    kernel_rows = []
    side = math.isqrt(w_init.shape[2])
    if cohort.spec.model == "cnn2d" and side * side == w_init.shape[2]:  # one input channel
        by_state = (("init", w_init), ("trained", w_final), ("delta", w_final - w_init))
        structure = {state: kernel_structure(w, side) for state, w in by_state}
        for r in range(len(runs)):
            for u in range(w_init.shape[1]):
                for state, stats in structure.items():
                    values_k = {k: float(v[r, u]) for k, v in stats.items()}
                    kernel_rows.append(trained.row(r, unit=u, state=state, **values_k))
    for r, run in enumerate(runs):
        if run.seed != 0:
            continue
        units = w_init.shape[1] if cohort.spec.model != "mlp" else config.filter_units
        for state, weights in (("init", w_init), ("trained", w_final)):
            for u in range(min(units, weights.shape[1])):
                for i, value in enumerate(weights[r, u]):
                    filter_rows.append(
                        trained.row(r, state=state, unit=u, position=i, weight=float(value))
                    )
    return {
        **values,
        "probes": pd.DataFrame(probe_rows),
        "cka_layers": pd.DataFrame(layer_rows),
        "cka_training": pd.DataFrame(time_rows),
        "localization": pd.DataFrame(unit_rows),
        "filters": pd.DataFrame(filter_rows),
        "kernels": pd.DataFrame(kernel_rows),
    }


# ----- analysis ----------------------------------------------------------------------
PRIMARY_SETTING = ("mnist1d", "mlp")
PROBE_REASON = (
    "1 pp per layer (2 pp from hidden layer 1 to 3) is the smallest visible hierarchy; less "
    "is within the probe's own budget bias (≤ 0.6 pp) and the test-split SE (≈ 0.5 pp)"
)
EXPLORATORY = "exploratory: any effect in the predicted direction is reported"


def _setting(dataset: str, model: str) -> str:
    return f"{DATASET_NAMES.get(dataset, dataset)} {MODEL_NAMES.get(model, model)}"


# fmt: off
def _tests(setting: tuple[str, str]) -> list[Test]:
    name, key = _setting(*setting), "_".join(setting)
    role = "primary" if setting == PRIMARY_SETTING else "secondary"
    slope = "OLS slope of linear-probe test accuracy on hidden-layer index (accuracy per layer)"
    window = "7×7 window" if setting[0] == "mnist5k" else "window of 8"
    loc = f"mean over first-layer units of the share of Σw² in the best {window}"
    ci = "{estimate:+.1%} [{low:+.1%}, {high:+.1%}] per hidden layer"
    ci3 = "{estimate:+.3f} [{low:+.3f}, {high:+.3f}]"
    hidden, first = f"{name}, hidden layers only", f"{name}, first layer"
    tests = [
        Test(f"slope_{key}", "C09", role, "slope", f"{slope}, trained",
             "After training, linear-probe accuracy rises with depth through the hidden layers",
             "greater", 0.01, PROBE_REASON, f"Trained: {ci} ({{n}} of {{planned}} seeds, "
             "{verdict}); by layer (input, 1, 2, 3): {trained}.", hidden),
        Test(f"init_slope_{key}", "C09", "secondary", "slope", f"{slope}, initial weights",
             "Not at init: a random network's probe accuracy does not rise with depth", "less",
             0.0, EXPLORATORY, f"At init: {ci}; by layer (input, 1, 2, 3): {{init}}.", hidden),
        Test(f"gain_{key}", "C09", "secondary", "paired_difference",
             "slope trained − slope at init, paired by seed (accuracy per hidden layer)",
             "The depth trend comes from training", "greater", 0.01, PROBE_REASON,
             f"Training adds {ci}.", hidden),
        Test(f"settling_{key}", "C09", "secondary", "slope", "slope over hidden layers of the "
             "mean CKA settling progress at the intermediate checkpoints (per layer)",
             "Lower layers settle first (progress toward their final CKA falls with depth)",
             "less", 0.0, "exploratory, beyond the article (Zeiler & Fergus 2014)",
             f"Settling progress changes {ci3} per layer (mean at epochs {{epochs}}, layers "
             "1–3: {progress}).", f"{name}, beyond the article"),
    ]
    if setting[1] == "mlp":
        tests += [
            Test(f"localization_{key}", "C09", "secondary", "paired_difference",
                 f"{loc}, trained − initial weights",
                 "First-layer units become more localized than at init", "greater", 0.0,
                 EXPLORATORY, f"The share changes {ci3} from {{init:.3f}} at init to "
                 "{trained:.3f}.", first),
            Test(f"delta_localization_{key}", "C09", "secondary", "mean",
                 f"{loc}, Δw − random units √var(x)·z",
                 "What training adds (Δw) is more localized than a random unit shaped by the "
                 "data", "greater", 0.0, EXPLORATORY, f"Localization of Δw is {ci3} above the "
                 "null ({null:.3f}); Δw: {delta:.3f}.", first),
        ]
    if setting[1] == "cnn2d":
        kernels = f"{name}, first-layer 5×5 kernels"
        tests += [
            Test(f"kernel_smoothness_{key}", "C09", "secondary", "paired_difference",
                 "mean over first-layer kernels of the lag-1 spatial autocorrelation, trained "
                 "− initial", "First-layer CNN kernels become spatially coherent (stroke/edge-"
                 "like) through training, unlike at init", "greater", 0.0, EXPLORATORY,
                 f"Smoothness changes {ci3} from {{init:.3f}} at init (i.i.d. kernels: "
                 "{null_smooth:.3f}) to {trained:.3f}; what training adds (Δw) has "
                 "{delta:.3f}.", kernels),
            Test(f"kernel_edge_{key}", "C09", "secondary", "paired_difference",
                 "mean over first-layer kernels of the energy share of the best oriented ramp "
                 "(an edge operator), trained − initial",
                 "First-layer CNN kernels become oriented edge detectors through training",
                 "greater", 0.0, EXPLORATORY,
                 f"The ramp (edge) share changes {ci3} from {{init:.3f}} at init (i.i.d. "
                 "kernels: {null_edge:.3f}) to {trained:.3f}; Δw: {delta:.3f}.", kernels),
        ]
    return tests
# fmt: on


TESTS = [test for setting in SETTINGS for test in _tests(setting)]


def _slopes(frame: pd.DataFrame, x: str, y: str) -> pd.Series:
    """Per seed: the OLS slope of ``y`` on ``x``."""
    return frame.groupby("seed")[[x, y]].apply(
        lambda g: np.polyfit(g[x], g[y], 1)[0] if g[x].nunique() > 1 else np.nan
    )


def progress(training: pd.DataFrame) -> pd.DataFrame:
    """Adds ``progress``: (CKA(t,T) − CKA(0,T)) / (1 − CKA(0,T)) per run and layer."""
    frame = training.copy()
    start = frame[frame["epoch"] == 0].set_index(["run_id", "layer"])["cka_to_final"]
    at_zero = start.reindex(pd.MultiIndex.from_frame(frame[["run_id", "layer"]])).to_numpy()
    room = 1.0 - at_zero
    frame["progress"] = np.where(room > 1e-3, (frame["cka_to_final"] - at_zero) / room, np.nan)
    return frame


def _runs(results: ResultsFolder, table: pd.DataFrame, setting) -> tuple:
    """The rows of ``table`` from one setting's runs that did not diverge, with the
    seeds planned and the runs excluded."""
    summary = results.summary()
    summary = summary[(summary["dataset"] == setting[0]) & (summary["model"] == setting[1])]
    kept, excluded = usable(summary)
    rows = table[table["run_id"].isin(kept["run_id"])] if len(table) else table
    return rows, {"planned": len(summary), "excluded": excluded}


def probe_evidence(results: ResultsFolder, setting) -> dict:
    """The probe-slope evidence of one setting (hidden layers only; also for figures)."""
    part, common = _runs(results, results.table("probes"), setting)
    slopes, text = {}, {}
    for state in ("trained", "init"):
        rows = part[part["state"] == state]
        text[state] = ", ".join(f"{v:.1%}" for v in rows.groupby("layer")["test_acc"].mean())
        slopes[state] = _slopes(rows[rows["layer"] > 0], "layer", "test_acc")
    key = "_".join(setting)
    return {
        f"slope_{key}": per_seed(slopes["trained"], **common, **text),
        f"init_slope_{key}": per_seed(slopes["init"], **common, **text),
        f"gain_{key}": per_seed(slopes["trained"] - slopes["init"], **common),
    }


def analyze(results: ResultsFolder) -> dict:
    evidence = {}
    for setting in SETTINGS:
        key = "_".join(setting)
        evidence.update(probe_evidence(results, setting))
        t, common = _runs(results, results.table("cka_training"), setting)
        t = progress(t)
        middle = t[(t["epoch"] > 0) & (t["epoch"] < t["epoch"].max())]
        per_layer = middle.groupby(["seed", "layer"])["progress"].mean().reset_index()
        evidence[f"settling_{key}"] = per_seed(
            _slopes(per_layer, "layer", "progress"),
            **common,
            epochs=", ".join(str(int(e)) for e in sorted(middle["epoch"].unique())),
            progress=", ".join(f"{v:.2f}" for v in per_layer.groupby("layer")["progress"].mean()),
        )
        if setting[1] == "mlp":
            u, common = _runs(results, results.table("localization"), setting)
            runs = u.groupby("seed")[["init", "trained", "delta", "null"]].mean()
            common.update({c: float(runs[c].mean()) for c in runs.columns})
            evidence[f"localization_{key}"] = per_seed(runs["trained"] - runs["init"], **common)
            evidence[f"delta_localization_{key}"] = per_seed(runs["delta"] - runs["null"], **common)
        if setting[1] == "cnn2d":
            k, common = _runs(results, results.table("kernels"), setting)
            if k.empty:
                continue
            side = 5  # cnn2d's first kernel
            for stat, null in (("smoothness", -1 / (side**2 - 1)), ("edge", 2 / (side**2 - 1))):
                runs = k.pivot_table(index="seed", columns="state", values=stat)
                evidence[f"kernel_{stat}_{key}"] = per_seed(
                    runs["trained"] - runs["init"],
                    **common,
                    **{c: float(runs[c].mean()) for c in runs.columns},
                    **{f"null_{stat.replace('smoothness', 'smooth')}": null},
                )
    return evidence


# ----- figures -----------------------------------------------------------------------
STATE_STYLE = {"trained": ("C0", "-", "trained"), "init": ("C1", "--", "init (random network)")}


def figures(results: ResultsFolder, out_dir: Path) -> list[Path]:
    fig.style()
    kept, _ = usable(results.summary())  # figure means leave diverged runs out

    def table(name: str) -> pd.DataFrame:
        rows = results.table(name)
        return rows[rows["run_id"].isin(kept["run_id"])] if len(rows) else rows

    paths = [_probe_figure(results, table("probes"), kept, out_dir)]
    paths.append(_cka_matrices(table("cka_layers"), out_dir))
    paths.append(_cka_training(progress(table("cka_training")), out_dir, analyze(results)))
    kernels, finding = table("kernels"), ""
    if not kernels.empty:
        evidence = analyze(results)
        finding = _kernel_finding(evidence, fig.n_seeds(kernels), kernels["unit"].nunique())
        paths.append(_kernel_figure(kernels, out_dir, finding))
    filters, units = table("filters"), table("localization")
    loc_note = ""
    mnist_units = units[units["dataset"] == "mnist5k"] if not units.empty else units
    if not mnist_units.empty:
        runs = mnist_units.groupby("seed")[["delta", "null"]].mean()
        loc_note = (
            f"7×7-window share of Δw {runs['delta'].mean():.3f} vs null "
            f"{runs['null'].mean():.3f}, n = {len(runs)} seeds"
        )
    if not filters.empty:
        paths += _filter_figures(filters, out_dir, finding, loc_note)
    if not units.empty:
        paths.append(_localization_figure(units, out_dir))
    return paths


def _panels(frame: pd.DataFrame) -> list[tuple[str, str]]:
    present = set(zip(frame["dataset"], frame["model"]))
    return [s for s in SETTINGS if s in present]


def _probe_figure(results, table: pd.DataFrame, kept: pd.DataFrame, out_dir: Path) -> Path:
    panels = _panels(table)
    figure, axes = plt.subplots(1, len(panels), figsize=(3.1 * len(panels), 3.4), squeeze=False)
    for ax, (dataset, model) in zip(axes[0], panels):
        part = table[(table["dataset"] == dataset) & (table["model"] == model)]
        layers = sorted(part["layer"].unique())
        ax.axvspan(0.6, max(layers) + 0.4, color="0.93", zorder=0, label="hidden (slope fitted)")
        for state, (color, ls, label) in STATE_STYLE.items():
            rows = part[part["state"] == state]
            fig.band(ax, rows, "layer", "test_acc", color=color, ls=ls, marker="o", label=label)
        runs = kept[(kept["dataset"] == dataset) & (kept["model"] == model)]
        ax.axhline(runs["final_test_acc"].mean(), color="0.4", lw=0.8, ls=":", label="network")
        ax.set_xticks(layers, ["input" if v == 0 else f"hidden {v}" for v in layers], fontsize=7)
        ax.set_xlabel("layer")
        slope = probe_evidence(results, (dataset, model))[f"slope_{dataset}_{model}"].interval
        low, high = slope.ci()
        ax.set_title(
            f"{_setting(dataset, model)} (n = {fig.n_seeds(part)})\nhidden-layer slope "
            f"{100 * slope.estimate:+.1f} [{100 * low:+.1f}, {100 * high:+.1f}] pp/layer",
            fontsize=8,
            fontweight="bold" if (dataset, model) == PRIMARY_SETTING else "normal",
        )
    axes[0, 0].set_ylabel("linear-probe test accuracy")
    axes[0, 0].legend(fontsize=7)
    primary = probe_evidence(results, PRIMARY_SETTING)["slope_mnist1d_mlp"].interval
    low, high = primary.ci()
    figure.suptitle(
        f"Linear probes by depth ({fig.BAND_NOTE}). C09 primary, {_setting(*PRIMARY_SETTING)}: "
        f"slope over the hidden layers {100 * primary.estimate:+.1f} [{100 * low:+.1f}, "
        f"{100 * high:+.1f}] pp per layer, n = {primary.n} seeds",
        fontsize=9,
    )
    return fig.save(figure, out_dir, "probe_accuracy_vs_depth")


def _cka_matrices(table: pd.DataFrame, out_dir: Path) -> Path:
    panels = _panels(table)
    figure, axes = plt.subplots(
        2, len(panels), figsize=(2.6 * len(panels), 5.0), squeeze=False, layout="constrained"
    )
    for col, (dataset, model) in enumerate(panels):
        part = table[(table["dataset"] == dataset) & (table["model"] == model)]
        for row, state in enumerate(("init", "trained")):
            mean = (
                part[part["state"] == state].groupby(["layer_a", "layer_b"])["cka"].mean().unstack()
            )
            ax = axes[row, col]
            shown = ax.imshow(mean.to_numpy(), vmin=0, vmax=1, cmap="viridis")
            labels = ["in" if v == 0 else str(v) for v in mean.index]
            ax.set_xticks(range(len(labels)), labels)
            ax.set_yticks(range(len(labels)), labels)
            for (i, j), v in np.ndenumerate(mean.to_numpy()):
                color = "white" if v < 0.6 else "black"
                ax.text(j, i, f"{v:.2f}", ha="center", va="center", fontsize=6, color=color)
            ax.grid(False)
            ax.set_title(f"{_setting(dataset, model)}, {state}", fontsize=8)
    figure.colorbar(shown, ax=axes, label="linear CKA", shrink=0.6)
    n = fig.n_seeds(table)
    last = table[(table["layer_a"] == 0) & (table["layer_b"] == table["layer_b"].max())]
    means = last.groupby(["dataset", "model", "state"])["cka"].mean()
    change = "; ".join(
        f"{_setting(d, m)} {means[(d, m, 'init')]:.2f} → {means[(d, m, 'trained')]:.2f}"
        for d, m in panels
        if (d, m, "init") in means and (d, m, "trained") in means
    )
    figure.suptitle(
        f"CKA between layers (mean over n = {n} seeds; in = input). CKA of the input with "
        f"the last hidden layer, init → trained:\n{change}",
        fontsize=9,
    )
    return fig.save(figure, out_dir, "cka_between_layers")


def _cka_training(table: pd.DataFrame, out_dir: Path, evidence: dict) -> Path:
    panels = _panels(table)
    figure, axes = plt.subplots(
        2, len(panels), figsize=(3.1 * len(panels), 5.6), squeeze=False, sharey="row"
    )
    for col, (dataset, model) in enumerate(panels):
        part = table[(table["dataset"] == dataset) & (table["model"] == model)].copy()
        part["layer name"] = part["layer"].map(lambda v: f"layer {v}")
        for row, column in enumerate(("cka_to_final", "progress")):
            ax = axes[row, col]
            fig.band(ax, part, "epoch", column, hue="layer name", marker="o", ms=3)
            ax.set_xlabel("epoch of the checkpoint")
            if row == 0:
                ax.set_title(_setting(dataset, model))
    axes[0, 0].set_ylabel("CKA(layer at t, same layer at end)")
    axes[1, 0].set_ylabel("settling progress\n(CKA(t,T) − CKA(0,T)) / (1 − CKA(0,T))")
    axes[0, 0].legend(fontsize=7)
    n = fig.n_seeds(table)
    slopes = []
    for dataset, model in panels:
        ev = evidence.get(f"settling_{dataset}_{model}")
        if ev is not None:
            low, high = ev.interval.ci()
            slopes.append(
                f"{_setting(dataset, model)} {ev.interval.estimate:+.3f} [{low:+.3f}, {high:+.3f}]"
            )
    figure.suptitle(
        f"Which layers settle first ({fig.BAND_NOTE}, n = {n}). Slope of settling progress on "
        "depth (< 0: lower layers first):\n" + "; ".join(slopes),
        fontsize=9,
    )
    return fig.save(figure, out_dir, "cka_over_training")


def _symmetric(ax, image, title: str, **kwargs):
    limit = float(np.nanmax(np.abs(image))) or 1.0
    shown = ax.imshow(image, cmap="RdBu_r", vmin=-limit, vmax=limit, **kwargs)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.grid(False)
    if title:
        ax.set_title(title, fontsize=7)
    return shown


def _weights(filters: pd.DataFrame, dataset: str, model: str, state: str) -> np.ndarray:
    part = filters[
        (filters["dataset"] == dataset) & (filters["model"] == model) & (filters["state"] == state)
    ]
    return part.pivot_table(index="unit", columns="position", values="weight").to_numpy()


def _filter_figures(
    filters: pd.DataFrame, out_dir: Path, finding: str, loc_note: str = ""
) -> list[Path]:
    paths = []
    present = set(zip(filters["dataset"], filters["model"]))
    if ("mnist5k", "mlp") in present:
        init = _weights(filters, "mnist5k", "mlp", "init")
        trained = _weights(filters, "mnist5k", "mlp", "trained")
        units = len(init)
        columns = min(units, 8)
        rows = -(-units // columns)
        figure, axes = plt.subplots(3 * rows, columns, figsize=(1.1 * columns, 3.6 * rows))
        axes = np.atleast_2d(axes)
        for k, (label, weights) in enumerate(
            (("init", init), ("trained", trained), ("change Δw", trained - init))
        ):
            for u in range(rows * columns):
                ax = axes[k * rows + u // columns, u % columns]
                if u >= units:
                    ax.axis("off")
                    continue
                _symmetric(ax, weights[u].reshape(28, 28), f"{label}, unit {u}")
        figure.suptitle(
            "MNIST-5k MLP, first-layer weights of units 0–"
            f"{units - 1} (seed 0; red +, blue −, each image scaled to its own max |w|).\n"
            "What training adds (Δw) is smooth, spatially coherent stroke and blob templates; "
            + loc_note,
            fontsize=9,
        )
        paths.append(fig.save(figure, out_dir, "filters_mnist5k_mlp"))
    kernels = [
        s for s in (("mnist5k", "cnn2d"), ("mnist1d", "cnn"), ("mnist1d", "mlp")) if s in present
    ]
    if kernels:
        figure, axes = plt.subplots(
            len(kernels), 2, figsize=(8.0, 2.6 * len(kernels)), squeeze=False
        )
        for row, (dataset, model) in enumerate(kernels):
            for col, state in enumerate(("init", "trained")):
                weights = _weights(filters, dataset, model, state)
                ax = axes[row, col]
                title = f"{_setting(dataset, model)}, {state}"
                if model == "cnn2d":
                    shown = _symmetric(
                        ax, _mosaic(weights, per_row=4), f"{title}: {len(weights)} kernels"
                    )
                else:
                    what = "kernels" if model == "cnn" else "units"
                    shown = _symmetric(
                        ax,
                        weights,
                        f"{title}: {len(weights)} {what} × {weights.shape[1]} inputs",
                        aspect="auto",
                    )
                    ax.set_ylabel(what)
                    ax.set_xlabel("kernel tap" if model == "cnn" else "input position")
                figure.colorbar(shown, ax=ax, shrink=0.85, label="weight")
        figure.suptitle(
            f"First-layer kernels and weights of seed 0 (red +, blue −; each panel on its own "
            f"symmetric scale).\n{finding}",
            fontsize=9,
        )
        paths.append(fig.save(figure, out_dir, "filters_kernels"))
    return paths


KERNEL_KEY = "mnist5k_cnn2d"
KERNEL_LABELS = {
    "smoothness": "lag-1 spatial autocorrelation",
    "edge": "energy share of the best oriented ramp",
}


def _kernel_finding(evidence: dict, n: int, kernels: int) -> str:
    parts = []
    for stat, label in (("smoothness", "smoothness"), ("edge", "edge (ramp) share")):
        ev = evidence.get(f"kernel_{stat}_{KERNEL_KEY}")
        if ev is None:
            continue
        low, high = ev.interval.ci()
        parts.append(
            f"{label} {ev.extras['init']:.2f} → {ev.extras['trained']:.2f} "
            f"(Δ {ev.interval.estimate:+.3f} [{low:+.3f}, {high:+.3f}])"
        )
    head = f"MNIST-5k CNN, {kernels} first-layer kernels at init → trained, n = {n} seeds: "
    return head + "; ".join(parts)


def _kernel_figure(kernels: pd.DataFrame, out_dir: Path, finding: str) -> Path:
    """Per seed: mean kernel smoothness and edge share at init, trained, and of Δw."""
    figure, axes = plt.subplots(1, 2, figsize=(8.4, 3.4))
    side = 5
    nulls = {"smoothness": -1 / (side**2 - 1), "edge": 2 / (side**2 - 1)}
    states = [("init", "C1"), ("trained", "C0"), ("delta", "C2")]
    for ax, (stat, label) in zip(axes, KERNEL_LABELS.items()):
        per_run = kernels.pivot_table(index="seed", columns="state", values=stat)
        for x, (state, color) in enumerate(states):
            values = per_run[state].to_numpy()
            ax.scatter(np.full(len(values), x), values, s=12, color=color, alpha=0.7)
            ax.errorbar(
                x + 0.2,
                values.mean(),
                yerr=1.96 * values.std(ddof=1) / np.sqrt(len(values)),
                marker="o",
                color="k",
                capsize=3,
            )
        for a, b in zip(per_run["init"], per_run["trained"]):
            ax.plot([0, 1], [a, b], color="0.7", lw=0.6, zorder=0)
        ax.axhline(nulls[stat], color="k", ls=":", lw=1, label="i.i.d. random 5×5 kernel")
        ax.set_xticks(range(len(states)), ["init", "trained", "change Δw"])
        ax.set_ylabel(f"{label}\n(mean over {kernels['unit'].nunique()} kernels)")
        ax.set_xlabel("first-layer weights")
    axes[0].legend(fontsize=7)
    figure.suptitle(
        f"{finding}\n(dots: seeds; black: mean ± 95% CI; lines pair a seed's init and trained)",
        fontsize=8,
    )
    figure.tight_layout()
    return fig.save(figure, out_dir, "kernel_structure")


def _mosaic(weights: np.ndarray, per_row: int) -> np.ndarray:
    """Square kernels (units, k·k) tiled ``per_row`` to a row, NaN gaps between them."""
    side = math.isqrt(weights.shape[1])
    rows = -(-len(weights) // per_row)
    image = np.full((rows * (side + 1) - 1, per_row * (side + 1) - 1), np.nan)
    for u, w in enumerate(weights):
        r, c = divmod(u, per_row)
        image[r * (side + 1) : r * (side + 1) + side, c * (side + 1) : c * (side + 1) + side] = (
            w.reshape(side, side)
        )
    return image


def _localization_figure(units: pd.DataFrame, out_dir: Path) -> Path:
    panels = [s for s in _panels(units) if s[1] == "mlp"]
    figure, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.2), squeeze=False)
    for ax, (dataset, model) in zip(axes[0], panels):
        part = units[(units["dataset"] == dataset) & (units["model"] == model)]
        high = float(np.nanmax(part[["init", "trained", "delta"]].to_numpy()))
        bins = np.linspace(0, min(1.0, high * 1.05), 40)
        for column, color, label in (
            ("init", "C1", "initial w"),
            ("trained", "C0", "trained w"),
            ("delta", "C2", "change Δw"),
        ):
            ax.hist(part[column].dropna(), bins=bins, color=color, alpha=0.45, label=label)
        ax.axvline(part["null"].iloc[0], color="k", ls=":", lw=1, label="null √var(x)·z")
        window = "7×7 window" if dataset == "mnist5k" else "window of 8"
        ax.set_xlabel(f"share of Σw² in the best {window}")
        ax.set_ylabel("units")
        ax.set_title(
            f"{_setting(dataset, model)}: {len(part)} units, n = {fig.n_seeds(part)} seeds"
        )
    axes[0, 0].legend(fontsize=7)
    means = units.groupby(["dataset", "model"])[["init", "trained", "delta", "null"]].mean()
    change = "; ".join(
        f"{_setting(d, m)} {row['init']:.3f} → {row['trained']:.3f} (Δw {row['delta']:.3f}, "
        f"null {row['null']:.3f})"
        for (d, m), row in means.iterrows()
    )
    figure.suptitle(
        "First-layer units become more localized than at init (all units of all seeds; mean "
        f"share, init → trained):\n{change}",
        fontsize=9,
    )
    figure.tight_layout()
    return fig.save(figure, out_dir, "localization")
