"""The results folder: tidy CSVs and ``meta.json`` with a schema version.

``results/<experiment>/<profile>/`` holds ``summary.csv`` (one row per run),
``history.csv`` (one row per run × evaluated epoch), ``verdicts.csv`` and ``meta.json``
(any table but summary and verdicts is ``<name>.csv.gz`` when its text is over 300 kB,
so committed results stay small); experiments that ask for it also keep each run's
final parameters as ``params/<run_id>.npz`` (:func:`save_params`). Every write is
atomic (temporary file, flushed to disk, then rename) and happens under a file lock,
merging with what is already there. Rows are kept in a canonical order so the same
runs give the same bytes.

A run is *done* only when it is listed in meta.json's ``done_run_ids`` (the
manifest). A cohort is committed by :meth:`ResultsFolder.commit_cohort`: its saved
parameters, per-run tables, history and summary rows are written first, and the
manifest entry (with the cohort's provenance) last, in one atomic rewrite of
meta.json. A kill at any point in between leaves rows of runs that are not done;
:meth:`ResultsFolder.recover` drops them before the next run trains (they are then
trained again and written anew). Folders written before the manifest existed count a
run as done when it is in summary and history; their first commit records that set.

One writer per folder: :meth:`ResultsFolder.writing` holds a lock for a whole
``toolkit run`` (a second one waits, or fails at once), and removes temporary files
that a killed writer left behind. An invocation that trains nothing leaves meta.json
alone: it is logged to ``invocations.log`` (untracked) instead.
"""

from __future__ import annotations

import gzip
import io
import json
import os
import socket
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pandas as pd
from filelock import FileLock, Timeout

from toolkit import schema
from toolkit.schema import ResultsError, SchemaError  # noqa: F401 (re-exported)

SCHEMA_VERSION = 1
#: A table whose CSV text is larger is stored as .csv.gz (pandas reads it directly), so
#: committed results stay small; summary and verdicts stay plain text for any reader.
GZIP_BYTES = 300_000
PLAIN = ("summary.csv", "verdicts.csv")
FLOAT_FORMAT = "%.8g"
#: meta.json key listing the runs whose files are all written (the manifest).
MANIFEST = "done_run_ids"
WRITER_LOCK = ".writer.lock"  # held by the one process writing the folder
WRITER_INFO = ".writer"  # who holds it: pid, host, since (for a waiting process)
INVOCATIONS_LOG = "invocations.log"  # every invocation, one JSON line each (untracked)
PENDING_DIR = ".pending"  # trained cohorts whose measurement failed (resume re-measures)


