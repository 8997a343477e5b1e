"""Relation weights and the relation-weighted gradient combination (jaxsr.methods.drtl.reweight)."""
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxsr.methods.drtl import reweight as rw

K = 4


def _random_stacked(seed, k=K):
    rng = np.random.default_rng(seed)
    return {
        "conv": {"kernel": rng.normal(size=(k, 3, 3, 2, 5)).astype(np.float32),
                 "bias": rng.normal(size=(k, 5)).astype(np.float32)},
        "dense": [rng.normal(size=(k, 7)).astype(np.float32),
                  rng.normal(size=(k,)).astype(np.float32)],
    }


def _np_weighted(stacked, w):
    """Independent reference: explicit loop over tasks, leaf by leaf, float64."""
    def one(leaf):
        leaf = np.asarray(leaf, np.float64)
        out = np.zeros(leaf.shape[1:])
        for k in range(leaf.shape[0]):
            out += float(w[k]) * leaf[k]
        return out
    return jax.tree_util.tree_map(one, stacked)


def _params_like(stacked):
    return jax.tree_util.tree_map(lambda x: jnp.zeros(x.shape[1:], x.dtype), stacked)


def _assert_tree_close(a, b, rtol=1e-5, atol=1e-6):
    la, ta = jax.tree_util.tree_flatten(a)
    lb, tb = jax.tree_util.tree_flatten(b)
    assert ta == tb
    for x, y in zip(la, lb):
        assert np.shape(x) == np.shape(y)
        np.testing.assert_allclose(np.asarray(x, np.float64), np.asarray(y, np.float64),
                                   rtol=rtol, atol=atol)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_transform_equals_numpy_weighted_sum(seed):
    g = _random_stacked(seed)
    w = np.random.default_rng(100 + seed).dirichlet(np.ones(K)).astype(np.float32)
    tx = rw.relation_weighted_sum(weights=w)
    state = tx.init(_params_like(g))
    out, new_state = jax.jit(tx.update)(g, state)
    _assert_tree_close(out, _np_weighted(g, w))
    np.testing.assert_array_equal(new_state.weights, w)


def test_chain_with_sgd_gives_minus_weighted_sum_and_extra_arg_passes_through():
    g = _random_stacked(3)
    w = np.array([0.1, 0.2, 0.3, 0.4], np.float32)
    params = _params_like(g)
    tx = optax.chain(rw.relation_weighted_sum(num_tasks=K), optax.sgd(1.0))
    state = tx.init(params)
    update = jax.jit(lambda g, s, p, w: tx.update(g, s, p, task_weights=w))
    upd, state2 = update(g, state, params, w)
    ref = jax.tree_util.tree_map(lambda x: -x, _np_weighted(g, w))
    _assert_tree_close(upd, ref)
    # The extra arg overrides for that call only: the state keeps its (uniform) weights.
    np.testing.assert_allclose(rw.get_weights(state2), np.full(K, 0.25))
    # Extra args reach the transform also after other extra-args transforms in front of the sgd.
    tx2 = optax.chain(rw.relation_weighted_sum(), optax.clip_by_global_norm(1e9), optax.sgd(1.0))
    upd2, _ = tx2.update(g, tx2.init(params), params, task_weights=w)
    _assert_tree_close(upd2, ref)


def test_weights_from_state_vs_extra_arg():
    g = _random_stacked(4)
    params = _params_like(g)
    w_state = np.array([0.7, 0.1, 0.1, 0.1], np.float32)
    w_arg = np.array([0.0, 0.0, 1.0, 0.0], np.float32)
    tx = optax.chain(rw.relation_weighted_sum(num_tasks=K), optax.sgd(1.0))
    state = tx.init(params)
    # Default state: uniform.
    upd, _ = tx.update(g, state, params)
    _assert_tree_close(upd, jax.tree_util.tree_map(lambda x: -x, _np_weighted(g, np.full(K, .25))))
    # set_weights works on the chain's tuple state and is jittable.
    state = jax.jit(rw.set_weights)(state, w_state)
    np.testing.assert_array_equal(rw.get_weights(state), w_state)
    upd, _ = tx.update(g, state, params)
    _assert_tree_close(upd, jax.tree_util.tree_map(lambda x: -x, _np_weighted(g, w_state)))
    # The extra arg wins over the state.
    upd, _ = tx.update(g, state, params, task_weights=w_arg)
    _assert_tree_close(upd, jax.tree_util.tree_map(lambda x: -x[2].astype(np.float64), g))


def test_transform_errors_are_explicit():
    g = _random_stacked(5)
    tx = rw.relation_weighted_sum()
    with pytest.raises(ValueError, match="task_weights"):
        tx.update(g, tx.init(None))
    with pytest.raises(ValueError, match="task axis"):
        tx.update(g, tx.init(None), task_weights=jnp.ones(K + 1) / (K + 1))
    with pytest.raises(ValueError, match="RelationWeightState"):
        rw.set_weights(optax.sgd(1.0).init({"a": jnp.ones(2)}), jnp.ones(K))


def _quad_loss(params, batch):
    pred = jnp.tanh(batch["x"] @ params["w"] + params["b"])
    return jnp.mean((pred - batch["y"]) ** 2)


def _quad_setup(seed=0):
    rng = np.random.default_rng(seed)
    params = {"w": jnp.asarray(rng.normal(size=(5, 3)), jnp.float32),
              "b": jnp.asarray(rng.normal(size=(3,)), jnp.float32)}
    batches = {"x": jnp.asarray(rng.normal(size=(K, 8, 5)), jnp.float32),
               "y": jnp.asarray(rng.normal(size=(K, 8, 3)), jnp.float32)}
    return params, batches


