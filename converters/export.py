"""``edge-lottery export`` as a library function: source -> quantized, packed, verified file.

Sources: a search work directory (the best or a given level's ticket, via
:func:`edge_lottery.workdir.open_search`), a ``.keras`` / ``.h5`` file, or a SavedModel
directory. Formats:

* ``tflite``  - the TFLite flatbuffer (``--sparse``: FC weights in TFLite's sparse format, for
  LiteRT without default delegates);
* ``tflm``    - packed for TFLite-Micro with DECODE encodings (verified bit-exact);
* ``c``       - the packed model as ``<out>.cc`` + ``<out>.h`` with its measured arena size;
* ``archive`` - the Deep Compression archive of the TFLite model (verified by unpacking),
  reported next to the TFLite-Micro packed size.

Everything is checked before anything is written; outputs go through
:mod:`edge_lottery.atomic`, and ``<out>.report.json`` holds sizes, settings and versions.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from converters import ConverterError
from converters.quantize import QUANTIZE_MODES, PostTrainingQuantization
from converters.report import PackReport
from edge_lottery.atomic import atomic_write_bytes, atomic_write_json
from edge_lottery.errors import expected

EXPORT_FORMATS: tuple[str, ...] = ("tflite", "tflm", "c", "archive")
#: Quantize modes whose models TFLite-Micro cannot run (fp16 weights behind DEQUANTIZE; hybrid ops).
TFLM_UNRUNNABLE: tuple[str, ...] = ("float16", "dynamic")
#: Rows of representative data used to verify packed models on TFLite-Micro.
VERIFY_ROWS = 16


@dataclass(frozen=True)
class ExportOptions:
    format: str = "tflm"
    quantize: str = "int8"
    pack: str = "auto"
    representative: str | None = None
    level: int | str = "best"
    sparse: bool = False
    force: bool = False
    num_samples: int = 100
    seed: int = 0
    data_dir: str | None = None
    measure_arena: bool = True

    def __post_init__(self) -> None:
        from converters.tflm.pack import PACK_METHODS

        if self.format not in EXPORT_FORMATS:
            raise ConverterError(expected("--format", f"one of {', '.join(EXPORT_FORMATS)}", self.format))
        if self.quantize not in QUANTIZE_MODES:
            raise ConverterError(expected("--quantize", f"one of {', '.join(QUANTIZE_MODES)}", self.quantize))
        if self.pack not in PACK_METHODS:
            raise ConverterError(expected("--pack", f"one of {', '.join(PACK_METHODS)}", self.pack))
        if self.format in ("tflm", "c") and self.quantize in TFLM_UNRUNNABLE:
            raise ConverterError(expected(f"--quantize for --format {self.format} (TFLite-Micro has no "
                                          "float16 dequantize or hybrid kernels)", "float32, int8 or int16x8",
                                          self.quantize))
        if self.sparse and self.format != "tflite":
            raise ConverterError(expected("--sparse (TFLite sparse tensors; TFLite-Micro cannot run them)",
                                          "--format tflite", f"--format {self.format}"))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class ExportResult:
    out: Path
    files: tuple[Path, ...]
    report: dict[str, Any]
    pack_report: PackReport | None = None
    lines: tuple[str, ...] = field(default_factory=tuple)


@dataclass(frozen=True)
class LoadedSource:
    model: Any
    kind: str
    dataset_name: str | None
    info: dict[str, Any]


def report_path(out: str | os.PathLike[str]) -> Path:
    out = Path(out)
    return out.with_name(out.name + ".report.json")


def output_paths(out: str | os.PathLike[str], fmt: str) -> list[Path]:
    out = Path(out)
    paths = [out, report_path(out)]
    if fmt == "c":
        from converters.c_source import render

        paths.append(out.with_name(render(b"\0", out.name).header_name))
    return paths


def _load_keras_file(path: Path) -> Any:
    import tensorflow_model_optimization as tfmot
    import tf_keras

    try:
        with tfmot.sparsity.keras.prune_scope(), tfmot.quantization.keras.quantize_scope():
            model = tf_keras.models.load_model(str(path), compile=False)
    except Exception as exc:  # Keras raises many kinds; the first line names the problem
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise ConverterError(f"cannot load Keras model {path}: {first[:300]}") from exc
    wrappers = [layer for layer in getattr(model, "layers", []) if type(layer).__name__ == "PruneLowMagnitude"]
    if wrappers:
        # A checkpoint can hold weights the mask has not been re-applied to (the mask acts in the
        # forward pass); apply it before stripping so the exported zeros are the ticket's.
        for layer in wrappers:
            for weight, mask, _threshold in getattr(layer, "pruning_vars", []):
                weight.assign(weight * mask)
        model = tfmot.sparsity.keras.strip_pruning(model)
    if not isinstance(model, tf_keras.Model):
        raise ConverterError(expected(f"model in {path}", "a tf_keras Model", type(model).__name__))
    return model


def load_source(source: str | os.PathLike[str], level: int | str = "best") -> LoadedSource:
    """A tf_keras model from a search work directory, a .keras/.h5 file or a SavedModel directory."""
    path = Path(source)
    if not path.exists():
        raise ConverterError(expected("export source", "a search work directory, .keras/.h5 file or SavedModel",
                                      str(path)))
    if path.is_dir() and (path / "saved_model.pb").is_file():
        return LoadedSource(_load_keras_file(path), "savedmodel", None, {"path": str(path)})
    if path.is_dir():
        from edge_lottery.workdir import open_search

        record = open_search(path)
        model = record.load_model(level)
        lvl = record.best_level if level == "best" else level
        row = next((r for r in record.levels if r.get("level") == lvl), {})
        return LoadedSource(model, "search", record.dataset_name or None,
                            {"path": str(path), "level": lvl, "model": record.model_name,
                             "dataset": record.dataset_name, "level_row": row})
    if path.suffix in (".keras", ".h5", ".hdf5"):
        return LoadedSource(_load_keras_file(path), "keras", None, {"path": str(path)})
    raise ConverterError(expected("export source", "a search work directory, .keras/.h5 file or SavedModel",
                                  str(path)))


def representative_data(spec: str | None, dataset_name: str | None, *, n: int = 100, seed: int = 0,
                        data_dir: str | None = None) -> tuple[np.ndarray | None, str]:
    """Representative inputs from a dataset name or an .npz file (first array, or ``x``)."""
    from edge_lottery.data import DATASETS, load_dataset, representative_samples

    name = spec or dataset_name
    if name is None:
        return None, "none"
    if name in DATASETS:
        return representative_samples(load_dataset(name, data_dir), n, seed), f"dataset {name} ({n} train rows)"
    path = Path(name)
    if path.suffix == ".npz":
        if not path.is_file():
            raise ConverterError(expected("--representative file", "an existing .npz", str(path)))
        try:
            with np.load(path, allow_pickle=False) as npz:
                key = next((k for k in ("x", "x_train", "inputs") if k in npz.files), npz.files[0] if npz.files else None)
                if key is None:
                    raise ConverterError(expected(f"--representative {path}", "at least one array", "none"))
                arr = np.asarray(npz[key])
        except (OSError, ValueError) as exc:
            raise ConverterError(f"cannot read --representative {path}: {exc}") from exc
        return arr[:n], f"{path} [{key}] ({min(n, len(arr))} rows)"
    raise ConverterError(expected("--representative", f"a dataset ({', '.join(DATASETS)}) or an .npz file", name))


def export(source: str | os.PathLike[str], out: str | os.PathLike[str], options: ExportOptions) -> ExportResult:
    """Convert, pack, verify and write; returns the written paths and the report."""
    from converters import tflite
    from edge_lottery.workdir import versions

    out = Path(out)
    if options.format == "c" and out.suffix not in (".cc", ".cpp"):
        raise ConverterError(expected("--out for --format c", "a file ending in .cc or .cpp", out.name))
    existing = [p for p in output_paths(out, options.format) if p.exists()]
    if existing and not options.force:
        raise ConverterError(expected("output path", "a path that does not exist (or --force)", str(existing[0])))
    if out.exists() and out.is_dir():
        raise ConverterError(expected("--out", "a file path", f"{out} (a directory)"))

    src = load_source(source, options.level)
    rep, rep_source = representative_data(options.representative, src.dataset_name, n=options.num_samples,
                                          seed=options.seed, data_dir=options.data_dir)
    if rep is not None:
        rep = tflite.check_representative(src.model, rep)
    elif options.quantize in ("int8", "int16x8") and not tflite.is_quantization_aware(src.model):
        raise ConverterError(expected(f"--representative for --quantize {options.quantize} (the source names no "
                                      "dataset)", "a dataset name (digits, mnist, fashion_mnist) or an .npz file",
                                      None))
    # integer I/O: what microcontroller firmware feeds; LiteRT accepts it as well
    quant = PostTrainingQuantization(options.quantize, io="int8", num_samples=options.num_samples)
    flat = tflite.convert(src.model, quant, rep, sparse="project" if options.sparse else "none")
    verify_rows = rep[:VERIFY_ROWS] if rep is not None else None

    report: dict[str, Any] = {
        "source": {"kind": src.kind, **src.info},
        "options": options.to_dict(),
        "representative": rep_source,
        "versions": {**versions(), **_runtime_versions()},
        "tflite_bytes": len(flat),
        "keras_float32_weight_bytes": int(sum(np.asarray(w).size * 4 for w in src.model.get_weights())),
    }
    lines: list[str] = []
    pack_report: PackReport | None = None
    files: list[Path] = []
    if options.format == "tflite":
        probe = verify_rows[:4] if verify_rows is not None else np.zeros((1, *src.model.input_shape[1:]), np.float32)
        tflite.run_litert(flat, probe)  # it loads and runs on LiteRT, else ConverterError
        from converters.inspect import inspect_model

        info = inspect_model(flat)
        report["sparse_tensors"] = [t.name for t in info.tensors if t.sparsity]
        report["total_macs"] = info.total_macs
        payload = flat
        lines.append(f"TFLite ({options.quantize}{', sparse' if options.sparse else ''}): {len(flat)} B, "
                     f"{len(report['sparse_tensors'])} sparse tensors, {info.total_macs:,} MACs")
        if options.sparse and not report["sparse_tensors"]:
            lines.append("no FC weight had a smaller sparse encoding (int8 needs whole zero 1x16 blocks: "
                         "search with --pattern block1x16); the weights stay dense")
    elif options.format == "archive" and options.quantize in TFLM_UNRUNNABLE:
        payload = _archive(flat, None, report, lines)
    else:
        from converters.tflm.pack import pack

        result = pack(flat, options.pack, verify_rows,
                      measure_arena=options.measure_arena or options.format == "c")
        pack_report = result.report
        report["pack"] = pack_report.to_dict()
        payload = result.model_bytes
        if options.format == "archive":
            payload = _archive(flat, result.model_bytes, report, lines)
    report["output_bytes"] = len(payload)
    if options.format == "c":
        from converters.c_source import write_c_source

        arena = (pack_report.arena_after or {}).get("min_arena") if pack_report else None
        files.extend(write_c_source(payload, out, arena_size=arena,
                                    comment=f"edge-lottery export {options.quantize}, pack {options.pack}"))
    else:
        atomic_write_bytes(out, payload)
        files.append(out)
    report["output"] = str(out)
    atomic_write_json(report_path(out), report)
    files.append(report_path(out))
    return ExportResult(out, tuple(files), report, pack_report, tuple(lines))


def _archive(flat: bytes, tflm_packed: bytes | None, report: dict[str, Any], lines: list[str]) -> bytes:
    from converters.archive import pack_archive, unpack_archive

    blob = pack_archive(flat)
    if unpack_archive(blob) != flat:
        raise ConverterError("archive does not unpack to the TFLite model; refusing to write it")
    report["archive_bytes"] = len(blob)
    report["tflm_packed_bytes"] = len(tflm_packed) if tflm_packed is not None else None
    packed = (f", TFLite-Micro packed {len(tflm_packed)} B" if tflm_packed is not None
              else ", not runnable on TFLite-Micro")
    lines.append(f"archive: {len(blob)} B (TFLite {len(flat)} B{packed})")
    return blob


def _runtime_versions() -> dict[str, str]:
    from importlib import metadata

    out = {}
    for dist in ("ai-edge-litert", "tflite-micro"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[dist] = "absent"
    return out


__all__ = ["EXPORT_FORMATS", "ExportOptions", "ExportResult", "export", "load_source", "representative_data"]
