"""PCL-SR training on the run harness: the two-update step, the run, the deployed network.

One jitted step per iteration (`make_step`):
  1. embedding update (aux network 'embed', its own Adam at a constant rate): L_CLD on the patch
     logits of real = [HR, 3 sharpened positives] and fake = [SR (no gradient), 3 blurred
     negatives] (the released code's `contras_D_train`; the bicubic-LR negative is not shown to
     the discriminator there either), 8 separate train-mode calls that advance the BatchNorm
     running statistics in `state.buffers['embed_batch_stats']`;
  2. SR update: `L1 + alpha * L_CL` with the just-updated embedding frozen (only the SR
     parameters are differentiated). By default the gradient of L_CL flows through the embedding
     into the SR image (the paper's intent); `pcl.released_code_gradient=True` computes the SR
     features from a stopped-gradient SR image, as the released code does under `no_grad`, so
     L_CL never reaches the SR network.
`pcl.alpha = 0` gives the plain L1 step on the same data (the baseline of the ablation).
Training LR is made on device from the HR patch with MATLAB bicubic (`jaxsr.imresize`) and
quantized to 8 bits, like the DIV2K LR images; with `data.paired` the folder's LR is used.
`config.init_from=WORKDIR` starts the SR network from another run's deployed network
(`jaxsr.run_config.load_run`), as the paper fine-tunes pre-trained backbones.
"""
from __future__ import annotations

import logging
import pathlib
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from jaxsr.data import pipeline
from jaxsr.data.sources import ImageFolderSource, PairedFolderSource
from jaxsr.deployable import Deployable
from jaxsr.imresize import imresize, imresize_uint8
from jaxsr.losses import pixel_loss
from jaxsr.methods.pcl.embedding import build_embedding, embed, embed_many, init_embedding
from jaxsr.methods.pcl.losses import (contrastive_loss, dual_contrastive_loss,
                                      similarities)
from jaxsr.methods.pcl.samples import make_samples, quantize
from jaxsr.model_factory import build_model, init_params
from jaxsr.pixels import to_float
from jaxsr.train import data as data_lib
from jaxsr.train import mesh as mesh_lib
from jaxsr.train.evaluate import Evaluator
from jaxsr.train.harness import Run
from jaxsr.train.optim import make_optimizer
from jaxsr.train.state import apply_aux_update, apply_update, create_state, step_key
from jaxsr.train.steps import global_norm

EMBED, STATS = "embed", "embed_batch_stats"


# ------------------------------------------------------------------------------ optimizers
def sr_optimizer(config: ml_collections.ConfigDict) -> optax.GradientTransformation:
    """`config.optim` (schedule, global-norm clip) after element-wise value clipping at
    `pcl.clip_value` (the released code's `--gclip`; 0 = off)."""
    opt, _ = make_optimizer(config.optim, config.train.num_steps)
    clip = float(config.pcl.clip_value)
    return optax.chain(optax.clip(clip), opt) if clip > 0 else opt


def embed_optimizer(config: ml_collections.ConfigDict) -> optax.GradientTransformation:
    """Adam at a constant `pcl.embed_lr` (0 = the SR learning rate), the SR betas."""
    lr = float(config.pcl.embed_lr) or float(config.optim.lr)
    return optax.adam(lr, b1=float(config.optim.b1), b2=float(config.optim.b2),
                      eps=float(config.optim.eps))


# ------------------------------------------------------------------------------ the step
def make_lr(hr: jax.Array, scale: int) -> jax.Array:
    """(B, H, W, 3) float in [0, 1] -> MATLAB-bicubic LR (B, H/s, W/s, 3), 8-bit quantized."""
    return quantize(imresize(hr, scale=1.0 / scale))


