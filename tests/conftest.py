"""Shared pytest fixtures: every test starts from a clean Pyro state and a fixed seed."""

import os

import pyro
import pytest

os.environ.setdefault("PYRO_PRUNE_SMOKE", "1")


@pytest.fixture(autouse=True)
def _clean_pyro_state():
    """Clear the global param store, seed every RNG and enable validation before each test."""
    pyro.clear_param_store()
    pyro.set_rng_seed(0)
    pyro.enable_validation(True)
    yield
    pyro.clear_param_store()