@pytest.mark.parametrize("task_map", ["vmap", "map", "unroll", "auto"])
def test_per_task_grads_equal_python_loop(task_map):
    params, batches = _quad_setup()
    grads, losses = jax.jit(lambda p, b: rw.per_task_grads(_quad_loss, p, b, task_map=task_map))(
        params, batches)
    for k in range(K):
        bk = jax.tree_util.tree_map(lambda x: x[k], batches)
        lk, gk = jax.value_and_grad(_quad_loss)(params, bk)
        np.testing.assert_allclose(losses[k], lk, rtol=1e-6)
        _assert_tree_close(jax.tree_util.tree_map(lambda x: x[k], grads), gk)


def test_auto_task_map_is_unroll_on_cpu_and_vmap_on_accelerators(monkeypatch):
    assert [rw.resolve_task_map(m) for m in rw.TASK_MAPS] == list(rw.TASK_MAPS)
    for backend, expected in (("cpu", "unroll"), ("gpu", "vmap"), ("tpu", "vmap")):
        monkeypatch.setattr(jax, "default_backend", lambda b=backend: b)
        assert rw.resolve_task_map("auto") == expected
    with pytest.raises(ValueError, match="task_map='pmap' is unknown; use one of auto"):
        rw.map_over_tasks(lambda x: x, jnp.zeros((2, 3)), task_map="pmap")


def test_gradient_weights_top_task_is_the_one_matching_target():
    params, batches = _quad_setup(1)
    grads, _ = rw.per_task_grads(_quad_loss, params, batches)
    for k in range(K):
        target = jax.tree_util.tree_map(lambda x: x[k], grads)
        w = rw.gradient_weights(grads, target, tau=0.1)
        assert int(jnp.argmax(w)) == k
        np.testing.assert_allclose(float(jnp.sum(w)), 1.0, rtol=1e-6)
        # Reference cosine over the concatenation of all leaves, in numpy.
        flat = np.concatenate([np.asarray(grads["b"]), np.asarray(grads["w"]).reshape(K, -1)], 1)
        t = flat[k]
        cos = flat @ t / (np.linalg.norm(flat, axis=1) * np.linalg.norm(t))
        np.testing.assert_allclose(rw.tree_cosine(grads, target), cos, rtol=1e-5, atol=1e-6)
        e = np.exp(cos / 0.1 - np.max(cos / 0.1))
        np.testing.assert_allclose(w, e / e.sum(), rtol=1e-5, atol=1e-7)


def test_gradient_weights_clip_negative():
    g = {"a": jnp.array([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.2], [1.0, 1.0]])}
    target = {"a": jnp.array([1.0, 0.0])}
    w = rw.gradient_weights(g, target, tau=1.0, clip_negative=True)
    cos = np.array([1.0, 0.0, -1.0 / np.sqrt(1.04), 1.0 / np.sqrt(2)])
    # cos <= 0 (tasks 1 and 2) -> exactly zero; softmax over the positive ones.
    e = np.exp(cos[[0, 3]])
    np.testing.assert_allclose(w, [e[0] / e.sum(), 0.0, 0.0, e[1] / e.sum()], rtol=1e-6)
    # Without clipping every task keeps a positive weight.
    assert np.all(np.asarray(rw.gradient_weights(g, target, tau=1.0)) > 0)
    # All non-positive -> uniform fallback.
    w0 = rw.gradient_weights(g, {"a": jnp.array([0.0, -1.0])}, tau=1.0, clip_negative=True)
    cos0 = np.array([0.0, -1.0, -0.2 / np.sqrt(1.04), -1 / np.sqrt(2)])
    assert np.all(cos0 <= 0)
    np.testing.assert_allclose(w0, np.full(K, 0.25), rtol=1e-6)


def test_embedding_weights_hand_check_and_uniform():
    cos = jnp.array([0.9, 0.5, -0.2, 0.0])
    tau = 0.5
    w = rw.embedding_weights(cos, tau)
    # Hand computation: exp(cos/tau) / sum.
    num = [np.exp(1.8), np.exp(1.0), np.exp(-0.4), np.exp(0.0)]
    np.testing.assert_allclose(w, np.array(num) / sum(num), rtol=1e-6)
    wc = rw.embedding_weights(cos, tau, clip_negative=True)
    np.testing.assert_allclose(wc, [np.exp(1.8) / (np.exp(1.8) + np.exp(1.0)),
                                    np.exp(1.0) / (np.exp(1.8) + np.exp(1.0)), 0.0, 0.0],
                               rtol=1e-6)
    u = rw.uniform_weights(7)
    assert u.shape == (7,)
    np.testing.assert_allclose(float(jnp.sum(u)), 1.0, rtol=1e-6)
    np.testing.assert_allclose(u, np.full(7, 1 / 7), rtol=1e-6)
    # Dispatcher agrees with the direct functions and names the bad mode.
    np.testing.assert_allclose(rw.relation_weights("embedding", num_tasks=4, tau=tau,
                                                   target_aux_cos=cos), w)
    np.testing.assert_allclose(rw.relation_weights("uniform", num_tasks=3), np.full(3, 1 / 3))
    with pytest.raises(ValueError, match="relation.mode='bogus'"):
        rw.relation_weights("bogus", num_tasks=3)
