"""The command line: parse, call the library, print.

One error boundary (:class:`Boundary`): an expected failure — a bad value, an
unknown name, a corrupt, foreign or missing results file, an unwritable output — is
one line on stderr naming the file or value and the fix, exit code 2. Anything
else is a bug: one line pointing to ``--debug`` (which shows the traceback), exit 1.
``compare`` also exits 1 when two results differ beyond tolerance (a CI guard).
"""

from __future__ import annotations

import math
import shlex
import sys
import traceback
from pathlib import Path

import click

USAGE_ERROR = 2
INTERNAL_ERROR = 1


def _fail(message: str) -> None:
    click.echo(f"error: {_one_line(message)}", err=True)
    sys.exit(USAGE_ERROR)


def _one_line(message: str) -> str:
    return " ".join(str(message).split())


def _expected_errors() -> tuple[type[BaseException], ...]:
    """The library's input errors (imported only when one has to be classified)."""
    from toolkit.compare import CompareError
    from toolkit.distributed import DistributedError
    from toolkit.schema import ResultsError
    from toolkit.spec import SpecError

    return (SpecError, ResultsError, CompareError, DistributedError, OSError)


def _describe(err: BaseException) -> str:
    if isinstance(err, OSError):
        what = err.strerror or str(err) or type(err).__name__
        if err.filename is None:
            return f"{what}; check the paths given and their permissions"
        return f"{err.filename}: {what}; check the path and its permissions"
    return str(err)


class Boundary(click.Group):
    """The click group that turns every exception into one line and an exit code."""

    def make_context(self, info_name, args, parent=None, **extra):
        try:
            return super().make_context(info_name, args, parent=parent, **extra)
        except click.exceptions.NoArgsIsHelpError:
            raise
        except click.UsageError as err:  # e.g. an unknown global option
            _usage(err)

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except click.exceptions.NoArgsIsHelpError:
            raise
        except click.UsageError as err:  # a missing argument, an unknown option or command
            _usage(err)
        except (click.exceptions.ClickException, click.exceptions.Exit, click.Abort):
            raise
        except Exception as err:  # noqa: BLE001 (the boundary: classified below)
            debug = bool(ctx.params.get("debug"))
            if debug:
                traceback.print_exc()
            if isinstance(err, _expected_errors()):
                _fail(_describe(err))
            message = _one_line(f"{type(err).__name__}: {err}")
            hint = "" if debug else " (rerun with --debug for the traceback)"
            click.echo(f"internal error: {message}{hint}", err=True)
            sys.exit(INTERNAL_ERROR)


def _usage(err: click.UsageError) -> None:
    command = err.ctx.command_path if err.ctx is not None else "toolkit"
    _fail(f"{err.format_message()} (see `{command} --help`)")


def _load(name: str):
    from toolkit import spec

    return spec.load(name)


