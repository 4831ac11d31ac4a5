"""Compare two results of one experiment: are B's numbers equivalent to A's?

A and B are results folders (``results/<experiment>/<profile>``) or ``summary.csv``
files: two commits, CPU vs GPU, two profiles, someone else's run. A folder (or the
folder of a file named ``summary.csv``) also brings its ``meta.json`` and ``verdicts.csv``.

Alignment. Runs are matched on the grid factors and, where both sides have a ``seed``
column and share seeds, on the seed. The grid factors are the experiment's
(``spec.load(experiment).factors(profile)`` from each side's meta.json; the union of
both). A side without meta.json (or of an experiment this toolkit does not know) takes
as factors its config columns (fields of the experiment's ``Config``) that vary, plus
any non-numeric column that is not run bookkeeping; ``--factor`` names them instead.
Runs and grid points on one side only are listed and left out; config columns that are
not factors but differ between the sides (e.g. ``epochs`` of two profiles) are noted.

Metrics: the numeric columns both summaries share that are neither factors, config
fields nor bookkeeping (run_id, seed, steps, steps_per_epoch, stopped_epoch,
best_val_epoch, diverged): init_*, final_*, best_* and measured columns.

Statistics, per metric and grid point, on the difference B − A:

- paired by seed (the seeds both sides have): mean and t-interval of the per-seed
  differences (:func:`toolkit.stats.paired_t_ci`);
- no shared seeds: Welch's t-interval (:func:`toolkit.stats.welch_ci`).

Non-finite values (diverged runs) are dropped and counted per side (a pair is dropped
when either value is); non-finite counts that differ are tested with Fisher's exact test.

Verdict against a tolerance ``tol`` (TOST at alpha = 0.05, i.e. on the 90% CI):

- ``equivalent``: the 90% CI lies inside (−tol, tol), or every pair is identical;
- ``different``: the 95% CI lies entirely outside (−tol, tol), or the share of
  non-finite values differs (Fisher p < 0.05);
- ``inconclusive``: otherwise: fewer than 2 values per side (or pairs) that are not
  identical, a CI that straddles a bound, or equivalent values but non-finite counts
  that differ without significance.

Default tolerances: a metric whose name has an ``acc`` word (``final_test_acc``) 0.01
absolute; every other metric (losses, measured quantities) 5% of the pooled |mean| of
A and B at that grid point. ``--tol NAME=VALUE`` sets an absolute tolerance,
``--tol NAME=PCT%`` a relative one; NAME may be an fnmatch pattern (``'*_acc=0.02'``);
an exact name wins over patterns, a later pattern over an earlier one.

Verdict tables (verdicts.csv) are matched on (claim_id, condition, statistic); claims
whose verdict changed, and rows on one side only, are listed.

Software and hardware: every version meta.json records (``versions``, and each cohort's
``trained_on``) and the device kind are gathered per side; the report's header says which
differ (``versions differ: jax 0.10.2 → 0.11.2; device cpu → NVIDIA H200``) or that the
software is the same, so a hardware comparison is not read as a software one.

Exit code (CLI): 0 when no metric is ``different``, 1 when one is (``--strict``: also
when a row is inconclusive, a run is on one side only or a claim changed verdict);
2 for bad input (:class:`CompareError`: one line naming the file and the problem).
"""

from __future__ import annotations

import dataclasses
import fnmatch
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike
from scipy import stats as sps

from toolkit.results import SCHEMA_VERSION, ResultsError, ResultsFolder, read_csv
from toolkit.schema import read_table
from toolkit.stats import paired_t_ci, tost_equivalent, welch_ci

BOOKKEEPING = frozenset(
    "experiment run_id seed steps steps_per_epoch stopped_epoch best_val_epoch diverged".split()
)
VERDICTS = ("equivalent", "inconclusive", "different")
CLAIM_KEY = ["claim_id", "condition", "statistic"]
TABLE_COLUMNS = (
    "metric pairing n_a n_b n_pairs nonfinite_a nonfinite_b mean_a mean_b diff ci_low ci_high "
    "tost_low tost_high tol tol_rule verdict note"
).split()


