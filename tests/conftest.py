"""Shared test fixtures: the shared data directory, seeds, quiet TensorFlow."""

from __future__ import annotations

import os
import random
from pathlib import Path

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# Two logical CPU devices for tf.distribute tests; harmless elsewhere.
os.environ.setdefault("EDGE_LOTTERY_TEST", "1")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parent.parent
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data_dir() -> Path:
    """The shared MNIST / Fashion-MNIST folder; skips the test where it is absent."""
    if not (SHARED_DATA / "mnist.npz").is_file():
        pytest.skip(f"shared data not found at {SHARED_DATA} (MNIST tests need ../shared/data)")
    return SHARED_DATA


@pytest.fixture(autouse=True)
def _seed_everything() -> None:
    random.seed(0)
    np.random.seed(0)
