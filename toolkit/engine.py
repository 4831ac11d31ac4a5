"""The engine: train a cohort of runs as one compiled program.

A *cohort* is a set of runs with identical shapes (model, dataset, batch size, epoch
count). Its program is written for one run, mapped over the runs (the seed's key
streams and every numeric hyperparameter are array axes: ``vmap``-ed on a GPU, one run
at a time by ``lax.map`` on a CPU, so that a run's numbers there never depend on the
runs beside it; :func:`choose_run_batch`) and spread over devices by
:mod:`toolkit.parallel`; inside, ``lax.scan`` runs the steps and epochs.
Training proceeds in chunks of epochs (one compiled chunk, reused), returning to
Python between chunks for progress and bookkeeping.

Everything per run lives in the carried state: parameters and optimizer state,
the (possibly noisy) training labels, the best-validation snapshot for early
stopping, and the flags ``active`` / ``diverged``. A run whose loss or parameters
become non-finite (or explode past ``DIVERGED_LOSS``) during an epoch is frozen at
its parameters from the start of that epoch and flagged; a run may also stop when its full-train loss first reaches
``stop_train_loss`` (matched-loss comparisons). Its neighbours train on unchanged.
With ``CohortSpec.augment`` set, every training batch is transformed inside the step
(:mod:`toolkit.augment`) with keys from the run's own ``augment`` stream. With
``grad_noise`` > 0, isotropic Gaussian noise of that standard deviation (per
coordinate) is added to every minibatch gradient (noisy GD, from the ``grad_noise``
stream) before the optimizer sees it. With ``CohortSpec.track_sharpness`` = N > 0, every
evaluation (init included) also computes the top Hessian eigenvalue of the training loss
on the first N training examples with the run's own training labels (Lanczos,
``TRACK_LANCZOS_ITERS`` Hessian-vector products, a fixed start key), returned as
``CohortResult.tracked["sharpness"]``; with N = 0 the program is unchanged.
With ``CohortSpec.monitor_examples`` = M > 0, every optimizer step is followed by the mean
training loss (eval mode, the run's own labels) on the first M training examples, inside
the scan; each evaluation records it (``tracked["monitor_loss"]``, the loss after the
interval's last step; at init, before the first) and how many of the interval's steps
lowered it (``tracked["monitor_falls"]``: steps whose monitored loss is below the one
before them; steps of an epoch a run did not keep count none); with M = 0 the program is
unchanged.

**Checkpoints.** ``CohortSpec.checkpoints`` names epochs whose parameters the program
keeps from the one training run (``CohortResult.checkpoints``: epoch → parameters with
the run axis), e.g. to measure representations part-way through training without
training again to that epoch. They are kept inside the program, in a buffer of K
parameter copies per run in the carried state, filled by a select at the end of every
epoch: any epoch 1 … E can be kept, evaluated there or not, and the chunk loop is the
same whether some are kept or none. (Kept between chunks instead, only chunk ends
could be; kept at evaluations only, an experiment would have to evaluate more often
than it needs, and an evaluation costs about as much as an epoch.) A checkpoint is the
parameters the run had at the end of that epoch in this program: a frozen (diverged or
stopped) run's are the parameters it froze with. Epochs out of range or not strictly
increasing are a one-line ValueError. With none the program is unchanged.

**Memory.** A chunk's state argument is donated: XLA writes the new state into the
old one's buffers, so a cohort holds one copy of its state (:func:`estimate_memory`),
and nothing reads the old state after the call.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import optax

from toolkit import augment, measures, models
from toolkit.data import Dataset, steps_per_epoch
from toolkit.distributed import to_host
from toolkit.parallel import RunAxis, pad_to, unpad

#: Numeric hyperparameters that ride the run axis (one value per run).
HPARAMS = (
    "learning_rate",
    "momentum",
    "weight_decay",
    "dropout",
    "label_noise",
    "init_scale",
    "stop_train_loss",
    "grad_noise",
)
#: Independent random streams per run: init, data order, dropout masks, label noise,
#: augmentation, gradient noise. ``run_keys`` folds in a stream's index: append new streams at the end.
STREAMS = ("init", "order", "dropout", "noise", "augment", "grad_noise")
#: Per-evaluation metrics, in the order of the metrics arrays' last axis.
METRICS = ("train_loss", "train_acc", "val_loss", "val_acc", "test_loss", "test_acc")
DIVERGED_LOSS = 1e4
EVAL_CHUNK = 2048
MAX_HISTORY_POINTS = 200
#: Sharpness tracking: Lanczos iterations per evaluation, and the seed of its fixed start key.
TRACK_LANCZOS_ITERS = 20
TRACK_SEED = 0


@dataclass(frozen=True)
class CohortSpec:
    """Everything that fixes a cohort's compiled program (shapes and code paths)."""

    dataset: str
    model: str
    widths: tuple[int, ...]
    activation: str
    optimizer: str  # "sgd" (heavy-ball momentum), "nesterov" or "adam"
    loss: str  # "ce" (softmax cross-entropy) or "mse" (0.5·||logits − onehot||²)
    batch_size: int
    epochs: int
    history_points: int = 200  # evaluations kept per run (≤); fewer evaluations are cheaper
    augment: str = "none"  # training-batch augmentation (toolkit.augment.KINDS)
    track_sharpness: int = 0  # examples for the top Hessian eigenvalue at each evaluation (0: off)
    monitor_examples: int = 0  # first M train examples: loss after every step (0: off)
    checkpoints: tuple[int, ...] = ()  # epochs whose parameters are kept (() : off)

    def steps_per_epoch(self, num_train: int) -> int:
        return steps_per_epoch(num_train, self.batch_size)


