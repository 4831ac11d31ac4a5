"""Saddle points and momentum: how many steps each optimizer needs to leave a saddle (C17).

Command: ``toolkit run exp_saddle_momentum --seeds 10``

Six optimizer arms, on two problems started near a strict saddle, with the init scale
(distance from the saddle) as a factor:

- ``gd`` plain gradient descent (lr η); ``gd_noise`` the same with isotropic Gaussian
  noise of std 1e-3 added to every gradient (perturbed GD); ``heavy_ball`` and
  ``nesterov`` momentum β = 0.9 at the same η; ``adam`` (b1 0.9, b2 0.999) at its
  own lr; ``gd_lr_eff`` the control: plain GD at η/(1 − β), the step size heavy-ball
  reaches on a slowly changing gradient.
- **Toy surface** f(x, y) = x² − y² + y⁴/4 (strict saddle at 0 with Hessian
  diag(2, −2); minima f = −1 at (0, ±√2)). Start (1, s·z), z ~ N(0, 1) per seed: on
  the stable axis, s·|z| off it along the unstable one; s ∈ {1e-2, 1e-4, 1e-6, 1e-8};
  η = 0.01 (Adam 0.01); 3,000 steps. Every arm × scale × seed is one vmapped, scanned
  program (:mod:`toolkit.toy`, the ``standalone`` hook). Escape: f < −0.5 (half the
  depth of the minima below the saddle), at one-step resolution. λ_min: the exact
  Hessian's smallest eigenvalue at the point of smallest gradient norm before escape.
- **Network** a deep linear network 40-10-10 (one hidden layer, no nonlinearity,
  520 parameters) on MNIST-1D (4,000 training examples) under MSE, full batch (one
  step = one epoch), Flax's LeCun init times s ∈ {1e-4, 1e-3, 1e-2}: the origin is a
  strict saddle whose Hessian has eigenvalues ±σᵢ(Σ_yx) (predicted λ_min = −0.58),
  and small inits sit on its plateau (Saxe et al. 2014). η = 0.1 (Adam 1e-3, its
  usual default); budget 200 steps = 200 epochs, evaluated after every step. Escape:
  the train loss falls below L_const − Δ₁/2, where L_const = 0.450 is the loss of the
  best constant predictor (the plateau once the output bias is fit) and Δ₁ = 0.037
  the loss drop of the best rank-1 linear map (reduced-rank regression), i.e. half
  of the first Saxe mode learned: threshold 0.431, computed from the data before any
  run. λ_min on the plateau: a separate short cohort of the ``gd`` runs (same seeds,
  same keys ⇒ the same trajectory prefix) stopped after 20 steps, when the output
  bias is fit and the loss is still on the plateau (checked: loss above the
  threshold), measured by Lanczos (40 iterations, full training set); λ_min is also
  measured at every run's final parameters.

The protocol (η, β, noise std, budgets, thresholds) was fixed before comparing arms:
η = 0.1 for the network because plain GD at 10·η = 1.0 is still stable there (so the
``gd_lr_eff`` control is defined); the budgets were sized on plain GD alone (the
slowest GD run escapes at step 157 of 200; 3,000 toy steps leave 3× margin).

Tests (``TESTS``): primary, on the network, per seed the mean over init scales of
log(steps GD / steps heavy-ball) > ln 1.25; secondary, the same for the other arms, the
toy and the control GD at η/(1−β) vs heavy-ball (runs that diverge or never escape are
left out and counted), and the plateau's λ_min < −0.05; the toy's exact λ_min a check.

Cost: default profile (toy 240 runs × 3,000 steps; network 180 runs × 200 full-batch
steps + 30 plateau probes × 20 steps, 4 cohorts): 135 s wall alone on the 2-core CPU
(4 min 26 s under a load of ~7: 2.6 min training, 1 min compilation, 0.4 min Lanczos,
6 s the toy). Paper profile: 20 seeds, 5 init scales (1e-5 … 1e-1), 400 steps, toy
scales down to 1e-10 (one GPU, about a minute; not run here). Quick profile: 2 seeds,
GD and heavy-ball only, 40 steps; about a minute, mostly compilation.

Expected: on both problems plain GD's escape time grows like log(1/s); heavy-ball
and Nesterov escape several times sooner at the same η; noise shortens GD's escape
from the tiniest inits; Adam's normalized steps make it nearly scale-free. The
literature this claim leans on is mixed: Dauphin et al. (2014) identified saddles as
the obstacle but proposed saddle-free Newton, not momentum; momentum's advantage
comes from accelerated-method theory (Jin et al. 2018) and perturbed GD from Ge et
al. 2015 / Jin et al. 2017. The ``gd_lr_eff`` control asks whether momentum's gain
is more than its larger effective step.

Measured (default, 10 seeds): on the network GD needs 3.26× [3.23, 3.29] heavy-ball's
escape steps (toy 4.97×; Nesterov 3.7× / 5.3×, Adam 2.6× / 7.3×; no run censored). But
plain GD at η/(1−β) escapes in about half heavy-ball's steps (0.42× network, 0.54×
toy): here momentum's advantage is its larger effective step, which GD can also take
on these problems. Gradient noise helps GD only from the tiniest inits (1.14×
network, 1.29× toy, neither clearly past 1.25×). The plateaus are saddles: λ_min =
−0.578 on the network plateau, the predicted −σ₁(Σ_yx), and ≤ −1.96 on the toy.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Literal

import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from toolkit import figures as fig
from toolkit import intervals as iv
from toolkit import measures as M
from toolkit import models, toy
from toolkit.claimtests import Test, exact, per_seed, usable
from toolkit.data import Dataset
from toolkit.engine import CohortSpec, per_example_loss
from toolkit.results import ResultsFolder
from toolkit.runner import root_seed
from toolkit.spec import Count, Positive, RunConfig, SpecError

CLAIMS = ("C17",)
CLAIM_FIGURES = {"C17": "escape_vs_init_scale"}
BETA = 0.9  # momentum of heavy-ball and Nesterov, Adam's b1
NOISE_STD = 1e-3  # gd_noise: std of the Gaussian noise per gradient coordinate
FASTER = math.log(1.25)  # smallest effect: at least 25% fewer steps to escape
SADDLE_MARGIN = 0.05  # λ_min on the plateau must be below −this
TOY_THRESHOLD = -0.5  # toy escape: f below half the depth of the minima (−1)
#: arm → (engine optimizer, momentum, lr multiplier of η, gradient-noise std)
ARMS = {
    "gd": ("sgd", 0.0, 1.0, 0.0),
    "gd_noise": ("sgd", 0.0, 1.0, NOISE_STD),
    "gd_lr_eff": ("sgd", 0.0, 1.0 / (1.0 - BETA), 0.0),
    "heavy_ball": ("sgd", BETA, 1.0, 0.0),
    "nesterov": ("nesterov", BETA, 1.0, 0.0),
    "adam": ("adam", BETA, None, 0.0),  # its own lr
}
LABELS = {
    "gd": "GD",
    "gd_noise": "GD + noise",
    "gd_lr_eff": "GD at η/(1−β)",
    "heavy_ball": "heavy-ball",
    "nesterov": "Nesterov",
    "adam": "Adam",
}
#: (arm, reference): each verdict's ratio is steps(reference) / steps(arm); the last is
#: the control asking whether momentum beats plain GD at momentum's effective step.
COMPARISONS = [
    ("heavy_ball", "gd"),
    ("nesterov", "gd"),
    ("adam", "gd"),
    ("gd_noise", "gd"),
    ("heavy_ball", "gd_lr_eff"),
]

NOTES = {
    ("heavy_ball", "gd"): " Dauphin et al. (2014) named saddles the obstacle but proposed "
    "saddle-free Newton, not momentum; the case for momentum comes from other work.",
    ("heavy_ball", "gd_lr_eff"): " A ratio below 1 means momentum's gain here is its larger "
    "effective step η/(1−β), which plain GD can take too on this problem.",
}


def arm_hparams(arm: str, lr: float, adam_lr: float) -> dict[str, object]:
    """Optimizer, learning rate, momentum and gradient noise of ``arm``."""
    if arm not in ARMS:
        raise SpecError(f"unknown arm {arm!r}; use one of {list(ARMS)}")
    optimizer, momentum, lr_factor, noise = ARMS[arm]
    rate = adam_lr if lr_factor is None else lr * lr_factor
    return {
        "optimizer": optimizer,
        "learning_rate": rate,
        "momentum": momentum,
        "grad_noise": noise,
    }


@dataclass(frozen=True)
class Config(RunConfig):
    # scientific: the factors under study
    arm: Literal[tuple(ARMS)] = "gd"  # optimizer arm (ARMS)
    init_scale: float = 1e-3  # multiplies the LeCun init: distance from the saddle at 0
    # fixed: the protocol
    # "escape": the full budget; "plateau": the short λ_min probe
    stage: Literal["escape", "plateau"] = "escape"
    base_lr: Positive = 0.1  # η of GD, heavy-ball, Nesterov (and ×1/(1−β) for gd_lr_eff)
    adam_lr: Positive = 1e-3
    escape_steps: Count = 200  # full batch: steps = epochs
    plateau_steps: Count = 20
    dataset: str = "mnist1d"
    model: str = "mlp"
    widths: tuple[int, ...] = (10,)
    activation: str = "linear"
    loss: str = "mse"
    batch_size: int = 4000  # the whole training set: gradient descent
    history_points: int = 200  # evaluated every step: the escape step's resolution

    DERIVED: ClassVar[dict[str, str]] = {
        "optimizer": "set arm instead",
        "learning_rate": "set base_lr or adam_lr instead",
        "momentum": "fixed by the arm (β = 0.9)",
        "grad_noise": "fixed by the arm",
        "epochs": "set escape_steps or plateau_steps instead",
    }

    def _arm(self) -> dict:
        return arm_hparams(self.arm, self.base_lr, self.adam_lr)

    def cohort_spec(self) -> CohortSpec:
        if self.stage not in ("escape", "plateau"):
            raise SpecError(f"stage must be 'escape' or 'plateau', got {self.stage!r}")
        epochs = self.escape_steps if self.stage == "escape" else self.plateau_steps
        return dataclasses.replace(
            super().cohort_spec(), optimizer=self._arm()["optimizer"], epochs=epochs
        )

    def hparams(self) -> dict[str, float]:
        arm = self._arm()
        return {
            **super().hparams(),
            "learning_rate": arm["learning_rate"],
            "momentum": arm["momentum"],
            "grad_noise": arm["grad_noise"],
        }


def grid(arms: list[str], scales: list[float]) -> list[dict]:
    """Every arm × init scale to the full budget, and the GD plateau probe per scale."""
    points = [{"stage": "escape", "arm": a, "init_scale": s} for s in scales for a in arms]
    return points + [{"stage": "plateau", "arm": "gd", "init_scale": s} for s in scales]


GRID = grid(list(ARMS), [1e-4, 1e-3, 1e-2])


@dataclass(frozen=True)
class ToySetup:
    """The toy-surface protocol of a profile (the runs share the profile's seeds)."""

    steps: int = 3000
    init_scales: tuple[float, ...] = (1e-2, 1e-4, 1e-6, 1e-8)
    arms: tuple[str, ...] = tuple(ARMS)
    lr: float = 0.01
    adam_lr: float = 0.01
    start_x: float = 1.0
    curve_points: int = 120  # loss-curve points kept per run, log-spaced in the step
    trajectory_steps: int = 1200  # seed-0 trajectories kept up to this step ...
    trajectory_every: int = 6  # ... every this many steps


TOY = {
    "quick": ToySetup(steps=600, init_scales=(1e-2, 1e-4), arms=("gd", "heavy_ball")),
    "default": ToySetup(),
    "paper": ToySetup(init_scales=(1e-2, 1e-4, 1e-6, 1e-8, 1e-10)),
}

PROFILES = {
    "quick": {
        "seeds": 2,
        "escape_steps": 40,
        "plateau_steps": 4,
        "history_points": 20,
        "grid": grid(["gd", "heavy_ball"], [1e-2]),
    },
    "default": {"seeds": 10},
    "paper": {
        "seeds": 20,
        "escape_steps": 400,
        "history_points": 200,
        "grid": grid(list(ARMS), [1e-5, 1e-4, 1e-3, 1e-2, 1e-1]),
    },
}


# ----- the toy surface (no cohort: toolkit.toy) --------------------------------------------
def standalone(profile: str, seeds: int) -> dict[str, pd.DataFrame]:
    """Every toy arm × init scale × seed as one vmapped program; three tables."""
    setup = TOY.get(profile, TOY["default"])
    runs = [
        (arm, scale, seed)
        for arm in setup.arms
        for scale in setup.init_scales
        for seed in range(seeds)
    ]
    root = jax.random.key(root_seed("exp_saddle_momentum/toy"))
    seed_keys = [jax.random.fold_in(root, seed) for seed in range(seeds)]
    # Per seed one draw z for the start and one noise stream, shared by every arm and
    # scale: arms are compared from the same start (paired by seed).
    z = np.array([float(jax.random.normal(jax.random.fold_in(k, 0))) for k in seed_keys])
    hp = [arm_hparams(arm, setup.lr, setup.adam_lr) for arm, _, _ in runs]
    starts = np.array([[setup.start_x, scale * z[seed]] for _, scale, seed in runs], np.float32)
    out = toy.run_many(
        toy.strict_saddle,
        setup.steps,
        jnp.asarray(starts),
        jnp.array([toy.kind_index(h["optimizer"]) for h in hp]),
        jnp.array([h["learning_rate"] for h in hp], jnp.float32),
        jnp.array([h["momentum"] for h in hp], jnp.float32),
        jnp.array([h["grad_noise"] for h in hp], jnp.float32),
        jnp.stack([jax.random.fold_in(seed_keys[seed], 1) for _, _, seed in runs]),
    )
    escape = np.asarray(toy.first_below(out["loss"], TOY_THRESHOLD))
    points, losses = np.asarray(out["points"]), np.asarray(out["loss"])
    grad_norms = np.asarray(out["grad_norm"])
    # The plateau point: smallest gradient norm before escape (over the whole run if none).
    horizon = np.where(escape >= 0, escape, setup.steps + 1)
    masked = np.where(np.arange(setup.steps + 1) < horizon[:, None], grad_norms, np.inf)
    plateau = masked.argmin(axis=1)
    eigs = np.asarray(
        jax.vmap(functools.partial(toy.hessian_eigs, toy.strict_saddle))(
            jnp.asarray(points[np.arange(len(runs)), plateau])
        )
    )
    run_rows, curve_rows, trajectory_rows = [], [], []
    curve_steps = np.unique(np.geomspace(1, setup.steps, setup.curve_points).round().astype(int))
    curve_steps = np.concatenate([[0], curve_steps])
    trajectory_steps = np.arange(0, min(setup.trajectory_steps, setup.steps) + 1)
    trajectory_steps = trajectory_steps[:: setup.trajectory_every]
    for r, (arm, scale, seed) in enumerate(runs):
        base = {"arm": arm, "init_scale": scale, "seed": seed}
        finite = bool(np.isfinite(losses[r]).all())
        run_rows.append(
            {
                **base,
                **{k: v for k, v in hp[r].items()},
                "start_x": float(starts[r, 0]),
                "start_y": float(starts[r, 1]),
                "budget": setup.steps,
                "escape_step": int(escape[r]),
                "censored": bool(escape[r] < 0),
                "diverged": not finite,
                "plateau_step": int(plateau[r]),
                "plateau_grad_norm": float(grad_norms[r, plateau[r]]),
                "lambda_min_plateau": float(eigs[r, 0]),
                "lambda_max_plateau": float(eigs[r, 1]),
                "final_loss": float(losses[r, -1]),
            }
        )
        curve_rows += [
            {
                **base,
                "step": int(t),
                "loss": float(losses[r, t]),
                "grad_norm": float(grad_norms[r, t]),
            }
            for t in curve_steps
        ]
        if seed == 0:
            trajectory_rows += [
                {**base, "step": int(t), "x": float(points[r, t, 0]), "y": float(points[r, t, 1])}
                for t in trajectory_steps
            ]
    return {
        "toy_runs": pd.DataFrame(run_rows),
        "toy_curves": pd.DataFrame(curve_rows),
        "toy_trajectories": pd.DataFrame(trajectory_rows),
    }


# ----- the network: measurements on the trained cohorts -------------------------------------
def saddle_reference(data: Dataset) -> dict[str, float]:
    """Escape threshold and predicted saddle curvature of a linear network, from the data.

    L_const: MSE of the best constant prediction (the class frequencies). Δ₁: the drop
    from L_const reached by the best rank-1 linear map (reduced-rank regression: the
    top singular value of the centred least-squares fit). λ_pred: the smallest Hessian
    eigenvalue of a one-hidden-layer linear network at zero weights with the output
    bias fit, −σ₁(Σ_yx) (the weights' Hessian there is [[0, −C], [−Cᵀ, 0]]-shaped).
    """
    x = np.asarray(data.x_train, np.float64)
    y = np.eye(data.num_classes)[np.asarray(data.y_train)]
    xc, yc = x - x.mean(0), y - y.mean(0)
    n = len(x)
    const = 0.5 * float((yc**2).sum()) / n
    fitted = xc @ np.linalg.lstsq(xc, yc, rcond=None)[0]
    singular = np.linalg.svd(fitted, compute_uv=False)
    delta1 = 0.5 * float(singular[0] ** 2) / n
    least_squares = 0.5 * float(((yc - fitted) ** 2).sum()) / n
    sigma_yx = np.linalg.svd(yc.T @ xc / n, compute_uv=False)[0]
    return {
        "loss_const": const,
        "loss_least_squares": least_squares,
        "delta_rank1": delta1,
        "escape_threshold": const - 0.5 * delta1,
        "lambda_min_predicted": -float(sigma_yx),
    }


@functools.cache
def _curvature_fn(widths: tuple, num_classes: int, activation: str, loss_kind: str):
    model = models.build("mlp", widths, num_classes, activation)

    def loss(params, x, y):
        return per_example_loss(loss_kind, model.apply(params, x), y).mean()

    def per_run(params, key, x, y):
        top, smallest = M.lanczos_eigs(loss, params, x, y, key, num_iters=40, k=1)
        grads = jax.grad(loss)(params, x, y)
        grad_norm = jnp.sqrt(sum(jnp.sum(g**2) for g in jax.tree_util.tree_leaves(grads)))
        return {"lambda_min": smallest, "lambda_max": top[0], "grad_norm": grad_norm}

    return per_run


def measure(trained) -> dict:
    spec, data = trained.cohort.spec, trained.cohort.data
    per_run = _curvature_fn(tuple(spec.widths), data.num_classes, spec.activation, spec.loss)
    x, y = jnp.asarray(data.x_train), jnp.asarray(data.y_train)
    keys = trained.run_keys(17)  # from each run's seed, not its place in the cohort
    values = trained.map(per_run, (trained.result.state["params"], keys), (x, y))
    reference = saddle_reference(data)
    return {**values, **{k: np.full(len(trained.runs), v) for k, v in reference.items()}}


# ----- analysis ------------------------------------------------------------------------------
def network_escapes(results: ResultsFolder) -> pd.DataFrame:
    """One row per full-budget network run: escape step (first evaluated step with train
    loss below the threshold; -1 and ``censored`` if never within the budget)."""
    summary = results.summary()
    runs = summary[summary["stage"] == "escape"].copy()
    history = results.history()
    history = history[history["run_id"].isin(runs["run_id"])]
    threshold = dict(zip(runs["run_id"], runs["escape_threshold"]))
    below = history[history["train_loss"] < history["run_id"].map(threshold)]
    first = below.groupby("run_id")["step"].min()
    runs["budget"] = runs["epochs"]
    runs["escape_step"] = runs["run_id"].map(first)
    runs["censored"] = runs["escape_step"].isna()
    runs["escape_step"] = runs["escape_step"].fillna(-1).astype(int)
    return runs


def escaped(frame: pd.DataFrame) -> tuple[pd.DataFrame, dict[str, int]]:
    """Runs that count: not diverged and escaped within the budget (steps ≥ 1 for logs)."""
    ok, excluded = usable(frame, ~frame["censored"].astype(bool))
    return ok.assign(steps=np.maximum(ok["escape_step"], 1).astype(float)), excluded


def log_ratios(frame: pd.DataFrame, arm: str, reference: str = "gd") -> tuple[pd.Series, str]:
    """Per seed: mean over init scales of log(steps of ``reference`` / steps of ``arm``),
    over runs that escaped; and the runs left out, in words."""
    part = frame[frame["arm"].isin([arm, reference])]
    ok, excluded = escaped(part)
    out = "; ".join(f"{k} runs {why}" for why, k in excluded.items()) or "no run left out"
    table = ok.pivot_table(index=["seed", "init_scale"], columns="arm", values="steps")
    if arm not in table or reference not in table:
        return pd.Series(dtype=float), out
    logs = np.log(table[reference] / table[arm]).groupby(level="seed").mean()
    return logs.reindex(sorted(frame["seed"].unique())), out


PROBLEMS = {"toy": "toy surface x² − y² + y⁴/4", "net": "deep linear network 40-10-10, MNIST-1D"}


def _ratio_test(problem: str, arm: str, reference: str, role: str = "secondary") -> Test:
    if reference == "gd":
        hypothesis = f"{LABELS[arm]} escapes the saddle in fewer steps than plain GD"
    else:
        hypothesis = (
            "Momentum's gain is more than its larger effective step: plain GD at η/(1−β) "
            "takes more steps than heavy-ball"
        )
    return Test(
        f"{problem}_{arm}_vs_{reference}", "C17", role, "log_ratio",
        f"log(steps {LABELS[reference]} / steps {LABELS[arm]}) to escape, per seed mean over "
        "init scales",
        hypothesis, "greater", FASTER,
        "GD's escape time scales as 1/η, so a saving under 25% is what a 25% larger step "
        "gives: 'escapes naturally' needs more",
        "Escape-step ratio {ratio:.2f}× [{ratio_low:.2f}, {ratio_high:.2f}] ({n} of {planned} "
        "seeds; {verdict}); mean steps " + f"{LABELS[reference]} vs {LABELS[arm]}"
        + " by init scale: {scales}; {runs_out}." + NOTES.get((arm, reference), ""),
        condition=PROBLEMS[problem],
    )  # fmt: skip


TESTS = [
    _ratio_test("net", "heavy_ball", "gd", role="primary"),
    *[_ratio_test("net", arm, ref) for arm, ref in COMPARISONS[1:]],
    *[_ratio_test("toy", arm, ref) for arm, ref in COMPARISONS],
    Test(
        "net_lambda_min", "C17", "secondary", "mean",
        "smallest Hessian eigenvalue (Lanczos) on the plateau, per seed mean over init scales",
        "The network's plateau is a saddle (λ_min < 0 on it), not a local minimum",
        "less", SADDLE_MARGIN,
        "−0.05 is well beyond Lanczos' error here and an order below the predicted −0.58",
        "λ_min = {estimate:.4f} [{low:.4f}, {high:.4f}] after {steps} GD steps (predicted "
        "−σ₁(Σ_yx) = {predicted:.3f}); {on_plateau} probes still above the escape threshold; "
        "after the budget GD's λ_min is {after:.3f} (mean); n = {n}.",
        condition=PROBLEMS["net"],
    ),
    Test(
        "toy_lambda_min", "C17", "check", "exact",
        "largest over GD runs of the exact Hessian's smallest eigenvalue at the run's point "
        "of smallest gradient norm",
        "GD's slow phase on the toy surface is at a saddle (λ_min < 0 where it stalls)",
        "less", SADDLE_MARGIN, "the same margin as the network's plateau",
        "λ_min at GD's slowest point ≤ {estimate:.3f} in all {runs} GD runs (the saddle's −2).",
        condition=PROBLEMS["toy"],
    ),
]  # fmt: skip


def _ratio_evidence(frame: pd.DataFrame, arm: str, reference: str, seeds: int):
    logs, runs_out = log_ratios(frame, arm, reference)
    low, high = iv.t_interval(logs).ci()
    ok, _ = escaped(frame)
    means = ok.groupby(["arm", "init_scale"])["steps"].mean()
    scales = sorted(frame["init_scale"].unique(), reverse=True)
    scales = ", ".join(
        f"s={s:g}: {means.get((reference, s), np.nan):.0f} vs {means.get((arm, s), np.nan):.0f}"
        for s in scales
    )
    ratios = dict(ratio=math.exp(logs.mean()), ratio_low=math.exp(low), ratio_high=math.exp(high))
    return per_seed(logs, planned=seeds, scales=scales, runs_out=runs_out, **ratios)


def analyze(results: ResultsFolder) -> dict:
    escapes = network_escapes(results)
    toy_runs = results.table("toy_runs")
    seeds = escapes["seed"].nunique()
    evidence = {}
    for problem, frame in (("net", escapes), ("toy", toy_runs)):
        for arm, reference in COMPARISONS:
            ev = _ratio_evidence(frame, arm, reference, seeds) if len(frame) else per_seed([])
            evidence[f"{problem}_{arm}_vs_{reference}"] = ev
    summary = results.summary()
    probe = summary[summary["stage"] == "plateau"]
    evidence["net_lambda_min"] = per_seed(
        probe.groupby("seed")["lambda_min"].mean(),
        planned=seeds,
        steps=int(probe["epochs"].max()) if len(probe) else 0,
        predicted=float(summary["lambda_min_predicted"].iloc[0]),
        on_plateau=f"{int((probe['final_train_loss'] > probe['escape_threshold']).sum())}/"
        f"{len(probe)}",
        after=escapes.loc[escapes["arm"] == "gd", "lambda_min"].mean(),
    )
    gd = toy_runs[toy_runs["arm"] == "gd"] if len(toy_runs) else toy_runs
    evidence["toy_lambda_min"] = exact(
        gd["lambda_min_plateau"].max() if len(gd) else math.nan, runs=len(gd)
    )
    return evidence


# ----- figures ------------------------------------------------------------------------------
def _colors() -> dict[str, tuple]:
    import seaborn as sns

    return dict(zip(ARMS, sns.color_palette(fig.PALETTE, len(ARMS))))


def figures(results: ResultsFolder, out_dir: Path) -> list[Path]:
    fig.style()
    paths = []
    toy_runs = results.table("toy_runs")
    trajectories = results.table("toy_trajectories")
    if not trajectories.empty:
        paths.append(_trajectory_figure(trajectories, toy_runs, out_dir))
    paths.append(_loss_figure(results, out_dir))
    paths.append(_escape_figure(results, toy_runs, out_dir))
    paths.append(_curvature_figure(results, out_dir))
    return paths


def _trajectory_figure(trajectories: pd.DataFrame, toy_runs: pd.DataFrame, out_dir: Path) -> Path:
    scales = sorted(trajectories["init_scale"].unique())
    scale = scales[len(scales) // 2]  # a middle scale: a clear plateau, every arm escapes
    part = trajectories[trajectories["init_scale"] == scale]
    every = int(np.diff(np.sort(part["step"].unique()))[0])
    arms = [a for a in ARMS if a in set(part["arm"])]
    xs, ys = np.linspace(-1.3, 1.3, 121), np.linspace(-2.0, 2.0, 161)
    grid_x, grid_y = np.meshgrid(xs, ys)
    surface = grid_x**2 - grid_y**2 + grid_y**4 / 4
    columns = min(3, len(arms))
    rows = math.ceil(len(arms) / columns)
    figure, axes = plt.subplots(
        rows, columns, figsize=(3.2 * columns, 3.0 * rows), squeeze=False, sharex=True, sharey=True
    )
    colors = _colors()
    for ax, arm in zip(axes.flat, arms):
        ax.contourf(xs, ys, surface, levels=np.linspace(-1, 2, 16), cmap="Greys_r", extend="both")
        ax.contour(xs, ys, surface, levels=[0.0], colors="white", linewidths=0.6)
        path = part[part["arm"] == arm].sort_values("step")
        ax.plot(path["x"], path["y"], color=colors[arm], lw=1.2, marker=".", ms=2)
        ax.plot(path["x"].iloc[0], path["y"].iloc[0], "o", color="white", mec="k", ms=5)
        ax.plot([0], [0], "x", color="red", ms=7, mew=1.5)
        run = toy_runs[(toy_runs["arm"] == arm) & (toy_runs["init_scale"] == scale)]
        run = run[run["seed"] == 0]
        steps = int(run["escape_step"].iloc[0]) if len(run) else -1
        escaped = f"escapes at step {steps}" if steps >= 0 else "no escape"
        ax.set_title(f"{LABELS[arm]}: {escaped}")
        ax.set_xlim(xs[0], xs[-1])
        ax.set_ylim(ys[0], ys[-1])
    for ax in axes.flat[len(arms) :]:
        ax.set_visible(False)
    for ax in axes[-1]:
        ax.set_xlabel("x (stable direction)")
    for ax in axes[:, 0]:
        ax.set_ylabel("y (unstable direction)")
    figure.suptitle(
        f"f = x² − y² + y⁴/4 (saddle ×, start ○ at (1, {scale:g}·z)); seed 0, one run per panel; "
        f"dots every {every} steps",
        fontsize=10,
    )
    return fig.save(figure, out_dir, "toy_trajectories")


def _loss_figure(results: ResultsFolder, out_dir: Path) -> Path:
    summary = results.summary()
    escape_ids = usable(summary[summary["stage"] == "escape"])[0]["run_id"]
    history = results.history()
    history = history[history["run_id"].isin(escape_ids)]
    threshold = float(summary["escape_threshold"].iloc[0])
    toy_curves = results.table("toy_curves")
    scales = sorted(history["init_scale"].unique())
    toy_scales = sorted(toy_curves["init_scale"].unique()) if not toy_curves.empty else []
    columns = max(len(scales), len(toy_scales))
    rows = 2 if toy_scales else 1
    figure, axes = plt.subplots(rows, columns, figsize=(3.3 * columns, 3.0 * rows), squeeze=False)
    colors = _colors()
    for ax, scale in zip(axes[0], scales):
        part = history[history["init_scale"] == scale]
        for arm in [a for a in ARMS if a in set(part["arm"])]:
            fig.band(ax, part[part["arm"] == arm], "step", "train_loss", color=colors[arm],
                     label=LABELS[arm], lw=1.2)  # fmt: skip
        ax.axhline(threshold, color="k", ls=":", lw=0.8, label="escape threshold")
        ax.set_title(f"network, init scale {scale:g}")
        ax.set_xlabel("step (= epoch, full batch)")
        ax.set_ylim(0.40, 0.51)
    axes[0, 0].set_ylabel("train MSE")
    axes[0, 0].legend(fontsize=7)
    for ax in axes[0, len(scales) :]:
        ax.set_visible(False)
    if toy_scales:
        for ax, scale in zip(axes[1], toy_scales):
            part = toy_curves[toy_curves["init_scale"] == scale]
            for arm in [a for a in ARMS if a in set(part["arm"])]:
                fig.band(ax, part[part["arm"] == arm], "step", "loss", color=colors[arm],
                         label=LABELS[arm], lw=1.2)  # fmt: skip
            ax.axhline(TOY_THRESHOLD, color="k", ls=":", lw=0.8)
            ax.set_title(f"toy surface, init scale {scale:g}")
            ax.set_xscale("log")
            ax.set_xlim(1, None)
            ax.set_xlabel("step (log)")
        axes[1, 0].set_ylabel("f(x, y)")
        for ax in axes[1, len(toy_scales) :]:
            ax.set_visible(False)
    n = fig.n_seeds(history)
    figure.suptitle(f"Loss per optimizer ({fig.BAND_NOTE}, n = {n}); dotted: escape threshold",
                    fontsize=10)  # fmt: skip
    return fig.save(figure, out_dir, "loss_curves")


def _escape_figure(results: ResultsFolder, toy_runs: pd.DataFrame, out_dir: Path) -> Path:
    escapes = network_escapes(results)
    primary = per_seed(log_ratios(escapes, "heavy_ball")[0]).interval
    low, high = np.exp(primary.ci())
    panels = [
        (
            f"network: GD / heavy-ball steps {math.exp(primary.estimate):.2f}× "
            f"[{low:.2f}, {high:.2f}]\n(geometric mean, n = {primary.n} seeds)",
            escapes,
        )
    ]
    if not toy_runs.empty:
        panels.insert(0, ("toy surface x² − y² + y⁴/4", toy_runs))
    figure, axes = plt.subplots(1, len(panels), figsize=(4.6 * len(panels), 3.8), squeeze=False)
    colors = _colors()
    for ax, (title, frame) in zip(axes[0], panels):
        ok, _ = escaped(frame)
        for arm in [a for a in ARMS if a in set(ok["arm"])]:
            # Geometric mean and t-interval of log steps over seeds, per init scale.
            logs = ok[ok["arm"] == arm].groupby("init_scale")["steps"]
            cis = {s: iv.t_interval(np.log(v)) for s, v in logs}
            scales = sorted(cis)
            bounds = np.exp([cis[s].ci() for s in scales])
            mean = np.exp([cis[s].estimate for s in scales])
            ax.plot(scales, mean, "o-", color=colors[arm], label=LABELS[arm], ms=3)
            ax.fill_between(scales, bounds[:, 0], bounds[:, 1], color=colors[arm], alpha=0.2, lw=0)
        ax.axhline(frame["budget"].max(), color="k", ls=":", lw=0.8)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("init scale s (distance from the saddle)")
        ax.set_title(title, fontsize=9)
    axes[0, 0].set_ylabel("steps to escape")
    axes[0, -1].legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0))
    left_out = sum(len(frame) - len(escaped(frame)[0]) for _, frame in panels)
    figure.suptitle(
        f"Escape steps vs init scale: geometric mean, 95% t-interval across seeds "
        f"(n = {fig.n_seeds(escapes)}); dotted: the budget; "
        f"{left_out} runs left out (diverged or never escaped)",
        fontsize=10,
    )
    return fig.save(figure, out_dir, "escape_vs_init_scale")