class CompareError(ValueError):
    """Input that cannot be compared; the message names the file and the problem."""


@dataclass(frozen=True)
class Tolerance:
    """An equivalence margin: absolute, or relative to the pooled |mean| of A and B."""

    value: float
    relative: bool = False

    def absolute(self, pooled_mean: float) -> float:
        return self.value * abs(pooled_mean) if self.relative else self.value

    def __str__(self) -> str:
        return f"{self.value * 100:g}%" if self.relative else f"{self.value:g}"


ACCURACY_TOLERANCE = Tolerance(0.01)
RELATIVE_TOLERANCE = Tolerance(0.05, relative=True)


def default_tolerance(metric: str) -> Tolerance:
    """0.01 absolute for accuracies (an ``acc`` word in the name), else 5% relative."""
    return ACCURACY_TOLERANCE if re.search(r"(^|_)acc", metric) else RELATIVE_TOLERANCE


def parse_tolerances(pairs: Sequence[str]) -> list[tuple[str, Tolerance]]:
    """``["final_test_acc=0.02", "*_loss=10%"]`` → [(name or pattern, Tolerance)]."""
    rules = []
    for pair in pairs:
        name, sep, text = pair.partition("=")
        text = text.strip()
        relative = text.endswith("%")
        try:
            value = float(text[:-1] if relative else text)
        except ValueError:
            value = math.nan
        if not sep or not name.strip() or not math.isfinite(value) or value < 0:
            raise CompareError(f"--tol expects METRIC=VALUE or METRIC=PCT% (≥ 0), got {pair!r}")
        rules.append((name.strip(), Tolerance(value / 100 if relative else value, relative)))
    return rules


def tolerance_for(metric: str, rules: Sequence[tuple[str, Tolerance]]) -> Tolerance:
    """The rule for ``metric``: its exact name, else the last matching pattern, else default."""
    exact = [tol for name, tol in rules if name == metric]
    matching = [tol for name, tol in rules if fnmatch.fnmatchcase(metric, name)]
    return (exact or matching or [default_tolerance(metric)])[-1]


