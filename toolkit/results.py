"""The results folder: tidy CSVs and ``meta.json`` with a schema version.

``results/<experiment>/<profile>/`` holds ``summary.csv`` (one row per run),
``history.csv`` (one row per run × evaluated epoch; ``history.csv.gz`` when large),
``verdicts.csv`` and ``meta.json``; experiments that ask for it also keep each run's
final parameters as ``params/<run_id>.npz`` (:func:`save_params`). Every write is
atomic (temporary file, then rename) and happens under a file lock, merging with what
is already there, so an interrupted run keeps every finished cohort and two
processes never corrupt a folder. Rows are kept in a canonical order so the same runs give the same bytes.
"""

from __future__ import annotations

import gzip
import io
import json
import os
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd
from filelock import FileLock

from toolkit import schema
from toolkit.schema import ResultsError, SchemaError  # noqa: F401 (re-exported)

SCHEMA_VERSION = 1
GZIP_ROWS = 20_000  # a history with more rows is stored as .csv.gz
FLOAT_FORMAT = "%.8g"


def atomic_write_bytes(path: Path, payload: bytes) -> None:
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(payload)
    os.replace(tmp, path)


def frame_bytes(frame: pd.DataFrame, gzipped: bool = False) -> bytes:
    text = frame.to_csv(index=False, float_format=FLOAT_FORMAT, lineterminator="\n").encode()
    return gzip.compress(text, mtime=0) if gzipped else text


def read_csv(path: Path) -> pd.DataFrame:
    """A results CSV, plain or gzipped, validated (:mod:`toolkit.schema`; a corrupt or
    truncated file raises SchemaError naming it); an empty frame when it does not exist."""
    return schema.read_table(Path(path))


class ResultsFolder:
    """One experiment × profile folder of results."""

    def __init__(self, path: Path | str):
        self.path = Path(path)

    # ----- reading ----------------------------------------------------------------
    def exists(self) -> bool:
        return (self.path / "summary.csv").exists()

    def meta(self) -> dict:
        """meta.json ({} when there is none), validated: a JSON object of known keys."""
        return schema.read_meta(self.path / "meta.json")

    def summary(self) -> pd.DataFrame:
        return self.table("summary")

    def history(self) -> pd.DataFrame:
        return self.table("history")

    def verdicts(self) -> pd.DataFrame:
        return self.table("verdicts")

    def check(self, complete: bool = False) -> dict:
        """Validate every results file here (schema, no junk or truncated rows); the meta.
        ``complete``: also require the summary, history and standalone tables."""
        return schema.check_folder(self.path, complete)

    def done_run_ids(self) -> set[str]:
        summary = self.summary()
        return set(summary["run_id"]) if "run_id" in summary else set()

    # ----- checks -----------------------------------------------------------------
    def prepare(self, experiment: str) -> None:
        """Create the folder, check it is writable and was written by this schema."""
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            probe = self.path / f".write-probe.{os.getpid()}"
            probe.write_bytes(b"")
            probe.unlink()
        except OSError as err:
            raise ResultsError(
                f"results folder {self.path} is not writable ({err.strerror}); choose another with --out"
            ) from err
        meta = self.meta()
        if meta and meta.get("schema_version") != SCHEMA_VERSION:
            raise ResultsError(
                f"{self.path} was written with results schema {meta.get('schema_version')}, this "
                f"toolkit writes {SCHEMA_VERSION}; use another --out or rerun with --force"
            )
        if meta and meta.get("experiment") not in (None, experiment):
            raise ResultsError(
                f"{self.path} holds results of {meta['experiment']}, not {experiment}; use another --out"
            )

    # ----- writing (locked, atomic, merged) -----------------------------------------
    def lock(self) -> FileLock:
        return FileLock(str(self.path / ".lock"))

    def table(self, name: str) -> pd.DataFrame:
        """An experiment's own per-run table (``<name>.csv``), e.g. loss slices; validated."""
        return schema.read_table(self.path / f"{name}.csv", name)

    def append_runs(
        self,
        summary: pd.DataFrame,
        history: pd.DataFrame,
        order: list[str],
        tables: dict[str, pd.DataFrame] | None = None,
    ) -> None:
        """Merge new runs' rows into summary, history and any per-run tables.

        ``order`` sorts the rows (then each table's own trailing columns keep their
        order); every frame has a ``run_id`` column.
        """
        frames = {"summary": summary, "history": history, **(tables or {})}
        with self.lock():
            for name, frame in frames.items():
                if frame.empty:
                    continue
                merged = _merge(self.table(name), frame, order + ["epoch"] * (name == "history"))
                self._write_frame(f"{name}.csv", merged, gz=len(merged) > GZIP_ROWS)

    def write_table(self, name: str, frame: pd.DataFrame) -> None:
        """Replace the whole table ``<name>.csv`` (tables not keyed by run)."""
        with self.lock():
            self._write_frame(f"{name}.csv", frame, gz=len(frame) > GZIP_ROWS)

    def clear(self) -> None:
        """Remove previous result tables and saved parameters (``--force``)."""
        with self.lock():
            for path in [*self.path.glob("*.csv"), *self.path.glob("*.csv.gz")]:
                path.unlink(missing_ok=True)
            for path in self.path.glob(f"{PARAMS_DIR}/*.npz"):
                path.unlink(missing_ok=True)

    def write_verdicts(self, verdicts: pd.DataFrame) -> None:
        with self.lock():
            self._write_frame("verdicts.csv", verdicts)

    def update_meta(self, update: dict) -> dict:
        """Merge ``update`` into meta.json; lists under "invocations"/"cohorts" are appended."""
        with self.lock():
            meta = self.meta()
            for key, value in update.items():
                if key in ("invocations", "cohorts"):
                    meta[key] = meta.get(key, []) + list(value)
                else:
                    meta[key] = value
            meta["schema_version"] = SCHEMA_VERSION
            payload = json.dumps(meta, indent=2, sort_keys=True, default=str) + "\n"
            atomic_write_bytes(self.path / "meta.json", payload.encode())
            return meta

    def _write_frame(self, name: str, frame: pd.DataFrame, gz: bool = False) -> None:
        target = self.path / (f"{name}.gz" if gz else name)
        stale = self.path / (name if gz else f"{name}.gz")
        atomic_write_bytes(target, frame_bytes(frame, gzipped=gz))
        stale.unlink(missing_ok=True)


