"""Orbax checkpointer: keep-N plus best, exact restore, clear errors on damage."""
import shutil

import jax.numpy as jnp
import numpy as np
import pytest

from jaxsr.checkpoint import CheckpointError, Checkpointer, abstract_like, restore_params


def _state(step):
    return {"params": {"w": jnp.full((2, 3), float(step))},
            "ema_params": {"w": jnp.full((2, 3), -float(step))}, "step": jnp.array(step)}


def test_keeps_latest_n_and_best(tmp_path):
    ck = Checkpointer(tmp_path, keep=2, best_metric="psnr_y")
    for step, psnr in [(1, 20.0), (2, 30.0), (3, 25.0), (4, 22.0), (5, 21.0)]:
        ck.save(step, _state(step), {"epoch": step}, {"psnr_y": psnr}, {"note": "x"})
    ck.wait()
    assert ck.all_steps() == [2, 4, 5]  # latest two + the best (step 2, 30 dB)
    assert ck.best_step() == 2
    state, data, meta = ck.restore(None, abstract_like(_state(0)))
    np.testing.assert_array_equal(state["params"]["w"], np.full((2, 3), 5.0))
    assert data == {"epoch": 5} and meta["metrics"] == {"psnr_y": 21.0}
    ck.close()
    params, meta = restore_params(tmp_path, "best")
    np.testing.assert_array_equal(params["w"], np.full((2, 3), -2.0))  # EMA params by default
    params, _ = restore_params(tmp_path, "latest", use_ema=False)
    np.testing.assert_array_equal(params["w"], np.full((2, 3), 5.0))


def test_missing_and_damaged_checkpoints_raise_clear_errors(tmp_path):
    with pytest.raises(CheckpointError, match="no checkpoints"):
        restore_params(tmp_path / "empty")
    ck = Checkpointer(tmp_path, keep=2)
    ck.save(1, _state(1), {}, {"psnr_y": 1.0})
    ck.close()
    shutil.rmtree(tmp_path / "checkpoints" / "1" / "state")
    ck = Checkpointer(tmp_path, keep=2)
    with pytest.raises(CheckpointError, match="checkpoints/1"):
        ck.restore(1, abstract_like(_state(0)))


def test_restore_into_wrong_structure_names_the_fix(tmp_path):
    ck = Checkpointer(tmp_path, keep=1)
    ck.save(3, _state(3), {}, None)
    ck.wait()
    wrong = {"params": {"w": jnp.zeros((5, 5))}, "ema_params": {"w": jnp.zeros((5, 5))},
             "step": jnp.array(0)}
    with pytest.raises(CheckpointError, match="different model/config"):
        ck.restore(3, abstract_like(wrong))


def test_checkpoints_written_before_aux_and_buffers_restore_into_the_new_state(tmp_path):
    """A TrainState checkpoint from before `aux`/`buffers` existed (the same pytree less those
    two fields) restores into today's state: every leaf as saved, aux and buffers empty."""
    import jax
    import optax
    from jaxsr.train.state import create_state
    tx = optax.adam(1e-3)
    state = create_state({"w": jnp.arange(6.0).reshape(2, 3)}, tx, seed=3)
    state = state.replace(step=jnp.asarray(5, jnp.int32),
                          opt_state=jax.tree.map(lambda x: x + 1, state.opt_state))
    old_format = {f: getattr(state, f) for f in ("step", "params", "ema_params", "opt_state",
                                                  "rng", "nonfinite")}
    ck = Checkpointer(tmp_path, keep=1)
    ck.save(5, old_format, {"iterator": "x"}, None)
    ck.wait()
    restored, data, meta = ck.restore(None, abstract_like(create_state(
        {"w": jnp.zeros((2, 3))}, tx, seed=0)))
    assert restored.aux == {} and restored.buffers == {} and data == {"iterator": "x"}
    for a, b in zip(jax.tree.leaves(restored), jax.tree.leaves(state)):
        np.testing.assert_array_equal(a, b)
    ck.close()