def compare_metric(a: ArrayLike, b: ArrayLike, tol: Tolerance | float, paired: bool) -> dict:
    """B − A for one metric at one grid point: means, 95% CI, TOST 90% CI and verdict.

    ``paired``: a[i] and b[i] are the same seed. Keys: TABLE_COLUMNS less metric and tol_rule.
    """
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if paired and a.shape != b.shape:
        raise ValueError(f"paired values must align by seed; got {a.shape} and {b.shape}")
    tol = tol if isinstance(tol, Tolerance) else Tolerance(float(tol))
    bad_a, bad_b = ~np.isfinite(a), ~np.isfinite(b)
    if paired:
        ok = ~bad_a & ~bad_b
        a_used, b_used = a[ok], b[ok]
        diffs = b_used - a_used
        diff, low, high = paired_t_ci(diffs)
        _, tost_low, tost_high = paired_t_ci(diffs, level=0.90)
        identical = len(diffs) > 0 and bool(np.all(diffs == 0))
    else:
        a_used, b_used = a[~bad_a], b[~bad_b]
        if len(a_used) >= 2 and len(b_used) >= 2 and np.ptp(a_used) == np.ptp(b_used) == 0:
            diff = float(b_used[0] - a_used[0])  # both sides constant: the diff is exact
            low = high = tost_low = tost_high = diff
        else:
            diff, low, high = welch_ci(b_used, a_used)
            _, tost_low, tost_high = welch_ci(b_used, a_used, level=0.90)
        identical = False
    pooled = np.concatenate([a_used, b_used])
    margin = tol.absolute(float(np.mean(pooled))) if len(pooled) else math.nan
    row = {
        "pairing": "paired" if paired else "welch",
        "n_a": len(a_used),
        "n_b": len(b_used),
        "n_pairs": len(a_used) if paired else 0,
        "nonfinite_a": int(bad_a.sum()),
        "nonfinite_b": int(bad_b.sum()),
        "mean_a": float(np.mean(a_used)) if len(a_used) else math.nan,
        "mean_b": float(np.mean(b_used)) if len(b_used) else math.nan,
        "diff": diff,
        "ci_low": low,
        "ci_high": high,
        "tost_low": tost_low,
        "tost_high": tost_high,
        "tol": margin,
    }
    note = ""
    if len(a_used) == 0 or len(b_used) == 0:
        verdict = "inconclusive"
        note = "no finite pair" if paired else "no finite value on one side"
    elif identical or tost_equivalent(tost_low, tost_high, margin):
        verdict, note = "equivalent", "identical" if identical else ""
    elif np.isfinite(low) and np.isfinite(high) and (low >= margin or high <= -margin):
        verdict = "different"
    else:
        verdict = "inconclusive"
        if min(len(a_used), len(b_used)) < 2:
            note = "fewer than 2 values per side"
    if row["nonfinite_a"] != row["nonfinite_b"]:
        table = [[row["nonfinite_a"], len(a) - row["nonfinite_a"]]]
        table += [[row["nonfinite_b"], len(b) - row["nonfinite_b"]]]
        p = float(sps.fisher_exact(table).pvalue)
        counts = f"non-finite {row['nonfinite_a']}/{len(a)} vs {row['nonfinite_b']}/{len(b)}"
        note = f"{counts}, Fisher p={p:.2g}"
        if p < 0.05:
            verdict = "different"
        elif verdict == "equivalent":
            verdict = "inconclusive"
    return {**row, "verdict": verdict, "note": note}


# ----- inputs ----------------------------------------------------------------------
@dataclass
class Side:
    """One input: its summary table, and the meta and verdicts of its folder (if any)."""

    label: str
    path: Path
    summary_path: Path
    summary: pd.DataFrame
    meta: dict
    verdicts: pd.DataFrame
    experiment: str | None

    @property
    def meta_path(self) -> Path:
        return self.summary_path.parent / "meta.json"


def load_side(path: Path | str, label: str = "A") -> Side:
    """Read a results folder or a summary CSV; CompareError for unusable input."""
    path = Path(path)
    if path.is_dir():
        candidates = [path / "summary.csv", path / "summary.csv.gz"]
        summary_path = next((p for p in candidates if p.exists()), None)
        if summary_path is None:
            raise CompareError(f"{path}: no summary.csv in this folder")
    elif path.is_file():
        summary_path = path
    else:
        raise CompareError(f"{path}: no such file or folder")
    try:  # validated like every results read (junk, truncated or binary rows refused)
        summary = read_table(summary_path, "summary", unique=False)  # repeats: see below
    except ResultsError as err:
        raise CompareError(str(err)) from None
    if summary.empty:
        raise CompareError(f"{summary_path}: no rows (header only)")
    meta, verdicts = {}, pd.DataFrame()
    if summary_path.name in ("summary.csv", "summary.csv.gz"):
        folder = ResultsFolder(summary_path.parent)
        try:
            meta = folder.meta()
            verdicts = read_csv(folder.path / "verdicts.csv")
        except ResultsError as err:
            raise CompareError(str(err)) from None
    names = (
        sorted(set(summary["experiment"].dropna().astype(str))) if "experiment" in summary else []
    )
    if len(names) > 1:
        raise CompareError(f"{summary_path}: rows of several experiments ({', '.join(names)})")
    experiment = meta.get("experiment") or (names[0] if names else None)
    if names and experiment != names[0]:
        raise CompareError(
            f"{summary_path}: rows of {names[0]}, but its meta.json says {experiment}"
        )
    return Side(label, path, summary_path, summary, meta, verdicts, experiment)


