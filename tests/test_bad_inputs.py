"""Bad input, tried as a hostile new user would: every case is refused in one line.

Each case of the table runs one command through click's CliRunner inside a sandbox
(the working directory is a temporary folder holding a copy of shipped results, a
corrupted copy per kind of damage, and figures standing in for good outputs) and
asserts: the documented exit code (2 for bad input), at most 3 lines on stderr, no
traceback, and not one file of the sandbox created, removed or rewritten.
"""

from __future__ import annotations

import gzip
import json
import os
import shutil
from pathlib import Path

import pandas as pd
import pytest
from click.testing import CliRunner

from toolkit import results, runner, spec
from toolkit.cli import main

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = ROOT / "results" / "exp_overfitting" / "default"
GOOD = "results/exp_overfitting/default"  # the sandbox's copy of the shipped results


# ----- the sandbox: good results, corrupted copies, standing figures --------------
def _truncate(path: Path) -> None:
    text = path.read_bytes()
    path.write_bytes(text[: len(text) - 40])  # cut inside the last row


def _csv_edit(name: str, edit):
    def damage(folder: Path) -> None:
        frame = pd.read_csv(folder / name)
        edit(frame).to_csv(folder / name, index=False)

    return damage


def _with_text(frame: pd.DataFrame, column: str) -> pd.DataFrame:
    frame[column] = frame[column].astype(object)
    frame.loc[len(frame) // 2, column] = "n/a (crashed)"
    return frame


def _write(name: str, payload: bytes):
    return lambda folder: (folder / name).write_bytes(payload)


def _append(name: str, payload: bytes):
    def damage(folder: Path) -> None:
        with open(folder / name, "ab") as handle:
            handle.write(payload)

    return damage


def _gzip_history(folder: Path) -> None:
    payload = gzip.compress((folder / "history.csv").read_bytes(), mtime=0)
    (folder / "history.csv").unlink()
    (folder / "history.csv.gz").write_bytes(payload[: len(payload) // 2])  # truncated gzip


DAMAGE = {
    "meta_list": _write("meta.json", b"[1, 2, 3]\n"),
    "meta_garbage": _write("meta.json", b"{not json at all\n"),
    "meta_foreign": _write("meta.json", b'{"name": "someone else\'s file"}\n'),
    "meta_bad_type": lambda f: (f / "meta.json").write_text(
        json.dumps({**json.loads((f / "meta.json").read_text()), "cohorts": "many"})
    ),
    "meta_binary": _write("meta.json", bytes(range(256))),
    "summary_garbage": _append("summary.csv", b"hello world\nthis is not a row\n"),
    "summary_truncated": lambda f: _truncate(f / "summary.csv"),
    "summary_binary": _write("summary.csv", bytes(range(256)) * 4),
    "summary_missing_column": _csv_edit(
        "summary.csv", lambda s: s.drop(columns=["final_test_acc"])
    ),
    "summary_empty": _write("summary.csv", b""),
    "summary_text_in_number": _csv_edit("summary.csv", lambda s: _with_text(s, "final_test_loss")),
    "summary_repeated_run": _csv_edit("summary.csv", lambda s: pd.concat([s, s.iloc[:1]])),
    "summary_not_utf8": _append("summary.csv", b"\xff\xfe\xfa,1,2\n"),
    "history_truncated": lambda f: _truncate(f / "history.csv"),
    "history_binary": _write("history.csv", b"\x89PNG\r\n\x1a\n" + bytes(200)),
    "history_text_in_number": _csv_edit("history.csv", lambda h: _with_text(h, "val_loss")),
    "history_gzip_corrupt": _gzip_history,
    "history_missing": lambda f: (f / "history.csv").unlink(),
    "verdicts_garbage": _append("verdicts.csv", b"<html>oops</html>\n"),
    "verdicts_missing_column": _csv_edit("verdicts.csv", lambda v: v.drop(columns=["estimate"])),
    "verdicts_truncated": lambda f: _truncate(f / "verdicts.csv"),
    "verdicts_empty": _write("verdicts.csv", b""),
}


def _snapshot(root: Path) -> dict[str, tuple]:
    """Every file and folder under ``root``: (size, mtime) — any write changes it."""
    state = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = Path(dirpath) / name
            stat = path.lstat()
            state[str(path.relative_to(root))] = (stat.st_size, stat.st_mtime_ns)
    return state


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("sandbox")
    shutil.copytree(SHIPPED, root / GOOD, ignore=shutil.ignore_patterns(".*", "params"))
    for name in ("curves.png", "curves.pdf"):  # "good outputs" a bad input must not replace
        for figures in (root / "paper_figures", root / "corrupt" / "paper_figures"):
            (figures / "exp_overfitting" / "default").mkdir(parents=True, exist_ok=True)
            (figures / "exp_overfitting" / "default" / name).write_bytes(b"a good figure")
    for kind, damage in DAMAGE.items():
        folder = root / "corrupt" / kind / "exp_overfitting" / "default"
        shutil.copytree(root / GOOD, folder)
        damage(folder)
    (root / "afile").write_text("a file where a folder is expected\n")
    (root / "empty.csv").write_text("")
    (root / "README.md").write_text("# a README the report must not rewrite\n")
    return root


@pytest.fixture
def in_sandbox(sandbox, monkeypatch):
    monkeypatch.chdir(sandbox)  # relative defaults (results/, paper_figures/) land here
    return sandbox


# ----- the table --------------------------------------------------------------------
RUN = ["run", "exp_overfitting", "--profile", "quick", "--out", "out", "--quiet"]


def _set(*pairs: str, experiment: str = "exp_overfitting") -> list[str]:
    args = ["run", experiment, "--profile", "quick", "--out", "out", "--quiet"]
    for pair in pairs:
        args += ["--set", pair]
    return args


CASES: list[tuple[str, list[str], str]] = [
    # --- run: values outside their declared domains ---
    ("lr_nan", _set("learning_rate=nan"), "finite"),
    ("lr_inf", _set("learning_rate=inf"), "finite"),
    ("lr_minus_inf", _set("learning_rate=-inf"), "finite"),
    ("lr_negative", _set("learning_rate=-0.1"), "learning_rate must be > 0"),
    ("lr_zero", _set("learning_rate=0"), "learning_rate must be > 0"),
    ("lr_text", _set("learning_rate=fast"), "expected float"),
    ("label_noise_2", _set("label_noise=2"), "label_noise must be ≥ 0 and ≤ 1"),
    ("label_noise_negative", _set("label_noise=-0.1"), "label_noise must be"),
    ("dropout_1.5", _set("dropout=1.5"), "dropout must be ≥ 0 and < 1"),
    ("dropout_1", _set("dropout=1"), "dropout must be ≥ 0 and < 1"),
    ("dropout_negative", _set("dropout=-0.5"), "dropout must be"),
    ("momentum_1", _set("momentum=1"), "momentum must be"),
    ("weight_decay_negative", _set("weight_decay=-1"), "weight_decay must be ≥ 0"),
    ("epochs_0", _set("epochs=0"), "epochs must be ≥ 1"),
    ("epochs_negative", _set("epochs=-1"), "epochs must be ≥ 1"),
    ("epochs_fraction", _set("epochs=2.5"), "expected int"),
    ("epochs_exponent", _set("epochs=1e3"), "expected int"),
    ("batch_0", _set("batch_size=0"), "batch_size must be ≥ 1"),
    ("batch_negative", _set("batch_size=-3"), "batch_size must be ≥ 1"),
    ("batch_over_train", _set("batch_size=5000"), "larger than the training set"),
    ("widths_0", _set("widths=0"), "widths entry 0 must be ≥ 1"),
    ("widths_empty", _set("widths="), "at least one entry"),
    ("widths_negative", _set("widths=8,-1"), "entry -1 must be ≥ 1"),
    ("widths_text", _set("widths=a,b"), "expected int entries"),
    ("history_points_0", _set("history_points=0"), "history_points must be ≥ 1"),
    ("init_scale_negative", _set("init_scale=-1"), "init_scale must be ≥ 0"),
    ("grad_noise_nan", _set("grad_noise=nan"), "finite"),
    ("track_sharpness_negative", _set("track_sharpness=-1"), "track_sharpness must be ≥ 0"),
    ("track_sharpness_over_train", _set("track_sharpness=5000"), "track_sharpness=5000"),
    ("pin_seed_below", _set("pin_init_seed=-2"), "pin_init_seed must be ≥ -1"),
    ("stop_loss_negative", _set("stop_train_loss=-1"), "stop_train_loss must be ≥ 0"),
    # --- run: names from the registries ---
    (
        "dataset_unknown",
        _set("dataset=nope"),
        "dataset must be one of: mnist1d, mnist1d_40k, mnist5k",
    ),
    ("model_unknown", _set("model=nope"), "model must be one of: mlp, cnn, cnn2d"),
    ("optimizer_unknown", _set("optimizer=nope"), "one of: sgd, nesterov, adam"),
    ("activation_unknown", _set("activation=nope"), "one of: relu, tanh, gelu, linear"),
    ("loss_unknown", _set("loss=hinge"), "loss must be one of: ce, mse"),
    ("model_dataset_mismatch", _set("model=cnn2d"), "cnn2d needs square images"),
    # --- run: paths through values ---
    ("traversal_deep", _set("activation=/../../../../escaped"), "activation must be one of"),
    ("traversal_profile", _set("activation=/../quick"), "activation must be one of"),
    ("traversal_dataset", _set("dataset=../../x"), "dataset must be one of"),
    # --- run: the command line itself ---
    ("set_twice", _set("epochs=2", "epochs=3"), "--set epochs is given twice"),
    ("set_unknown_key", _set("nope=1"), "unknown --set key 'nope'"),
    ("set_no_equals", _set("epochs"), "--set expects key=value"),
    ("set_no_key", _set("=5"), "--set expects key=value"),
    ("seeds_0", RUN + ["--seeds", "0"], "--seeds must be a positive integer"),
    ("seeds_negative", RUN + ["--seeds", "-1"], "--seeds must be a positive integer"),
    ("seeds_text", RUN + ["--seeds", "ten"], "--seeds must be a positive integer"),
    ("seeds_fraction", RUN + ["--seeds", "1.5"], "--seeds must be a positive integer"),
    ("seeds_huge", RUN + ["--seeds", "1000000000"], "1 … 10,000"),
    ("seeds_just_over", RUN + ["--seeds", "10001"], "1 … 10,000"),
    ("profile_unknown", ["run", "exp_overfitting", "--profile", "huge"], "has no profile 'huge'"),
    ("profile_path", ["run", "exp_overfitting", "--profile", "../../x"], "has no profile"),
    ("experiment_unknown", ["run", "exp_nope"], "unknown experiment 'exp_nope'"),
    ("experiment_path", ["run", "../exp_overfitting"], "unknown experiment"),
    ("memory_budget_text", RUN + ["--memory-budget", "lots"], "--memory-budget must look like"),
    ("memory_budget_zero", RUN + ["--memory-budget", "0"], "--memory-budget must be positive"),
    ("memory_budget_inf", RUN + ["--memory-budget", "infGB"], "--memory-budget must look like"),
    ("memory_budget_negative", RUN + ["--memory-budget", "-5GB"], "--memory-budget must"),
    ("run_unknown_option", RUN + ["--fast"], "No such option '--fast'"),
    ("run_no_name", ["run"], "Missing argument 'NAME'"),
    (
        "out_is_a_file",
        ["run", "exp_overfitting", "--profile", "quick", "--out", "afile"],
        "not writable",
    ),
    (
        "out_under_a_file",
        ["run", "exp_overfitting", "--profile", "quick", "--out", "afile/sub"],
        "not writable",
    ),
    # --- run: experiment-specific fields ---
    ("derived_field", _set("learning_rate=0.1", experiment="exp_sharp_flat"), "derives it"),
    ("policy_unknown", _set("lr_policy=x", experiment="exp_sharp_flat"), "one of: fixed, scaled"),
    ("budget_path", _set("budget=../../x", experiment="exp_sharp_flat"), "budget must be one of"),
    ("budget_steps", _set("budget_steps=7", experiment="exp_sgd_noise"), "whole number of epochs"),
    ("cnn2d_on_1d", _set("model=cnn2d", experiment="exp_representations"), "model 'cnn2d'"),
    ("sweep_batch", _set("sweep_batch=7", experiment="exp_learning_rate"), "sweep_steps must be"),
    ("variation", _set("variation=nope", experiment="exp_seed_variation"), "variation must be"),
    ("stage", _set("stage=nope", experiment="exp_saddle_momentum"), "stage must be one of"),
    ("augment", _set("augment=maybe", experiment="exp_regularization"), "augment must be one of"),
    ("fractions", _set("checkpoint_fractions=0,2", experiment="exp_representations"), "entry"),
    ("pinned_seed", _set("pin_init_seed=1", experiment="exp_seed_variation"), "derives it"),
    # --- figures ---
    ("figures_unknown", ["figures", "exp_nope"], "unknown experiment"),
    ("figures_no_results", ["figures", "exp_overfitting", "--out", "nowhere"], "no results in"),
    ("figures_profile", ["figures", "exp_overfitting", "--profile", "nope"], "no results in"),
    ("figures_all_profile", ["figures", "--profile", "nope"], "no results for profile 'nope'"),
    ("figures_out_file", ["figures", "--out", "afile"], "no results for profile"),
    # --- compare ---
    ("compare_missing", ["compare", GOOD, "nope"], "nope: no such file or folder"),
    ("compare_empty", ["compare", GOOD, "empty.csv"], "empty.csv: empty file"),
    ("compare_tol", ["compare", GOOD, GOOD, "--tol", "final_test_acc"], "--tol expects"),
    ("compare_tol_negative", ["compare", GOOD, GOOD, "--tol", "x=-1"], "--tol expects"),
    ("compare_tol_text", ["compare", GOOD, GOOD, "--tol", "x=abc%"], "--tol expects"),
    ("compare_csv_under_file", ["compare", GOOD, GOOD, "--csv", "afile/x.csv"], "not a folder"),
    ("compare_csv_no_folder", ["compare", GOOD, GOOD, "--csv", "nodir/x.csv"], "not a folder"),
    ("compare_csv_folder", ["compare", GOOD, GOOD, "--csv", "results"], "it is a folder"),
    ("compare_factor", ["compare", GOOD, GOOD, "--factor", "nope"], "no column 'nope'"),
    ("compare_one_arg", ["compare", GOOD], "Missing argument 'B'"),
    # --- report ---
    ("report_profile", ["report", "--profile", "nope"], "no results for profile 'nope'"),
    ("report_no_folder", ["report", "--out", "nowhere"], "no results folder nowhere"),
    ("report_out_file", ["report", "--out", "afile"], "no results folder afile"),
    # --- show and list ---
    ("show_unknown", ["show", "exp_nope"], "unknown experiment"),
    ("show_profile", ["show", "exp_overfitting", "--profile", "nope"], "has no profile 'nope'"),
    ("show_no_name", ["show"], "Missing argument 'NAME'"),
    ("list_extra", ["list", "extra"], "unexpected extra argument"),
    ("unknown_command", ["train"], "No such command 'train'"),
    ("unknown_global_option", ["--verbose", "list"], "No such option '--verbose'"),
]

# --- corrupt results: every kind of damage, through every command that reads it ---
_READERS = {
    "run": lambda out: ["run", "exp_overfitting", "--profile", "default", "--out", out, "--quiet"],
    "figures": lambda out: ["figures", "exp_overfitting", "--profile", "default", "--out", out],
    "report": lambda out: ["report", "--out", out],
    "compare": lambda out: ["compare", GOOD, f"{out}/exp_overfitting/default"],
}
_UNREAD = {  # (reader, damage) pairs where the damaged file is not that command's input
    ("compare", kind) for kind in DAMAGE if kind.startswith("history")
} | {
    ("run", "history_missing"),  # a folder without history is resumed, not refused
    ("compare", "summary_missing_column"),  # compare lists columns on one side only
    ("compare", "verdicts_missing_column"),  # compare reads claim, statistic, verdict only
}
CASES += [
    (f"{reader}_{kind}", build(f"corrupt/{kind}"), kind.split("_")[0])
    for kind in DAMAGE
    for reader, build in _READERS.items()
    if (reader, kind) not in _UNREAD
]


def _invoke(args: list[str]):
    return CliRunner().invoke(main, args, catch_exceptions=False)


@pytest.mark.parametrize("args, message", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_is_refused_in_one_line_and_touches_nothing(in_sandbox, args, message):
    before = _snapshot(in_sandbox)
    result = _invoke(args)
    after = _snapshot(in_sandbox)
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert 1 <= len(lines) <= 3 and lines[0].startswith("error: "), result.stderr
    assert "Traceback" not in result.output and "internal error" not in result.output
    assert message in result.stderr, result.stderr
    assert not result.stderr.rstrip().endswith("(None)")
    assert after == before, sorted(set(after.items()) ^ set(before.items()))


def test_the_table_is_large_enough():
    assert len(CASES) >= 80 and len({c[0] for c in CASES}) == len(CASES)


# ----- paths never come from values ------------------------------------------------
def _string_fields():
    for name in spec.experiment_names():
        experiment = spec.load(name)
        for field, domain in spec.field_domains(experiment.config_class).items():
            if domain.kind is str and field not in experiment.config_class.DERIVED:
                yield name, field


@pytest.mark.parametrize("experiment, field", list(_string_fields()))
def test_traversal_through_every_string_field_is_refused(in_sandbox, experiment, field):
    before = _snapshot(in_sandbox)
    result = _invoke(_set(f"{field}=../../../escaped", experiment=experiment))
    assert result.exit_code == 2 and f"{field} must be one of" in result.stderr, result.stderr
    assert _snapshot(in_sandbox) == before
    # and even a value that got past validation could not make a path
    name = runner.folder_name("quick", {field: "/../../../escaped"})
    assert "/" not in name and ".." not in name and os.sep not in name


def test_folder_names_are_safe_and_distinct():
    assert runner.folder_name("default", {"epochs": 20}) == "default+epochs=20"
    assert runner.folder_name("default", {"widths": (256, 256)}) == "default+widths=256-256"
    hostile = [
        "../x",
        "..\\x",
        "a/b",
        "a b",
        "é",
        ".",
        "..",
        "/",
        "x" * 300,
        "a\0b",
        "a_b",
        "a?b",
    ]
    names = {runner.folder_name("default", {"activation": value}) for value in hostile}
    assert len(names) == len(hostile)  # sanitized names get a hash: never shared
    for name in names:
        assert len(name) <= 120 and all(c.isalnum() or c in "._=,+-" for c in name), name
        assert ".." not in name and name not in (".", "..")


# ----- the error boundary: bugs say so, and --debug shows them -----------------------
def test_unexpected_errors_are_one_line_and_debug_shows_the_traceback(monkeypatch):
    def broken():
        raise ZeroDivisionError("a bug")

    monkeypatch.setattr(spec, "experiment_names", broken)
    result = _invoke(["list"])
    assert result.exit_code == 1
    assert result.stderr.strip() == (
        "internal error: ZeroDivisionError: a bug (rerun with --debug for the traceback)"
    )
    debug = _invoke(["--debug", "list"])
    assert debug.exit_code == 1 and "Traceback" in debug.stderr
    assert "internal error: ZeroDivisionError: a bug" in debug.stderr


# ----- figures with nothing to show ----------------------------------------------------
def test_sharp_flat_figures_tolerate_a_subset_without_usable_runs(tmp_path):
    """A subset (matched budget, scaled lr, B = 4000, seed 1: a run that did not reach
    the target loss) has no usable run, so there is nothing to draw (no IndexError)."""
    shipped = ROOT / "results" / "exp_sharp_flat" / "default"
    folder = tmp_path / "results" / "exp_sharp_flat" / "default"
    folder.mkdir(parents=True)
    shutil.copy(shipped / "meta.json", folder)
    summary = pd.read_csv(shipped / "summary.csv")
    keep = (summary["budget"] == "matched") & (summary["lr_policy"] == "scaled")
    summary = summary[keep & (summary["batch_size"] == 4000) & (summary["seed"] == 1)]
    assert (summary["stopped_epoch"] < 0).all()  # the premise: it never reached the target
    summary.to_csv(folder / "summary.csv", index=False)
    for name in ("history", "slices", "contours"):
        table = results.read_csv(shipped / f"{name}.csv")  # plain or .csv.gz
        table[table["run_id"].isin(summary["run_id"])].to_csv(folder / f"{name}.csv", index=False)
    result = _invoke(["figures", "exp_sharp_flat", "--out", str(tmp_path / "results")])
    assert result.exit_code == 0, result.output
    assert "exp_sharp_flat: 0 figures" in result.output


# ----- the domains themselves ------------------------------------------------------------
@pytest.mark.parametrize("name", spec.experiment_names())
def test_every_field_declares_its_domain_and_every_profile_is_valid(name):
    experiment = spec.load(name)
    domains = spec.field_domains(experiment.config_class)
    undeclared = [field for field, domain in domains.items() if not domain.declared]
    assert not undeclared, f"{name}: give these fields a Literal or Range: {undeclared}"
    for profile, settings in experiment.module.PROFILES.items():
        runs = runner.plan_runs(experiment, profile, 1, {})  # validates every grid point
        assert runs, (name, profile)
        assert set(settings) - {"seeds", "grid"} <= set(domains)
    shipped = ROOT / "results" / name / "default" / "summary.csv"
    if shipped.exists():  # declaring domains changed no run id
        seeds = int(experiment.profile("default").get("seeds", 10))
        planned = {r.run_id for r in runner.plan_runs(experiment, "default", seeds, {})}
        assert set(pd.read_csv(shipped)["run_id"]) <= planned


def test_registry_names_are_the_ones_the_library_builds():
    import jax.numpy as jnp

    from toolkit import augment, data, engine, models

    assert spec.domain_of(spec.DatasetName).choices == tuple(data.available())
    assert spec.domain_of(spec.AugmentName).choices == tuple(augment.KINDS)
    assert set(spec.domain_of(spec.ActivationName).choices) == set(models.ACTIVATIONS)
    for model in spec.domain_of(spec.ModelName).choices:
        models.build(model, (4,), 10)
    for optimizer in spec.domain_of(spec.OptimizerName).choices:
        engine.optimizer(optimizer)(learning_rate=0.1, momentum=0.9, weight_decay=0.0)
    for loss in spec.domain_of(spec.LossName).choices:
        engine.per_example_loss(loss, jnp.zeros((2, 3)), jnp.zeros((2,), jnp.int32))
    with pytest.raises(ValueError):
        models.build("nope", (4,), 10)


def test_range_and_domain_messages():
    positive = spec.Range(gt=0)
    assert positive.problem(0.1) is None and positive.problem(0) == "must be > 0"
    assert positive.problem(float("nan")) == "must be a finite number"
    assert spec.Range(ge=1).problem(()).startswith("needs at least one entry")
    assert spec.Range(ge=1).problem((2, 0)) == "entry 0 must be ≥ 1"
    assert str(spec.Range(ge=0, lt=1)) == "≥ 0 and < 1"
    assert spec.domain_of(spec.Widths).describe() == "tuple, entries ≥ 1"
