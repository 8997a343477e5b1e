"""IRConStyle training on the run harness: two phases, one deployed network.

Phase 'constyle' (steps 0 .. constyle.steps, folder `constyle/`): the total loss
    L1(restored, clean) + w_nce InfoNCE + w_content content + w_style style
trains the query encoder and the restorer jointly; per step the key encoder is first moved
towards the query encoder (k <- m k + (1-m) q, parameters only), then gives the positive key of
the clean crop (train-mode BatchNorm, its statistics in `buffers`), and the step's codes (the
global batch) are enqueued after the loss. Phase 'restore' (up to train.num_steps, the workdir
itself): the encoder is frozen (eval-mode BatchNorm, no gradient, its optimizer updates zeroed
by `freeze_encoder`) and only L1 trains the restorer.

State: `params` = the deployed ConStyleNet {'encoder': {'params', 'batch_stats'}, 'restorer'}
(the query encoder's BN statistics are in the deployed tree because inference needs them; the
optimizer never changes them, the step writes the train-mode BN update); `buffers` =
{'key_encoder': {'params', 'batch_stats'}, 'queue': (K, D), 'pointer': int32}.
A config whose model is not a ConStyleNet (e.g. 'nafnet') trains that network with L1 only on
the same data and optimizer: the equal-budget baseline.
"""
from __future__ import annotations

import logging
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import ml_collections
import optax

from jaxsr.deployable import Deployable
from jaxsr.losses import pixel_loss
from jaxsr.methods.irconstyle import data as ic_data
from jaxsr.methods.irconstyle import moco
from jaxsr.methods.irconstyle.losses import constyle_losses, embed
from jaxsr.methods.irconstyle.model import ConStyleNet
from jaxsr.model_factory import build_model
from jaxsr.pixels import to_float
from jaxsr.train import data as data_lib
from jaxsr.train import mesh as mesh_lib
from jaxsr.train.evaluate import Evaluator
from jaxsr.train.harness import Run
from jaxsr.train.optim import make_optimizer
from jaxsr.train.state import apply_update, create_state, step_key
from jaxsr.train.steps import global_norm


# ----------------------------------------------------------------------------- optimizer
class FreezeState(NamedTuple):
    count: jax.Array


def freeze_encoder(freeze_step: int) -> optax.GradientTransformation:
    """Zeroes the updates of params['encoder']['batch_stats'] always and of
    params['encoder']['params'] from update number `freeze_step` on (the restorer is untouched).
    Chained after the optimizer, so Adam moments or weight decay never move a frozen leaf."""
    def init(params):
        return FreezeState(count=jnp.zeros((), jnp.int32))

    def update(updates, state, params=None):
        frozen = state.count >= freeze_step
        enc = updates["encoder"]
        new_enc = {**enc, "batch_stats": jax.tree.map(jnp.zeros_like, enc["batch_stats"]),
                   "params": jax.tree.map(lambda u: jnp.where(frozen, jnp.zeros_like(u), u),
                                          enc["params"])}
        return {**updates, "encoder": new_enc}, FreezeState(count=state.count + 1)
    return optax.GradientTransformation(init, update)


def make_irconstyle_optimizer(cfg: ml_collections.ConfigDict, total_steps: int,
                              freeze_step: int | None) -> optax.GradientTransformation:
    """`config.optim` as `jaxsr.train.optim`, plus schedule 'constant_cosine' (the published one:
    constant for `constant_fraction` of the steps, then cosine to lr * min_lr_ratio); chained with
    `freeze_encoder(freeze_step)` for a ConStyleNet (freeze_step None = plain restorer)."""
    if cfg.schedule == "constant_cosine":
        hold = int(round(float(cfg.constant_fraction) * total_steps))
        schedule = optax.join_schedules(
            [optax.constant_schedule(float(cfg.lr)),
             optax.cosine_decay_schedule(float(cfg.lr), max(1, total_steps - hold),
                                         alpha=float(cfg.min_lr_ratio))], [hold])
        b = dict(b1=float(cfg.b1), b2=float(cfg.b2), eps=float(cfg.eps))
        tx = (optax.adamw(schedule, weight_decay=float(cfg.weight_decay), **b)
              if cfg.name == "adamw" else optax.adam(schedule, **b))
        if float(cfg.grad_clip) > 0:
            tx = optax.chain(optax.clip_by_global_norm(float(cfg.grad_clip)), tx)
    else:
        tx, _ = make_optimizer(cfg, total_steps)
    return tx if freeze_step is None else optax.chain(tx, freeze_encoder(freeze_step))


