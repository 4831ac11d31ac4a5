"""Tests for toolkit.stats: bootstrap CIs, verdict rule, seeds needed, t-intervals."""

import math
import sys
import time

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps

from toolkit import stats as st


@pytest.fixture
def normal_sample() -> np.ndarray:
    return np.random.default_rng(123).normal(1.0, 2.0, size=30)


def _seed_frame(n_seeds: int = 10, rows: int = 50, ragged: bool = False) -> pd.DataFrame:
    rng = np.random.default_rng(7)
    parts = []
    for s in range(n_seeds):
        m = rows - (s % 3) * 7 if ragged else rows
        log_bs = np.round(rng.uniform(3, 10, size=m))  # integer-valued -> ties
        sharp = 0.3 * log_bs + rng.normal(0, 1.0, size=m) + rng.normal(0, 0.5)
        parts.append(pd.DataFrame({"seed": s, "log_bs": log_bs, "sharp": sharp}))
    return pd.concat(parts, ignore_index=True)


def test_module_does_not_import_jax():
    assert "jax" not in st.__dict__
    src = open(st.__file__).read()
    assert "import jax" not in src and "from jax" not in src
    assert "toolkit.stats" in sys.modules


def test_bootstrap_close_to_t_interval(normal_sample):
    est, lo, hi = st.bootstrap_ci(normal_sample)
    m, tlo, thi = st.paired_t_ci(normal_sample)
    assert est == pytest.approx(m)
    width = thi - tlo
    assert abs((hi - lo) - width) < 0.15 * width
    assert abs(lo - tlo) < 0.15 * width and abs(hi - thi) < 0.15 * width


def test_bootstrap_deterministic_and_seed_dependent(normal_sample):
    a = st.bootstrap_ci(normal_sample, seed=5)
    assert a == st.bootstrap_ci(normal_sample, seed=5)
    b = st.bootstrap_ci(normal_sample, seed=6)
    assert a[1:] != b[1:]


def test_bootstrap_matches_scipy_percentile(normal_sample):
    _, lo, hi = st.bootstrap_ci(normal_sample, n_resamples=20_000, seed=1)
    ref = sps.bootstrap(
        (normal_sample,), np.mean, method="percentile", n_resamples=20_000, rng=2
    ).confidence_interval
    width = ref.high - ref.low
    assert abs(lo - ref.low) < 0.04 * width
    assert abs(hi - ref.high) < 0.04 * width


def test_bootstrap_median_and_2d():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(20, 3)) + np.array([0.0, 5.0, -5.0])
    est, lo, hi = st.bootstrap_ci(x, np.mean)
    assert est.shape == lo.shape == hi.shape == (3,)
    np.testing.assert_allclose(est, x.mean(axis=0))
    assert np.all(lo < est) and np.all(est < hi)
    # each column's CI equals the 1-D bootstrap with the same indices
    _, lo1, hi1 = st.bootstrap_ci(x[:, 1], np.mean)
    assert lo[1] == pytest.approx(lo1) and hi[1] == pytest.approx(hi1)
    # non-vectorized statistic on (n, 2) rows agrees with the vectorized form
    diff = lambda v, axis=0: np.mean(v[..., 0] - v[..., 1], axis=axis)
    loop = st.bootstrap_ci(x[:, :2], lambda v: diff(v), n_resamples=500, vectorized=False)
    vec = st.bootstrap_ci(x[:, :2], diff, n_resamples=500)
    np.testing.assert_allclose(loop, vec)
    med, mlo, mhi = st.bootstrap_ci(x[:, 0], np.median)
    assert med == pytest.approx(np.median(x[:, 0])) and mlo <= med <= mhi


def test_nan_rows_dropped():
    x = np.array([1.0, 2.0, np.nan, 3.0, 4.0])
    assert st.bootstrap_ci(x) == st.bootstrap_ci(x[~np.isnan(x)])
    x2 = np.array([[1.0, 2.0], [np.nan, 1.0], [3.0, 5.0], [2.0, 2.0]])
    assert np.allclose(st.bootstrap_ci(x2)[0], [2.0, 3.0])
    a, b = np.array([1.0, 2.0, np.nan, 4.0]), np.array([0.0, np.nan, 1.0, 1.0])
    assert st.paired_difference(a, b) == st.bootstrap_ci([1.0, 3.0])
    assert st.seeds_needed([1.0, 2.0, np.nan, 3.0]) == st.seeds_needed([1.0, 2.0, 3.0])


def test_n_below_two_gives_nan_and_inconclusive():
    est, lo, hi = st.bootstrap_ci([3.0, np.nan])
    assert est == 3.0 and math.isnan(lo) and math.isnan(hi)
    assert all(math.isnan(v) for v in st.bootstrap_ci([]))
    assert st.verdict(lo, hi, "greater") == "inconclusive"
    row = st.verdict_row("C1", "h", "mean", est, 1.0, 2.0, 1, "greater", "one seed only")
    assert row["verdict"] == "inconclusive"
    assert math.isnan(st.paired_t_ci([1.0])[1])


def test_paired_difference_identical_is_zero():
    a = np.random.default_rng(1).normal(size=8)
    assert st.paired_difference(a, a.copy()) == (0.0, 0.0, 0.0)
    with pytest.raises(ValueError):
        st.paired_difference(a, a[:-1])


