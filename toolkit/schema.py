"""What a results folder's files must look like, checked on every read.

Every results file is validated before anything uses it: ``meta.json`` must be a JSON
object written by this toolkit (``schema_version``, known keys with their types);
every CSV (``summary.csv``, ``history.csv(.gz)``, ``verdicts.csv`` and per-run or
standalone tables) must be UTF-8 text with a header, every row as many fields as the
header, a final line end (a truncated write has none), its key columns filled and its
numeric columns numbers. A file that fails raises :class:`SchemaError` naming it and
saying what to do; nothing here repairs, drops rows or rewrites.

Two levels: a read (``ResultsFolder.summary()``, ``.table(name)``, …) checks the file
itself and the columns it has; :func:`check_folder` (before ``run`` resumes, and
before ``figures`` and ``report`` draw) checks every file of a folder and, for a folder
the runner wrote (its meta.json names the experiment), that the tables hold the
columns the runner always writes.
"""

from __future__ import annotations

import csv
import dataclasses
import gzip
import io
import json
import zlib
from dataclasses import dataclass
from pathlib import Path

import pandas as pd


class ResultsError(RuntimeError):
    """A results folder that cannot be used; the message says what to do."""


class SchemaError(ResultsError):
    """A results file that is corrupt, truncated or not the toolkit's."""


FIX = "restore it, or delete it and rerun `toolkit run` (with --force to recompute every run)"


def _fail(path: Path, problem: str) -> SchemaError:
    return SchemaError(f"{path}: {problem}; {FIX}")


# ----- meta.json ------------------------------------------------------------------
#: Keys the toolkit writes into meta.json and the JSON types they hold. Other keys are
#: allowed (later toolkits add some), but a file without ``schema_version`` is not ours.
META_KEYS: dict[str, tuple[type, ...]] = {
    "schema_version": (int,),
    "experiment": (str,),
    "profile": (str,),
    "claims": (list,),
    "overrides": (dict,),
    "seeds": (int,),
    "root_seed": (int,),
    "versions": (dict,),
    "backend": (str,),
    "devices": (list,),
    "device_kind": (str,),
    "jax_threefry_partitionable": (bool,),
    "datasets": (dict,),
    "cohorts": (list,),
    "invocations": (list,),
    "deterministic": (bool,),
    "xla_flags": (str,),
    "processes": (int,),
    "memory_budget_bytes": (int,),
    "standalone_tables": (list,),
    "standalone_s": (int, float),
    "done_run_ids": (list,),
}
_JSON_NAMES = {int: "an integer", float: "a number", str: "a string", bool: "true/false"}
_JSON_NAMES |= {list: "a list", dict: "an object"}


