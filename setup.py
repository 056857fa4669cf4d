"""Build and install edge-lottery.

The native sparse delegate (converters/delegate/src/*.c) is compiled by gcc as part of a normal
``pip install``; see the DELEGATE BUILD section below.
"""

from __future__ import annotations

from setuptools import find_packages, setup

INSTALL_REQUIRES = [
    # TFMOT 0.8.1 works only with Keras 2, so TensorFlow is paired with tf-keras of the same minor.
    "tensorflow>=2.21,<2.22",
    "tf-keras>=2.21,<2.22",
    "tensorflow-model-optimization>=0.8.1,<0.9",
    "ai-edge-litert>=2.3,<2.4",
    "tflite-micro",
    "numpy>=1.26",
    "click>=8.1",
    "scikit-learn>=1.3",
    "rich>=13",
    "matplotlib>=3.8",
    # tf_keras' TensorBoard callback writes the per-level logs; TF 2.21 no longer pulls it in.
    "tensorboard>=2.21,<2.22",
]

EXTRAS_REQUIRE = {
    "test": ["pytest>=8", "hypothesis>=6.100", "ruff>=0.5", "pyserial>=3.5", "adbutils>=2.0", "pyjls>=0.17"],
    "serial": ["pyserial>=3.5"],
    "android": ["adbutils>=2.0"],
    # power instruments: PPK2 and LPM01A speak over pyserial; Joulescope needs its own library
    "instruments": ["pyserial>=3.5", "pyjls>=0.17"],
    "joulescope": ["joulescope>=1.5", "pyjls>=0.17"],
}

# ---- DELEGATE BUILD (owned by the sparse delegate; see converters/delegate) ----
# converters/delegate/_edge_sparse_delegate*.so is a plain C shared library (a TFLite external
# delegate plugin, not a Python module). Each kernel translation unit gets its own ISA flags and
# the library picks kernels at run time by cpuid, so one build runs on any x86-64 (no -march=native).
# Hidden visibility; links only libc/libm. Works for `pip install .` and `pip install -e .`.
import platform  # noqa: E402

from setuptools import Extension  # noqa: E402
from setuptools.command.build_ext import build_ext as _build_ext  # noqa: E402

_DELEGATE_NAME = "converters.delegate._edge_sparse_delegate"
_DELEGATE_DIR = "converters/delegate/src"
_DELEGATE_SOURCES = [
    f"{_DELEGATE_DIR}/{name}"
    for name in ("delegate.c", "pack.c", "pool.c", "kernels_scalar.c", "kernels_avx2.c", "kernels_avx512.c",
                 "kernels_neon.c")
]
_DELEGATE_HEADERS = [f"{_DELEGATE_DIR}/{name}" for name in ("tflite_abi.h", "edge_kernels.h", "pack.h", "pool.h",
                                                             "kernels_generic_impl.h")]
_DELEGATE_CFLAGS = ["-std=gnu11", "-O3", "-fPIC", "-fvisibility=hidden", "-fno-strict-aliasing", "-Wall"]
_DELEGATE_ISA_FLAGS = {
    "kernels_avx2.c": ["-mavx2", "-mfma"],
    "kernels_avx512.c": ["-mavx2", "-mfma", "-mavx512f", "-mavx512bw", "-mavx512vl", "-mavx512dq", "-mavx512vnni",
                         "-mprefer-vector-width=512"],
}


class BuildDelegate(_build_ext):
    """build_ext that compiles the delegate's per-ISA translation units with their own flags."""

    def finalize_options(self):
        super().finalize_options()
        # Always rebuild and re-copy: the library is small, and mtime checks skip real changes on
        # machines whose clock stalls (seen on the project's build VMs).
        self.force = True

    def build_extension(self, ext):
        if ext.name != _DELEGATE_NAME:
            return super().build_extension(ext)
        x86 = platform.machine().lower() in ("x86_64", "amd64")
        objects = []
        for src in ext.sources:
            flags = list(_DELEGATE_CFLAGS)
            if x86:
                flags += _DELEGATE_ISA_FLAGS.get(src.rsplit("/", 1)[-1], [])
            objects += self.compiler.compile([src], output_dir=self.build_temp, extra_postargs=flags,
                                             depends=ext.depends)
        self.compiler.link_shared_object(objects, self.get_ext_fullpath(ext.name), libraries=["m"],
                                         extra_postargs=["-Wl,--as-needed", "-Wl,-z,noexecstack"])


EXT_MODULES: list = [Extension(_DELEGATE_NAME, sources=_DELEGATE_SOURCES, depends=_DELEGATE_HEADERS)]
CMDCLASS: dict = {"build_ext": BuildDelegate}
# ---- END DELEGATE BUILD ----

setup(
    name="edge-lottery",
    version="0.1.0",
    description="Lottery ticket search, Deep Compression packing and on-device benchmarks for Keras models",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.11",
    packages=find_packages(include=["edge_lottery*", "converters*", "devices*"]),
    package_data={"devices": ["profiles/*.toml"], "converters": ["delegate/src/*.c", "delegate/src/*.h"]},
    include_package_data=True,
    install_requires=INSTALL_REQUIRES,
    extras_require=EXTRAS_REQUIRE,
    ext_modules=EXT_MODULES,
    cmdclass=CMDCLASS,
    entry_points={"console_scripts": ["edge-lottery=edge_lottery.cli:main"]},
)
