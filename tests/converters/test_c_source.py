"""model_data.cc / .h: compiled with the host g++ (and arm-none-eabi-g++ when present), linked into
a program that checks the bytes, the length constant and the 16-byte alignment."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from converters import ConverterError
from converters.c_source import render, symbol_for, write_c_source

MODEL = bytes(np.random.default_rng(0).integers(0, 256, size=1000, dtype=np.uint8))

CHECK_MAIN = r"""
#include <cstdint>
#include <cstdio>
#include "model_data.h"
int main() {
  unsigned long sum = 0;
  for (std::size_t i = 0; i < model_data_len; ++i) sum = (sum * 31u + model_data[i]) % 1000000007u;
  std::printf("%zu %lu %d %zu\n", model_data_len, sum,
              static_cast<int>(reinterpret_cast<std::uintptr_t>(model_data) % 16), model_data_arena_size);
  return 0;
}
"""


def _checksum(data: bytes) -> int:
    s = 0
    for b in data:
        s = (s * 31 + b) % 1000000007
    return s


def test_symbols_from_file_names():
    assert symbol_for("out/model_data.cc") == "model_data"
    assert symbol_for("My-Model.v2.cc") == "My_Model_v2"
    assert symbol_for("3net.cc") == "model_3net"
    assert symbol_for("int.cc") == "model_int"


def test_render_contents():
    c = render(MODEL, "model_data.cc", arena_size=1801)
    assert "alignas(16) const uint8_t model_data[model_data_len]" in c.source
    assert "constexpr size_t model_data_len = 1000;" in c.header
    assert "constexpr size_t model_data_arena_size = 1808;" in c.header  # rounded up to 16
    with pytest.raises(ConverterError, match="arena size"):
        render(MODEL, "m.cc", arena_size=0)
    with pytest.raises(ConverterError, match=r"\.cc or \.cpp"):
        write_c_source(MODEL, "/tmp/m.c")


@pytest.mark.skipif(shutil.which("g++") is None, reason="host g++ not installed")
def test_compiles_links_and_holds_the_bytes(tmp_path: Path):
    src, hdr = write_c_source(MODEL, tmp_path / "model_data.cc", arena_size=4000)
    assert hdr.name == "model_data.h"
    (tmp_path / "main.cc").write_text(CHECK_MAIN)
    subprocess.run(["g++", "-std=c++17", "-Wall", "-Werror", "-c", str(src), "-o", str(tmp_path / "m.o")],
                   check=True, cwd=tmp_path)
    subprocess.run(["g++", "-std=c++17", "-Wall", "-Werror", "main.cc", "m.o", "-o", "check"], check=True, cwd=tmp_path)
    out = subprocess.run([str(tmp_path / "check")], check=True, capture_output=True, text=True).stdout.split()
    assert out == [str(len(MODEL)), str(_checksum(MODEL)), "0", "4000"]


@pytest.mark.skipif(shutil.which("arm-none-eabi-g++") is None, reason="arm-none-eabi-g++ not installed")
def test_compiles_for_cortex_m(tmp_path: Path):
    src, _ = write_c_source(MODEL, tmp_path / "model_data.cc", arena_size=4000)
    subprocess.run(["arm-none-eabi-g++", "-mcpu=cortex-m4", "-mthumb", "-std=c++17", "-Wall", "-Werror", "-c",
                    str(src), "-o", str(tmp_path / "m.o")], check=True, cwd=tmp_path)
    assert (tmp_path / "m.o").stat().st_size > len(MODEL)
