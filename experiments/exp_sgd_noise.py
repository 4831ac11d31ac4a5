"""SGD vs full-batch GD: compute to a loss, flatness, accuracy; noise and memory vs B (C05, C08).

Command: ``toolkit run exp_sgd_noise --seeds 10``

An MLP 40-100-100-10 (ReLU, 15k parameters) is trained on MNIST-1D (4,000 train /
1,000 validation / 12,000 test) with *plain* SGD (no momentum, no weight decay) at
batch sizes B = 25, 100, 400, 1,000 and 4,000 (= N: full-batch gradient descent), under
two learning-rate policies: ``fixed`` (lr 0.05 for every B) and ``scaled`` (the linear
scaling rule, lr = 0.05·B/100: 0.0125 … 2.0 for GD; lr/B constant). Two budgets:

- ``epochs``: 40 epochs for every run, i.e. equal compute (160,000 gradient
  evaluations); steps = 40·N/B: 6,400 at B = 25, 40 for GD;
- ``steps``: 160 optimizer steps for every run, i.e. 1 epoch at B = 25, 4 at B = 100,
  16 at B = 400, 40 at B = 1,000 (the two budgets meet there) and 160 epochs of GD.

The same seed gives the same initialization in every condition, so comparisons are
paired by seed. Compute is counted in gradient evaluations (examples processed =
steps × B). Pre-registered (before the default run): the verdicts compare GD with SGD
at the reference batch B = 100 (the lr anchor, equal lr under both policies), and the
target train loss for "compute to reach a given loss" is 1.5 nats (chance: 2.30),
chosen from a pilot so that the reference SGD run reaches it well inside its budget;
for it every (policy, B, seed) uses the longer of its two runs (same seed: the shorter
run is a prefix of the longer). A run that never reaches the target is reported as
censored at its budget, not dropped: a censored GD run makes its ratio a lower bound.

Measured per run on its final parameters (eval mode): the top Hessian eigenvalue
(Lanczos, 20 iterations, on the first 1,000 training examples) and the minibatch
gradient variance E‖g_B − g‖² at B = 25, 100, 400, 1,000 on the full training set
(16 batches each; log-log slope after the without-replacement factor (N−B)/(N−1),
``measures.gradient_noise_scaling``). Per cohort (one training batch size): the
compiled memory of one SGD step of one run at that B (XLA's buffer assignment:
arguments + outputs + temporaries; available on every backend; the C08 verdict) and
the device's peak bytes in use when the cohort's training ends (``memory_stats()``:
NaN on a CPU, which does not report it; on a GPU it is the process's running peak, so
after the first cohort it includes earlier cohorts' measurements and hardly moves
with B: 210 MiB after B = 25, then 381–390 MiB on an H200).

Measured alone on the 2-core CPU: 175 s wall for ``toolkit run exp_sgd_noise --seeds 10``
(the figures below were taken while other jobs shared the machine).

Cost (measured): default profile (5 batch sizes × 2 policies × 2 budgets × 10 seeds =
200 runs, 9 cohorts) 9 min 16 s wall, 4 min 8 s CPU, on the 2-core CPU while other
jobs kept its load average at 7–8 (4 min of it training steps, 3 min
compilation, 2 min measurement; alone it should take about its CPU time). Paper profile (20 seeds,
100 epochs, 1,600 equal steps = 1,600 epochs of GD; 400 runs, 10 cohorts) 2 min 37 s
on one H200, of which training is ~5 s and the first measurement's compilation ~55 s.
Quick profile: ~1 min on either (compilation).

Caveat of the budgets: at equal epochs GD has taken only 40 steps (100 in the paper
profile) and is far from any minimum, so its "flatness" and test accuracy there are
those of an undertrained network; the findings say when the two arms stop at clearly
different training losses. The cleanest flatness comparison is equal steps with the
lr held, where both reach about the same loss (0.83 vs 0.84 in the paper profile).

Expected (Keskar 2017; Jastrzębski 2018; Goyal 2017; Geiping 2022; Cohen 2021): at
equal epochs SGD reaches a much lower loss than GD at the same lr (it takes N/B times
more steps for the same compute); with the lr held, GD sharpens to ≈ 2/lr (edge of
stability) and ends sharper than SGD, with a small test-accuracy edge for SGD; with the
lr scaled, GD's large step caps its sharpness at 2/lr, so "SGD is flatter" may fail and
the compute advantage shrinks; gradient variance ∝ 1/B; step memory rises with B.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Literal

import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import matplotlib.ticker as mticker
import numpy as np
import pandas as pd

from toolkit import data as datasets
from toolkit import figures as fig
from toolkit import measures as M
from toolkit import models
from toolkit.engine import CohortSpec, per_example_loss
from toolkit.results import ResultsFolder
from toolkit.runner import peak_memory
from toolkit.spec import Count, Positive, RunConfig, SpecError
from toolkit.stats import bootstrap_ci, exact_verdict_row, seed_verdict

CLAIMS = ("C05", "C08")
TARGET_TRAIN_LOSS = 1.5  # pre-registered: "reaches a given loss" means this full-train CE
CURVATURE_EXAMPLES = 1000
NOISE_BATCHES = (25, 100, 400, 1000)
NOISE_DRAWS = 16
SLOPE_TOLERANCE = 0.15  # C08: slope within −1 ± this counts as "∝ 1/B"


@dataclass(frozen=True)
class Config(RunConfig):
    # scientific: the factors under study
    batch_size: int = 100  # ≥ N (4,000 on MNIST-1D) is full-batch gradient descent
    # "fixed": base_lr for every B; "scaled": base_lr·B/reference_batch
    lr_policy: Literal["fixed", "scaled"] = "fixed"
    # "epochs": budget_epochs for all; "steps": budget_steps for all
    budget: Literal["epochs", "steps"] = "epochs"
    # fixed: the protocol
    base_lr: Positive = 0.05
    reference_batch: Count = 100  # the lr anchor, and the SGD batch the verdicts compare with GD
    budget_epochs: Count = 40
    budget_steps: Count = 160  # must be a whole number of epochs at every batch size
    widths: tuple[int, ...] = (100, 100)
    optimizer: str = "sgd"
    momentum: float = 0.0  # plain SGD / GD
    history_points: int = 40

    DERIVED: ClassVar[dict[str, str]] = {
        "learning_rate": "set base_lr, lr_policy or reference_batch instead",
        "epochs": "set budget, budget_epochs or budget_steps instead",
    }

    def run_epochs(self) -> int:
        if self.budget == "epochs":
            return self.budget_epochs
        per_epoch = -(-len(datasets.load(self.dataset).y_train) // self.batch_size)
        epochs, rest = divmod(self.budget_steps, per_epoch)
        if rest or not epochs:
            raise SpecError(
                f"budget_steps={self.budget_steps} is not a whole number of epochs at "
                f"batch_size={self.batch_size} ({per_epoch} steps per epoch)"
            )
        return epochs

    def cohort_spec(self) -> CohortSpec:
        if self.budget not in ("epochs", "steps") or self.lr_policy not in ("fixed", "scaled"):
            raise SpecError("budget must be epochs|steps and lr_policy fixed|scaled")
        spec = super().cohort_spec()
        return CohortSpec(**{**spec.__dict__, "epochs": self.run_epochs()})

    def hparams(self) -> dict[str, float]:
        scale = self.batch_size / self.reference_batch if self.lr_policy == "scaled" else 1.0
        return {**super().hparams(), "learning_rate": self.base_lr * scale}


# Batch size first: cohorts (one per batch size × epoch count) then train in order of B,
# so a device's running peak memory, read after each cohort, follows B.
GRID = {
    "batch_size": [25, 100, 400, 1000, 4000],
    "budget": ["epochs", "steps"],
    "lr_policy": ["fixed", "scaled"],
}

PROFILES = {
    "quick": {
        "seeds": 2,
        "widths": (16,),
        "budget_epochs": 2,
        "budget_steps": 8,  # B = 1,000: 2 epochs (one cohort with the epochs budget); GD: 8
        "reference_batch": 1000,
        "history_points": 8,
        "grid": {"batch_size": [1000, 4000], "budget": ["epochs", "steps"], "lr_policy": ["fixed"]},
    },
    "default": {"seeds": 10},
    "paper": {"seeds": 20, "budget_epochs": 100, "budget_steps": 1600, "history_points": 200},
}


# ----- measurements (vmapped over the runs of a cohort) ---------------------------------
@functools.cache
def _measure_fns(model_kind: str, widths: tuple, num_classes: int, activation: str, loss_kind: str):
    """The loss and the per-run measurement, built once per architecture (one compile)."""
    model = models.build(model_kind, widths, num_classes, activation)

    def loss(params, x, y):  # eval mode: no dropout
        return per_example_loss(loss_kind, model.apply(params, x), y).mean()

    def per_run(params, key, x_sub, y_sub, x_full, y_full):
        eig_key, noise_key = jax.random.split(key)
        top, _ = M.lanczos_eigs(loss, params, x_sub, y_sub, eig_key, num_iters=20, k=1)
        variances, slope = M.gradient_noise_scaling(
            loss, params, x_full, y_full, noise_key, NOISE_BATCHES, num_batches=NOISE_DRAWS
        )
        out = {"lambda_max": top[0], "grad_var_slope": slope}
        out.update({f"grad_var_b{b}": v for b, v in zip(NOISE_BATCHES, variances)})
        return out

    return loss, per_run


def step_memory(loss, params, x, y, batch_size: int) -> dict[str, int]:
    """Bytes XLA assigns to one SGD step of one run at ``batch_size`` (compiled, not run)."""
    step = jax.jit(
        lambda p, xb, yb: jax.tree.map(lambda w, g: w - 0.1 * g, p, jax.grad(loss)(p, xb, yb))
    )
    xb, yb = jnp.zeros((batch_size, *x.shape[1:]), x.dtype), jnp.zeros((batch_size,), y.dtype)
    analysis = step.lower(params, xb, yb).compile().memory_analysis()
    parts = {
        "step_argument_bytes": analysis.argument_size_in_bytes,
        "step_output_bytes": analysis.output_size_in_bytes,
        "step_temp_bytes": analysis.temp_size_in_bytes,
    }
    return {**parts, "step_bytes": sum(parts.values()) - analysis.alias_size_in_bytes}


def measure(trained) -> dict:
    # The device's running peak, before measuring allocates anything (NaN on a CPU).
    device_peak = peak_memory(trained.cohort.run_axis).get("peak_bytes", float("nan"))
    spec, data = trained.cohort.spec, trained.cohort.data
    loss, per_run = _measure_fns(
        spec.model, tuple(spec.widths), data.num_classes, spec.activation, spec.loss
    )
    x_sub = jnp.asarray(data.x_train[:CURVATURE_EXAMPLES])
    y_sub = jnp.asarray(data.y_train[:CURVATURE_EXAMPLES])
    x_full, y_full = jnp.asarray(data.x_train), jnp.asarray(data.y_train)
    params = trained.result.state["params"]
    runs = trained.runs
    # Probe keys from each run's seed (the same for a seed at every grid point).
    keys = trained.run_keys(50805)
    values = trained.map(per_run, (params, keys), (x_sub, y_sub, x_full, y_full))
    values["reference_batch"] = np.array([run.config.reference_batch for run in runs])
    one_run = jax.tree.map(lambda a: a[0], params)
    memory = {
        "run_id": runs[0].run_id,
        "batch_size": spec.batch_size,
        "epochs": spec.epochs,
        "cohort_runs": len(runs),
        **step_memory(loss, one_run, x_full, y_full, spec.batch_size),
        "device_peak_bytes": device_peak,
        "backend": jax.default_backend(),
    }
    return {**values, "memory": pd.DataFrame([memory])}


# ----- analysis --------------------------------------------------------------------------
def _frame(results: ResultsFolder) -> pd.DataFrame:
    frame = results.summary().copy()
    frame["is_gd"] = frame["steps_per_epoch"] == 1
    frame["compute"] = frame["steps"] * frame["batch_size"]  # gradient evaluations
    frame["diverged"] = frame["diverged"].astype(bool)
    return frame


def _paired(frame, budget, policy, column, log=False) -> tuple[pd.Series, pd.Series, pd.Series]:
    """(GD − SGD at the reference batch, GD values, SGD values) of ``column``, by seed;
    diverged runs are NaN (their seeds drop out of the paired statistic)."""
    part = frame[(frame["budget"] == budget) & (frame["lr_policy"] == policy)]
    part = part.assign(value=part[column].where(~part["diverged"]))
    gd = part[part["is_gd"]].set_index("seed")["value"]
    sgd = part[part["batch_size"] == part["reference_batch"]].set_index("seed")["value"]
    gd, sgd = gd.align(sgd)
    diff = np.log10(gd) - np.log10(sgd) if log else gd - sgd
    return diff, gd, sgd


def compute_to_target(results: ResultsFolder, target: float = TARGET_TRAIN_LOSS) -> pd.DataFrame:
    """Per (policy, B, seed): gradient evaluations until the full-train loss first ≤ target.

    Each uses the longer of its runs (the shorter is a prefix of it). ``reached`` False:
    censored at the run's budget (``compute`` is then that budget, a lower bound).
    """
    frame = _frame(results)
    longest = (
        frame.sort_values(["steps", "budget"], ascending=[False, True])
        .drop_duplicates(["lr_policy", "batch_size", "seed"])
        .set_index("run_id")
    )
    history = results.history()
    history = history[history["run_id"].isin(longest.index)]
    rows = []
    for run_id, part in history.groupby("run_id", sort=False):
        run = longest.loc[run_id]
        hit = part.loc[part["train_loss"] <= target, "step"]
        reached = not hit.empty
        rows.append(
            {
                "lr_policy": run["lr_policy"],
                "batch_size": int(run["batch_size"]),
                "seed": int(run["seed"]),
                "is_gd": bool(run["is_gd"]),
                "reference_batch": int(run["reference_batch"]),
                "reached": reached,
                "diverged": bool(run["diverged"]),
                "compute": int((hit.min() if reached else run["steps"]) * run["batch_size"]),
                "budget_compute": int(run["compute"]),
            }
        )
    return pd.DataFrame(rows).sort_values(["lr_policy", "batch_size", "seed"])


def analyze(results: ResultsFolder) -> list[dict]:
    frame = _frame(results)
    policies = [p for p in ("fixed", "scaled") if (frame["lr_policy"] == p).any()]
    rows = []
    for policy in policies:
        rows += _compute_rows(frame, results, policy)
    for budget in ("epochs", "steps"):
        for policy in policies:
            rows += _landing_rows(frame, budget, policy)
    rows += _noise_rows(frame)
    rows += _memory_rows(results)
    return rows


def _describe(gd: pd.Series, sgd: pd.Series, fmt: str) -> str:
    return f"GD {gd.mean():{fmt}} vs SGD {sgd.mean():{fmt}}"


def _context(frame, budget, policy, warn: bool = True) -> str:
    """Steps, lr (with the stability edge 2/lr) and mean final train loss of both arms,
    and a warning when they stop at clearly different training losses."""
    part = frame[(frame["budget"] == budget) & (frame["lr_policy"] == policy)]
    ref = int(part["reference_batch"].iloc[0])
    arms = {"GD": part[part["is_gd"]], f"SGD B={ref}": part[part["batch_size"] == ref]}
    texts = []
    for name, arm in arms.items():
        lr = float(arm["learning_rate"].iloc[0])
        healthy = arm[~arm["diverged"]]
        texts.append(
            f"{name}: {int(arm['steps'].max())} steps at lr {lr:g} (2/lr = {2 / lr:.3g}), "
            f"train loss {healthy['final_train_loss'].mean():.3f}"
            + (
                f", {int(arm['diverged'].sum())} diverged (left out)"
                if arm["diverged"].any()
                else ""
            )
        )
    diff, gd, sgd = _paired(frame, budget, policy, "final_train_loss")
    _, low, high = bootstrap_ci(diff.dropna().to_numpy())
    apart = (low > 0 or high < 0) and abs(diff.mean()) > 0.1 * max(gd.mean(), sgd.mean())
    warning = (
        ". The two stop at different training losses, so this compares training progress "
        "as much as the minima reached"
        if warn and apart
        else ""
    )
    return "; ".join(texts) + warning


def _compute_rows(frame, results, policy) -> list[dict]:
    rows = []
    ref = int(frame["reference_batch"].iloc[0])
    diff, gd, sgd = _paired(frame, "epochs", policy, "final_train_loss")
    if diff.notna().any():
        rows.append(
            seed_verdict(
                "C05",
                "At equal epochs (equal compute) minibatch SGD ends at a lower training loss "
                "than full-batch GD",
                f"GD − SGD (B={ref}) final train loss, paired by seed",
                diff,
                "greater",
                "GD − SGD final train loss {estimate:.3f} [{low:.3f}, {high:.3f}], n = {n}. "
                + _context(frame, "epochs", policy, warn=False)
                + ".",
                condition=f"equal epochs, {policy} lr",
            )
        )
    table = compute_to_target(results)
    table = table[table["lr_policy"] == policy]
    gd_t = table[table["is_gd"]].set_index("seed")
    sgd_t = table[table["batch_size"] == table["reference_batch"]].set_index("seed")
    gd_t, sgd_t = gd_t.align(sgd_t, join="inner", axis=0)
    if gd_t.empty:
        return rows
    ratio = np.log10(gd_t["compute"] / sgd_t["compute"])
    # A censored GD run gives a lower bound on the ratio (conservative for "SGD needs
    # less"); a censored SGD run an upper bound, so its seed is left out (and counted).
    ratio = ratio.where(sgd_t["reached"])
    both_censored = int((~gd_t["reached"] & ~sgd_t["reached"]).sum())
    note = (
        f"GD reached it in {int(gd_t['reached'].sum())}/{len(gd_t)} seeds (budget "
        f"{int(gd_t['budget_compute'].max()):,} evaluations; unreached ones count at the "
        f"budget, a lower bound on the ratio), SGD in {int(sgd_t['reached'].sum())}/"
        f"{len(sgd_t)} (budget {int(sgd_t['budget_compute'].max()):,}; unreached seeds left "
        f"out{', both unreached: ' + str(both_censored) if both_censored else ''})"
    )
    row = seed_verdict(
        "C05",
        f"SGD reaches a given training loss ({TARGET_TRAIN_LOSS}) with less compute than "
        "full-batch GD",
        f"log10(GD / SGD (B={ref}) gradient evaluations to train loss ≤ "
        f"{TARGET_TRAIN_LOSS}), paired by seed",
        ratio,
        "greater",
        "",
        condition=f"{policy} lr",
    )
    factor = [10 ** row[k] for k in ("estimate", "ci_low", "ci_high")]
    row["finding"] = (
        f"GD needed {factor[0]:.1f}× [{factor[1]:.1f}, {factor[2]:.1f}] the gradient "
        f"evaluations of SGD; {note}."
    )
    rows.append(row)
    return rows


def _landing_rows(frame, budget, policy) -> list[dict]:
    part = frame[(frame["budget"] == budget) & (frame["lr_policy"] == policy)]
    if not part["is_gd"].any() or not (part["batch_size"] == part["reference_batch"]).any():
        return []
    ref = int(part["reference_batch"].iloc[0])
    condition = f"equal {budget}, {policy} lr"
    context = _context(frame, budget, policy)
    log_ratio, gd_eig, sgd_eig = _paired(frame, budget, policy, "lambda_max", log=True)
    test_diff, gd_acc, sgd_acc = _paired(frame, budget, policy, "final_test_acc")
    return [
        seed_verdict(
            "C05",
            "SGD lands in flatter minima than full-batch GD (lower top Hessian eigenvalue)",
            f"log10(λ_max GD / λ_max SGD (B={ref})), paired by seed",
            log_ratio,
            "greater",
            "Top eigenvalue "
            + _describe(gd_eig, sgd_eig, ".3g")
            + ": log10 ratio {estimate:.2f} [{low:.2f}, {high:.2f}]. "
            + context
            + ".",
            condition=condition,
        ),
        seed_verdict(
            "C05",
            "SGD generalizes better than full-batch GD (higher test accuracy)",
            f"SGD (B={ref}) − GD test accuracy, paired by seed",
            -test_diff,
            "greater",
            "Test accuracy "
            + _describe(gd_acc, sgd_acc, ".1%")
            + " (12,000 test examples): SGD − GD {estimate:+.2%} [{low:+.2%}, {high:+.2%}]. "
            + context
            + ".",
            condition=condition,
        ),
    ]


def _noise_rows(frame) -> list[dict]:
    healthy = frame[~frame["diverged"]]
    slopes = healthy.groupby("seed")["grad_var_slope"].mean()
    return [
        seed_verdict(
            "C08",
            f"Minibatch gradient variance falls as 1/B (log-log slope within ±{SLOPE_TOLERANCE} "
            "of −1)",
            "slope of log variance vs log B (without-replacement corrected), + 1",
            slopes + 1.0,
            "within",
            "Slope over B = "
            + ", ".join(str(b) for b in NOISE_BATCHES)
            + f" at every run's final parameters (mean of {len(healthy) // max(len(slopes), 1)}"
            " runs per seed): −1 {estimate:+.3f} [{low:+.3f}, {high:+.3f}].",
            smallest_effect=SLOPE_TOLERANCE,
        )
    ]


def _memory_table(results: ResultsFolder) -> pd.DataFrame:
    memory = results.table("memory")
    return memory.sort_values("batch_size").drop_duplicates("batch_size") if len(memory) else memory


def _memory_rows(results) -> list[dict]:
    memory = _memory_table(results)
    if memory["batch_size"].nunique() < 2:
        return []
    log_b, log_m = np.log(memory["batch_size"]), np.log(memory["step_bytes"])
    slope = float(np.polyfit(log_b, log_m, 1)[0])
    small, large = memory.iloc[0], memory.iloc[-1]
    peaks = memory["device_peak_bytes"]
    device = (
        "device peak after each cohort (running max): "
        + ", ".join(f"B={b}: {p / 2**20:.1f} MiB" for b, p in zip(memory["batch_size"], peaks))
        if peaks.notna().any()
        else f"device peak not reported by the {memory['backend'].iloc[0]} backend (NaN)"
    )
    return [
        exact_verdict_row(
            "C08",
            "Peak memory rises with batch size",
            "log-log slope of compiled one-step memory (one run) vs B",
            slope,
            "greater",
            f"One SGD step needs {small['step_bytes'] / 2**10:.0f} KiB at B={small['batch_size']} "
            f"and {large['step_bytes'] / 2**10:.0f} KiB at B={large['batch_size']} "
            f"(×{large['step_bytes'] / small['step_bytes']:.1f}; XLA buffer assignment, "
            "deterministic: the interval is the value, not a seed CI); " + device + ".",
            condition="memory",
        )
    ]


# ----- figures ---------------------------------------------------------------------------
POLICY_COLORS = {"fixed": "C0", "scaled": "C1"}
BUDGET_STYLES = {"epochs": "-", "steps": "--"}


def _batch_label(b: int, is_gd: bool) -> str:
    return f"GD (B={b})" if is_gd else f"SGD B={b}"


def figures(results: ResultsFolder, out_dir: Path) -> list[Path]:
    fig.style()
    frame = _frame(results)
    n = fig.n_seeds(frame)
    return [
        _loss_vs_compute(results, frame, out_dir, n),
        _compute_to_target_figure(results, out_dir, n),
        _landing_figure(frame, out_dir, n),
        _noise_figure(frame, out_dir, n),
        _memory_figure(results, out_dir),
    ]


def _lr_rule(frame, policy) -> str:
    """The learning rates of a policy in words: one value, or lr/B held."""
    part = frame[frame["lr_policy"] == policy]
    lrs = part.groupby("batch_size")["learning_rate"].first()
    if lrs.nunique() == 1:
        return f"lr {lrs.iloc[0]:g}"
    ref = int(part["reference_batch"].iloc[0])
    return f"lr = {lrs.get(ref, np.nan):g}·B/{ref}"


def _loss_vs_compute(results, frame, out_dir, n) -> Path:
    longest = frame.sort_values(["steps", "budget"], ascending=[False, True]).drop_duplicates(
        ["lr_policy", "batch_size", "seed"]
    )
    healthy = longest[~longest["diverged"]]
    history = results.history().merge(healthy[["run_id", "is_gd"]], on="run_id", how="inner")
    history = history[history["step"] > 0]
    history["compute"] = history["step"] * history["batch_size"]
    policies = sorted(history["lr_policy"].unique())
    figure, axes = plt.subplots(1, len(policies), figsize=(4.6 * len(policies), 3.6), sharey=True)
    axes = np.atleast_1d(axes)
    batches = sorted(history["batch_size"].unique())
    colors = {
        b: tuple(c) for b, c in zip(batches, plt.cm.viridis(np.linspace(0, 0.9, len(batches))))
    }
    for ax, policy in zip(axes, policies):
        part = history[history["lr_policy"] == policy]
        for b in batches:
            runs = part[part["batch_size"] == b]
            if runs.empty:
                continue
            label = _batch_label(b, bool(runs["is_gd"].iloc[0]))
            fig.band(ax, runs, "compute", "train_loss", color=colors[b], label=label)
        ax.axhline(TARGET_TRAIN_LOSS, color="k", ls=":", lw=1, label=f"target {TARGET_TRAIN_LOSS}")
        ax.set_xscale("log")
        ax.set_xlabel("gradient evaluations (examples processed)")
        ax.set_title(f"{policy} lr ({_lr_rule(frame, policy)})")
    axes[0].set_ylabel("full-train loss (CE)")
    axes[0].legend(fontsize=7)
    dropped = int(longest["diverged"].sum())
    figure.suptitle(
        f"Training loss vs compute ({fig.BAND_NOTE}, n = {n})"
        + (f"; {dropped} diverged runs not shown" if dropped else ""),
        fontsize=10,
    )
    return fig.save(figure, out_dir, "loss_vs_compute")


def _compute_to_target_figure(results, out_dir, n) -> Path:
    table = compute_to_target(results)
    figure, ax = plt.subplots(figsize=(4.8, 3.6))
    offsets = {"fixed": 0.94, "scaled": 1.06}  # side by side on the log axis
    for policy, part in table.groupby("lr_policy"):
        color = POLICY_COLORS.get(policy, "C2")
        x = part["batch_size"] * offsets.get(policy, 1.0)
        reached = part["reached"]
        ax.scatter(
            x[reached], part.loc[reached, "compute"], s=14, color=color, label=f"{policy} lr"
        )
        ax.scatter(
            x[~reached],
            part.loc[~reached, "compute"],
            s=22,
            marker="^",
            facecolors="none",
            edgecolors=color,
            label=f"{policy} lr: not reached (≥ budget)" if (~reached).any() else None,
        )
        means = part[reached].groupby("batch_size")["compute"].median()
        ax.plot(means.index * offsets.get(policy, 1.0), means, color=color, lw=1)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("batch size (4,000 = full-batch GD)")
    ax.set_ylabel("gradient evaluations to reach target")
    ax.legend(fontsize=7)
    ax.set_title(
        f"Compute to train loss ≤ {TARGET_TRAIN_LOSS}\n(points: seeds, line: median of reached; "
        f"n = {n})"
    )
    return fig.save(figure, out_dir, "compute_to_target")


def _landing_figure(frame, out_dir, n) -> Path:
    healthy = frame[~frame["diverged"]]
    panels = [
        ("final_train_loss", "final train loss", "linear"),
        ("lambda_max", "top Hessian eigenvalue", "log"),
        ("final_test_acc", "test accuracy", "linear"),
    ]
    figure, axes = plt.subplots(1, 3, figsize=(11.5, 3.5))
    for ax, (column, title, scale) in zip(axes, panels):
        for (policy, budget), part in healthy.groupby(["lr_policy", "budget"]):
            fig.band(
                ax,
                part,
                "batch_size",
                column,
                color=POLICY_COLORS.get(policy, "C2"),
                ls=BUDGET_STYLES.get(budget, "-"),
                marker="o",
                ms=3,
                label=f"{policy} lr, equal {budget}",
            )
        if column == "lambda_max":
            for policy, part in healthy.groupby("lr_policy"):
                edge = 2 / part.groupby("batch_size")["learning_rate"].first()
                ax.plot(
                    edge.index,
                    edge,
                    color=POLICY_COLORS.get(policy, "C2"),
                    ls=":",
                    lw=1,
                    label=f"2/lr ({policy})",
                )
        ax.set_xscale("log")
        ax.set_yscale(scale)
        if scale == "log":
            ax.yaxis.set_major_formatter(mticker.ScalarFormatter())
            ax.yaxis.set_minor_formatter(mticker.NullFormatter())
        ax.set_title(title)
        ax.set_xlabel("batch size (4,000 = full-batch GD)")
    handles, labels = axes[1].get_legend_handles_labels()
    figure.legend(
        handles, labels, loc="lower center", ncol=3, fontsize=7, bbox_to_anchor=(0.5, -0.1)
    )
    figure.suptitle(
        f"Where SGD and GD land ({fig.BAND_NOTE}, n = {n}; diverged runs left out)", fontsize=10
    )
    return fig.save(figure, out_dir, "sgd_vs_gd")


def _noise_figure(frame, out_dir, n) -> Path:
    healthy = frame[~frame["diverged"]]
    columns = [f"grad_var_b{b}" for b in NOISE_BATCHES]
    long = healthy.melt(id_vars=["run_id", "seed"], value_vars=columns, value_name="variance")
    long["B"] = long["variable"].str.removeprefix("grad_var_b").astype(int)
    num_train = 4000
    long["corrected"] = long["variance"] * (num_train - 1) / (num_train - long["B"])
    figure, ax = plt.subplots(figsize=(4.4, 3.4))
    fig.band(ax, long, "B", "variance", color="C0", marker="o", ms=3, label="measured")
    fig.band(ax, long, "B", "corrected", color="C1", marker="o", ms=3, label="÷ (N−B)/(N−1)")
    reference = long.groupby("B")["corrected"].mean()
    ax.plot(
        reference.index,
        reference.iloc[0] * reference.index[0] / reference.index,
        "k:",
        label="∝ 1/B",
    )
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("minibatch size B")
    ax.set_ylabel("E‖g_B − g‖² (final parameters)")
    ax.legend(fontsize=7)
    ax.set_title(f"Minibatch gradient variance\n({fig.BAND_NOTE}, n = {n}; all runs per seed)")
    return fig.save(figure, out_dir, "gradient_noise")


def _memory_figure(results, out_dir) -> Path:
    memory = _memory_table(results)
    figure, ax = plt.subplots(figsize=(4.4, 3.4))
    kib = 2.0**10
    ax.plot(memory["batch_size"], memory["step_bytes"] / kib, "o-", label="one SGD step (total)")
    ax.plot(memory["batch_size"], memory["step_temp_bytes"] / kib, "s--", label="temporaries")
    ax.plot(memory["batch_size"], memory["step_argument_bytes"] / kib, "^--", label="arguments")
    peaks = memory["device_peak_bytes"]
    if peaks.notna().any():
        ax.plot(
            memory["batch_size"],
            peaks / kib,
            "k*-",
            label="device peak, whole process\n(running max over cohorts)",
        )
        note = "device peak: memory_stats()"
    else:
        note = f"device peak not reported by the {memory['backend'].iloc[0]} backend"
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("batch size")
    ax.set_ylabel("KiB")
    ax.legend(fontsize=7)
    ax.set_title(
        f"Memory vs batch size: XLA-compiled SGD step of one run\n(deterministic, no seeds; {note})"
    )
    return fig.save(figure, out_dir, "memory_vs_batch")
