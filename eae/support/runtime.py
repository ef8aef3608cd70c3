"""TensorFlow, imported once and quietly, and the one line that names the device.

TensorFlow's C++ start-up (absl, oneDNN, the CUDA stubs, the CPU-feature guard) writes
straight to file descriptor 2 while it is imported and while it first looks for devices.
On a CPU-only machine that includes ``E0000 ... failed call to cuInit: ... CUDA error``,
which reads as a failure in every job log although nothing failed. ``TF_CPP_MIN_LOG_LEVEL``
does not remove all of it (the absl lines come before the level is read), so the import
and the first device query run with descriptor 2 pointed at a temporary file, and only
the lines that are known start-up notices are dropped: anything else (a real error, a
Python warning) is written back to stderr. ``TF_ENABLE_ONEDNN_OPTS`` is left alone on
purpose: it changes the numerics.

Modules of this package import TensorFlow and Keras from here::

    from eae.support.runtime import keras, tf
"""

from __future__ import annotations

import os
import re
import sys
import tempfile
from contextlib import contextmanager
from typing import Iterator

# Glog-style lines ("I0000 00:00:1796... 4184 port.cc:153] ...") from these sources are
# start-up notices: the oneDNN and CPU-instruction banners, the CUDA driver probe,
# factory registrations and the GPU device creation. Errors from any other source
# are kept.
_NOTICE_SOURCES = (
    "port.cc", "cudart_stub.cc", "cpu_feature_guard.cc", "cuda_platform.cc",
    "cuda_diagnostics.cc", "cuda_executor.cc", "cuda_dnn.cc", "cuda_fft.cc", "cuda_blas.cc",
    "computation_placer.cc", "gpu_device.cc", "gpu_timer.cc", "service.cc", "device_compiler.h",
    "dso_loader.cc", "stream_executor", "plugin_registry", "tf_trt", "py_utils.cc",
)
_GLOG = re.compile(r"^[IWEF]\d{4} [\d:.]+\s+\d+ ([\w./-]+):\d+\] ")
_NOTICE_LINES = (
    "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR",
    "To enable the following instructions:",
    "rebuild TensorFlow with the appropriate compiler flags",
    "TF-TRT Warning",
)


def is_startup_notice(line: str) -> bool:
    """True for a line TensorFlow's C++ start-up prints that reports no problem of ours."""
    stripped = line.strip()
    if not stripped:
        return True
    if any(stripped.startswith(text) or text in stripped for text in _NOTICE_LINES):
        return True
    match = _GLOG.match(stripped)
    return bool(match) and any(src in match.group(1) for src in _NOTICE_SOURCES)


@contextmanager
def quiet_stderr() -> Iterator[None]:
    """Point descriptor 2 at a temporary file; afterwards write back what was not a
    start-up notice. Python's ``sys.stderr`` writes go through descriptor 2 as well."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile(mode="w+b") as capture:
        os.dup2(capture.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            capture.seek(0)
            text = capture.read().decode("utf-8", errors="replace")
            kept = [line for line in text.splitlines() if not is_startup_notice(line)]
            if kept:
                sys.stderr.write("\n".join(kept) + "\n")
                sys.stderr.flush()


def _import_quietly():
    # Later, lazily printed INFO/WARNING lines (device creation, XLA) stay hidden too,
    # unless the user asked for them; errors still reach the log.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if "tensorflow" in sys.modules:  # imported loudly before us: nothing left to hide
        import tensorflow
        import keras
        return tensorflow, keras
    with quiet_stderr():
        import tensorflow
        import keras

        # the first device query loads the CUDA driver (the cuInit line on a CPU machine)
        tensorflow.config.list_physical_devices()
    return tensorflow, keras


tf, keras = _import_quietly()


def device_description() -> str:
    """``GPU: <name> (xN)`` when TensorFlow sees a GPU, else ``CPU: <model> (N cores)``."""
    from eae.support.provenance import cpu_description

    gpus = tf.config.list_physical_devices("GPU")
    if not gpus:
        return cpu_description()
    try:
        name = tf.config.experimental.get_device_details(gpus[0]).get("device_name")
    except (RuntimeError, ValueError):
        name = None
    return f"GPU: {name or gpus[0].name} (x{len(gpus)})"