def read_meta(path: Path) -> dict:
    """The meta.json at ``path`` ({} when there is none), validated."""
    path = Path(path)
    if not path.exists():
        return {}
    payload = _read_bytes(path)
    try:
        meta = json.loads(payload.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise _fail(path, f"not valid JSON ({_first_line(err)})") from None
    return check_meta(path, meta)


def check_meta(path: Path, meta) -> dict:
    if not isinstance(meta, dict):
        raise _fail(path, f"holds a JSON {type(meta).__name__}, not an object")
    if "schema_version" not in meta:
        raise _fail(path, "not a toolkit meta.json (no schema_version)")
    for key, types in META_KEYS.items():
        if key not in meta:
            continue
        value = meta[key]
        wrong = isinstance(value, bool) and bool not in types  # JSON true is not a number
        if wrong or not isinstance(value, types):
            raise _fail(path, f'"{key}" should be {_JSON_NAMES[types[0]]}, got {value!r:.40}')
    for key in ("cohorts", "invocations"):
        if any(not isinstance(entry, dict) for entry in meta.get(key, [])):
            raise _fail(path, f'every entry of "{key}" should be an object')
    return meta


# ----- CSV tables -----------------------------------------------------------------
@dataclass(frozen=True)
class TableSchema:
    """Columns of one kind of table: keys (never empty), numeric and boolean columns
    (checked when present), and the core the runner always writes (checked by
    :func:`check_folder` in a folder the runner wrote)."""

    keys: tuple[str, ...] = ()
    numeric: tuple[str, ...] = ()
    boolean: tuple[str, ...] = ()
    core: tuple[str, ...] = ()
    unique: tuple[str, ...] = ()  # no two rows share these columns' values


def _engine_names() -> tuple[tuple[str, ...], tuple[str, ...]]:
    from toolkit.engine import HPARAMS, METRICS

    return tuple(METRICS), tuple(HPARAMS)


#: Core columns of verdicts.csv (rows may carry more: conditions, tests, findings).
VERDICT_CORE = ("claim_id", "role", "statistic", "estimate", "ci_low", "ci_high", "verdict")


def schema_for(name: str) -> TableSchema:
    """The schema of table ``name`` (summary, history, verdicts, or an experiment's own)."""
    metrics, hparams = _engine_names()
    if name == "summary":
        counts = ("seed", "steps", "epochs", "batch_size", "steps_per_epoch", "stopped_epoch")
        measured = tuple(f"{when}_{m}" for when in ("init", "final", "best") for m in metrics)
        return TableSchema(
            keys=("run_id", "seed"),
            numeric=counts + ("best_val_epoch",) + hparams + measured,
            boolean=("diverged",),
            core=("experiment", "run_id", "seed", "steps", "diverged", "epochs")
            + tuple(f"final_{m}" for m in metrics),
            unique=("run_id",),
        )
    if name == "history":
        return TableSchema(
            keys=("run_id", "epoch"),
            numeric=("seed", "epoch", "step") + metrics,
            core=("run_id", "seed", "epoch", "step") + metrics,
            unique=("run_id", "epoch"),
        )
    if name == "verdicts":
        return TableSchema(
            keys=("claim_id", "verdict"),
            numeric=("estimate", "ci_low", "ci_high", "n_seeds"),
            core=VERDICT_CORE,
        )
    return TableSchema(keys=("run_id",), numeric=("seed",))  # per-run or standalone tables


def read_table(
    path: Path, name: str | None = None, required: tuple[str, ...] = (), unique: bool = True
) -> pd.DataFrame:
    """The CSV at ``path`` (or ``path.gz``), validated against :func:`schema_for`
    ``name`` (default: the file's stem); an empty frame when neither file exists.
    ``unique=False`` leaves repeated keys to the caller (compare names their grid point)."""
    path = Path(path)
    for candidate in (path, Path(f"{path}.gz")):
        if candidate.exists():
            payload = _read_bytes(candidate)
            return parse_table(candidate, payload, name or _stem(path), required, unique)
    return pd.DataFrame()


def parse_table(
    path: Path, payload: bytes, name: str, required: tuple[str, ...] = (), unique: bool = True
) -> pd.DataFrame:
    """A validated frame from a CSV file's bytes (gzipped when ``path`` ends in .gz)."""
    if path.name.endswith(".gz"):
        try:
            payload = gzip.decompress(payload)
        except (OSError, EOFError, zlib.error) as err:
            raise _fail(path, f"not a readable gzip file ({_first_line(err)})") from None
    if not payload.strip():
        raise _fail(path, "empty file")
    if b"\0" in payload:
        raise _fail(path, "binary content, not CSV text")
    try:
        text = payload.decode("utf-8")
    except UnicodeDecodeError as err:
        raise _fail(path, f"not UTF-8 text (byte {err.start})") from None
    if not text.endswith("\n"):
        raise _fail(path, "truncated: the last line has no line end")
    _check_rows(path, text)
    frame = pd.read_csv(io.BytesIO(payload))
    schema = schema_for(name)
    if not unique:
        schema = dataclasses.replace(schema, unique=())
    _check_columns(path, frame, schema, required)
    return frame


def _check_rows(path: Path, text: str) -> list[str]:
    """Every line has as many fields as the header; returns the header."""
    if '"' in text:  # quoted fields (commas, line ends inside): the csv module's reading
        rows = list(csv.reader(io.StringIO(text, newline="")))
    else:
        rows = [line.split(",") for line in text[:-1].split("\n")]
    header = [c.strip() for c in rows[0]]
    if any(not c for c in header):
        raise _fail(path, "a column without a name in the header (junk first line?)")
    duplicated = sorted({c for c in header if header.count(c) > 1})
    if duplicated:
        raise _fail(path, f"column {duplicated[0]!r} appears twice in the header")
    for number, row in enumerate(rows[1:], start=2):
        if len(row) != len(header):
            raise _fail(
                path,
                f"line {number} has {len(row)} fields, the header {len(header)} "
                "(a junk or truncated row)",
            )
    return header


def _check_columns(path: Path, frame: pd.DataFrame, schema: TableSchema, required) -> None:
    missing = [c for c in required if c not in frame.columns]
    if missing:
        raise _fail(path, f"no column {missing[0]!r} (the toolkit always writes it)")
    if frame.empty:
        return
    for column in schema.keys:
        if column in frame.columns and frame[column].isna().any():
            line = int(frame.index[frame[column].isna()][0]) + 2
            raise _fail(path, f"line {line}: empty {column!r}")
    for column in [c for c in frame.columns if c in schema.numeric]:
        values = frame[column]
        if pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values):
            continue
        bad = pd.to_numeric(values, errors="coerce").isna() & values.notna()
        line = int(frame.index[bad][0]) + 2 if bad.any() else 2
        shown = values[bad].iloc[0] if bad.any() else values.iloc[0]
        raise _fail(path, f"line {line}: column {column!r} should be a number, got {shown!r:.30}")
    for column in schema.boolean:
        if column in frame.columns and not pd.api.types.is_bool_dtype(frame[column]):
            bad = ~frame[column].isin([True, False, "True", "False"])
            line = int(frame.index[bad][0]) + 2 if bad.any() else 2
            raise _fail(path, f"line {line}: column {column!r} should be True or False")
    unique = [c for c in schema.unique if c in frame.columns]
    if unique and len(unique) == len(schema.unique) and frame.duplicated(unique).any():
        line = int(frame.index[frame.duplicated(unique)][0]) + 2
        raise _fail(path, f"line {line} repeats {', '.join(unique)} of an earlier row")


