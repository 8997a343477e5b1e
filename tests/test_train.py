"""Supervised trainer end to end on the shipped real samples (tiny config)."""
import json
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxsr.checkpoint import Checkpointer
from jaxsr.config_util import load_config_file, override
from jaxsr.methods import supervised
from jaxsr.train import steps as train_steps
from jaxsr.train.loop import NonFiniteLossError

REPO = pathlib.Path(__file__).resolve().parents[1]
CONFIG = "configs/supervised.py"


def tiny_config(**overrides):
    """configs/supervised.py:tiny with `dotted.key=value` overrides."""
    config = load_config_file(str(REPO / CONFIG), "tiny")
    for dotted, value in overrides.items():
        override(config, dotted, value)
    return config


def read_jsonl(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_tiny_run_writes_logs_images_checkpoints_and_resumes(tmp_path):
    config = tiny_config()
    summary = supervised.train_and_evaluate(config, str(tmp_path))
    assert summary["step"] == 20
    records = read_jsonl(tmp_path / "metrics.jsonl")
    losses = [r["train/loss"] for r in records if "train/loss" in r]
    assert len(losses) == 4 and all(np.isfinite(losses))
    evals = [r for r in records if "eval/psnr_y" in r]
    assert [r["step"] for r in evals] == [10, 20]
    baseline = [r for r in records if "baseline/psnr_y" in r][0]["baseline/psnr_y"]
    assert 20 < baseline < 35  # identity PSNR of real City100 Nikon pairs (README: 22.9-31.9 dB)
    assert list((tmp_path / "tb").glob("events.out.tfevents.*"))
    pngs = sorted((tmp_path / "images").rglob("*.png"))
    assert len(pngs) == 4  # 2 eval images x 2 evaluations
    ck = Checkpointer(tmp_path)
    assert ck.all_steps() == [10, 20]
    ck.close()
    # Same command with more steps resumes at 20 rather than starting over.
    config.unlock()
    config.train.num_steps = 25
    summary = supervised.train_and_evaluate(config, str(tmp_path))
    assert summary["step"] == 25
    steps = [r["step"] for r in read_jsonl(tmp_path / "metrics.jsonl") if "train/loss" in r]
    assert steps == [5, 10, 15, 20, 25]


def test_train_step_compiles_once_and_lowers_the_loss():
    config = tiny_config(**{"optim.lr": 2e-3})
    from jaxsr.model_factory import build_model, init_params
    from jaxsr.train import mesh as mesh_lib
    from jaxsr.train.optim import make_optimizer
    from jaxsr.train.state import create_state
    model = build_model(config.model)
    params = init_params(model, jax.random.key(0), 16)
    optimizer, _ = make_optimizer(config.optim, 100)
    mesh = mesh_lib.make_mesh()
    sharding = mesh_lib.replicated(mesh)
    state = jax.device_put(create_state(params, optimizer, 0), sharding)
    step = train_steps.compile_step(
        train_steps.make_train_step(model, optimizer, config.train.loss, config.train.ema_decay), mesh,
                                   sharding)
    rng = np.random.default_rng(0)
    hr = rng.integers(0, 256, (4, 16, 16, 3), dtype=np.uint8)
    lr = np.round(hr * 0.7).astype(np.uint8)  # a learnable degradation: darkening
    losses = []
    for _ in range(30):
        batch = mesh_lib.put_global_batch({"lr": lr, "hr": hr}, mesh)
        state, metrics = step(state, batch)
        losses.append(float(metrics["loss"]))
    assert step._cache_size() == 1  # no recompiles after the first step
    assert losses[-1] < 0.8 * losses[0]


def test_nan_loss_stops_and_keeps_last_good_checkpoint(tmp_path, monkeypatch):
    original = train_steps.apply_update

    def poisoned(state, grads, loss, *args, **kwargs):  # NaN loss from step 13 on
        return original(state, grads, jnp.where(state.step >= 12, jnp.nan, loss), *args, **kwargs)

    monkeypatch.setattr(train_steps, "apply_update", poisoned)
    config = tiny_config(**{"train.checkpoint_every": 5, "train.eval_every": 100})
    with pytest.raises(NonFiniteLossError, match=r"last good checkpoint is step 10.*optim.lr"):
        supervised.train_and_evaluate(config, str(tmp_path))
    ck = Checkpointer(tmp_path)
    assert ck.all_steps() == [5, 10]
    raw, meta = ck.restore_raw(10)
    assert meta["step"] == 10
    assert all(np.isfinite(x).all() for x in jax.tree.leaves(raw["params"]))
    ck.close()
