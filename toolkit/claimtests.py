"""Claim tests as declarations, turned into verdict rows by the library.

An experiment declares ``TESTS``: one :class:`Test` per test of a claim, with its role
(``primary``: the one pre-declared test that decides the claim; ``secondary``:
exploratory, shown under it, never votes; ``check``: a deterministic computation, no
interval — an exact computation may be a claim's primary only where the claim is itself
arithmetic or a deterministic property, and it stays out of the Holm family), its kind of statistic, the predicted direction and the smallest effect of
interest *with its reason*. ``analyze(results)`` returns the evidence for each test
by key (:func:`per_seed`, :func:`rank`, :func:`fraction`, :func:`bootstrap`,
:func:`exact`); :func:`evaluate` computes estimate, 95% interval, p-value, verdict and,
for an inconclusive test, the seeds a power calculation says would settle it.

The verdict rule of CLAIMS.md, for a smallest effect m ≥ 0 (``greater``; ``less``
mirrors it): ``supported`` when the 95% interval lies above m, ``contradicted`` when it
lies below 0 (the other side), else ``inconclusive`` — including a real effect too
small to matter (an interval between 0 and m), whose row says so.
``within`` (equivalence, margin m > 0) is TOST: ``supported`` when the 90% interval
lies inside (−m, m), ``contradicted`` when the 95% interval lies outside it. m = 0
is allowed only where any effect in the predicted direction supports the claim, and
the reason must say so. The primaries of all experiments form one family: their
p-values are Holm-adjusted at α = 0.05 (:func:`adjust_family`) and a primary's
verdict is decided by its adjusted p-value.

A test is ``inconclusive`` with a stated reason, whatever its interval, when fewer
than 2 seeds are usable, when every seed gave the same value (a zero-width interval
is not evidence), or, for a rank correlation, when some seed has fewer than 3
distinct levels of the factor. Runs that diverged or did not reach the comparison
point are excluded before any statistic (:func:`usable`); every row says how many
seeds it used of how many were planned, and why the others were left out.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats as sps

from toolkit import intervals as iv

ROLES = ("primary", "secondary", "check")
DIRECTIONS = ("greater", "less", "within")
ALPHA = 0.05
MIN_LEVELS = 3

#: kind → (evidence constructor it needs, how the interval is made)
KINDS = {
    "mean": ("per_seed", "t-interval over seeds"),
    "paired_difference": ("per_seed", "t-interval of per-seed paired differences"),
    "log_ratio": ("per_seed", "t-interval of per-seed log ratios"),
    "slope": ("per_seed", "t-interval of per-seed slopes"),
    "rank_correlation": ("rank", "t-interval of per-seed Kendall τ over ≥ 3 levels"),
    "fraction": ("fraction", "Clopper–Pearson interval of a fraction of seeds"),
    "bootstrap": ("bootstrap", "studentized bootstrap over seeds"),
    "exact": ("exact", "deterministic computation (no interval)"),
}

VERDICT_COLUMNS = (
    "claim_id role condition hypothesis statistic kind direction smallest_effect "
    "effect_reason estimate ci_low ci_high interval n_seeds n_planned excluded p_value "
    "p_holm verdict reason seeds_needed finding"
).split()


@dataclass(frozen=True)
class Test:
    """One declared test of a claim."""

    key: str  # the evidence ``analyze`` returns for it
    claim: str  # "C18"
    role: str  # primary | secondary | check
    kind: str  # one of KINDS
    statistic: str  # what the estimate is, with units
    hypothesis: str  # the claim as tested, in words
    direction: str  # greater | less | within
    smallest_effect: float
    effect_reason: str  # one line: why this smallest effect (or why 0 suffices)
    finding: str  # template: {estimate} {low} {high} {n} {planned} {verdict} + evidence extras
    condition: str = ""

    def __post_init__(self) -> None:
        problems = []
        if self.role not in ROLES:
            problems.append(f"role {self.role!r} not in {ROLES}")
        if self.kind not in KINDS:
            problems.append(f"kind {self.kind!r} not in {tuple(KINDS)}")
        if self.direction not in DIRECTIONS:
            problems.append(f"direction {self.direction!r} not in {DIRECTIONS}")
        if not (self.smallest_effect >= 0):
            problems.append("smallest_effect must be ≥ 0")
        if self.direction == "within" and self.smallest_effect <= 0:
            problems.append("an equivalence test needs a margin > 0")
        if not self.effect_reason.strip():
            problems.append("effect_reason is required (why this smallest effect)")
        if self.role == "check" and self.kind != "exact":
            problems.append("checks are exact computations (kind 'exact')")
        if self.kind == "exact" and self.role == "secondary":
            problems.append(
                "an exact computation is a check, or the primary of a claim that is itself "
                "arithmetic or a deterministic property"
            )
        if problems:
            raise ValueError(f"test {self.key!r} ({self.claim}): " + "; ".join(problems))


@dataclass
class Evidence:
    """What ``analyze`` computed for one test."""

    constructor: str
    interval: iv.Interval
    values: np.ndarray = field(default_factory=lambda: np.array([]))  # per-seed, if any
    n_planned: int = 0
    excluded: dict[str, int] = field(default_factory=dict)
    reason: str = ""  # set: the row is inconclusive for this reason
    extras: dict = field(default_factory=dict)


# ----- evidence constructors -----------------------------------------------------------
def _as_series(values) -> pd.Series:
    if isinstance(values, pd.Series):
        return values.astype(float)
    if isinstance(values, Mapping):
        return pd.Series(values, dtype=float)
    return pd.Series(np.asarray(values, dtype=float))


def per_seed(
    values,
    planned: int | None = None,
    excluded: Mapping[str, int] | None = None,
    missing_reason: str = "no value (run diverged or did not reach the comparison point)",
    **extras,
) -> Evidence:
    """One value per seed (a Series indexed by seed, NaN = left out). Seeds with NaN
    are counted as excluded under ``missing_reason`` unless ``excluded`` accounts for
    them; ``planned`` defaults to the number of entries."""
    series = _as_series(values)
    finite = series[np.isfinite(series)]
    planned = len(series) if planned is None else int(planned)
    excluded = dict(excluded or {})
    unexplained = planned - len(finite) - sum(excluded.values())
    if unexplained > 0:
        excluded[missing_reason] = excluded.get(missing_reason, 0) + unexplained
    return Evidence(
        "per_seed",
        iv.t_interval(finite.to_numpy()),
        values=finite.to_numpy(),
        n_planned=planned,
        excluded={k: v for k, v in excluded.items() if v},
        extras=extras,
    )


def rank(
    frame: pd.DataFrame,
    x: str,
    y: str,
    seed: str = "seed",
    levels: str | None = None,
    planned: int | None = None,
    excluded: Mapping[str, int] | None = None,
    **extras,
) -> Evidence:
    """Kendall τ_b of ``y`` on ``x`` within each seed (rows with NaN dropped), then the
    t-interval of the per-seed τ. ``levels`` (default ``x``) is the factor whose
    distinct values are counted: every seed used needs ≥ 3 of them, else the row is
    inconclusive with the count per seed."""
    levels = levels or x
    d = frame.dropna(subset=[x, y])
    taus, counts = {}, {}
    for s, part in d.groupby(seed):
        counts[s] = int(part[levels].nunique())
        if len(part) >= 2 and part[x].nunique() >= 2 and part[y].nunique() >= 2:
            taus[s] = float(sps.kendalltau(part[x], part[y]).statistic)
    all_seeds = frame[seed].unique()
    series = pd.Series({s: taus.get(s, math.nan) for s in all_seeds}, dtype=float)
    evidence = per_seed(series, planned=planned, excluded=excluded, **extras)
    evidence.constructor = "rank"
    evidence.extras["levels_per_seed"] = counts
    used = [counts.get(s, 0) for s in series.index[np.isfinite(series)]]
    if not used or min(used) < MIN_LEVELS:
        shown = ", ".join(str(c) for c in sorted(counts.values())) or "none"
        evidence.reason = (
            f"too few levels reached: a rank correlation needs ≥ {MIN_LEVELS} distinct "
            f"{levels} values in every seed; levels per seed: {shown}"
        )
    return evidence


def fraction(
    successes, planned: int | None = None, excluded: Mapping[str, int] | None = None, **extras
) -> Evidence:
    """The fraction of seeds where something held (booleans per seed; NaN left out)."""
    series = _as_series(successes)
    finite = series[np.isfinite(series)]
    evidence = per_seed(series, planned=planned, excluded=excluded, **extras)
    evidence.constructor = "fraction"
    evidence.interval = iv.clopper_pearson(finite.to_numpy())
    return evidence


def bootstrap(
    data,
    statistic: Callable,
    planned: int | None = None,
    excluded: Mapping[str, int] | None = None,
    vectorized: bool = False,
    **extras,
) -> Evidence:
    """A statistic with no per-seed value: ``data`` has one row per usable seed; the
    interval is the studentized bootstrap over seeds."""
    x = np.asarray(data, dtype=float)
    interval = iv.studentized_bootstrap(x, statistic, vectorized=vectorized)
    planned = len(x) if planned is None else int(planned)
    excluded = dict(excluded or {})
    unexplained = planned - len(x) - sum(excluded.values())
    if unexplained > 0:
        excluded["no value"] = unexplained
    return Evidence("bootstrap", interval, n_planned=planned, excluded=excluded, extras=extras)


def exact(value: float, **extras) -> Evidence:
    """A deterministic quantity (an analytic value, an arithmetic identity, a count)."""
    return Evidence("exact", iv.exact(value), extras=extras)


def usable(
    frame: pd.DataFrame, reached: str | pd.Series | None = None
) -> tuple[pd.DataFrame, dict[str, int]]:
    """Rows that count: not diverged and, if ``reached`` names a boolean column (or is a
    mask), at the comparison point. Returns the rows and the number of runs excluded
    per reason."""
    diverged = (
        frame["diverged"].astype(bool) if "diverged" in frame else pd.Series(False, frame.index)
    )
    keep = ~diverged
    excluded = {"diverged": int(diverged.sum())}
    if reached is not None:
        mask = frame[reached].astype(bool) if isinstance(reached, str) else reached.astype(bool)
        excluded["did not reach the comparison point"] = int((keep & ~mask).sum())
        keep &= mask
    return frame[keep], {k: v for k, v in excluded.items() if v}


# ----- evaluation -------------------------------------------------------------------------
def _verdict_from_p(p: float, side: str, alpha: float = ALPHA) -> str:
    return side if np.isfinite(p) and p < alpha else "inconclusive"


def evaluate(tests: Sequence[Test], evidence: Mapping[str, Evidence]) -> pd.DataFrame:
    """Verdict rows (``VERDICT_COLUMNS``) for the declared tests, in declaration order;
    p_holm is filled by :func:`adjust_family`."""
    rows = []
    for test in tests:
        if test.key not in evidence:
            raise KeyError(f"analyze() returned no evidence for test {test.key!r}")
        ev = evidence[test.key]
        needed = KINDS[test.kind][0]
        if ev.constructor != needed:
            raise TypeError(
                f"test {test.key!r} is declared {test.kind!r} and needs {needed}() evidence, "
                f"got {ev.constructor}()"
            )
        rows.append(_row(test, ev))
    return pd.DataFrame(rows, columns=VERDICT_COLUMNS)


def _row(test: Test, ev: Evidence) -> dict:
    interval = ev.interval
    estimate = interval.estimate
    m = test.smallest_effect
    reason = ev.reason
    low = high = math.nan
    p, side = math.nan, "inconclusive"
    seeds = None
    if test.kind == "exact":
        low = high = math.nan  # no interval for a deterministic computation
        if test.direction == "within":
            verdict = "supported" if abs(estimate) < m else "contradicted"
        else:
            sign = 1 if test.direction == "greater" else -1
            verdict = "supported" if sign * estimate > m else "contradicted"
        if not np.isfinite(estimate):
            verdict, reason = "inconclusive", "the computation gave no finite value"
    else:
        low, high = interval.ci(iv.LEVEL)
        if interval.n < 2:
            reason = reason or f"fewer than 2 usable seeds ({interval.n})"
        elif interval.degenerate:
            reason = reason or (
                "zero-width interval: every seed gave the same value, which is not "
                "evidence; a finer statistic is needed"
            )
        if reason:
            low = high = math.nan  # an interval that cannot be evidence is not shown
        else:
            p, side = iv.decision_p(interval, test.direction, m)
        verdict = "inconclusive" if reason else _verdict_from_p(p, side)
        sign = -1.0 if test.direction == "less" else 1.0
        lo_eff, hi_eff = sorted((sign * low, sign * high))  # in the predicted direction
        if verdict == "inconclusive" and not reason and test.direction != "within":
            if m > 0 and 0 < lo_eff and hi_eff < m:
                reason = f"a real effect smaller than the smallest effect of interest ({m:g})"
        if not reason:  # kept for a primary until Holm has decided it
            seeds = iv.seeds_needed(interval, _sd(ev), test.direction, m)
        if verdict != "inconclusive" and test.role != "primary":
            seeds = None
    excluded = "; ".join(f"{n} {why}" for why, n in ev.excluded.items()) if ev.excluded else ""
    n_planned = ev.n_planned if test.kind != "exact" else 0
    fmt = {
        "estimate": estimate,
        "low": low,
        "high": high,
        "n": interval.n,
        "planned": n_planned,
        "verdict": verdict,
        **ev.extras,
    }
    try:
        finding = test.finding.format(**fmt)
    except (KeyError, ValueError, IndexError) as err:
        raise ValueError(f"test {test.key!r}: finding template: {err}") from err
    return {
        "claim_id": test.claim,
        "role": test.role,
        "condition": test.condition,
        "hypothesis": test.hypothesis,
        "statistic": test.statistic,
        "kind": test.kind,
        "direction": test.direction,
        "smallest_effect": float(m),
        "effect_reason": test.effect_reason,
        "estimate": float(estimate),
        "ci_low": float(low),
        "ci_high": float(high),
        "interval": KINDS[test.kind][1],
        "n_seeds": int(interval.n),
        "n_planned": int(n_planned),
        "excluded": excluded,
        "p_value": float(p),
        "p_holm": math.nan,
        "verdict": verdict,
        "reason": reason,
        "seeds_needed": seeds,
        "finding": finding,
    }


def _sd(ev: Evidence) -> float:
    """The per-seed SD the power calculation uses (implied by the SE where no per-seed
    values exist)."""
    interval = ev.interval
    if interval.method == "clopper-pearson":
        p = interval.estimate
        return math.sqrt(p * (1 - p)) if 0 < p < 1 else math.nan
    if len(ev.values) >= 2 and ev.constructor != "bootstrap":
        return float(np.std(ev.values, ddof=1))
    return interval.se * math.sqrt(interval.n) if interval.n >= 2 else math.nan


def adjust_family(frames: Mapping[str, pd.DataFrame], alpha: float = ALPHA) -> dict:
    """Holm over the primaries of all experiments (one family); each primary's verdict
    is re-decided from its adjusted p-value. Returns new frames (same keys)."""
    out = {name: frame.copy() for name, frame in frames.items()}
    for frame in out.values():
        if "p_holm" not in frame:
            frame["p_holm"] = math.nan
        frame["p_holm"] = frame["p_holm"].astype(float)
    entries = []
    for name, frame in out.items():
        exact = frame["kind"] == "exact" if "kind" in frame else False
        decided_by_p = (frame["role"] == "primary") & ~exact
        for index in frame.index[decided_by_p]:
            entries.append((name, index))
    p = np.array([out[n].at[i, "p_value"] for n, i in entries], dtype=float)
    adjusted = iv.holm(p)
    for (name, index), value in zip(entries, adjusted):
        frame = out[name]
        frame.at[index, "p_holm"] = value
        if isinstance(frame.at[index, "reason"], str) and frame.at[index, "reason"]:
            continue
        raw = frame.at[index, "verdict"]
        side = raw if raw != "inconclusive" else _side(frame.loc[index])
        decided = _verdict_from_p(value, side, alpha)
        frame.at[index, "verdict"] = decided
        if decided == "inconclusive" and raw != "inconclusive":
            frame.at[index, "reason"] = (
                f"not significant after Holm's adjustment over the primaries (p = {value:.3g})"
            )
        if decided != "inconclusive":
            frame.at[index, "seeds_needed"] = None
    return out


def sibling_verdicts(folder_path, profile_folder: str, exclude: str) -> dict[str, pd.DataFrame]:
    """Verdict frames (new schema only) of the other experiments under the same results
    root and profile folder, for the family adjustment."""
    root = Path(folder_path).parent.parent
    found = {}
    for path in sorted(root.glob(f"*/{profile_folder}/verdicts.csv")):
        name = path.parent.parent.name
        if name == exclude:
            continue
        try:
            frame = pd.read_csv(path)
        except (OSError, ValueError, pd.errors.ParserError):
            continue  # a corrupt sibling is reported when it is read for itself
        if "role" in frame and "p_value" in frame:
            found[name] = frame
    return found


def experiment_verdicts(module, results) -> pd.DataFrame:
    """An experiment's verdict rows: its declared ``TESTS`` evaluated on the evidence
    its ``analyze(results)`` returns, primaries adjusted with the family found beside
    ``results`` (other experiments, same profile folder)."""
    frame = evaluate(module.TESTS, module.analyze(results))
    name = results.path.parent.name
    siblings = sibling_verdicts(results.path, results.path.name, exclude=name)
    return adjust_family({name: frame, **siblings})[name]


def _side(row: pd.Series) -> str:
    est, m = float(row["estimate"]), float(row["smallest_effect"])
    if row["direction"] == "within":
        return "supported" if abs(est) < m else "contradicted"
    sign = 1 if row["direction"] == "greater" else -1
    return "supported" if sign * est > m else "contradicted"


def primaries(tests_by_experiment: Mapping[str, Sequence[Test]]) -> dict[str, list[str]]:
    """claim id → the experiments declaring a primary for it (the rule: exactly one)."""
    found: dict[str, list[str]] = {}
    for name, tests in tests_by_experiment.items():
        for test in tests:
            if test.role == "primary":
                found.setdefault(test.claim, []).append(f"{name}:{test.key}")
    return found
