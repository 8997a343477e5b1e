"""CRL-SR training on the run harness: one pure step updating the deployed network and its
auxiliary networks, on the multi-source, spatially variant degradations made on device.

Per step (batch {'hr': uint8 (B, H, W, 3)}; H, W multiples of s):
  lr   = degrade_batch(key, hr)                            (degrade.py, 'train' level)
  sr, f_l = CRLSR(lr)                                      f_l = E_l(lr) (B, h, w, F)
  idx  = sample_positions(key, h, w, M)                    the same M LR-grid positions for all
  L_bc    = bidirectional_patch_nce(head_l(f_l[idx]), head_h(E_h(hr)[idx]), tau)
  L_srnce = patch_info_nce(head_f(E_f(sr)[idx]), head_f(E_f(hr)[idx]), tau,
                           negatives=head_l(f_l[idx]))     (LR-side features as negatives)
  L_rec   = L1(D_rec(E_f(hr)), hr)
  loss = L1(sr, hr) + l_bc L_bc + l_nce L_srnce + l_rec L_rec
One gradient of `loss` w.r.t. (params, every aux net); `params` (E_l + SR decoder) are updated by
`apply_update` (step, EMA), each aux net by `apply_aux_update` with its own optimizer. Terms
switched off (config.crl.use_bc / use_srnce / use_rec, or a weight of 0) are not computed and
their networks do not exist: with all three off this is plain L1 training of the same network.
"""
from __future__ import annotations

import dataclasses
import logging
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from jaxsr.deployable import Deployable
from jaxsr.losses import (bidirectional_patch_nce, gather_positions, info_nce, patch_info_nce,
                          pixel_loss, sample_positions)
from jaxsr.methods.crl.degrade import DegradationSpec, degrade, degrade_batch
from jaxsr.methods.crl.networks import ProjectionHead, ReconstructionDecoder, StridedEncoder
from jaxsr.model_factory import build_model, init_params
from jaxsr.pixels import to_float, to_uint8
from jaxsr.train import data as data_lib
from jaxsr.train import mesh as mesh_lib
from jaxsr.train.evaluate import Evaluator
from jaxsr.train.harness import Run
from jaxsr.train.optim import make_optimizer
from jaxsr.train.state import TrainState, apply_aux_update, apply_update, create_state, step_key
from jaxsr.train.steps import global_norm

LEVELS = ("easy", "medium", "hard")


# ------------------------------------------------------------------------------ switches
@dataclasses.dataclass(frozen=True)
class Terms:
    """Which losses are on (a term with weight 0 is off) and their weights."""
    bc: bool
    srnce: bool
    rec: bool
    l_bc: float
    l_nce: float
    l_rec: float

    @classmethod
    def of(cls, config) -> "Terms":
        c = config.crl
        bc = bool(c.use_bc) and c.l_bc > 0
        srnce = bool(c.use_srnce) and c.l_nce > 0
        rec = srnce and bool(c.use_rec) and c.l_rec > 0   # D_rec only serves E_f, i.e. L_srnce
        return cls(bc, srnce, rec, float(c.l_bc), float(c.l_nce), float(c.l_rec))

    @property
    def aux_names(self) -> tuple[str, ...]:
        names = []
        if self.bc or self.srnce:
            names.append("lr_head")            # projects f_l for L_bc and as L_srnce negatives
        if self.bc:
            names.append("details_remover")    # E_h + its head
        if self.srnce:
            names.append("extractor")          # E_f + its head
        if self.rec:
            names.append("rec_decoder")        # D_rec
        return tuple(names)


def level_spec(config, level: str) -> DegradationSpec:
    """The DegradationSpec of `config.crl.degrade.<level>` ('train', 'easy', 'medium', 'hard')."""
    levels = config.crl.degrade
    if level not in levels:
        raise ValueError(f"config.crl.degrade has no level {level!r}; levels: {list(levels)}")
    return DegradationSpec.from_config(levels[level])


# ------------------------------------------------------------------------------ networks
@dataclasses.dataclass(frozen=True)
class Networks:
    model: Any                 # deployed: CRLSR (maybe inside GlobalResidual)
    details: Any               # E_h
    extractor: Any             # E_f
    head: Any                  # every projection head (separate parameters per use)
    rec: Any                   # D_rec
    scale: int


def build_networks(config) -> Networks:
    c, m = config.crl, config.model
    s, f = int(m.scale), int(m.kwargs.features)
    return Networks(
        model=build_model(m),
        details=StridedEncoder(f, int(c.details_blocks), s),
        extractor=StridedEncoder(f, int(c.extractor_blocks), s),
        head=ProjectionHead(int(c.head_dim)),
        rec=ReconstructionDecoder(scale=s, features=f, num_blocks=int(c.rec_blocks)),
        scale=s)


