"""A method written only here, run through the harness: two networks updated in alternation (an
SR network and a critic with its own optimizer) plus a buffer nobody trains. Nothing under
jaxsr/ knows it exists. Checked: checkpoints, exact resume after a SIGKILL (every leaf of the
state: both networks, both optimizer states, the buffer), evaluation, and predict reading the
deployed network from deployable.json.

Run as a script (`python tests/test_harness_method.py WORKDIR`) it trains that method, which is
how the kill test gets a real process to kill.
"""
import os
import pathlib
import signal
import subprocess
import sys
import time

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxsr.config_util import load_config_file, override
from jaxsr.data import pipeline
from jaxsr.deployable import Deployable
from jaxsr.losses import pixel_loss
from jaxsr.model_factory import build_model, init_params
from jaxsr.pixels import to_float
from jaxsr.train import data as data_lib
from jaxsr.train.evaluate import Evaluator
from jaxsr.train.harness import Run
from jaxsr.train.state import apply_aux_update, apply_update, create_state

REPO = pathlib.Path(__file__).resolve().parents[1]
NUM_STEPS, CHECKPOINT_EVERY = 8, 4


# ------------------------------------------------------------------------- the method itself
class Critic(nn.Module):
    """(B, H, W, 3) -> (B,) realness score."""
    @nn.compact
    def __call__(self, x):
        x = nn.relu(nn.Conv(8, (3, 3), strides=2)(x))
        return nn.Dense(1)(jnp.mean(x, axis=(1, 2)))[:, 0]


def make_step(sr_model, critic, sr_tx, critic_tx):
    """Critic update first (hinge on HR vs SR), then the SR update (L1 + 0.01 x adversarial
    term through the critic just updated), then the buffer: an EMA of the critic's HR score
    and a queue of the last 4 SR scores with its write pointer."""
    def step(state, batch):
        lr, hr = to_float(batch["lr"]), to_float(batch["hr"])
        sr = sr_model.apply({"params": state.params}, lr)

        def critic_loss(p):
            return (jnp.mean(nn.relu(1 - critic.apply({"params": p}, hr)))
                    + jnp.mean(nn.relu(1 + critic.apply({"params": p}, sr))))
        c_loss, c_grads = jax.value_and_grad(critic_loss)(state.aux["critic"].params)
        state = apply_aux_update(state, "critic", c_grads, c_loss, critic_tx)
        critic_params = state.aux["critic"].params

        def sr_loss(p):
            out = sr_model.apply({"params": p}, lr)
            return pixel_loss(out, hr) - 0.01 * jnp.mean(critic.apply({"params": critic_params},
                                                                      out))
        loss, grads = jax.value_and_grad(sr_loss)(state.params)
        state = apply_update(state, grads, loss, sr_tx, ema_decay=0.0)
        b = state.buffers
        score_hr = jnp.mean(critic.apply({"params": critic_params}, hr))
        score_sr = jnp.mean(critic.apply({"params": critic_params}, sr))
        state = state.replace(buffers={
            "hr_score_ema": 0.9 * b["hr_score_ema"] + 0.1 * score_hr,
            "queue": b["queue"].at[b["pointer"]].set(score_sr),
            "pointer": (b["pointer"] + 1) % b["queue"].shape[0]})
        return state, {"loss": loss, "critic_loss": c_loss}
    return step


def method_config():
    config = load_config_file(str(REPO / "configs" / "supervised.py"), "tiny")
    for key, value in {"train.num_steps": NUM_STEPS, "train.checkpoint_every": CHECKPOINT_EVERY,
                       "train.eval_every": CHECKPOINT_EVERY, "train.log_every": 2,
                       "train.ema_decay": 0.0}.items():
        override(config, key, value)
    return config


class SlowAfter:
    """Batches that sleep after `step` batches (so a test can kill the run mid-way)."""
    def __init__(self, batches, step, seconds):
        self.batches, self.step, self.seconds, self.count = batches, step, seconds, 0

    def __iter__(self):
        return self

    def __next__(self):
        self.count += 1
        if self.count > self.step:
            time.sleep(self.seconds)
        return next(self.batches)

    def get_state(self):
        return self.batches.get_state()

    def set_state(self, state):
        self.batches.set_state(state)