def check_compatible(a: Side, b: Side) -> None:
    """Same experiment and results schema, or CompareError naming the file."""
    if a.experiment and b.experiment and a.experiment != b.experiment:
        raise CompareError(
            f"{b.summary_path}: results of {b.experiment}, but {a.summary_path} holds "
            f"{a.experiment}; compare two results of one experiment"
        )
    versions = {side.label: side.meta.get("schema_version") for side in (a, b)}
    if None not in versions.values() and versions["A"] != versions["B"]:
        raise CompareError(
            f"{b.meta_path}: results schema {versions['B']}, but {a.meta_path} has schema "
            f"{versions['A']}; rerun one side with the same toolkit"
        )
    for side in (a, b):
        version = versions[side.label]
        if version is not None and version != SCHEMA_VERSION:
            raise CompareError(
                f"{side.meta_path}: results schema {version}, this toolkit reads {SCHEMA_VERSION}"
            )


def _experiment(name: str | None):
    from toolkit import spec

    try:
        return spec.load(name) if name else None
    except spec.SpecError:
        return None


def config_columns(side: Side) -> set[str]:
    """Summary columns that are run settings: fields of the experiment's Config."""
    from toolkit.spec import RunConfig

    names = {f.name for f in dataclasses.fields(RunConfig)} | {"batch_size", "epochs"}
    experiment = _experiment(side.experiment)
    if experiment is not None:
        names |= set(experiment.config_fields())
    return names & set(side.summary.columns)


def _numeric(column: pd.Series) -> bool:
    return pd.api.types.is_numeric_dtype(column) and not pd.api.types.is_bool_dtype(column)


def side_factors(side: Side) -> list[str]:
    """Grid factors of one side: the experiment's for its profile, else inferred (see module)."""
    from toolkit.spec import SpecError

    experiment = _experiment(side.experiment)
    profile = side.meta.get("profile")
    if experiment is not None and profile:
        try:
            return experiment.factors(profile)
        except SpecError:  # a profile this version of the experiment no longer has
            pass
    config = config_columns(side)
    frame = side.summary
    return [
        c
        for c in frame.columns
        if c not in BOOKKEEPING
        and (
            (c in config and frame[c].nunique(dropna=False) > 1)
            or (c not in config and not _numeric(frame[c]))
        )
    ]


def grid_factors(a: Side, b: Side, factors: Sequence[str] | None = None) -> list[str]:
    """The alignment columns (without seed); CompareError when a side lacks one."""
    if factors:
        names, reason = list(factors), "named by --factor"
    else:
        names = list(dict.fromkeys(side_factors(a) + side_factors(b)))
        # a factor the experiment declares today but neither side has a column for
        # (both written before it existed) does not separate their runs
        names = [n for n in names if n in a.summary.columns or n in b.summary.columns]
        reason = "a grid factor of the other side"
    for side in (a, b):
        for name in names:
            if name not in side.summary.columns:
                raise CompareError(f"{side.summary_path}: no column {name!r} ({reason})")
    return names


def _canonical(column: pd.Series) -> pd.Series:
    """Values as comparable text: 0, 0.0 and '0.0' all become '0'."""
    numbers = pd.to_numeric(column, errors="coerce")
    if numbers.notna().sum() == column.notna().sum() and not pd.api.types.is_bool_dtype(column):
        return numbers.map(lambda v: format(float(v), ".8g"))
    return column.astype(str)


