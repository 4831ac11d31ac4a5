"""Many seeds, one region of good solutions: distances, alignment, mode connectivity (C20, C16).

Command: ``toolkit run exp_seed_variation --seeds 10``

MNIST-1D, MLP 40-h-h-10 (two ReLU hidden layers), h ∈ {16, 64, 256} for every
variation, plus h = 512 with independent seeds only (the width where weight matching
should bring the barrier closest to zero; the paper profile adds 1,024 and 2,048, too
slow for the 2-core CPU: a 1,024-wide run is ~14× a 256-wide one). SGD + momentum
0.9, lr 0.05, batch 100, 60 epochs (2,400 steps), no regularization. Three ways to
vary a run (factor ``variation``), each over seeds 0 … S−1:

- ``independent``: seed s draws both the init and the data order;
- ``same_init``: every run starts from seed 0's init; seed s draws the data order;
- ``same_order``: every run sees seed 0's batch order; seed s draws the init.

(So seed 0 is the same run, bit for bit, in all three conditions.)

Per pair of runs of a condition (all S(S−1)/2 pairs, vmapped over pairs): relative L2
distance and cosine of the flattened final weights, and the cosine of their
displacements from init, and the two baselines of the weight cosine: the cosine of the
two runs' initial parameters (recomputed from each run's ``init`` key exactly as the
engine draws them) and each run's init vs its own final weights; on the 12,000 test inputs, argmax disagreement and the mean
symmetrized KL and JS divergence of the predictive distributions; linear CKA of each
hidden layer's activations (2,000 test inputs; CKA ignores unit order, so alignment
cannot change it). Per disjoint pair (0–1, 2–3, …): weight matching (Ainsworth et al.
2023; a Hungarian assignment per hidden layer on the host, coordinate descent to a
fixed point), then train loss/error (1,000 train inputs) and test loss/error (2,000
test inputs) at 25 points on the straight line between the two solutions, raw and
aligned; barrier = max along the path − mean of the endpoints. Per run: test accuracy
of the ensemble of its condition's runs (all, seeds ≤ s, and all but s).

Tests (``TESTS``; C20's primary: relative test-loss difference at h = 256, the widest
width with all three variations, independent seeds, within 5%). Secondaries per
independent width: the weight cosine (|cos| < 0.2) and its excess over the cosine of the
two inits (within ±0.2: training does not bring seeds together), reported beside the
init-vs-final cosine of one seed; raw barrier > 0.1 nats; aligned barrier < 0.1 nats
(figure ``barrier_vs_width`` names the first width whose CI gets below it). Means over all pairs get a studentized bootstrap over
seeds (:func:`pair_mean`: pairs share seeds); barriers use the S/2 disjoint pairs as
independent units; the ensemble gain, jackknife (leave-one-seed-out) pseudo-values.

Hardware (the CPU-vs-GPU part of C20): final parameters of the ``independent`` runs
(h ≤ 256) are saved as ``params/<run_id>.npz`` ('/'-joined Flax paths, float32). Run
ids hash only the config and the seed, so the same command run on a GPU (with ``--out``
elsewhere) can be diffed against the CPU folder: ``python benchmarks/diff_params.py
results/exp_seed_variation/default <gpu folder>`` (:func:`hardware_diff` per run,
:func:`tensor_drift` per tensor: weight drift and loss agreement). Two CPU folders of
the same command diff to exactly 0 (checked on the quick profile); the GPU side runs
with the GPU issue.

Pairs are formed among the runs trained in one invocation: growing ``--seeds`` on an
existing folder pairs only the new seeds with each other, so use ``--force`` then.

Cost: default profile (3 widths × 3 variations × 10 seeds + h = 512 × 10 independent
seeds = 100 runs, 4 cohorts; 60 epochs = 2,400 SGD steps each, 240,000 steps in all):
5 min 29 s wall (``time toolkit run exp_seed_variation --seeds 10 --force``: 2 min 40 s
of CPU time, on the 2-core CPU under load average 4–10 from other jobs); of the
cohorts' own timings, training h = 256 (30 runs) 90 s and h = 512 (10 runs) 84 s,
measurement 69 s. The quick profile ~20 s unloaded, mostly compilation. Outputs:
4.2 MB of results (3.5 MB of them the 30 parameter files) and 1.7 MB of figures.
Paper profile (one GPU): 20 seeds (190 pairs per condition), 100 epochs, widths to
2,048 (independent seeds; Ainsworth et al. needed width for weight matching to reach a
flat path): 240 runs in 6 cohorts, 960,000 optimizer steps (4,000 sequential per
cohort). Not yet timed on a GPU; estimated on one H200 with an empty compilation cache:
~10 s of compilation per cohort, a few seconds of training, and the host's weight
matching (a Hungarian assignment of 2,048 units takes ~1 s, per layer, pair and sweep),
so 1.5–2.5 minutes.

The parameter diff on two CPU folders: the same command twice gives bitwise identical
weights; the shipped folder trained before the engine ran CPU cohorts one run at a time
(all runs vmapped) against this one — the same configs and seeds, only the float
summation order differs — gives weights 5% apart at h = 256 (cos ≥ 0.995; up to 36%
at h = 16) while the final train loss agrees to 1e-5 nats at h = 256: the drift the
hardware part of C20 predicts, here from the layout alone.

Expected (Fort et al. 2019, Frankle et al. 2020, Ainsworth et al. 2023): independent
runs end near-orthogonal with similar test loss and a large raw barrier that weight
matching removes mostly, more so when wider; runs from one init stay close in weight
space and may be linearly connected without alignment; the seed-to-seed spread of the
final training loss shrinks with width.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Literal

import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from scipy.special import softmax

from toolkit import alignment, models
from toolkit import figures as fig
from toolkit import intervals as iv
from toolkit import measures as M
from toolkit.claimtests import Test, bootstrap, per_seed, usable
from toolkit.engine import per_example_loss
from toolkit.results import PARAMS_DIR, ResultsFolder, load_params
from toolkit.spec import RunConfig, Seed, SpecError

CLAIMS = ("C20", "C16")
#: The figure the claims report links for each claim.
CLAIM_FIGURES = {"C20": "loss_spread", "C16": "loss_spread"}
#: variation → the streams every run of it shares (pinned to ``shared_seed``).
VARIATIONS = {"independent": (), "same_init": ("init",), "same_order": ("order",)}
PATH_POINTS = np.linspace(0.0, 1.0, 25)
PATH_TRAIN, PATH_TEST, CKA_EXAMPLES = 1000, 2000, 2000
# Smallest effects, stated before the run:
COSINE_TOL = 0.2  # |cos| below this: near-orthogonal
LOSS_TOL = 0.05  # relative test-loss difference below 5%: "similar loss"
BARRIER_TOL = 0.1  # a train-loss barrier below 0.1 nats: linearly connected


@dataclass(frozen=True)
class Config(RunConfig):
    # scientific: the factors under study
    variation: Literal[tuple(VARIATIONS)] = "independent"
    widths: tuple[int, ...] = (64, 64)
    # fixed: the protocol
    shared_seed: Seed = 0  # the seed of the shared stream in same_init / same_order
    optimizer: str = "sgd"
    learning_rate: float = 0.05
    momentum: float = 0.9
    batch_size: int = 100
    epochs: int = 60
    history_points: int = 30

    DERIVED: ClassVar[dict[str, str]] = {
        "pin_init_seed": "set variation (and shared_seed) instead",
        "pin_order_seed": "set variation (and shared_seed) instead",
    }

    def __post_init__(self):
        if self.variation not in VARIATIONS:
            raise SpecError(f"variation must be one of {list(VARIATIONS)}, got {self.variation!r}")
        shared = VARIATIONS[self.variation]
        pin = lambda stream: self.shared_seed if stream in shared else -1
        object.__setattr__(self, "pin_init_seed", pin("init"))
        object.__setattr__(self, "pin_order_seed", pin("order"))


WIDTHS = [(16, 16), (64, 64), (256, 256)]
#: wider nets, independent seeds only: where weight matching may bring the barrier to ~0
WIDE = [(512, 512)]
PAPER_WIDE = [(512, 512), (1024, 1024), (2048, 2048)]


def grid(widths: list, wide: list) -> list[dict]:
    """Every variation at ``widths``; only independent seeds at ``wide``."""
    points = [{"widths": w, "variation": v} for w in widths for v in VARIATIONS]
    return points + [{"widths": w, "variation": "independent"} for w in wide]


GRID = grid(WIDTHS, WIDE)

PROFILES = {
    "quick": {
        "seeds": 4,
        "epochs": 2,
        "grid": grid([(8, 8), (16, 16)], [(32, 32)]),
    },
    "default": {"seeds": 10},
    "paper": {"seeds": 20, "epochs": 100, "grid": grid(WIDTHS, PAPER_WIDE)},
}


def SAVE_PARAMS(run) -> bool:
    """Keep final parameters of the independent runs (few MB), for CPU-vs-GPU diffs."""
    return run.config.variation == "independent" and max(run.config.widths) <= 256


# ----- measurements -------------------------------------------------------------------
@functools.cache
def _measure_fns(widths: tuple[int, ...], num_classes: int, activation: str, loss_kind: str):
    """Measurement functions, built once per architecture (one compile each)."""
    model = models.build("mlp", widths, num_classes, activation)

    def init(key, init_scale, x_one):  # the run's initial parameters, as the engine drew them
        return jax.tree.map(lambda p: p * init_scale, model.init(key, x_one))

    def logits(params, x):
        return model.apply(params, x)

    def pair(params_a, params_b, init_a, init_b, logits_a, logits_b, x_cka):
        with jax.default_matmul_precision("highest"):
            _, features_a = model.apply(params_a, x_cka, return_features=True)
            _, features_b = model.apply(params_b, x_cka, return_features=True)
            step = lambda p, p0: jax.tree.map(jnp.subtract, p, p0)
            return {
                **alignment.flat_similarity(params_a, params_b),
                "displacement_cosine": alignment.cosine(
                    step(params_a, init_a), step(params_b, init_b)
                ),
                # the two baselines: the two inits, and each run's init vs its final weights
                "init_cosine": alignment.cosine(init_a, init_b),
                "init_final_cosine_a": alignment.cosine(init_a, params_a),
                "init_final_cosine_b": alignment.cosine(init_b, params_b),
                **alignment.predictive_divergences(logits_a, logits_b),
                "cka": jnp.stack(
                    [alignment.linear_cka(a, b) for a, b in zip(features_a[1:], features_b[1:])]
                ),
            }

    def loss_and_error(params, x, y):
        out = model.apply(params, x)
        return jnp.stack(
            [per_example_loss(loss_kind, out, y).mean(), jnp.mean(jnp.argmax(out, -1) != y)]
        )

    def path(params_a, params_b, x_train, y_train, x_test, y_test):
        train = M.interpolate(loss_and_error, params_a, params_b, x_train, y_train, PATH_POINTS)
        test = M.interpolate(loss_and_error, params_a, params_b, x_test, y_test, PATH_POINTS)
        return {
            "curves": jnp.concatenate([train, test], axis=1),
            **alignment.flat_similarity(params_a, params_b),
        }

    return {"init": init, "logits": logits, "pair": pair, "path": path}


PATH_COLUMNS = ("train_loss", "train_error", "test_loss", "test_error")


def _take(tree, index):
    return jax.tree.map(lambda leaf: leaf[np.asarray(index)], tree)


def measure(trained) -> dict:
    spec, data = trained.cohort.spec, trained.cohort.data
    fns = _measure_fns(tuple(spec.widths), data.num_classes, spec.activation, spec.loss)
    params = trained.result.state["params"]
    x_test = jnp.asarray(data.x_test)
    test_logits = trained.map(fns["logits"], (params,), (x_test,))
    row = trained.row
    return {
        **_ensembles(trained.conditions(), test_logits, data.y_test),
        "pairs": _all_pairs(trained, fns, test_logits, row),
        **_paths(trained, fns, row),
    }


def _all_pairs(trained, fns, test_logits, row) -> pd.DataFrame:
    """Weight, function and representation similarity of every pair within a condition."""
    runs, params, data = trained.runs, trained.result.state["params"], trained.cohort.data
    init_scale = np.array([run.config.init_scale for run in runs], np.float32)
    x_one = jnp.asarray(data.x_train[:1])
    initial = trained.map(fns["init"], (trained.keys["init"], init_scale), (x_one,))
    rows = []
    for members in trained.conditions():  # one call per condition bounds memory; one compile
        a, b = np.triu_indices(len(members), k=1)
        a, b = np.asarray(members)[a], np.asarray(members)[b]
        ends = (_take(params, a), _take(params, b), _take(initial, a), _take(initial, b))
        values = trained.map(
            fns["pair"],
            (*ends, test_logits[a], test_logits[b]),
            (jnp.asarray(data.x_test[:CKA_EXAMPLES]),),
        )
        cka = values.pop("cka")
        for k, (ra, rb) in enumerate(zip(a, b)):
            rows.append(
                row(
                    ra,
                    partner=runs[rb].run_id,
                    partner_seed=runs[rb].seed,
                    **{name: float(v[k]) for name, v in values.items()},
                    **{f"cka_{layer + 1}": float(c) for layer, c in enumerate(cka[k])},
                )
            )
    return pd.DataFrame(rows)


def _paths(trained, fns, row) -> dict[str, pd.DataFrame]:
    """Barriers and curves on the straight line of each disjoint pair, raw and aligned."""
    runs, params, data = trained.runs, trained.result.state["params"], trained.cohort.data
    pairs = trained.seed_pairs(disjoint=True)
    if not pairs:
        return {"barriers": pd.DataFrame(), "paths": pd.DataFrame()}
    a, b = (np.array(side) for side in zip(*pairs))
    perms = [alignment.weight_matching(_take(params, i), _take(params, j)) for i, j in pairs]
    aligned = [alignment.apply_permutation(_take(params, j), p) for (_, j), p in zip(pairs, perms)]
    aligned = jax.tree.map(lambda *leaves: np.stack(leaves), *aligned)
    twice = lambda tree, other: jax.tree.map(lambda x, y: np.concatenate([x, y]), tree, other)
    shared = (data.x_train[:PATH_TRAIN], data.y_train[:PATH_TRAIN])
    shared += (data.x_test[:PATH_TEST], data.y_test[:PATH_TEST])
    out = trained.map(
        fns["path"],
        (twice(_take(params, a), _take(params, a)), twice(_take(params, b), aligned)),
        tuple(jnp.asarray(x) for x in shared),
    )
    barrier_rows, path_rows = [], []
    for k, (ra, rb) in enumerate(pairs * 2):
        kind = "raw" if k < len(pairs) else "aligned"
        units = np.concatenate(list(perms[k % len(pairs)].values()))
        identity = np.concatenate([np.arange(len(p)) for p in perms[k % len(pairs)].values()])
        curves = out["curves"][k]  # (points, PATH_COLUMNS)
        barrier_rows.append(
            row(
                ra,
                pair=runs[ra].seed // 2,
                partner=runs[rb].run_id,
                partner_seed=runs[rb].seed,
                alignment=kind,
                **{f"barrier_{c}": float(h) for c, h in zip(PATH_COLUMNS, M.barrier(curves))},
                relative_distance=float(out["relative_distance"][k]),
                cosine=float(out["cosine"][k]),
                # share of hidden units the matching moved (0 for the raw path)
                units_moved=float(np.mean(units != identity)) if kind == "aligned" else 0.0,
            )
        )
        for t, point in zip(PATH_POINTS, curves):
            values = dict(zip(PATH_COLUMNS, point.tolist()))
            path_rows.append(row(ra, partner=runs[rb].run_id, alignment=kind, t=float(t), **values))
    return {"barriers": pd.DataFrame(barrier_rows), "paths": pd.DataFrame(path_rows)}


def _ensembles(conditions, logits_RxNxK: np.ndarray, labels: np.ndarray) -> dict[str, np.ndarray]:
    """Per run, test accuracy (and loss) of ensembles (mean softmax) of its condition.

    ``ensemble_test_*``: all runs; ``ensemble_upto_test_acc``: seeds up to this run's;
    ``ensemble_loo_test_acc``: all but this run (for jackknife CIs).
    """
    probs = softmax(np.asarray(logits_RxNxK, np.float64), axis=-1)
    acc = lambda p: float(np.mean(p.argmax(-1) == labels))
    names = ("test_acc", "test_loss", "upto_test_acc", "loo_test_acc")
    out = {f"ensemble_{name}": np.full(len(probs), np.nan) for name in names}
    for members in conditions:
        total = probs[members].sum(axis=0)
        mean = total / len(members)
        for k, r in enumerate(members):
            out["ensemble_test_acc"][r] = acc(mean)
            out["ensemble_test_loss"][r] = -np.mean(np.log(mean[np.arange(len(labels)), labels]))
            out["ensemble_upto_test_acc"][r] = acc(probs[members[: k + 1]].mean(axis=0))
            if len(members) > 1:
                out["ensemble_loo_test_acc"][r] = acc((total - probs[r]) / (len(members) - 1))
    return out


# ----- analysis -----------------------------------------------------------------------
WIDEST = max(w[0] for w in WIDTHS)  # the widest width with all three variations: C20's primary
#: (width, variation) → the statistics tested there ("aligned" only where matching moves units)
CONDITIONS = {
    **{
        (w, "independent"): ("cosine", "excess", "loss", "raw", "aligned")
        for (w, _) in WIDTHS + WIDE
    },
    (WIDEST, "same_init"): ("cosine", "loss", "raw"),
    (WIDEST, "same_order"): ("cosine", "loss"),
}
ORTHOGONAL = (
    "baseline: {baseline}; the displacements from init have cos {displacement:.2f}; after "
    "weight matching cos {aligned:.2f}; relative distance {distance:.2f} (orthogonal, equal "
    "norms: 1.41)"
)
BASELINES = (
    "Baselines: the two random inits have cos {init_cos:.3f}; a run's init vs its own final "
    "weights, cos {init_final:.3f} (SD {init_final_sd:.3f} over seeds): {inherited}"
)


# fmt: off
def _tests(width: int, variation: str, stats: tuple) -> list[Test]:
    where, tag = f"h={width}, {variation}", f"h{width}_{variation}"
    role = "primary" if (width, variation) == (WIDEST, "independent") else "secondary"
    declared = {
        "cosine": Test(f"cosine_{tag}", "C20", "secondary", "bootstrap",
            "mean cosine of the flattened final weights over seed pairs",
            "Runs end far apart in weight space: final weights near-orthogonal", "within",
            COSINE_TOL, "|cos| < 0.2: the two weight vectors share under 4% of their energy",
            "cos {estimate:.3f} [{low:.3f}, {high:.3f}] ({n} of {planned} seeds); "
            + ORTHOGONAL + ". " + BASELINES + ".", where),
        "excess": Test(f"cosine_excess_{tag}", "C20", "secondary", "bootstrap",
            "mean over seed pairs of cos(final_a, final_b) − cos(init_a, init_b)",
            "Training does not bring independent seeds closer than their random inits were "
            "(the baseline of near-orthogonality from initialization alone)", "within",
            COSINE_TOL, "|Δcos| < 0.2, the same margin as near-orthogonality itself",
            "Final minus initial cosine {estimate:+.3f} [{low:+.3f}, {high:+.3f}] ({n} of "
            "{planned} seeds). " + BASELINES + ".", where),
        "loss": Test(f"loss_{tag}", "C20", role, "bootstrap",
            "mean over seed pairs of |Δ final test loss| / their mean test loss",
            "Different seeds reach a similar loss", "within", LOSS_TOL,
            "5% (≈ 0.08 nats here) is a tenth of the test-loss differences between the widths "
            "compared (1.2 to 2.4 nats): within it two runs are equally good",
            "Test losses differ by {estimate:.1%} [{low:.1%}, {high:.1%}] on average ({n} of "
            "{planned} seeds, {verdict}); test loss {loss}, test acc {acc}; they disagree on "
            "{disagreement:.1%} of test inputs (JS {js:.3f} nats); an ensemble of all gains "
            "{gain}.", where),
        "raw": Test(f"barrier_raw_{tag}", "C20", "secondary", "mean",
            "train-loss barrier on the straight line between two seeds, unaligned (nats), "
            "per disjoint seed pair",
            "The straight path between two solutions rises (raw barrier is large)", "greater",
            BARRIER_TOL, "below 0.1 nats (≈ 10% in likelihood) the path is flat in practice",
            "Raw barrier {estimate:.3f} [{low:.3f}, {high:.3f}] nats ({n} of {planned} "
            "disjoint pairs); test-error barrier {error}.", where),
        "aligned": Test(f"barrier_aligned_{tag}", "C20", "secondary", "mean",
            "train-loss barrier after weight matching (nats), per disjoint seed pair",
            "After permutation alignment the barrier is small (linear mode connectivity)",
            "within", BARRIER_TOL, "below 0.1 nats (≈ 10% in likelihood) the path is flat in "
            "practice", "Aligned barrier {estimate:.3f} [{low:.3f}, {high:.3f}] nats (raw "
            "{raw:.3f}); weight matching moved {moved:.0%} of hidden units; test-error "
            "barrier {error}.", where),
    }
    return [declared[s] for s in stats]


TESTS = [
    *[t for (width, variation), stats in CONDITIONS.items() for t in _tests(width, variation, stats)],
    Test("spread", "C16", "secondary", "bootstrap",
         "log(across-seed SD of final train loss at the widest / narrowest width)",
         "Final train losses across seeds cluster tightly, more so when wider", "less", 0.0,
         "exploratory: any shrinking is reported", "Log SD ratio {estimate:.2f} [{low:.2f}, "
         "{high:.2f}]; SD by width {sd}. Caveat: the SD shrinks mostly because the loss goes "
         "to 0 (mean {mean}); relative to the mean (CV): {cv}. Seeds above 5× their width's "
         "median (a bad minimum, as C16's primary counts them): {bad}.", "independent"),
]
# fmt: on


def _width(widths: str) -> int:
    return int(str(widths).split("-")[0])


def _data(results: ResultsFolder) -> tuple[pd.DataFrame, ...]:
    """Runs that did not diverge, and the pairs, barriers and paths among them."""
    frame, _ = usable(results.summary())
    frame = frame.assign(width=frame["widths"].map(_width))
    ids, tables = set(frame["run_id"]), []
    for name in ("pairs", "barriers", "paths"):
        table = results.table(name)
        if not table.empty:
            keep = table["run_id"].isin(ids) & table["partner"].isin(ids)
            table = table[keep].assign(width=table["widths"].map(_width))
        tables.append(table)
    return frame, *tables


def pair_mean(seeds, a, b, values, planned: int, **extras):
    """Mean of a pairwise quantity over seed pairs, studentized bootstrap over seeds (the
    unit: all pairs share seeds). A resample averages the pairs among its distinct draws
    (a seed paired with its own duplicate is skipped)."""
    index = {s: k for k, s in enumerate(seeds)}
    matrix = np.full((len(seeds), len(seeds)), np.nan)
    i, j = [index[s] for s in a], [index[s] for s in b]
    matrix[i, j] = matrix[j, i] = np.asarray(values, float)

    def statistic(batch: np.ndarray) -> np.ndarray:
        idx = batch[..., 0].astype(int)  # (k, m) seed positions
        draws = matrix[idx[:, :, None], idx[:, None, :]]
        upper = np.triu(np.ones(draws.shape[1:], bool), k=1)
        valid = upper & (idx[:, :, None] != idx[:, None, :]) & np.isfinite(draws)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(valid, draws, 0.0).sum(axis=(1, 2)) / valid.sum(axis=(1, 2))

    return bootstrap(np.arange(len(seeds))[:, None], statistic, planned, vectorized=True, **extras)


def _ensemble_gain(part: pd.DataFrame) -> str:
    """Ensemble − mean single test accuracy, with a t-interval on jackknife pseudo-values."""
    n = len(part)
    if n < 2 or part["ensemble_loo_test_acc"].isna().any():
        return "n/a"
    full = part["ensemble_test_acc"].iloc[0] - part["final_test_acc"].mean()
    loo = part["ensemble_loo_test_acc"] - (
        part["final_test_acc"].sum() - part["final_test_acc"]
    ) / (n - 1)
    gain = iv.t_interval(100 * (n * full - (n - 1) * loo))
    low, high = gain.ci()
    return f"{gain.estimate:+.1f} pp [{low:+.1f}, {high:+.1f}]"


def _mean_sd(frame: pd.DataFrame) -> str:
    return "{:.3f} ± {:.3f} (SD)".format(*frame.agg(["mean", "std"]))


def _log_sd_ratio(batch: np.ndarray) -> np.ndarray:
    """(k, seeds, 2 widths) → k values of log(SD at the widest / SD at the narrowest)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        sd = np.std(batch, axis=1, ddof=1)
        return np.log(sd[:, 1] / sd[:, 0])


