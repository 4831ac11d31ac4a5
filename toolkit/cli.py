"""The command line: parse, call the library, print. Usage errors exit with code 2.

``compare`` also exits 1 when two results differ beyond tolerance (a CI guard).
"""

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
@click.option(
    "--distributed",
    is_flag=True,
    help="Join JAX's multi-process runtime (automatic under SLURM / Open MPI).",
)
@click.option(
    "--coordinator", metavar="HOST:PORT", help="Process 0's address (with --distributed)."
)
@click.option("--num-processes", type=int, help="Processes in the job (with --coordinator).")
@click.option("--process-id", type=int, help="This process's index, 0 … N-1 (with --coordinator).")
@click.option(
    "--init-timeout", type=float, default=60, show_default=True, help="Seconds to wait for peers."
)
@click.option(
    "--memory-budget",
    metavar="SIZE",
    help="Device memory a cohort may use, e.g. 512MB or 8GB (default: the device's).",
)
@click.option(
    "--deterministic",
    is_flag=True,
    help="Deterministic GPU kernels (XLA --xla_gpu_deterministic_ops); recorded in meta.json.",
)
def run(
    name,
    seeds,
    profile,
    sets,
    out,
    force,
    quiet,
    distributed,
    coordinator,
    num_processes,
    process_id,
    init_timeout,
    memory_budget,
    deterministic,
) -> None:
    """Train every run of an experiment that is not done yet, then print its verdicts."""
    budget = _parse_size(memory_budget) if memory_budget else None
    from toolkit import distributed as processes

    try:  # both must happen before JAX starts its backends
        if deterministic:
            processes.deterministic_gpu_ops()
        processes.start(distributed, coordinator, num_processes, process_id, init_timeout)
    except processes.DistributedError as err:
        _fail(str(err))
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
            memory_budget=budget,
            deterministic=deterministic,
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


@main.command("compare")
@click.argument("a", type=click.Path(path_type=Path))
@click.argument("b", type=click.Path(path_type=Path))
@click.option(
    "--tol",
    "tolerances",
    multiple=True,
    metavar="METRIC=VALUE",
    help="Equivalence margin: absolute (final_test_acc=0.02) or relative (final_test_loss=10%); "
    "METRIC may be a pattern ('*_acc=0.02'). Repeatable.",
)
@click.option(
    "--factor",
    "factors",
    multiple=True,
    help="A column to align runs on (default: the experiment's grid factors). Repeatable.",
)
@click.option(
    "--csv", "csv_path", type=click.Path(path_type=Path), help="Write the full table here."
)
@click.option("--all", "show_all", is_flag=True, help="Print equivalent rows too.")
@click.option(
    "--strict",
    is_flag=True,
    help="Exit 1 also on inconclusive rows, runs on one side only and changed claim verdicts.",
)
def compare_results(a, b, tolerances, factors, csv_path, show_all, strict) -> None:
    """Are results B equivalent to results A? (two folders or two summary.csv files)

    Runs are aligned on the grid factors and seed; per metric and grid point it
    prints the means, B − A with a 95% CI (paired by seed, else Welch) and a TOST
    verdict: equivalent, inconclusive or different. Claims whose verdict changed
    are listed.

    \b
    Default tolerances: accuracies (*acc*) 0.01 absolute; every other metric
    (losses, measured quantities) 5% of the pooled |mean| of A and B.
    Exit code: 0 no metric differs beyond tolerance, 1 one does, 2 bad input.
    """
    from toolkit import compare as comparing

    try:
        comparison = comparing.compare(a, b, tolerances=tolerances, factors=factors or None)
        if csv_path is not None:
            comparing.write_table(comparison, csv_path)
    except comparing.CompareError as err:
        _fail(str(err))
    click.echo(comparing.format_report(comparison, show_all=show_all))
    sys.exit(comparison.exit_code(strict=strict))


SIZE_UNITS = {"": 1, "B": 1, "KB": 2**10, "MB": 2**20, "GB": 2**30, "TB": 2**40}


def _parse_size(text: str) -> int:
    """'512MB' → bytes (binary units; a bare number is bytes)."""
    number = text.strip().upper().replace("IB", "B")
    digits = number.rstrip("KMGTB")
    unit = number[len(digits) :]
    try:
        value = float(digits) * SIZE_UNITS[unit]
    except (ValueError, KeyError):
        _fail(f"--memory-budget must look like 512MB or 8GB, got {text!r}")
    if value < 1:
        _fail(f"--memory-budget must be positive, got {text!r}")
    return int(value)


@main.command()
@click.option("--profile", default="default", show_default=True)
@click.option("--out", default="results", show_default=True, type=click.Path(path_type=Path))
def report(profile, out) -> None:
    """Write REPORT.md and REPORT.html (every claim, one verdict table) from the CSVs.

    With the default profile it also refreshes the claims table in the README beside
    the results folder (between its marker comments)."""
    from toolkit import report as claims_report

    if not out.is_dir():
        _fail(f"no results folder {out}; run an experiment first, or pass --out")
    try:
        readme = out.resolve().parent / "README.md"
        paths = claims_report.write(out, profile, readme=readme)
    except (ValueError, OSError) as err:
        _fail(str(err))
    click.echo(" and ".join(str(p) for p in paths))


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