# ----- the comparison -----------------------------------------------------------------
@dataclass
class Comparison:
    """Everything ``compare`` found; ``table`` has one row per grid point × metric."""

    a: Side
    b: Side
    factors: list[str]
    paired_by_seed: bool
    table: pd.DataFrame
    only_a: pd.DataFrame  # runs (factors, seed) in A only
    only_b: pd.DataFrame
    claims: pd.DataFrame  # verdict rows of both sides, with a status column
    notes: list[str] = field(default_factory=list)
    environment: str = ""  # which software versions and device differ (version_line)

    def counts(self) -> dict[str, int]:
        return {v: int((self.table["verdict"] == v).sum()) for v in VERDICTS}

    def exit_code(self, strict: bool = False) -> int:
        counts = self.counts()
        if counts["different"]:
            return 1
        changed = not self.claims.empty and (self.claims["status"] != "same").any()
        loose = counts["inconclusive"] or len(self.only_a) or len(self.only_b) or changed
        return 1 if strict and loose else 0


def compare(
    a: Path | str | Side,
    b: Path | str | Side,
    tolerances: Sequence[str] | Sequence[tuple[str, Tolerance]] = (),
    factors: Sequence[str] | None = None,
) -> Comparison:
    """Compare result B against result A (see the module docstring for every rule)."""
    a = a if isinstance(a, Side) else load_side(a, "A")
    b = b if isinstance(b, Side) else load_side(b, "B")
    check_compatible(a, b)
    names = grid_factors(a, b, factors)
    config = config_columns(a) | config_columns(b)
    excluded = BOOKKEEPING | config | set(names)
    metrics = [
        c
        for c in a.summary.columns
        if c in b.summary.columns
        and c not in excluded
        and _numeric(a.summary[c])
        and _numeric(b.summary[c])
    ]
    if not metrics:
        raise CompareError(
            f"{b.summary_path}: no numeric metric column shared with {a.summary_path}"
        )
    rules = [r if isinstance(r, tuple) else parse_tolerances([r])[0] for r in tolerances]
    for pattern, _ in rules:
        if not any(fnmatch.fnmatchcase(m, pattern) for m in metrics):
            raise CompareError(
                f"--tol {pattern}: matches no metric (metrics: {', '.join(metrics)})"
            )

    frames = {}
    for side in (a, b):
        frame = side.summary.copy()
        frame["_point"] = _point_labels(frame, names)
        frame["_seed"] = _canonical(frame["seed"]) if "seed" in frame else ""
        frames[side.label] = frame
    keys = {label: set(zip(f["_point"], f["_seed"])) for label, f in frames.items()}
    use_seed = all("seed" in s.summary for s in (a, b)) and bool(keys["A"] & keys["B"])
    if use_seed:
        for side in (a, b):
            duplicated = frames[side.label].duplicated(["_point", "_seed"])
            if duplicated.any():
                row = frames[side.label][duplicated].iloc[0]
                raise CompareError(
                    f"{side.summary_path}: several rows for {row['_point']}, seed {row['_seed']}"
                )
    points_a = list(dict.fromkeys(frames["A"]["_point"]))
    points_b = set(frames["B"]["_point"])
    shared_points = [p for p in points_a if p in points_b]
    if not shared_points:
        raise CompareError(
            f"{b.summary_path}: no grid point in common with {a.summary_path} "
            f"(factors: {', '.join(names) or 'none'})"
        )

    rows = []
    for point in shared_points:
        part_a = frames["A"][frames["A"]["_point"] == point]
        part_b = frames["B"][frames["B"]["_point"] == point]
        point_values = part_a.iloc[0][names].to_dict()
        seeds = [s for s in part_a["_seed"] if s in set(part_b["_seed"])] if use_seed else []
        paired = bool(seeds)
        if paired:
            part_a = part_a.set_index("_seed").loc[seeds]
            part_b = part_b.set_index("_seed").loc[seeds]
        for metric in metrics:
            values_a, values_b = part_a[metric].to_numpy(float), part_b[metric].to_numpy(float)
            if np.isnan(values_a).all() and np.isnan(values_b).all():
                continue  # the metric is not measured at this grid point
            tol = tolerance_for(metric, rules)
            row = compare_metric(values_a, values_b, tol, paired)
            rows.append(
                {**point_values, "grid_point": point, "metric": metric, **row, "tol_rule": str(tol)}
            )
    table = pd.DataFrame(rows, columns=[*names, "grid_point", *TABLE_COLUMNS])

    only = {}
    for label, other in (("A", "B"), ("B", "A")):
        frame = frames[label]
        if use_seed:
            mask = [key not in keys[other] for key in zip(frame["_point"], frame["_seed"])]
        else:
            mask = ~frame["_point"].isin(set(frames[other]["_point"]))
        columns = names + (["seed"] if "seed" in frame else [])
        only[label] = frame.loc[mask, columns + ["_point"]].reset_index(drop=True)

    notes = _setting_notes(a, b, config - set(names))
    for side, other in ((a, b), (b, a)):
        alone = [c for c in side.summary.columns if c not in set(other.summary.columns) | excluded]
        if alone:
            notes.append(f"columns only in {side.label} (not compared): {', '.join(alone)}")
    if not use_seed:
        notes.append("no seeds in common: unpaired comparisons (Welch)")
    notes += _divergence_notes(frames, shared_points)
    claims = compare_verdicts(a, b)
    if a.verdicts.empty or b.verdicts.empty:
        missing = [s.label for s in (a, b) if s.verdicts.empty]
        notes.append(f"no verdicts.csv in {' and '.join(missing)}: claims not compared")
    return Comparison(
        a, b, names, use_seed, table, only["A"], only["B"], claims, notes, version_line(a, b)
    )