def init_final_cosines(pairs: pd.DataFrame) -> pd.Series:
    """Per seed: the cosine between a run's initial and final weights (from its pairs)."""
    if "init_final_cosine_a" not in pairs or pairs.empty:
        return pd.Series(dtype=float)
    a = pairs[["seed", "init_final_cosine_a"]].set_axis(["seed", "c"], axis=1)
    b = pairs[["partner_seed", "init_final_cosine_b"]].set_axis(["seed", "c"], axis=1)
    return pd.concat([a, b]).groupby("seed")["c"].first()


def _baselines(pairs: pd.DataFrame, variation: str = "independent") -> dict:
    per_seed_cos = init_final_cosines(pairs)
    if per_seed_cos.empty:
        nan = float("nan")
        return {"init_cos": nan, "init_final": nan, "init_final_sd": nan, "inherited": "n/a"}
    c = float(per_seed_cos.mean())
    inherited = (
        f"{c**2:.0%} of each final weight vector's energy lies along the shared init"
        if variation == "same_init"
        else f"{c**2:.0%} of each final weight vector's energy lies along its own init, so the "
        "near-orthogonality of final weights is largely inherited from the random init"
        if c**2 > 0.5
        else f"only {c**2:.0%} of each final weight vector's energy lies along its own init, "
        "so the final weights are not just their inits"
    )
    return {
        "init_cos": float(pairs["init_cosine"].mean()),
        "init_final": c,
        "init_final_sd": float(per_seed_cos.std(ddof=1)) if len(per_seed_cos) > 1 else 0.0,
        "inherited": inherited,
    }


