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
import functools
import importlib
import itertools
import math
import pkgutil
import typing
from dataclasses import dataclass
from types import ModuleType
from typing import Annotated, ClassVar, Literal

from toolkit import augment as augmentations
from toolkit import data as datasets
from toolkit import models
from toolkit.engine import HPARAMS, STREAMS, CohortSpec, ScheduleError, schedule

#: Most seeds one command may plan per grid point (a typo like ``--seeds 1000000000``
#: fails at once instead of planning for ever).
MAX_SEEDS = 10_000


class SpecError(ValueError):
    """Bad experiment name, override or grid: the message says how to fix it."""


def check_seeds(seeds) -> int:
    """``--seeds``: a whole number from 1 to ``MAX_SEEDS`` (text is parsed)."""
    try:
        value = int(str(seeds).strip())
    except ValueError:
        value = None
    if value is None or not 1 <= value <= MAX_SEEDS:
        raise SpecError(f"--seeds must be a positive integer (1 … {MAX_SEEDS:,}), got {seeds!r}")
    return value


# ----- field domains: declared once, beside the fields ------------------------------
@dataclass(frozen=True)
class Range:
    """The domain of a numeric field, used as ``Annotated[float, Range(gt=0)]``.

    Values are always finite; each bound is optional. On a tuple field
    (``Annotated[tuple[int, ...], Range(ge=1)]``) it holds for every entry, and the
    tuple needs at least one.
    """

    ge: float | None = None
    gt: float | None = None
    le: float | None = None
    lt: float | None = None

    def problem(self, value) -> str | None:
        """Why ``value`` is outside the range (None when it is inside)."""
        if isinstance(value, tuple):
            if not value:
                return "needs at least one entry (e.g. 64,64)"
            for item in value:
                problem = self.problem(item)
                if problem:
                    return f"entry {_show(item)} {problem}"
            return None
        if isinstance(value, bool) or not isinstance(value, int | float):
            return f"must be a number, got {value!r}"
        if not math.isfinite(value):
            return "must be a finite number"
        ok = (
            (self.ge is None or value >= self.ge)
            and (self.gt is None or value > self.gt)
            and (self.le is None or value <= self.le)
            and (self.lt is None or value < self.lt)
        )
        return None if ok else f"must be {self}"

    def __str__(self) -> str:
        bounds = [("≥", self.ge), (">", self.gt), ("≤", self.le), ("<", self.lt)]
        text = " and ".join(f"{op} {_show(b)}" for op, b in bounds if b is not None)
        return text or "finite"


def _show(value) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, tuple):
        return ",".join(_show(v) for v in value)
    return str(value)


# Reusable domains. Names come from the registries where the library has one.
Positive = Annotated[float, Range(gt=0)]
NonNegative = Annotated[float, Range(ge=0)]
Fraction = Annotated[float, Range(ge=0, le=1)]  # 0 … 1, both ends included
Rate = Annotated[float, Range(ge=0, lt=1)]  # 0 ≤ x < 1 (dropout, momentum)
Count = Annotated[int, Range(ge=1)]  # epochs, steps, batch sizes, points: ≥ 1
Size = Annotated[int, Range(ge=0)]  # ≥ 0 (0: off)
Seed = Annotated[int, Range(ge=0)]
Widths = Annotated[tuple[int, ...], Range(ge=1)]  # hidden widths / channels, each ≥ 1
#: A registry name, or the path of a researcher's own ``.npz`` (``toolkit.data.load_file``).
DatasetName = Annotated[Literal[tuple(datasets.available())], datasets.FILE_SUFFIX]
ModelName = Literal["mlp", "cnn", "cnn2d"]  # toolkit.models.build
ActivationName = Literal[tuple(models.ACTIVATIONS)]
OptimizerName = Literal["sgd", "nesterov", "adam"]  # toolkit.engine.optimizer
LossName = Literal["ce", "mse"]  # toolkit.engine.per_example_loss
AugmentName = Literal[augmentations.KINDS]


@dataclass(frozen=True)
class Domain:
    """What a field accepts: its Python type, and its choices or its numeric range."""

    kind: type  # int, float, str, bool or tuple
    item: type | None = None  # a tuple's entry type
    choices: tuple | None = None  # Literal[...] names
    file_suffix: str | None = None  # also a path to a file with this suffix (datasets)
    range: Range | None = None

    @property
    def declared(self) -> bool:
        return self.choices is not None or self.range is not None or self.kind is bool

    def problem(self, value) -> str | None:
        if self.choices is not None and value not in self.choices:
            if self.file_suffix and isinstance(value, str) and value.endswith(self.file_suffix):
                try:
                    datasets.load(value)
                except datasets.DataError as err:
                    return str(err)
                return None
            files = f", or the path of a {self.file_suffix} file" if self.file_suffix else ""
            return f"must be one of: {', '.join(map(str, self.choices))}{files}"
        if self.range is not None:
            return self.range.problem(tuple(value) if self.kind is tuple else value)
        return None

    def describe(self) -> str:
        if self.choices is not None:
            files = f", or a {self.file_suffix} path" if self.file_suffix else ""
            return "one of " + ", ".join(map(str, self.choices)) + files
        if self.range is not None:
            entries = "entries " if self.kind is tuple else ""
            return f"{self.kind.__name__}, {entries}{self.range}"
        return self.kind.__name__