def _point_labels(frame: pd.DataFrame, names: list[str]) -> pd.Series:
    if not names:
        return pd.Series("all runs", index=frame.index)
    parts = [name + "=" + _canonical(frame[name]) for name in names]
    label = parts[0]
    for part in parts[1:]:
        label = label + ", " + part
    return label


def _setting_notes(a: Side, b: Side, settings: set[str]) -> list[str]:
    notes = []
    for column in [c for c in a.summary.columns if c in settings and c in b.summary.columns]:
        values_a = sorted(set(_canonical(a.summary[column])))
        values_b = sorted(set(_canonical(b.summary[column])))
        if values_a != values_b:
            notes.append(
                f"setting {column} differs: A {', '.join(values_a)}; B {', '.join(values_b)}"
            )
    value_a, value_b = a.meta.get("profile"), b.meta.get("profile")
    if value_a and value_b and value_a != value_b:
        notes.append(f"profile: A {value_a}, B {value_b}")
    return notes


#: Packages listed first in the version line; any other recorded one follows by name.
VERSION_ORDER = ("jax", "jaxlib", "flax", "optax", "numpy", "pandas", "python")


def environment(meta: dict) -> dict[str, list[str]]:
    """Package → the versions that made a folder's numbers, and ``device`` → its device
    kinds, from its meta.json: the folder's ``versions`` and ``device_kind`` and those of
    every cohort's ``trained_on`` (a folder resumed elsewhere has several)."""
    sources = [meta] + [c.get("trained_on", {}) for c in meta.get("cohorts", [])]
    found: dict[str, list[str]] = {}
    for source in sources:
        entries = dict(source.get("versions") or {})
        if source.get("device_kind"):
            entries["device"] = source["device_kind"]
            host = source.get("host_cpu")
            if source["device_kind"] == "cpu" and host:  # CPU numbers depend on the host
                entries["device"] = f"cpu ({host['model']}; {'+'.join(host['features'])})"
        for name, version in entries.items():
            if version not in (None, "") and str(version) not in found.setdefault(name, []):
                found[name].append(str(version))
    devices = found.get("device", [])
    if "cpu" in devices and any(d.startswith("cpu (") for d in devices):
        devices.remove("cpu")  # the folder-level kind; its cohorts name the host
    return found


