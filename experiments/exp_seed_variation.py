"""Many seeds, one region of good solutions: distances, alignment, mode connectivity (C20, C16).

Command: ``toolkit run exp_seed_variation --seeds 10``

MNIST-1D, MLP 40-h-h-10 (two ReLU hidden layers), h ∈ {16, 64, 256}. SGD + momentum
0.9, lr 0.05, batch 100, 60 epochs (2,400 steps), no regularization. Three ways to
vary a run (factor ``variation``), each over seeds 0 … S−1:

- ``independent``: seed s draws both the init and the data order;
- ``same_init``: every run starts from seed 0's init; seed s draws the data order;
- ``same_order``: every run sees seed 0's batch order; seed s draws the init.

(So seed 0 is the same run, bit for bit, in all three conditions.)

Per pair of runs of a condition (all S(S−1)/2 pairs, vmapped over pairs): relative L2
distance and cosine of the flattened final weights, and the cosine of their
displacements from init; on the 12,000 test inputs, argmax disagreement and the mean
symmetrized KL and JS divergence of the predictive distributions; linear CKA of each
hidden layer's activations (2,000 test inputs; CKA ignores unit order, so alignment
cannot change it). Per disjoint pair (0–1, 2–3, …): weight matching (Ainsworth et al.
2023; a Hungarian assignment per hidden layer on the host, coordinate descent to a
fixed point), then train loss/error (1,000 train inputs) and test loss/error (2,000
test inputs) at 25 points on the straight line between the two solutions, raw and
aligned; barrier = max along the path − mean of the endpoints. Per run: test accuracy
of the ensemble of its condition's runs (all, seeds ≤ s, and all but s).

Tests (``TESTS``; C20's primary: relative test-loss difference at the widest width,
independent seeds, within 5%): means over all pairs get a studentized bootstrap over
seeds (:func:`pair_mean`: pairs share seeds); barriers use the S/2 disjoint pairs as
independent units; the ensemble gain, jackknife (leave-one-seed-out) pseudo-values.

Hardware (the CPU-vs-GPU part of C20): final parameters of the ``independent`` runs
(h ≤ 256) are saved as ``params/<run_id>.npz`` ('/'-joined Flax paths, float32). Run
ids hash only the config and the seed, so the same command run on a GPU (with ``--out``
elsewhere) can be diffed against the CPU folder with :func:`hardware_diff`. That
comparison has not been run yet: the session that wrote this had no GPU time left.

Pairs are formed among the runs trained in one invocation: growing ``--seeds`` on an
existing folder pairs only the new seeds with each other, so use ``--force`` then.

Cost: default profile (3 widths × 3 variations × 10 seeds = 90 runs, 3 cohorts):
1 min 44 s – 2 min 52 s wall on a 2-core CPU shared with other jobs (two measured runs;
h = 256 is 3/4 of it, measurements ~10% of it); the quick profile ~20 s, mostly
compilation. Not yet timed on a GPU. Outputs: 4.2 MB of results (3.5 MB of them the
30 parameter files) and 1.5 MB of figures.

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
GRID = {"widths": WIDTHS, "variation": list(VARIATIONS)}

PROFILES = {
    "quick": {
        "seeds": 4,
        "epochs": 2,
        "grid": {"widths": [(8, 8), (16, 16)], "variation": list(VARIATIONS)},
    },
    "default": {"seeds": 10},
    "paper": {"seeds": 20, "epochs": 100},
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
WIDEST = max(w[0] for w in WIDTHS)
#: (width, variation) → the statistics tested there ("aligned" only where matching moves units)
CONDITIONS = {
    **{(w, "independent"): ("cosine", "loss", "raw", "aligned") for (w, _) in WIDTHS},
    (WIDEST, "same_init"): ("cosine", "loss", "raw"),
    (WIDEST, "same_order"): ("cosine", "loss"),
}
ORTHOGONAL = (
    "baseline: {baseline}; the displacements from init have cos {displacement:.2f}; after "
    "weight matching cos {aligned:.2f}; relative distance {distance:.2f} (orthogonal, equal "
    "norms: 1.41)"
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
            + ORTHOGONAL + ".", where),
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


def analyze(results: ResultsFolder) -> dict:
    frame, pairs, barriers, _ = _data(results)
    planned = results.summary()["seed"].nunique()
    evidence = {}
    for width, variation in CONDITIONS:
        tag = f"h{width}_{variation}"
        pick = lambda t: t[(t["width"] == width) & (t["variation"] == variation)]  # noqa: B023
        part, pp, bb = pick(frame), pick(pairs), pick(barriers)
        params = 40 * width + width + width * width + width + width * 10 + 10
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
            seeds = sorted(set(part["seed"]) | set(part["partner_seed"]))
            matrix = np.zeros((len(seeds), len(seeds)))
            index = {s: k for k, s in enumerate(seeds)}
            for a, b, v in zip(part["seed"], part["partner_seed"], part[column]):
                matrix[index[a], index[b]] = matrix[index[b], index[a]] = v
            ax = axes[i, j]
            shown = ax.imshow(matrix, vmin=0, vmax=vmax, cmap="viridis")
            ax.set_title(f"h = {width}, {variation}\nmean {part[column].mean():.3g}")
            ax.set_xticks(range(len(seeds)), seeds, fontsize=6)
            ax.set_yticks(range(len(seeds)), seeds, fontsize=6)
            if i == len(widths) - 1:
                ax.set_xlabel("seed")
            if j == 0:
                ax.set_ylabel("seed")
    figure.colorbar(shown, ax=axes, label=label, shrink=0.8)
    figure.suptitle(f"{label} between the final networks of every pair of seeds", fontsize=10)
    return fig.save(figure, out_dir, name)


def _interpolation(paths: pd.DataFrame, column: str, n_pairs: int, out_dir: Path) -> Path:
    figure, axes, widths, variations = _grid(
        paths, figsize=(3.2 * 3, 2.6 * len(paths["width"].unique())), sharex=True
    )
    for i, width in enumerate(widths):
        for j, variation in enumerate(variations):
            ax = axes[i, j]
            part = paths[(paths["width"] == width) & (paths["variation"] == variation)]
            for kind, color in (("raw", "C3"), ("aligned", "C0")):
                fig.band(ax, part[part["alignment"] == kind], "t", column, color=color, label=kind)
            by_kind = part.pivot_table(index=["seed", "t"], columns="alignment", values=column)
            if np.allclose(by_kind["raw"], by_kind["aligned"]):
                note = "raw = aligned (matching kept every unit)"
                ax.text(0.5, 0.03, note, ha="center", transform=ax.transAxes, fontsize=7)
            ax.set_title(f"h = {width}, {variation}")
            if i == len(widths) - 1:
                ax.set_xlabel("t  ((1−t)·θ_a + t·θ_b)")
            if j == 0:
                ax.set_ylabel(column.replace("_", " "))
    axes[0, 0].legend()
    figure.suptitle(
        f"{column.replace('_', ' ').capitalize()} on the straight line between two seeds, raw "
        f"vs weight-matched (mean ± 95% CI over {n_pairs} disjoint pairs)",
        fontsize=10,
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
    figure.suptitle(
        f"Representation similarity by layer (mean over seed pairs, 95% CI by studentized "
        f"seed bootstrap, n = {n} seeds)",
        fontsize=10,
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
    figure, axes = plt.subplots(1, len(widths), figsize=(3.2 * len(widths), 3.0))
    for ax, width in zip(np.atleast_1d(axes), widths):
        for k, (variation, part) in enumerate(frame[frame["width"] == width].groupby("variation")):
            part = part.sort_values("seed")
            members, upto = np.arange(1, len(part) + 1), part["ensemble_upto_test_acc"]
            ax.plot(members, upto, marker="o", color=f"C{k}", label=variation)
            ax.axhline(part["final_test_acc"].mean(), color=f"C{k}", ls="--", lw=0.8)
        ax.set(xlabel="ensemble members (seeds 0 … k−1)", title=f"h = {width}")
    np.atleast_1d(axes)[0].set_ylabel("test accuracy")
    np.atleast_1d(axes)[0].legend(loc="lower right")
    figure.suptitle("Ensembles of seeds vs the mean single run (dashed)", fontsize=10)
    return fig.save(figure, out_dir, "ensemble")


def figures(results: ResultsFolder, out_dir: Path) -> list[Path]:
    fig.style()
    frame, pairs, _, paths = _data(results)  # diverged runs left out of every mean
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
        out += [_interpolation(paths, c, n_pairs, out_dir) for c in ("train_loss", "test_error")]
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
