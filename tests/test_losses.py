"""jaxsr.losses against independent float64 numpy references, plus the invariants they must keep.

The references below are written from the definitions (loops where that is clearer), never by
calling jaxsr.
"""
import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxsr import losses

TOL = dict(rtol=1e-5, atol=1e-5)


def call(fn, *arrays, **options):
    """fn(*arrays, **options) compiled as one program: much faster on CPU than eager dispatch,
    which compiles every primitive separately (eager is covered by test_jit_gives_the_eager_values).
    """
    return jax.jit(functools.partial(fn, **options))(*arrays)


def _rand(seed, *shape):
    return np.random.default_rng(seed).normal(size=shape).astype(np.float32)


# --------------------------------------------------------------------------- numpy references
def np_normalize(x, eps=1e-8):
    x = np.asarray(x, np.float64)
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), eps)


def np_cross_entropy_first(logits):
    """-log softmax(logits)[0] for one 1-D row of logits, in float64."""
    logits = np.asarray(logits, np.float64)
    top = logits.max()
    return top + math.log(np.sum(np.exp(logits - top))) - logits[0]


def np_info_nce(q, pos, neg, temperature, normalize):
    q, pos, neg = (np_normalize(x) if normalize else np.asarray(x, np.float64)
                   for x in (q, pos, neg))
    if neg.ndim == 2:
        neg = np.broadcast_to(neg, (q.shape[0],) + neg.shape)
    rows = []
    for n in range(q.shape[0]):
        logits = [q[n] @ pos[n]] + [q[n] @ k for k in neg[n]]
        rows.append(np_cross_entropy_first(np.array(logits) / temperature))
    return np.mean(rows)


def np_patch_nce(q, k, temperature, normalize, extra=None, query_side=False):
    """Loop over images b and positions i, listing the negatives one by one."""
    prep = np_normalize if normalize else (lambda x: np.asarray(x, np.float64))
    q, k = prep(q), prep(k)
    extra = None if extra is None else prep(extra)
    batch, num, _ = q.shape
    rows = []
    for b in range(batch):
        for i in range(num):
            logits = [q[b, i] @ k[b, i]]
            logits += [q[b, i] @ k[b, j] for j in range(num) if j != i]
            if query_side:
                logits += [q[b, i] @ q[b, j] for j in range(num) if j != i]
            if extra is not None:
                logits += [q[b, i] @ e for e in extra[b]]
            rows.append(np_cross_entropy_first(np.array(logits) / temperature))
    return np.mean(rows)


def np_gram(f, normalize):
    f = np.asarray(f, np.float64)
    _, h, w, c = f.shape
    return np.einsum("bhwc,bhwd->bcd", f, f) / (h * w * (c if normalize == "chw" else 1))


# --------------------------------------------------------------------------- pixel losses
@pytest.mark.parametrize("kind", ["l1", "l2", "charbonnier"])
def test_pixel_loss_matches_numpy(kind):
    pred, target = _rand(0, 2, 8, 8, 3), _rand(1, 2, 8, 8, 3)
    d = pred.astype(np.float64) - target
    expected = {"l1": np.mean(np.abs(d)), "l2": np.mean(d ** 2),
                "charbonnier": np.mean(np.sqrt(d ** 2 + 1e-6))}[kind]
    np.testing.assert_allclose(losses.pixel_loss(pred, target, kind), expected, **TOL)


def test_pixel_loss_unknown_kind_names_the_config_field():
    x = jnp.zeros((1, 4, 4, 3))
    with pytest.raises(ValueError, match=r"config\.train\.loss='huber' is unknown"):
        losses.pixel_loss(x, x, "huber")


def test_mse_matches_numpy():
    a, b = _rand(0, 3, 5), _rand(1, 3, 5)
    expected = np.mean((a.astype(np.float64) - b) ** 2)
    np.testing.assert_allclose(call(losses.mse, a, b), expected, **TOL)