# ----------------------------------------------------------------------------- state
def init_state(config: ml_collections.ConfigDict, net, optimizer) -> Any:
    """Fresh TrainState: deployed params, and for a ConStyleNet the key encoder (a copy of the
    query encoder, MoCo's init) and the queue in `buffers`."""
    p = config.data.hr_patch
    params = jax.jit(lambda k: net.init(k, jnp.zeros((1, p, p, 3), jnp.float32)))(
        jax.random.key(config.seed))["params"]   # jitted: eager init is slow on CPU
    buffers = {}
    if isinstance(net, ConStyleNet):
        c = config.constyle
        buffers = {"key_encoder": jax.tree.map(jnp.copy, params["encoder"]),
                   **moco.init_queue(jax.random.key(config.seed + 1), int(c.queue_size),
                                     int(net.code_dim), bool(c.normalize))}
    return create_state(params, optimizer, config.seed, buffers=buffers)


def _inputs(state, batch, degrade):
    clean = to_float(batch["hr"])
    lq = degrade(step_key(state), clean) if degrade is not None else to_float(batch["lr"])
    return lq, clean


def _keep_if_finite(old_state, new_state, new, old):
    finite = new_state.nonfinite == old_state.nonfinite
    return jax.tree.map(lambda n, o: jnp.where(finite, n, o), new, old)


# ----------------------------------------------------------------------------- steps
def make_constyle_step(net: ConStyleNet, optimizer, config, degrade=None):
    """Phase-1 step `(state, batch) -> (state, metrics)` (see the module doc). batch: {'hr'
    uint8 (B, p, p, 3)} (+ 'lr' for real pairs; otherwise `degrade(key, clean)` on device).
    metrics: loss (total), l1, infonce, content, style, grad_norm."""
    c, encoder = config.constyle, net.encoder_module()
    w = {"infonce": float(c.w_infonce), "content": float(c.w_content), "style": float(c.w_style)}
    temperature, normalize, m = float(c.temperature), bool(c.normalize), float(c.momentum)
    loss_kind, ema_decay = config.train.loss, float(config.train.ema_decay)

    def step(state, batch):
        lq, clean = _inputs(state, batch, degrade)
        xp, cp = net.pad(lq), net.pad(clean)
        b = state.buffers
        key_params = moco.momentum_update(b["key_encoder"]["params"],
                                          state.params["encoder"]["params"], m)
        (k_code, _), k_new = encoder.apply(
            {"params": key_params, "batch_stats": b["key_encoder"]["batch_stats"]}, cp,
            train=True, mutable=["batch_stats"])

        def loss_fn(params):
            (q_code, feats, hidden), q_new = encoder.apply(
                params["encoder"], xp, train=True, return_hidden=True, mutable=["batch_stats"])
            out = net.apply({"params": params}, lq, encoder_out=(q_code, feats))
            parts = {"l1": pixel_loss(out, clean, loss_kind),
                     **constyle_losses(hidden[0], q_code, k_code, b["queue"], temperature,
                                       normalize)}
            total = parts["l1"] + sum(w[k] * parts[k] for k in w)
            return total, (parts, q_new["batch_stats"], q_code)

        (loss, (parts, q_stats, q_code)), grads = jax.value_and_grad(loss_fn, has_aux=True)(
            state.params)
        new = apply_update(state, grads, loss, optimizer, ema_decay)
        rows = embed(q_code if c.enqueue == "query" else k_code, normalize)
        queue, pointer = moco.enqueue(b["queue"], b["pointer"], rows)
        buffers = _keep_if_finite(state, new, {
            "key_encoder": {"params": key_params, "batch_stats": k_new["batch_stats"]},
            "queue": queue, "pointer": pointer}, b)
        stats = _keep_if_finite(state, new, q_stats, state.params["encoder"]["batch_stats"])
        set_stats = lambda p: {**p, "encoder": {**p["encoder"], "batch_stats": stats}}
        new = new.replace(params=set_stats(new.params), ema_params=set_stats(new.ema_params),
                          buffers=buffers)
        return new, {"loss": loss, **parts, "grad_norm": global_norm(grads)}
    return step


