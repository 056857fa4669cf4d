"""``edge-lottery export`` / ``inspect`` end to end through the real CLI group (CliRunner)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from ticket_models import digits_ticket

from converters.tflm import arena
from edge_lottery.cli import main


@pytest.fixture(scope="module")
def keras_file(tmp_path_factory) -> Path:
    model, _, _ = digits_ticket(False)
    path = tmp_path_factory.mktemp("src") / "ticket.keras"
    model.save(path)
    return path


def _run(*args: str):
    result = CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)
    return result


def _error_line(result) -> str:
    lines = [ln for ln in result.output.splitlines() if ln.strip()]
    assert result.exit_code == 1, result.output
    assert lines and lines[-1].startswith("Error: "), result.output
    assert "Traceback" not in result.output
    return lines[-1]


def test_export_tflm_writes_verified_model_and_report(keras_file, tmp_path):
    out = tmp_path / "ticket.tflite"
    r = _run("export", keras_file, "--format", "tflm", "--representative", "digits", "--samples", "32",
             "--out", out, "--no-arena")
    assert r.exit_code == 0, r.output
    assert "TOTAL" in r.output and "verified" in r.output
    report = json.loads((tmp_path / "ticket.tflite.report.json").read_text())
    assert report["pack"]["model_bytes_after"] == out.stat().st_size
    assert report["versions"]["tflite-micro"] != "absent"
    _, ds, _ = digits_ticket(False)
    packed = out.read_bytes()
    assert b"TFLM_DECODE" in packed
    # the written file runs on TFLite-Micro and agrees with the plain TFLite model
    plain = tmp_path / "plain.tflite"
    assert _run("export", keras_file, "--format", "tflite", "--representative", "digits", "--samples", "32",
                "--out", plain).exit_code == 0
    x = ds.x_test[:8]
    assert np.array_equal(arena.run(packed, x), arena.run(plain.read_bytes(), x))


def test_export_c_and_archive(keras_file, tmp_path):
    r = _run("export", keras_file, "--format", "c", "--representative", "digits", "--samples", "16",
             "--out", tmp_path / "model_data.cc")
    assert r.exit_code == 0, r.output
    header = (tmp_path / "model_data.h").read_text()
    assert "model_data_arena_size" in header and "model_data_len" in header
    r = _run("export", keras_file, "--format", "archive", "--representative", "digits", "--samples", "16",
             "--out", tmp_path / "m.arch", "--no-arena")
    assert r.exit_code == 0, r.output
    r16 = _run("export", keras_file, "--format", "archive", "--quantize", "float16", "--out", tmp_path / "f16.arch")
    assert r16.exit_code == 0 and "not runnable on TFLite-Micro" in r16.output, r16.output
    assert r.exit_code == 0, r.output
    report = json.loads((tmp_path / "m.arch.report.json").read_text())
    assert report["archive_bytes"] == (tmp_path / "m.arch").stat().st_size
    assert report["archive_bytes"] < report["tflite_bytes"]
    assert "TFLite-Micro packed" in r.output


def test_existing_output_needs_force(keras_file, tmp_path):
    out = tmp_path / "m.tflite"
    out.write_bytes(b"keep me")
    r = _run("export", keras_file, "--format", "tflite", "--quantize", "float32", "--out", out)
    assert "does not exist (or --force)" in _error_line(r)
    assert out.read_bytes() == b"keep me"
    r = _run("export", keras_file, "--format", "tflite", "--quantize", "float32", "--out", out, "--force")
    assert r.exit_code == 0 and out.read_bytes()[4:8] == b"TFL3"


@pytest.mark.parametrize("args,message", [
    (["--format", "tflm", "--sparse"], "--sparse"),
    (["--format", "tflm", "--quantize", "float32", "--pack", "huffman"], "HUFFMAN encoding of tensor float32"),
    (["--format", "tflite", "--quantize", "int8"], "--representative for --quantize int8"),
    (["--format", "tflite", "--representative", "imagenet"], "--representative: expected a dataset"),
    (["--level", "x"], "--level"),
    (["--format", "c", "--quantize", "float16"], "--quantize for --format c"),
])
def test_bad_options_are_one_line_and_write_nothing(keras_file, tmp_path, args, message):
    out = tmp_path / "never.tflite"
    line = _error_line(_run("export", keras_file, *args, "--out", out))
    assert message in line
    assert not out.exists() and not (tmp_path / "never.tflite.report.json").exists()
    assert not list(tmp_path.glob(".*.tmp"))


def test_representative_shape_mismatch(keras_file, tmp_path):
    npz = tmp_path / "rep.npz"
    np.savez(npz, x=np.zeros((10, 28, 28, 1), np.float32))
    line = _error_line(_run("export", keras_file, "--representative", npz, "--out", tmp_path / "o.tflite"))
    assert "representative data shape: expected [n, 8, 8, 1]" in line


def test_missing_source(tmp_path):
    assert "export source" in _error_line(_run("export", tmp_path / "nope.keras", "--out", tmp_path / "o"))


def test_inspect_cli_and_json(keras_file, tmp_path):
    out = tmp_path / "m.tflite"
    assert _run("export", keras_file, "--format", "tflite", "--quantize", "float32", "--out", out).exit_code == 0
    r = _run("inspect", out, "--json", tmp_path / "i.json")
    assert r.exit_code == 0 and "FULLY_CONNECTED" in r.output
    info = json.loads((tmp_path / "i.json").read_text())
    assert info["total_macs"] == 64 * 40 + 40 * 10
    junk = tmp_path / "junk.tflite"
    junk.write_bytes(out.read_bytes()[:64])
    assert "not a TFLite flatbuffer" in _error_line(_run("inspect", junk))


@pytest.mark.slow  # a real (tiny) search first: ~30 s on 2 shared cores
def test_export_from_search_work_dir(tmp_path):
    r = _run("search", "--model", "lenet_300_100", "--dataset", "digits", "--levels", "1", "--iterations", "10",
             "--no-jit", "--out", tmp_path / "wd")
    assert r.exit_code == 0, r.output
    out = tmp_path / "ticket.tflite"
    r = _run("export", tmp_path / "wd", "--format", "tflm", "--level", "1", "--out", out, "--no-arena")
    assert r.exit_code == 0, r.output
    report = json.loads((tmp_path / "ticket.tflite.report.json").read_text())
    assert report["source"]["kind"] == "search" and report["source"]["level"] == 1
    assert report["representative"].startswith("dataset digits")


def test_h5_with_pruning_wrappers_is_remasked_and_stripped(tmp_path):
    import tensorflow_model_optimization as tfmot
    import tf_keras as keras

    from converters.export import load_source

    keras.utils.set_random_seed(0)
    base = keras.Sequential([keras.layers.Input((8, 8, 1)), keras.layers.Flatten(), keras.layers.Dense(16),
                             keras.layers.Dense(10)])
    sched = tfmot.sparsity.keras.ConstantSparsity(0.75, 0, frequency=1)
    model = tfmot.sparsity.keras.prune_low_magnitude(base, pruning_schedule=sched)
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    x = np.random.default_rng(0).random((32, 8, 8, 1)).astype(np.float32)
    model.fit(x, np.arange(32) % 10, epochs=2, batch_size=8, verbose=0,
              callbacks=[tfmot.sparsity.keras.UpdatePruningStep()])
    wrapper = model.layers[1]
    weight, mask, _ = wrapper.pruning_vars[0]
    weight.assign(weight + 0.5)  # what a mid-epoch checkpoint can hold: pruned weights moved off zero
    path = tmp_path / "pruned.h5"
    model.save(path)
    loaded = load_source(path)
    kernel = loaded.model.layers[1].get_weights()[0]
    assert not any("prune" in type(layer).__name__.lower() for layer in loaded.model.layers)
    assert np.array_equal(kernel == 0, mask.numpy() == 0)
    assert abs(float(np.mean(kernel == 0)) - 0.75) < 0.01
