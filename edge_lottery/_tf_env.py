"""Select Keras 2 (tf-keras) before TensorFlow is first imported.

TFMOT 0.8.1 only accepts tf_keras objects (see docs/architecture.md). Every package of the
project imports this module first, so that whichever entry point a user takes, TensorFlow
sees ``TF_USE_LEGACY_KERAS=1`` before its first import.
"""

from __future__ import annotations

import os
import sys
import warnings

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
# TensorFlow's C++ start-up chatter drowns the CLI output; users can lower this themselves.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

if "tensorflow" in sys.modules and os.environ.get("TF_USE_LEGACY_KERAS") != "1":
    warnings.warn(
        "TensorFlow was imported before edge_lottery with TF_USE_LEGACY_KERAS unset; "
        "tf.keras may be Keras 3, which TFMOT rejects. Import edge_lottery first or "
        "set TF_USE_LEGACY_KERAS=1.",
        stacklevel=2,
    )


# Lines TensorFlow prints to fd 2 while it loads, before its log level applies (absl logs
# "before InitializeLog" unconditionally): CPU/GPU probing chatter that says nothing to a user.
_STARTUP_NOISE = (
    "WARNING: All log messages before absl::InitializeLog()",
    "port.cc:", "cudart_stub.cc:", "cuda_platform.cc:", "cuda_executor.cc:", "cpu_feature_guard.cc:",
    "To enable the following instructions", "rebuild TensorFlow with the appropriate compiler flags",
)


def import_tensorflow_quietly() -> None:
    """Import TensorFlow and probe its devices with its start-up chatter filtered out.

    The CLI calls this before a command runs. Anything else TensorFlow prints while loading
    (a real warning or an import error) is passed through to stderr unchanged.
    """
    if "tensorflow" in sys.modules:
        return
    import tempfile

    saved = os.dup(2)
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            import tensorflow as tf

            tf.config.list_physical_devices()
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            for line in captured.read().decode("utf-8", "replace").splitlines():
                if line.strip() and not any(noise in line for noise in _STARTUP_NOISE):
                    print(line, file=sys.stderr)
