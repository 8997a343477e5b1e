"""The whole IRConStyle method through the harness (tiny, synthetic sigma-25 noise on the shipped
clean images): killed with SIGKILL during the ConStyle phase and resumed, it ends with every leaf
of the state equal to an uninterrupted run (queue, pointer, key encoder, BN statistics, both
phases' optimizer state); predict and export load the deployed encoder + restorer.

As a script (`python tests/test_irconstyle_run.py WORKDIR`) it trains that run slowly after the
first checkpoint, which is how the kill test gets a process to kill."""
import os
import pathlib
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(__file__))
from test_harness_method import SlowAfter, _assert_states_equal  # noqa: E402

from jaxsr.config_util import load_config_file, override  # noqa: E402
from jaxsr.methods.irconstyle import train as ic_train  # noqa: E402

REPO = pathlib.Path(__file__).resolve().parents[1]
CKPT = 3


def config():
    c = load_config_file(str(REPO / "configs" / "irconstyle.py"), "tiny,denoise25")
    for k, v in {"constyle.steps": 6, "train.num_steps": 8, "train.checkpoint_every": CKPT,
                 "train.eval_every": 8, "data.hr_patch": 16}.items():
        override(c, k, v)
    return c


def run(workdir, slow_after=None):
    from jaxsr.methods.irconstyle import data as ic_data
    from jaxsr.train import data as data_lib
    cfg = config()
    train_src, _, _ = ic_data.sources(cfg)
    batches = data_lib.train_iterator(cfg.data, train_src, 1, cfg.seed, paired=False)
    if slow_after is not None:
        batches = SlowAfter(batches, slow_after, 1.0)
    return ic_train.train_and_evaluate(cfg, str(workdir), batches=batches)


def final_state(workdir):
    from jaxsr.checkpoint import Checkpointer
    ck = Checkpointer(pathlib.Path(workdir), read_only=True)
    state, meta = ck.restore_raw(ck.latest_step())
    return state, meta


@pytest.mark.slow  # a reference run, a killed subprocess, its resume, predict and export
def test_kill_and_resume_restores_the_queue_exactly_then_predict_and_export(tmp_path):
    ref = run(tmp_path / "ref")
    victim_dir = tmp_path / "victim"
    victim = subprocess.Popen([sys.executable, __file__, str(victim_dir)], cwd=REPO,
                              env=dict(os.environ, JAX_PLATFORMS="cpu"),
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    marker = victim_dir / "constyle" / "checkpoints" / str(CKPT) / "commit_success.txt"
    deadline = time.time() + 400
    while not marker.exists() and victim.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    assert marker.exists(), victim.stderr.read().decode()[-3000:] if victim.poll() else "timeout"
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    assert not (victim_dir / "checkpoints").exists()   # died inside the ConStyle phase
    resumed = run(victim_dir)
    assert resumed["final"] == ref["final"] and resumed["step"] == 8
    (a, _), (b, _) = final_state(tmp_path / "ref"), final_state(victim_dir)
    assert int(np.asarray(a["buffers"]["pointer"])) == (6 * 4) % 32
    _assert_states_equal(a, b)      # every leaf: params, EMA, optimizer, rng, queue, key encoder

    # predict: deployable.json -> constyle (encoder + restorer), state.params of the workdir.
    from jaxsr import predict
    from jaxsr.model_factory import build_model
    cfg = config()
    restorer = predict.load_restorer(workdir=str(victim_dir))
    image = np.random.default_rng(0).random((64, 64, 3), np.float32)
    net = build_model(cfg.model)
    params = jax.tree.map(np.asarray, b["params"])
    want = np.clip(np.asarray(jax.jit(net.apply)({"params": params}, image[None]))[0], 0, 1)
    got = predict.restore_array(restorer, image, tile=64, overlap=0)
    np.testing.assert_allclose(got, want, atol=1e-5)
    # export: the serialized forward (encoder with its BN statistics + restorer) matches.
    from jaxsr import export as ex
    art = ex.export_run(victim_dir, tmp_path / "art", platforms=["cpu"])
    loaded = ex.load(art)
    np.testing.assert_allclose(np.clip(np.asarray(loaded(image[None]))[0], 0, 1), want,
                               atol=1e-5)


if __name__ == "__main__":
    run(sys.argv[1], slow_after=CKPT)
