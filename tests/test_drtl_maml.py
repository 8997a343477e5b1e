"""Second-order MAML over a real tiny Flax conv model (jaxsr.methods.drtl.maml).

Gradient checks run in float64 (inside `jax.enable_x64(True)`) against central finite differences
of the full MAML objective, inner loop included.
"""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxsr.methods.drtl import maml

K = 3
INNER_LR = 0.2
STEPS = 3


class TinyConvNet(nn.Module):
    """3 conv layers of width 4, tanh, residual output: (B, 8, 8, 3) -> (B, 8, 8, 3)."""
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x):
        kw = dict(kernel_size=(3, 3), padding="SAME", dtype=self.dtype, param_dtype=self.dtype)
        h = jnp.tanh(nn.Conv(4, **kw)(x))
        h = jnp.tanh(nn.Conv(4, **kw)(h))
        return x + nn.Conv(3, **kw)(h)


def _setup(dtype, seed=0):
    """Model, params, support and query batches (leading task axis K) and the MSE loss.

    Params and data are drawn with numpy into the Flax param structure (from `jax.eval_shape`):
    compiling Flax's jax.random initialisers costs seconds of CPU on this machine.
    """
    model = TinyConvNet(dtype=dtype)
    rng = np.random.default_rng(seed)
    shapes = jax.eval_shape(model.init, jax.random.PRNGKey(0), jnp.zeros((1, 8, 8, 3), dtype))
    # LeCun-normal kernels (fan_in = 3*3*C_in), small random biases.
    params = jax.tree_util.tree_map(
        lambda s: jnp.asarray(rng.normal(size=s.shape) / np.sqrt(np.prod(s.shape[:-1]))
                              if len(s.shape) > 1 else 0.1 * rng.normal(size=s.shape), dtype),
        shapes)

    def batch():
        x = rng.uniform(size=(K, 2, 8, 8, 3))
        # Per-task target: a different gain of the channel-reversed input plus noise.
        a = np.linspace(0.5, 1.5, K)[:, None, None, None, None]
        y = a * x[..., ::-1] + 0.1 * rng.normal(size=x.shape)
        return {"x": jnp.asarray(x, dtype), "y": jnp.asarray(y, dtype)}

    support, query = batch(), batch()

    def loss_fn(p, b):
        return jnp.mean((model.apply(p, b["x"]) - b["y"]) ** 2)

    return model, params, support, query, loss_fn


def _task(tree, k):
    return jax.tree_util.tree_map(lambda x: x[k], tree)


def _tree_rel_diff(a, b):
    """||a - b|| / ||b|| over all leaves, in numpy float64 (no float32 truncation)."""
    la = [np.asarray(x, np.float64) for x in jax.tree_util.tree_leaves(a)]
    lb = [np.asarray(y, np.float64) for y in jax.tree_util.tree_leaves(b)]
    assert [x.shape for x in la] == [y.shape for y in lb]
    num = sum(np.sum((x - y) ** 2) for x, y in zip(la, lb))
    den = sum(np.sum(y ** 2) for y in lb)
    return float(np.sqrt(num / den))


def _task_dyn(tree, k):
    """Task k of a stacked pytree with a traced index (one compile for every k)."""
    return jax.tree_util.tree_map(lambda x: jax.lax.dynamic_index_in_dim(x, k, keepdims=False),
                                  tree)


@pytest.fixture(scope="module")
def x64():
    """Float64 problem and its (vmapped, second-order) meta-gradients, shared by the tests."""
    with jax.enable_x64(True):
        _, params, sup, qry, loss_fn = _setup(jnp.float64, seed=0)
        assert all(x.dtype == jnp.float64 for x in jax.tree_util.tree_leaves(params))
        so = jax.jit(lambda p: maml.meta_grads(loss_fn, p, sup, qry, inner_lr=INNER_LR,
                                               num_inner_steps=STEPS))(params)
    return {"params": params, "sup": sup, "qry": qry, "loss_fn": loss_fn,
            "so": jax.tree_util.tree_map(np.asarray, so)}


def _variant(x64, **o):
    """meta_grads on the float64 problem with options `o` (call inside enable_x64)."""
    sup, qry, loss_fn = x64["sup"], x64["qry"], x64["loss_fn"]
    return jax.jit(lambda p: maml.meta_grads(loss_fn, p, sup, qry, inner_lr=INNER_LR,
                                             num_inner_steps=STEPS, **o))(x64["params"])


def test_second_order_meta_grad_matches_finite_differences_float64(x64):
    g_so, losses = x64["so"]
    with jax.enable_x64(True):
        params, sup, qry, loss_fn = x64["params"], x64["sup"], x64["qry"], x64["loss_fn"]
        # Full MAML objective of task k (inner loop included), for many shifted params at once.
        objective = jax.jit(jax.vmap(lambda p, k: maml.maml_task_loss(
            loss_fn, p, _task_dyn(sup, k), _task_dyn(qry, k), inner_lr=INNER_LR,
            num_inner_steps=STEPS), in_axes=(0, 0)))
        eps = 1e-6
        n_dir = 3
        # n_dir random directions per task, all evaluated in one vmapped call.
        rng = np.random.default_rng(7)
        ks = jnp.asarray(np.repeat(np.arange(K), n_dir))
        v = jax.tree_util.tree_map(
            lambda x: jnp.asarray(rng.normal(size=(len(ks),) + x.shape)), params)
        plus = objective(jax.tree_util.tree_map(lambda p, t: p + eps * t, params, v), ks)
        minus = objective(jax.tree_util.tree_map(lambda p, t: p - eps * t, params, v), ks)
        fd = np.asarray((plus - minus) / (2 * eps))
        unshifted = objective(jax.tree_util.tree_map(lambda p, t: p + 0 * t, params, v), ks)
    np.testing.assert_allclose(unshifted, losses[np.asarray(ks)], rtol=1e-12)
    ad = np.array([sum(np.vdot(g[k], t[i]) for g, t in zip(jax.tree_util.tree_leaves(g_so),
                                                            jax.tree_util.tree_leaves(v)))
                   for i, k in enumerate(np.asarray(ks))])
    rel = np.abs(fd - ad) / np.abs(fd)
    print("FD vs second-order meta-grad, relative errors:", rel)
    assert rel.max() < 1e-6