def _curvature_figure(results: ResultsFolder, out_dir: Path) -> Path:
    summary = results.summary()
    probe = summary[summary["stage"] == "plateau"].assign(where="on the plateau (GD probe)")
    final = summary[(summary["stage"] == "escape") & (summary["arm"] == "gd")]
    final = final.assign(where="GD after the budget")
    frame = pd.concat([probe, final])
    figure, ax = plt.subplots(figsize=(4.6, 3.4))
    colors = {"on the plateau (GD probe)": "C3", "GD after the budget": "C0"}
    for where, color in colors.items():
        part = frame[frame["where"] == where]
        if not part.empty:
            fig.band(ax, part, "init_scale", "lambda_min", color=color, label=where, marker="o")
    ax.axhline(float(summary["lambda_min_predicted"].iloc[0]), color="k", ls="--", lw=0.8,
               label="−σ₁(Σ_yx): the saddle at 0")  # fmt: skip
    ax.axhline(0, color="grey", lw=0.6)
    ax.set_xscale("log")
    ax.set_xlabel("init scale s")
    ax.set_ylabel("smallest Hessian eigenvalue")
    ax.legend(fontsize=7)
    ax.set_title(f"Network curvature ({fig.BAND_NOTE}, n = {fig.n_seeds(frame)})")
    return fig.save(figure, out_dir, "network_lambda_min")
