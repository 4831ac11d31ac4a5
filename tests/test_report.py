"""The claims report: every claim once, verdicts from results only, same bytes each time."""

from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd
import pytest
from click.testing import CliRunner

from toolkit import report
from toolkit.cli import main

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def one_experiment(tmp_path):
    """results/ and paper_figures/ holding only exp_overfitting (and its H200 twin)."""
    for sub in ("default", "default-h200"):
        shutil.copytree(
            ROOT / "results/exp_overfitting" / sub, tmp_path / "results/exp_overfitting" / sub
        )
    shutil.copytree(
        ROOT / "paper_figures/exp_overfitting/default",
        tmp_path / "paper_figures/exp_overfitting/default",
    )
    return tmp_path / "results"


def claim_rows(markdown: str) -> dict[str, list[str]]:
    rows = {}
    for line in markdown.splitlines():
        cells = [c.strip() for c in line.strip("|").split(" | ")]
        if line.startswith("| C") and len(cells) == len(report.CLAIM_HEADER):
            rows[cells[0]] = cells
    return rows


def test_every_claim_once_with_not_run_and_not_testable(one_experiment):
    md_path, html_path = report.write(one_experiment)
    text = md_path.read_text()
    rows = claim_rows(text)
    assert list(rows) == [f"C{i:02d}" for i in range(1, 22)]
    verdicts = pd.read_csv(one_experiment / "exp_overfitting/default/verdicts.csv")
    primaries = verdicts[verdicts["role"] == "primary"]
    for row in primaries.itertuples():
        cells = rows[row.claim_id]
        assert "exp_overfitting" in cells[2] and row.statistic in cells[2]
        assert cells[5].split(":")[0].split(" (")[0] in {
            "supported",
            "contradicted",
            "inconclusive",
        }
        assert "mixed" not in cells[5]
    assert rows["C04"][5] == "not run" and rows["C18"][5] == "not run"
    assert rows["C21"][5] == "not-testable"
    assert "default vs default-h200 (NVIDIA H200)" in text
    page = html_path.read_text()
    assert page.count("<img ") == len(
        list((one_experiment.parent / "paper_figures").rglob("*.png"))
    )
    assert "../paper_figures/exp_overfitting/default/curves.png" in page


def test_same_results_same_bytes(one_experiment, tmp_path):
    first = [p.read_bytes() for p in report.write(one_experiment)]
    second = [p.read_bytes() for p in report.write(one_experiment)]
    assert first == second


def test_committed_report_is_reproduced():
    """``toolkit report`` on a fresh clone rewrites the committed REPORT.md byte for byte."""
    committed = (ROOT / "results/REPORT.md").read_text()
    assert report.build(ROOT / "results").markdown() == committed


def test_report_cli_errors(tmp_path):
    result = CliRunner().invoke(main, ["report", "--out", str(tmp_path / "nowhere")])
    assert result.exit_code == 2 and "no results folder" in result.output


def test_readme_claims_table_is_current():
    """The README's claims table is the one ``toolkit report`` writes from the results."""
    readme = (ROOT / "README.md").read_text()
    assert report.README_START in readme
    assert report.readme_with_claims(readme, ROOT / "results", "default", ROOT) == readme


def test_readme_block_replaced_between_markers(one_experiment):
    text = f"intro\n{report.README_START}\nold table\n{report.README_END}\noutro\n"
    new = report.readme_with_claims(text, one_experiment, "default", one_experiment.parent)
    assert new.startswith("intro\n") and new.endswith(f"{report.README_END}\noutro\n")
    assert "old table" not in new and "| C01 |" in new and "| C21 |" in new


def scale_rows(markdown: str) -> dict[str, list[str]]:
    section = markdown.split("## At paper scale", 1)[1].split("\n## ", 1)[0]
    return {
        cells[0]: cells
        for line in section.splitlines()
        if line.startswith("| C")
        for cells in [[c.strip() for c in line.strip("|").split(" | ")]]
    }


def test_paper_profile_shown_beside_default(one_experiment):
    """Claims whose experiment has a ``paper`` folder show its primary beside the
    default one; the others say it has not been run."""
    before = scale_rows(report.build(one_experiment).markdown())
    assert before and all(cells[-2:] == ["not run yet", "—"] for cells in before.values())
    shutil.copytree(
        one_experiment / "exp_overfitting/default", one_experiment / "exp_overfitting/paper"
    )
    after = scale_rows(report.build(one_experiment).markdown())
    assert set(after) == set(before)
    for cells in after.values():
        assert cells[-1] == cells[3]  # the same numbers under both names: the same verdict
        assert cells[-2].startswith(cells[2]) and cells[-2].endswith(", cpu")
