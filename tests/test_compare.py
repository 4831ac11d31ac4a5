"""Tests for toolkit.compare: statistics against scipy, alignment, verdicts and bad input."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps

from toolkit import compare as C

ROOT = Path(__file__).resolve().parents[1]
# The same command (exp_overfitting, default profile, 10 seeds, one protocol) on the 2-core
# CPU (jax 0.10.2) and on an H200 (jax 0.11.2), frozen here: results/ moves on with the
# experiment's protocol, this pair stays a genuine hardware twin.
TWIN = ROOT / "tests" / "data" / "hardware_twin"
CPU = TWIN / "cpu"
H200 = TWIN / "h200"


def _summary(points=(0.0, 1.0), seeds=range(5), shift=0.0, noise=0.02, rng_seed=0) -> pd.DataFrame:
    rng = np.random.default_rng(rng_seed)
    rows = []
    for noise_level in points:
        for seed in seeds:
            base = np.random.default_rng(seed).normal(0, noise)  # shared by seed: pairs correlate
            rows.append(
                {
                    "experiment": "exp_overfitting",
                    "run_id": f"r{noise_level}-{seed}",
                    "seed": seed,
                    "label_noise": noise_level,
                    "learning_rate": 0.001,
                    "epochs": 80,
                    "steps": 3200,
                    "diverged": False,
                    "final_test_acc": 0.6 - 0.5 * noise_level + base + shift,
                    "final_test_loss": 1.5 + base + rng.normal(0, 0.001),
                }
            )
    return pd.DataFrame(rows)


def _folder(path: Path, summary: pd.DataFrame, meta: dict | None = None, verdicts=None) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    summary.to_csv(path / "summary.csv", index=False)
    if meta is not False:
        meta = {"experiment": "exp_overfitting", "profile": "default", "schema_version": 1} | (
            meta or {}
        )
        (path / "meta.json").write_text(json.dumps(meta))
    if verdicts is not None:
        pd.DataFrame(verdicts).to_csv(path / "verdicts.csv", index=False)
    return path


# ----- statistics against scipy --------------------------------------------------------
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_paired_ci_and_tost_match_scipy(seed):
    rng = np.random.default_rng(seed)
    a = rng.normal(0.6, 0.02, size=8)
    b = a + rng.normal(0.003, 0.004, size=8)
    tol = 0.006
    row = C.compare_metric(a, b, tol, paired=True)
    ci = sps.ttest_rel(b, a).confidence_interval(0.95)
    assert row["pairing"] == "paired" and row["n_pairs"] == 8
    assert row["diff"] == pytest.approx(np.mean(b - a))
    assert (row["ci_low"], row["ci_high"]) == pytest.approx((ci.low, ci.high))
    # TOST: both one-sided tests reject at 0.05 <=> equivalent
    p_low = sps.ttest_1samp(b - a, -tol, alternative="greater").pvalue
    p_high = sps.ttest_1samp(b - a, tol, alternative="less").pvalue
    assert (row["verdict"] == "equivalent") == (max(p_low, p_high) < 0.05)
    tost = sps.ttest_rel(b, a).confidence_interval(0.90)
    assert (row["tost_low"], row["tost_high"]) == pytest.approx((tost.low, tost.high))


def test_welch_ci_matches_scipy_and_verdicts_cover_all_three():
    rng = np.random.default_rng(5)
    a, b = rng.normal(0.60, 0.01, size=12), rng.normal(0.60, 0.02, size=9)
    row = C.compare_metric(a, b, 0.03, paired=False)
    ci = sps.ttest_ind(b, a, equal_var=False).confidence_interval(0.95)
    assert row["pairing"] == "welch" and (row["n_a"], row["n_b"]) == (12, 9)
    assert (row["ci_low"], row["ci_high"]) == pytest.approx((ci.low, ci.high))
    assert row["verdict"] == "equivalent"
    assert C.compare_metric(a, b + 0.2, 0.03, paired=False)["verdict"] == "different"
    assert C.compare_metric(a, b, 0.001, paired=False)["verdict"] == "inconclusive"


def test_degenerate_inputs():
    one = C.compare_metric([0.5], [0.6], 0.01, paired=True)
    assert one["verdict"] == "inconclusive" and math.isnan(one["ci_low"])
    assert C.compare_metric([0.5], [0.6], 0.01, paired=False)["verdict"] == "inconclusive"
    same = C.compare_metric([0.5, 0.7, 0.2], [0.5, 0.7, 0.2], 0.0, paired=True)
    assert same["verdict"] == "equivalent" and same["note"] == "identical"
    assert C.compare_metric([0.5], [0.5], 0.01, paired=True)["verdict"] == "equivalent"
    shifted = C.compare_metric([0.5, 0.7, 0.2], [0.55, 0.75, 0.25], 0.01, paired=True)
    assert shifted["verdict"] == "different"
    assert shifted["ci_low"] == pytest.approx(0.05) and shifted["ci_high"] == pytest.approx(0.05)
    constant = C.compare_metric([1.0] * 4, [1.0] * 5, 0.01, paired=False)
    assert constant["verdict"] == "equivalent" and constant["ci_low"] == 0.0
    relative = C.compare_metric([2.0, 2.1], [2.0, 2.1], C.Tolerance(0.05, True), paired=True)
    assert relative["tol"] == pytest.approx(0.05 * 2.05)


def test_nonfinite_values_are_counted_and_tested():
    a = np.linspace(0.5, 0.6, 10)
    one_nan = a.copy()
    one_nan[3] = np.nan
    row = C.compare_metric(a, one_nan, 0.01, paired=True)
    assert (row["nonfinite_a"], row["nonfinite_b"], row["n_pairs"]) == (0, 1, 9)
    assert row["verdict"] == "inconclusive" and "Fisher" in row["note"]
    all_nan = C.compare_metric(a, np.full(10, np.inf), 0.01, paired=True)
    assert all_nan["verdict"] == "different" and all_nan["nonfinite_b"] == 10
    both = C.compare_metric(one_nan, one_nan, 0.01, paired=True)
    assert both["verdict"] == "equivalent" and both["n_pairs"] == 9


def test_tolerances():
    assert C.default_tolerance("final_test_acc") == C.Tolerance(0.01)
    assert C.default_tolerance("ensemble_loo_test_acc") == C.Tolerance(0.01)
    assert C.default_tolerance("final_test_loss") == C.Tolerance(0.05, True)
    assert C.default_tolerance("lambda_max").relative
    rules = C.parse_tolerances(["*_acc=0.02", "final_test_acc=0.005", "*test*=10%"])
    assert rules[2][1] == C.Tolerance(0.1, True) and str(rules[2][1]) == "10%"
    assert C.tolerance_for("final_test_acc", rules) == C.Tolerance(0.005)
    assert C.tolerance_for("best_test_acc", rules) == C.Tolerance(0.1, True)
    assert C.tolerance_for("final_val_acc", rules) == C.Tolerance(0.02)
    assert C.tolerance_for("final_val_loss", rules) == C.default_tolerance("final_val_loss")
    for bad in ["final_test_acc", "x=", "x=-1", "=0.1", "x=abc%"]:
        with pytest.raises(C.CompareError, match="--tol expects"):
            C.parse_tolerances([bad])


# ----- alignment ------------------------------------------------------------------------
def test_alignment_reports_one_sided_runs_and_pairs_by_seed(tmp_path):
    a = _folder(tmp_path / "a", _summary(points=(0.0, 1.0), seeds=range(5)))
    b_frame = _summary(points=(0.0, 1.0, 0.2), seeds=range(1, 6))
    b_frame["label_noise"] = b_frame["label_noise"].map(lambda v: f"{v:.1f}")  # "0.0" vs 0
    b = _folder(tmp_path / "b", b_frame)
    result = C.compare(a, b)
    assert result.factors == ["label_noise"] and result.paired_by_seed
    assert set(result.table["grid_point"]) == {"label_noise=0", "label_noise=1"}
    assert set(result.table["metric"]) == {"final_test_acc", "final_test_loss"}
    assert (result.table["n_pairs"] == 4).all() and (result.table["verdict"] == "equivalent").all()
    assert sorted(result.only_a["seed"]) == [0, 0]
    assert len(result.only_b) == 2 + 5  # seed 5 at two shared points, all of label_noise=0.2
    report = C.format_report(result)
    assert "only in A: 2 runs" in report and "only in B: 7 runs" in report
    assert result.exit_code() == 0 and result.exit_code(strict=True) == 1


def test_unpaired_when_no_seed_shared_and_inferred_factors_without_meta(tmp_path):
    a = _folder(tmp_path / "a", _summary(seeds=range(6)), meta=False)
    b = _folder(tmp_path / "b", _summary(seeds=range(10, 16), rng_seed=1), meta=False)
    result = C.compare(a / "summary.csv", b / "summary.csv")
    assert result.factors == ["label_noise"]  # varies; learning_rate and epochs do not
    assert not result.paired_by_seed and (result.table["pairing"] == "welch").all()
    assert result.only_a.empty and any("Welch" in note for note in result.notes)


def test_self_equivalent_and_perturbed_different(tmp_path):
    assert C.compare(CPU, CPU).exit_code(strict=True) == 0
    near = C.compare(CPU, H200)
    assert near.counts()["different"] == 0 and near.counts()["equivalent"] > 40
    perturbed = tmp_path / "perturbed"
    shutil.copytree(H200, perturbed)
    frame = pd.read_csv(perturbed / "summary.csv")
    frame["final_test_acc"] += 0.05
    frame.to_csv(perturbed / "summary.csv", index=False)
    result = C.compare(CPU, perturbed)
    different = result.table[result.table["verdict"] == "different"]
    assert set(different["metric"]) == {"final_test_acc"} and len(different) == 3
    assert result.exit_code() == 1


def test_changed_claim_verdicts(tmp_path):
    rows = [
        {"claim_id": "C1", "condition": "", "statistic": "s", "verdict": "supported"},
        {"claim_id": "C2", "condition": "x", "statistic": "s", "verdict": "supported"},
    ]
    changed = [dict(rows[0]), {**rows[1], "verdict": "inconclusive"}]
    a = _folder(tmp_path / "a", _summary(), verdicts=rows)
    b = _folder(tmp_path / "b", _summary(), verdicts=changed + [{**rows[0], "claim_id": "C3"}])
    claims = C.compare(a, b).claims.set_index("claim_id")["status"].to_dict()
    assert claims == {"C1": "same", "C2": "changed", "C3": "only B"}
    assert C.compare(a, b).exit_code(strict=True) == 1


# ----- software and hardware ------------------------------------------------------------------
def test_version_line_names_what_differs_between_the_twins():
    report = C.format_report(C.compare(CPU, H200)).splitlines()
    assert report[3] == (
        "versions differ: jax 0.10.2 → 0.11.2; jaxlib 0.10.2 → 0.11.2; flax 0.12.8 → 0.12.10; "
        "numpy 2.4.6 → 2.5.2; pandas 3.1.1 → 3.0.6; python 3.11.7 → 3.12.3; "
        "device cpu → NVIDIA H200"
    )
    assert C.compare(CPU, CPU).environment == (
        "versions: the same on both sides (jax 0.10.2, jaxlib 0.10.2, flax 0.12.8, "
        "optax 0.2.8, numpy 2.4.6, pandas 3.1.1, python 3.11.7); device cpu"
    )


def test_version_line_reads_every_cohort_and_says_when_only_the_device_differs(tmp_path):
    software = {"jax": "0.11.2", "flax": "0.12.10", "python": "3.12.3"}

    def meta(device, cohort_versions=None):
        trained_on = {"versions": cohort_versions or software, "device_kind": device}
        return {
            "versions": software,
            "device_kind": device,
            "cohorts": [{"trained_on": trained_on}],
        }

    cpu = _folder(tmp_path / "cpu", _summary(), meta=meta("cpu"))
    gpu = _folder(tmp_path / "gpu", _summary(), meta=meta("NVIDIA H200"))
    assert C.compare(cpu, gpu).environment == (
        "versions: the same on both sides (jax 0.11.2, flax 0.12.10, python 3.12.3); "
        "device cpu → NVIDIA H200"
    )
    # one cohort resumed under another jax: the folder holds both versions
    mixed = _folder(tmp_path / "mixed", _summary(), meta=meta("cpu", {**software, "jax": "0.10.2"}))
    assert C.compare(cpu, mixed).environment == (
        "versions differ: jax 0.11.2 → 0.11.2, 0.10.2; device cpu"
    )

    # two CPU hosts with other vector extensions: the same software, another device
    def on_host(model, features):
        host = {"model": model, "features": features}
        trained_on = {"versions": software, "device_kind": "cpu", "host_cpu": host}
        return {"versions": software, "device_kind": "cpu", "cohorts": [{"trained_on": trained_on}]}

    amd = _folder(tmp_path / "amd", _summary(), meta=on_host("AMD EPYC", ["avx2", "avx512f"]))
    old = _folder(tmp_path / "old", _summary(), meta=on_host("Intel Xeon", ["avx2"]))
    assert C.compare(old, amd).environment.endswith(
        "device cpu (Intel Xeon; avx2) → cpu (AMD EPYC; avx2+avx512f)"
    )
    bare = _folder(tmp_path / "bare", _summary())  # no versions recorded: no line
    assert C.compare(bare, bare).environment == ""
    assert "versions" not in C.format_report(C.compare(bare, bare))


# ----- bad input ---------------------------------------------------------------------------
def test_bad_input_errors_name_the_file(tmp_path):
    good = _folder(tmp_path / "good", _summary())
    cases = {}
    cases["missing"] = (tmp_path / "nope", "no such file or folder")
    (tmp_path / "emptydir").mkdir()
    cases["emptydir"] = (tmp_path / "emptydir", "no summary.csv")
    (tmp_path / "empty.csv").write_text("")
    cases["empty"] = (tmp_path / "empty.csv", "empty file")
    (tmp_path / "header.csv").write_text("experiment,seed,final_test_acc\n")
    cases["header"] = (tmp_path / "header.csv", "no rows")
    other = _folder(tmp_path / "other", _summary().assign(experiment="exp_sharp_flat"), meta=False)
    cases["experiment"] = (other, "results of exp_sharp_flat, but")
    liar = _folder(tmp_path / "liar", _summary(), meta={"experiment": "exp_sharp_flat"})
    cases["meta"] = (liar, "rows of exp_overfitting, but its meta.json says exp_sharp_flat")
    schema = _folder(tmp_path / "schema", _summary(), meta={"schema_version": 2})
    cases["schema"] = (schema, "results schema 2, but")
    nofactor = _folder(tmp_path / "nofactor", _summary().drop(columns="label_noise"))
    cases["factor"] = (nofactor, "no column 'label_noise'")
    twice = _folder(tmp_path / "twice", pd.concat([_summary(), _summary().iloc[:1]]))
    cases["duplicate"] = (twice, "several rows for label_noise=0, seed 0")
    nometric = _folder(tmp_path / "nometric", _summary().drop(columns=["final_test_acc"]))
    nometric_frame = pd.read_csv(nometric / "summary.csv").drop(columns="final_test_loss")
    nometric_frame.to_csv(nometric / "summary.csv", index=False)
    cases["nometric"] = (nometric, "no numeric metric column")
    far = _folder(tmp_path / "far", _summary(points=(0.5,)))
    cases["nopoint"] = (far, "no grid point in common")
    for name, (path, message) in cases.items():
        with pytest.raises(C.CompareError, match=message) as info:
            C.compare(good, path)
        text = str(info.value)
        assert "\n" not in text and str(path.name) in text, name
    with pytest.raises(C.CompareError, match="matches no metric"):
        C.compare(good, good, tolerances=["nope=0.1"])
    with pytest.raises(C.CompareError, match="results schema 3, this toolkit reads 1"):
        bad = _folder(tmp_path / "three", _summary(), meta={"schema_version": 3})
        C.compare(bad, bad)