@click.group(name="toolkit", cls=Boundary, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--debug", is_flag=True, help="Show the traceback of an error.")
def main(debug: bool) -> None:
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
    from toolkit import runner

    experiment = _load(name)
    settings = experiment.profile(profile)
    seeds = int(settings.get("seeds", 10))
    plan = runner.plan_runs(experiment, profile, seeds, {})
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
    click.echo("\ndeclared tests (the primary decides its claim):")
    order = {"primary": 0, "secondary": 1, "check": 2}
    for test in sorted(experiment.module.TESTS, key=lambda t: order[t.role]):
        bound = "within ±" if test.direction == "within" else f"{test.direction} than "
        where = f" ({test.condition})" if test.condition else ""
        click.echo(
            f"  {test.role} {test.claim} [{test.kind}] {test.statistic}{where}: "
            f"{bound}{test.smallest_effect:g}\n      why: {test.effect_reason}"
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
@click.option(
    "--no-compile-cache",
    is_flag=True,
    help="Do not use JAX's persistent compilation cache (~/.cache/toolkit/jax).",
)
@click.option(
    "--no-wait",
    is_flag=True,
    help="If another process is writing the results folder, fail (exit 2) instead of waiting.",
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
    no_compile_cache,
    no_wait,
) -> None:
    """Train every run of an experiment that is not done yet, then print its verdicts."""
    budget = _parse_size(memory_budget) if memory_budget else None
    seeds = _parse_seeds(seeds)
    from toolkit import distributed as processes

    # both must happen before JAX starts its backends
    if deterministic:
        processes.deterministic_gpu_ops()
    processes.start(distributed, coordinator, num_processes, process_id, init_timeout)
    processes.compile_cache(enabled=not no_compile_cache)
    from toolkit import runner, spec

    experiment = _load(name)
    experiment.profile(profile)
    overrides = spec.parse_overrides(experiment, sets)
    # run_experiment plans (and validates) every run before it creates anything.
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
        wait=not no_wait,
    )
    click.echo(
        f"{report.new_runs} runs trained, {report.skipped_runs} already present, "
        f"{report.diverged_runs} diverged → {report.folder.path}"
    )
    click.echo(_verdict_table(report.verdicts))


def _parse_seeds(text: str | None) -> int | None:
    """``--seeds`` (None: the profile's), checked before JAX starts."""
    from toolkit.spec import SpecError, check_seeds

    if text is None:
        return None
    try:
        return check_seeds(text)
    except SpecError as err:
        _fail(str(err))


@main.command()
@click.argument("name", required=False)
@click.option("--profile", default="default", show_default=True)
@click.option("--out", default="results", show_default=True, type=click.Path(path_type=Path))
def figures(name, profile, out) -> None:
    """Redraw paper_figures/ from the results CSVs only (no training)."""
    from toolkit import results, runner, spec

    names = [name] if name else spec.experiment_names()
    found = []
    for experiment_name in names:
        experiment = _load(experiment_name)
        folder = results.ResultsFolder(out / experiment_name / profile)
        if not folder.exists():
            if name:
                _fail(
                    f"no results in {folder.path} (no summary.csv); run `toolkit run "
                    f"{experiment_name} --profile {profile}` first"
                )
            continue
        found.append((experiment, folder))
    if not found:
        _fail(f"no results for profile {profile!r} under {out}; run an experiment first")
    # Every input is checked before anything is drawn: bad results never replace figures.
    for _, folder in found:
        folder.check(complete=True)
    for experiment, folder in found:
        paths = runner.draw_figures(experiment, folder)
        click.echo(f"{experiment.name}: {len(paths)} figures → {runner.figures_dir(folder)}")


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

    if csv_path is not None:
        parent = csv_path.parent if str(csv_path.parent) else Path(".")
        if not parent.is_dir() or csv_path.is_dir():
            what = f"{parent} is not a folder" if not parent.is_dir() else "it is a folder"
            _fail(f"--csv {csv_path}: cannot write the table there ({what}); choose another path")
    comparison = comparing.compare(a, b, tolerances=tolerances, factors=factors or None)
    if csv_path is not None:
        comparing.write_table(comparison, csv_path)
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
    if not math.isfinite(value):
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
    claims_report.check_inputs(out, profile)
    readme = out.resolve().parent / "README.md"
    paths = claims_report.write(out, profile, readme=readme)
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
    """Primaries first (they decide the claims), then secondaries and checks."""
    if verdicts.empty:
        return "(no verdicts)"
    lines = []
    order = {"primary": 0, "secondary": 1, "check": 2}
    rows = sorted(verdicts.itertuples(), key=lambda r: order.get(getattr(r, "role", ""), 3))
    for row in rows:
        condition = (
            f" [{row.condition}]" if isinstance(row.condition, str) and row.condition else ""
        )
        if row.kind == "exact":
            number = f"{row.estimate:.4g} (exact)"
        else:
            number = (
                f"{row.estimate:.4g} [{row.ci_low:.4g}, {row.ci_high:.4g}] "
                f"(n={row.n_seeds}/{row.n_planned})"
            )
        lines.append(
            f"{row.claim_id} {row.role:9s} {row.verdict:13s}{condition} {row.statistic} = "
            f"{number}\n    {row.finding}"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
