"""DRN training on two-distortion mixtures with soft labels (relation.mix_fraction)."""
import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxsr.degradations import synthesize_tasks
from jaxsr.methods.drtl import relation
from jaxsr.methods.drtl.train import mix_task_batch

NAMES = ["gaussian_blur", "gaussian_noise", "jpeg"]


def test_mixture_is_task_j_on_top_of_row_perm_j_with_half_half_labels():
    """Every mixed sample equals task j applied (same key) to row perm[j]'s sample; its label
    is 0.5 on j and 0.5 on perm[j]; unmixed samples keep their row and a one-hot label."""
    hr = jax.random.uniform(jax.random.key(0), (3, 4, 24, 24, 3))
    lr = synthesize_tasks(NAMES, jax.random.key(1), hr, 2, "same")
    key = jax.random.key(5)
    images, labels = mix_task_batch(NAMES, key, lr, 0.5, 2, "same")
    k_perm, k_syn, k_mask = jax.random.split(key, 3)
    perm = np.asarray(jax.random.permutation(k_perm, 3))
    second = synthesize_tasks(NAMES, k_syn, lr[perm], 2, "same")
    mask = np.asarray(jax.random.bernoulli(k_mask, 0.5, (3, 4)))
    assert 0 < mask.sum() < mask.size
    for j in range(3):
        for b in range(4):
            want = second[j, b] if mask[j, b] else lr[j, b]
            np.testing.assert_array_equal(images[j, b], want)
            expect = np.zeros(3)
            expect[j] += 0.5 if mask[j, b] else 1.0
            expect[perm[j]] += 0.5 if mask[j, b] else 0.0
            np.testing.assert_allclose(labels[j, b], expect)


def test_soft_label_loss_matches_hand_cross_entropy_and_one_hot_equals_integer():
    logits = jnp.array([[2.0, 0.0, -1.0], [0.5, 1.5, 0.0]])
    soft = jnp.array([[0.5, 0.5, 0.0], [0.0, 1.0, 0.0]])
    logp = logits - np.log(np.exp(np.asarray(logits)).sum(-1, keepdims=True))
    hand = -np.mean(np.sum(np.asarray(soft) * np.asarray(logp), -1))
    loss, acc = relation._ce_and_accuracy(logits, soft)
    np.testing.assert_allclose(loss, hand, rtol=1e-6)
    assert float(acc) == 1.0         # argmaxes 0 and 1 are components of their mixtures
    ints = jnp.array([0, 1])
    l_int, a_int = relation._ce_and_accuracy(logits, ints)
    l_hot, a_hot = relation._ce_and_accuracy(logits, jax.nn.one_hot(ints, 3))
    np.testing.assert_allclose(l_int, l_hot, rtol=1e-6)
    assert float(a_int) == float(a_hot) == 1.0
    _, a_miss = relation._ce_and_accuracy(logits, jnp.array([[0.0, 0.5, 0.5], [1.0, 0, 0]]))
    assert float(a_miss) == 0.0
