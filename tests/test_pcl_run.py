"""A whole PCL run on the harness: exact resume after a SIGKILL (every leaf: SR network and its
Adam, the embedding network and its Adam, the BatchNorm buffer, rng, step), fine-tuning from a
supervised run's deployed network (`init_from`), and predict / export of the PCL run.

Run as a script (`python tests/test_pcl_run.py WORKDIR`) it trains the tiny PCL config with
batches that slow down after the first checkpoint, so the test has a real process to kill.
"""
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
from test_harness_method import SlowAfter  # noqa: E402

REPO = pathlib.Path(__file__).resolve().parents[1]
NUM_STEPS, CHECKPOINT_EVERY = 8, 4


def pcl_config(**overrides):
    from jaxsr.config_util import load_config_file, override
    config = load_config_file(str(REPO / "configs" / "pcl.py"), "tiny")
    base = {"train.num_steps": NUM_STEPS, "train.checkpoint_every": CHECKPOINT_EVERY,
            "train.eval_every": NUM_STEPS, "train.log_every": 2, "train.keep_checkpoints": 3}
    for key, value in {**base, **overrides}.items():
        override(config, key, value)
    return config


def final_state(workdir):
    from jaxsr.checkpoint import Checkpointer
    ck = Checkpointer(pathlib.Path(workdir), read_only=True)
    state, meta = ck.restore_raw(ck.latest_step())
    return state, meta


def assert_trees_equal(a, b):
    la, ta = jax.tree.flatten(a)
    lb, tb = jax.tree.flatten(b)
    assert ta == tb
    for x, y in zip(la, lb):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    from jaxsr.methods.pcl import train as pcl
    workdir = tmp_path_factory.mktemp("pcl_ref")
    summary = pcl.train_and_evaluate(pcl_config(), str(workdir))
    return workdir, summary


@pytest.mark.slow  # a training subprocess, killed, then resumed here: three compiles
def test_sigkill_then_resume_is_exact(reference, tmp_path):
    ref_dir, ref_summary = reference
    ref_state, ref_meta = final_state(ref_dir)
    assert ref_meta["step"] == NUM_STEPS
    # Every part moved: both networks' optimizers counted every step, BN statistics changed.
    assert "embed" in ref_state["aux"] and "embed_batch_stats" in ref_state["buffers"]
    victim_dir = tmp_path / "victim"
    victim = subprocess.Popen([sys.executable, __file__, str(victim_dir)], cwd=REPO,
                              env=dict(os.environ, JAX_PLATFORMS="cpu"),
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    marker = victim_dir / "checkpoints" / str(CHECKPOINT_EVERY) / "commit_success.txt"
    deadline = time.time() + 300
    while not marker.exists() and victim.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    assert marker.exists(), victim.stderr.read().decode()[-3000:] if victim.poll() else "timeout"
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    assert not (victim_dir / "checkpoints" / str(NUM_STEPS)).exists()  # it died mid-way
    from jaxsr.methods.pcl import train as pcl
    summary = pcl.train_and_evaluate(pcl_config(), str(victim_dir))
    state, meta = final_state(victim_dir)
    assert meta["step"] == NUM_STEPS
    assert_trees_equal(state, ref_state)
    assert summary["final"] == ref_summary["final"]


def test_predict_and_export_of_a_pcl_run(reference, tmp_path):
    from jaxsr import export, predict
    from jaxsr.model_factory import build_model
    ref_dir, _ = reference
    state, _ = final_state(ref_dir)
    config = pcl_config()
    model = build_model(config.model)
    lr = np.random.default_rng(0).random((16, 16, 3)).astype(np.float32)
    want = np.clip(np.asarray(model.apply({"params": state["params"]}, lr[None]))[0], 0, 1)
    restorer = predict.load_restorer(workdir=str(ref_dir))
    got = predict.restore_array(restorer, lr, tile=16, overlap=0)
    assert got.shape == (64, 64, 3)
    np.testing.assert_allclose(got, want, atol=1e-5)
    path = export.export_run(ref_dir, tmp_path / "artifact", platforms=("cpu",))
    artifact = predict.load_restorer(artifact=str(path))
    np.testing.assert_allclose(predict.restore_array(artifact, lr, tile=16, overlap=0), want,
                               atol=1e-4)


def test_init_from_a_supervised_run_fine_tunes_its_network(tmp_path):
    from jaxsr.config_util import load_config_file, override
    from jaxsr.methods import supervised
    from jaxsr.methods.pcl import train as pcl
    from jaxsr.model_factory import build_model
    from jaxsr.run_config import load_run
    sup = load_config_file(str(REPO / "configs" / "supervised.py"), "x4,tiny")
    for key, value in {"train.num_steps": 3, "train.eval_every": 3, "train.checkpoint_every": 3,
                       "data.hr_patch": 32, "train.ema_decay": 0.0}.items():
        override(sup, key, value)
    sup_dir = tmp_path / "supervised"
    supervised.train_and_evaluate(sup, str(sup_dir))
    pretrained = load_run(sup_dir).params
    config = pcl_config(**{"init_from": str(sup_dir), "train.num_steps": 2,
                           "train.eval_every": 2})
    model, net = build_model(config.model), pcl.build_embedding(config.pcl)
    state = pcl.init_state(config, model, net, pcl.sr_optimizer(config),
                           pcl.embed_optimizer(config))
    assert_trees_equal(state.params, pretrained)  # starts from the supervised network
    summary = pcl.train_and_evaluate(config, str(tmp_path / "pcl"))
    assert summary["step"] == 2
    # A model block that does not fit the pre-trained parameters is refused, naming the fix.
    bad = pcl_config(**{"init_from": str(sup_dir), "model.kwargs.features": 16})
    with pytest.raises(ValueError, match="config.model"):
        pcl.init_state(bad, build_model(bad.model), net, pcl.sr_optimizer(bad),
                       pcl.embed_optimizer(bad))


if __name__ == "__main__":
    sys.path.insert(0, str(REPO))
    from jaxsr.methods.pcl import train as pcl
    make = pcl.data_lib.train_iterator
    pcl.data_lib.train_iterator = lambda *a, **k: SlowAfter(make(*a, **k), CHECKPOINT_EVERY, 1.0)
    pcl.train_and_evaluate(pcl_config(), sys.argv[1])