def init_aux(nets: Networks, terms: Terms, key: jax.Array, hr_patch: int) -> dict:
    """{aux name: params} for the terms that are on."""
    s = nets.scale
    hr = jnp.zeros((1, hr_patch, hr_patch, 3), jnp.float32)
    feats = jnp.zeros((1, hr_patch // s, hr_patch // s, nets.rec.features), jnp.float32)
    vec = jnp.zeros((1, 4, nets.rec.features), jnp.float32)
    keys = iter(jax.random.split(key, 8))
    init = lambda module, x: module.init(next(keys), x)["params"]
    makers = {
        "lr_head": lambda: init(nets.head, vec),
        "details_remover": lambda: {"encoder": init(nets.details, hr), "head": init(nets.head, vec)},
        "extractor": lambda: {"encoder": init(nets.extractor, hr), "head": init(nets.head, vec)},
        "rec_decoder": lambda: init(nets.rec, feats),
    }
    return {name: makers[name]() for name in terms.aux_names}


def _find(tree: Any, key: str) -> Any:
    if isinstance(tree, dict) or hasattr(tree, "items"):
        if key in tree:
            return tree[key]
        for value in tree.values():
            found = _find(value, key)
            if found is not None:
                return found
    return None


def sr_and_features(model, params, lr: jax.Array) -> tuple[jax.Array, jax.Array]:
    """The deployed forward pass and E_l's features: lr (B, h, w, 3) -> (sr (B, hs, ws, 3),
    f_l (B, h, w, F))."""
    sr, state = model.apply({"params": params}, lr, mutable=["intermediates"])
    return sr, _find(state["intermediates"], "features")[0]


# ------------------------------------------------------------------------------ losses
def srnce_loss(query: jax.Array, positive: jax.Array, lr_side: jax.Array, temperature: float,
               position_negatives: bool = True) -> jax.Array:
    """L_srnce: query E_f(SR) (B, M, P), positive E_f(HR) at the same position (B, M, P),
    negatives every LR-side vector lr_side[b] (B, M, P) (the same position included) and, with
    `position_negatives`, the other positions of E_f(HR) (patch NCE, CUT style). Float32 scalar."""
    if position_negatives:
        return patch_info_nce(query, positive, temperature, negatives=lr_side)
    b, m, d = query.shape
    negs = jnp.broadcast_to(lr_side[:, None], (b, m, m, d)).reshape(b * m, m, d)
    return info_nce(query.reshape(b * m, d), positive.reshape(b * m, d), negs, temperature)


def crl_losses(nets: Networks, terms: Terms, c, params, aux: dict, lr: jax.Array,
               hr: jax.Array, positions: jax.Array, loss_kind: str = "l1"
               ) -> tuple[jax.Array, dict]:
    """(total loss, {'l1', 'l_bc', 'l_srnce', 'l_rec'} present terms) of one batch."""
    sr, f_l = sr_and_features(nets.model, params, lr)
    l1 = pixel_loss(sr, hr, loss_kind)
    parts, total = {"l1": l1}, l1
    tau = float(c.temperature)
    head = lambda p, f: nets.head.apply({"params": p}, gather_positions(f, positions))
    if terms.bc or terms.srnce:
        z_l = head(aux["lr_head"], f_l)                                   # (B, M, P)
    if terms.bc:
        dr = aux["details_remover"]
        z_h = head(dr["head"], nets.details.apply({"params": dr["encoder"]}, hr))
        parts["l_bc"] = bidirectional_patch_nce(z_l, z_h, tau)
        total = total + terms.l_bc * parts["l_bc"]
    if terms.srnce:
        ex = aux["extractor"]
        ex_s = ex if c.srnce_trains_extractor else jax.lax.stop_gradient(ex)  # E_f for L_srnce
        e_sr = nets.extractor.apply({"params": ex_s["encoder"]}, sr)
        e_hr = nets.extractor.apply({"params": ex["encoder"]}, hr)        # D_rec trains E_f
        e_hr_k = e_hr if c.srnce_trains_extractor else nets.extractor.apply(
            {"params": ex_s["encoder"]}, hr)
        q, k = head(ex_s["head"], e_sr), head(ex_s["head"], e_hr_k)
        neg = z_l if c.srnce_negatives_grad else jax.lax.stop_gradient(z_l)
        parts["l_srnce"] = srnce_loss(q, k, neg, tau, bool(c.srnce_position_negatives))
        total = total + terms.l_nce * parts["l_srnce"]
        if terms.rec:
            rec = nets.rec.apply({"params": aux["rec_decoder"]}, e_hr)
            parts["l_rec"] = pixel_loss(rec, hr, "l1")
            total = total + terms.l_rec * parts["l_rec"]
    return total, parts


def make_step(nets: Networks, terms: Terms, config, optimizer, aux_optimizer,
              spec: DegradationSpec):
    """The CRL-SR step `(state, {'hr': uint8 (B, H, W, 3)}) -> (state, metrics)` (not jitted)."""
    c, scale, num = config.crl, nets.scale, int(config.crl.num_positions)
    ema_decay, loss_kind = float(config.train.ema_decay), config.train.loss

    def step(state: TrainState, batch: dict) -> tuple[TrainState, dict]:
        hr = to_float(batch["hr"])
        k_deg, k_pos = jax.random.split(step_key(state))
        lr = degrade_batch(k_deg, hr, spec, scale)
        h, w = lr.shape[1], lr.shape[2]
        positions = sample_positions(k_pos, h, w, min(num, h * w))
        aux_params = {name: net.params for name, net in state.aux.items()}

        def loss_fn(params, aux):
            return crl_losses(nets, terms, c, params, aux, lr, hr, positions, loss_kind)
        (loss, parts), (grads, aux_grads) = jax.value_and_grad(
            loss_fn, argnums=(0, 1), has_aux=True)(state.params, aux_params)
        new = apply_update(state, grads, loss, optimizer, ema_decay)
        for name in state.aux:
            new = apply_aux_update(new, name, aux_grads[name], loss, aux_optimizer)
        return new, {"loss": loss, **parts, "grad_norm": global_norm(grads)}
    return step


def init_state(config, nets: Networks, terms: Terms, optimizer, aux_optimizer) -> TrainState:
    key_main, key_aux = jax.random.split(jax.random.key(config.seed))
    patch = int(config.data.hr_patch)
    params = init_params(nets.model, key_main, patch // nets.scale)
    aux = init_aux(nets, terms, key_aux, patch)
    return create_state(params, optimizer, config.seed,
                        aux={n: (p, aux_optimizer) for n, p in aux.items()})


# ------------------------------------------------------------------------------ evaluation
def synthetic_pairs(hr_images, spec: DegradationSpec, scale: int, seed: int) -> list:
    """[(lr uint8, hr uint8, name)] with LR from the generator at fixed keys (seed, index); HR
    cropped to a multiple of the scale."""
    fn = jax.jit(lambda key, x: degrade(key, x, spec, scale))
    pairs = []
    for i, (hr, name) in enumerate(hr_images):
        h, w = hr.shape[0] // scale * scale, hr.shape[1] // scale * scale
        hr = np.ascontiguousarray(hr[:h, :w])
        lr = fn(jax.random.fold_in(jax.random.key(seed), i), to_float(jnp.asarray(hr)))
        pairs.append((to_uint8(lr), hr, str(name)))
    return pairs


def deployable(config: ml_collections.ConfigDict) -> Deployable:
    """The deployed network: `config.model` (E_l + SR decoder) from `workdir/checkpoints/`."""
    return Deployable.of(config.model, folder="", use_ema=config.train.ema_decay > 0,
                         method="crl")


def make_optimizers(config):
    optimizer, _ = make_optimizer(config.optim, config.train.num_steps)
    aux_cfg = config.optim.copy_and_resolve_references()
    if config.crl.aux_lr > 0:
        aux_cfg.lr = config.crl.aux_lr
    aux_optimizer, _ = make_optimizer(aux_cfg, config.train.num_steps)
    return optimizer, aux_optimizer


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict:
    """Trains CRL-SR per `config` in `workdir` (resumable); returns the summary."""
    run = Run(config, workdir)
    run.describe(deployable(config))
    scale = int(config.model.scale)
    if config.data.hr_patch % scale:
        raise ValueError(f"config.data.hr_patch={config.data.hr_patch} is not a multiple of "
                         f"config.model.scale={scale}; use e.g. {config.data.hr_patch // scale * scale}")
    mesh_lib.check_batch_size(config.data.batch_size, run.mesh)
    train_src, val_src = data_lib.hr_sources(config.data)
    batches = data_lib.train_iterator(config.data, train_src, scale, config.seed, paired=False)

    terms = Terms.of(config)
    nets = build_networks(config)
    optimizer, aux_optimizer = make_optimizers(config)
    state = init_state(config, nets, terms, optimizer, aux_optimizer)
    n_main = sum(x.size for x in jax.tree.leaves(state.params))
    n_aux = sum(x.size for x in jax.tree.leaves([a.params for a in state.aux.values()]))
    logging.info("crl: deployed %s params, auxiliary %s (%s); terms %s", f"{n_main:,}",
                 f"{n_aux:,}", ", ".join(terms.aux_names) or "none", terms)

    val_images = [(val_src[i]["hr"], val_src[i]["name"]) for i in range(len(val_src))]
    pairs = synthetic_pairs(val_images, level_spec(config, config.crl.eval_level), scale,
                            config.seed + 12345)
    evaluator = Evaluator(nets.model, pairs, scale, config.eval)
    baseline = evaluator.baseline()
    run.writer.write_scalars(0, baseline, prefix="baseline/")
    step = make_step(nets, terms, config, optimizer, aux_optimizer,
                     level_spec(config, "train"))
    state, final = run.phase(
        "train", folder="", log_prefix="", state=state, step_fn=step, batches=batches,
        num_steps=config.train.num_steps,
        evaluate=evaluator.for_loop("eval/", use_ema=config.train.ema_decay > 0),
        eval_every=config.train.eval_every, best_metric=config.train.best_metric,
        description=f"crl x{scale}")
    summary = {"step": int(jax.device_get(state.step)), "baseline": baseline, "final": final,
               "terms": dataclasses.asdict(terms),
               "params": {"deployed": int(n_main), "auxiliary": int(n_aux)},
               "gain_psnr_y": final.get("psnr_y", float("nan")) - baseline["psnr_y"]}
    logging.info("crl final: %s | baseline %s", final, baseline)
    return run.finish(summary)