class Objectives:
    """The two losses of the PCL step as functions of both networks' parameters, so that the
    step (and the tests) differentiate exactly these:

    embedding(params, e_params, stats, lr, positives, negatives) -> (L_CLD, (stats, mean real
        logit, mean fake logit)); the SR image enters with its gradient stopped.
    sr(params, e_params, stats, lr, hr, positives, negatives) -> (L1 + alpha L_CL, (l1, cl,
        s_pos, s_neg)); the embedding parameters enter with their gradient stopped (frozen);
        with `pcl.released_code_gradient` the SR image's features do too.
    lr (B, h, w, 3), hr (B, H, W, 3) float in [0, 1]; positives / negatives (4, B, H, W, 3).
    """

    def __init__(self, model, net, config: ml_collections.ConfigDict):
        pc = config.pcl
        self.model, self.net = model, net
        self.alpha, self.form, self.block = float(pc.alpha), str(pc.cl_form), int(pc.feature_block)
        self.released, self.loss_kind = bool(pc.released_code_gradient), str(config.train.loss)

    def embedding(self, params, e_params, stats, lr, positives, negatives):
        net, block = self.net, self.block
        sr = jax.lax.stop_gradient(self.model.apply({"params": params}, lr))
        fake_sr, _, stats = embed(net, e_params, stats, sr, block)
        real_hr, _, stats = embed(net, e_params, stats, positives[0], block)
        real_aug, _, stats = embed_many(net, e_params, stats, positives[1:], block)
        fake_aug, _, stats = embed_many(net, e_params, stats, negatives[1:], block)
        real = jnp.concatenate([real_aug, real_hr[None]])
        fake = jnp.concatenate([fake_aug, fake_sr[None]])
        return dual_contrastive_loss(real, fake), (stats, jnp.mean(real), jnp.mean(fake))

    def sr(self, params, e_params, stats, lr, hr, positives, negatives):
        net, block = self.net, self.block
        e_params = jax.lax.stop_gradient(e_params)
        _, pos_feats, _ = embed_many(net, e_params, stats, positives, block)
        _, neg_feats, _ = embed_many(net, e_params, stats, negatives, block)
        pos_feats, neg_feats = jax.lax.stop_gradient((pos_feats, neg_feats))
        sr = self.model.apply({"params": params}, lr)
        l1 = pixel_loss(sr, hr, self.loss_kind)
        sr_in = jax.lax.stop_gradient(sr) if self.released else sr
        _, sr_feat, _ = embed(net, e_params, stats, sr_in, block)
        cl = contrastive_loss(sr_feat, pos_feats, neg_feats, self.form)
        s_pos = jnp.mean(similarities(sr_feat, pos_feats))
        s_neg = jnp.mean(similarities(sr_feat, neg_feats))
        return l1 + self.alpha * cl, (l1, cl, s_pos, s_neg)


def make_step(model, net, config: ml_collections.ConfigDict, sr_tx, embed_tx):
    """The PCL step `(state, batch) -> (state, metrics)` (not yet jitted).

    batch: {'hr': uint8 (B, H, W, 3)} (+ 'lr' uint8 (B, H/s, W/s, 3) with `data.paired`).
    metrics: loss (L1 + alpha L_CL), l1, cl, cld, grad_norm, embed_grad_norm, s_pos, s_neg
    (mean similarities of SR to the positives / negatives), real_logit, fake_logit.
    """
    scale, paired = int(config.model.scale), bool(config.data.paired)
    ema_decay, loss_kind = float(config.train.ema_decay), str(config.train.loss)
    if float(config.pcl.alpha) == 0.0:
        return make_l1_step(model, sr_tx, loss_kind, ema_decay, scale, paired)
    obj = Objectives(model, net, config)

    def step(state, batch):
        hr = to_float(batch["hr"])
        lr = to_float(batch["lr"]) if paired else make_lr(hr, scale)
        positives, negatives, _ = make_samples(step_key(state), hr, lr)
        # 1. embedding network: L_CLD, SR network fixed.
        (cld, (stats, real_logit, fake_logit)), e_grads = jax.value_and_grad(
            obj.embedding, argnums=1, has_aux=True)(state.params, state.aux[EMBED].params,
                                                    state.buffers[STATS], lr, positives,
                                                    negatives)
        state = apply_aux_update(state, EMBED, e_grads, cld, embed_tx)
        state = state.replace(buffers={**state.buffers, STATS: stats})
        # 2. SR network: L1 + alpha L_CL through the frozen, just-updated embedding.
        (loss, (l1, cl, s_pos, s_neg)), grads = jax.value_and_grad(obj.sr, has_aux=True)(
            state.params, state.aux[EMBED].params, state.buffers[STATS], lr, hr, positives,
            negatives)
        state = apply_update(state, grads, loss, sr_tx, ema_decay)
        return state, {"loss": loss, "l1": l1, "cl": cl, "cld": cld,
                       "grad_norm": global_norm(grads), "embed_grad_norm": global_norm(e_grads),
                       "s_pos": s_pos, "s_neg": s_neg, "real_logit": real_logit,
                       "fake_logit": fake_logit}
    return step