def atomic_write_bytes(path: Path, payload: bytes) -> None:
    """Write ``payload`` to ``path`` whole or not at all, and durably.

    The bytes go to ``.<name>.<pid>.tmp`` beside it, are flushed to disk, and the
    temporary file is renamed over ``path`` (atomic on POSIX); the rename is flushed
    too, so a later write never reaches the disk before this one.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as handle:
        handle.write(payload)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)
    _fsync_dir(path.parent)


def _fsync_dir(path: Path) -> None:
    try:
        descriptor = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(descriptor)
    except OSError:
        pass  # some file systems cannot sync a directory
    finally:
        os.close(descriptor)


def frame_bytes(frame: pd.DataFrame) -> bytes:
    return frame.to_csv(index=False, float_format=FLOAT_FORMAT, lineterminator="\n").encode()


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
        """Runs whose rows and files are all written: the manifest in meta.json.

        A folder written before the manifest existed (no ``done_run_ids`` key) counts
        the runs that are in both summary and history.
        """
        meta = self.meta()
        if MANIFEST in meta:
            return set(meta[MANIFEST])
        summary, history = self.summary(), self.history()
        if "run_id" not in summary or "run_id" not in history:
            return set()
        return set(summary["run_id"]) & set(history["run_id"])

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
        # one instance per path: re-entrant, e.g. a meta rewrite inside clear()
        return FileLock(str(self.path / ".lock"), is_singleton=True)

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
                self._write_frame(f"{name}.csv", merged)

    def write_table(self, name: str, frame: pd.DataFrame) -> None:
        """Replace the whole table ``<name>.csv`` (tables not keyed by run)."""
        with self.lock():
            self._write_frame(f"{name}.csv", frame)

    def clear(self) -> None:
        """Remove previous result tables and saved parameters (``--force``).

        The manifest is emptied first (and the cohort entries it covered dropped), so a
        kill halfway leaves no run counted as done whose files are gone.
        """
        with self.lock():
            if (self.path / "meta.json").exists() or any(self.path.glob("*.csv*")):
                self._rewrite_meta(lambda meta: {**meta, MANIFEST: [], "cohorts": []})
            for path in [*self.path.glob("*.csv"), *self.path.glob("*.csv.gz")]:
                path.unlink(missing_ok=True)
            for path in [*self.path.glob(f"{PARAMS_DIR}/*.npz"), *self._pending_files()]:
                path.unlink(missing_ok=True)

    def commit_cohort(
        self,
        summary: pd.DataFrame,
        history: pd.DataFrame,
        order: list[str],
        tables: dict[str, pd.DataFrame] | None = None,
        params: dict[str, Mapping] | None = None,
        meta: dict | None = None,
    ) -> None:
        """Write one cohort so that its runs are done only once all of it is written.

        Order: the manifest of a folder that has none yet (the runs done so far), then
        ``params`` (run id → parameter tree, ``params/<run_id>.npz``), the per-run
        ``tables``, history, summary, and last meta.json: the cohort's run ids added
        to the manifest, merged with ``meta`` (e.g. the cohort's entry under
        "cohorts", appended), in one atomic rewrite.
        """
        new_ids = set(summary["run_id"])
        if MANIFEST not in self.meta():
            done = sorted(self.done_run_ids() - new_ids)
            self._rewrite_meta(lambda old: {**old, MANIFEST: done})
        for run_id, tree in (params or {}).items():
            save_params(self, run_id, tree)
        self.append_runs(summary, history, order, tables)
        update = dict(meta or {})

        def add(old: dict) -> dict:
            merged = _merged_meta(old, update)
            merged[MANIFEST] = sorted(set(old.get(MANIFEST, [])) | new_ids)
            return merged

        self._rewrite_meta(add)

    def recover(self) -> list[str]:
        """Drop what a killed writer left of runs that are not done; the names touched.

        Rows of such runs in summary, history and per-run tables, their saved
        parameters, and checkpoints of cohorts whose runs are all done. Only folders
        with a manifest (older folders were written whole). Call under
        :meth:`writing`.
        """
        meta = self.meta()
        if MANIFEST not in meta:
            return []
        done = set(meta[MANIFEST])
        keep_whole = {"verdicts", *meta.get("standalone_tables", [])}
        touched = []
        names = {
            p.name.split(".")[0]
            for p in self.path.glob("*.csv*")
            if p.is_file() and not p.name.startswith(".")
        }
        with self.lock():
            for name in sorted(names - keep_whole):
                frame = self.table(name)
                if "run_id" not in frame or frame["run_id"].isin(done).all():
                    continue
                kept = frame[frame["run_id"].isin(done)].reset_index(drop=True)
                self._write_frame(f"{name}.csv", kept)
                touched.append(f"{name}.csv")
            for path in self.path.glob(f"{PARAMS_DIR}/*.npz"):
                if path.stem not in done:
                    path.unlink(missing_ok=True)
                    touched.append(f"{PARAMS_DIR}/{path.name}")
            for path in self._pending_files():
                with np.load(path, allow_pickle=False) as stored:
                    run_ids = set(stored["run_ids"].tolist()) if "run_ids" in stored else set()
                if run_ids <= done:
                    path.unlink(missing_ok=True)
        return touched

    def remove_stale_temp_files(self) -> list[Path]:
        """Temporary files (``.<name>.<pid>.tmp``) a killed writer left; call under
        :meth:`writing` (no other writer can be mid-write then)."""
        stale = [*self.path.glob(".*.tmp"), *self.path.glob(f"{PARAMS_DIR}/.*.tmp")]
        stale += self.path.glob(f"{PENDING_DIR}/.*.tmp")
        for path in stale:
            path.unlink(missing_ok=True)
        return stale

    @contextmanager
    def writing(
        self, wait: bool = True, announce: Callable[[str], None] | None = None
    ) -> Iterator[None]:
        """Hold the folder's writer lock for a whole run (one writer per folder).

        If another process holds it: ``wait`` blocks until it is released (calling
        ``announce`` once with who holds it), else ResultsError at once. The lock is
        the OS's (flock): a killed holder releases it. Inside, stale temporary files
        are removed first.
        """
        self.path.mkdir(parents=True, exist_ok=True)
        lock = FileLock(str(self.path / WRITER_LOCK))
        try:
            lock.acquire(timeout=0)
        except Timeout:
            holder = self._writer()
            if not wait:
                raise ResultsError(
                    f"{self.path} is being written by {holder}; wait for it to finish, or "
                    "drop --no-wait to wait"
                ) from None
            (announce or _to_stderr)(f"waiting for {holder}, which is writing {self.path}")
            lock.acquire()
        try:
            info = {"pid": os.getpid(), "host": socket.gethostname(), "since": _now()}
            atomic_write_bytes(self.path / WRITER_INFO, json.dumps(info).encode())
            self.remove_stale_temp_files()
            yield
        finally:
            (self.path / WRITER_INFO).unlink(missing_ok=True)
            lock.release()

    def _writer(self) -> str:
        try:
            info = json.loads((self.path / WRITER_INFO).read_text())
            return f"pid {info['pid']} on {info['host']} (since {info['since']})"
        except (OSError, ValueError, KeyError, TypeError):
            return "another process"

    def log_invocation(self, entry: dict) -> None:
        """Append ``entry`` to ``invocations.log`` (one JSON line; untracked by git)."""
        with self.lock(), open(self.path / INVOCATIONS_LOG, "a") as log:
            log.write(json.dumps(entry, sort_keys=True, default=str) + "\n")

    # ----- trained cohorts kept when their measurement fails ------------------------
    def save_pending(self, key: str, run_ids: list[str], arrays: Mapping) -> Path:
        """Keep a trained cohort (nested dicts of arrays) under ``.pending/<key>.npz``."""
        target = self.path / PENDING_DIR / f"{key}.npz"
        target.parent.mkdir(parents=True, exist_ok=True)
        flat = flatten_params(arrays)
        flat["run_ids"] = np.array(run_ids)
        buffer = io.BytesIO()
        np.savez(buffer, **flat)
        atomic_write_bytes(target, buffer.getvalue())
        return target

    def load_pending(self, key: str, run_ids: list[str]) -> dict | None:
        """The arrays kept by :meth:`save_pending` for exactly these runs, else None."""
        path = self.path / PENDING_DIR / f"{key}.npz"
        if not path.exists():
            return None
        with np.load(path, allow_pickle=False) as stored:
            flat = {name: stored[name] for name in stored.files}
        if flat.pop("run_ids", np.array([])).tolist() != list(run_ids):
            return None
        return unflatten_params(flat)

    def drop_pending(self, key: str) -> None:
        (self.path / PENDING_DIR / f"{key}.npz").unlink(missing_ok=True)

    def _pending_files(self) -> list[Path]:
        return sorted(self.path.glob(f"{PENDING_DIR}/*.npz"))

    def write_verdicts(self, verdicts: pd.DataFrame) -> None:
        with self.lock():
            self._write_frame("verdicts.csv", verdicts)

    def update_meta(self, update: dict) -> dict:
        """Merge ``update`` into meta.json; lists under "invocations"/"cohorts" are appended."""
        return self._rewrite_meta(lambda meta: _merged_meta(meta, update))

    def _rewrite_meta(self, change: Callable[[dict], dict]) -> dict:
        with self.lock():
            meta = change(self.meta())
            meta["schema_version"] = SCHEMA_VERSION
            payload = json.dumps(meta, indent=2, sort_keys=True, default=str) + "\n"
            atomic_write_bytes(self.path / "meta.json", payload.encode())
            return meta

    def _write_frame(self, name: str, frame: pd.DataFrame) -> None:
        text = frame_bytes(frame)
        gz = name not in PLAIN and len(text) > GZIP_BYTES
        target = self.path / (f"{name}.gz" if gz else name)
        stale = self.path / (name if gz else f"{name}.gz")
        atomic_write_bytes(target, gzip.compress(text, mtime=0) if gz else text)
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


def _merged_meta(meta: dict, update: dict) -> dict:
    merged = dict(meta)
    for key, value in update.items():
        if key in ("invocations", "cohorts"):
            merged[key] = merged.get(key, []) + list(value)
        else:
            merged[key] = value
    return merged


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


def _to_stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


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