def analyze(results: ResultsFolder) -> dict:
    frame, pairs, barriers, _ = _data(results)
    planned = results.summary()["seed"].nunique()
    evidence = {}
    for width, variation in CONDITIONS:
        tag = f"h{width}_{variation}"
        pick = lambda t: t[(t["width"] == width) & (t["variation"] == variation)]  # noqa: B023
        part, pp, bb = pick(frame), pick(pairs), pick(barriers)
        params = 40 * width + width + width * width + width + width * 10 + 10
        baselines = _baselines(pp, variation)
        evidence[f"cosine_{tag}"] = pair_mean(
            sorted(part["seed"]),
            pp["seed"],
            pp["partner_seed"],
            pp["cosine"],
            planned,
            baseline="the runs share one init (cos 1 at step 0)"
            if variation == "same_init"
            else f"independent random inits have cos ≈ 0 (SD ≈ 1/√P = {params**-0.5:.3f} "
            f"for P = {params:,} weights)",
            displacement=pp["displacement_cosine"].mean(),
            aligned=bb.loc[bb["alignment"] == "aligned", "cosine"].mean(),
            distance=pp["relative_distance"].mean(),
            **baselines,
        )
        if "init_cosine" in pp:
            evidence[f"cosine_excess_{tag}"] = pair_mean(
                sorted(part["seed"]),
                pp["seed"],
                pp["partner_seed"],
                pp["cosine"] - pp["init_cosine"],
                planned,
                **baselines,
            )
        loss = part.set_index("seed")["final_test_loss"].sort_index()
        a, b = np.triu_indices(len(loss), k=1)
        x, y = loss.to_numpy()[a], loss.to_numpy()[b]
        evidence[f"loss_{tag}"] = pair_mean(
            loss.index,
            loss.index[a],
            loss.index[b],
            2 * np.abs(x - y) / (x + y),  # relative to the pair's mean
            planned,
            loss=_mean_sd(part["final_test_loss"]),
            acc=_mean_sd(part["final_test_acc"]),
            disagreement=pp["disagreement"].mean(),
            js=pp["js"].mean(),
            gain=_ensemble_gain(part),
        )
        for kind in ("raw", "aligned"):
            rows = bb[bb["alignment"] == kind].set_index("pair")
            evidence[f"barrier_{kind}_{tag}"] = per_seed(
                rows["barrier_train_loss"],
                planned=planned // 2,
                error=_mean_sd(rows["barrier_test_error"]),
                raw=bb.loc[bb["alignment"] == "raw", "barrier_train_loss"].mean(),
                moved=rows["units_moved"].mean(),
            )
    independent = frame[frame["variation"] == "independent"]
    losses = independent.pivot_table(index="seed", columns="width", values="final_train_loss")
    stats = independent.groupby("width")["final_train_loss"].agg(["mean", "std"])
    bad = (losses > 5 * losses.median()).sum().astype(str) + f"/{len(losses)}"
    by_width = lambda values, f: ", ".join(f"{v:{f}} (h={w})" for w, v in values.items())
    evidence["spread"] = bootstrap(
        losses.iloc[:, [0, -1]].dropna().to_numpy(),
        _log_sd_ratio,
        planned,
        vectorized=True,
        sd=by_width(stats["std"], ".2g"),
        mean=by_width(stats["mean"], ".2g"),
        cv=by_width(stats["std"] / stats["mean"], ".1%"),
        bad=by_width(bad, ""),
    )
    return evidence


