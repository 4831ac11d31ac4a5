"""Process set-up: many processes (hosts) through JAX's own multi-process runtime,
and XLA's deterministic GPU kernels.

``initialize`` wraps ``jax.distributed.initialize``: with no address it lets JAX
detect the cluster (SLURM, Open MPI, TPU pods...); with ``coordinator``,
``num_processes`` and ``process_id`` it joins an explicit one. After it, every
process sees the global device list, :class:`toolkit.parallel.RunAxis` builds its
``runs`` mesh over all of them, and each process computes the runs on its own
devices. Process 0 alone writes results (:func:`is_writer`); every process must make
the same calls in the same order (the compiled programs are collective).

A worker whose coordinator is unreachable would be aborted by JAX's runtime after
the timeout (an uncatchable ``DEADLINE_EXCEEDED`` abort), so workers first probe the
coordinator's port and fail with a one-line :class:`DistributedError` instead.
"""

from __future__ import annotations

import os
import socket
import sys
import time
from pathlib import Path

import jax
import numpy as np

DEFAULT_TIMEOUT_S = 60


class DistributedError(RuntimeError):
    """The multi-process runtime could not start: the message says what to check."""


def _parse_address(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise DistributedError(f"--coordinator must be HOST:PORT, got {address!r}")
    return host, int(port)


def _wait_for_port(host: str, port: int, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            with socket.create_connection((host, port), timeout=1.0):
                return
        except OSError as err:
            if time.monotonic() >= deadline:
                raise DistributedError(
                    f"cannot reach the coordinator at {host}:{port} within {timeout_s:g} s "
                    f"({err.strerror or err}); start process 0 there first, or check "
                    "--coordinator and the network"
                ) from None
            time.sleep(0.2)


def initialize(
    coordinator: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
    timeout_s: float = DEFAULT_TIMEOUT_S,
) -> None:
    """Join (or start) the multi-process runtime; call before any device is used.

    With no arguments JAX detects the cluster from the environment. Otherwise all
    three of ``coordinator`` ("host:port"), ``num_processes`` and ``process_id`` are
    needed. Calling it again in a process that already joined does nothing.
    """
    if jax.distributed.is_initialized():
        return
    explicit = (coordinator, num_processes, process_id)
    if any(v is not None for v in explicit) and any(v is None for v in explicit):
        raise DistributedError(
            "give all of --coordinator HOST:PORT, --num-processes N and --process-id I "
            "(or none of them, to let JAX detect the cluster)"
        )
    if coordinator is not None:
        if not 0 <= process_id < num_processes:
            raise DistributedError(
                f"--process-id must be in 0..{num_processes - 1}, got {process_id}"
            )
        host, port = _parse_address(coordinator)
        if process_id != 0:
            _wait_for_port(host, port, timeout_s)
    try:
        jax.distributed.initialize(
            coordinator_address=coordinator,
            num_processes=num_processes,
            process_id=process_id,
            initialization_timeout=int(timeout_s),
        )
    except (RuntimeError, ValueError) as err:
        first_line = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise DistributedError(f"jax.distributed.initialize failed: {first_line}") from None


#: Environment variables by which ``jax.distributed.initialize()`` (no arguments)
#: finds a cluster, and the one giving the number of processes there.
CLUSTER_SIZE_VARIABLES = ("SLURM_NTASKS", "OMPI_COMM_WORLD_SIZE", "PMI_SIZE")


def cluster_detected(environ: dict | None = None) -> bool:
    """True when the environment describes a multi-process job (SLURM, Open MPI, PMI)."""
    environ = os.environ if environ is None else environ
    return any(int(environ.get(v, "1") or 1) > 1 for v in CLUSTER_SIZE_VARIABLES)


def start(
    requested: bool,
    coordinator: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
    timeout_s: float = DEFAULT_TIMEOUT_S,
) -> bool:
    """Join the runtime when asked (``--distributed``) or when the environment describes
    a multi-process job; return whether it did."""
    explicit = coordinator is not None or num_processes is not None or process_id is not None
    if explicit and not requested:
        raise DistributedError(
            "--coordinator, --num-processes and --process-id go with --distributed"
        )
    if not (requested or cluster_detected()):
        return False
    initialize(coordinator, num_processes, process_id, timeout_s)
    return True


def deterministic_gpu_ops() -> None:
    """XLA's deterministic GPU kernels (``--xla_gpu_deterministic_ops=true``), set in
    XLA_FLAGS; it must happen before JAX starts its backends."""
    flag = "--xla_gpu_deterministic_ops=true"
    flags = os.environ.get("XLA_FLAGS", "")
    if flag not in flags:
        os.environ["XLA_FLAGS"] = f"{flags} {flag}".strip()
    if "jax" in sys.modules:
        from jax._src import xla_bridge

        if xla_bridge.backends_are_initialized():
            raise DistributedError(
                "--deterministic must be set before JAX starts; run it in a fresh process"
            )


#: Programs that take less than this to compile are not worth a disk entry.
CACHE_MIN_COMPILE_S = 0.5


def compile_cache(enabled: bool = True, path: str | os.PathLike | None = None) -> str | None:
    """JAX's persistent compilation cache, on by default in the user's cache directory
    (``$TOOLKIT_CACHE/jax``, else ``~/.cache/toolkit/jax``), so a second identical run
    loads its compiled programs instead of compiling them again; ``enabled=False``
    (``--no-compile-cache``) leaves it off. Returns the directory in use (recorded in
    meta.json), or None. Entries are keyed by the program, the backend and the XLA
    flags, so a cached program computes exactly what a fresh compile would. Programs
    compiled faster than ``CACHE_MIN_COMPILE_S`` (``$TOOLKIT_CACHE_MIN_COMPILE_S``) are
    not stored."""
    if not enabled:
        return None
    from toolkit.data import cache_dir

    where = Path(path) if path is not None else cache_dir() / "jax"
    where.mkdir(parents=True, exist_ok=True)
    jax.config.update("jax_compilation_cache_dir", str(where))
    least = float(os.environ.get("TOOLKIT_CACHE_MIN_COMPILE_S", CACHE_MIN_COMPILE_S))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", least)
    return str(where)


#: JAX's monitoring events (jax._src.dispatch) for the three stages of a compile:
#: tracing to a jaxpr, lowering to StableHLO, and the backend compile (on a
#: persistent-cache hit, that stage is the cache read).
COMPILE_EVENTS = {
    "/jax/core/compile/jaxpr_trace_duration": "trace_s",
    "/jax/core/compile/jaxpr_to_mlir_module_duration": "lower_s",
    "/jax/core/compile/backend_compile_duration": "backend_s",
}
_CACHE_HIT_EVENT = "/jax/compilation_cache/cache_hits"
_open_clocks: list[CompileClock] = []


class CompileClock:
    """Seconds spent compiling while the ``with`` block runs (nested clocks all count).

    Fed by listeners on JAX's monitoring events, so it times exactly the compiles
    JAX does: ``trace_s`` + ``lower_s`` + ``backend_s`` = ``total_s``; ``programs``
    counts backend compile stages, a persistent-cache read included, and
    ``cache_hits`` those the cache served. The listeners feed every open clock, from
    any thread: the toolkit compiles on one thread, where a clock measures its block.
    """

    def __init__(self) -> None:
        self.seconds = dict.fromkeys(COMPILE_EVENTS.values(), 0.0)
        self.programs = 0
        self.cache_hits = 0

    def __enter__(self) -> CompileClock:
        _listen()
        _open_clocks.append(self)
        return self

    def __exit__(self, *exc) -> None:
        _open_clocks.remove(self)

    @property
    def total_s(self) -> float:
        return sum(self.seconds.values())

    def summary(self) -> dict:
        """Rounded figures for meta.json."""
        out = {name: round(value, 3) for name, value in self.seconds.items()}
        return out | {
            "total_s": round(self.total_s, 3),
            "programs": self.programs,
            "cache_hits": self.cache_hits,
        }


_listening = False


def _listen() -> None:
    global _listening
    if _listening:
        return

    def on_duration(event: str, seconds: float, **_) -> None:
        name = COMPILE_EVENTS.get(event)
        if name is None:
            return
        for clock in _open_clocks:
            clock.seconds[name] += seconds
            clock.programs += name == "backend_s"

    def on_event(event: str, **_) -> None:
        if event == _CACHE_HIT_EVENT:
            for clock in _open_clocks:
                clock.cache_hits += 1

    jax.monitoring.register_event_duration_secs_listener(on_duration)
    jax.monitoring.register_event_listener(on_event)
    _listening = True


def cache_location() -> str | None:
    """The persistent compilation cache directory in use, if any."""
    return jax.config.jax_compilation_cache_dir or None


def is_multiprocess() -> bool:
    return jax.process_count() > 1


def is_writer() -> bool:
    """True in the one process that writes results (process 0)."""
    return jax.process_index() == 0


def to_host(leaf) -> np.ndarray:
    """A host copy of a (possibly global, not fully addressable) array."""
    if isinstance(leaf, jax.Array) and not leaf.is_fully_addressable:
        from jax.experimental import multihost_utils

        return np.asarray(multihost_utils.process_allgather(leaf, tiled=True))
    return np.asarray(leaf)


def broadcast(values: np.ndarray) -> np.ndarray:
    """Process 0's copy of ``values`` in every process (identity with one process)."""
    if not is_multiprocess():
        return np.asarray(values)
    from jax.experimental import multihost_utils

    return np.asarray(multihost_utils.broadcast_one_to_all(np.asarray(values)))
