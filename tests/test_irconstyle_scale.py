"""IRConStyle on 8 simulated CPU devices equals 1 device: parameters, key encoder, queue (the
all-gathered codes of the global batch) and pointer after 2 ConStyle steps and 1 L1 step.

Tolerances: summation order differs between 1 and 8 devices. The Dense biases in front of the
encoder head's BatchNorms have an exactly-zero true gradient (BN removes the mean), so their
values are float noise (~1e-5, either sign) on both sides: covered by `atol`, and harmless (BN
cancels them)."""
import numpy as np
import pytest

from test_scale import TESTS, finish

import os
import subprocess
import sys


def run(out, devices):
    env = dict(os.environ, JAX_PLATFORMS="cpu",
               XLA_FLAGS="--xla_force_host_platform_device_count=8")
    return subprocess.Popen([sys.executable, str(TESTS / "irconstyle_scale_worker.py"),
                             "--devices", str(devices), "--out", str(out)], env=env,
                            cwd=TESTS.parent, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)


@pytest.mark.slow  # two subprocesses (1 and 8 simulated devices), each compiling both phases
def test_eight_devices_equal_one_including_the_queue(tmp_path):
    procs = [run(tmp_path / "one.npz", 1), run(tmp_path / "eight.npz", 8)]
    outs = [finish(p, timeout=600) for p in procs]
    assert "devices 8" in outs[1] and "devices 1" in outs[0]
    one, eight = np.load(tmp_path / "one.npz"), np.load(tmp_path / "eight.npz")
    assert float(one["loss"]) == pytest.approx(float(eight["loss"]), rel=1e-5)
    # K = 32 rows of D = 16; pointer after 2 ConStyle steps of a global batch of 8 = 16.
    names = [f"arr_{i}" for i in range(len(one.files) - 1)]
    assert any(one[n].shape == (32, 16) for n in names)  # the queue (K = 32, D = 16) is compared
    pointers = [n for n in names if one[n].dtype == np.int32]
    assert len(pointers) == 1 and int(one[pointers[0]]) == int(eight[pointers[0]]) == 16
    for n in names:
        np.testing.assert_allclose(one[n], eight[n], rtol=1e-4, atol=1e-4, err_msg=n)
