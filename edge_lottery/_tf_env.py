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