def train_and_evaluate(config, workdir, slow_after=None):
    """The whole method: returns (final state, last evaluation metrics)."""
    run = Run(config, workdir)
    run.describe(Deployable.of(config.model, folder="", use_ema=False, method="test_critic"))
    train_src, val_src = data_lib.paired_sources(config.data, 1)
    batches = data_lib.train_iterator(config.data, train_src, 1, config.seed)
    if slow_after is not None:
        batches = SlowAfter(batches, slow_after, 1.0)
    sr_model, critic = build_model(config.model), Critic()
    sr_tx, critic_tx = optax.adam(1e-3), optax.adam(1e-3)
    patch = config.data.hr_patch
    critic_params = critic.init(jax.random.key(1), jnp.zeros((1, patch, patch, 3)))["params"]
    state = create_state(init_params(sr_model, jax.random.key(0), patch), sr_tx, config.seed,
                         aux={"critic": (critic_params, critic_tx)},
                         buffers={"hr_score_ema": jnp.zeros(()), "queue": jnp.zeros((4,)),
                                  "pointer": jnp.zeros((), jnp.int32)})
    evaluator = Evaluator(sr_model, pipeline.eval_pairs(val_src), 1, config.eval)
    state, last_eval = run.phase("train", folder="", state=state,
                                 step_fn=make_step(sr_model, critic, sr_tx, critic_tx),
                                 batches=batches, num_steps=config.train.num_steps,
                                 evaluate=evaluator.for_loop("eval/", use_ema=False),
                                 eval_every=config.train.eval_every, best_metric="psnr_y")
    run.finish({"final": last_eval})
    return state, last_eval


# ---------------------------------------------------------------------------------- tests
def _assert_states_equal(a, b):
    leaves_a, tree_a = jax.tree.flatten(a)
    leaves_b, tree_b = jax.tree.flatten(b)
    assert tree_a == tree_b
    for x, y in zip(leaves_a, leaves_b):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_two_networks_and_a_buffer_checkpoint_resume_exactly_after_a_kill(tmp_path):
    config = method_config()
    reference, ref_eval = train_and_evaluate(config, tmp_path / "ref")
    # Every part of the state moved: both networks, the critic's optimizer, the buffer.
    assert int(reference.step) == NUM_STEPS
    assert int(reference.aux["critic"].opt_state[0].count) == NUM_STEPS  # no double counting
    assert int(reference.buffers["pointer"]) == NUM_STEPS % 4
    assert np.all(np.asarray(reference.buffers["queue"]) != 0)
    assert 20 < ref_eval["psnr_y"] < 40
    # Resuming a finished run restores exactly what was saved (all leaves) and trains nothing.
    again, _ = train_and_evaluate(config, tmp_path / "ref")
    _assert_states_equal(again, reference)

    # A real process, killed after its step-4 checkpoint is committed, then resumed here.
    victim_dir = tmp_path / "victim"
    victim = subprocess.Popen([sys.executable, __file__, str(victim_dir)], cwd=REPO,
                              env=dict(os.environ, JAX_PLATFORMS="cpu"),
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    marker = victim_dir / "checkpoints" / str(CHECKPOINT_EVERY) / "commit_success.txt"
    deadline = time.time() + 240
    while not marker.exists() and victim.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    assert marker.exists(), victim.stderr.read().decode()[-3000:] if victim.poll() else "timeout"
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    assert not (victim_dir / "checkpoints" / str(NUM_STEPS)).exists()  # it died mid-way
    resumed, resumed_eval = train_and_evaluate(config, victim_dir)
    _assert_states_equal(resumed, reference)
    assert resumed_eval == ref_eval

    # predict finds the deployed network through deployable.json and restores `params`.
    from jaxsr import predict
    restorer = predict.load_restorer(workdir=str(victim_dir))
    lr = np.asarray(pipeline.eval_pairs(data_lib.paired_sources(config.data, 1)[1])[0][0])
    image = lr[:48, :48].astype(np.float32) / 255.0  # one whole tile: no padding
    model = build_model(config.model)
    want = np.clip(np.asarray(model.apply({"params": resumed.params}, image[None]))[0], 0, 1)
    np.testing.assert_allclose(predict.restore_array(restorer, image, tile=48, overlap=0), want,
                               atol=1e-5)


if __name__ == "__main__":
    train_and_evaluate(method_config(), sys.argv[1], slow_after=CHECKPOINT_EVERY)