def version_differences(a: Side, b: Side) -> tuple[list[str], list[str], str]:
    """``(differ, same, device)``: "jax 0.10.2 → 0.11.2" per package whose recorded
    versions differ, "jax 0.11.2" per package that is the same (packages recorded on
    one side only are left out), and "cpu → NVIDIA H200", or the one device kind of
    both sides ("" when a side records none)."""
    env_a, env_b = environment(a.meta), environment(b.meta)
    shared = [n for n in env_a if n in env_b and n != "device"]
    ordered = [n for n in VERSION_ORDER if n in shared] + sorted(set(shared) - set(VERSION_ORDER))
    differ, same = [], []
    for name in ordered:
        left, right = ", ".join(env_a[name]), ", ".join(env_b[name])
        if left == right:
            same.append(f"{name} {left}")
        else:
            differ.append(f"{name} {left} → {right}")
    device = ""
    if "device" in env_a and "device" in env_b:
        left, right = ", ".join(env_a["device"]), ", ".join(env_b["device"])
        device = left if left == right else f"{left} → {right}"
    return differ, same, device


def version_line(a: Side, b: Side) -> str:
    """One header line: the software versions that differ between the sides, or that
    they are the same; then the device (kinds), e.g. ``versions differ: jax 0.10.2 →
    0.11.2; device cpu → NVIDIA H200``. "" when neither side records versions."""
    differ, same, device = version_differences(a, b)
    if differ:
        line = "versions differ: " + "; ".join(differ)
    elif same:
        line = "versions: the same on both sides (" + ", ".join(same) + ")"
    else:
        return f"device {device}" if device else ""
    return line + (f"; device {device}" if device else "")


def _divergence_notes(frames: dict[str, pd.DataFrame], points: list[str]) -> list[str]:
    notes = []
    for point in points:
        counts = {}
        for label, frame in frames.items():
            part = frame[frame["_point"] == point]
            diverged = (
                part["diverged"].astype(str).str.lower() == "true" if "diverged" in part else []
            )
            counts[label] = int(np.sum(diverged))
        if any(counts.values()):
            notes.append(f"diverged runs at {point}: A {counts['A']}, B {counts['B']}")
    return notes


def compare_verdicts(a: Side, b: Side) -> pd.DataFrame:
    """Verdict rows matched on (claim_id, condition, statistic); status same/changed/only A/B."""
    frames = []
    for side in (a, b):
        frame = side.verdicts
        if frame.empty:
            return pd.DataFrame(columns=[*CLAIM_KEY, "verdict_a", "verdict_b", "status"])
        missing = [c for c in [*CLAIM_KEY, "verdict"] if c not in frame]
        if missing:
            path = side.summary_path.parent / "verdicts.csv"
            raise CompareError(f"{path}: missing column(s) {', '.join(missing)}")
        frame = frame.copy()
        frame["condition"] = frame["condition"].fillna("").astype(str)
        frame["_n"] = frame.groupby(CLAIM_KEY).cumcount()
        keep = [*CLAIM_KEY, "_n", "verdict"] + [
            c for c in ("estimate", "ci_low", "ci_high") if c in frame
        ]
        frames.append(frame[keep])
    merged = frames[0].merge(frames[1], on=[*CLAIM_KEY, "_n"], how="outer", suffixes=("_a", "_b"))
    status = np.where(merged["verdict_a"] == merged["verdict_b"], "same", "changed")
    status = np.where(merged["verdict_a"].isna(), "only B", status)
    merged["status"] = np.where(merged["verdict_b"].isna(), "only A", status)
    return merged.drop(columns="_n")


# ----- output -----------------------------------------------------------------------
def write_table(comparison: Comparison, path: Path | str) -> None:
    """The full grid point × metric table as CSV; CompareError when it cannot be written."""
    try:
        comparison.table.to_csv(path, index=False, float_format="%.8g", lineterminator="\n")
    except OSError as err:
        reason = err.strerror or str(err) or type(err).__name__
        raise CompareError(f"{path}: cannot write the table ({reason})") from None


