"""SGD vs full-batch GD: compute to a loss, flatness, accuracy; noise and memory vs B (C05, C08).

Command: ``toolkit run exp_sgd_noise --seeds 10``

An MLP 40-100-100-10 (ReLU, 15k parameters) is trained on MNIST-1D (4,000 train /
1,000 validation / 12,000 test) with *plain* SGD (no momentum, no weight decay) at
batch sizes B = 25, 100, 400, 1,000 and 4,000 (= N: full-batch gradient descent), under
two learning-rate policies: ``fixed`` (lr 0.05 for every B) and ``scaled`` (the linear
scaling rule, lr = 0.05·B/100: 0.0125 … 2.0 for GD; lr/B constant). Three budgets:

- ``epochs``: 40 epochs for every run, i.e. equal compute (160,000 gradient
  evaluations); steps = 40·N/B: 6,400 at B = 25, 40 for GD;
- ``steps``: 160 optimizer steps for every run, i.e. 1 epoch at B = 25, 4 at B = 100,
  16 at B = 400, 40 at B = 1,000 (the two budgets meet there) and 160 epochs of GD;
- ``matched`` (only B = 100 and GD, the two arms the C05 rows compare): each run stops
  when its full-train CE first reaches 1.0 nat (checked every epoch at B = 100, every 8
  GD steps at the fixed lr, every GD step at the scaled lr), within max(40 epochs,
  1,600 steps) at the fixed lr and max(40 epochs, 200 steps) at the scaled lr. The
  cross-entropy Hessian shrinks as the loss goes to 0, so curvature (and accuracy) are
  compared only between runs stopped at the same loss; a run that does not reach it is
  left out and counted. 1.0 nat (chance 2.30) is decided before the run as the lowest
  round target that GD at the fixed lr reaches within a cap the 2-core CPU affords: a
  2-seed pilot reached it after 1,080 and 1,208 steps (0.6 nat needs ≈ 2,500 steps; it
  is the paper profile's target, cap 4,000 steps); at the scaled lr GD reaches it
  after ≈ 80 steps, SGD at B = 100 after ≈ 25 epochs.

The same seed gives the same initialization in every condition, so comparisons are
paired by seed. Compute is counted in gradient evaluations (examples processed =
steps × B). Pre-registered (before the default run): the verdicts compare GD with SGD
at the reference batch B = 100 (the lr anchor, equal lr under both policies), and the
target train loss for "compute to reach a given loss" is 1.5 nats (chance: 2.30),
chosen from a pilot so that the reference SGD run reaches it well inside its budget;
for it every (policy, B, seed) uses the longer of its two runs (same seed: the shorter
run is a prefix of the longer). A run that never reaches the target is left out of the
ratio ("did not reach the comparison point"). The C05 primary is the scaled-lr arm, where
GD reaches the target; at the fixed lr GD reaches it in no seed within 160 epochs, so
that secondary row only bounds the ratio from below (GD's budget over SGD's need).
C08's primary is the slope of the gradient variance on B; the compiled memory is a
deterministic check; flatness (λ_max) and accuracy rows are secondary and come from the
matched arm only (the equal-epoch and equal-step arms stop at different losses:
GD 2.04 vs SGD 0.84 at equal epochs; those arms keep the compute and loss rows).

Measured per run on its final parameters (eval mode): the top Hessian eigenvalue
(Lanczos, 20 iterations, on the first 1,000 training examples) and the minibatch
gradient variance E‖g_B − g‖² at B = 25, 100, 400, 1,000 on the full training set
(16 batches each; log-log slope after the without-replacement factor (N−B)/(N−1),
``measures.gradient_noise_scaling``). Per cohort (one training batch size): the
compiled memory of one SGD step of one run at that B (XLA's buffer assignment:
arguments + outputs + temporaries; available on every backend; the C08 check) and
the device's peak bytes in use when the cohort's training ends (``memory_stats()``:
NaN on a CPU, which does not report it; on a GPU it is the process's running peak, so
after the first cohort it includes earlier cohorts' measurements and hardly moves
with B: 210 MiB after B = 25, then 381–390 MiB on an H200).

Cost: default profile (240 runs, 12 cohorts, 240,000 optimizer steps, 29,220 run-epochs;
a GD epoch is one step) 306 s of CPU time (user) for the whole command, 16 min 40 s wall
under a load of 13–15 on the 2-core CPU (summed over cohorts: training 362 s,
compilation 277 s, measurement 237 s); the largest part is the matched GD cohort at the
fixed lr (10 × 1,600 full-batch steps; a stopped run still computes to its cap). Before
the matched arm (200 runs) it took 175 s wall alone. Paper profile (20 seeds, 100
epochs, 1,600 equal steps, matched target 0.6 within 4,000 steps): 2 min 37 s on one
H200 before the matched arm was added, not yet rerun. Quick profile: ~1 min alone.

Caveat of the budgets: at equal epochs GD has taken only 40 steps (100 in the paper
profile) and is far from any minimum, so its curvature and test accuracy there are
those of an undertrained network; no row compares them (the matched arm does). The
matched target 1.0 nat is itself far from a minimum (train accuracy ≈ 65%): the rows
say how SGD and GD differ on the way down at the same loss, not at convergence.

Expected (Keskar 2017; Jastrzębski 2018; Goyal 2017; Geiping 2022; Cohen 2021): at
equal epochs SGD reaches a much lower loss than GD at the same lr (it takes N/B times
more steps for the same compute); with the lr held, GD sharpens to ≈ 2/lr (edge of
stability) and ends sharper than SGD, with a small test-accuracy edge for SGD; with the
lr scaled, GD's large step caps its sharpness at 2/lr, so "SGD is flatter" may fail and
the compute advantage shrinks; gradient variance ∝ 1/B; step memory rises with B.
"""