# ----- a whole folder -------------------------------------------------------------
def check_folder(path: Path, complete: bool = False) -> dict:
    """Validate every results file in the folder ``path``; returns its meta.

    Tables are checked as their reads check them; in a folder the runner wrote
    (meta.json names the experiment) summary, history and verdicts must also have
    the runner's core columns. ``complete`` (to draw or report from it): such a
    folder must also hold its summary, its history and its standalone tables.
    """
    path = Path(path)
    meta = read_meta(path / "meta.json")
    strict = bool(meta.get("experiment"))
    if complete and strict:
        needed = ["summary", "history", *meta.get("standalone_tables", [])]
        present = {_stem(p) for p in [*path.glob("*.csv"), *path.glob("*.csv.gz")]}
        for name in needed:
            if name not in present:
                raise SchemaError(
                    f"{path / (name + '.csv')}: missing (the results are incomplete); "
                    "rerun `toolkit run` for this experiment and profile"
                )
    seen: set[str] = set()
    for file in sorted([*path.glob("*.csv"), *path.glob("*.csv.gz")]):
        name = _stem(file)
        if name in seen:
            raise _fail(file, f"both {name}.csv and {name}.csv.gz exist; keep one")
        seen.add(name)
        required = schema_for(name).core if strict else ()
        parse_table(file, _read_bytes(file), name, required)
    return meta


def _stem(path: Path) -> str:
    return Path(path).name.removesuffix(".gz").removesuffix(".csv")


def _read_bytes(path: Path) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as err:
        raise SchemaError(
            f"{path}: cannot be read ({err.strerror}); check its permissions"
        ) from None


def _first_line(err: Exception) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__
