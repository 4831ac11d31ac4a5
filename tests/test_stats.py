"""Tests for toolkit.stats: the t-intervals of figure bands and ``compare``."""

import sys

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps

from toolkit import stats as st


def test_module_does_not_import_jax():
    assert "jax" not in st.__dict__
    src = open(st.__file__).read()
    assert "import jax" not in src and "from jax" not in src
    assert "toolkit.stats" in sys.modules


def test_welch_matches_scipy():
    rng = np.random.default_rng(3)
    a, b = rng.normal(1.0, 1.0, 12), rng.normal(0.2, 3.0, 9)
    for level in (0.95, 0.90):
        diff, lo, hi = st.welch_ci(a, b, level)
        ref = sps.ttest_ind(a, b, equal_var=False).confidence_interval(level)
        assert diff == pytest.approx(a.mean() - b.mean(), abs=1e-12)
        assert abs(lo - ref.low) < 1e-10 and abs(hi - ref.high) < 1e-10


def test_paired_t_matches_scipy():
    d = np.random.default_rng(4).normal(0.3, 1.0, 15)
    for level in (0.95, 0.90):
        _, lo, hi = st.paired_t_ci(d, level)
        ref = sps.ttest_1samp(d, 0.0).confidence_interval(level)
        assert abs(lo - ref.low) < 1e-10 and abs(hi - ref.high) < 1e-10


def test_tost_equivalent():
    assert st.tost_equivalent(-0.05, 0.08, 0.1)
    assert not st.tost_equivalent(-0.05, 0.12, 0.1)
    assert not st.tost_equivalent(-0.1, 0.05, 0.1)


def test_mean_ci_by_group():
    rng = np.random.default_rng(5)
    df = pd.DataFrame(
        {
            "cond": np.repeat(["a", "b"], 12),
            "seed": np.tile(np.repeat(np.arange(6), 2), 2),  # two rows per (cond, seed)
            "acc": rng.normal(size=24),
        }
    )
    df.loc[0, "acc"] = np.nan
    out = st.mean_ci_by_group(df, "cond", "acc")
    assert list(out.columns) == ["cond", "mean", "ci_low", "ci_high", "n"]
    per_seed = df.dropna().groupby(["cond", "seed"])["acc"].mean()
    for cond, row in out.set_index("cond").iterrows():
        vals = per_seed.loc[cond].to_numpy()
        ref = sps.ttest_1samp(vals, 0.0).confidence_interval(0.95)
        assert row["n"] == 6 and row["mean"] == pytest.approx(vals.mean())
        assert row["ci_low"] == pytest.approx(ref.low) and row["ci_high"] == pytest.approx(ref.high)
    single = st.mean_ci_by_group(df[df.seed == 0], ["cond"], "acc")
    assert single["ci_low"].isna().all()
