"""jaxsr.models.stacking: unrolled <-> stacked block layouts (pure pytree round trips, `like`,
errors), params_for, and checkpoints written in the other layout restoring into today's model."""
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxsr import models
from jaxsr.checkpoint import CheckpointError, Checkpointer, abstract_like
from jaxsr.models.stacking import (has_stacked, has_unrolled, params_for, scan_layout,
                                   stack_blocks, unstack_blocks)

KEY = jax.random.key(0, impl="rbg")


def numbered(tree, seed=0):
    """Distinct values in every leaf (numpy), so a misplaced slice shows."""
    rng = np.random.default_rng(seed)
    return jax.tree.map(lambda s: rng.standard_normal(s.shape).astype(np.float32), tree)


def shapes(tree):
    return jax.tree.map(lambda x: tuple(x.shape), tree)


def rcan_like(g=2, b=3):
    blk = lambda: {"conv1": {"kernel": np.zeros((3, 3, 4, 4)), "bias": np.zeros(4)},  # noqa
                   "ca": {"down": {"kernel": np.zeros((1, 1, 4, 1))}}}
    return {"params": {"head": {"kernel": np.zeros((3, 3, 3, 4))},
                       **{f"group_{i}": {**{f"block_{j}": blk() for j in range(b)},
                                         "conv": {"kernel": np.zeros((3, 3, 4, 4))}}
                          for i in range(g)},
                       "enc_1_block_0": {"beta": np.zeros(4)},
                       "enc_1_block_1": {"beta": np.zeros(4)}}}


def test_round_trip_nested_groups_and_values():
    tree = numbered(rcan_like())
    st = stack_blocks(tree)
    p = st["params"]
    assert set(p) == {"head", "groups", "enc_1_blocks"}
    assert shapes(p["groups"]) == {"blocks": {"conv1": {"kernel": (2, 3, 3, 3, 4, 4),
                                                       "bias": (2, 3, 4)},
                                              "ca": {"down": {"kernel": (2, 3, 1, 1, 4, 1)}}},
                                   "conv": {"kernel": (2, 3, 3, 4, 4)}}
    np.testing.assert_array_equal(p["groups"]["blocks"]["conv1"]["kernel"][1, 2],
                                  tree["params"]["group_1"]["block_2"]["conv1"]["kernel"])
    np.testing.assert_array_equal(p["enc_1_blocks"]["beta"][1],
                                  tree["params"]["enc_1_block_1"]["beta"])
    back = unstack_blocks(st)
    assert jax.tree.structure(back) == jax.tree.structure(tree)
    for a, b in zip(jax.tree.leaves(back), jax.tree.leaves(tree)):
        np.testing.assert_array_equal(a, b)
    # Idempotent on a tree already in the target layout; the predicates see the layouts.
    assert jax.tree.structure(stack_blocks(st)) == jax.tree.structure(st)
    assert jax.tree.structure(unstack_blocks(tree)) == jax.tree.structure(tree)
    assert has_unrolled(tree) and not has_stacked(tree)
    assert has_stacked(st) and not has_unrolled(st)


def test_shape_dtype_structs_and_jax_arrays():
    sds = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, jnp.float32), rcan_like())
    st = stack_blocks(sds)
    assert st["params"]["groups"]["blocks"]["conv1"]["kernel"].shape == (2, 3, 3, 3, 4, 4)
    assert shapes(unstack_blocks(st)) == shapes(sds)
    arrs = jax.tree.map(jnp.asarray, numbered(rcan_like(1, 2)))
    st = stack_blocks(arrs)
    assert isinstance(st["params"]["groups"]["conv"]["kernel"], jax.Array)
    np.testing.assert_array_equal(unstack_blocks(st)["params"]["group_0"]["block_1"]["ca"]
                                  ["down"]["kernel"],
                                  arrs["params"]["group_0"]["block_1"]["ca"]["down"]["kernel"])


def test_like_converts_only_what_the_target_has_stacked():
    """A state with a scanned network and one that keeps block_i names (CRL-SR's encoder)."""
    tree = {"params": {"block_0": {"w": np.ones(2)}, "block_1": {"w": np.ones(2)}},
            "encoder": {"block_0": {"w": np.ones(3)}, "block_1": {"w": np.ones(3)}}}
    like = {"params": {"blocks": {"w": np.ones((2, 2))}},
            "encoder": {"block_0": {"w": np.ones(3)}, "block_1": {"w": np.ones(3)}}}
    st = stack_blocks(tree, like=like)
    assert shapes(st) == shapes(like)
    assert shapes(unstack_blocks(st, like=tree)) == shapes(tree)
    assert set(stack_blocks(tree)["encoder"]) == {"blocks"}  # by name alone: everything


