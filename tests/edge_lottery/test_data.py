"""Dataset registry: digits split, MNIST / Fashion-MNIST from npz and IDX, checksums, errors."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np
import pytest

from edge_lottery.data import (
    DATA_DIR_ENV,
    DATASETS,
    IDX_FILES,
    IDX_SHA256,
    as_tf_dataset,
    idx_bytes,
    load_dataset,
    parse_idx,
    representative_samples,
    resolve_data_dir,
)
from edge_lottery.errors import ConfigError, DataError, EdgeLotteryError

# Published class counts (lth-and-tfmot-notes §10).
MNIST_TRAIN_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
MNIST_TEST_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


def _one_line(exc: pytest.ExceptionInfo[BaseException]) -> str:
    msg = str(exc.value)
    assert "\n" not in msg, msg
    return msg


# ---------------------------------------------------------------------------------------------
# digits


def test_digits_shapes_ranges_and_stratified_split() -> None:
    ds = load_dataset("digits")
    assert ds.name == "digits" and ds.num_classes == 10
    assert ds.input_shape == (8, 8, 1)
    assert (len(ds.x_train), len(ds.x_val), len(ds.x_test)) == (1257, 180, 360)
    for x, y in ((ds.x_train, ds.y_train), (ds.x_val, ds.y_val), (ds.x_test, ds.y_test)):
        assert x.dtype == np.float32 and y.dtype == np.int64
        assert x.shape[1:] == (8, 8, 1) and len(x) == len(y)
        assert 0.0 <= x.min() and x.max() <= 1.0
    assert ds.x_train.max() == 1.0  # scaled by 16, not by 255
    # Stratified: every class has 18 validation examples and 35-37 test examples.
    assert np.bincount(ds.y_val, minlength=10).tolist() == [18] * 10
    assert set(np.bincount(ds.y_test, minlength=10).tolist()) <= {35, 36, 37}
    # The three splits partition the 1,797 images: together they are exactly load_digits().
    from sklearn.datasets import load_digits

    raw = load_digits()

    def rows(x: np.ndarray, y: np.ndarray) -> list[tuple[int, ...]]:
        return sorted(tuple(np.rint(r * 16).astype(int).tolist()) + (int(t),) for r, t in zip(x.reshape(len(x), -1), y, strict=True))

    allx = np.concatenate([ds.x_train, ds.x_val, ds.x_test])
    ally = np.concatenate([ds.y_train, ds.y_val, ds.y_test])
    assert rows(allx, ally) == rows(raw.images / 16.0, raw.target)


def test_digits_deterministic_per_seed() -> None:
    a, b, c = load_dataset("digits", seed=0), load_dataset("digits", seed=0), load_dataset("digits", seed=1)
    assert a.sha256 == b.sha256
    assert np.array_equal(a.x_train, b.x_train) and np.array_equal(a.y_test, b.y_test)
    assert c.sha256 != a.sha256
    assert not np.array_equal(a.y_val, c.y_val)


def test_digits_validation_size_override_and_bad_values() -> None:
    ds = load_dataset("digits", validation_size=100)
    assert (len(ds.x_train), len(ds.x_val), len(ds.x_test)) == (1337, 100, 360)
    assert len(load_dataset("digits", validation_size=0).x_val) == 0
    assert len(load_dataset("digits", validation_size=3).x_val) == 3  # too few to stratify: still works
    assert load_dataset("digits", seed=-5).sha256 != load_dataset("digits", seed=0).sha256  # any int seed
    with pytest.raises(ConfigError):
        load_dataset("digits", seed="0")  # type: ignore[arg-type]
    for bad in (-1, 1.5, "10", 5000):
        with pytest.raises(ConfigError) as exc:
            load_dataset("digits", validation_size=bad)
        assert "validation_size" in _one_line(exc)


def test_dataset_is_read_only_and_records_to_json() -> None:
    ds = load_dataset("digits")
    with pytest.raises(ValueError):
        ds.x_train[0, 0, 0, 0] = 1.0
    d = json.loads(json.dumps(ds.to_dict()))
    assert d["name"] == "digits" and d["sha256"] == ds.sha256 and len(d["sha256"]) == 64
    assert (d["train_size"], d["val_size"], d["test_size"]) == (1257, 180, 360)
    assert d["input_shape"] == [8, 8, 1]
    assert "x_train" not in d
    assert "digits" in repr(ds) and len(repr(ds)) < 300


def test_unknown_dataset_lists_choices() -> None:
    with pytest.raises(DataError) as exc:
        load_dataset("cifar10")
    msg = _one_line(exc)
    assert "cifar10" in msg and all(name in msg for name in DATASETS)
    with pytest.raises(DataError):
        load_dataset(None)  # type: ignore[arg-type]
    assert load_dataset("Digits").name == "digits"  # names are case- and dash-insensitive


def test_representative_samples_and_tf_dataset() -> None:
    ds = load_dataset("digits")
    rep = representative_samples(ds, n=50, seed=3)
    assert rep.shape == (50, 8, 8, 1) and rep.dtype == np.float32
    assert np.array_equal(rep, representative_samples(ds, n=50, seed=3))
    assert not np.array_equal(rep, representative_samples(ds, n=50, seed=4))
    # Every sample is a training input.
    train_rows = {r.tobytes() for r in ds.x_train}
    assert all(r.tobytes() in train_rows for r in rep)
    assert len(representative_samples(ds, n=10**6)) == len(ds.x_train)
    with pytest.raises(ConfigError):
        representative_samples(ds, n=0)

    tfds = as_tf_dataset(ds.x_val, ds.y_val, batch_size=64, shuffle=True, seed=1)
    batches = list(tfds.as_numpy_iterator())
    assert [len(b[0]) for b in batches] == [64, 64, 52]
    ys = np.concatenate([b[1] for b in batches])
    assert sorted(ys.tolist()) == sorted(ds.y_val.tolist())
    assert not np.array_equal(ys, ds.y_val)  # shuffled
    unshuffled = np.concatenate([b[1] for b in as_tf_dataset(ds.x_val, ds.y_val, 64, False).as_numpy_iterator()])
    assert np.array_equal(unshuffled, ds.y_val)


# ---------------------------------------------------------------------------------------------
# MNIST / Fashion-MNIST from the shared npz


def test_mnist_npz_class_counts(shared_data_dir: Path) -> None:
    ds = load_dataset("mnist", shared_data_dir)
    assert ds.input_shape == (28, 28, 1) and ds.num_classes == 10
    assert (len(ds.x_train), len(ds.x_val), len(ds.x_test)) == (55000, 5000, 10000)
    counts = np.bincount(np.concatenate([ds.y_train, ds.y_val]), minlength=10)
    assert counts.tolist() == MNIST_TRAIN_COUNTS
    assert np.bincount(ds.y_test, minlength=10).tolist() == MNIST_TEST_COUNTS
    assert ds.x_train.dtype == np.float32 and 0.0 <= ds.x_train.min() and ds.x_train.max() == 1.0
    mean = float(np.concatenate([ds.x_train, ds.x_val]).mean())
    assert abs(mean - 0.1307) < 5e-4
    # The validation set is the LAST 5,000 training images, so it does not depend on the seed.
    assert load_dataset("mnist", shared_data_dir, seed=7).sha256 == ds.sha256


def test_fashion_mnist_npz_class_counts(shared_data_dir: Path) -> None:
    ds = load_dataset("fashion_mnist", shared_data_dir, validation_size=10000)
    assert (len(ds.x_train), len(ds.x_val), len(ds.x_test)) == (50000, 10000, 10000)
    counts = np.bincount(np.concatenate([ds.y_train, ds.y_val]), minlength=10)
    assert counts.tolist() == [6000] * 10
    assert np.bincount(ds.y_test, minlength=10).tolist() == [1000] * 10
    assert abs(float(ds.x_test.mean()) - 0.2868) < 5e-4


def test_env_var_data_dir(shared_data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(DATA_DIR_ENV, str(shared_data_dir))
    assert resolve_data_dir(None) == shared_data_dir
    assert resolve_data_dir("/elsewhere") == Path("/elsewhere")  # the argument wins
    assert load_dataset("mnist").source.endswith("mnist.npz")
    monkeypatch.delenv(DATA_DIR_ENV)
    assert resolve_data_dir(None) is None


# ---------------------------------------------------------------------------------------------
# IDX files written by the test from the npz


@pytest.fixture(scope="module")
def mnist_arrays(shared_data_dir: Path) -> dict[str, np.ndarray]:
    with np.load(shared_data_dir / "mnist.npz") as npz:
        return {k: npz[k] for k in npz.files}


def _write_idx_set(directory: Path, arrays: dict[str, np.ndarray], *, gz: bool) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    content = {
        "train-images-idx3-ubyte": arrays["x_train"], "train-labels-idx1-ubyte": arrays["y_train"],
        "t10k-images-idx3-ubyte": arrays["x_test"], "t10k-labels-idx1-ubyte": arrays["y_test"],
    }
    for fname, array in content.items():
        data = idx_bytes(array)
        if gz:
            with gzip.open(directory / f"{fname}.gz", "wb", compresslevel=1) as fh:
                fh.write(data)
        else:
            (directory / fname).write_bytes(data)


def test_idx_roundtrip() -> None:
    a = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    assert np.array_equal(parse_idx(idx_bytes(a)), a)
    with pytest.raises(DataError):
        parse_idx(idx_bytes(a)[:-1])  # truncated
    with pytest.raises(DataError):
        parse_idx(b"\x00\x00\x0d\x01" + b"\x00" * 8)  # float dtype code


@pytest.mark.parametrize("gz", [False, True], ids=["plain", "gzip"])
def test_idx_files_load_like_npz(tmp_path: Path, mnist_arrays: dict[str, np.ndarray], shared_data_dir: Path,
                                 gz: bool) -> None:
    _write_idx_set(tmp_path, mnist_arrays, gz=gz)
    from_idx = load_dataset("mnist", tmp_path)
    from_npz = load_dataset("mnist", shared_data_dir)
    # Same content, whichever layout it came from: the identity hash must agree.
    assert from_idx.sha256 == from_npz.sha256
    assert np.array_equal(from_idx.x_test, from_npz.x_test)
    assert from_idx.source == str(tmp_path.resolve())


def test_idx_in_subfolder(tmp_path: Path, mnist_arrays: dict[str, np.ndarray]) -> None:
    _write_idx_set(tmp_path / "mnist", mnist_arrays, gz=True)
    ds = load_dataset("mnist", tmp_path, validation_size=0)
    assert len(ds.x_train) == 60000 and len(ds.x_val) == 0


def test_corrupted_idx_refused_with_checksum_message(tmp_path: Path, mnist_arrays: dict[str, np.ndarray]) -> None:
    arrays = dict(mnist_arrays)
    x = arrays["x_test"].copy()
    x[123, 14, 14] ^= 0xFF  # one flipped pixel
    arrays["x_test"] = x
    _write_idx_set(tmp_path, arrays, gz=True)
    with pytest.raises(DataError) as exc:
        load_dataset("mnist", tmp_path)
    msg = _one_line(exc)
    assert "checksum mismatch" in msg and "t10k-images-idx3-ubyte.gz" in msg
    assert IDX_SHA256["mnist"]["t10k-images-idx3-ubyte"] in msg  # expected
    import hashlib

    assert hashlib.sha256(idx_bytes(x)).hexdigest() in msg  # received


def test_idx_of_the_wrong_dataset_refused(tmp_path: Path, mnist_arrays: dict[str, np.ndarray]) -> None:
    # MNIST files placed where Fashion-MNIST is expected must not load as Fashion-MNIST.
    _write_idx_set(tmp_path / "fashion-mnist", mnist_arrays, gz=False)
    with pytest.raises(DataError) as exc:
        load_dataset("fashion_mnist", tmp_path)
    assert "checksum mismatch" in _one_line(exc)


def test_truncated_gzip_refused(tmp_path: Path, mnist_arrays: dict[str, np.ndarray]) -> None:
    _write_idx_set(tmp_path, mnist_arrays, gz=True)
    f = tmp_path / "train-labels-idx1-ubyte.gz"
    f.write_bytes(f.read_bytes()[:100])
    with pytest.raises(DataError) as exc:
        load_dataset("mnist", tmp_path)
    assert "train-labels-idx1-ubyte.gz" in _one_line(exc)


def test_corrupted_npz_refused(tmp_path: Path, mnist_arrays: dict[str, np.ndarray]) -> None:
    arrays = dict(mnist_arrays)
    x = arrays["x_train"].copy()
    x[0, 0, 0] = 7
    arrays["x_train"] = x
    np.savez(tmp_path / "mnist.npz", **arrays)
    with pytest.raises(DataError) as exc:
        load_dataset("mnist", tmp_path)
    msg = _one_line(exc)
    assert "checksum mismatch" in msg and "x_train" in msg
    assert IDX_SHA256["mnist"]["train-images-idx3-ubyte"] in msg

    arrays["x_train"] = mnist_arrays["x_train"].astype(np.float32)
    np.savez(tmp_path / "mnist.npz", **arrays)
    with pytest.raises(DataError) as exc:
        load_dataset("mnist", tmp_path)
    assert "uint8" in _one_line(exc) and "float32" in str(exc.value)

    (tmp_path / "mnist.npz").write_bytes(b"not a zip file")
    with pytest.raises(DataError) as exc:
        load_dataset("mnist", tmp_path)
    assert "mnist.npz" in _one_line(exc)


# ---------------------------------------------------------------------------------------------
# Missing data


def test_missing_dir_one_line_error(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere"
    with pytest.raises(DataError) as exc:
        load_dataset("fashion_mnist", missing)
    msg = _one_line(exc)
    assert "fashion_mnist" in msg and str(missing) in msg and DATA_DIR_ENV in msg
    assert isinstance(exc.value, EdgeLotteryError)


def test_empty_dir_names_the_files_looked_for(tmp_path: Path) -> None:
    with pytest.raises(DataError) as exc:
        load_dataset("mnist", tmp_path)
    msg = _one_line(exc)
    assert str(tmp_path) in msg and "mnist.npz" in msg and DATA_DIR_ENV in msg
    assert all(f in msg for f in IDX_FILES)


def test_no_data_dir_at_all(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(DATA_DIR_ENV, raising=False)
    with pytest.raises(DataError) as exc:
        load_dataset("mnist")
    msg = _one_line(exc)
    assert DATA_DIR_ENV in msg and "mnist" in msg


def test_incomplete_idx_set_names_missing_file(tmp_path: Path, mnist_arrays: dict[str, np.ndarray]) -> None:
    _write_idx_set(tmp_path, mnist_arrays, gz=False)
    (tmp_path / "t10k-labels-idx1-ubyte").unlink()
    with pytest.raises(DataError) as exc:
        load_dataset("mnist", tmp_path)
    msg = _one_line(exc)
    assert "missing t10k-labels-idx1-ubyte" in msg and str(tmp_path) in msg


def test_debian_fashion_mnist_package() -> None:
    """The real re-gzipped IDX files of Debian's dataset-fashion-mnist verify against the pins."""
    root = Path("/usr/share/datasets")
    if not (root / "fashion-mnist" / "train-images-idx3-ubyte.gz").is_file():
        pytest.skip("Debian package dataset-fashion-mnist not installed (/usr/share/datasets/fashion-mnist)")
    ds = load_dataset("fashion_mnist", root)
    assert ds.source == str((root / "fashion-mnist").resolve())
    assert np.bincount(ds.y_test, minlength=10).tolist() == [1000] * 10
    assert (len(ds.x_train), len(ds.x_val), len(ds.x_test)) == (55000, 5000, 10000)
