"""From an experiment, a profile and seeds to rows in a results folder.

config ⊕ profile ⊕ ``--set`` → runs = grid × seeds (run id = hash of the full config
and the seed) → drop runs already in the folder (resume) → group the rest into
cohorts by shape → train each cohort as one program → measure → commit its rows →
analyze → verdicts, and figures drawn from the written tables.

**A run's numbers are a function of its id** (and the software stack and device
kind). Its random keys come from its own seed only (:func:`toolkit.engine.run_keys`,
and :meth:`TrainedCohort.run_keys` for measurements), and on a CPU every run of a
cohort is computed alone inside the cohort's one program
(:func:`toolkit.engine.choose_run_batch`), so a run trained alone, in a cohort of any
size, or added later by a resume gives bitwise the same CSV values. On a GPU runs are
vmapped together (much faster there) and agree across cohort compositions to float32
rounding only.

**Writes that cannot be half-done.** A whole run holds the folder's writer lock
(:meth:`toolkit.results.ResultsFolder.writing`: a second ``toolkit run`` on the same
folder waits, then finds the runs done). Each cohort is committed by
:meth:`~toolkit.results.ResultsFolder.commit_cohort`: parameters, per-run tables,
history and summary first, the manifest entry in meta.json last; a run is done only
once it is in the manifest. A kill between any two writes loses only the cohort in
flight: the next run drops its partial rows (``recover``) and trains it again.

**A failing measurement keeps its cohort.** If an experiment's ``measure`` raises,
the trained cohort (its final state without the optimizer state, history, steps) is
kept in ``.pending/`` before the error propagates; the next run of the same cohort
loads it instead of training and measures again. (Simpler than writing the rows
without their measurement columns, which a later run would have to find and finish;
here the manifest stays the one rule of what is done. Single-process runs only: with
several processes the cohort is trained again.)

**Provenance.** Each cohort's meta.json entry records what trained it (``trained_on``:
commit, command, backend, device kind, versions, when); the top-level machine fields
describe the last invocation that trained something. An invocation that trains
nothing leaves meta.json untouched and is logged to ``invocations.log`` (untracked),
so re-analyzing committed results changes no tracked file.

A cohort whose estimated device memory exceeds the budget (the device's own limit,
or ``memory_budget``) is computed a group of runs at a time inside its one program
(:func:`toolkit.engine.choose_run_batch`). With several processes
(:mod:`toolkit.distributed`) every process trains its share of every cohort and
process 0 alone reads and writes the results folder.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import jax
import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from toolkit import claimtests, distributed
from toolkit import data as datasets
from toolkit.engine import (
    HPARAMS,
    METRICS,
    STREAMS,
    Cohort,
    CohortResult,
    CohortSpec,
    choose_run_batch,
    estimate_memory,
    fold_seeds,
    run_keys,
)
from toolkit.parallel import RunAxis
from toolkit.results import ResultsError, ResultsFolder
from toolkit.spec import Experiment, RunConfig, check_seeds


@dataclass(frozen=True)
class Run:
    """One (grid point, seed) of an experiment."""

    config: RunConfig
    seed: int
    factors: dict
    run_id: str


@dataclass
class TrainedCohort:
    """What an experiment's ``measure`` hook receives: the program, its runs and outputs.

    ``keys`` are the runs' key streams (stream → typed key array, one per run), e.g. to
    rebuild each run's initial parameters. ``result.checkpoints`` holds the parameters
    at the epochs the cohort spec names in ``checkpoints`` (epoch → leaves with the run
    axis), from the same training run.
    """

    cohort: Cohort
    runs: list[Run]
    result: CohortResult
    keys: dict | None = None

    def run_keys(self, salt: int) -> jax.Array:
        """One measurement key per run: ``fold_in(key(salt), seed)``.

        From the run's seed alone, never its place in the cohort, so a run measured
        alone, in a larger cohort or after a resume gets the same key. Runs of one
        seed share it across grid points: conditions compared seed by seed see the
        same probe directions, so their differences are not probe noise.
        """
        return fold_seeds(jax.random.key(salt), [run.seed for run in self.runs])

    def map(self, fn, run_args: tuple, shared_args: tuple = ()) -> object:
        """``fn`` applied to every run (vmapped, spread over devices); host outputs."""
        return self.cohort.map_runs(fn, run_args, shared_args)

    def row(self, index: int, **values) -> dict:
        """A per-run table row: run id, seed and grid factors of run ``index``, then ``values``."""
        run = self.runs[index]
        return {"run_id": run.run_id, "seed": run.seed, **run.factors, **values}

    def grid_rows(self, indices, grids, alphas, betas) -> list[dict]:
        """Rows (alpha, beta, loss) of the 2-D loss slices ``grids[g]`` of runs ``indices[g]``."""
        return [
            self.row(int(r), alpha=float(a), beta=float(b), loss=float(grids[g][i, j]))
            for g, r in enumerate(indices)
            for i, a in enumerate(alphas)
            for j, b in enumerate(betas)
        ]

    def conditions(self) -> list[list[int]]:
        """Indices of runs that differ only in their seed (equal grid factors), by seed."""
        groups: dict[tuple, list[int]] = {}
        for index, run in enumerate(self.runs):
            groups.setdefault(tuple(sorted(run.factors.items())), []).append(index)
        return [sorted(members, key=lambda r: self.runs[r].seed) for members in groups.values()]

    def seed_pairs(self, disjoint: bool = True) -> list[tuple[int, int]]:
        """Index pairs (a, b) of runs of one condition, ordered by seed.

        ``disjoint`` pairs each condition's seeds 0–1, 2–3, … (independent pairs);
        otherwise every pair a < b is returned, condition by condition.
        """
        pairs = []
        for members in self.conditions():
            if disjoint:
                pairs += list(zip(members[0::2], members[1::2]))
            else:
                pairs += [(a, b) for i, a in enumerate(members) for b in members[i + 1 :]]
        return pairs


def root_seed(experiment: str) -> int:
    return int.from_bytes(hashlib.sha256(experiment.encode()).digest()[:4], "little")


def run_id(experiment: str, config: RunConfig, seed: int) -> str:
    payload = json.dumps(
        {"experiment": experiment, "config": config.identity(), "seed": seed},
        sort_keys=True,
        default=str,
    )
    return hashlib.sha256(payload.encode()).hexdigest()[:12]


#: Characters a results folder name may keep; any other becomes "_".
_UNSAFE = re.compile(r"[^A-Za-z0-9._=,+-]")
_MAX_NAME = 100


def folder_name(profile: str, overrides: dict) -> str:
    """``default+epochs=20``: the profile and its ``--set`` overrides, as one safe name.

    Never a path: characters outside ``[A-Za-z0-9._=,+-]`` and any ``..`` become "_";
    when that changed the name, or it is long, a hash of the exact overrides is
    appended, so different overrides never share a folder.
    """
    if not overrides:
        return profile
    parts = [f"{k}={_text(v)}" for k, v in sorted(overrides.items())]
    raw = f"{profile}+{','.join(parts)}"
    name = re.sub(r"\.\.+", "_", _UNSAFE.sub("_", raw))
    if name != raw or len(name) > _MAX_NAME:
        exact = json.dumps({k: _text(v) for k, v in overrides.items()}, sort_keys=True)
        digest = hashlib.sha256(f"{profile}\0{exact}".encode()).hexdigest()[:10]
        name = f"{name[:_MAX_NAME]}+{digest}"
    return name


def _text(value) -> str:
    if isinstance(value, tuple):
        return "-".join(str(v) for v in value)
    return str(value)


def plan_runs(experiment: Experiment, profile: str, seeds: int, overrides: dict) -> list[Run]:
    runs = []
    for point in experiment.grid_points(profile, overrides):
        config = experiment.config(profile, point, overrides)
        for seed in range(seeds):
            factors = {k: _text(v) for k, v in point.items()}
            runs.append(Run(config, seed, factors, run_id(experiment.name, config, seed)))
    return runs


def group_cohorts(runs: Sequence[Run]) -> dict[CohortSpec, list[Run]]:
    cohorts: dict[CohortSpec, list[Run]] = {}
    for run in runs:
        cohorts.setdefault(run.config.cohort_spec(), []).append(run)
    return cohorts


def cost(runs: Sequence[Run]) -> dict:
    """Runs, cohorts, optimizer steps and epochs of a plan (for ``toolkit show``)."""
    steps = epochs = 0
    for run in runs:
        spec = run.config.cohort_spec()
        n_train = datasets.train_size(spec.dataset)
        epochs += spec.epochs
        steps += spec.epochs * spec.steps_per_epoch(n_train)
    return {
        "runs": len(runs),
        "cohorts": len(group_cohorts(runs)),
        "steps": steps,
        "epochs": epochs,
    }


@dataclass
class RunReport:
    folder: ResultsFolder
    verdicts: pd.DataFrame
    figures: list[Path]
    new_runs: int
    skipped_runs: int
    diverged_runs: int = 0  # of the planned runs in the folder, those flagged diverged


def run_experiment(
    experiment: Experiment,
    profile: str = "default",
    seeds: int | None = None,
    overrides: dict | None = None,
    out: Path | str = "results",
    force: bool = False,
    progress: bool = True,
    run_axis: RunAxis | None = None,
    command: str | None = None,
    memory_budget: int | None = None,
    deterministic: bool = False,
    wait: bool = True,
) -> RunReport:
    """Train whatever is missing, then analyze and draw; see the module docstring.

    ``memory_budget``: bytes per device a cohort may use (default: the device's own
    limit, or half the host memory on a CPU). ``deterministic`` is recorded in the
    provenance (the CLI sets XLA's flag before JAX starts). ``wait``: when another
    process is writing the same folder, wait for it (saying so once on stderr), else
    raise ResultsError at once.
    """
    overrides = overrides or {}
    writer = distributed.is_writer()
    seeds = seeds if seeds is not None else int(experiment.profile(profile).get("seeds", 10))
    check_seeds(seeds)
    # Every config is validated while planning; nothing is written before this point,
    # nor before every file already in the folder reads back well-formed.
    runs = plan_runs(experiment, profile, seeds, overrides)
    folder = ResultsFolder(Path(out) / experiment.name / folder_name(profile, overrides))
    if writer and not force:
        folder.check()
    if writer:
        folder.prepare(experiment.name)
    with folder.writing(wait=wait) if writer else nullcontext():
        return _run_locked(
            experiment,
            profile,
            seeds,
            overrides,
            runs,
            folder,
            force,
            progress,
            run_axis,
            command,
            memory_budget,
            deterministic,
        )


def _run_locked(
    experiment,
    profile,
    seeds,
    overrides,
    runs,
    folder,
    force,
    progress,
    run_axis,
    command,
    memory_budget,
    deterministic,
) -> RunReport:
    """:func:`run_experiment` once this process may write the folder."""
    writer = distributed.is_writer()
    started = time.time()
    done_mask = np.zeros(len(runs), np.int32)
    if writer:
        if force:
            folder.clear()
        else:
            folder.recover()  # rows a killed writer left of runs that are not done
        done = folder.done_run_ids()
        done_mask = np.array([run.run_id in done for run in runs], np.int32)
    # Every process must train the same cohorts: process 0's view of the folder rules.
    done_mask = distributed.broadcast(done_mask)
    todo = [run for run, is_done in zip(runs, done_mask) if not is_done]
    run_axis = run_axis or RunAxis()
    budget = memory_budget or device_memory_budget(run_axis)
    factors = experiment.factors(profile)
    machine = _machine_meta(run_axis, deterministic, command or " ".join(sys.argv))
    static = _static_meta(experiment, profile, overrides, seeds, run_axis)
    static.update(
        deterministic=deterministic,
        xla_flags=os.environ.get("XLA_FLAGS", ""),
        processes=jax.process_count(),
        memory_budget_bytes=int(budget),
    )
    # Checkpoints of cohorts whose measurement failed are used by a lone process only:
    # with several, every process would have to skip training alike.
    reuse = writer and jax.process_count() == 1

    cohorts = group_cohorts(todo)
    total = sum(len(rs) * spec.epochs for spec, rs in cohorts.items())
    bar = tqdm(
        total=total,
        unit="run-epoch",
        disable=not progress or total == 0 or not writer,
        file=sys.stderr,
    )
    runs_done = 0
    compile_s = 0.0  # compiling for the cohorts (training and measurements)
    for index, (spec, cohort_runs) in enumerate(cohorts.items()):
        bar.set_description(f"cohort {index + 1}/{len(cohorts)} ({len(cohort_runs)} runs)")
        dataset = datasets.load(spec.dataset)
        estimate = estimate_memory(spec, dataset)
        per_device = run_axis.padded_size(len(cohort_runs)) // run_axis.num_devices
        run_batch = choose_run_batch(
            estimate, per_device, budget, spec.model, run_axis.devices[0].platform
        )
        cohort = Cohort(spec, dataset, run_axis, run_batch=run_batch)
        keys = run_keys(
            root_seed(experiment.name),
            {s: [r.config.stream_seeds(r.seed)[s] for r in cohort_runs] for s in STREAMS},
        )
        hparams = {h: np.array([r.config.hparams()[h] for r in cohort_runs]) for h in HPARAMS}
        pending = _pending_key(cohort_runs)
        result = _load_pending(folder, pending, cohort_runs) if reuse else None
        if result is not None and not set(spec.checkpoints) <= set(result.checkpoints):
            result = None  # kept without the checkpoints this measurement needs: retrain
        with distributed.CompileClock() as training_compiles:
            if result is None:
                epochs_seen = 0
                for update in cohort.train(keys, hparams):
                    bar.update(len(cohort_runs) * (update["epochs_done"] - epochs_seen))
                    epochs_seen = update["epochs_done"]
                result = update["result"]
            else:
                bar.update(len(cohort_runs) * spec.epochs)
        measured_start = time.perf_counter()
        measures = {}
        with distributed.CompileClock() as measure_compiles:
            if hasattr(experiment.module, "measure"):
                # Per-run arrays become summary columns; DataFrames (with run_id and the
                # grid factors) become tables of their own, e.g. slices.csv.
                trained = TrainedCohort(cohort, cohort_runs, result, keys)
                try:
                    measures = experiment.module.measure(trained)
                except BaseException:
                    if writer:  # keep what was trained: the next run measures it again
                        _save_pending(folder, pending, cohort_runs, result)
                    raise
        result.timings["measure_s"] = time.perf_counter() - measured_start
        # Compile seconds inside the timings above (init_s and first_chunk_s hold the
        # training program's, measure_s the measurement programs').
        compiles = {"training": training_compiles.summary(), "measure": measure_compiles.summary()}
        compile_s += training_compiles.total_s + measure_compiles.total_s
        runs_done += len(cohort_runs)
        if not writer:
            continue
        tables = {k: v for k, v in measures.items() if isinstance(v, pd.DataFrame)}
        columns = {k: v for k, v in measures.items() if k not in tables}
        summary, history = _rows(experiment.name, cohort, cohort_runs, result, columns)
        memory = {"estimate_bytes": estimate.cohort(per_device, run_batch), "run_batch": run_batch}
        memory.update(peak_memory(run_axis))
        entry = _cohort_meta(spec, cohort, cohort_runs, result) | {
            "compile_s": compiles,
            "memory": memory,
            "trained_on": machine | {"finished": _iso(time.time())},
        }
        folder.commit_cohort(
            summary,
            history,
            order=factors + ["seed"],
            tables=tables,
            params=_params_to_save(experiment, cohort_runs, result),
            meta=static | {"cohorts": [entry]},
        )
        folder.drop_pending(pending)
        bar.set_postfix_str(f"runs {runs_done}/{len(todo)}")
    bar.close()
    if not writer:
        return RunReport(folder, pd.DataFrame(columns=claimtests.VERDICT_COLUMNS), [], len(todo), 0)
    computed = _run_standalone(experiment, folder, profile, seeds, force, static)

    verdicts = analyze(experiment, folder)
    figures = draw_figures(experiment, folder)
    invocation = {
        "command": machine["command"],
        "git_commit": machine["git_commit"],
        "started": _iso(started),
        "finished": _iso(time.time()),
        "wall_s": round(time.time() - started, 2),
        "compile_s": round(compile_s, 2),
        "new_runs": len(todo),
        "skipped_runs": len(runs) - len(todo),
    }
    if todo or computed:  # it made numbers: its provenance belongs with them
        folder.update_meta({"invocations": [invocation]})
    folder.log_invocation(invocation | {"device_kind": machine["device_kind"]})
    return RunReport(
        folder,
        verdicts,
        figures,
        len(todo),
        len(runs) - len(todo),
        diverged_runs=_diverged(folder, runs),
    )


def _diverged(folder: ResultsFolder, runs: Sequence[Run]) -> int:
    """Planned runs in the folder flagged ``diverged``."""
    summary = folder.summary()
    if "diverged" not in summary or "run_id" not in summary:
        return 0
    planned = summary[summary["run_id"].isin({run.run_id for run in runs})]
    return int(planned["diverged"].astype(str).str.lower().isin(["true", "1", "1.0"]).sum())


def _pending_key(runs: Sequence[Run]) -> str:
    return hashlib.sha256(",".join(run.run_id for run in runs).encode()).hexdigest()[:16]


def _save_pending(folder: ResultsFolder, key: str, runs, result: CohortResult) -> None:
    state = {k: v for k, v in result.state.items() if k != "opt_state"}
    arrays = {
        "state": state,
        "history": result.history,
        "steps": result.steps,
        "eval_epochs": result.eval_epochs,
        "tracked": dict(result.tracked),
        "timings": {k: np.float64(v) for k, v in result.timings.items()},
        "checkpoints": {str(epoch): params for epoch, params in result.checkpoints.items()},
    }
    folder.save_pending(key, [run.run_id for run in runs], arrays)


def _load_pending(folder: ResultsFolder, key: str, runs) -> CohortResult | None:
    """A cohort trained earlier whose measurement failed (state without ``opt_state``)."""
    arrays = folder.load_pending(key, [run.run_id for run in runs])
    if arrays is None:
        return None
    return CohortResult(
        state=arrays["state"],
        history=arrays["history"],
        steps=arrays["steps"],
        eval_epochs=arrays["eval_epochs"],
        timings={k: float(v) for k, v in arrays.get("timings", {}).items()},
        tracked=arrays.get("tracked", {}),
        checkpoints={int(e): params for e, params in arrays.get("checkpoints", {}).items()},
    )


def device_memory_budget(run_axis: RunAxis, fraction: float = 0.8) -> int:
    """Bytes a cohort may use per device: ``fraction`` of the device's limit where the
    backend reports one, else (a CPU) half the host memory shared by its devices."""
    stats = _memory_stats(_local_device(run_axis))
    if stats.get("bytes_limit"):
        return int(fraction * stats["bytes_limit"])
    host = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    local = max(1, len([d for d in run_axis.devices if d.process_index == jax.process_index()]))
    return int(0.5 * host / local)


def peak_memory(run_axis: RunAxis) -> dict:
    """Peak bytes in use on this process's first device, where the backend reports it
    (GPUs and TPUs; not CPUs). The peak is since the process started."""
    stats = _memory_stats(_local_device(run_axis))
    return {"peak_bytes": stats["peak_bytes_in_use"]} if "peak_bytes_in_use" in stats else {}


def _local_device(run_axis: RunAxis):
    return next(d for d in run_axis.devices if d.process_index == jax.process_index())


def _memory_stats(device) -> dict:
    try:
        return device.memory_stats() or {}
    except (RuntimeError, NotImplementedError):
        return {}


def _run_standalone(
    experiment, folder: ResultsFolder, profile: str, seeds: int, force: bool, static: dict
) -> bool:
    """The experiment's ``standalone`` tables (work that trains no cohort), computed
    when any is missing (or with ``--force``) and written whole; whether it ran."""
    standalone = getattr(experiment.module, "standalone", None)
    if standalone is None:
        return False
    written = folder.meta().get("standalone_tables", [])
    present = {p.name.split(".")[0] for p in folder.path.glob("*.csv*")}
    if written and not force and set(written) <= present:
        return False
    started = time.perf_counter()
    tables = standalone(profile, seeds)
    for name, frame in tables.items():
        folder.write_table(name, frame)
    folder.update_meta(
        static
        | {
            "standalone_tables": sorted(tables),
            "standalone_s": round(time.perf_counter() - started, 2),
        }
    )
    return True


def _params_to_save(experiment: Experiment, runs, result) -> dict:
    """Final parameters (run id → tree) of the runs the experiment asks to keep as
    ``params/<run_id>.npz``: ``SAVE_PARAMS`` in its module is True (every run) or a
    predicate on a Run."""
    wanted = getattr(experiment.module, "SAVE_PARAMS", False)
    return {
        run.run_id: jax.tree_util.tree_map(lambda leaf, r=r: leaf[r], result.state["params"])
        for r, run in enumerate(runs)
        if wanted is True or (callable(wanted) and wanted(run))
    }


def analyze(experiment: Experiment, folder: ResultsFolder) -> pd.DataFrame:
    """The experiment's verdict rows (its declared tests, see :mod:`toolkit.claimtests`),
    written to verdicts.csv."""
    verdicts = claimtests.experiment_verdicts(experiment.module, folder)
    folder.write_verdicts(verdicts)
    return verdicts


def figures_dir(folder: ResultsFolder) -> Path:
    """``<out>/<exp>/<profile>`` → ``<out>/../paper_figures/<exp>/<profile>``."""
    out = folder.path.parent.parent
    return out.parent / "paper_figures" / folder.path.parent.name / folder.path.name


def draw_figures(experiment: Experiment, folder: ResultsFolder) -> list[Path]:
    """An experiment's figures, drawn into a scratch folder and moved into place only
    when all of them were drawn (a failure leaves the previous figures as they were)."""
    target = figures_dir(folder)
    target.mkdir(parents=True, exist_ok=True)
    scratch = target.parent / f".{target.name}.drawing-{os.getpid()}"
    shutil.rmtree(scratch, ignore_errors=True)
    scratch.mkdir()
    try:
        try:
            paths = list(experiment.module.figures(folder, scratch))
        except KeyError as err:
            raise ResultsError(
                f"{folder.path}: the figures need column {err.args[0]!r}, which the results "
                f"lack; rerun `toolkit run {experiment.name}` for this folder with --force"
            ) from err
        for path in sorted(scratch.iterdir()):
            os.replace(path, target / path.name)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return [target / Path(p).name for p in paths]


def _rows(name, cohort: Cohort, runs, result: CohortResult, measures: dict):
    state = result.state
    n_evals = result.history.shape[1]
    summary_rows, history_rows = [], []
    for r, run in enumerate(runs):
        base = {"experiment": name, "run_id": run.run_id, "seed": run.seed, **run.factors}
        hist = result.history[r]
        row = {
            **base,
            **{h: v for h, v in run.config.hparams().items()},
            "batch_size": cohort.spec.batch_size,
            "epochs": cohort.spec.epochs,
            "steps_per_epoch": cohort.steps_per_epoch,
            "steps": int(state["steps"][r]),
            "diverged": bool(state["diverged"][r]),
            "stopped_epoch": int(state["stopped_epoch"][r]),
            **{f"init_{m}": float(hist[0, i]) for i, m in enumerate(METRICS)},
            **{f"final_{m}": float(hist[-1, i]) for i, m in enumerate(METRICS)},
            "best_val_epoch": int(state["best_epoch"][r]),
            **{f"best_{m}": float(state["best_metrics"][r][i]) for i, m in enumerate(METRICS)},
            **{k: np.asarray(v)[r].item() for k, v in measures.items()},
        }
        summary_rows.append(row)
        for e in range(n_evals):
            history_rows.append(
                {
                    **base,
                    "epoch": int(result.eval_epochs[e]),
                    "step": int(result.steps[r, e]),
                    **{m: float(hist[e, i]) for i, m in enumerate(METRICS)},
                    # Tracked per-evaluation values (e.g. sharpness): columns only when on.
                    **{name: float(v[r, e]) for name, v in result.tracked.items()},
                }
            )
    return pd.DataFrame(summary_rows), pd.DataFrame(history_rows)


def _machine_meta(run_axis: RunAxis, deterministic: bool, command: str) -> dict:
    """What trains a cohort now: commit, command, backend, device kind, versions."""
    import flax
    import optax

    return {
        "git_commit": git_commit(),
        "command": command,
        "backend": jax.default_backend(),
        "device_kind": run_axis.devices[0].device_kind,
        "devices": run_axis.num_devices,
        "processes": jax.process_count(),
        "deterministic": deterministic,
        "xla_flags": os.environ.get("XLA_FLAGS", ""),
        "compile_cache": distributed.cache_location(),
        "host_cpu": host_cpu(),
        "versions": {
            "python": platform.python_version(),
            "jax": jax.__version__,
            "flax": flax.__version__,
            "optax": optax.__version__,
            "numpy": np.__version__,
        },
    }


#: CPU vector extensions XLA's CPU code generator picks kernels by: two hosts that differ
#: in them can give a CPU run different float rounding from the same software.
CPU_FEATURES = (
    "sse4_2",
    "avx",
    "avx2",
    "fma",
    "avx512f",
    "avx512_bf16",
    "amx_tile",
    "asimd",
    "sve",
)


def host_cpu() -> dict:
    """The host CPU's model and vector extensions (Linux ``/proc/cpuinfo``; else the
    platform's processor string): a CPU run's numbers depend on them."""
    model, flags = platform.processor() or platform.machine(), set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            key = key.strip().lower()
            if key in ("model name", "cpu model") and model in ("", platform.machine()):
                model = value.strip()
            elif key in ("flags", "features"):
                flags |= set(value.split())
    except OSError:
        pass
    return {"model": model, "features": [f for f in CPU_FEATURES if f in flags]}


def _static_meta(experiment, profile, overrides, seeds, run_axis: RunAxis) -> dict:
    import flax
    import optax

    return {
        "experiment": experiment.name,
        "claims": list(experiment.claims),
        "profile": profile,
        "overrides": {k: _text(v) for k, v in overrides.items()},
        "seeds": seeds,
        "root_seed": root_seed(experiment.name),
        "versions": {
            "python": platform.python_version(),
            "jax": jax.__version__,
            "jaxlib": jax.lib.__version__ if hasattr(jax.lib, "__version__") else "",
            "flax": flax.__version__,
            "optax": optax.__version__,
            "numpy": np.__version__,
            "pandas": pd.__version__,
        },
        "backend": jax.default_backend(),
        "devices": [str(d) for d in run_axis.devices],
        "device_kind": run_axis.devices[0].device_kind,
        "jax_threefry_partitionable": bool(jax.config.jax_threefry_partitionable),
        "datasets": {
            name: {"hash": ds.content_hash, "sizes": ds.sizes()}
            for name, ds in (
                (n, datasets.load(n)) for n in _datasets_of(experiment, profile, overrides)
            )
        },
    }


def _datasets_of(experiment: Experiment, profile: str, overrides: dict) -> list[str]:
    """The datasets the runs use, ``--set dataset=...`` included."""
    points = experiment.grid_points(profile, overrides)
    return sorted({experiment.config(profile, p, overrides).dataset for p in points})


def _cohort_meta(spec: CohortSpec, cohort: Cohort, runs, result: CohortResult) -> dict:
    return {
        "spec": dataclasses.asdict(spec),
        "runs": len(runs),
        "padded_runs": cohort.run_axis.padded_size(len(runs)),
        "devices": cohort.run_axis.num_devices,
        "eval_every": cohort.eval_every,
        "chunks": cohort.num_chunks,
        "timings_s": {k: round(v, 3) for k, v in result.timings.items()},
    }


def git_commit() -> str:
    """The checkout's commit (``-dirty`` with uncommitted changes to tracked files); in a
    copy without ``.git`` (a lent GPU machine gets the working tree only), the commit the
    copy was made from, named by ``$TOOLKIT_GIT_COMMIT``; else "unknown"."""
    try:
        root = Path(__file__).resolve().parent.parent
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=5
        )
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=root,
            capture_output=True,
            text=True,
            timeout=5,
        )
        if out.returncode == 0:
            return out.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        pass
    return os.environ.get("TOOLKIT_GIT_COMMIT", "unknown")


def _iso(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, UTC).isoformat(timespec="seconds")