def domain_of(hint) -> Domain:
    """The :class:`Domain` of a type hint (``Annotated``, ``Literal``, ``tuple[...]``)."""
    found, suffix = None, None
    if typing.get_origin(hint) is Annotated:
        hint, *extras = typing.get_args(hint)
        found = next((e for e in extras if isinstance(e, Range)), None)
        suffix = next((e for e in extras if isinstance(e, str)), None)
    if typing.get_origin(hint) is Literal:
        choices = typing.get_args(hint)
        return Domain(type(choices[0]), choices=choices, file_suffix=suffix)
    if typing.get_origin(hint) is tuple:
        item = typing.get_args(hint)[0]
        inner = domain_of(item)
        return Domain(tuple, item=inner.kind, range=found or inner.range)
    return Domain(hint if isinstance(hint, type) else object, range=found)


@functools.cache
def field_domains(config_class: type) -> dict[str, Domain]:
    """Field name → :class:`Domain`, for every field of a Config class.

    A subclass that redeclares a base field with a plain type (``dataset: str =
    "mnist5k"``, to change its default) keeps the base class's domain; one that
    declares a domain of its own (``Literal``/``Range``) replaces it.
    """
    domains: dict[str, Domain] = {}
    for klass in reversed(config_class.__mro__):
        own = klass.__dict__.get("__annotations__", {})
        if not own or not dataclasses.is_dataclass(klass):
            continue
        hints = typing.get_type_hints(klass, include_extras=True)
        for name in own:
            if typing.get_origin(hints[name]) is ClassVar or hints[name] is ClassVar:
                continue
            domain = domain_of(hints[name])
            if name not in domains or domain.declared:
                domains[name] = domain
    fields = {f.name for f in dataclasses.fields(config_class)}
    return {name: d for name, d in domains.items() if name in fields}


