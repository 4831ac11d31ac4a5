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
    assert "30 runs in 1 cohorts, 96,000 optimizer steps" in shown.output


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
        (["run", "exp_nope"], "unknown experiment 'exp_nope'; available: exp_overfitting, "),
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
