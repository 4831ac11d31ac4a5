"""Scale-out: several processes equal one, memory-bounded cohorts equal whole ones,
and the switches that go with them fail clearly on bad input."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from toolkit import data, distributed, engine, runner
from toolkit.engine import CohortSpec, MemoryEstimate, choose_run_batch

ROOT = Path(__file__).resolve().parent.parent
RUN = ["run", "exp_overfitting", "--profile", "quick", "--set", "epochs=2", "--quiet"]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _toolkit(args, env_extra=None, **kwargs) -> subprocess.Popen:
    env = {**os.environ, "JAX_NUM_CPU_DEVICES": "1", "JAX_PLATFORMS": "cpu", **(env_extra or {})}
    env.pop("XLA_FLAGS", None)
    return subprocess.Popen(
        [sys.executable, "-m", "toolkit", *args],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **kwargs,
    )


def test_two_processes_equal_one(tmp_path):
    """Two processes on loopback (gloo, one CPU device each) write the same rows as one."""
    port = _free_port()
    multi = [
        _toolkit(
            RUN
            + ["--out", str(tmp_path / "multi"), "--distributed"]
            + ["--coordinator", f"127.0.0.1:{port}", "--num-processes", "2"]
            + ["--process-id", str(i), "--init-timeout", "60"]
        )
        for i in range(2)
    ]
    single = _toolkit(RUN + ["--out", str(tmp_path / "single")])
    outputs = [p.communicate(timeout=300) for p in (*multi, single)]
    for process, (_, stderr) in zip((*multi, single), outputs):
        assert process.returncode == 0, stderr[-2000:]
    folder = "exp_overfitting/quick+epochs=2"
    a = pd.read_csv(tmp_path / "multi" / folder / "summary.csv")
    b = pd.read_csv(tmp_path / "single" / folder / "summary.csv")
    assert list(a["run_id"]) == list(b["run_id"]) and len(a) == 4
    numeric = [c for c in a.columns if pd.api.types.is_float_dtype(a[c])]
    np.testing.assert_allclose(a[numeric].to_numpy(), b[numeric].to_numpy(), rtol=1e-4, atol=1e-6)
    meta = pd.read_json(tmp_path / "multi" / folder / "meta.json", typ="series")
    assert meta["processes"] == 2 and len(meta["devices"]) == 2
    assert "runs trained" in outputs[0][0]  # process 0 reports; process 1 wrote nothing


def test_unreachable_coordinator_fails_fast_with_one_line(tmp_path):
    port = _free_port()  # nobody listens there
    started = time.monotonic()
    args = RUN + ["--out", str(tmp_path), "--distributed", "--coordinator", f"127.0.0.1:{port}"]
    process = _toolkit(args + ["--num-processes", "2", "--process-id", "1", "--init-timeout", "2"])
    stdout, stderr = process.communicate(timeout=120)
    assert process.returncode == 2
    assert stderr.strip().startswith("error: cannot reach the coordinator")
    assert len(stderr.strip().splitlines()) == 1
    assert time.monotonic() - started < 60
    assert not (tmp_path / "exp_overfitting").exists()


@pytest.mark.parametrize(
    "args, message",
    [
        (["--coordinator", "127.0.0.1:1"], "go with --distributed"),
        (["--distributed", "--coordinator", "localhost"], "HOST:PORT"),
        (["--distributed", "--num-processes", "2"], "give all of"),
        (
            ["--distributed", "--coordinator", "127.0.0.1:1", "--num-processes", "2"]
            + ["--process-id", "5"],
            "--process-id must be in 0..1",
        ),
        (["--memory-budget", "lots"], "--memory-budget must look like"),
    ],
)
def test_bad_scale_out_options_exit_2(args, message, tmp_path):
    process = _toolkit(RUN + ["--out", str(tmp_path)] + args)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 2 and message in stderr, stderr
    assert len(stderr.strip().splitlines()) == 1


def test_cluster_detection_reads_the_job_size():
    assert distributed.cluster_detected({"SLURM_NTASKS": "4"})
    assert distributed.cluster_detected({"OMPI_COMM_WORLD_SIZE": "2"})
    assert not distributed.cluster_detected({"SLURM_NTASKS": "1"})
    assert not distributed.cluster_detected({})


def test_run_batches_give_the_same_runs(tmp_path):
    """lax.map over groups of runs (bounded memory) == all runs vmapped at once."""
    dataset = data.load("mnist1d")
    spec = CohortSpec("mnist1d", "mlp", (8,), "relu", "sgd", "ce", 400, 2)
    keys = engine.run_keys(3, {s: [0, 1, 2] for s in engine.STREAMS})
    hparams = {h: np.zeros(3) for h in engine.HPARAMS}
    hparams.update(learning_rate=np.array([0.05, 0.1, 0.2]), momentum=np.full(3, 0.9))
    hparams["init_scale"] = np.ones(3)
    whole = engine.Cohort(spec, dataset).run(keys, hparams)
    grouped = engine.Cohort(spec, dataset, run_batch=2).run(keys, hparams)
    np.testing.assert_allclose(grouped.history, whole.history, rtol=1e-5, atol=1e-6)
    assert grouped.steps.tolist() == whole.steps.tolist()


def test_small_memory_budget_splits_a_cohort_and_changes_no_result(tmp_path, make_variant):
    """On a GPU a cohort over budget runs in groups (same numbers to float32 rounding);
    on a CPU every cohort runs one run at a time anyway (run identity)."""
    experiment = make_variant(grid={"label_noise": [0.0, 1.0]})
    run = dict(profile="quick", progress=False)
    normal = runner.run_experiment(experiment, out=tmp_path / "a", **run)
    spec = runner.group_cohorts(runner.plan_runs(experiment, "quick", 2, {}))
    estimate = engine.estimate_memory(next(iter(spec)), data.load("mnist1d"))
    budget = 4 * estimate.state + estimate.work  # room for one run's work at a time
    assert choose_run_batch(estimate, 4, budget, platform="gpu") == 1
    small = runner.run_experiment(experiment, out=tmp_path / "b", memory_budget=budget, **run)
    meta = small.folder.meta()["cohorts"][0]["memory"]
    assert meta["run_batch"] == 1 and meta["estimate_bytes"] <= budget
    assert normal.folder.meta()["cohorts"][0]["memory"]["run_batch"] == 1  # CPU: one at a time
    for name in ("summary.csv", "history.csv"):
        assert (normal.folder.path / name).read_bytes() == (small.folder.path / name).read_bytes()


def test_choose_run_batch():
    estimate = MemoryEstimate(state=10, work=100)
    gpu = dict(model="mlp", platform="gpu")
    assert choose_run_batch(estimate, 8, budget=8 * 10 + 8 * 100, **gpu) is None
    assert choose_run_batch(estimate, 8, budget=8 * 10 + 3 * 100, **gpu) == 3
    assert choose_run_batch(estimate, 8, budget=1, **gpu) == 1  # never below one run at a time
    # a GPU vmaps every model; a CPU runs every cohort one run at a time (run identity)
    roomy = 10**9
    assert choose_run_batch(estimate, 8, roomy, model="cnn", platform="gpu") is None
    for model in ("mlp", "cnn"):
        assert choose_run_batch(estimate, 8, roomy, model=model, platform="cpu") == 1
        assert choose_run_batch(estimate, 1, roomy, model=model, platform="cpu") == 1


def test_estimate_grows_with_batch_and_width():
    dataset = data.load("mnist1d")
    small = engine.estimate_memory(
        CohortSpec("mnist1d", "mlp", (32,), "relu", "sgd", "ce", 4000, 1), dataset
    )
    wide = engine.estimate_memory(
        CohortSpec("mnist1d", "mlp", (512,), "relu", "adam", "ce", 4000, 1), dataset
    )
    assert wide.state > small.state and wide.work > small.work
    # a 40-512-10 MLP: ~26k parameters; params + 2 Adam moments + best + the epoch-start
    # copy of params and moments (one state copy: the chunk's state is donated), float32
    assert 7 * 4 * 26_000 < wide.state < 7 * 4 * 28_000 + 4 * 4000


def test_deterministic_flag_is_set_and_recorded(tmp_path):
    process = _toolkit(RUN + ["--out", str(tmp_path), "--deterministic"])
    _, stderr = process.communicate(timeout=300)
    assert process.returncode == 0, stderr[-2000:]
    meta = pd.read_json(tmp_path / "exp_overfitting/quick+epochs=2/meta.json", typ="series")
    assert meta["deterministic"] is True or meta["deterministic"] == 1
    assert "--xla_gpu_deterministic_ops=true" in meta["xla_flags"]


def test_persistent_compile_cache_is_used_and_recorded(tmp_path):
    """A second identical run loads its programs from the cache (entries are written
    once), and meta.json says where the cache is; --no-compile-cache leaves it off."""
    import subprocess
    import sys

    # every program cached, however fast it compiled (no timing-dependent entries)
    env = {
        **os.environ,
        "TOOLKIT_CACHE": str(tmp_path / "cache"),
        "TOOLKIT_CACHE_MIN_COMPILE_S": "0",
    }
    command = [sys.executable, "-m", "toolkit", "run", "exp_overfitting", "--profile", "quick",
               "--seeds", "1", "--quiet", "--out"]  # fmt: skip
    first = subprocess.run(command + [str(tmp_path / "a")], env=env, capture_output=True)
    assert first.returncode == 0, first.stderr.decode()
    entries = sorted(p.name for p in (tmp_path / "cache" / "jax").iterdir())
    assert entries, "nothing was cached"
    second = subprocess.run(
        command + [str(tmp_path / "b"), "--force"], env=env, capture_output=True
    )
    assert second.returncode == 0
    assert sorted(p.name for p in (tmp_path / "cache" / "jax").iterdir()) == entries
    meta = json.loads((tmp_path / "b" / "exp_overfitting" / "quick" / "meta.json").read_text())
    assert str(tmp_path / "cache" / "jax") in json.dumps(meta)
    # the second run's backend compiles were all cache reads, and meta.json says so
    first_meta = json.loads(
        (tmp_path / "a" / "exp_overfitting" / "quick" / "meta.json").read_text()
    )
    for cohort, cold in zip(meta["cohorts"], first_meta["cohorts"]):
        warm, cold = cohort["compile_s"]["training"], cold["compile_s"]["training"]
        assert warm["programs"] == cold["programs"] > 0
        assert warm["cache_hits"] == warm["programs"] and cold["cache_hits"] == 0
    assert meta["invocations"][-1]["compile_s"] >= 0
    for name in ("summary.csv", "history.csv"):
        a = (tmp_path / "a" / "exp_overfitting" / "quick" / name).read_bytes()
        assert a == (tmp_path / "b" / "exp_overfitting" / "quick" / name).read_bytes()
    assert distributed.compile_cache(enabled=False) is None  # --no-compile-cache


def test_compile_clock_counts_compiles_once_and_nests():
    import jax
    import jax.numpy as jnp

    f = jax.jit(lambda x: jnp.tanh(x) @ x.T + 0.12345)
    x = jnp.ones((8, 8))
    with distributed.CompileClock() as outer:
        with distributed.CompileClock() as inner:
            f(x).block_until_ready()
        with distributed.CompileClock() as again:
            f(x).block_until_ready()  # cached in memory: nothing compiled
    assert inner.programs >= 1 and inner.total_s > 0
    assert again.programs == 0 and again.total_s == 0
    assert outer.programs == inner.programs and outer.total_s == inner.total_s
    assert set(inner.summary()) == {"trace_s", "lower_s", "backend_s", "total_s", "programs",
                                    "cache_hits"}  # fmt: skip
