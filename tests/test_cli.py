"""The command line through click's CliRunner: commands and every error path."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from toolkit.cli import main


@pytest.fixture
def cli():
    return CliRunner()


def test_list_and_show(cli):
    listed = cli.invoke(main, ["list"])
    assert listed.exit_code == 0 and "exp_overfitting" in listed.output and "C10" in listed.output
    shown = cli.invoke(main, ["show", "exp_overfitting"])
    assert shown.exit_code == 0
    assert "label_noise: 0.0, 0.2, 1.0" in shown.output
    assert "30 runs in 2 cohorts, 96,000 optimizer steps" in shown.output
    assert "primary C02" in shown.output and "why:" in shown.output


def test_run_quick_then_figures(cli, tmp_path):
    out = tmp_path / "results"
    ran = cli.invoke(
        main, ["run", "exp_overfitting", "--profile", "quick", "--out", str(out), "--quiet"]
    )
    assert ran.exit_code == 0, ran.output
    assert "4 runs trained" in ran.output and "C10" in ran.output
    folder = out / "exp_overfitting" / "quick"
    assert {"summary.csv", "history.csv", "verdicts.csv", "meta.json"} <= {
        p.name for p in folder.iterdir()
    }
    assert json.loads((folder / "meta.json").read_text())["invocations"][0]["command"].startswith(
        "toolkit run exp_overfitting"
    )
    figures_dir = tmp_path / "paper_figures" / "exp_overfitting" / "quick"
    for png in figures_dir.glob("*.png"):
        png.unlink()
    drawn = cli.invoke(
        main, ["figures", "exp_overfitting", "--profile", "quick", "--out", str(out)]
    )
    assert drawn.exit_code == 0, drawn.output
    assert (figures_dir / "curves.png").stat().st_size > 10_000
    again = cli.invoke(
        main, ["run", "exp_overfitting", "--profile", "quick", "--out", str(out), "--quiet"]
    )
    assert "0 runs trained, 4 already present" in again.output


@pytest.mark.parametrize(
    "args, message",
    [
        (["run", "exp_nope"], "unknown experiment 'exp_nope'; available: exp_fundamentals, "),
        (["run", "exp_overfitting", "--seeds", "0"], "--seeds must be a positive integer"),
        (["run", "exp_overfitting", "--seeds", "ten"], "--seeds must be a positive integer"),
        (["run", "exp_overfitting", "--set", "nope=1"], "unknown --set key 'nope'"),
        (["run", "exp_overfitting", "--set", "epochs=many"], "expected int"),
        (["run", "exp_overfitting", "--set", "epochs"], "--set expects key=value"),
        (["run", "exp_overfitting", "--profile", "huge"], "has no profile 'huge'"),
        (["run", "exp_sharp_flat", "--set", "learning_rate=0.1"], "derives it; set base_lr"),
        (["show", "exp_nope"], "unknown experiment"),
        (["figures", "exp_overfitting", "--out", "/nonexistent/x"], "no results in"),
    ],
)
def test_usage_errors_exit_2_with_one_line(cli, args, message):
    result = cli.invoke(main, args)
    assert result.exit_code == 2
    assert message in result.output
    assert result.output.count("\n") == 1 and result.output.startswith("error: ")


def test_unwritable_and_incompatible_results_folders(cli, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    result = cli.invoke(
        main, ["run", "exp_overfitting", "--profile", "quick", "--out", str(blocker)]
    )
    assert result.exit_code == 2 and "not writable" in result.output
    old = tmp_path / "old" / "exp_overfitting" / "quick"
    old.mkdir(parents=True)
    (old / "meta.json").write_text('{"schema_version": 0}')
    (old / "summary.csv").write_text("run_id\nabc\n")
    result = cli.invoke(
        main, ["run", "exp_overfitting", "--profile", "quick", "--out", str(tmp_path / "old")]
    )
    assert result.exit_code == 2 and "schema" in result.output
    assert (old / "summary.csv").read_text() == "run_id\nabc\n"  # nothing lost


# ----- compare ----------------------------------------------------------------------------
def _overfitting_results(name: str):
    """A frozen CPU / H200 twin of one command (see tests/test_compare.py)."""
    from pathlib import Path

    twin = {"default": "cpu", "default-h200": "h200"}[name]
    return Path(__file__).resolve().parent / "data" / "hardware_twin" / twin


def test_compare_exit_codes_and_csv(cli, tmp_path):
    import shutil

    import pandas as pd

    cpu, gpu = _overfitting_results("default"), _overfitting_results("default-h200")
    table = tmp_path / "table.csv"
    same = cli.invoke(main, ["compare", str(cpu), str(cpu), "--csv", str(table), "--strict"])
    assert same.exit_code == 0 and "result: equivalent (exit 0)" in same.output, same.output
    assert (pd.read_csv(table)["verdict"] == "equivalent").all()
    near = cli.invoke(main, ["compare", str(cpu), str(gpu)])
    assert near.exit_code == 0 and "0 different" in near.output
    assert cli.invoke(main, ["compare", str(cpu), str(gpu), "--strict"]).exit_code == 1
    tols = ["--tol", "best_*=50%", "--tol", "*_val_acc=0.02"]
    loose = cli.invoke(main, ["compare", str(cpu), str(gpu), *tols, "--strict"])
    assert loose.exit_code == 0, loose.output
    perturbed = tmp_path / "perturbed"
    shutil.copytree(gpu, perturbed)
    frame = pd.read_csv(perturbed / "summary.csv")
    frame["final_test_loss"] *= 1.2
    frame.to_csv(perturbed / "summary.csv", index=False)
    differs = cli.invoke(main, ["compare", str(cpu), str(perturbed)])
    assert differs.exit_code == 1 and "final_test_loss" in differs.output
    assert "B differs from A beyond tolerance in 3 rows" in differs.output


@pytest.mark.parametrize(
    "case, message",
    [
        ("missing", "nope: no such file or folder"),
        ("empty", "empty.csv: empty file"),
        ("experiment", "results of exp_sharp_flat, but"),
        ("schema", "results schema 2, but"),
        ("column", "no column 'label_noise'"),
        ("tol", "--tol expects METRIC=VALUE"),
        ("csv", "cannot write the table"),
    ],
)
def test_compare_bad_input_exit_2_with_one_line(cli, tmp_path, case, message):
    import pandas as pd

    cpu = _overfitting_results("default")
    summary = pd.read_csv(cpu / "summary.csv")
    other, extra = tmp_path / "nope", []
    if case == "empty":
        other = tmp_path / "empty.csv"
        other.write_text("")
    elif case in ("experiment", "schema", "column"):
        other = tmp_path / case
        other.mkdir()
        if case == "experiment":
            summary["experiment"] = "exp_sharp_flat"
        if case == "column":
            summary = summary.drop(columns="label_noise")
        summary.to_csv(other / "summary.csv", index=False)
        if case == "schema":
            (other / "meta.json").write_text('{"schema_version": 2}')
    elif case in ("tol", "csv"):
        other = cpu
        extra = ["--tol", "final_test_acc"] if case == "tol" else ["--csv", str(tmp_path / "x/y")]
    result = cli.invoke(main, ["compare", str(cpu), str(other), *extra])
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert result.output.count("\n") == 1 and result.output.startswith("error: ")