# ----- figures ------------------------------------------------------------------------
def _pair_seeds(pairs: pd.DataFrame) -> int:
    """Seeds in a table of pairs (either side)."""
    return len(set(pairs["seed"]) | set(pairs["partner_seed"]))


def _grid(frame: pd.DataFrame, **kwargs):
    widths = sorted(frame["width"].unique())
    variations = [v for v in VARIATIONS if v in set(frame["variation"])]
    figure, axes = plt.subplots(len(widths), len(variations), squeeze=False, **kwargs)
    return figure, axes, widths, variations


def _heatmaps(pairs: pd.DataFrame, column: str, label: str, out_dir: Path, name: str) -> Path:
    figure, axes, widths, variations = _grid(
        pairs, figsize=(3.0 * 3, 2.7 * len(pairs["width"].unique())), layout="constrained"
    )
    vmax = float(pairs[column].max())
    for i, width in enumerate(widths):
        for j, variation in enumerate(variations):
            part = pairs[(pairs["width"] == width) & (pairs["variation"] == variation)]
            if part.empty:
                axes[i, j].axis("off")
                continue
            seeds = sorted(set(part["seed"]) | set(part["partner_seed"]))
            matrix = np.full((len(seeds), len(seeds)), np.nan)  # diagonal (a seed with itself)
            index = {s: k for k, s in enumerate(seeds)}
            for a, b, v in zip(part["seed"], part["partner_seed"], part[column]):
                matrix[index[a], index[b]] = matrix[index[b], index[a]] = v
            ax = axes[i, j]
            cmap = plt.get_cmap("viridis").copy()
            cmap.set_bad("0.85")
            shown = ax.imshow(np.ma.masked_invalid(matrix), vmin=0, vmax=vmax, cmap=cmap)
            ax.grid(False)
            ax.set_title(f"h = {width}, {variation}\nmean {part[column].mean():.3g}")
            ax.set_xticks(range(len(seeds)), seeds, fontsize=6)
            ax.set_yticks(range(len(seeds)), seeds, fontsize=6)
            if i == len(widths) - 1:
                ax.set_xlabel("seed")
            if j == 0:
                ax.set_ylabel("seed")
    figure.colorbar(shown, ax=axes, label=label, shrink=0.8)
    means = pairs[pairs["width"] == WIDEST].groupby("variation")[column].mean()
    independent = pairs[pairs["variation"] == "independent"].groupby("width")[column].mean()
    figure.suptitle(
        f"{label.capitalize()} between the final networks of every pair of seeds "
        f"(n = {_pair_seeds(pairs)} seeds; grey diagonal: a seed with itself).\n"
        f"Independent seeds: {', '.join(f'{v:.2f} (h={w})' for w, v in independent.items())}"
        + (
            f"; at h = {WIDEST}: " + ", ".join(f"{v} {means[v]:.2f}" for v in means.index)
            if len(means)
            else ""
        ),
        fontsize=9,
    )
    return fig.save(figure, out_dir, name)


