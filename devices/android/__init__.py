"""Android helpers: adb access (adbutils), ``benchmark_model`` output parsing, Perfetto power rails."""
