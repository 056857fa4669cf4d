"""Load edge-lottery's native sparse delegate into a LiteRT / TFLite interpreter.

Why the project has its own delegate: on x86 nothing runs pruned weights faster than dense —
XNNPACK refuses sparse FULLY_CONNECTED and int8 DENSIFY graphs, and TFLite's builtin sparse kernels
are scalar there. The C library under ``src/`` (built by ``setup.py`` during ``pip install``)
claims sparse-enough FULLY_CONNECTED / CONV_2D nodes, re-encodes their weights into block layouts
and runs them with kernels picked for the CPU at run time; everything else stays with XNNPACK.
See docs/sparse-delegate.md.
"""

from __future__ import annotations

import ctypes
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from converters import ConverterError
from edge_lottery.errors import expected

__all__ = ["ABI_VERSION", "LAYOUTS", "OPTIONS", "abi_tag", "interpreter", "library_path", "load"]

#: ABI tag this Python helper expects from the library (pinned to ai-edge-litert 2.3.0).
ABI_VERSION = "litert-2.3.0/1"
#: Weight layouts the kernels run (option ``layouts``).
LAYOUTS = ("dense", "csr", "1x16", "16x1", "16x4")
#: Accepted option keys (values are passed to the library as strings).
OPTIONS = ("min_sparsity", "dense_neighbour_max_macs", "layouts", "num_threads", "dense_threads", "verbose", "isa",
           "rounding")
_BACKENDS = ("litert", "tf")
_REBUILD = "pip install -e . (in the edge-lottery checkout) or pip install --force-reinstall edge-lottery"


def library_path() -> Path:
    """Path of the built delegate library inside the installed package."""
    here = Path(__file__).resolve().parent
    found = sorted(here.glob("_edge_sparse_delegate*.so")) + sorted(here.glob("_edge_sparse_delegate*.dylib"))
    if not found:
        raise ConverterError(
            f"sparse delegate library not built: no _edge_sparse_delegate*.so in {here}; rebuild with {_REBUILD}"
        )
    return found[0]


def abi_tag(path: str | Path | None = None) -> str:
    """The ABI tag compiled into a delegate library (reads its exported ``edge_sparse_delegate_abi``)."""
    lib_path = Path(path) if path is not None else library_path()
    try:
        lib = ctypes.CDLL(str(lib_path))
        fn = lib.edge_sparse_delegate_abi
    except (OSError, AttributeError) as exc:
        raise ConverterError(f"{lib_path} is not an edge-lottery sparse delegate library ({exc})") from None
    fn.restype = ctypes.c_char_p
    return fn().decode("utf-8")


def _option_text(key: str, value: Any) -> str:
    if isinstance(value, bool):
        return "1" if value else "0"
    if key == "layouts" and isinstance(value, list | tuple):
        value = ",".join(str(v) for v in value)
    return str(value)


def _normalise(options: Mapping[str, Any] | None) -> dict[str, str]:
    opts = dict(options or {})
    unknown = sorted(set(opts) - set(OPTIONS))
    if unknown:
        raise ConverterError(expected("sparse delegate option", ", ".join(OPTIONS), ", ".join(unknown)))
    out = {k: _option_text(k, v) for k, v in opts.items()}
    if "layouts" in out:
        bad = [v for v in out["layouts"].split(",") if v.strip() not in (*LAYOUTS, "auto", "all")]
        if bad:
            raise ConverterError(expected("sparse delegate layout", ", ".join(LAYOUTS), ", ".join(bad)))
    out["abi_version"] = ABI_VERSION
    return out


def load(options: Mapping[str, Any] | None = None, *, backend: str = "litert", path: str | Path | None = None):
    """Create the delegate for ``backend`` ("litert": ai_edge_litert, "tf": tf.lite).

    Keep the returned object alive as long as an interpreter uses it (interpreters created with
    ``experimental_delegates=[d]`` hold a reference themselves).
    """
    if backend not in _BACKENDS:
        raise ConverterError(expected("delegate backend", " or ".join(_BACKENDS), backend))
    lib_path = Path(path) if path is not None else library_path()
    opts = _normalise(options)
    tag = abi_tag(lib_path)
    if tag != ABI_VERSION:
        raise ConverterError(
            f"sparse delegate library {lib_path.name} was built for ABI {tag!r}, this edge-lottery expects "
            f"{ABI_VERSION!r}; rebuild with {_REBUILD}"
        )
    if backend == "litert":
        from ai_edge_litert.interpreter import load_delegate
    else:
        import tensorflow as tf

        load_delegate = tf.lite.experimental.load_delegate
    try:
        return load_delegate(str(lib_path), opts)
    except ValueError as exc:
        text = " ".join(str(exc).split())
        raise ConverterError(f"sparse delegate refused to load: {text}") from None


def interpreter(
    model_path_or_bytes: str | Path | bytes,
    *,
    options: Mapping[str, Any] | None = None,
    num_threads: int = 1,
    backend: str = "litert",
):
    """An Interpreter with the sparse delegate applied first (XNNPACK then takes the rest)."""
    delegate = load(options, backend=backend)
    if backend == "litert":
        from ai_edge_litert.interpreter import Interpreter
    else:
        import tensorflow as tf

        Interpreter = tf.lite.Interpreter  # noqa: N806
    kwargs: dict[str, Any] = {"experimental_delegates": [delegate], "num_threads": num_threads}
    if isinstance(model_path_or_bytes, bytes | bytearray):
        kwargs["model_content"] = bytes(model_path_or_bytes)
    else:
        path = Path(model_path_or_bytes)
        if not path.is_file():
            raise ConverterError(expected("TFLite model file", "an existing .tflite path", str(path)))
        kwargs["model_path"] = str(path)
    try:
        return Interpreter(**kwargs)
    except (ValueError, RuntimeError) as exc:
        text = " ".join(str(exc).split())
        raise ConverterError(f"interpreter with sparse delegate failed: {text}") from None
