"""Schedules from config against hand-computed learning rates."""
import math

import ml_collections
import numpy as np
import pytest

from jaxsr.train.optim import make_optimizer, make_schedule


def cfg(**kw):
    base = dict(name="adam", lr=1.0, schedule="constant", warmup_steps=0)
    base.update(kw)
    return ml_collections.ConfigDict(base)


def test_multistep_halves_at_milestones():
    s = make_schedule(cfg(schedule="multistep", milestones=(0.5, 0.75), gamma=0.5), 100)
    assert [float(s(t)) for t in (0, 49, 50, 74, 75, 99)] == [1, 1, 0.5, 0.5, 0.25, 0.25]


def test_cosine_with_warmup():
    s = make_schedule(cfg(schedule="cosine", warmup_steps=10, min_lr_ratio=0.0), 110)
    assert float(s(0)) == pytest.approx(0.1)
    assert float(s(10)) == pytest.approx(1.0)
    assert float(s(60)) == pytest.approx(0.5 * (1 + math.cos(math.pi * 0.5)), abs=1e-6)


def test_cosine_restarts_return_to_peak():
    s = make_schedule(cfg(schedule="cosine_restarts", restarts=2, min_lr_ratio=0.0), 100)
    assert float(s(0)) == pytest.approx(1.0)
    assert float(s(49)) < 0.01
    assert float(s(50)) == pytest.approx(1.0)


def test_unknown_names_raise():
    with pytest.raises(ValueError, match="schedule"):
        make_schedule(cfg(schedule="linear"), 10)
    with pytest.raises(ValueError, match="optim.name"):
        make_optimizer(cfg(name="lamb"), 10)


def test_adam_first_step_is_lr_times_sign():
    import jax.numpy as jnp
    opt, _ = make_optimizer(cfg(lr=0.1), 10)
    params = {"w": jnp.array([1.0, -2.0])}
    updates, _ = opt.update({"w": jnp.array([3.0, -0.5])}, opt.init(params), params)
    np.testing.assert_allclose(updates["w"], [-0.1, 0.1], rtol=1e-5)
