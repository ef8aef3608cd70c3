"""Quiet TensorFlow start-up and the device line that opens every job log."""

import os
import subprocess
import sys

from eae.runtime import is_startup_notice, quiet_stderr

# Lines TensorFlow 2.21 prints on a CPU-only machine while it is imported and first
# looks for devices (copied from a job log).
STARTUP = """\
WARNING: All log messages before absl::InitializeLog() is called are written to STDERR
I0000 00:00:1796196838.879113    4184 port.cc:153] oneDNN custom operations are on. You may see slightly different numerical results due to floating-point round-off errors from different computation orders. To turn them off, set the environment variable `TF_ENABLE_ONEDNN_OPTS=0`.
I0000 00:00:1796196838.879504    4184 cudart_stub.cc:31] Could not find cuda drivers on your machine, GPU will not be used.
I0000 00:00:1796196838.951467    4184 cpu_feature_guard.cc:227] This TensorFlow binary is optimized to use available CPU instructions in performance-critical operations.
To enable the following instructions: AVX2 AVX512F AVX512_VNNI AVX512_BF16 FMA, in other operations, rebuild TensorFlow with the appropriate compiler flags.
E0000 00:00:1796196844.714723    4184 cuda_platform.cc:52] failed call to cuInit: INTERNAL: CUDA error: Failed call to cuInit: UNKNOWN ERROR (303)
"""
NOISE_WORDS = ("absl", "oneDNN", "cuInit", "cuda", "cpu_feature_guard", "rebuild TensorFlow")


def test_startup_notices_are_recognised_and_real_errors_are_not():
    assert all(is_startup_notice(line) for line in STARTUP.splitlines())
    for kept in (
        "E0000 00:00:1796196844.714723    4184 op_kernel.cc:1818] OP_REQUIRES failed: OOM",
        "UserWarning: something the user must see",
        "Traceback (most recent call last):",
    ):
        assert not is_startup_notice(kept), kept


def test_quiet_stderr_drops_notices_and_writes_back_the_rest(capfd):
    with quiet_stderr():
        os.write(2, STARTUP.encode())
        os.write(2, b"E0000 00:00:1.0 1 op_kernel.cc:1] a real error\n")
        print("python warning", file=sys.stderr)
    # (under pytest sys.stderr is its own capture, so the two may come in either order)
    err = capfd.readouterr().err
    assert sorted(err.splitlines()) == ["E0000 00:00:1.0 1 op_kernel.cc:1] a real error",
                                        "python warning"]


def test_a_job_starts_with_its_device_and_no_tensorflow_noise(tmp_path):
    """What a workflow script does: import a TensorFlow stage, set up its log, compute."""
    log = tmp_path / "job.log"
    code = ("from eae.progress import setup_logging\n"
            "from eae.train import EAETrainer\n"
            f"logger = setup_logging({str(log)!r})\n"
            "from eae.runtime import tf\n"
            "logger.info('sum %s', float(tf.reduce_sum(tf.ones(3))))\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("TF_")}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            env=env, timeout=300, check=True)
    lines = log.read_text().splitlines()
    assert " device: " in lines[0] and ("CPU: " in lines[0] or "GPU: " in lines[0]), lines
    assert lines[1].endswith("sum 3.0")
    console = result.stderr
    assert not [w for w in NOISE_WORDS if w in console], console
    # the console holds the same two lines as the log, nothing else
    assert len(console.splitlines()) == 2, console