@pytest.mark.parametrize(
    "low, high, direction, m, expected",
    [
        (0.1, 0.5, "greater", 0.0, "supported"),
        (-0.5, -0.1, "greater", 0.0, "contradicted"),
        (-0.1, 0.5, "greater", 0.0, "inconclusive"),
        (0.0, 0.5, "greater", 0.0, "inconclusive"),  # touching zero
        (-0.5, -0.1, "less", 0.0, "supported"),
        (0.1, 0.5, "less", 0.0, "contradicted"),
        (-0.5, 0.1, "less", 0.0, "inconclusive"),
        (0.3, 0.5, "greater", 0.2, "supported"),
        (0.1, 0.5, "greater", 0.2, "inconclusive"),  # straddles m
        (0.05, 0.15, "greater", 0.2, "inconclusive"),  # real but below m
        (-0.5, -0.1, "greater", 0.2, "contradicted"),
        (-0.5, -0.3, "less", 0.2, "supported"),
        (-0.15, -0.05, "less", 0.2, "inconclusive"),
        (0.1, 0.5, "less", 0.2, "contradicted"),
        (math.nan, math.nan, "greater", 0.0, "inconclusive"),
    ],
)
def test_verdict_table(low, high, direction, m, expected):
    assert st.verdict(low, high, direction, m) == expected


def test_verdict_rejects_bad_input():
    with pytest.raises(ValueError):
        st.verdict(0.1, 0.2, "bigger")
    with pytest.raises(ValueError):
        st.verdict(0.1, 0.2, "greater", -0.1)


def test_seeds_needed_closed_form_and_monotone():
    base = np.array([-1.0, 0.0, 1.0, 2.0, -2.0, 0.5, -0.5])
    sd = np.std(base, ddof=1)
    z = sps.norm.ppf(0.975) + sps.norm.ppf(0.8)
    previous = 0
    for effect in [1.0, 0.5, 0.25, 0.1]:
        n = st.seeds_needed(base + effect)
        assert n == math.ceil(z**2 * sd**2 / effect**2)
        assert n > previous
        previous = n
    assert st.seeds_needed(base + 5.0, smallest_effect=0.3) == math.ceil(z**2 * sd**2 / 0.09)
    assert st.seeds_needed(base) is None  # mean exactly 0
    assert st.seeds_needed([1.0, 1.0, 1.0]) is None  # sd 0


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


def test_spearman_over_seeds_estimate_and_speed():
    df = _seed_frame()
    t0 = time.perf_counter()
    est, lo, hi = st.spearman_over_seeds(df, "log_bs", "sharp", n_resamples=10_000)
    assert time.perf_counter() - t0 < 2.0
    assert est == pytest.approx(sps.spearmanr(df["log_bs"], df["sharp"]).statistic, abs=1e-12)
    assert lo < est < hi
    assert st.spearman_over_seeds(df, "log_bs", "sharp", n_resamples=500, seed=1) == (
        st.spearman_over_seeds(df, "log_bs", "sharp", n_resamples=500, seed=1)
    )


@pytest.mark.parametrize("ragged", [False, True])
def test_spearman_fast_path_matches_general_path(ragged):
    df = _seed_frame(n_seeds=6, rows=20, ragged=ragged).sample(frac=1.0, random_state=0)
    rho = lambda f: sps.spearmanr(f["log_bs"], f["sharp"]).statistic
    fast = st.spearman_over_seeds(df, "log_bs", "sharp", n_resamples=300, seed=9)
    slow = st.seed_bootstrap_statistic(df, "seed", rho, n_resamples=300, seed=9)
    np.testing.assert_allclose(fast, slow, atol=1e-10)


def test_spearman_drops_nan_rows():
    df = _seed_frame(n_seeds=4, rows=10)
    with_nan = pd.concat([df, pd.DataFrame({"seed": [0, 1], "log_bs": [np.nan, 4.0]})])
    a = st.spearman_over_seeds(with_nan, "log_bs", "sharp", n_resamples=200)
    b = st.spearman_over_seeds(df, "log_bs", "sharp", n_resamples=200)
    np.testing.assert_allclose(a, b)


def test_verdict_row_keys_and_values():
    row = st.verdict_row(
        "H1", "rho > 0", "spearman", 0.4, 0.2, 0.6, 10, "greater", "Bigger batches, sharper."
    )
    assert list(row) == st.VERDICT_COLUMNS
    assert row["verdict"] == "supported" and row["n_resamples"] == 10_000
    assert row["resample_seed"] == 0 and row["seeds_needed"] is None
    frame = pd.DataFrame([row], columns=st.VERDICT_COLUMNS)
    assert frame.shape == (1, len(st.VERDICT_COLUMNS))


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


def test_exact_verdict_row_has_no_seeds_and_a_point_interval():
    from toolkit.stats import exact_verdict_row

    up = exact_verdict_row("C07", "h", "s", 0.7, "greater", "f")
    assert (up["estimate"], up["ci_low"], up["ci_high"]) == (0.7, 0.7, 0.7)
    assert up["n_seeds"] == 0 and up["n_resamples"] == 0 and up["verdict"] == "supported"
    assert exact_verdict_row("C07", "h", "s", -0.1, "greater", "f")["verdict"] == "contradicted"
    assert exact_verdict_row("C07", "h", "s", 0.05, "greater", "f", 0.1)["verdict"] != "supported"
