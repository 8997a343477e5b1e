"""Scale and reliability: 8 simulated devices, two processes, SIGKILL + resume."""
import os
import pathlib
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

TESTS = pathlib.Path(__file__).resolve().parent
REPO = TESTS.parent


def run_worker(out, devices=1, xla_devices=8, **kwargs):
    env = dict(os.environ, JAX_PLATFORMS="cpu",
               XLA_FLAGS=f"--xla_force_host_platform_device_count={xla_devices}")
    cmd = [sys.executable, str(TESTS / "scale_worker.py"), "--devices", str(devices),
           "--out", str(out)] + [f"--{k}={v}" for k, v in kwargs.items()]
    return subprocess.Popen(cmd, env=env, cwd=REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)


def finish(proc, timeout=300):
    out, _ = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, out[-3000:]
    return out


def load(path):
    data = np.load(path)
    return [data[f"arr_{i}"] for i in range(len(data.files) - 1)], float(data["loss"])


def test_eight_devices_equal_one_device(tmp_path):
    procs = [run_worker(tmp_path / "one.npz", devices=1), run_worker(tmp_path / "eight.npz", devices=8)]
    outs = [finish(p) for p in procs]
    assert "devices 8" in outs[1]
    (one, loss1), (eight, loss8) = load(tmp_path / "one.npz"), load(tmp_path / "eight.npz")
    assert loss1 == pytest.approx(loss8, rel=1e-5)
    for a, b in zip(one, eight):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("step", ["drtl_pretrain", "drtl_meta"])
def test_drtl_steps_on_eight_devices_equal_one_device(tmp_path, step):
    procs = [run_worker(tmp_path / "one.npz", devices=1, step=step),
             run_worker(tmp_path / "eight.npz", devices=8, step=step)]
    outs = [finish(p) for p in procs]
    assert "devices 8" in outs[1]
    (one, loss1), (eight, loss8) = load(tmp_path / "one.npz"), load(tmp_path / "eight.npz")
    assert loss1 == pytest.approx(loss8, rel=1e-5)
    for a, b in zip(one, eight):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)


def test_two_processes_train_together_and_agree(tmp_path):
    import portpicker
    port = portpicker.pick_unused_port()
    procs = [run_worker(tmp_path / f"p{i}.npz", xla_devices=1, process_id=i, num_processes=2,
                        port=port) for i in range(2)]
    single = run_worker(tmp_path / "single.npz", devices=1)
    outs = [finish(p) for p in procs + [single]]
    assert "processes 2" in outs[0] and "devices 2" in outs[0]
    p0, _ = load(tmp_path / "p0.npz")
    p1, _ = load(tmp_path / "p1.npz")
    ref, _ = load(tmp_path / "single.npz")
    for a, b, c in zip(p0, p1, ref):
        np.testing.assert_array_equal(a, b)  # replicated parameters are identical
        np.testing.assert_allclose(a, c, rtol=1e-4, atol=1e-6)  # and equal the 1-process run


def _main_cmd(workdir):
    return [sys.executable, "-m", "jaxsr.main", "--config=configs/supervised.py:tiny",
            f"--workdir={workdir}", "--config.train.num_steps=40",
            "--config.train.checkpoint_every=10", "--config.train.eval_every=1000"]


def _losses(workdir):
    import json
    rows = [json.loads(l) for l in (workdir / "metrics.jsonl").read_text().splitlines()]
    return {r["step"]: r["train/loss"] for r in rows if "train/loss" in r}


def test_sigkill_then_same_command_resumes_exactly(tmp_path):
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    ref_dir, run_dir = tmp_path / "ref", tmp_path / "run"
    ref = subprocess.Popen(_main_cmd(ref_dir), cwd=REPO, env=env, stdout=subprocess.DEVNULL,
                           stderr=subprocess.PIPE, text=True)
    victim = subprocess.Popen(_main_cmd(run_dir), cwd=REPO, env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    marker = run_dir / "checkpoints" / "20" / "commit_success.txt"
    deadline = time.time() + 240
    while not marker.exists() and victim.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    assert marker.exists(), "the run never wrote checkpoint 20"
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    resumed = subprocess.run(_main_cmd(run_dir), cwd=REPO, env=env, capture_output=True,
                             text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resumed from step" in resumed.stderr
    _, err = ref.communicate(timeout=300)
    assert ref.returncode == 0, err[-3000:]
    from jaxsr.checkpoint import Checkpointer
    import jax
    # Every leaf of the saved state (parameters, EMA, Adam moments and count, rng, step,
    # non-finite counter), not only the parameters: same data order, same updates.
    ref_ck, run_ck = (Checkpointer(d, read_only=True) for d in (ref_dir, run_dir))
    (a, _), (b, meta) = ref_ck.restore_raw(40), run_ck.restore_raw(40)
    assert meta["step"] == 40
    leaves_a, tree_a = jax.tree.flatten(a)
    leaves_b, tree_b = jax.tree.flatten(b)
    assert tree_a == tree_b and len(leaves_a) > 3 * len(jax.tree.leaves(a["params"]))
    for x, y in zip(leaves_a, leaves_b):
        np.testing.assert_array_equal(x, y)
    ref_losses, run_losses = _losses(ref_dir), _losses(run_dir)
    for step in (25, 30, 35, 40):
        assert run_losses[step] == ref_losses[step]
