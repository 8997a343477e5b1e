"""conv_same's hand-written backward pass (used in scanned blocks on CPU) equals JAX's autodiff
of the same convolution, dense and depthwise, for every odd kernel size the models use."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxsr.models.common import _conv_same, conv_same


@pytest.mark.parametrize("k, groups", [(1, 1), (3, 1), (5, 1), (3, "depthwise"), (7, "depthwise")])
def test_value_and_gradients_equal_autodiff(k, groups):
    rng = np.random.default_rng(k)
    x = jnp.asarray(rng.standard_normal((2, 9, 7, 6)), jnp.float32)
    g = 6 if groups == "depthwise" else 1
    w = jnp.asarray(rng.standard_normal((k, k, 6 // g, 5 if g == 1 else 6)), jnp.float32)
    t = jnp.asarray(rng.standard_normal((2, 9, 7, w.shape[-1])), jnp.float32)

    def loss(fn):
        return lambda x, w: jnp.sum(jnp.sin(fn(x, w, g)) * t)
    np.testing.assert_allclose(conv_same(x, w, g), _conv_same(x, w, g), rtol=0, atol=0)
    got = jax.grad(loss(conv_same), argnums=(0, 1))(x, w)
    want = jax.grad(loss(_conv_same), argnums=(0, 1))(x, w)
    for a, b in zip(got, want):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=1e-4)
    assert float(jnp.abs(got[1]).max()) > 0.1


def test_gradients_inside_a_scan_equal_autodiff():
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.standard_normal((1, 8, 8, 4)), jnp.float32)
    ws = jnp.asarray(rng.standard_normal((3, 3, 3, 4, 4)) * 0.3, jnp.float32)

    def net(fn):
        def f(ws):
            y, _ = jax.lax.scan(lambda h, w: (jnp.tanh(fn(h, w, 1)) + h, None), x, ws)
            return jnp.sum(y ** 2)
        return f
    np.testing.assert_allclose(np.asarray(jax.grad(net(conv_same))(ws)),
                               np.asarray(jax.grad(net(_conv_same))(ws)), rtol=1e-4, atol=1e-4)