def _interpolation(
    paths: pd.DataFrame, column: str, n_pairs: int, out_dir: Path, barriers: pd.DataFrame, n: int
) -> Path:
    figure, axes, widths, variations = _grid(
        paths, figsize=(3.2 * 3, 2.6 * len(paths["width"].unique())), sharex=True
    )
    for i, width in enumerate(widths):
        for j, variation in enumerate(variations):
            ax = axes[i, j]
            part = paths[(paths["width"] == width) & (paths["variation"] == variation)]
            if part.empty:
                ax.axis("off")
                continue
            for kind, color in (("raw", "C3"), ("aligned", "C0")):
                fig.band(ax, part[part["alignment"] == kind], "t", column, color=color, label=kind)
            by_kind = part.pivot_table(index=["seed", "t"], columns="alignment", values=column)
            if np.allclose(by_kind["raw"], by_kind["aligned"]):
                note = "raw = aligned (matching kept every unit)"
                ax.text(0.5, 0.03, note, ha="center", transform=ax.transAxes, fontsize=7)
            ax.set_title(f"h = {width}, {variation}")
            ax.set_xlabel("t  ((1−t)·θ_a + t·θ_b)")
            if j == 0:
                ax.set_ylabel(column.replace("_", " "))
    axes[0, 0].legend()
    independent = barriers[barriers["variation"] == "independent"]
    by_width = independent.pivot_table(
        index="width", columns="alignment", values=f"barrier_{column}"
    )
    summary = ", ".join(
        f"h={w}: {row['raw']:.2f} → {row['aligned']:.2f}" for w, row in by_width.iterrows()
    )
    figure.suptitle(
        f"{column.replace('_', ' ').capitalize()} on the straight line between two seeds, raw "
        f"vs weight-matched (mean ± 95% CI over {n_pairs} disjoint pairs of n = "
        f"{n} seeds).\nBarrier, independent seeds, raw → aligned: {summary}",
        fontsize=9,
    )
    return fig.save(figure, out_dir, f"interpolation_{column}")


