"""The delegate's C sources build portably: strict host compile, aarch64 cross-compile, clean linkage."""

from __future__ import annotations

import platform
import shutil
import subprocess
from pathlib import Path

import pytest

import converters.delegate as cd

SRC = Path(cd.__file__).resolve().parent / "src"
SOURCES = sorted(SRC.glob("*.c"))
# per-translation-unit ISA flags, as setup.py's BuildDelegate passes them on x86-64
X86_FLAGS = {
    "kernels_avx2.c": ["-mavx2", "-mfma"],
    "kernels_avx512.c": ["-mavx2", "-mfma", "-mavx512f", "-mavx512bw", "-mavx512vl", "-mavx512dq", "-mavx512vnni"],
}


def test_sources_compile_cleanly_as_c11_with_warnings_as_errors():
    gcc = shutil.which("gcc")
    if gcc is None:
        pytest.skip("gcc not installed")
    for src in SOURCES:
        flags = X86_FLAGS.get(src.name, []) if platform.machine() in ("x86_64", "AMD64") else []
        proc = subprocess.run([gcc, "-std=c11", "-O2", "-Wall", "-Wextra", "-Werror", "-Wno-unused-parameter",
                               "-fsyntax-only", *flags, str(src)], capture_output=True, text=True)
        assert proc.returncode == 0, proc.stderr


def test_sources_cross_compile_for_aarch64_with_neon():
    """Needs the Debian packages gcc-aarch64-linux-gnu and libc6-dev-arm64-cross (skipped without)."""
    cc = shutil.which("aarch64-linux-gnu-gcc")
    if cc is None:
        pytest.skip("aarch64-linux-gnu-gcc not installed (apt-get install gcc-aarch64-linux-gnu)")
    probe = subprocess.run([cc, "-fsyntax-only", "-x", "c", "-"], input="#include <math.h>\n", capture_output=True,
                           text=True)
    if probe.returncode != 0:  # the compiler without its libc headers (installed without Recommends)
        pytest.skip("aarch64 libc headers missing (apt-get install libc6-dev-arm64-cross)")
    for src in SOURCES:
        proc = subprocess.run([cc, "-std=gnu11", "-O2", "-Wall", "-Werror", "-fsyntax-only", str(src)],
                              capture_output=True, text=True)
        assert proc.returncode == 0, proc.stderr
    # the NEON translation unit really has code on aarch64 (and the x86 ones compile to nothing)
    proc = subprocess.run([cc, "-std=gnu11", "-O2", "-E", "-dM", str(SRC / "kernels_neon.c")],
                          capture_output=True, text=True)
    assert "__ARM_NEON" in proc.stdout


def test_library_links_only_libc_libm_and_exports_four_symbols():
    lib = cd.library_path()
    nm = shutil.which("nm")
    if nm is None:
        pytest.skip("binutils nm not installed")
    syms = subprocess.run([nm, "-D", "--defined-only", str(lib)], capture_output=True, text=True).stdout
    exported = sorted(line.split()[-1] for line in syms.splitlines() if " T " in line)
    assert exported == ["edge_sparse_delegate_abi", "edge_sparse_delegate_requant_check",
                        "tflite_plugin_create_delegate", "tflite_plugin_destroy_delegate"]
    needed = subprocess.run(["readelf", "-d", str(lib)], capture_output=True, text=True).stdout
    libs = sorted(line.split("[")[1].rstrip("]") for line in needed.splitlines() if "(NEEDED)" in line)
    assert set(libs) <= {"libc.so.6", "libm.so.6"}, libs
    # no -march=native: the x86 baseline translation units contain no AVX instructions at all
    objdump = shutil.which("objdump")
    if objdump:
        text = subprocess.run([objdump, "-d", "--no-show-raw-insn", str(lib)], capture_output=True,
                              text=True).stdout
        scalar = text.split("<edge_kernels_scalar>:")[1].split("\n\n")[0]
        assert "ymm" not in scalar and "zmm" not in scalar
        assert "zmm" in text  # the AVX-512 unit is there, behind cpuid dispatch
