"""CRL-SR's contrastive terms as the method composes them, against numpy references:
L_bc (bidirectional, both sides' other positions as negatives) and L_srnce (LR-side features as
negatives, with and without the other positions); symmetry; minimal when features match."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxsr.losses import bidirectional_patch_nce
from jaxsr.methods.crl.train import srnce_loss


def _norm(x):
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def _ce(pos, negs):
    """-log(exp(pos) / (exp(pos) + sum exp(negs))) in float64."""
    logits = np.concatenate([[pos], negs])
    m = logits.max()
    return float(np.log(np.exp(logits - m).sum()) + m - pos)


def np_bc(a, b, tau):
    a, b = _norm(a.astype(np.float64)), _norm(b.astype(np.float64))
    out = []
    for q_side, k_side in ((a, b), (b, a)):
        vals = []
        for n in range(a.shape[0]):
            m = a.shape[1]
            for i in range(m):
                q = q_side[n, i]
                negs = [q @ k_side[n, j] for j in range(m) if j != i]
                negs += [q @ q_side[n, j] for j in range(m) if j != i]
                vals.append(_ce(q @ k_side[n, i] / tau, np.array(negs) / tau))
        out.append(np.mean(vals))
    return 0.5 * (out[0] + out[1])


def np_srnce(q, k, lr_side, tau, position_negatives):
    q, k, lr_side = (_norm(x.astype(np.float64)) for x in (q, k, lr_side))
    vals = []
    for n in range(q.shape[0]):
        m = q.shape[1]
        for i in range(m):
            negs = [q[n, i] @ lr_side[n, j] for j in range(m)]       # same position included
            if position_negatives:
                negs += [q[n, i] @ k[n, j] for j in range(m) if j != i]
            vals.append(_ce(q[n, i] @ k[n, i] / tau, np.array(negs) / tau))
    return float(np.mean(vals))


@pytest.fixture
def feats():
    rng = np.random.default_rng(0)
    return [rng.normal(size=(2, 5, 4)).astype(np.float32) for _ in range(3)]


def test_bidirectional_loss_matches_numpy_and_is_symmetric(feats):
    a, b, _ = feats
    got = float(bidirectional_patch_nce(jnp.asarray(a), jnp.asarray(b), 0.5))
    assert got == pytest.approx(np_bc(a, b, 0.5), rel=1e-5)
    assert got == pytest.approx(float(bidirectional_patch_nce(jnp.asarray(b), jnp.asarray(a),
                                                              0.5)), rel=1e-6)


def test_bidirectional_loss_is_minimal_when_the_two_sides_match(feats):
    """Matching, mutually orthogonal features give the analytic value
    log(1 + 2 (M - 1) e^(-1/tau)); moving one side away (any direction) or unrelated features
    cost more."""
    m, tau = 4, 0.1
    a = np.eye(m, dtype=np.float32)[None].repeat(2, 0)                   # (2, M, D = M)
    match = float(bidirectional_patch_nce(jnp.asarray(a), jnp.asarray(a), tau))
    assert match == pytest.approx(np.log(1 + 2 * (m - 1) * np.exp(-1 / tau)), abs=2e-6)
    rng = np.random.default_rng(1)
    for scale in (0.05, 0.3, 1.0):
        for _ in range(3):
            other = a + scale * rng.normal(size=a.shape).astype(np.float32)
            assert match < float(bidirectional_patch_nce(jnp.asarray(a), jnp.asarray(other), tau))
    b = feats[1][:, :m]
    assert match < float(bidirectional_patch_nce(jnp.asarray(a), jnp.asarray(b), tau))


@pytest.mark.parametrize("position_negatives", [True, False])
def test_srnce_matches_numpy(feats, position_negatives):
    q, k, lr = feats
    got = float(srnce_loss(jnp.asarray(q), jnp.asarray(k), jnp.asarray(lr), 0.3,
                           position_negatives))
    assert got == pytest.approx(np_srnce(q, k, lr, 0.3, position_negatives), rel=1e-5)


def test_srnce_rewards_sr_close_to_hr_and_far_from_lr(feats):
    """Lower when the SR embedding equals the HR one than when it equals the LR-side one."""
    q, k, lr = feats
    at_hr = float(srnce_loss(jnp.asarray(k), jnp.asarray(k), jnp.asarray(lr), 0.1))
    at_lr = float(srnce_loss(jnp.asarray(lr), jnp.asarray(k), jnp.asarray(lr), 0.1))
    assert at_hr < at_lr
    grads = jax.grad(lambda x: srnce_loss(x, jnp.asarray(k), jnp.asarray(lr), 0.1))(
        jnp.asarray(q))
    assert np.all(np.isfinite(np.asarray(grads))) and np.abs(np.asarray(grads)).sum() > 0