def _errorbars(ax, x, cis, **kwargs) -> None:
    """Points with asymmetric CI bars; ``cis``: (estimate, low, high) per point."""
    mean, low, high = (np.array(v) for v in zip(*cis))
    ax.errorbar(x, mean, yerr=[mean - low, high - mean], marker="o", capsize=3, **kwargs)


def _cka(pairs: pd.DataFrame, n: int, out_dir: Path) -> Path:
    layers = sorted(c for c in pairs.columns if c.startswith("cka_"))
    widths = sorted(pairs["width"].unique())
    figure, axes = plt.subplots(1, len(widths), figsize=(3.2 * len(widths), 3.0), sharey=True)
    for ax, width in zip(np.atleast_1d(axes), widths):
        for k, (variation, part) in enumerate(pairs[pairs["width"] == width].groupby("variation")):
            seeds = sorted(set(part["seed"]) | set(part["partner_seed"]))
            means = [
                pair_mean(seeds, part["seed"], part["partner_seed"], part[c], 0) for c in layers
            ]
            cis = [(m.interval.estimate, *m.interval.ci()) for m in means]
            _errorbars(ax, np.arange(1, len(layers) + 1) + (k - 1) * 0.08, cis, label=variation)
        ax.set_xticks(range(1, len(layers) + 1))
        ax.set(xlabel="hidden layer", title=f"h = {width}")
    np.atleast_1d(axes)[0].set_ylabel("linear CKA between two seeds")
    np.atleast_1d(axes)[0].legend()
    independent = pairs[pairs["variation"] == "independent"].groupby("width")[layers].mean()
    summary = ", ".join(
        f"h={w}: " + "/".join(f"{v:.2f}" for v in row) for w, row in independent.iterrows()
    )
    figure.suptitle(
        f"Representation similarity by layer (mean over seed pairs, 95% CI by studentized "
        f"seed bootstrap, n = {n} seeds).\nIndependent seeds grow more alike with width, CKA "
        f"by layer: {summary}",
        fontsize=9,
    )
    return fig.save(figure, out_dir, "cka_by_layer")