class ScheduleError(ValueError):
    """An epoch count that cannot be evaluated evenly often enough; says what would."""


def schedule(epochs: int, max_points: int = MAX_HISTORY_POINTS, target_chunks: int = 20):
    """(eval_every, evals_per_chunk): evaluations ≤ max_points, chunks ≈ target_chunks.

    Both are divisors, so every chunk is the same compiled program. Evaluations are
    where early stopping and matched-loss stops are decided, so an epoch count whose
    divisors leave fewer than a quarter of the evaluations asked for (a prime count of
    epochs above ``max_points``: 97 epochs at 50 points would evaluate once) is refused
    with the nearest counts that schedule well.
    """
    if epochs < 1 or max_points < 1:
        raise ScheduleError(f"epochs ({epochs}) and history points ({max_points}) must be ≥ 1")
    divisors = [d for d in range(1, epochs + 1) if epochs % d == 0]
    eval_every = next(d for d in divisors if epochs // d <= max_points)
    num_evals = epochs // eval_every
    wanted = min(epochs, max_points)
    if num_evals < max(1, wanted // 4):
        near = [
            e
            for e in range(max(1, epochs - 12), epochs + 13)
            if e != epochs and _evals(e, max_points) >= max(1, min(e, max_points) // 2)
        ]
        near = sorted(near, key=lambda e: (abs(e - epochs), e))[:3]
        raise ScheduleError(
            f"epochs={epochs} with history_points={max_points}: evenly spaced evaluations "
            f"must divide the epochs, and {epochs} allows only {num_evals}; use epochs "
            f"{' or '.join(map(str, near))}, or history_points ≥ {epochs}"
        )
    per_chunk_cap = max(1, -(-num_evals // target_chunks))
    evals_per_chunk = max(d for d in range(1, per_chunk_cap + 1) if num_evals % d == 0)
    return eval_every, evals_per_chunk


def _evals(epochs: int, max_points: int) -> int:
    """Evaluations :func:`schedule` would make (no error)."""
    every = next(d for d in range(1, epochs + 1) if epochs % d == 0 and epochs // d <= max_points)
    return epochs // every


def optimizer(name: str):
    """An optax optimizer whose numeric hyperparameters live in its state (per run).

    Weight decay is L2 added to the gradient before the update (coupled), as in
    PyTorch's SGD ``weight_decay``; for Adam that is Adam + L2, not AdamW.
    For Adam, ``momentum`` is the first-moment decay b1.
    """

    def factory(learning_rate, momentum, weight_decay):
        if name == "adam":
            direction = optax.scale_by_adam(b1=momentum)
        elif name in ("sgd", "nesterov"):
            direction = optax.trace(decay=momentum, nesterov=name == "nesterov")
        else:
            raise ValueError(f"unknown optimizer {name!r}; use 'sgd', 'nesterov' or 'adam'")
        return optax.chain(
            optax.add_decayed_weights(weight_decay),
            direction,
            optax.scale_by_learning_rate(learning_rate),
        )

    return optax.inject_hyperparams(factory)


def per_example_loss(kind: str, logits: jax.Array, labels: jax.Array) -> jax.Array:
    if kind == "ce":
        return optax.softmax_cross_entropy_with_integer_labels(logits, labels)
    if kind == "mse":
        onehot = jax.nn.one_hot(labels, logits.shape[-1], dtype=logits.dtype)
        return 0.5 * jnp.sum((logits - onehot) ** 2, axis=-1)
    raise ValueError(f"unknown loss {kind!r}; use 'ce' or 'mse'")


class Cohort:
    """The compiled training program of one cohort, and the loop over its chunks."""

    def __init__(
        self,
        spec: CohortSpec,
        data: Dataset,
        run_axis: RunAxis | None = None,
        history_points: int | None = None,
        run_batch: int | None = None,
    ):
        if spec.augment not in augment.KINDS:
            raise ValueError(f"unknown augmentation {spec.augment!r}; use one of {augment.KINDS}")
        self.spec = spec
        self.data = data
        self.run_axis = run_axis or RunAxis()
        self.run_batch = run_batch  # runs computed at once per device (None: all)
        self.model = models.build(spec.model, spec.widths, data.num_classes, spec.activation)
        self.tx = optimizer(spec.optimizer)
        self.num_train = len(data.y_train)
        if not 0 <= spec.track_sharpness <= self.num_train:
            raise ValueError(
                f"track_sharpness={spec.track_sharpness}: use 0 (off) to {self.num_train} examples"
            )
        if not 0 <= spec.monitor_examples <= self.num_train:
            raise ValueError(
                f"monitor_examples={spec.monitor_examples}: use 0 (off) to {self.num_train} examples"
            )
        check_checkpoints(spec.checkpoints, spec.epochs)
        self.steps_per_epoch = spec.steps_per_epoch(self.num_train)
        self.eval_every, self.evals_per_chunk = schedule(
            spec.epochs, history_points or spec.history_points
        )
        self.num_chunks = spec.epochs // (self.eval_every * self.evals_per_chunk)
        self.arrays = {
            name: jnp.asarray(getattr(data, name))
            for name in ("x_train", "y_train", "x_val", "y_val", "x_test", "y_test")
        }
        # The cohort owns its programs (RunAxis.program: not cached beyond it), so they
        # and their device buffers are freed with it. A chunk's state is donated: the
        # chunk writes its new state into the old one's buffers (one state copy, not two).
        self._init = self.run_axis.program(self._init_run, 2, run_batch)
        # Compiled variants: dropout masks and gradient noise are drawn only when some
        # run uses them (drawing them costs more than the matmuls of a small MLP on a CPU).
        self._chunks = {
            (drop, noise): self.run_axis.program(
                partial(self._chunk_run, use_dropout=drop, use_noise=noise),
                3,
                run_batch,
                donate_argnums=(0,),
            )
            for drop in (False, True)
            for noise in (False, True)
        }

    # ----- pure per-run functions -------------------------------------------------
    def loss(self, params, x, y, dropout_rate=0.0, key=None, weights=None):
        """Mean loss of the model on (x, y); dropout on only when ``key`` is given."""
        logits = self.model.apply(params, x, dropout_rate, key)
        losses = per_example_loss(self.spec.loss, logits, y)
        if weights is None:
            return losses.mean()
        return jnp.sum(losses * weights) / jnp.sum(weights)

    def evaluate(self, params, x, y):
        """(mean loss, accuracy) over a whole split in eval mode, in fixed-size chunks."""
        n = x.shape[0]
        chunk = min(EVAL_CHUNK, n)
        num_chunks = -(-n // chunk)
        pad = num_chunks * chunk - n
        xs = jnp.concatenate([x, jnp.zeros((pad, *x.shape[1:]), x.dtype)]).reshape(
            num_chunks, chunk, *x.shape[1:]
        )
        ys = jnp.concatenate([y, jnp.zeros((pad,), y.dtype)]).reshape(num_chunks, chunk)
        valid = (jnp.arange(num_chunks * chunk) < n).reshape(num_chunks, chunk)

        def body(totals, batch):
            xb, yb, vb = batch
            logits = self.model.apply(params, xb)
            losses = per_example_loss(self.spec.loss, logits, yb)
            correct = jnp.argmax(logits, -1) == yb
            return totals + jnp.stack([jnp.sum(losses * vb), jnp.sum(correct * vb)]), None

        totals, _ = jax.lax.scan(body, jnp.zeros(2, jnp.float32), (xs, ys, valid))
        return totals / n

    def _metrics(self, params, train_labels, arrays):
        train = self.evaluate(params, arrays["x_train"], train_labels)
        val = self.evaluate(params, arrays["x_val"], arrays["y_val"])
        test = self.evaluate(params, arrays["x_test"], arrays["y_test"])
        return jnp.concatenate([train, val, test])

    def _tracked(self, params, train_labels, arrays) -> dict:
        """Per-evaluation extras: ``{"sharpness": λ_max}`` with tracking on, else ``{}``.

        λ_max is the top eigenvalue of the Hessian of the mean training loss (eval mode)
        on the first ``track_sharpness`` training examples, with the run's own labels.
        """
        n = self.spec.track_sharpness
        if n == 0:
            return {}
        x, y = arrays["x_train"][:n], train_labels[:n]
        top, _ = measures.lanczos_eigs(
            lambda p, xb, yb: self.loss(p, xb, yb),
            params,
            x,
            y,
            jax.random.key(TRACK_SEED),
            num_iters=TRACK_LANCZOS_ITERS,
            k=1,
        )
        return {"sharpness": top[0]}

    def _monitored(self, params, train_labels, arrays):
        """Mean training loss (eval mode) on the first ``monitor_examples`` examples."""
        m = self.spec.monitor_examples
        return self.loss(params, arrays["x_train"][:m], train_labels[:m])

    def _init_run(self, keys, hparams, arrays):
        params = self.model.init(keys["init"], arrays["x_train"][:1])
        params = jax.tree_util.tree_map(lambda p: p * hparams["init_scale"], params)
        opt_state = self.tx(
            learning_rate=hparams["learning_rate"],
            momentum=hparams["momentum"],
            weight_decay=hparams["weight_decay"],
        ).init(params)
        y = arrays["y_train"]
        flip_key, label_key = jax.random.split(keys["noise"])
        flip = jax.random.uniform(flip_key, y.shape) < hparams["label_noise"]
        random_labels = jax.random.randint(label_key, y.shape, 0, self.data.num_classes)
        labels = jnp.where(flip, random_labels, y).astype(y.dtype)
        metrics = self._metrics(params, labels, arrays)
        tracked = self._tracked(params, labels, arrays)
        monitor = {}
        if self.spec.monitor_examples:  # static: off adds nothing to the state
            monitor = {"monitor_loss": self._monitored(params, labels, arrays)}
            monitor["monitor_falls"] = jnp.int32(0)
            tracked = {**tracked, **monitor}
        state = {
            "params": params,
            "opt_state": opt_state,
            "labels": labels,
            "epoch": jnp.int32(0),
            "steps": jnp.int32(0),
            "active": jnp.bool_(True),
            "diverged": jnp.bool_(False),
            "stopped_epoch": jnp.int32(-1),
            "best_params": params,
            "best_epoch": jnp.int32(0),
            "best_metrics": metrics,
            **monitor,
        }
        if self.spec.checkpoints:  # static: off adds nothing to the state
            count = len(self.spec.checkpoints)
            state["checkpoints"] = jax.tree_util.tree_map(
                lambda p: jnp.broadcast_to(p, (count, *p.shape)), params
            )
        return state, metrics, tracked

    def _epoch(self, state, keys, hparams, arrays, use_dropout, use_noise=False):
        """One pass over the shuffled training set: ceil(N/B) steps, the last one short."""
        n, b, num_steps = self.num_train, self.spec.batch_size, self.steps_per_epoch
        epoch_key = jax.random.fold_in(keys["order"], state["epoch"])
        order = jax.random.permutation(epoch_key, n)
        padded = jnp.concatenate([order, jnp.zeros(num_steps * b - n, order.dtype)])
        batches = padded.reshape(num_steps, b)
        weights = (jnp.arange(num_steps * b) < n).reshape(num_steps, b).astype(jnp.float32)
        dropout_epoch_key = jax.random.fold_in(keys["dropout"], state["epoch"])
        augment_epoch_key = jax.random.fold_in(keys["augment"], state["epoch"])
        noise_epoch_key = jax.random.fold_in(keys["grad_noise"], state["epoch"])
        tx = self.tx(learning_rate=0.0, momentum=0.0, weight_decay=0.0)  # values live in state

        monitor = self.spec.monitor_examples > 0  # static

        def step(carry, batch):
            params, opt_state, worst_loss, *watch = carry
            index, w, step_in_epoch = batch
            key = jax.random.fold_in(dropout_epoch_key, step_in_epoch) if use_dropout else None
            xb, yb = arrays["x_train"][index], state["labels"][index]
            if self.spec.augment != "none":  # static: "none" draws no random numbers
                xb = augment.augment(
                    self.spec.augment, xb, jax.random.fold_in(augment_epoch_key, step_in_epoch)
                )
            loss, grads = jax.value_and_grad(self.loss)(params, xb, yb, hparams["dropout"], key, w)
            if use_noise:  # static: cohorts without gradient noise draw nothing
                grads = _add_noise(
                    grads, jax.random.fold_in(noise_epoch_key, step_in_epoch), hparams["grad_noise"]
                )
            updates, opt_state = tx.update(grads, opt_state, params)
            # NaN-propagating max: a non-finite minibatch loss anywhere marks the epoch.
            worst_loss = jnp.where(jnp.isnan(loss), loss, jnp.maximum(worst_loss, loss))
            params = optax.apply_updates(params, updates)
            if monitor:  # the loss after this step on the monitored examples; did it fall?
                before, falls = watch
                after = self._monitored(params, state["labels"], arrays)
                watch = [after, falls + (after < before).astype(jnp.int32)]
            return (params, opt_state, worst_loss, *watch), None

        # Divergence and stopping are decided once per epoch, not per step: per-step
        # checks and selects are many small kernels, which dominate a small model's step
        # on a GPU. A run that went non-finite (or past DIVERGED_LOSS) during the epoch,
        # or that was frozen before it, keeps its state from the start of the epoch.
        carry = (state["params"], state["opt_state"], jnp.float32(-jnp.inf))
        if monitor:
            carry += (state["monitor_loss"], jnp.int32(0))
        carry, _ = jax.lax.scan(step, carry, (batches, weights, jnp.arange(num_steps)))
        params, opt_state, worst_loss, *watch = carry
        finite = jnp.isfinite(worst_loss) & (worst_loss < DIVERGED_LOSS) & _all_finite(params)
        take = state["active"] & finite
        if monitor:  # a kept epoch's steps count; a frozen run keeps its monitored loss
            state = {
                **state,
                "monitor_loss": jnp.where(take, watch[0], state["monitor_loss"]),
                "monitor_falls": state["monitor_falls"] + take * watch[1],
            }
        return {
            **state,
            "params": _select(take, params, state["params"]),
            "opt_state": _select(take, opt_state, state["opt_state"]),
            "active": state["active"] & finite,
            "diverged": state["diverged"] | (state["active"] & ~finite),
            "steps": state["steps"] + take * num_steps,
            "epoch": state["epoch"] + 1,
        }

    def _keep_checkpoints(self, state):
        """After an epoch: its parameters into the checkpoint slot of that epoch, if any.

        Kept at the end of every epoch, not at evaluations only, so that any epoch can
        be kept without evaluating there (an evaluation covers every split: on MNIST-1D
        it costs about as much as 1.4 epochs of training). A frozen run's parameters
        no longer change, so its later checkpoints are the parameters it froze with.
        """
        if not self.spec.checkpoints:  # static
            return state
        hit_K = state["epoch"] == jnp.asarray(self.spec.checkpoints, jnp.int32)
        kept = jax.tree_util.tree_map(
            lambda kept_K, p: jnp.where(hit_K.reshape(-1, *([1] * p.ndim)), p[None], kept_K),
            state["checkpoints"],
            state["params"],
        )
        return {**state, "checkpoints": kept}

    def _chunk_run(self, state, keys, hparams, arrays, use_dropout, use_noise=False):
        """``evals_per_chunk`` × (``eval_every`` epochs, then one evaluation)."""

        def interval(state, _):
            if self.spec.monitor_examples:  # static: count the falls of this interval
                state = {**state, "monitor_falls": jnp.int32(0)}
            state = jax.lax.fori_loop(
                0,
                self.eval_every,
                lambda _, s: self._keep_checkpoints(
                    self._epoch(s, keys, hparams, arrays, use_dropout, use_noise)
                ),
                state,
            )
            metrics = self._metrics(state["params"], state["labels"], arrays)
            tracked = self._tracked(state["params"], state["labels"], arrays)
            if self.spec.monitor_examples:
                tracked = {
                    **tracked,
                    "monitor_loss": state["monitor_loss"],
                    "monitor_falls": state["monitor_falls"],
                }
            exploded = ~jnp.all(jnp.isfinite(metrics)) | (metrics[0] >= DIVERGED_LOSS)
            diverged = state["diverged"] | (state["active"] & exploded)
            active = state["active"] & ~exploded
            better = active & (metrics[2] < state["best_metrics"][2])
            reached = active & (metrics[0] <= hparams["stop_train_loss"])
            state = {
                **state,
                "diverged": diverged,
                "active": active & ~reached,
                "stopped_epoch": jnp.where(reached, state["epoch"], state["stopped_epoch"]),
                "best_params": _select(better, state["params"], state["best_params"]),
                "best_epoch": jnp.where(better, state["epoch"], state["best_epoch"]),
                "best_metrics": jnp.where(better, metrics, state["best_metrics"]),
            }
            return state, (metrics, state["steps"], tracked)

        state, (metrics, steps, tracked) = jax.lax.scan(
            interval, state, None, length=self.evals_per_chunk
        )
        return state, metrics, steps, tracked

    # ----- the loop over chunks ---------------------------------------------------
    def train(self, keys: dict, hparams: dict) -> Iterator[dict]:
        """Train all runs; yields after every chunk, then the final outputs.

        ``keys``: stream name → typed key array (R,); ``hparams``: name → float array (R,).
        Each yielded dict has ``epochs_done``; the last one also has ``result``.
        """
        num_runs = len(next(iter(hparams.values())))
        axis = self.run_axis
        keys = axis.put_runs(axis.pad({s: keys[s] for s in STREAMS}, num_runs))
        host_hparams = {h: np.asarray(hparams[h], np.float32) for h in HPARAMS}
        hparams = axis.put_runs(axis.pad(host_hparams, num_runs))
        arrays = axis.put_shared(self.arrays)
        timings = {"first_chunk_s": 0.0, "run_s": 0.0}
        start = time.perf_counter()
        chunk_fn = self._chunks[
            bool(np.any(host_hparams["dropout"] > 0)),
            bool(np.any(host_hparams["grad_noise"] > 0)),
        ]
        state, metrics0, tracked0 = self._init(keys, hparams, arrays)
        history = [to_host(metrics0)[:num_runs, None, :]]
        tracked = {name: [to_host(v)[:num_runs, None]] for name, v in tracked0.items()}
        steps = [np.zeros((num_runs, 1), np.int64)]
        timings["init_s"] = time.perf_counter() - start
        for chunk in range(self.num_chunks):
            start = time.perf_counter()
            state, metrics, chunk_steps, chunk_tracked = chunk_fn(state, keys, hparams, arrays)
            history.append(to_host(metrics)[:num_runs])
            for name, values in chunk_tracked.items():
                tracked[name].append(to_host(values)[:num_runs])
            steps.append(to_host(chunk_steps)[:num_runs].astype(np.int64))
            # The first chunk includes compilation; later chunks are pure run time.
            timings["first_chunk_s" if chunk == 0 else "run_s"] += time.perf_counter() - start
            yield {"epochs_done": (chunk + 1) * self.evals_per_chunk * self.eval_every}
        final = unpad(state, num_runs)
        kept = final.pop("checkpoints", None)
        checkpoints = {
            epoch: jax.tree_util.tree_map(lambda leaf, k=k: leaf[:, k], kept)
            for k, epoch in enumerate(self.spec.checkpoints)
        }
        eval_epochs = np.arange(0, self.spec.epochs + 1, self.eval_every)
        yield {
            "epochs_done": self.spec.epochs,
            "result": CohortResult(
                state=final,
                history=np.concatenate(history, axis=1),
                steps=np.concatenate(steps, axis=1),
                eval_epochs=eval_epochs,
                timings=timings,
                tracked={name: np.concatenate(v, axis=1) for name, v in tracked.items()},
                checkpoints=checkpoints,
            ),
        }

    def map_runs(self, fn, run_args: tuple, shared_args: tuple = ()):
        """Host outputs of ``fn`` applied to every run (a measurement, say), mapped and
        spread over devices like training: ``run_args`` carry the run axis.

        The runs go through in blocks (:func:`measure_block`) whose size barely depends
        on the cohort's: on a CPU (one run at a time) a block is one run per device, so a
        measurement function built once per architecture compiles once for every cohort
        of that architecture, whatever their sizes, and a run's values are the same in
        any block; vmapped (a GPU), all runs at once padded up to a power of two per
        device, so cohorts of 17 to 32 runs share one program. A block's padding repeats
        its first run and is computed: up to 2× the measurement arithmetic, traded for
        compiles that cost tens of seconds each on a GPU (``benchmarks/README.md``).
        """
        num_runs = len(jax.tree_util.tree_leaves(run_args)[0])
        axis = self.run_axis
        block = measure_block(num_runs, axis.num_devices, self.run_batch)
        mapped = axis.map_runs(fn, len(run_args), self.run_batch)
        shared = axis.put_shared(shared_args)
        parts = []
        for start in range(0, num_runs, block):
            size = min(block, num_runs - start)
            part = pad_to(_runs_slice(run_args, start, start + size), size, block)
            parts.append(unpad(mapped(*axis.put_runs(part), *shared), size))
        return jax.tree_util.tree_map(lambda *leaves: np.concatenate(leaves), *parts)

    def run(self, keys: dict, hparams: dict) -> CohortResult:
        """Train to the end without progress reporting."""
        *_, last = self.train(keys, hparams)
        return last["result"]


@dataclass
class CohortResult:
    """Host arrays of a finished cohort. ``history``: (runs, evaluations, METRICS);
    ``tracked``: name → (runs, evaluations), e.g. ``"sharpness"`` (empty when off);
    ``checkpoints``: epoch → parameters (leaves with the run axis) at the end of that
    epoch, for each of ``CohortSpec.checkpoints``."""

    state: dict
    history: np.ndarray
    steps: np.ndarray
    eval_epochs: np.ndarray
    timings: dict
    tracked: dict[str, np.ndarray] = field(default_factory=dict)
    checkpoints: dict[int, dict] = field(default_factory=dict)


def check_checkpoints(checkpoints: tuple[int, ...], epochs: int) -> None:
    """Checkpoint epochs must be whole epochs 1 … ``epochs``, strictly increasing."""
    values = tuple(checkpoints)
    whole = all(isinstance(e, int | np.integer) and not isinstance(e, bool) for e in values)
    if whole and all(1 <= e <= epochs for e in values) and list(values) == sorted(set(values)):
        return
    raise ValueError(
        f"checkpoints={values}: use strictly increasing whole epochs from 1 to {epochs} "
        f"(the end of an epoch), e.g. {tuple(sorted({max(1, epochs // 2), epochs}))}"
    )


def measure_block(num_runs: int, num_devices: int, run_batch: int | None) -> int:
    """Runs per measurement call: ``run_batch`` per device when runs are computed in
    groups (one on a CPU), else all runs vmapped, padded up to a power of two per
    device, so that cohorts of 5, 6 or 8 runs share one compiled program."""
    if run_batch is not None:
        return num_devices * run_batch
    per_device = -(-num_runs // num_devices)
    return num_devices * (1 << (per_device - 1).bit_length())


def _runs_slice(tree, start: int, stop: int):
    return jax.tree_util.tree_map(lambda leaf: leaf[start:stop], tree)


def _all_finite(tree) -> jax.Array:
    leaves = jax.tree_util.tree_leaves(tree)
    return jnp.all(jnp.stack([jnp.all(jnp.isfinite(leaf)) for leaf in leaves]))


@dataclass(frozen=True)
class MemoryEstimate:
    """Device bytes of one run: ``state`` stays resident for the whole cohort, ``work``
    only while the run is computed (a step's activations and gradients, an evaluation
    chunk's activations).

    ``state`` is one copy of the carried state — params, optimizer moments, the best
    snapshot, the checkpoint buffer (``CohortSpec.checkpoints``), the training labels —
    plus the copy of params and moments an epoch keeps from its start (to freeze a run
    that diverges). One copy, not two: a chunk's state argument is donated, so the new
    state is written into the old one's buffers.
    """

    state: int
    work: int

    def cohort(self, runs_per_device: int, run_batch: int | None = None) -> int:
        at_once = runs_per_device if run_batch is None else min(run_batch, runs_per_device)
        return runs_per_device * self.state + at_once * self.work


def estimate_memory(spec: CohortSpec, data: Dataset) -> MemoryEstimate:
    """A float32 estimate from shapes alone (``jax.eval_shape``: nothing is computed)."""
    model = models.build(spec.model, spec.widths, data.num_classes, spec.activation)
    x = jnp.zeros((1, *np.shape(data.x_train)[1:]), jnp.float32)
    params = jax.eval_shape(model.init, jax.random.key(0), x)
    num_params = sum(int(np.prod(p.shape)) for p in jax.tree_util.tree_leaves(params))
    _, features = jax.eval_shape(lambda p: model.apply(p, x, return_features=True), params)
    per_example = sum(int(np.prod(f.shape)) for f in features) + data.num_classes
    moments = 2 if spec.optimizer == "adam" else 1
    # params, optimizer moments, the best snapshot, the checkpoints, and the epoch's
    # start copy of params and moments; labels. One copy: the chunk's state is donated.
    copies = 2 * (1 + moments) + 1 + len(spec.checkpoints)
    state = 4 * copies * num_params + 4 * len(data.y_train)
    # forward activations, their gradients and masks per training example; the
    # gradients themselves; an evaluation chunk; the epoch's permutation.
    step = 3 * 4 * per_example * spec.batch_size + 4 * num_params
    evaluation = 4 * per_example * min(EVAL_CHUNK, len(data.y_test))
    if spec.track_sharpness:
        # Lanczos basis and work vectors; an HVP's primal and tangent activations and
        # their gradients on the tracked examples.
        tracking = 4 * (TRACK_LANCZOS_ITERS + 4) * num_params
        evaluation = max(evaluation, tracking + 4 * 4 * per_example * spec.track_sharpness)
    work = max(step, evaluation) + 8 * len(data.y_train)
    return MemoryEstimate(state=state, work=work)


def choose_run_batch(
    estimate: MemoryEstimate,
    runs_per_device: int,
    budget: int,
    model: str = "mlp",
    platform: str = "gpu",
) -> int | None:
    """Runs computed at once per device: None (all, vmapped) or a group size.

    On a CPU: always 1, every run alone inside the cohort's one program (``lax.map``).
    That makes a run's numbers a function of the run alone — bitwise the same trained
    alone, in a cohort of any size at any place, or added later by a resume — and it
    costs little there (``benchmarks/README.md``, "Run identity"): the CPU computes
    one run's matmuls as fast as a vmapped batch of them, and a vmapped convolution
    (a grouped convolution) is even 1.6x slower than the runs one at a time.

    On a GPU (vmap 2.5–5× faster than one run at a time): all runs vmapped, or, when
    the cohort's estimate exceeds ``budget`` bytes per device, the most runs that fit
    (at least 1). A vmapped run's arithmetic can depend on the batch it is part of (a
    batched kernel's algorithm is chosen per shape), so on a GPU a run's numbers agree
    across cohort compositions to float32 rounding, not bitwise (not measured).
    ``model`` is accepted for callers that pass it; the layout no longer depends on it.
    """
    if platform == "cpu":
        return 1
    if estimate.cohort(runs_per_device) <= budget:
        return None
    room = budget - runs_per_device * estimate.state
    return int(max(1, min(runs_per_device - 1, room // max(estimate.work, 1))))


def _add_noise(tree, key: jax.Array, std: jax.Array):
    """``tree`` + N(0, std²) per coordinate, one subkey per leaf."""
    leaves, treedef = jax.tree_util.tree_flatten(tree)
    keys = jax.random.split(key, len(leaves))
    noisy = [x + std * jax.random.normal(k, x.shape, x.dtype) for x, k in zip(leaves, keys)]
    return jax.tree_util.tree_unflatten(treedef, noisy)


def _select(pred, on_true, on_false):
    return jax.tree_util.tree_map(lambda a, b: jnp.where(pred, a, b), on_true, on_false)


def run_keys(root_seed: int, stream_seeds: dict[str, list[int]]) -> dict:
    """Per-run key streams: ``fold_in(fold_in(root, seed), stream_index)``.

    ``stream_seeds[stream][r]`` is the seed of run r for that stream, normally the
    run's seed; pinning one stream to a fixed seed gives e.g. "same init, different
    data order". Nothing else about a run enters its keys, so adding grid points
    never changes another run's numbers.
    """
    root = jax.random.key(root_seed)
    return {
        stream: fold_seeds(root, stream_seeds[stream], index)
        for index, stream in enumerate(STREAMS)
    }


def fold_seeds(key: jax.Array, seeds, *then: int) -> jax.Array:
    """``fold_in(key, seed)`` for every seed, then ``fold_in`` of each of ``then`` in
    turn: one key per seed, bitwise what folding one by one gives, in one compiled
    call (folding key by key on the host took 3.7 s for 1,000 runs, 248 s for 10,000).
    The seeds are padded to a power of two (≥ 64), so few sizes are ever compiled."""
    seeds = np.asarray(seeds, np.uint32).ravel()
    padded = np.zeros(max(64, 1 << max(len(seeds) - 1, 0).bit_length()), np.uint32)
    padded[: len(seeds)] = seeds
    return _fold_seeds(key, padded, np.asarray(then, np.uint32))[: len(seeds)]


@jax.jit
def _fold_seeds(key: jax.Array, seeds: jax.Array, then: jax.Array) -> jax.Array:
    def one(seed):
        folded = jax.random.fold_in(key, seed)
        for i in range(then.shape[0]):
            folded = jax.random.fold_in(folded, then[i])
        return folded

    return jax.vmap(one)(seeds)
