"""Shared fixtures: small variants of real experiments (same code paths, tiny sizes)."""

from __future__ import annotations

import importlib
import types

import pytest

from toolkit import spec


def variant(base: str = "exp_overfitting", grid: dict | None = None, **profile) -> spec.Experiment:
    """``base`` with a one-profile ("quick") override: tiny, fast, same analysis and figures."""
    module = importlib.import_module(f"experiments.{base}")
    copy = types.ModuleType(f"{base}_variant")
    copy.__dict__.update(module.__dict__)
    settings = {"seeds": 2, "epochs": 2, "widths": (8,)}
    settings.update(profile)
    if grid is not None:
        settings["grid"] = grid
    copy.PROFILES = {"quick": settings}
    return spec.Experiment(base, copy)


@pytest.fixture
def make_variant():
    return variant