def _losses(results: ResultsFolder, frame: pd.DataFrame, out_dir: Path) -> Path:
    figure, axes = plt.subplots(1, 2, figsize=(8.4, 3.4))
    for ax, column in zip(axes, ("final_train_loss", "final_test_loss")):
        for k, (variation, part) in enumerate(frame.groupby("variation")):
            x = part["width"] * np.exp(0.08 * (k - 1))
            ax.scatter(x, part[column], s=9, alpha=0.6, color=f"C{k}", label=variation)
        ax.set(xscale="log", xlabel="hidden width h (two layers)", ylabel=column.replace("_", " "))
        ax.set_xscale("log", base=2)
    axes[0].set(yscale="log", title="final train loss, each seed")
    axes[1].set_title("final test loss, each seed")
    axes[0].legend(fontsize=7)
    primary = analyze(results)[f"loss_h{WIDEST}_independent"].interval
    low, high = primary.ci()
    figure.suptitle(
        f"C20 primary, h = {WIDEST}, independent seeds: test losses (right) "
        "differ by "
        f"{primary.estimate:.1%} [{low:.1%}, {high:.1%}] on average over seed pairs, "
        f"n = {primary.n} seeds",
        fontsize=10,
    )
    return fig.save(figure, out_dir, "loss_spread")


def _ensemble(frame: pd.DataFrame, out_dir: Path) -> Path:
    widths = sorted(frame["width"].unique())
    figure, axes = plt.subplots(1, len(widths), figsize=(3.0 * len(widths), 3.2), sharey=True)
    for ax, width in zip(np.atleast_1d(axes), widths):
        for k, (variation, part) in enumerate(frame[frame["width"] == width].groupby("variation")):
            k = list(VARIATIONS).index(variation)
            part = part.sort_values("seed")
            members, upto = np.arange(1, len(part) + 1), part["ensemble_upto_test_acc"]
            ax.plot(members, upto, marker="o", ms=3, color=f"C{k}", label=variation)
            single = iv.t_interval(part["final_test_acc"])
            low, high = single.ci()
            ax.axhline(single.estimate, color=f"C{k}", ls="--", lw=0.8)
            ax.axhspan(low, high, color=f"C{k}", alpha=0.12, lw=0)
            if len(part) > 1 and not part["ensemble_loo_test_acc"].isna().any():
                n = len(part)  # jackknife CI of the all-member ensemble's accuracy
                pseudo = (
                    n * part["ensemble_test_acc"].iloc[0] - (n - 1) * part["ensemble_loo_test_acc"]
                )
                whole = iv.t_interval(pseudo)
                w_low, w_high = whole.ci()
                x, acc = n + 0.25 * (k + 1), part["ensemble_test_acc"].iloc[0]
                ax.vlines(x, w_low, w_high, color=f"C{k}", lw=1.2)  # the CI (bias-corrected)
                ax.plot(x, acc, marker="_", ms=8, color=f"C{k}")
        ax.set(xlabel="ensemble members (seeds 0 … k−1)", title=f"h = {width}")
    np.atleast_1d(axes)[0].set_ylabel("test accuracy")
    np.atleast_1d(axes)[0].legend(loc="lower right", fontsize=7)
    gains = []
    for width in widths:
        part = frame[(frame["width"] == width) & (frame["variation"] == "independent")]
        gains.append(f"h={width}: {_ensemble_gain(part)}")
    figure.suptitle(
        f"Ensembles of seeds beat the mean single run (dashed, band: 95% t-CI; bar at k = n: "
        f"jackknife 95% CI), n = {fig.n_seeds(frame)} seeds.\nGain of the independent-seed "
        "ensemble: " + "; ".join(gains),
        fontsize=9,
    )
    figure.tight_layout()
    return fig.save(figure, out_dir, "ensemble")


def _barrier_widths(barriers: pd.DataFrame, out_dir: Path) -> Path:
    """Train-loss barrier of independent seeds vs width, raw and aligned (per disjoint pair)."""
    part = barriers[barriers["variation"] == "independent"]
    figure, axes = plt.subplots(1, 2, figsize=(8.4, 3.4))
    reached = []
    for ax, column in zip(axes, ("barrier_train_loss", "barrier_test_error")):
        for kind, color in (("raw", "C3"), ("aligned", "C0")):
            rows = part[part["alignment"] == kind]
            widths = sorted(rows["width"].unique())
            cis = []
            for w in widths:
                ci = iv.t_interval(rows.loc[rows["width"] == w, column])
                cis.append((ci.estimate, *ci.ci()))
                if (
                    kind == "aligned"
                    and column == "barrier_train_loss"
                    and ci.ci()[1] < BARRIER_TOL
                ):
                    reached.append(w)
            _errorbars(ax, widths, cis, color=color, label=kind)
        ax.axhline(0, color="k", lw=0.6)
        ax.set_xscale("log", base=2)
        ax.set(xlabel="hidden width h (two layers)", ylabel=column.replace("_", " "))
    axes[0].axhline(BARRIER_TOL, color="k", ls=":", lw=1, label=f"{BARRIER_TOL} nats")
    axes[0].legend(fontsize=7)
    n_pairs = part.groupby("width")["pair"].nunique().min()
    verdict = (
        f"aligned barrier below {BARRIER_TOL} nats (CI) from h = {min(reached)}"
        if reached
        else f"aligned barrier above {BARRIER_TOL} nats at every width up to h = "
        f"{part['width'].max()}"
    )
    figure.suptitle(
        f"Independent seeds: weight matching lowers the barrier; {verdict} (mean ± 95% t-CI "
        f"over {n_pairs} disjoint pairs, n = {_pair_seeds(part)} seeds)",
        fontsize=9,
    )
    figure.tight_layout()
    return fig.save(figure, out_dir, "barrier_vs_width")


