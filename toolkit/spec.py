"""The experiment interface: a typed config, a grid, profiles, analysis and figures.

An experiment is one module ``experiments/exp_<name>.py`` defining:

- ``CLAIMS``: the claim ids it tests;
- ``Config``: a frozen dataclass subclassing :class:`RunConfig`;
- ``GRID``: factor name → list of values (a product), or a list of dicts (points);
- ``PROFILES``: profile name → {"seeds": n, "grid": {...}, **config overrides};
- ``analyze(results) -> list[dict]``: verdict rows (``toolkit.stats.verdict_row``);
- ``figures(results, out_dir) -> list[Path]``: plots drawn from the results tables;
- optionally ``measure(cohort) -> dict[str, array | DataFrame]``: per-run measurements
  of a trained cohort (vmapped; see :mod:`toolkit.measures`); arrays become summary
  columns, DataFrames tables of their own (``<key>.csv``);
- optionally ``standalone(profile, seeds) -> dict[str, DataFrame]``: tables from work
  that trains no cohort (toy problems, gradient checks, timings), written whole as
  ``<key>.csv`` after training, recomputed only when one is missing or with ``--force``;
- optionally ``CLAIM_FIGURES``: claim id → figure name, the figure the claims report
  links for that claim (default: the experiment's first figure);
- optionally ``SAVE_PARAMS``: True, or a predicate on a run, to save final parameters
  as ``params/<run_id>.npz``.

It is found by module name; nothing else has to be edited to add one.
"""

from __future__ import annotations

import dataclasses
import importlib
import itertools
import pkgutil
import typing
from dataclasses import dataclass
from types import ModuleType
from typing import ClassVar

from toolkit.engine import HPARAMS, STREAMS, CohortSpec


class SpecError(ValueError):
    """Bad experiment name, override or grid: the message says how to fix it."""


@dataclass(frozen=True)
class RunConfig:
    """Fields every run has. Experiments subclass this, change defaults, add fields.

    Fields that change shapes or code (dataset, model, widths, optimizer, loss,
    batch size, epochs) pick the cohort; the numeric ``HPARAMS`` ride the run axis.
    """

    dataset: str = "mnist1d"
    model: str = "mlp"
    widths: tuple[int, ...] = (100, 100)
    activation: str = "relu"
    optimizer: str = "sgd"
    loss: str = "ce"
    batch_size: int = 100
    epochs: int = 100
    learning_rate: float = 0.05
    momentum: float = 0.9
    weight_decay: float = 0.0
    dropout: float = 0.0
    label_noise: float = 0.0
    init_scale: float = 1.0
    stop_train_loss: float = 0.0  # stop a run when its full-train loss ≤ this (0: never)
    pin_init_seed: int = -1  # ≥ 0: every run's init stream uses this seed
    pin_order_seed: int = -1  # ≥ 0: every run's data-order stream uses this seed
    history_points: int = 200  # at most this many evaluations per run (evenly spaced)
    grad_noise: float = 0.0  # std of Gaussian noise added to every minibatch gradient
    track_sharpness: int = 0  # first N train examples: top Hessian eigenvalue per evaluation

    #: Fields an experiment computes from others (``--set`` on them is an error).
    DERIVED: ClassVar[dict[str, str]] = {}
    #: Base fields added after results were first published: a run id leaves such a
    #: field out while it holds its default, so earlier results keep their ids.
    LATER_FIELDS: ClassVar[frozenset[str]] = frozenset({"grad_noise", "track_sharpness"})

    def identity(self) -> dict:
        """The fields that identify a run (hashed into its run id)."""
        fields = dataclasses.asdict(self)
        for name in self.LATER_FIELDS:
            default = RunConfig.__dataclass_fields__[name].default
            if fields.get(name) == default:
                del fields[name]
        return fields

    def cohort_spec(self) -> CohortSpec:
        return CohortSpec(
            dataset=self.dataset,
            model=self.model,
            widths=tuple(self.widths),
            activation=self.activation,
            optimizer=self.optimizer,
            loss=self.loss,
            batch_size=self.batch_size,
            epochs=self.epochs,
            history_points=self.history_points,
            track_sharpness=self.track_sharpness,
        )

    def hparams(self) -> dict[str, float]:
        """The per-run numeric hyperparameters; override to derive one (e.g. lr ∝ B)."""
        return {name: float(getattr(self, name)) for name in HPARAMS}

    def stream_seeds(self, seed: int) -> dict[str, int]:
        pinned = {"init": self.pin_init_seed, "order": self.pin_order_seed}
        return {s: pinned[s] if pinned.get(s, -1) >= 0 else seed for s in STREAMS}