from __future__ import annotations

import functools
import math
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
from toolkit import intervals as iv
from toolkit import measures as M
from toolkit import models
from toolkit.claimtests import Test, exact, per_seed, usable
from toolkit.engine import CohortSpec, per_example_loss
from toolkit.results import ResultsFolder
from toolkit.runner import peak_memory
from toolkit.spec import Count, NonNegative, Positive, RunConfig, SpecError

CLAIMS = ("C05", "C08")
CLAIM_FIGURES = {"C05": "compute_to_target", "C08": "gradient_noise"}
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
    # "epochs": budget_epochs for all; "steps": budget_steps for all; "matched": stop
    # at matched_target (full-train CE) within max(matched_min_epochs, matched_max_steps)
    budget: Literal["epochs", "steps", "matched"] = "epochs"
    # fixed: the protocol
    base_lr: Positive = 0.05
    reference_batch: Count = 100  # the lr anchor, and the SGD batch the verdicts compare with GD
    budget_epochs: Count = 40
    budget_steps: Count = 160  # must be a whole number of epochs at every batch size
    matched_target: NonNegative = 1.0  # the matched arm stops at this full-train CE
    matched_min_epochs: Count = 40  # matched cap: max(min epochs, max steps) …
    matched_max_steps: Count = 1600  # … at the fixed lr;
    matched_scaled_max_steps: Count = 200  # at the scaled lr (GD's step is 40× larger)
    matched_history_points: Count = 200  # evaluations (stop checks) of a matched run
    widths: tuple[int, ...] = (100, 100)
    optimizer: str = "sgd"
    momentum: float = 0.0  # plain SGD / GD
    history_points: int = 40

    DERIVED: ClassVar[dict[str, str]] = {
        "learning_rate": "set base_lr, lr_policy or reference_batch instead",
        "epochs": "set budget, budget_epochs or budget_steps instead",
        "stop_train_loss": "set budget or matched_target instead",
    }

    def run_epochs(self) -> int:
        if self.budget == "epochs":
            return self.budget_epochs
        per_epoch = -(-len(datasets.load(self.dataset).y_train) // self.batch_size)
        if self.budget == "matched":
            cap = (
                self.matched_max_steps
                if self.lr_policy == "fixed"
                else self.matched_scaled_max_steps
            )
            return max(self.matched_min_epochs, -(-cap // per_epoch))
        epochs, rest = divmod(self.budget_steps, per_epoch)
        if rest or not epochs:
            raise SpecError(
                f"budget_steps={self.budget_steps} is not a whole number of epochs at "
                f"batch_size={self.batch_size} ({per_epoch} steps per epoch)"
            )
        return epochs

    def cohort_spec(self) -> CohortSpec:
        if self.budget not in ("epochs", "steps", "matched") or self.lr_policy not in (
            "fixed",
            "scaled",
        ):
            raise SpecError("budget must be epochs|steps|matched and lr_policy fixed|scaled")
        spec = super().cohort_spec()
        points = self.matched_history_points if self.budget == "matched" else spec.history_points
        return CohortSpec(
            **{**spec.__dict__, "epochs": self.run_epochs(), "history_points": points}
        )

    def hparams(self) -> dict[str, float]:
        scale = self.batch_size / self.reference_batch if self.lr_policy == "scaled" else 1.0
        target = self.matched_target if self.budget == "matched" else 0.0
        return {
            **super().hparams(),
            "learning_rate": self.base_lr * scale,
            "stop_train_loss": target,
        }


# Batch size first: cohorts (one per batch size × epoch count) then train in order of B,
# so a device's running peak memory, read after each cohort, follows B. The matched arm
# runs only the two batch sizes its rows compare: the reference SGD batch and GD.
BATCHES = [25, 100, 400, 1000, 4000]
MATCHED_BATCHES = (100, 4000)
GRID = [
    {"batch_size": b, "budget": budget, "lr_policy": policy}
    for b in BATCHES
    for budget in ("epochs", "steps", "matched")
    for policy in ("fixed", "scaled")
    if budget != "matched" or b in MATCHED_BATCHES
]

PROFILES = {
    "quick": {
        "seeds": 2,
        "widths": (16,),
        "budget_epochs": 2,
        "budget_steps": 8,  # B = 1,000: 2 epochs (one cohort with the epochs budget); GD: 8
        "reference_batch": 1000,
        "history_points": 8,
        "matched_target": 2.2,
        "matched_min_epochs": 2,
        "matched_max_steps": 8,
        "matched_scaled_max_steps": 8,
        "matched_history_points": 8,
        "grid": {
            "batch_size": [1000, 4000],
            "budget": ["epochs", "steps", "matched"],
            "lr_policy": ["fixed"],
        },
    },
    "default": {"seeds": 10},
    "paper": {
        "seeds": 20,
        "budget_epochs": 100,
        "budget_steps": 1600,
        "history_points": 200,
        "matched_target": 0.6,
        "matched_min_epochs": 100,
        "matched_max_steps": 4000,
        "matched_scaled_max_steps": 1000,
        "matched_history_points": 800,
    },
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
    frame["at_target"] = frame["stopped_epoch"] >= 0  # matched arm: stopped at the target
    return frame


def compute_to_target(results: ResultsFolder, target: float = TARGET_TRAIN_LOSS) -> pd.DataFrame:
    """Per (policy, B, seed): gradient evaluations until the full-train loss first ≤ target.

    Each uses the longer of its runs (the shorter is a prefix of it). ``reached`` False:
    never within the run's budget (``compute`` is then that budget, a lower bound).
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
        rows.append(
            {
                **run[["lr_policy", "batch_size", "seed", "is_gd", "reference_batch"]],
                "reached": not hit.empty,
                "diverged": bool(run["diverged"]),
                "compute": int((hit.min() if len(hit) else run["steps"]) * run["batch_size"]),
            }
        )
    return pd.DataFrame(rows).sort_values(["lr_policy", "batch_size", "seed"])


def paired(part: pd.DataFrame, column: str, log: bool = False, reached: str | None = None):
    """Per seed: GD minus SGD at the reference batch of ``column`` (log10 of GD / SGD with
    ``log``), NaN where either run is not usable; the seeds left out, by reason; and
    the two arms' means over usable runs."""
    arms = part[part["is_gd"] | (part["batch_size"] == part["reference_batch"])]
    if arms.empty:
        return pd.Series(dtype=float), {}, np.nan, np.nan
    ok, _ = usable(arms, reached)
    bad = arms[~arms.index.isin(ok.index)]
    why = np.where(bad["diverged"], "diverged", "did not reach the comparison point")
    excluded = pd.Series(why, index=bad["seed"]).groupby(level=0).first().value_counts()
    table = arms.assign(value=arms[column].where(arms.index.isin(ok.index)))
    table = table.pivot(index="seed", columns="is_gd", values="value")
    gd, sgd = table.get(True, np.nan), table.get(False, np.nan)
    diff = np.log10(gd / sgd) if log else gd - sgd
    means = ok.groupby("is_gd")[column].mean()
    return diff, excluded.to_dict(), means.get(True, np.nan), means.get(False, np.nan)


def _memory_table(results: ResultsFolder) -> pd.DataFrame:
    memory = results.table("memory")
    return memory.sort_values("batch_size").drop_duplicates("batch_size") if len(memory) else memory


POLICIES = ("fixed", "scaled")
LANDING = (
    "Stopped at train CE ≤ {target:g}: GD {gd_loss:.3f} vs SGD {sgd_loss:.3f} (means), after "
    "{gd_steps:.0f} vs {sgd_steps:.0f} steps (n = {n}; GD reached it in {gd_reached}, SGD in "
    "{sgd_reached}): "
)

TESTS = [
    Test(
        "compute_scaled", "C05", "primary", "log_ratio",
        f"log10(GD / SGD (B = reference) gradient evaluations to full-train CE ≤ "
        f"{TARGET_TRAIN_LOSS}), per seed",
        "Minibatch SGD is much cheaper than full-batch GD: it reaches a given training loss "
        "with far fewer gradient evaluations",
        "greater", math.log10(2),
        "'much cheaper' = at least half the compute; a smaller saving is a tuning detail",
        "GD needed 10^{estimate:.2f} = {factor:.1f}× [{factor_low:.1f}, {factor_high:.1f}] "
        "the gradient evaluations of SGD ({n} of {planned} seeds; {verdict}); GD reached the "
        "target in {gd_reached} seeds, SGD in {sgd_reached}.",
        condition="scaled lr (lr ∝ B), declared; the fixed-lr arm is a secondary",
    ),
    Test(
        "compute_fixed", "C05", "secondary", "log_ratio",
        f"log10(GD / SGD (B = reference) gradient evaluations to full-train CE ≤ "
        f"{TARGET_TRAIN_LOSS}), per seed",
        "SGD reaches a given training loss with less compute than GD at the same lr",
        "greater", math.log10(2), "the primary's bar",
        "Seeds where both reached the target: {n} of {planned}; GD reached it in {gd_reached} "
        "seeds (budget {gd_budget:,} evaluations); GD / SGD = {factor:.1f}× [{factor_low:.1f}, "
        "{factor_high:.1f}].{bound_note}",
        condition="fixed lr",
    ),
    *[
        Test(
            f"loss_epochs_{policy}", "C05", "secondary", "paired_difference",
            "GD − SGD (B = reference) final train CE, per seed",
            "At equal epochs (equal compute) SGD ends at a lower training loss than GD",
            "greater", 0.0, "exploratory: any lower SGD loss at equal compute is reported",
            "GD {gd_loss:.3f} vs SGD {sgd_loss:.3f}: GD − SGD {estimate:.3f} [{low:.3f}, "
            "{high:.3f}] (n = {n}).",
            condition=f"equal epochs, {policy} lr",
        )
        for policy in POLICIES
    ],
    *[
        test
        for policy in POLICIES
        for test in (
            Test(
                f"flat_matched_{policy}", "C05", "secondary", "log_ratio",
                "log10(λ_max GD / λ_max SGD (B = reference)) at matched train loss, per seed",
                "SGD lands in flatter regions than full-batch GD (lower top Hessian "
                "eigenvalue) when both stop at the same training loss",
                "greater", 0.0, "exploratory: the direction Keskar et al. report",
                LANDING + "λ_max GD/SGD = 10^{estimate:.2f} [10^{low:.2f}, 10^{high:.2f}] "
                "(GD {gd_lambda:.2f}, SGD {sgd_lambda:.2f}; 2/lr of GD {edge:.3g}).",
                condition=f"matched train loss, {policy} lr",
            ),
            Test(
                f"acc_matched_{policy}", "C05", "secondary", "paired_difference",
                "SGD (B = reference) − GD test accuracy at matched train loss, per seed",
                "SGD generalizes better than full-batch GD (higher test accuracy) at the same "
                "training loss",
                "greater", 0.0, "exploratory: any SGD advantage is reported",
                LANDING + "SGD − GD test accuracy {estimate:+.2%} [{low:+.2%}, {high:+.2%}].",
                condition=f"matched train loss, {policy} lr",
            ),
        )
    ],
    Test(
        "noise_slope", "C08", "primary", "slope",
        "slope of log gradient variance vs log B (without-replacement corrected), + 1, "
        "per seed (mean over its runs)",
        "Larger batches give more stable gradient estimates: minibatch gradient variance "
        "falls as 1/B",
        "within", SLOPE_TOLERANCE,
        "±0.15 around −1 separates 1/B from 1/√B (−0.5) and 1/B² (−2) with room for noise",
        "Slope over B = {batches} at the final parameters of {runs} runs per seed: −1 "
        "{estimate:+.3f} [{low:+.3f}, {high:+.3f}] ({n} of {planned} seeds; {verdict}).",
    ),
    Test(
        "memory", "C08", "check", "exact",
        "log-log slope of the compiled memory of one SGD step (one run) vs B",
        "Larger batches need more memory", "greater", 0.0,
        "any rise with B supports 'needs more memory'",
        "One SGD step needs {small:.0f} KiB at B = {b_small} and {large:.0f} KiB at B = "
        "{b_large} (XLA buffer assignment, deterministic); {device}.",
        condition="memory",
    ),
]  # fmt: skip


def analyze(results: ResultsFolder) -> dict:
    frame = _frame(results)
    seeds = frame["seed"].nunique()
    evidence = {}
    table = compute_to_target(results)
    for policy in POLICIES:
        part = table[table["lr_policy"] == policy]
        ratio, excluded, *_ = paired(part, "compute", log=True, reached="reached")
        gd = part[part["is_gd"]].set_index("seed")
        sgd = part[~part["is_gd"] & (part["batch_size"] == part["reference_batch"])]
        sgd = sgd.set_index("seed")
        bound = (gd["compute"] / sgd["compute"])[~gd["reached"] & sgd["reached"]]
        low, high = iv.t_interval(ratio).ci()
        evidence[f"compute_{policy}"] = per_seed(
            ratio,
            planned=seeds,
            excluded=excluded,
            factor=10 ** np.nanmean(ratio) if ratio.notna().any() else np.nan,
            factor_low=10**low,
            factor_high=10**high,
            gd_reached=f"{int(gd['reached'].sum())}/{len(gd)}",
            sgd_reached=f"{int(sgd['reached'].sum())}/{len(sgd)}",
            gd_budget=int(gd["compute"].max()) if len(gd) else 0,
            bound_note=(
                f" Where GD never reached it, the ratio is at least "
                f"{float(np.exp(np.log(bound).mean())):.1f}× (its budget over SGD's need: a "
                "lower bound, biased towards 'cheaper' being understated)."
                if len(bound)
                else ""
            ),
        )
        part = frame[(frame["budget"] == "epochs") & (frame["lr_policy"] == policy)]
        diff, excluded, gd_loss, sgd_loss = paired(part, "final_train_loss")
        evidence[f"loss_epochs_{policy}"] = per_seed(
            diff, planned=seeds, excluded=excluded, gd_loss=gd_loss, sgd_loss=sgd_loss
        )
    for policy in POLICIES:
        part = frame[(frame["budget"] == "matched") & (frame["lr_policy"] == policy)]
        landing = _landing(part)
        ratio, excluded, gd_lambda, sgd_lambda = paired(
            part, "lambda_max", log=True, reached="at_target"
        )
        edge = 2 / part.loc[part["is_gd"], "learning_rate"].max() if len(part) else np.nan
        evidence[f"flat_matched_{policy}"] = per_seed(
            ratio,
            planned=seeds,
            excluded=excluded,
            gd_lambda=gd_lambda,
            sgd_lambda=sgd_lambda,
            edge=edge,
            **landing,
        )
        diff, excluded, *_ = paired(part, "final_test_acc", reached="at_target")
        evidence[f"acc_matched_{policy}"] = per_seed(
            -diff, planned=seeds, excluded=excluded, **landing
        )
    healthy, excluded = usable(frame)
    slopes = healthy.groupby("seed")["grad_var_slope"].mean().reindex(frame["seed"].unique())
    evidence["noise_slope"] = per_seed(
        slopes + 1.0,
        planned=seeds,
        batches=", ".join(str(b) for b in NOISE_BATCHES),
        runs=len(healthy) // max(healthy["seed"].nunique(), 1),
    )
    evidence["memory"] = _memory_evidence(results)
    return evidence


def _landing(part: pd.DataFrame) -> dict:
    """Where the matched arm's GD and reference-SGD runs stopped (runs at the target)."""
    arms = part[part["is_gd"] | (part["batch_size"] == part["reference_batch"])]
    ok, _ = usable(arms, "at_target")
    means = ok.groupby("is_gd")[["final_train_loss", "steps"]].mean()
    counts = arms.groupby("is_gd")["at_target"].agg(["sum", "size"])

    def get(table, is_gd, column, default=np.nan):
        return table.at[is_gd, column] if is_gd in table.index else default

    return {
        "target": float(arms["stop_train_loss"].max()) if len(arms) else np.nan,
        "gd_loss": get(means, True, "final_train_loss"),
        "sgd_loss": get(means, False, "final_train_loss"),
        "gd_steps": get(means, True, "steps"),
        "sgd_steps": get(means, False, "steps"),
        "gd_reached": f"{get(counts, True, 'sum', 0)}/{get(counts, True, 'size', 0)}",
        "sgd_reached": f"{get(counts, False, 'sum', 0)}/{get(counts, False, 'size', 0)}",
    }


def _memory_evidence(results: ResultsFolder):
    memory = _memory_table(results)
    if memory["batch_size"].nunique() < 2:
        return exact(np.nan, small=0, large=0, b_small=0, b_large=0, device="")
    slope = float(np.polyfit(np.log(memory["batch_size"]), np.log(memory["step_bytes"]), 1)[0])
    small, large = memory.iloc[0], memory.iloc[-1]
    peaks = memory["device_peak_bytes"]
    device = (
        "device peak after each cohort (running max): "
        + ", ".join(f"B={b}: {p / 2**20:.1f} MiB" for b, p in zip(memory["batch_size"], peaks))
        if peaks.notna().any()
        else f"device peak not reported by the {memory['backend'].iloc[0]} backend"
    )
    return exact(
        slope,
        small=small["step_bytes"] / 2**10,
        large=large["step_bytes"] / 2**10,
        b_small=int(small["batch_size"]),
        b_large=int(large["batch_size"]),
        device=device,
    )


# ----- figures ---------------------------------------------------------------------------
POLICY_COLORS = {"fixed": "C0", "scaled": "C1"}
BUDGET_STYLES = {"epochs": "--", "steps": ":", "matched": "-"}


def _batch_label(b: int, is_gd: bool) -> str:
    return f"GD (B={b})" if is_gd else f"SGD B={b}"


def figures(results: ResultsFolder, out_dir: Path) -> list[Path]:
    fig.style()
    frame = _frame(results)
    n = fig.n_seeds(frame)
    return [
        _loss_vs_compute(results, frame, out_dir, n),
        _compute_to_target_figure(results, out_dir, n),
        _landing_figure(results, frame, out_dir, n),
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
    healthy, _ = usable(longest)
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
    table, _ = usable(compute_to_target(results))
    scaled = table[table["lr_policy"] == "scaled"]
    primary = per_seed(paired(scaled, "compute", log=True, reached="reached")[0]).interval
    low, high = primary.ci()
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
        f"Compute to train loss ≤ {TARGET_TRAIN_LOSS}: GD / SGD B={int(table['reference_batch'].iloc[0])}"
        f", scaled lr,\n{10**primary.estimate:.1f}× [{10**low:.1f}, {10**high:.1f}] "
        f"(geometric mean, n = {primary.n} seeds)\npoints: seeds ({n}), line: median of reached",
        fontsize=9,
    )
    return fig.save(figure, out_dir, "compute_to_target")


def _landing_figure(results, frame, out_dir, n) -> Path:
    # the matched arm's runs count only where they stopped at the target
    healthy, dropped = usable(frame, (frame["budget"] != "matched") | frame["at_target"])
    panels = [
        ("final_train_loss", "final train loss", "linear", "full-train CE (final)"),
        ("lambda_max", "top Hessian eigenvalue", "log", "λ_max (1,000 train examples)"),
        ("final_test_acc", "test accuracy", "linear", "test accuracy (final)"),
    ]
    figure, axes = plt.subplots(1, 3, figsize=(11.5, 3.5))
    for ax, (column, title, scale, ylabel) in zip(axes, panels):
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
                label=f"{policy} lr, "
                + ("matched loss" if budget == "matched" else f"equal {budget}"),
            )
        if column == "lambda_max":
            for policy, part in healthy.groupby("lr_policy"):
                edge = 2 / part.groupby("batch_size")["learning_rate"].first()
                ax.plot(
                    edge.index,
                    edge,
                    color=POLICY_COLORS.get(policy, "C2"),
                    ls="-.",
                    lw=0.8,
                    label=f"2/lr ({policy})",
                )
        ax.set_xscale("log")
        ax.set_yscale(scale)
        if scale == "log":
            ax.yaxis.set_major_formatter(mticker.ScalarFormatter())
            ax.yaxis.set_minor_formatter(mticker.NullFormatter())
        ax.set_title(title)
        ax.set_ylabel(ylabel)
        ax.set_xlabel("batch size (4,000 = full-batch GD)")
    handles, labels = axes[1].get_legend_handles_labels()
    figure.legend(
        handles, labels, loc="lower center", ncol=3, fontsize=7, bbox_to_anchor=(0.5, -0.1)
    )
    evidence = analyze(results)
    ratios = []
    for policy in POLICIES:
        ev = evidence[f"flat_matched_{policy}"]
        if ev.interval.n >= 2:
            est, (low, high) = ev.interval.estimate, ev.interval.ci()
            word = "sharper" if low > 0 else "flatter" if high < 0 else "no different"
            ratios.append(
                f"{policy} lr GD {word}, {10**est:.3g}× [{10**low:.3g}, {10**high:.3g}] "
                f"(n = {ev.interval.n} seeds)"
            )
    target = ev.extras["target"]
    left_out = ", ".join(f"{v} {k}" for k, v in dropped.items())
    figure.suptitle(
        f"At the same train loss (CE ≤ {target:g}, solid lines), λ_max of GD / SGD (B = "
        f"{int(frame['reference_batch'].iloc[0])}): " + "; ".join(ratios) + "\n"
        f"equal epochs (dashed) and equal steps (dotted) stop at different losses "
        f"({fig.BAND_NOTE}, n = {n} seeds" + (f"; left out: {left_out}" if left_out else "") + ")",
        fontsize=9,
    )
    return fig.save(figure, out_dir, "sgd_vs_gd")


def _noise_figure(frame, out_dir, n) -> Path:
    healthy, _ = usable(frame)
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
    primary = per_seed(healthy.groupby("seed")["grad_var_slope"].mean() + 1.0).interval
    low, high = primary.ci()
    ax.set_title(
        f"Minibatch gradient variance: log-log slope −1 {primary.estimate:+.3f} "
        f"[{low:+.3f}, {high:+.3f}]\n(n = {primary.n} seeds; bands: {fig.BAND_NOTE}, all runs "
        "per seed)",
        fontsize=9,
    )
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
