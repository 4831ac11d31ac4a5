"""The one place that decides how a cohort's run axis is spread over devices.

A cohort function is written for one run, vmapped over the runs on a device, and
mapped over devices with ``jax.shard_map`` on a 1-D ``runs`` mesh. That is
``jax.pmap``'s current form: since JAX 0.8 pmap is itself ``jit(shard_map(...))``
and in maintenance mode (JAX changelog 0.8.0, 0.10.0; the "migrate_pmap" guide), and
the same mesh carries over to several hosts. The run axis is padded to a multiple
of the device count with copies of the first run, and the padding is dropped after.
On one device this is a plain ``jit(vmap(f))``.

With ``run_batch`` set, each device runs its runs ``run_batch`` at a time
(``lax.map`` with a batch size: a sequential loop over vmapped groups inside the same
program), which bounds the activation memory of a large cohort; the results agree to
float32 rounding. With ``run_batch=1`` every run is computed alone by the same loop
body, whatever the number of runs on the device (one included) and the run's place
among them: a run's arithmetic never sees its neighbours, so its numbers are bitwise
the same alone, in any cohort, or added later by a resume (the engine's layout on a
CPU; see :func:`toolkit.engine.choose_run_batch`). In a multi-process run (:mod:`toolkit.distributed`) the mesh spans every
process's devices, inputs are assembled as global arrays and outputs gathered.

**Who keeps a compiled program alive.** :meth:`RunAxis.program` builds a new program
that its caller owns (a cohort keeps its training programs and drops them with
itself). :meth:`RunAxis.map_runs` caches its programs for as long as their function
lives, and no longer: the cache holds the function weakly, so a measurement function
built once per architecture (``functools.cache``) is compiled once for every cohort of
that architecture, while a lambda or a bound method of a cohort, and whatever it
closes over, is freed with its last caller. (A RunAxis lives as long as an experiment
run; a cache that held every function would keep every cohort it ever mapped.)
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from toolkit.distributed import to_host

RUNS = "runs"


class RunAxis:
    """A mesh over ``devices`` with one axis, ``runs``, and helpers to use it."""

    def __init__(self, devices: Sequence[jax.Device] | None = None):
        self.devices = list(devices) if devices is not None else jax.devices()
        self.mesh = Mesh(np.array(self.devices), (RUNS,))
        # function → (weak ref to it, {(num_run_args, run_batch): program}), held weakly
        self._mapped: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()

    @property
    def num_devices(self) -> int:
        return len(self.devices)

    def padded_size(self, num_runs: int) -> int:
        return -(-num_runs // self.num_devices) * self.num_devices

    def pad(self, tree, num_runs: int):
        """Pad every leaf's leading (run) axis to a multiple of the device count."""
        return pad_to(tree, num_runs, self.padded_size(num_runs))

    def put_runs(self, tree):
        """Place a pytree whose leaves have a (padded) leading run axis, sharded over runs."""
        return self._put(tree, NamedSharding(self.mesh, PartitionSpec(RUNS)))

    def put_shared(self, tree):
        """Place a pytree replicated on every device (datasets, constants)."""
        return self._put(tree, NamedSharding(self.mesh, PartitionSpec()))

    def _put(self, tree, sharding: NamedSharding):
        if jax.process_count() == 1:
            return jax.device_put(tree, sharding)
        # Several processes: every process holds the whole (identical) host value and
        # contributes the shards on its own devices.
        return jax.tree_util.tree_map(lambda leaf: _global_array(leaf, sharding), tree)

    def map_runs(self, fn: Callable, num_run_args: int, run_batch: int | None = None) -> Callable:
        """jit(shard_map(vmap(fn))): the first ``num_run_args`` arguments carry a run axis.

        The remaining arguments are shared by every run (broadcast, replicated).
        Every output carries the run axis. ``run_batch``: runs computed at once per
        device (None: all of them). The program is cached per ``fn`` and ``run_batch``
        for as long as ``fn`` lives (the cache holds ``fn`` weakly), so calling again
        with the same function (and shapes) does not recompile; the returned callable
        holds ``fn``, so the program lives at least as long as the caller keeps it.
        """
        if fn not in self._mapped:
            # The cached programs reach ``fn`` through a weak reference: a strong one
            # from the cache's value would keep its weak key alive forever.
            self._mapped[fn] = (weakref.ref(fn), {})
        # An equal function (two bound methods of one object compare equal) finds the
        # entry of the first; the caller holds that one, the one its programs trace.
        owner_ref, by_layout = self._mapped[fn]
        layout = (num_run_args, run_batch)
        if layout not in by_layout:
            by_layout[layout] = self._build(owner_ref, num_run_args, run_batch, ())
        return _Holding(by_layout[layout], owner_ref())

    def program(
        self,
        fn: Callable,
        num_run_args: int,
        run_batch: int | None = None,
        donate_argnums: tuple[int, ...] = (),
    ) -> Callable:
        """Like :meth:`map_runs`, but a new program, not cached: the caller owns it and
        it dies with the caller. ``donate_argnums``: arguments whose buffers the program
        may reuse for its outputs (the caller must not read them after the call)."""
        return self._build(lambda: fn, num_run_args, run_batch, donate_argnums)

    def _build(
        self,
        fn_ref: Callable[[], Callable | None],
        num_run_args: int,
        run_batch: int | None,
        donate_argnums: tuple[int, ...],
    ) -> Callable:

        def per_device(*args):
            fn = fn_ref()
            if fn is None:
                raise RuntimeError("a cached run-axis program outlived its function")
            run_args, shared = args[:num_run_args], args[num_run_args:]
            local_runs = jax.tree_util.tree_leaves(run_args)[0].shape[0]
            # run_batch=1 always loops, even over one run: the same program body for a
            # run alone as for a run among others (bitwise run identity).
            if run_batch is None or (run_batch > 1 and run_batch >= local_runs):
                in_axes = (0,) * num_run_args + (None,) * len(shared)
                return jax.vmap(fn, in_axes=in_axes)(*args)
            return jax.lax.map(lambda a: fn(*a, *shared), run_args, batch_size=run_batch)

        def specs(num_args: int):
            return tuple(
                PartitionSpec(RUNS) if i < num_run_args else PartitionSpec()
                for i in range(num_args)
            )

        def mapped(*args):
            sharded = jax.shard_map(
                per_device,
                mesh=self.mesh,
                in_specs=specs(len(args)),
                out_specs=PartitionSpec(RUNS),
                # Runs never communicate, so there is no varying-axis bookkeeping to check;
                # with the check on, every scan carry built from constants needs a pcast.
                check_vma=False,
            )
            return sharded(*args)

        return jax.jit(mapped, donate_argnums=donate_argnums)