def make_restore_step(net, optimizer, config, degrade=None):
    """Phase-2 step: L1 only. For a ConStyleNet the encoder runs with its stored statistics and
    gets no gradient (its updates are also zeroed by `freeze_encoder`); any other restorer is
    trained plainly. metrics: loss, grad_norm."""
    loss_kind, ema_decay = config.train.loss, float(config.train.ema_decay)
    is_constyle = isinstance(net, ConStyleNet)
    encoder = net.encoder_module() if is_constyle else None

    def step(state, batch):
        lq, clean = _inputs(state, batch, degrade)
        side = {}
        if is_constyle:
            side["encoder_out"] = jax.lax.stop_gradient(
                encoder.apply(state.params["encoder"], net.pad(lq), train=False))

        def loss_fn(params):
            return pixel_loss(net.apply({"params": params}, lq, **side), clean, loss_kind)
        loss, grads = jax.value_and_grad(loss_fn)(state.params)
        new = apply_update(state, grads, loss, optimizer, ema_decay)
        return new, {"loss": loss, "grad_norm": global_norm(grads)}
    return step


# ----------------------------------------------------------------------------- the method
def deployable(config: ml_collections.ConfigDict) -> Deployable:
    """The deployed network: `config.model` (encoder + restorer) from `workdir/checkpoints/`."""
    return Deployable.of(config.model, folder="", use_ema=config.train.ema_decay > 0,
                         method="irconstyle")


def constyle_steps(config, net) -> int:
    """Steps of phase 1 (0 for a plain restorer); must leave phase 2 at least one step."""
    if not isinstance(net, ConStyleNet):
        return 0
    n, total = int(config.constyle.steps), int(config.train.num_steps)
    if not 0 <= n < total:
        raise ValueError(f"config.constyle.steps={n} must be in [0, config.train.num_steps="
                         f"{total}) so that the L1-only phase (which holds the deployed "
                         "checkpoint) runs at least one step")
    return n


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str, batches=None,
                       test_sets: dict | None = None, keep_outputs: int = 0) -> dict:
    """Trains per `config` in `workdir` (resuming), returns the summary (final eval metrics
    next to the identity baseline). `batches` replaces the data iterator (tests). `test_sets`
    {name: [(lq uint8, clean uint8, name)]}: the final deployed network is also scored on each
    (summary['test'][name] = mean metrics, ['test_baseline'][name] = identity; with
    `keep_outputs`, summary['outputs'][name] = the first restored uint8 images; these are in the
    returned dict, not in summary.json)."""
    run = Run(config, workdir)
    run.describe(deployable(config))
    mesh_lib.check_batch_size(config.data.batch_size, run.mesh)
    train_src, pairs, degrade = ic_data.sources(config)
    if batches is None:
        batches = data_lib.train_iterator(config.data, train_src, 1, config.seed,
                                          paired=degrade is None)
    net = build_model(config.model)
    n1, total = constyle_steps(config, net), int(config.train.num_steps)
    optimizer = make_irconstyle_optimizer(
        config.optim, total, n1 if isinstance(net, ConStyleNet) else None)
    state = init_state(config, net, optimizer)
    logging.info("model %s: %s deployed parameters", config.model.name,
                 f"{sum(x.size for x in jax.tree.leaves(state.params)):,}")
    evaluator = Evaluator(net, pairs, 1, config.eval)
    baseline = evaluator.baseline()
    run.writer.write_scalars(0, baseline, prefix="baseline/")
    use_ema = config.train.ema_decay > 0
    common = dict(batches=batches, evaluate=evaluator.for_loop("eval/", use_ema),
                  eval_every=config.train.eval_every)
    if n1 > 0:
        state, _ = run.phase("constyle", state=state, num_steps=n1,
                             step_fn=make_constyle_step(net, optimizer, config, degrade),
                             description="ConStyle losses + L1", **common)
    state, final = run.phase("restore", folder="", log_prefix="", state=state, num_steps=total,
                             step_fn=make_restore_step(net, optimizer, config, degrade),
                             best_metric=config.train.best_metric,
                             description="L1, encoder frozen", **common)
    summary = {"step": int(jax.device_get(state.step)), "constyle_steps": n1,
               "baseline": baseline, "final": final,
               "gain_psnr_y": final.get("psnr_y", float("nan")) - baseline["psnr_y"]}
    summary = run.finish(summary)
    if test_sets:
        from jaxsr.train.state import deployable_params
        params = deployable_params(state, use_ema)
        summary = {**summary, "test": {}, "test_baseline": {}, "outputs": {}}
        for name, test_pairs in test_sets.items():
            ev = Evaluator(net, test_pairs, 1, config.eval)
            mean, _, outs = ev(params, keep=keep_outputs)
            summary["test"][name] = mean
            summary["test_baseline"][name] = ev.baseline()
            summary["outputs"][name] = outs
    return summary