PARAMS_DIR = "params"


def flatten_params(params: Mapping, prefix: str = "") -> dict[str, np.ndarray]:
    """Nested dicts of arrays (a Flax parameter tree) → {'params/Dense_0/kernel': array}."""
    flat: dict[str, np.ndarray] = {}
    for key, value in params.items():
        if not isinstance(key, str) or not key or "/" in key:
            raise ValueError(
                f"parameter key {key!r} under {prefix or 'the root'!r} cannot be saved"
            )
        name = f"{prefix}/{key}" if prefix else key
        if isinstance(value, Mapping):
            flat.update(flatten_params(value, name))
        else:
            flat[name] = np.asarray(value)
            if flat[name].dtype == object:
                raise ValueError(f"parameter {name!r} is not a numeric array")
    return flat


def unflatten_params(flat: dict[str, np.ndarray]) -> dict:
    """Inverse of :func:`flatten_params`: '/'-joined keys → nested dicts."""
    tree: dict = {}
    for name, value in flat.items():
        *parents, leaf = name.split("/")
        node = tree
        for key in parents:
            node = node.setdefault(key, {})
        node[leaf] = value
    return tree


def save_params(folder: ResultsFolder | Path | str, run_id: str, params) -> Path:
    """Write one run's parameters to ``<folder>/params/<run_id>.npz``, atomically.

    Keys are the '/'-joined Flax paths; values keep their dtype. Plain ``np.savez``
    (no pickle, no compression: float32 weights hardly compress), so the file opens
    with ``np.load(path)`` anywhere, and two folders (a CPU and a GPU run of the same
    seeds) can be diffed run by run.
    """
    root = folder.path if isinstance(folder, ResultsFolder) else Path(folder)
    target = root / PARAMS_DIR / f"{run_id}.npz"
    target.parent.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    np.savez(buffer, **flatten_params(params))
    atomic_write_bytes(target, buffer.getvalue())
    return target


def load_params(path: Path | str) -> dict:
    """The nested parameter dict saved by :func:`save_params` (NumPy arrays)."""
    with np.load(path, allow_pickle=False) as stored:
        return unflatten_params({name: stored[name] for name in stored.files})


def _merge(old: pd.DataFrame, new: pd.DataFrame, order: list[str]) -> pd.DataFrame:
    """Rows of ``old`` whose run_id is not in ``new``, plus ``new``, canonically sorted."""
    if not old.empty and "run_id" in old:
        old = old[~old["run_id"].isin(set(new["run_id"]))]
        merged = pd.concat([old, new], ignore_index=True) if not old.empty else new
    else:
        merged = new
    # A round trip through CSV text gives old and new rows the same dtypes.
    merged = pd.read_csv(io.BytesIO(frame_bytes(merged)))
    keys = [c for c in order if c in merged.columns]
    # Rows of one run keep their written order (stable sort), e.g. a slice's points.
    return merged.sort_values(keys, kind="stable").reset_index(drop=True)