class _Holding:
    """A cached program with a strong reference to its function: while a caller holds
    this, the function (weakly held by the cache) is alive whenever the program traces."""

    def __init__(self, program: Callable, fn: Callable):
        self.program, self.fn = program, fn

    def __call__(self, *args):
        return self.program(*args)


def pad_to(tree, num_runs: int, size: int):
    """Every leaf's leading (run) axis padded from ``num_runs`` to ``size`` with copies
    of the first run."""
    if size == num_runs:
        return tree

    def pad_leaf(leaf):
        filler = jnp.repeat(leaf[:1], size - num_runs, axis=0)
        return jnp.concatenate([leaf, filler], axis=0)

    return jax.tree_util.tree_map(pad_leaf, tree)


def unpad(tree, num_runs: int):
    """Host copies of a run-axis pytree with the padding dropped."""
    return jax.tree_util.tree_map(lambda leaf: to_host(leaf)[:num_runs], tree)


def _global_array(leaf, sharding: NamedSharding) -> jax.Array:
    """One global array from a host value that every process holds in full."""
    if isinstance(leaf, jax.Array) and jnp.issubdtype(leaf.dtype, jax.dtypes.prng_key):
        impl = jax.random.key_impl(leaf)
        data = _global_array(jax.random.key_data(leaf), sharding)
        return jax.random.wrap_key_data(data, impl=impl)
    host = np.asarray(leaf)
    return jax.make_array_from_callback(host.shape, sharding, lambda index: host[index])
