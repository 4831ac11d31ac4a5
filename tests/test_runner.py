"""Runner and results folder: determinism, isolation of runs, resume, atomic merges."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pandas as pd
import pytest

from toolkit import engine, results, runner, spec
from toolkit.spec import SpecError

ROOT = Path(__file__).resolve().parent.parent

GRID = {"label_noise": [0.0, 1.0]}


def run(experiment, out, **kwargs):
    return runner.run_experiment(experiment, profile="quick", out=out, progress=False, **kwargs)


def test_same_command_twice_gives_identical_summary(tmp_path, make_variant):
    experiment = make_variant(grid=GRID)
    first = run(experiment, tmp_path / "a")
    second = run(experiment, tmp_path / "b")
    summary_a = (first.folder.path / "summary.csv").read_bytes()
    assert summary_a == (second.folder.path / "summary.csv").read_bytes()
    assert (first.folder.path / "history.csv").read_bytes() == (
        second.folder.path / "history.csv"
    ).read_bytes()
    frame = first.folder.summary()
    assert len(frame) == 4 and frame["run_id"].is_unique
    assert not frame.isna().any().any()
    verdicts = first.folder.verdicts()
    assert set(verdicts["verdict"]) <= {"supported", "contradicted", "inconclusive"}
    meta = first.folder.meta()
    assert meta["schema_version"] == results.SCHEMA_VERSION
    assert meta["datasets"]["mnist1d"]["hash"]
    assert len(meta["cohorts"]) == 1  # both label conditions are one compiled cohort


def test_changing_one_grid_point_leaves_other_runs_unchanged(tmp_path, make_variant):
    a = run(make_variant(grid={"label_noise": [0.0, 1.0]}), tmp_path / "a").folder.summary()
    b = run(make_variant(grid={"label_noise": [0.0, 0.5]}), tmp_path / "b").folder.summary()
    shared_a = a[a["label_noise"] == 0.0].reset_index(drop=True)
    shared_b = b[b["label_noise"] == 0.0].reset_index(drop=True)
    pd.testing.assert_frame_equal(shared_a, shared_b, check_dtype=False)


def test_resume_after_interrupt_equals_uninterrupted(tmp_path, make_variant, monkeypatch):
    experiment = make_variant(grid={"label_noise": [0.0, 1.0], "batch_size": [200, 400]})
    full = run(experiment, tmp_path / "full")
    assert len(full.folder.meta()["cohorts"]) == 2

    original = engine.Cohort.train
    calls = {"n": 0}

    def interrupted(self, keys, hparams):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        yield from original(self, keys, hparams)

    monkeypatch.setattr(engine.Cohort, "train", interrupted)
    with pytest.raises(KeyboardInterrupt):
        run(experiment, tmp_path / "resumed")
    monkeypatch.setattr(engine.Cohort, "train", original)
    partial = results.ResultsFolder(tmp_path / "resumed" / experiment.name / "quick").summary()
    assert len(partial) == 4  # the first cohort survived the interrupt

    resumed = run(experiment, tmp_path / "resumed")
    assert resumed.new_runs == 4 and resumed.skipped_runs == 4
    for name in ("summary.csv", "history.csv"):
        assert (resumed.folder.path / name).read_bytes() == (full.folder.path / name).read_bytes()

    again = run(experiment, tmp_path / "resumed")
    assert again.new_runs == 0
    forced = run(experiment, tmp_path / "resumed", force=True)
    assert forced.new_runs == 8


def test_bad_inputs_raise_clear_errors(tmp_path, make_variant):
    experiment = make_variant(grid=GRID)
    with pytest.raises(SpecError, match="positive integer"):
        run(experiment, tmp_path, seeds=0)
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(results.ResultsError, match="not writable"):
        run(experiment, blocker / "sub")
    folder = tmp_path / "old" / experiment.name / "quick"
    folder.mkdir(parents=True)
    (folder / "meta.json").write_text(json.dumps({"schema_version": 0}))
    with pytest.raises(results.ResultsError, match="schema"):
        run(experiment, tmp_path / "old")


def test_merge_keeps_rows_from_both_writers(tmp_path):
    folder = results.ResultsFolder(tmp_path)
    folder.prepare("exp_x")
    row = {"run_id": "a", "seed": 0, "epoch": 0, "x": 1.0}
    folder.append_runs(pd.DataFrame([row]), pd.DataFrame([row]), order=["seed"])
    folder.append_runs(
        pd.DataFrame([{**row, "run_id": "b", "seed": 1}]),
        pd.DataFrame([{**row, "run_id": "b", "seed": 1}]),
        order=["seed"],
    )
    assert list(folder.summary()["run_id"]) == ["a", "b"]
    assert not list(tmp_path.glob(".*.tmp"))  # no temporary files left behind


def test_shipped_results_keep_their_run_ids():
    """Every run a committed profile plans has the id in its committed summary.csv (so
    they resume as complete): changes to run identity must keep these."""
    checked = 0
    for name in spec.experiment_names():
        experiment = spec.load(name)
        for folder in sorted((ROOT / "results" / name).glob("*/summary.csv")):
            profile = folder.parent.name
            if profile not in experiment.module.PROFILES:
                continue  # e.g. default-h200: a copy of a profile on other hardware
            shipped = pd.read_csv(folder, usecols=["run_id", "seed"])
            planned = runner.plan_runs(experiment, profile, int(shipped["seed"].max()) + 1, {})
            assert {r.run_id for r in planned} == set(shipped["run_id"]), folder
            checked += 1
    assert checked >= 10


def test_measurement_fields_do_not_change_the_run_id():
    experiment = spec.load("exp_representations")
    point = experiment.grid_points("default", {})[0]
    config = experiment.config("default", point, {})
    assert "probe_steps" in type(config).MEASURE_FIELDS
    same = dataclasses.replace(config, probe_steps=7, cka_examples=33, checkpoint_fractions=(0.3,))
    other = dataclasses.replace(config, learning_rate=0.01)
    assert runner.run_id(experiment.name, same, 0) == runner.run_id(experiment.name, config, 0)
    assert runner.run_id(experiment.name, other, 0) != runner.run_id(experiment.name, config, 0)
