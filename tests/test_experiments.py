"""Smoke tests: every experiment's quick profile runs end to end and its outputs hold up."""

from __future__ import annotations

import numpy as np
import pytest

from toolkit import runner, spec
from toolkit.engine import METRICS

EXPERIMENTS = spec.experiment_names()


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_quick_profile(name, tmp_path):
    experiment = spec.load(name)
    report = runner.run_experiment(
        experiment, profile="quick", out=tmp_path / "results", progress=False
    )
    summary = report.folder.summary()
    planned = runner.plan_runs(experiment, "quick", experiment.profile("quick")["seeds"], {})
    assert len(summary) == len(planned) and summary["run_id"].is_unique
    expected = {
        "run_id",
        "seed",
        "steps",
        "diverged",
        "best_val_epoch",
        *experiment.factors("quick"),
    }
    expected |= {f"{stage}_{m}" for stage in ("init", "final", "best") for m in METRICS}
    assert expected <= set(summary.columns)
    healthy = summary[~summary["diverged"].astype(bool)]
    numeric = healthy.select_dtypes("number")
    assert np.isfinite(numeric.to_numpy()).all(), numeric.columns[~np.isfinite(numeric).all()]
    history = report.folder.history()
    assert set(history["run_id"]) == set(summary["run_id"])
    verdicts = report.verdicts
    assert len(verdicts) > 0
    assert set(verdicts["claim_id"]) <= set(experiment.claims)
    assert set(verdicts["verdict"]) <= {"supported", "contradicted", "inconclusive"}
    # one compiled program per cohort: as many cohorts as distinct shapes in the plan
    assert len(report.folder.meta()["cohorts"]) == len(runner.group_cohorts(planned))
    assert report.figures and all(path.stat().st_size > 5_000 for path in report.figures)