def test_errors_name_the_entries():
    with pytest.raises(ValueError, match=r"block_i indices \[0, 2\]"):
        stack_blocks({"block_0": {"w": np.ones(2)}, "block_2": {"w": np.ones(2)}})
    with pytest.raises(ValueError, match="differ in structure.*'blocks'"):
        stack_blocks({"block_0": {"w": np.ones(2)}, "block_1": {"v": np.ones(2)}})
    with pytest.raises(ValueError, match="both 'blocks' and 'block_0'"):
        unstack_blocks({"blocks": {"w": np.ones((2, 2))}, "block_0": {"w": np.ones(2)}})


def test_train_state_with_optimizer_moments_round_trips():
    """The whole train state (params, EMA, Adam mu/nu inside optax named tuples) converts."""
    from jaxsr.train.state import create_state
    params = numbered(rcan_like(2, 2)["params"])
    state = create_state(params, optax.adam(1e-3), seed=0)
    st = stack_blocks(state)
    assert type(st) is type(state)
    mu = st.opt_state[0].mu
    assert mu["groups"]["blocks"]["conv1"]["kernel"].shape == (2, 2, 3, 3, 4, 4)
    back = unstack_blocks(st)
    assert jax.tree.structure(back) == jax.tree.structure(state)


def test_params_for_follows_the_model_field():
    tiny = dict(features=4, num_blocks=2)
    scanned = models.create("edsr", scale=2, **tiny)
    unrolled = models.create("edsr", scale=2, scan_blocks=False, **tiny)
    x = jnp.zeros((1, 4, 4, 3))
    want_s = jax.eval_shape(scanned.init, KEY, x)
    want_u = jax.eval_shape(unrolled.init, KEY, x)
    old = numbered(want_u)
    assert shapes(params_for(scanned, old)) == shapes(want_s)
    assert shapes(params_for(unrolled, params_for(scanned, old))) == shapes(want_u)
    from jaxsr.model_factory import GlobalResidual
    assert scan_layout(GlobalResidual(net=scanned, scale=2)) is True
    assert scan_layout(unrolled) is False
    crl = models.create("crl_sr", scale=2)
    assert scan_layout(crl) is None and params_for(crl, old) is old


# ------------------------------------------------------------------------------- checkpoints
def _edsr_state(scan: bool, seed: int = 0):
    from jaxsr.train.state import create_state
    model = models.create("edsr", scale=2, features=4, num_blocks=3, scan_blocks=scan)
    shp = jax.eval_shape(model.init, KEY, jnp.zeros((1, 4, 4, 3)))["params"]
    params = jax.tree.map(jnp.asarray, numbered(shp, seed))
    state = create_state(params, optax.adam(1e-3), seed=seed)
    return state.replace(opt_state=jax.tree.map(lambda x: x + 1, state.opt_state))


@pytest.mark.parametrize("saved_scan", [False, True])
def test_checkpoint_in_the_other_layout_restores_converted(tmp_path, saved_scan, caplog):
    saved = _edsr_state(saved_scan, seed=1)
    ck = Checkpointer(tmp_path, keep=1)
    ck.save(7, saved, {"it": 1}, None)
    ck.wait()
    target = abstract_like(_edsr_state(not saved_scan))
    restored, data, meta = ck.restore(None, target)
    ck.close()
    assert data == {"it": 1} and meta["step"] == 7
    assert jax.tree.structure(restored) == jax.tree.structure(target)
    want = stack_blocks(saved) if not saved_scan else unstack_blocks(saved)
    for a, b in zip(jax.tree.leaves(restored), jax.tree.leaves(want)):
        np.testing.assert_array_equal(a, b)
    assert "block layout" in caplog.text


def test_checkpoint_of_another_model_still_names_the_fix(tmp_path):
    ck = Checkpointer(tmp_path, keep=1)
    ck.save(1, _edsr_state(False), {}, None)
    ck.wait()
    from jaxsr.train.state import create_state
    other = models.create("edsr", scale=2, features=8, num_blocks=3)
    shp = jax.eval_shape(other.init, KEY, jnp.zeros((1, 4, 4, 3)))["params"]
    target = abstract_like(create_state(jax.tree.map(jnp.zeros_like, numbered(shp)),
                                        optax.adam(1e-3), seed=0))
    with pytest.raises(CheckpointError, match=r"(?s)checkpoints/1.*different model/config"
                                              r".*stack_blocks.*scan_blocks=False"):
        ck.restore(1, target)
    ck.close()
