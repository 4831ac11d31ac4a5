"""Writes that cannot be half-done, one writer per folder, a failing measurement that
keeps its cohort, a re-analysis that changes no tracked file, and a run's numbers as a
function of its id alone (issue 15, items 5-8).

A kill is simulated by an exception (BaseException, like KeyboardInterrupt) raised by
the results folder's one file writer at a chosen write: after a cohort's saved
parameters, its per-run table, its history, its summary, or halfway through the
meta.json rewrite that commits it (leaving a temporary file behind, as a real kill
would). Analysis and figures are stubbed out where they are not the subject.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import pandas as pd
import pytest
from conftest import variant

from toolkit import engine, results, runner, spec

ROOT = Path(__file__).resolve().parent.parent
GRID = {"label_noise": [0.0, 1.0], "batch_size": [200, 400]}  # two cohorts of 4 runs
FILES = ("summary.csv", "history.csv", "points.csv")


class Killed(BaseException):
    """Stands for the process dying at this point."""


@pytest.fixture(scope="module", autouse=True)
def compilation_cache(tmp_path_factory):
    """Every resume compiles its cohort again: here from JAX's persistent compilation
    cache (the same executables, about 5x faster on a CPU); the settings are restored."""
    from jax.experimental.compilation_cache import compilation_cache as cache

    names = (
        "jax_compilation_cache_dir",
        "jax_persistent_cache_min_compile_time_secs",
        "jax_persistent_cache_min_entry_size_bytes",
    )
    saved = {name: getattr(jax.config, name) for name in names}
    jax.config.update(names[0], str(tmp_path_factory.mktemp("jax-cache")))
    jax.config.update(names[1], 0)
    jax.config.update(names[2], 0)
    cache.reset_cache()
    yield
    for name, value in saved.items():
        jax.config.update(name, value)
    cache.reset_cache()


def _measure(trained) -> dict:
    """A per-run column (with a random probe from the run's own key) and a table."""
    params = trained.result.state["params"]

    def per_run(p, key):
        leaves = jax.tree_util.tree_leaves(p)
        return {
            "weight_sq": sum(jnp.sum(leaf**2) for leaf in leaves),
            "probe": jax.random.normal(key),
        }

    values = trained.map(per_run, (params, trained.run_keys(5)))
    table = [
        trained.row(r, point=i, value=float(values["weight_sq"][r]) * i)
        for r in range(len(trained.runs))
        for i in range(2)
    ]
    return {**values, "points": pd.DataFrame(table)}


def _experiment(patch: pytest.MonkeyPatch) -> spec.Experiment:
    """A tiny exp_overfitting with a measurement, a per-run table and saved parameters
    (analysis and figures stubbed out)."""
    patch.setattr(runner, "analyze", lambda experiment, folder: pd.DataFrame())
    patch.setattr(runner, "draw_figures", lambda experiment, folder: [])
    experiment = variant(grid=GRID)
    experiment.module.measure = _measure
    experiment.module.SAVE_PARAMS = True
    return experiment


@pytest.fixture
def experiment(monkeypatch):
    return _experiment(monkeypatch)


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> results.ResultsFolder:
    """The folder an uninterrupted run writes (shared: it is only read)."""
    with pytest.MonkeyPatch.context() as patch:
        return run(_experiment(patch), tmp_path_factory.mktemp("full")).folder


def run(experiment, out, **kwargs):
    return runner.run_experiment(experiment, profile="quick", out=out, progress=False, **kwargs)


def _snapshot(folder: Path) -> dict[str, bytes]:
    names = [*FILES, *(f"params/{p.name}" for p in sorted((folder / "params").glob("*.npz")))]
    return {name: (folder / name).read_bytes() for name in names if (folder / name).exists()}


def _kill_at(monkeypatch, target: str) -> None:
    """Raise Killed at the first write of ``target`` ("params", a table name or "meta")
    once the manifest lists some runs, i.e. in the second cohort of a fresh folder or
    the first cohort trained by a resume."""
    original = results.atomic_write_bytes

    def matches(path: Path) -> bool:
        if target == "params":
            return path.parent.name == "params"
        return path.name.startswith(f"{target}.")

    def write(path, payload: bytes) -> None:
        path = Path(path)
        meta_path = path.parent / "meta.json"
        if path.parent.name == "params":
            meta_path = path.parent.parent / "meta.json"
        live = (
            matches(path)
            and meta_path.exists()
            and json.loads(meta_path.read_text()).get(results.MANIFEST)
        )
        if live and target == "meta":  # killed mid-write: the rename never happens
            path.with_name(f".{path.name}.{os.getpid()}.tmp").write_bytes(payload[:100])
            raise Killed(target)
        original(path, payload)
        if live:
            raise Killed(target)

    monkeypatch.setattr(results, "atomic_write_bytes", write)


def test_kill_at_every_write_point_then_resume_equals_uninterrupted(
    tmp_path, experiment, monkeypatch, uninterrupted
):
    expected = _snapshot(uninterrupted.path)
    assert len(expected) == 3 + 8  # three tables and eight runs' parameters
    first_cohort = None
    folder = results.ResultsFolder(tmp_path / "killed" / experiment.name / "quick")

    # One kill per write point, each in the resume of the one before; the last resume
    # runs to the end. Every kill leaves the first cohort done and the second not.
    for point in ("params", "points", "history", "summary", "meta"):
        with monkeypatch.context() as patch:
            _kill_at(patch, point)
            with pytest.raises(Killed):
                run(experiment, tmp_path / "killed")
        done = folder.done_run_ids()
        assert len(done) == 4, point
        first_cohort = first_cohort or done
        assert done == first_cohort, point  # always the same, first, cohort
        summary = pd.read_csv(folder.path / "summary.csv")
        assert set(summary["run_id"]) >= done  # partial rows of the killed cohort may remain
        # What the next run does first (checked here, point by point): remove the
        # killed writer's temporary file, drop rows of runs that are not done.
        stale = folder.remove_stale_temp_files()
        assert [p.name.split(".")[1] for p in stale] == (["meta"] if point == "meta" else [])
        folder.recover()
        for name in FILES:
            kept = pd.read_csv(folder.path / name)
            assert set(kept["run_id"]) == done, (point, name)
        assert {p.stem for p in (folder.path / "params").glob("*.npz")} == done, point

    resumed = run(experiment, tmp_path / "killed")
    assert resumed.new_runs == 4 and resumed.skipped_runs == 4
    assert _snapshot(folder.path) == expected
    assert not list(folder.path.rglob("*.tmp"))
    meta = folder.meta()
    assert len(meta["cohorts"]) == 2  # one entry per cohort, none for the killed attempts
    assert meta[results.MANIFEST] == uninterrupted.meta()[results.MANIFEST]


def test_a_failing_measurement_keeps_its_trained_cohort(
    tmp_path, experiment, monkeypatch, uninterrupted
):
    calls = {"measure": 0, "train": 0}

    def flaky(trained):
        calls["measure"] += 1
        if calls["measure"] == 2:
            raise RuntimeError("a bug in measure")
        return _measure(trained)

    monkeypatch.setattr(experiment.module, "measure", flaky)
    with pytest.raises(RuntimeError, match="a bug in measure"):
        run(experiment, tmp_path / "flaky")
    folder = results.ResultsFolder(tmp_path / "flaky" / experiment.name / "quick")
    assert len(folder.done_run_ids()) == 4  # the first cohort is committed
    assert len(list((folder.path / ".pending").glob("*.npz"))) == 1  # the second is kept

    original = engine.Cohort.train

    def counted(self, keys, hparams):
        calls["train"] += 1
        yield from original(self, keys, hparams)

    monkeypatch.setattr(engine.Cohort, "train", counted)
    resumed = run(experiment, tmp_path / "flaky")
    assert calls["train"] == 0 and resumed.new_runs == 4  # measured again, not retrained
    assert _snapshot(folder.path) == _snapshot(uninterrupted.path)
    assert not list((folder.path / ".pending").glob("*.npz"))


def test_two_writers_on_one_folder_train_each_cohort_once(tmp_path, make_variant, monkeypatch):
    """The second waits (saying so once) and finds the runs done; the first removed the
    temporary files a killed writer had left."""
    monkeypatch.setattr(runner, "analyze", lambda experiment, folder: pd.DataFrame())
    monkeypatch.setattr(runner, "draw_figures", lambda experiment, folder: [])
    experiment = make_variant(grid={"label_noise": [0.0, 1.0]})  # one cohort
    folder = results.ResultsFolder(tmp_path / experiment.name / "quick")
    (folder.path / "params").mkdir(parents=True)
    stale = [
        folder.path / ".summary.csv.99999.tmp",
        folder.path / "params" / ".abc.npz.99999.tmp",
    ]
    for path in stale:
        path.write_bytes(b"half a file")
    reports, messages = {}, []

    def writer(name):
        reports[name] = runner.run_experiment(
            experiment, profile="quick", out=tmp_path, progress=False
        )

    original = results.ResultsFolder.writing

    def writing(self, wait=True, announce=None):
        return original(self, wait=wait, announce=messages.append)

    monkeypatch.setattr(results.ResultsFolder, "writing", writing)
    first = threading.Thread(target=writer, args=("first",))
    first.start()
    deadline = time.monotonic() + 120
    while not (folder.path / results.WRITER_INFO).exists() and time.monotonic() < deadline:
        time.sleep(0.01)
    second = threading.Thread(target=writer, args=("second",))
    second.start()
    first.join(timeout=300)
    second.join(timeout=300)
    assert reports["first"].new_runs == 4 and reports["second"].new_runs == 0
    assert len(messages) == 1 and f"pid {os.getpid()}" in messages[0], messages
    assert len(folder.meta()["cohorts"]) == 1
    assert not any(path.exists() for path in stale)


def test_no_wait_fails_at_once_with_exit_2_while_another_writes(tmp_path):
    folder = results.ResultsFolder(tmp_path / "exp_overfitting" / "quick+epochs=2")
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    args = ["run", "exp_overfitting", "--profile", "quick", "--set", "epochs=2", "--quiet"]
    with folder.writing():
        done = subprocess.run(
            [sys.executable, "-m", "toolkit", *args, "--out", str(tmp_path), "--no-wait"],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "is being written by pid" in lines[0], done.stderr
    assert not (folder.path / "summary.csv").exists()


def test_reanalysis_of_shipped_results_changes_no_tracked_file(tmp_path):
    """The README's main command on a fresh clone: every run present, nothing trained,
    meta.json and the result tables unchanged (figures go to the copy's own folder)."""
    shipped = ROOT / "results" / "exp_sharp_flat" / "default"
    copy = tmp_path / "results" / "exp_sharp_flat" / "default"
    # what a clone has: the tracked files (not this checkout's locks and invocation log)
    shutil.copytree(shipped, copy, ignore=shutil.ignore_patterns(".*", "invocations.log"))
    before = {p.name: p.read_bytes() for p in copy.iterdir() if p.name != "verdicts.csv"}
    report = runner.run_experiment(
        spec.load("exp_sharp_flat"), "default", seeds=10, out=tmp_path / "results", progress=False
    )
    shipped_runs = len(pd.read_csv(shipped / "summary.csv"))
    assert report.new_runs == 0 and report.skipped_runs == shipped_runs
    after = {p.name: p.read_bytes() for p in copy.iterdir() if p.name in before}
    assert after == before  # meta.json included: the invocation went to the log
    untracked = {p.name for p in copy.iterdir()} - set(before) - {"verdicts.csv"}
    assert untracked <= {".lock", results.WRITER_LOCK, results.INVOCATIONS_LOG}, untracked
    log = (copy / results.INVOCATIONS_LOG).read_text().splitlines()
    assert len(log) == 1 and json.loads(log[0])["new_runs"] == 0
    assert report.figures and all(str(tmp_path) in str(p) for p in report.figures)
    assert report.diverged_runs == int(pd.read_csv(copy / "summary.csv")["diverged"].sum())


# ----- run identity: a run's numbers are a function of its id ------------------------
def _rows(folder: Path, name: str, run_ids) -> pd.DataFrame:
    """The rows of ``run_ids`` in ``name``, as the text written (no parsing)."""
    frame = pd.read_csv(folder / name, dtype=str, keep_default_na=False)
    return frame[frame["run_id"].isin(set(run_ids))].reset_index(drop=True)


def test_a_runs_numbers_do_not_depend_on_the_runs_beside_it(tmp_path, experiment, uninterrupted):
    """Seeds 0-1, then seed 2 added by a resume == seeds 0-2 at once, byte for byte
    (cohorts of 4 + 2 vs 6 runs); one run alone == its row in the full grid. The
    measurement's random probe (TrainedCohort.run_keys) included."""
    grown = tmp_path / "grown" / experiment.name / "quick"
    shutil.copytree(uninterrupted.path, grown)  # seeds 0-1, from one command
    resumed = run(experiment, tmp_path / "grown", seeds=3)
    assert resumed.new_runs == 4 and resumed.skipped_runs == 8
    fresh = run(experiment, tmp_path / "fresh", seeds=3)
    assert _snapshot(grown) == _snapshot(fresh.folder.path)

    point = {"label_noise": 1.0, "batch_size": 400}
    alone = run(experiment, tmp_path / "alone", seeds=1, overrides=point)
    summary = alone.folder.summary()
    assert len(summary) == 1 and alone.folder.meta()["cohorts"][0]["runs"] == 1
    for name in FILES:
        mine = _rows(alone.folder.path, name, summary["run_id"])
        assert len(mine) and mine.equals(_rows(fresh.folder.path, name, summary["run_id"])), name


def test_measurement_keys_come_from_the_seed_alone():
    class Trained(runner.TrainedCohort):
        def __init__(self, seeds):
            self.runs = [runner.Run(None, seed, {}, f"r{seed}") for seed in seeds]

    data = jax.random.key_data
    a, b = Trained([0, 1, 2]).run_keys(7), Trained([2]).run_keys(7)
    assert (data(a[2]) == data(b[0])).all()  # the place in the cohort does not matter
    assert not (data(a[0]) == data(a[1])).all()
    assert not (data(Trained([2]).run_keys(8)[0]) == data(b[0])).all()  # the salt does


def test_a_large_table_is_written_gzipped_and_reads_back_the_same(tmp_path):
    """Tables over GZIP_BYTES of CSV text are stored as .csv.gz (the plain file removed),
    back as plain text when they shrink; summary and verdicts always stay plain."""
    folder = results.ResultsFolder(tmp_path)
    rows = results.GZIP_BYTES // 10 + 1  # over 10 bytes a row
    big = pd.DataFrame({"run_id": [f"r{i:06d}" for i in range(rows)], "x": range(rows)})
    assert len(results.frame_bytes(big)) > results.GZIP_BYTES
    folder.write_table("slices", big)
    folder.write_table("summary", big)
    assert (tmp_path / "slices.csv.gz").exists() and not (tmp_path / "slices.csv").exists()
    assert (tmp_path / "summary.csv").exists() and not (tmp_path / "summary.csv.gz").exists()
    pd.testing.assert_frame_equal(folder.table("slices"), big)
    folder.write_table("slices", big.head(10))
    assert (tmp_path / "slices.csv").exists() and not (tmp_path / "slices.csv.gz").exists()
    pd.testing.assert_frame_equal(folder.table("slices"), big.head(10))