@pytest.mark.parametrize("hessian", ["hvp", "autodiff"])
def test_first_order_differs_from_second_and_equals_grad_at_adapted_params(x64, hessian):
    g_so, _ = x64["so"]
    sup, qry, loss_fn = x64["sup"], x64["qry"], x64["loss_fn"]
    with jax.enable_x64(True):
        g_fo, l_fo = _variant(x64, first_order=True, hessian=hessian)

        @jax.jit
        def grad_at_adapted(p, k):
            adapted = maml.inner_adapt(loss_fn, p, _task_dyn(sup, k), INNER_LR, STEPS)
            return (jax.value_and_grad(loss_fn)(adapted, _task_dyn(qry, k)),
                    loss_fn(p, _task_dyn(qry, k)))

        ref = [grad_at_adapted(x64["params"], k) for k in range(K)]
    for k in range(K):
        (lq, gq), l_pre = ref[k]
        assert lq < l_pre  # the inner loop does adapt (query loss drops)
        np.testing.assert_allclose(l_fo[k], lq, rtol=1e-12)
        assert _tree_rel_diff(_task(g_fo, k), gq) < 1e-12
        diff = _tree_rel_diff(_task(g_fo, k), _task(g_so, k))
        print(f"task {k}: |g_FO - g_SO| / |g_SO| = {diff:.3e}")
        assert diff > 1e-2


def test_zero_inner_steps_is_plain_query_gradient():
    _, params, sup, qry, loss_fn = _setup(jnp.float32, seed=5)
    g0, l0 = jax.jit(lambda p: maml.meta_grads(loss_fn, p, sup, qry, inner_lr=INNER_LR,
                                               num_inner_steps=0))(params)
    query_vg = jax.jit(jax.value_and_grad(loss_fn))
    for k in range(K):
        lk, gk = query_vg(params, _task(qry, k))
        np.testing.assert_allclose(l0[k], lk, rtol=1e-6)
        assert _tree_rel_diff(_task(g0, k), gk) < 1e-6


def test_inner_adapt_equals_manual_sgd_loop():
    with jax.enable_x64(True):
        _, params, sup, _, loss_fn = _setup(jnp.float64, seed=2)
        s0 = _task(sup, 0)
        p = params
        grad = jax.jit(jax.grad(loss_fn))
        for _ in range(STEPS):
            g = grad(p, s0)
            p = jax.tree_util.tree_map(lambda a, b: a - INNER_LR * b, p, g)
        adapted = jax.jit(lambda q: maml.inner_adapt(loss_fn, q, s0, INNER_LR, STEPS))(params)
        assert _tree_rel_diff(adapted, p) < 1e-13
        assert loss_fn(adapted, s0) < loss_fn(params, s0)


def test_vmap_equals_python_loop_over_tasks(x64):
    g_vmap, l_vmap = x64["so"]
    sup, qry, loss_fn = x64["sup"], x64["qry"], x64["loss_fn"]
    with jax.enable_x64(True):
        # One task at a time (traced task index: one compile for every k).
        task_vg = jax.jit(jax.value_and_grad(lambda p, k: maml.maml_task_loss(
            loss_fn, p, _task_dyn(sup, k), _task_dyn(qry, k), inner_lr=INNER_LR,
            num_inner_steps=STEPS)))
        loop = [task_vg(x64["params"], k) for k in range(K)]
    for k in range(K):
        lk, gk = loop[k]
        np.testing.assert_allclose(l_vmap[k], lk, rtol=1e-12)
        assert _tree_rel_diff(_task(g_vmap, k), gk) < 1e-10


@pytest.mark.parametrize(
    "option", [{"task_map": "map"}, {"task_map": "unroll"}, {"hessian": "autodiff"},
               {"hessian": "autodiff", "remat": True}, {"hessian": "autodiff", "task_map": "map"},
               {"hessian": "autodiff", "task_map": "unroll"}],
    ids=["lax_map", "unroll", "autodiff", "autodiff_remat", "autodiff_lax_map", "autodiff_unroll"])
def test_task_maps_and_hessian_modes_equal_vmap_hvp(x64, option):
    """The fixture's meta-gradients (vmap, hessian='hvp') against every other way to compute them:
    'autodiff' differentiates through the lax.scan inner loop, an independent computation."""
    g_vmap, l_vmap = x64["so"]
    with jax.enable_x64(True):
        g, l = _variant(x64, **option)
    np.testing.assert_allclose(l, l_vmap, rtol=1e-12)
    assert _tree_rel_diff(g, g_vmap) < 1e-10


def test_meta_config_errors_and_defaults():
    assert maml.meta_config(None) == maml.MetaConfig()
    assert maml.meta_config({"num_inner_steps": 2}).num_inner_steps == 2
    with pytest.raises(ValueError, match="task_map='pmap'"):
        maml.meta_config({"task_map": "pmap"})
    with pytest.raises(ValueError, match="hessian='exact'"):
        maml.meta_config({"hessian": "exact"})