def _cosine_baselines(pairs: pd.DataFrame, out_dir: Path) -> Path:
    """Cosine of final weights between seeds against its two baselines, per width."""
    part = pairs[pairs["variation"] == "independent"]
    widths = sorted(part["width"].unique())
    figure, ax = plt.subplots(figsize=(6.0, 3.6))
    series = {
        "final vs final, two seeds": ("cosine", "C0"),
        "init vs init, two seeds": ("init_cosine", "C1"),
    }
    for k, (label, (column, color)) in enumerate(series.items()):
        cis = []
        for w in widths:
            rows = part[part["width"] == w]
            seeds = sorted(set(rows["seed"]) | set(rows["partner_seed"]))
            m = pair_mean(seeds, rows["seed"], rows["partner_seed"], rows[column], 0).interval
            cis.append((m.estimate, *m.ci()))
        _errorbars(ax, np.array(widths) * np.exp(0.06 * (k - 1)), cis, color=color, label=label)
    cis = []
    for w in widths:
        ci = iv.t_interval(init_final_cosines(part[part["width"] == w]))
        cis.append((ci.estimate, *ci.ci()))
    _errorbars(
        ax, np.array(widths) * np.exp(0.06), cis, color="C2", label="init vs final, one seed"
    )
    ax.axhspan(-COSINE_TOL, COSINE_TOL, color="0.9", zorder=0, label=f"|cos| < {COSINE_TOL}")
    ax.set_xscale("log", base=2)
    ax.set_ylim(-0.25, 1.05)  # a studentized interval from few seeds can run off the scale
    ax.set(xlabel="hidden width h (two layers)", ylabel="cosine of flattened weights")
    ax.legend(fontsize=7)
    final = part[part["width"] == widths[-1]]
    ax.set_title(
        f"Independent seeds at h = {widths[-1]}: final weights cos "
        f"{final['cosine'].mean():.3f}, their inits {final['init_cosine'].mean():.3f}; each run keeps "
        f"cos {init_final_cosines(final).mean():.2f} with its own init. n = "
        f"{_pair_seeds(part)} seeds, 95% CIs",
        fontsize=8,
    )
    figure.tight_layout()
    return fig.save(figure, out_dir, "cosine_baselines")


def figures(results: ResultsFolder, out_dir: Path) -> list[Path]:
    fig.style()
    frame, pairs, barriers, paths = _data(results)  # diverged runs left out of every mean
    n = fig.n_seeds(frame)
    out: list[Path] = []
    if not pairs.empty:
        for column, label in (
            ("relative_distance", "relative L2 distance"),
            ("disagreement", "test disagreement"),
        ):
            out.append(_heatmaps(pairs, column, label, out_dir, f"{column}_heatmaps"))
    if not paths.empty:
        n_pairs = paths.groupby(["width", "variation"])["seed"].nunique().min()
        out += [
            _interpolation(paths, c, n_pairs, out_dir, barriers, n)
            for c in ("train_loss", "test_error")
        ]
        out.append(_barrier_widths(barriers, out_dir))
        out.append(_cosine_baselines(pairs, out_dir))
    if not pairs.empty:
        out.append(_cka(pairs, n, out_dir))
    out.append(_losses(results, frame, out_dir))
    out.append(_ensemble(frame, out_dir))
    return out


# ----- hardware -----------------------------------------------------------------------
def hardware_diff(folder_a: Path | str, folder_b: Path | str) -> pd.DataFrame:
    """Runs saved in both results folders (same run id: same config and seed), compared.

    E.g. the default profile run on a CPU and on a GPU: per run, the relative distance
    and cosine of the final weights and the differences in final train/test loss.
    """
    a, b = ResultsFolder(folder_a), ResultsFolder(folder_b)
    summary_a, summary_b = (f.summary().set_index("run_id") for f in (a, b))
    rows = []
    for path in sorted((a.path / PARAMS_DIR).glob("*.npz")):
        other = b.path / PARAMS_DIR / path.name
        if not other.exists():
            continue
        run_id = path.stem
        similarity = alignment.flat_similarity(load_params(path), load_params(other))
        row = {"run_id": run_id, **{k: float(v) for k, v in similarity.items()}}
        for column in ("final_train_loss", "final_test_loss", "final_test_acc"):
            row[f"delta_{column}"] = float(
                summary_b.loc[run_id, column] - summary_a.loc[run_id, column]
            )
        rows.append({**summary_a.loc[run_id, ["seed", "widths", "variation"]].to_dict(), **row})
    return pd.DataFrame(rows)


def tensor_drift(folder_a: Path | str, folder_b: Path | str) -> pd.DataFrame:
    """Per saved run and parameter tensor: how far folder B's weights drifted from A's.

    Columns: ``max_abs_diff``, ``relative_l2`` (‖b − a‖ / ‖a‖), ``cosine`` and
    ``identical`` (bitwise equal). Runs are matched by run id (file name).
    """
    a, b = ResultsFolder(folder_a), ResultsFolder(folder_b)
    rows = []
    for path in sorted((a.path / PARAMS_DIR).glob("*.npz")):
        other = b.path / PARAMS_DIR / path.name
        if not other.exists():
            continue
        with np.load(path) as left, np.load(other) as right:
            for name in sorted(set(left.files) | set(right.files)):
                if name not in left.files or name not in right.files:
                    rows.append({"run_id": path.stem, "tensor": name, "missing": True})
                    continue
                x = np.asarray(left[name], np.float64)
                y = np.asarray(right[name], np.float64)
                if x.shape != y.shape:
                    rows.append({"run_id": path.stem, "tensor": name, "shape_mismatch": True})
                    continue
                norm_x, norm_y = np.linalg.norm(x), np.linalg.norm(y)
                rows.append(
                    {
                        "run_id": path.stem,
                        "tensor": name,
                        "size": x.size,
                        "max_abs_diff": float(np.max(np.abs(x - y))) if x.size else 0.0,
                        "relative_l2": float(np.linalg.norm(x - y) / norm_x) if norm_x else 0.0,
                        "cosine": float(np.vdot(x, y) / (norm_x * norm_y))
                        if norm_x and norm_y
                        else float("nan"),
                        "identical": bool(np.array_equal(left[name], right[name])),
                    }
                )
    return pd.DataFrame(rows)