def make_l1_step(model, sr_tx, loss_kind: str, ema_decay: float, scale: int, paired: bool):
    """`pcl.alpha == 0`: the plain pixel-loss fine-tuning baseline with the same data, LR and
    optimizer (the embedding network is left untouched); metrics loss, l1, grad_norm."""
    def step(state, batch):
        hr = to_float(batch["hr"])
        lr = to_float(batch["lr"]) if paired else make_lr(hr, scale)
        loss, grads = jax.value_and_grad(
            lambda p: pixel_loss(model.apply({"params": p}, lr), hr, loss_kind))(state.params)
        state = apply_update(state, grads, loss, sr_tx, ema_decay)
        return state, {"loss": loss, "l1": loss, "grad_norm": global_norm(grads)}
    return step


# ------------------------------------------------------------------------------ state
def init_state(config: ml_collections.ConfigDict, model, net, sr_tx, embed_tx):
    """A fresh TrainState: SR params (from `init_from` when set), embedding aux + BN buffer."""
    scale, patch = int(config.model.scale), int(config.data.hr_patch)
    params = init_params(model, jax.random.key(config.seed), patch // scale)
    if config.init_from:
        params = pretrained_params(config, params)
    e_params, e_stats = init_embedding(net, jax.random.key(config.seed + 1), patch)
    return create_state(params, sr_tx, config.seed, aux={EMBED: (e_params, embed_tx)},
                        buffers={STATS: e_stats})


def pretrained_params(config: ml_collections.ConfigDict, like: Any) -> Any:
    """The deployed network of the run `config.init_from`, checked against config.model."""
    from jaxsr.run_config import load_run
    run = load_run(config.init_from)
    want = jax.tree.map(lambda x: tuple(np.shape(x)), like)
    got = jax.tree.map(lambda x: tuple(np.shape(x)), run.params)
    if jax.tree.structure(want) != jax.tree.structure(got) or want != got:
        raise ValueError(
            f"config.init_from={config.init_from!r} deploys model {dict(run.config.model)} whose "
            f"parameters do not fit config.model={dict(config.model)}; set config.model to the "
            "pre-trained run's model block (name, scale, global_residual, kwargs)")
    logging.info("SR network initialised from %s (step %d)", config.init_from, run.step)
    return jax.tree.map(jnp.asarray, run.params)


# ------------------------------------------------------------------------------ data
class ConcatSource:
    """Records of several sources one after another (random access, picklable)."""

    def __init__(self, sources):
        self.sources = list(sources)
        self.offsets = np.cumsum([0] + [len(s) for s in self.sources])

    def __len__(self) -> int:
        return int(self.offsets[-1])

    def __getitem__(self, i: int) -> dict:
        k = int(np.searchsorted(self.offsets, i, side="right") - 1)
        return self.sources[k][i - int(self.offsets[k])]


def _dirs(spec: str) -> list[str]:
    return [d.strip() for d in str(spec).split(",") if d.strip()]


def sources(config: ml_collections.ConfigDict) -> tuple[Any, list]:
    """(train source, eval pairs). `data.train_dir`: one or more comma-separated HR folders
    ('' = the shipped sample `data.sample`), or a paired folder with `data.paired`.
    `data.val_dir`: a paired folder (lr/ and hr/ at the scale, e.g. Set5 x4); empty = the last
    `data.val_count` training images with MATLAB-bicubic uint8 LR."""
    d, scale = config.data, int(config.model.scale)
    if d.paired:
        train, held = data_lib.paired_sources(d, scale)
    else:
        dirs = _dirs(d.train_dir) or [str(data_lib.resolve_dir("", d.sample))]
        train = ConcatSource([ImageFolderSource(pathlib.Path(x).expanduser()) for x in dirs])
        train, held = (train, None) if d.val_dir else data_lib.split_train_val(train, d.val_count)
    if d.val_dir:
        return train, pipeline.eval_pairs(PairedFolderSource(
            pathlib.Path(d.val_dir).expanduser(), lr_subdir=d.lr_subdir, hr_subdir=d.hr_subdir,
            scale=scale))
    if d.paired:
        return train, pipeline.eval_pairs(held)
    return train, bicubic_pairs(held, scale)


def bicubic_pairs(source, scale: int) -> list:
    """(MATLAB uint8 bicubic LR, HR cropped to a multiple of scale, name) for HR records."""
    pairs = []
    for i in range(len(source)):
        rec = source[i]
        hr = np.asarray(rec["hr"])
        hr = hr[:hr.shape[0] // scale * scale, :hr.shape[1] // scale * scale]
        pairs.append((imresize_uint8(hr, scale=1.0 / scale), hr, str(rec.get("name", i))))
    return pairs


# ------------------------------------------------------------------------------ the run
def deployable(config: ml_collections.ConfigDict) -> Deployable:
    """The deployed network: `config.model` from `workdir/checkpoints/` (`params`, or the EMA
    with `train.ema_decay > 0`)."""
    return Deployable.of(config.model, folder="", use_ema=config.train.ema_decay > 0,
                         method="pcl")


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict:
    """Trains the SR network with PCL per `config` in `workdir` (resumable); returns the summary
    (final evaluation next to the bicubic baseline)."""
    run = Run(config, workdir)
    run.describe(deployable(config))
    scale = int(config.model.scale)
    mesh_lib.check_batch_size(config.data.batch_size, run.mesh)
    if config.data.hr_patch % 16:
        raise ValueError(f"config.data.hr_patch={config.data.hr_patch}: PCL needs a multiple of "
                         "16 (Haar halving, then the embedding's stride-2 blocks); e.g. 64 or 192")
    train_src, pairs = sources(config)
    batches = data_lib.train_iterator(config.data, train_src, scale, config.seed,
                                      paired=bool(config.data.paired))
    model, net = build_model(config.model), build_embedding(config.pcl)
    sr_tx, embed_tx = sr_optimizer(config), embed_optimizer(config)
    state = init_state(config, model, net, sr_tx, embed_tx)
    logging.info("SR %s: %s parameters; embedding: %s parameters", config.model.name,
                 f"{_count(state.params):,}", f"{_count(state.aux[EMBED].params):,}")
    evaluator = Evaluator(model, pairs, scale, config.eval)
    baseline = evaluator.baseline()
    run.writer.write_scalars(0, baseline, prefix="baseline/")
    use_ema = config.train.ema_decay > 0
    start = evaluator(state.params if not use_ema else state.ema_params)[0]
    state, final = run.phase(
        "train", folder="", log_prefix="", state=state,
        step_fn=make_step(model, net, config, sr_tx, embed_tx), batches=batches,
        num_steps=config.train.num_steps, evaluate=evaluator.for_loop("eval/", use_ema),
        eval_every=config.train.eval_every, best_metric=config.train.best_metric,
        description=f"PCL {config.model.name} x{scale}")
    summary = {"step": int(jax.device_get(state.step)), "baseline": baseline, "start": start,
               "final": final, "gain_psnr_y": final.get("psnr_y", float("nan"))
               - start["psnr_y"]}
    logging.info("final PSNR-Y %.4f (start %.4f, bicubic %.4f)", final.get("psnr_y", np.nan),
                 start["psnr_y"], baseline["psnr_y"])
    return run.finish(summary)


def _count(tree) -> int:
    return sum(int(np.size(x)) for x in jax.tree.leaves(tree))
