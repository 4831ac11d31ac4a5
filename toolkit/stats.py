"""Summaries over seeds for figures and ``toolkit compare`` (numpy/scipy/pandas; no JAX).

The intervals are :mod:`toolkit.intervals`' — the ones the verdicts use — so a figure
band, a ``compare`` row and a verdict computed from the same per-seed values give the
same interval. The verdict machinery itself is :mod:`toolkit.claimtests`.
"""

from collections.abc import Sequence

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike
from scipy import stats as sps

from toolkit import intervals

Interval = tuple[float, float, float]  # (estimate, low, high)


def _t_interval(mean, se, df, level: float):
    half = sps.t.ppf((1 + level) / 2, df) * se
    return mean, mean - half, mean + half


def mean_ci_by_group(
    df: pd.DataFrame,
    group_cols: str | Sequence[str],
    value_col: str,
    seed_col: str = "seed",
    level: float = 0.95,
) -> pd.DataFrame:
    """Mean with the t-interval across seeds per group (for plotting bands).

    Rows are first averaged within (group, seed) so the seed is the unit; NaN values are
    dropped. Returns group_cols + [mean, ci_low, ci_high, n]; n < 2 gives a nan band.
    (Vectorized form of :func:`toolkit.intervals.t_interval`; a test checks they agree.)
    """
    cols = [group_cols] if isinstance(group_cols, str) else list(group_cols)
    per_seed = df.dropna(subset=[value_col]).groupby(cols + [seed_col])[value_col].mean()
    g = per_seed.groupby(level=list(range(len(cols))))
    out = g.agg(mean="mean", sd="std", n="count").reset_index()
    se = out["sd"] / np.sqrt(out["n"])
    _, out["ci_low"], out["ci_high"] = _t_interval(out["mean"], se, out["n"] - 1, level)
    return out[cols + ["mean", "ci_low", "ci_high", "n"]]


def paired_t_ci(diffs: ArrayLike, level: float = 0.95) -> Interval:
    """(mean, low, high): the verdicts' t-interval of paired differences (NaNs dropped)."""
    interval = intervals.t_interval(diffs)
    low, high = interval.ci(level)
    return interval.estimate, float(low), float(high)


def welch_ci(a: ArrayLike, b: ArrayLike, level: float = 0.95) -> Interval:
    """(mean(a) - mean(b), low, high) with Welch-Satterthwaite degrees of freedom."""
    interval = intervals.welch_interval(a, b)
    low, high = interval.ci(level)
    return interval.estimate, float(low), float(high)


def tost_equivalent(diff_low: float, diff_high: float, tol: float) -> bool:
    """Equivalence by TOST at alpha=0.05: pass the *90%* CI; True iff it lies within (-tol, tol)
    (the verdicts' ``within`` rule, :func:`toolkit.intervals.decision_p`)."""
    return bool(-tol < diff_low and diff_high < tol)
