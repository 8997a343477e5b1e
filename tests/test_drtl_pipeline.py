"""DRTL pipeline end to end (tiny config on the shipped real samples) and its train steps."""
import json
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxsr.config_util import load_config_file, override
from jaxsr.degradations import synthesize_tasks
from jaxsr.methods.drtl import steps as drtl_steps
from jaxsr.methods.drtl import train as drtl_train
from jaxsr.methods.drtl.reweight import get_weights, relation_weighted_sum
from jaxsr.model_factory import build_model, init_params
from jaxsr.losses import pixel_loss
from jaxsr.train.state import create_state, step_key

REPO = pathlib.Path(__file__).resolve().parents[1]
TASKS = ("bicubic", "gaussian_blur", "gaussian_noise")


def drtl_config(variant="tiny", **overrides):
    """configs/drtl.py:<variant> with `dotted.key=value` overrides."""
    config = load_config_file(str(REPO / "configs" / "drtl.py"), variant)
    for dotted, value in overrides.items():
        override(config, dotted, value)
    return config


def test_tiny_drtl_p_end_to_end_and_resume(tmp_path):
    config = drtl_config()
    summary = drtl_train.train_and_evaluate(config, str(tmp_path))
    graph = json.loads((tmp_path / "relation_graph.json").read_text())
    names = list(config.drtl.tasks)
    assert graph["task_names"] == names and graph["mode"] == "embedding"
    w = np.asarray(graph["weights"])
    assert w.shape == (len(names),) and np.isclose(w.sum(), 1.0) and (w > 0).all()
    # Embedding weights are softmax(cos / tau) of the graph's target row: recompute by hand.
    cos = np.asarray(graph["target_aux"])
    np.testing.assert_allclose(w, np.exp(cos / 0.1) / np.exp(cos / 0.1).sum(), rtol=1e-5)
    assert (tmp_path / "relation_graph.png").stat().st_size > 10_000
    assert summary["shots"] == ["001", "002", "003", "004"]
    assert summary["heldout"] == ["005", "006", "007", "008"]
    for phase in ("transfer", "finetune"):
        assert (tmp_path / phase / "checkpoints" / "10").is_dir()
    rows = [json.loads(l) for l in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    per_task = [k for r in rows for k in r if k.startswith("transfer/train/task_loss/")]
    assert {k.rsplit("/", 1)[1] for k in per_task} == set(names)
    assert any("finetune/eval/psnr_y" in r for r in rows)
    # Running again resumes every phase at its last step: same result, nothing retrained.
    again = drtl_train.train_and_evaluate(config, str(tmp_path))
    assert again["after_finetune"] == summary["after_finetune"]


def _setup(pipeline="pretrain", mode="uniform"):
    config = drtl_config(**{"drtl.tasks": TASKS, "drtl.pipeline": pipeline,
                            "relation.mode": mode, "relation.refresh_every": 1, "drtl.aux_scale": 2,
                            "train.loss": "charbonnier"})
    model = build_model(config.model)
    params = init_params(model, jax.random.key(0), 16)
    w0 = jnp.array([0.5, 0.3, 0.2])
    optimizer = optax.with_extra_args_support(
        optax.chain(relation_weighted_sum(weights=w0), optax.sgd(0.1)))
    state = create_state(params, optimizer, 0)
    rng = np.random.default_rng(0)
    per_task = 4 if pipeline == "meta" else 2
    batch = {"aux_hr": rng.integers(0, 256, (3, per_task, 16, 16, 3), dtype=np.uint8),
             "target_lr": rng.integers(0, 256, (2, 16, 16, 3), dtype=np.uint8),
             "target_hr": rng.integers(0, 256, (2, 16, 16, 3), dtype=np.uint8)}
    return config, model, optimizer, state, batch, w0


@pytest.mark.parametrize("backward", ["single", "per_task"])
def test_pretrain_step_equals_weighted_sum_of_per_task_loop(backward):
    """Both DRTL-P paths (one backward pass of the weighted loss; K per-task gradients through
    the relation-weighted transform) against a Python loop over tasks."""
    config, model, optimizer, state, batch, w0 = _setup()
    override(config, "drtl.weighted_backward", backward)
    step = drtl_steps.make_pretrain_step(model, optimizer, config, TASKS)
    new_state, metrics = jax.jit(step)(state, batch)
    # Independent reference: synthesize the same task batches, loop over tasks in Python.
    key = step_key(state)
    hr = jnp.asarray(batch["aux_hr"], jnp.float32) / 255.0
    lr = synthesize_tasks(TASKS, key, hr, config.drtl.aux_scale, config.drtl.mode)
    total = None
    for k in range(3):
        g = jax.grad(lambda p: pixel_loss(model.apply({"params": p}, lr[k]), hr[k],
                                          "charbonnier"))(state.params)
        total = jax.tree.map(lambda a: w0[k] * a, g) if total is None else \
            jax.tree.map(lambda a, b: a + w0[k] * b, total, g)
    expected = jax.tree.map(lambda p, g: p - 0.1 * g, state.params, total)
    for a, b in zip(jax.tree.leaves(new_state.params), jax.tree.leaves(expected)):
        np.testing.assert_allclose(a, b, rtol=2e-4, atol=1e-6)
    np.testing.assert_allclose(metrics["weight"], w0)
    losses = [float(pixel_loss(model.apply({"params": state.params}, lr[k]), hr[k],
                               "charbonnier")) for k in range(3)]
    np.testing.assert_allclose(metrics["task_loss"], losses, rtol=1e-5)


@pytest.mark.parametrize("task_map", ["vmap", "unroll"])
def test_meta_step_equals_reference_second_order_meta_gradient(task_map):
    """The production DRTL-M step (hvp meta-gradients, relation-weighted SGD) against jax.grad
    of each task's MAML objective written out by hand: two inner SGD steps on the support half,
    loss on the query half, weighted sum of the K meta-gradients, one SGD step."""
    config, model, optimizer, state, batch, w0 = _setup("meta")
    config.unlock()
    config.meta.num_inner_steps, config.meta.inner_lr = 2, 0.05
    config.drtl.task_map = task_map
    new_state, metrics = jax.jit(drtl_steps.make_meta_step(model, optimizer, config, TASKS))(
        state, batch)
    key = step_key(state)
    hr = jnp.asarray(batch["aux_hr"], jnp.float32) / 255.0
    lr = synthesize_tasks(TASKS, key, hr, config.drtl.aux_scale, config.drtl.mode)
    loss = lambda p, x, y: pixel_loss(model.apply({"params": p}, x), y, "charbonnier")  # noqa: E731

    def task_objective(params, k):
        half = hr.shape[1] // 2
        adapted = params
        for _ in range(2):
            g = jax.grad(loss)(adapted, lr[k, :half], hr[k, :half])
            adapted = jax.tree.map(lambda a, d: a - 0.05 * d, adapted, g)
        return loss(adapted, lr[k, half:], hr[k, half:])

    grads = [jax.grad(task_objective)(state.params, k) for k in range(3)]
    total = jax.tree.map(lambda *g: sum(w0[k] * g[k] for k in range(3)), *grads)
    expected = jax.tree.map(lambda p, g: p - 0.1 * g, state.params, total)
    for a, b in zip(jax.tree.leaves(new_state.params), jax.tree.leaves(expected)):
        np.testing.assert_allclose(a, b, rtol=2e-4, atol=2e-6)
    query_losses = [float(task_objective(state.params, k)) for k in range(3)]
    np.testing.assert_allclose(metrics["task_loss"], query_losses, rtol=1e-4)
    # The update really moved the parameters (the comparison is not between two no-ops).
    moved = max(float(jnp.max(jnp.abs(a - b))) for a, b in
                zip(jax.tree.leaves(new_state.params), jax.tree.leaves(state.params)))
    assert moved > 1e-5


@pytest.mark.parametrize("pipeline", ["pretrain", "meta"])
def test_steps_compile_once(pipeline):
    config, model, optimizer, state, batch, _ = _setup(pipeline)
    build = drtl_steps.make_meta_step if pipeline == "meta" else drtl_steps.make_pretrain_step
    step = jax.jit(build(model, optimizer, config, TASKS), donate_argnums=0)
    for _ in range(3):
        state, metrics = step(state, batch)
    assert step._cache_size() == 1
    assert int(state.step) == 3 and np.isfinite(float(metrics["loss"]))


def test_gradient_mode_refreshes_weights_from_gradient_cosines():
    config, model, optimizer, state, batch, w0 = _setup(mode="gradient")
    step = jax.jit(drtl_steps.make_pretrain_step(model, optimizer, config, TASKS))
    new_state, metrics = step(state, batch)
    w = np.asarray(get_weights(new_state.opt_state))
    assert np.isclose(w.sum(), 1.0) and not np.allclose(w, np.asarray(w0))
    np.testing.assert_allclose(metrics["weight"], w, rtol=1e-6)  # used in the same step


@pytest.mark.parametrize("smoothing", [0.0, 0.75])
def test_gradient_mode_weights_equal_hand_computed_cosine_softmax(smoothing):
    """Refresh = softmax(cos(g_k, g_T) / tau) from a per-task Python loop and numpy, blended with
    the previous weights by `relation.smoothing`."""
    config, model, optimizer, state, batch, w0 = _setup(mode="gradient")
    config.unlock()
    config.relation.smoothing = smoothing
    config.relation.tau = 0.2
    config.lock()
    step = jax.jit(drtl_steps.make_pretrain_step(model, optimizer, config, TASKS))
    new_state, metrics = step(state, batch)
    hr = jnp.asarray(batch["aux_hr"], jnp.float32) / 255.0
    lr = synthesize_tasks(TASKS, step_key(state), hr, config.drtl.aux_scale, config.drtl.mode)

    def flat_grad(x, y):
        g = jax.grad(lambda p: pixel_loss(model.apply({"params": p}, x), y, "charbonnier"))(
            state.params)
        return np.concatenate([np.asarray(a, np.float64).ravel() for a in jax.tree.leaves(g)])

    g_target = flat_grad(jnp.asarray(batch["target_lr"], jnp.float32) / 255.0,
                         jnp.asarray(batch["target_hr"], jnp.float32) / 255.0)
    cos = np.array([g @ g_target / np.linalg.norm(g) / np.linalg.norm(g_target)
                    for g in (flat_grad(lr[k], hr[k]) for k in range(3))])
    fresh = np.exp(cos / 0.2) / np.exp(cos / 0.2).sum()
    expected = smoothing * np.asarray(w0) + (1 - smoothing) * fresh
    w = np.asarray(get_weights(new_state.opt_state))
    np.testing.assert_allclose(w, expected, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(metrics["weight"], w, rtol=1e-6)


def _transfer_inputs(config):
    from jaxsr.methods.drtl import data as drtl_data
    model = build_model(config.model)
    params = init_params(model, jax.random.key(config.seed), config.data.hr_patch)
    split = drtl_data.split_target(config.data, 1)
    weights = np.array([0.4, 0.3, 0.2, 0.1], np.float32)
    return model, params, split, weights


def _run_transfer(config, workdir, model, params, split, weights):
    """transfer_phase of `config` in its own run harness at `workdir`; returns the parameters."""
    from jaxsr.train.harness import Run
    run = Run(config, workdir)
    ctx = drtl_train.Context(config=config, run=run, model=model, names=list(config.drtl.tasks),
                             split=split)
    params = jax.tree.map(jnp.copy, params)  # the step donates its state
    out, _ = drtl_train.transfer_phase(ctx, params, weights)
    run.writer.close()
    return out


def test_meta_warm_start_is_pretraining_then_maml_from_its_result(tmp_path):
    """DRTL-M with meta.pretrain_fraction=0.5 over 6 steps = 3 DRTL-P steps, then 3 MAML steps
    from the pre-trained parameters (reference: the two phases run by hand, cold)."""
    config = drtl_config("tiny,meta", **{"transfer.num_steps": 6, "meta.pretrain_fraction": 0.5,
                                        "train.checkpoint_every": 3})
    model, params, split, w = _transfer_inputs(config)
    transfer = lambda cfg, folder, p: _run_transfer(cfg, tmp_path / folder, model, p, split, w)  # noqa: E731
    warm_params = transfer(config, "warm", params)
    assert (tmp_path / "warm" / "transfer_warmstart" / "checkpoints" / "3").is_dir()
    assert (tmp_path / "warm" / "transfer" / "checkpoints" / "3").is_dir()
    assert drtl_train.warm_start_steps(config) == 3
    # Reference: DRTL-P for 3 steps, then DRTL-M for 3 steps (seed + 2) from its parameters.
    ref = {"transfer.num_steps": 3, "train.checkpoint_every": 3}
    p_config = drtl_config("tiny,pretrain", **ref)
    pre = transfer(p_config, "p", params)
    m_config = drtl_config("tiny,meta", **ref, **{"meta.pretrain_fraction": 0.0},
                           seed=config.seed + 2)
    expected = transfer(m_config, "m", pre)
    cold = transfer(m_config, "cold", params)
    for a, b, c in zip(*map(jax.tree.leaves, (warm_params, expected, cold))):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)
    assert max(float(jnp.max(jnp.abs(a - c)))
               for a, c in zip(*map(jax.tree.leaves, (warm_params, cold)))) > 1e-4
    # Resuming a finished warm-started transfer trains nothing and returns the same parameters.
    again = transfer(config, "warm", params)
    for a, b in zip(jax.tree.leaves(again), jax.tree.leaves(warm_params)):
        np.testing.assert_array_equal(a, b)
    rows = [json.loads(l) for l in (tmp_path / "warm" / "metrics.jsonl").read_text().splitlines()]
    assert any("transfer_warmstart/train/loss" in r for r in rows)


def test_warm_start_fraction_is_checked():
    assert drtl_train.warm_start_steps(drtl_config("tiny,meta")) == 5  # default 0.5 of 10
    assert drtl_train.warm_start_steps(drtl_config("tiny,meta",
                                                   **{"meta.pretrain_fraction": 0.0})) == 0
    assert drtl_train.warm_start_steps(drtl_config("tiny,pretrain",
                                                   **{"meta.pretrain_fraction": 0.5})) == 0
    # 0.9 of 3 steps rounds to 3; MAML still gets its one step.
    assert drtl_train.warm_start_steps(drtl_config(
        "tiny,meta", **{"meta.pretrain_fraction": 0.9, "transfer.num_steps": 3})) == 2
    with pytest.raises(ValueError, match="meta.pretrain_fraction=1.0"):
        drtl_train.warm_start_steps(drtl_config("tiny,meta", **{"meta.pretrain_fraction": 1.0}))


def _config_variants():
    import importlib.util
    spec = importlib.util.spec_from_file_location("drtl_config", REPO / "configs" / "drtl.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.VARIANTS


@pytest.mark.parametrize("variant", _config_variants())
def test_every_config_variant_resolves(variant):
    """Each variant (incl. 'paper', too large to run here) gives known tasks, a buildable model,
    a valid pipeline and warm start, and the scale its name promises."""
    config = drtl_config(variant)
    names = drtl_train.task_names(config)
    assert len(names) >= 4 and len(set(names)) == len(names)
    assert config.drtl.pipeline in drtl_train.PIPELINES
    assert 0 <= drtl_train.warm_start_steps(config) < config.transfer.num_steps
    model = build_model(config.model)
    lr = jnp.zeros((1, 12, 12, 3))
    out = jax.eval_shape(lambda x: model.init_with_output(jax.random.key(0), x)[0], lr)
    scale = int(variant[1]) if variant in ("x2", "x3", "x4") else 1
    assert out.shape == (1, 12 * scale, 12 * scale, 3)
    if variant == "paper":
        assert config.model.name == "edsr_baseline" and config.meta.num_inner_steps == 5


def test_weighted_backward_auto_is_per_task_on_cpu_and_single_on_accelerators(monkeypatch):
    assert drtl_steps.resolve_backward("auto") == "per_task"  # this CPU
    monkeypatch.setattr(jax, "default_backend", lambda: "gpu")
    assert drtl_steps.resolve_backward("auto") == "single"
    assert drtl_steps.resolve_backward("per_task") == "per_task"