# --------------------------------------------------------------------------- cosine similarity
def test_cosine_similarity_map_matches_a_pixel_loop():
    a, b = _rand(0, 2, 3, 4, 5), _rand(1, 2, 3, 4, 5)
    expected = np.zeros((2, 3, 4))
    for idx in np.ndindex(2, 3, 4):
        u, v = a[idx].astype(np.float64), b[idx].astype(np.float64)
        expected[idx] = u @ v / (np.linalg.norm(u) * np.linalg.norm(v))
    got = call(losses.cosine_similarity_map, a, b)
    assert got.shape == (2, 3, 4) and got.dtype == jnp.float32
    np.testing.assert_allclose(got, expected, **TOL)
    np.testing.assert_allclose(call(losses.mean_cosine_similarity, a, b),
                               expected.mean(axis=(1, 2)), **TOL)


def test_cosine_similarity_map_of_scaled_and_negated_copies():
    x = _rand(2, 2, 4, 4, 3)
    ones = np.ones((2, 4, 4))
    np.testing.assert_allclose(call(losses.cosine_similarity_map, x, 2 * x), ones, **TOL)
    np.testing.assert_allclose(call(losses.cosine_similarity_map, x, -x), -ones, **TOL)
    np.testing.assert_allclose(call(losses.mean_cosine_similarity, x, 2 * x), np.ones(2), **TOL)


# --------------------------------------------------------------------------- InfoNCE
def test_positive_first_cross_entropy_matches_numpy_and_is_stable():
    logits = _rand(0, 4, 6) * 50.0                       # large logits: a naive exp would overflow
    expected = np.mean([np_cross_entropy_first(row) for row in logits])
    np.testing.assert_allclose(call(losses.positive_first_cross_entropy, logits), expected, **TOL)
    assert np.isfinite(call(losses.positive_first_cross_entropy, logits * 100.0))


@pytest.mark.parametrize("normalize", [True, False])
@pytest.mark.parametrize("shared", [True, False])
def test_info_nce_matches_numpy(normalize, shared):
    q, pos = _rand(0, 4, 8), _rand(1, 4, 8)
    neg = _rand(2, 6, 8) if shared else _rand(2, 4, 6, 8)
    temperature = 0.07 if normalize else 2.0             # raw dot products need a milder scale
    expected = np_info_nce(q, pos, neg, temperature, normalize)
    np.testing.assert_allclose(call(losses.info_nce, q, pos, neg, temperature=temperature,
                                    normalize=normalize), expected, **TOL)