def _g(x: float, sign: bool = False, digits: int = 4) -> str:
    if not np.isfinite(x):
        return "-"
    return f"{x:+.{digits}g}" if sign else f"{x:.{digits}g}"


def format_report(comparison: Comparison, show_all: bool = False) -> str:
    """A readable report: alignment, the rows that are not equivalent (all with show_all), claims."""
    c = comparison
    lines = [f"{c.a.experiment or 'results'}: B − A"]
    for side in (c.a, c.b):
        device = side.meta.get("device_kind") or side.meta.get("backend") or "?"
        lines.append(f"  {side.label} = {side.path} ({len(side.summary)} runs, {device})")
    if c.environment:
        lines.append(c.environment)
    keys = c.factors + (["seed"] if c.paired_by_seed else [])
    lines.append(f"aligned on {', '.join(keys) or 'nothing (one group)'}")
    for label, only in (("A", c.only_a), ("B", c.only_b)):
        if len(only):
            lines.append(f"  only in {label}: {len(only)} runs")
            for point, group in list(only.groupby("_point", sort=False))[:8]:
                seeds = ", ".join(map(str, group["seed"])) if "seed" in group else ""
                lines.append(f"    {point}" + (f": seeds {seeds}" if seeds else ""))
    lines += [f"note: {note}" for note in c.notes]

    table = c.table if show_all else c.table[c.table["verdict"] != "equivalent"]
    if len(table):
        width = max(12, *map(len, table["metric"]))
        header = f"  {'metric':{width}s} {'n':>7s} {'mean A':>10s} {'mean B':>10s} {'B − A':>10s}"
        header += f"  {'95% CI':21s} {'tol':>9s}  verdict"
        for point, group in table.groupby("grid_point", sort=False):
            lines += ["", point, header]
            for r in group.itertuples():
                n = f"{r.n_pairs}" if r.pairing == "paired" else f"{r.n_a}/{r.n_b}"
                ci = f"[{_g(r.ci_low, True, 3)}, {_g(r.ci_high, True, 3)}]"
                lines.append(
                    f"  {r.metric:{width}s} {n:>7s} {_g(r.mean_a):>10s} {_g(r.mean_b):>10s} "
                    f"{_g(r.diff, True):>10s}  {ci:21s} {'±' + _g(r.tol, digits=3):>9s}  {r.verdict}"
                    + (f" ({r.note})" if r.note else "")
                )
    counts = c.counts()
    pairing = "paired by seed" if c.paired_by_seed else "Welch"
    lines += [
        "",
        f"{len(c.table)} metric × grid point rows ({pairing}; TOST at alpha 0.05): "
        + ", ".join(f"{counts[v]} {v}" for v in VERDICTS)
        + ("" if show_all or not counts["equivalent"] else " (equivalent rows: --all)"),
    ]
    if not c.claims.empty:
        changed = c.claims[c.claims["status"] != "same"]
        lines.append(f"claims: {len(c.claims)} verdict rows, {len(changed)} changed or one-sided")
        for r in changed.itertuples():
            condition = f" [{r.condition}]" if r.condition else ""
            estimates = ""
            if "estimate_a" in c.claims:
                estimates = (
                    f"  A {_g(r.estimate_a)} [{_g(r.ci_low_a)}, {_g(r.ci_high_a)}],"
                    f" B {_g(r.estimate_b)} [{_g(r.ci_low_b)}, {_g(r.ci_high_b)}]"
                )
            lines.append(
                f"  {r.claim_id}{condition} {r.statistic}: {r.verdict_a} → {r.verdict_b}"
                f" ({r.status}){estimates}"
            )
    code = c.exit_code()
    if code:
        result = f"B differs from A beyond tolerance in {counts['different']} rows"
    elif c.exit_code(strict=True):
        result = "no difference beyond tolerance, but not all equivalent (--strict would exit 1)"
    else:
        result = "equivalent"
    lines.append(f"result: {result} (exit {code})")
    return "\n".join(lines)