@dataclass(frozen=True)
class Experiment:
    """A loaded experiment module with its name."""

    name: str
    module: ModuleType

    @property
    def claims(self) -> tuple[str, ...]:
        return tuple(self.module.CLAIMS)

    @property
    def doc(self) -> str:
        return (self.module.__doc__ or "").strip()

    @property
    def summary_line(self) -> str:
        return self.doc.splitlines()[0] if self.doc else ""

    @property
    def config_class(self) -> type[RunConfig]:
        return self.module.Config

    def profile(self, name: str) -> dict:
        profiles = self.module.PROFILES
        if name not in profiles:
            raise SpecError(
                f"experiment {self.name} has no profile {name!r}; use one of: {', '.join(profiles)}"
            )
        return dict(profiles[name])

    def config_fields(self) -> dict[str, dataclasses.Field]:
        return {f.name: f for f in dataclasses.fields(self.config_class)}

    def grid_points(self, profile: str, overrides: dict[str, object]) -> list[dict]:
        """Grid points (factor → value) of a profile, with ``--set`` values pinned."""
        grid = self.profile(profile).get("grid", self.module.GRID)
        if isinstance(grid, dict):
            names = list(grid)
            points = [dict(zip(names, values)) for values in itertools.product(*grid.values())]
        else:
            points = [dict(point) for point in grid]
        fields = self.config_fields()
        for point in points:
            for key in point:
                if key not in fields:
                    raise SpecError(f"grid factor {key!r} of {self.name} is not a Config field")
            point.update({k: v for k, v in overrides.items() if k in point})
        unique = []
        for point in points:
            if point not in unique:
                unique.append(point)
        return unique

    def config(self, profile: str, point: dict, overrides: dict[str, object]) -> RunConfig:
        base = {k: v for k, v in self.profile(profile).items() if k not in ("seeds", "grid")}
        try:
            return self.config_class(**{**base, **overrides, **point})
        except TypeError as err:
            raise SpecError(f"profile {profile!r} of {self.name}: {err}") from err

    def factors(self, profile: str) -> list[str]:
        grid = self.profile(profile).get("grid", self.module.GRID)
        if isinstance(grid, dict):
            return list(grid)
        names: list[str] = []
        for point in grid:
            names += [k for k in point if k not in names]
        return names


def experiment_names() -> list[str]:
    import experiments

    return sorted(
        m.name for m in pkgutil.iter_modules(experiments.__path__) if m.name.startswith("exp_")
    )


def load(name: str) -> Experiment:
    """The experiment module ``experiments.<name>``; a clear error if there is none."""
    names = experiment_names()
    if name not in names:
        raise SpecError(f"unknown experiment {name!r}; available: {', '.join(names) or 'none'}")
    return Experiment(name, importlib.import_module(f"experiments.{name}"))


def parse_overrides(experiment: Experiment, pairs: typing.Iterable[str]) -> dict[str, object]:
    """``["key=value", ...]`` → typed values for Config fields; errors name the fix."""
    fields = experiment.config_fields()
    hints = typing.get_type_hints(experiment.config_class)
    out: dict[str, object] = {}
    for pair in pairs:
        key, sep, text = pair.partition("=")
        key = key.strip()
        if not sep or not key:
            raise SpecError(f"--set expects key=value, got {pair!r}")
        if key not in fields:
            raise SpecError(
                f"unknown --set key {key!r} for {experiment.name}; valid keys: {', '.join(fields)}"
            )
        derived = experiment.config_class.DERIVED
        if key in derived:
            raise SpecError(f"--set {key}: {experiment.name} derives it; {derived[key]}")
        out[key] = _coerce(key, text.strip(), hints[key])
    return out


def _coerce(key: str, text: str, hint) -> object:
    try:
        if hint is bool:
            if text.lower() not in ("true", "false", "1", "0"):
                raise ValueError
            return text.lower() in ("true", "1")
        if hint is int:
            return int(text)
        if hint is float:
            return float(text)
        if hint is str:
            return text
        if typing.get_origin(hint) is tuple:
            (item, *_) = typing.get_args(hint)
            return tuple(item(part) for part in text.split(",") if part)
    except ValueError:
        pass
    else:
        raise SpecError(f"--set {key}: unsupported field type {hint}")
    name = getattr(hint, "__name__", str(hint))
    raise SpecError(f"--set {key}={text!r}: expected {name} (e.g. tuples as 256,256)")