def test_info_nce_shared_negatives_equal_broadcast_per_query_negatives():
    q, pos, queue = _rand(0, 4, 8), _rand(1, 4, 8), _rand(2, 6, 8)
    per_query = np.broadcast_to(queue, (4, 6, 8))
    np.testing.assert_allclose(call(losses.info_nce, q, pos, queue),
                               call(losses.info_nce, q, pos, per_query),
                               rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("normalize", [True, False])
def test_info_nce_is_log_one_plus_m_when_all_similarities_are_equal(normalize):
    num_neg = 7
    q, k = _rand(0, 3, 8), _rand(1, 8)
    pos = np.broadcast_to(k, (3, 8))
    neg = np.broadcast_to(k, (num_neg, 8))
    loss = call(losses.info_nce, q, pos, neg, temperature=0.5, normalize=normalize)
    np.testing.assert_allclose(loss, math.log(1 + num_neg), **TOL)


def test_info_nce_decreases_as_the_query_moves_toward_the_positive():
    # Negatives orthogonal to the plane of q0 and k+: along q0 -> k+ only the cosine to the
    # positive changes, and it grows monotonically, so the loss must fall at every step.
    q0, pos = np.eye(16, dtype=np.float32)[:1], _rand(1, 1, 16)
    pos[:, 2:] = 0.0
    neg = _rand(2, 10, 16)
    neg[:, :2] = 0.0
    path = np.stack([(1 - t) * q0 + t * pos for t in np.linspace(0.0, 1.0, 6)])  # (6, 1, 16)
    values = np.asarray(jax.jit(jax.vmap(lambda q: losses.info_nce(q, pos, neg)))(path))
    assert np.all(np.diff(values) < 0), values
    # With generic random negatives too, the positive itself as query beats a random query.
    neg = _rand(3, 10, 16)
    assert call(losses.info_nce, pos, pos, neg) < call(losses.info_nce, _rand(4, 1, 16), pos, neg)


def test_info_nce_rejects_negatives_of_the_wrong_rank():
    with pytest.raises(ValueError, match=r"\(N, M, D\) per-query negatives or \(M, D\) shared"):
        losses.info_nce(jnp.ones((2, 4)), jnp.ones((2, 4)), jnp.ones((4,)))


# --------------------------------------------------------------------------- spatial sampling
def test_sample_positions_are_distinct_in_range_and_deterministic_per_key():
    sample = jax.jit(losses.sample_positions, static_argnums=(1, 2, 3))
    key = jax.random.key(0)
    every = np.asarray(sample(key, 6, 5, 30))
    assert every.shape == (30,) and every.dtype == np.int32
    assert sorted(every.tolist()) == list(range(30))       # all positions, each exactly once
    few = np.asarray(sample(key, 16, 16, 20))
    assert len(set(few.tolist())) == 20 and few.min() >= 0 and few.max() < 256
    np.testing.assert_array_equal(sample(key, 16, 16, 20), few)
    assert not np.array_equal(sample(jax.random.key(1), 16, 16, 20), few)
    np.testing.assert_array_equal(losses.sample_positions(key, 16, 16, 20), few)   # eager == jit


def test_sample_positions_rejects_more_positions_than_the_map_has():
    with pytest.raises(ValueError, match="num=17"):
        losses.sample_positions(jax.random.key(0), 4, 4, 17)


def test_gather_positions_matches_numpy_indexing():
    feats = _rand(0, 2, 4, 5, 3)
    idx = np.array([0, 7, 19, 3], np.int32)
    rows, cols = idx // 5, idx % 5
    got = call(losses.gather_positions, feats, idx)
    assert got.shape == (2, 4, 3) and got.dtype == jnp.float32
    np.testing.assert_array_equal(got, feats[:, rows, cols, :])


# --------------------------------------------------------------------------- patch-wise InfoNCE
@pytest.mark.parametrize("normalize", [True, False])
@pytest.mark.parametrize("with_extra", [False, True])
def test_patch_info_nce_matches_a_numpy_loop(normalize, with_extra):
    q, k = _rand(0, 2, 5, 6), _rand(1, 2, 5, 6)
    extra = _rand(2, 2, 3, 6) if with_extra else None
    temperature = 0.07 if normalize else 2.0
    expected = np_patch_nce(q, k, temperature, normalize, extra=extra)
    got = call(losses.patch_info_nce, q, k, temperature=temperature, normalize=normalize,
               negatives=extra)
    np.testing.assert_allclose(got, expected, **TOL)


def test_patch_info_nce_is_near_zero_for_equal_orthogonal_features_at_low_temperature():
    # Each position a different orthogonal direction, query == key: only the positive scores 1.
    # Were the diagonal not excluded, the positive would also count as a negative: loss >= log 2.
    feats = np.stack([np.eye(8)[:5] * s for s in (1.0, 3.0)]).astype(np.float32)    # (2, 5, 8)
    loss = float(call(losses.patch_info_nce, feats, feats, temperature=0.01))
    assert 0.0 <= loss < 1e-6, loss
    assert float(call(losses.patch_info_nce, feats, -feats, temperature=0.01)) > 1.0


def test_patch_info_nce_gradient_is_finite_and_matches_finite_differences():
    q, k = _rand(0, 1, 4, 3), _rand(1, 1, 4, 3)
    grad = jax.jit(jax.grad(lambda x: losses.patch_info_nce(x, k, 0.5)))(q)
    assert np.all(np.isfinite(grad))
    direction = _rand(2, 1, 4, 3)
    h = 1e-3
    fd = (np_patch_nce(q + h * direction, k, 0.5, True)
          - np_patch_nce(q - h * direction, k, 0.5, True)) / (2 * h)
    np.testing.assert_allclose(np.sum(grad * direction), fd, rtol=1e-3, atol=1e-4)


@pytest.mark.parametrize("normalize", [True, False])
def test_bidirectional_patch_nce_matches_the_mean_of_two_numpy_directions(normalize):
    a, b = _rand(0, 2, 5, 6), _rand(1, 2, 5, 6)
    temperature = 0.1 if normalize else 2.0
    expected = 0.5 * (np_patch_nce(a, b, temperature, normalize, query_side=True)
                      + np_patch_nce(b, a, temperature, normalize, query_side=True))
    got = call(losses.bidirectional_patch_nce, a, b, temperature=temperature,
               normalize=normalize)
    np.testing.assert_allclose(got, expected, **TOL)


def test_bidirectional_patch_nce_is_symmetric():
    a, b = _rand(0, 3, 7, 4), _rand(1, 3, 7, 4)
    ab = call(losses.bidirectional_patch_nce, a, b, temperature=0.07)
    ba = call(losses.bidirectional_patch_nce, b, a, temperature=0.07)
    np.testing.assert_allclose(ab, ba, rtol=1e-7, atol=0)


# --------------------------------------------------------------------------- Gram / style
@pytest.mark.parametrize("normalize", ["chw", "hw"])
def test_gram_matrix_matches_einsum(normalize):
    f = _rand(0, 2, 4, 3, 5)
    got = call(losses.gram_matrix, f, normalize=normalize)
    assert got.shape == (2, 5, 5)
    np.testing.assert_allclose(got, np_gram(f, normalize), **TOL)


def test_gram_matrix_rejects_unknown_normalization():
    with pytest.raises(ValueError, match="normalize='c'"):
        losses.gram_matrix(jnp.ones((1, 2, 2, 3)), "c")


def test_code_gram_is_z_zt_over_dim_times_batch():
    z = _rand(0, 4, 6).astype(np.float64)
    expected = np.array([[z[i] @ z[j] for j in range(4)] for i in range(4)]) / (6 * 4)
    np.testing.assert_allclose(call(losses.code_gram, z.astype(np.float32)), expected, **TOL)


def test_style_loss_matches_numpy_and_is_zero_for_identical_inputs():
    fa, fb = _rand(0, 2, 4, 4, 3), _rand(1, 2, 4, 4, 3)
    expected = np.mean((np_gram(fa, "chw") - np_gram(fb, "chw")) ** 2)
    np.testing.assert_allclose(call(losses.style_loss, fa, fb), expected, rtol=1e-5, atol=1e-7)
    assert float(losses.style_loss(fa, fa)) == 0.0
    assert float(call(losses.style_loss, fa, fa)) < 1e-12   # XLA may round the two Grams apart


# --------------------------------------------------------------------------- jit == eager
_JIT_CASES = {
    "pixel_loss": (functools.partial(losses.pixel_loss, kind="charbonnier"),
                   (_rand(0, 1, 4, 4, 3), _rand(1, 1, 4, 4, 3))),
    "mean_cosine_similarity": (losses.mean_cosine_similarity,
                               (_rand(0, 2, 3, 3, 4), _rand(1, 2, 3, 3, 4))),
    "info_nce": (losses.info_nce, (_rand(0, 3, 4), _rand(1, 3, 4), _rand(2, 5, 4))),
    "gather_positions": (losses.gather_positions, (_rand(0, 2, 3, 3, 4), np.array([4, 0, 8]))),
    "patch_info_nce": (losses.patch_info_nce,
                       (_rand(0, 2, 4, 3), _rand(1, 2, 4, 3), 0.1, True, _rand(2, 2, 2, 3))),
    "bidirectional_patch_nce": (losses.bidirectional_patch_nce,
                                (_rand(0, 2, 4, 3), _rand(1, 2, 4, 3), 0.1)),
    "code_gram": (losses.code_gram, (_rand(0, 3, 4),)),
    "style_loss": (losses.style_loss, (_rand(0, 1, 3, 3, 2), _rand(1, 1, 3, 3, 2))),
}


@pytest.mark.parametrize("name", sorted(_JIT_CASES))
def test_jit_gives_the_eager_values(name):
    fn, args = _JIT_CASES[name]
    static = [i for i, a in enumerate(args) if isinstance(a, bool)]
    np.testing.assert_allclose(jax.jit(fn, static_argnums=static)(*args), fn(*args),
                               rtol=1e-6, atol=1e-6)