@dataclass(frozen=True)
class RunConfig:
    """Fields every run has. Experiments subclass this, change defaults, add fields.

    Fields that change shapes or code (dataset, model, widths, optimizer, loss,
    batch size, epochs) pick the cohort; the numeric ``HPARAMS`` ride the run axis.
    """

    dataset: DatasetName = "mnist1d"
    model: ModelName = "mlp"
    widths: Widths = (100, 100)
    activation: ActivationName = "relu"
    optimizer: OptimizerName = "sgd"
    loss: LossName = "ce"
    batch_size: Count = 100  # ≤ the training set (checked by validate)
    epochs: Count = 100
    learning_rate: Positive = 0.05
    momentum: Rate = 0.9
    weight_decay: NonNegative = 0.0
    dropout: Rate = 0.0
    label_noise: Fraction = 0.0
    init_scale: NonNegative = 1.0
    stop_train_loss: NonNegative = 0.0  # stop a run when its full-train loss ≤ this (0: never)
    pin_init_seed: Annotated[int, Range(ge=-1)] = -1  # ≥ 0: every run's init stream uses this seed
    pin_order_seed: Annotated[int, Range(ge=-1)] = -1  # ≥ 0: every run's order stream uses this
    history_points: Count = 200  # at most this many evaluations per run (evenly spaced)
    grad_noise: NonNegative = 0.0  # std of Gaussian noise added to every minibatch gradient
    track_sharpness: Size = 0  # first N train examples: top Hessian eigenvalue per evaluation

    #: Fields an experiment computes from others (``--set`` on them is an error).
    DERIVED: ClassVar[dict[str, str]] = {}
    #: Base fields added after results were first published: a run id leaves such a
    #: field out while it holds its default, so earlier results keep their ids.
    LATER_FIELDS: ClassVar[frozenset[str]] = frozenset({"grad_noise", "track_sharpness"})
    #: Fields that only configure a measurement of the trained run (probe steps, CKA
    #: examples, …), not its training: a run's id holds them at their class default, so
    #: changing one measures the same training run (and ids of results written before
    #: this declaration, which hold the defaults, are unchanged).
    MEASURE_FIELDS: ClassVar[frozenset[str]] = frozenset()

    def identity(self) -> dict:
        """The fields that identify a run (hashed into its run id)."""
        fields = dataclasses.asdict(self)
        for name in self.LATER_FIELDS:
            default = RunConfig.__dataclass_fields__[name].default
            if fields.get(name) == default:
                del fields[name]
        for name in self.MEASURE_FIELDS:
            field = type(self).__dataclass_fields__[name]
            fields[name] = (
                field.default
                if field.default_factory is dataclasses.MISSING
                else field.default_factory()
            )
        return fields

    def validate(self) -> None:
        """Every field in its declared domain, and the cohort and hyperparameters it
        derives trainable (batch size ≤ training set, …); a SpecError says which."""
        for name, domain in field_domains(type(self)).items():
            value = getattr(self, name)
            problem = domain.problem(value)
            if problem:
                raise SpecError(f"{name}={_show(value)}: {problem}")
        try:
            spec = self.cohort_spec()
            hparams = self.hparams()
        except SpecError:
            raise
        except (ValueError, KeyError, ZeroDivisionError) as err:
            raise SpecError(str(err).strip("'\"")) from None
        # The cohort as it will be trained, derived fields included.
        base = field_domains(RunConfig)
        shaped = ("dataset", "model", "widths", "activation", "optimizer", "loss", "epochs")
        for name in shaped + ("batch_size", "history_points", "track_sharpness"):
            problem = base[name].problem(getattr(spec, name))
            if problem:
                raise SpecError(f"the cohort's {name}={_show(getattr(spec, name))}: {problem}")
        if spec.augment not in augmentations.KINDS:
            raise SpecError(
                f"augmentation {spec.augment!r}: must be one of {', '.join(augmentations.KINDS)}"
            )
        for name, value in hparams.items():
            problem = base[name].problem(value) if name in base else None
            if problem:
                raise SpecError(f"the runs' {name}={_show(value)}: {problem}")
        try:
            schedule(spec.epochs, spec.history_points)
        except ScheduleError as err:
            raise SpecError(str(err)) from None
        num_train, input_shape = datasets.outline(spec.dataset)
        if spec.batch_size > num_train:
            raise SpecError(
                f"batch_size={spec.batch_size} is larger than the training set of "
                f"{spec.dataset} ({num_train} examples); use 1 … {num_train}"
            )
        for name in ("track_sharpness", "monitor_examples"):
            if getattr(spec, name, 0) > num_train:
                raise SpecError(
                    f"{name}={getattr(spec, name)} is more than the training set of "
                    f"{spec.dataset} ({num_train} examples); use 0 (off) … {num_train}"
                )
        features = math.prod(input_shape)
        if spec.model == "cnn2d" and math.isqrt(features) ** 2 != features:
            raise SpecError(
                f"model cnn2d needs square images; {spec.dataset} has {features} features "
                "(use model=mlp or cnn)"
            )

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
        """The validated Config of one grid point (profile ⊕ ``--set`` ⊕ point)."""
        base = {k: v for k, v in self.profile(profile).items() if k not in ("seeds", "grid")}
        try:
            config = self.config_class(**{**base, **overrides, **point})
        except TypeError as err:
            raise SpecError(f"profile {profile!r} of {self.name}: {err}") from err
        try:
            config.validate()
        except SpecError as err:
            where = ", ".join(f"{k}={_show(v)}" for k, v in point.items())
            raise SpecError(
                f"{self.name} --profile {profile}" + (f" at {where}" if where else "") + f": {err}"
            ) from None
        return config

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
    """``["key=value", ...]`` → typed values for Config fields, each checked against the
    field's declared domain; errors name the fix."""
    fields = experiment.config_fields()
    domains = field_domains(experiment.config_class)
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
        if key in out:
            raise SpecError(f"--set {key} is given twice; keep one --set {key}=VALUE")
        value = _coerce(key, text.strip(), domains[key])
        problem = domains[key].problem(value)
        if problem:
            raise SpecError(f"--set {key}={text.strip()!r}: {key} {problem}")
        out[key] = value
    return out


def _coerce(key: str, text: str, domain: Domain) -> object:
    kind = domain.kind
    try:
        if kind is bool:
            if text.lower() not in ("true", "false", "1", "0"):
                raise ValueError
            return text.lower() in ("true", "1")
        if kind is int:
            return int(text)
        if kind is float:
            return float(text)
        if kind is str:
            return text
        if kind is tuple and domain.item in (int, float):
            return tuple(domain.item(part) for part in text.split(",") if part.strip())
    except ValueError:
        pass
    else:
        raise SpecError(f"--set {key}: unsupported field type {kind.__name__}")
    name = f"{domain.item.__name__} entries" if kind is tuple and domain.item else kind.__name__
    raise SpecError(f"--set {key}={text!r}: expected {name} (e.g. tuples as 256,256)")
