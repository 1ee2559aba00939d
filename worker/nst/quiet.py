"""Importing TensorFlow without its start-up noise on the terminal.

TensorFlow's C++ runtime writes lines to the process's stderr while it loads and looks for GPUs
("Could not find cuda drivers", "cpu_feature_guard", "failed call to cuInit", ...), some before its
own log level applies, so ``TF_CPP_MIN_LOG_LEVEL`` cannot silence them. :func:`tensorflow` loads it
with file descriptor 2 pointed at a temporary file and hands those lines to the ``tensorflow``
logger at DEBUG instead (``-vv`` shows them; a worker's JSON log stays JSON). Errors are not
hidden: if the import fails, the captured lines are written to stderr before the error propagates.
"""

from __future__ import annotations

import logging
import os
import sys
import tempfile
from types import ModuleType

log = logging.getLogger("tensorflow.startup")

_loaded: ModuleType | None = None


def tensorflow() -> ModuleType:
    """Import TensorFlow (once) and enumerate its devices, keeping their noise off the terminal."""
    global _loaded
    if _loaded is not None:
        return _loaded
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        failed = True
        try:
            import tensorflow as tf

            tf.config.list_physical_devices("GPU")  # the CUDA probe prints when it first runs
            failed = False
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            text = captured.read().decode(errors="replace")
            if failed:
                sys.stderr.write(text)
            for line in text.splitlines():
                if line.strip():
                    log.debug("%s", line)
    _loaded = tf
    return tf
