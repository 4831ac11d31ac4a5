"""The command line: parse, call the library, print. Usage errors exit with code 2."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

import click

USAGE_ERROR = 2


def _fail(message: str) -> None:
    click.echo(f"error: {message}", err=True)
    sys.exit(USAGE_ERROR)


def _load(name: str):
    from toolkit import spec

    try:
        return spec.load(name)
    except spec.SpecError as err:
        _fail(str(err))


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """toolkit: experiments on how neural networks learn, with verdicts and CIs."""


@main.command("list")
def list_experiments() -> None:
    """Experiments and the claims they test."""
    from toolkit import spec

    for name in spec.experiment_names():
        experiment = spec.load(name)
        click.echo(f"{name:24s} {','.join(experiment.claims):22s} {experiment.summary_line}")


@main.command()
@click.argument("name")
@click.option("--profile", default="default", show_default=True)
def show(name: str, profile: str) -> None:
    """An experiment's claims, hypothesis, grid, profiles and cost."""
    from toolkit import runner, spec

    experiment = _load(name)
    try:
        settings = experiment.profile(profile)
        seeds = int(settings.get("seeds", 10))
        plan = runner.plan_runs(experiment, profile, seeds, {})
    except spec.SpecError as err:
        _fail(str(err))
    click.echo(experiment.doc)
    click.echo(f"\nclaims: {', '.join(experiment.claims)}")
    click.echo(f"profiles: {', '.join(experiment.module.PROFILES)}")
    click.echo(f"\nprofile {profile}: {seeds} seeds")
    for factor in experiment.factors(profile):
        values = sorted({str(p[factor]) for p in experiment.grid_points(profile, {})}, key=str)
        click.echo(f"  {factor}: {', '.join(values)}")
    c = runner.cost(plan)
    click.echo(
        f"cost: {c['runs']} runs in {c['cohorts']} cohorts, {c['steps']:,} optimizer steps, "
        f"{c['epochs']:,} run-epochs"
    )


@main.command()
@click.argument("name")
@click.option("--seeds", type=str, default=None, help="Seeds per grid point (profile default).")
@click.option("--profile", default="default", show_default=True, help="quick, default or paper.")
@click.option("--set", "sets", multiple=True, metavar="KEY=VALUE", help="Override a config field.")
@click.option("--out", default="results", show_default=True, type=click.Path(path_type=Path))
@click.option("--force", is_flag=True, help="Recompute runs already in the results folder.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
def run(name, seeds, profile, sets, out, force, quiet) -> None:
    """Train every run of an experiment that is not done yet, then print its verdicts."""
    from toolkit import results, runner, spec

    experiment = _load(name)
    if seeds is not None:
        try:
            seeds = int(seeds)
        except ValueError:
            _fail(f"--seeds must be a positive integer, got {seeds!r}")
        if seeds < 1:
            _fail(f"--seeds must be a positive integer, got {seeds}")
    try:
        experiment.profile(profile)
        overrides = spec.parse_overrides(experiment, sets)
        report = runner.run_experiment(
            experiment,
            profile=profile,
            seeds=seeds,
            overrides=overrides,
            out=out,
            force=force,
            progress=not quiet,
            command=_command_line(name, seeds, profile, sets, out, force),
        )
    except (spec.SpecError, results.ResultsError) as err:
        _fail(str(err))
    click.echo(
        f"{report.new_runs} runs trained, {report.skipped_runs} already present → {report.folder.path}"
    )
    click.echo(_verdict_table(report.verdicts))


@main.command()
@click.argument("name", required=False)
@click.option("--profile", default="default", show_default=True)
@click.option("--out", default="results", show_default=True, type=click.Path(path_type=Path))
def figures(name, profile, out) -> None:
    """Redraw paper_figures/ from the results CSVs only (no training)."""
    from toolkit import results, runner, spec

    names = [name] if name else spec.experiment_names()
    drawn = 0
    for experiment_name in names:
        experiment = _load(experiment_name)
        folder = results.ResultsFolder(out / experiment_name / profile)
        if not folder.exists():
            if name:
                _fail(
                    f"no results in {folder.path}; run `toolkit run {experiment_name} "
                    f"--profile {profile}` first"
                )
            continue
        paths = runner.draw_figures(experiment, folder)
        drawn += len(paths)
        click.echo(f"{experiment_name}: {len(paths)} figures → {runner.figures_dir(folder)}")
    if not drawn and not name:
        _fail(f"no results for profile {profile!r} under {out}")


def _command_line(name, seeds, profile, sets, out, force) -> str:
    """The run command as a user would type it, for the results' provenance."""
    words = ["toolkit", "run", name, "--profile", profile]
    words += ["--seeds", str(seeds)] if seeds is not None else []
    for pair in sets:
        words += ["--set", pair]
    words += ["--out", str(out)] + (["--force"] if force else [])
    return shlex.join(words)


def _verdict_table(verdicts) -> str:
    if verdicts.empty:
        return "(no verdicts)"
    lines = []
    for row in verdicts.itertuples():
        condition = (
            f" [{row.condition}]" if isinstance(row.condition, str) and row.condition else ""
        )
        lines.append(
            f"{row.claim_id}{condition:24s} {row.verdict:13s} {row.statistic} = {row.estimate:.4g} "
            f"[{row.ci_low:.4g}, {row.ci_high:.4g}] (n={row.n_seeds})\n    {row.finding}"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
