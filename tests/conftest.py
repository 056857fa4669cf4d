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


def _rewritten(model_bytes: bytes, edit) -> bytes:
    import flatbuffers
    from ai_edge_litert import schema_py_generated as schema

    m = schema.ModelT.InitFromPackedBuf(bytearray(model_bytes), 0)
    edit(m)
    b = flatbuffers.Builder(1024)
    b.Finish(m.Pack(b), file_identifier=b"TFL3")
    return bytes(b.Output())


@pytest.fixture(scope="session")
def rewrite_model():
    """f(model_bytes, edit) -> the .tflite with edit(ModelT) applied (the schema's object API): one
    field of a real model corrupted or changed."""
    return _rewritten


@pytest.fixture(scope="session")
def oversized_weight_shape():
    """f(model_bytes) -> the model with one 2-D weight tensor's shape far larger than its buffer
    (one corrupted field): TFLite-Micro trusts the shape, reads past the data and crashes."""

    def oversize(m) -> None:
        weights = next(t for t in m.subgraphs[0].tensors if t.buffer and len(t.shape) == 2 and t.shape[0] > 1)
        weights.shape[1] = 14_155_808

    return lambda model_bytes: _rewritten(model_bytes, oversize)
