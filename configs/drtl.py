"""DRTL: distortion-relation guided transfer learning for few-shot real-image SR.

Default (no variant): DRTL-P with embedding relations on the real City100 Nikon pairs the package
ships (same-size pairs: LR registered onto the HR grid, optical zoom ~2.9x), 4 shots, 4 held-out
pairs; auxiliary distortions synthesized on device from the shipped clean HR crops. A few minutes
on a 2-core CPU.

Variants (comma-separated after ':'):
  pretrain | meta | targetonly     transfer pipeline (DRTL-P, DRTL-M, or none = target-only)
  embedding | gradient | uniform   relation mode (uniform = the ablation without relations)
  same | x2 | x3 | x4              scale mode: same-size pairs, or LR = HR / s
  iphone                           target = the shipped City100 iPhone X pairs
  tiny                             smallest run (tests, notebooks; about a minute on CPU)
  paper                            full scale (EDSR-baseline, all 13 distortions, long schedules)
Examples:
  python -m jaxsr.main --config=configs/drtl.py
  python -m jaxsr.main --config=configs/drtl.py:meta,gradient
  python -m jaxsr.main --config=configs/drtl.py --config.data.target_dir=my_camera \
      --config.data.shots=5 --config.data.aux_dir=/data/DIV2K_HR
"""
import ml_collections

from jaxsr import config_blocks as blocks
from jaxsr.config_util import finalize, parse_variant

VARIANTS = ("pretrain", "meta", "targetonly", "embedding", "gradient", "uniform", "same", "x2",
            "x3", "x4", "iphone", "tiny", "paper")
# A CPU-sized set: the distortions a zoom camera plausibly shows, plus unrelated ones (rain,
# haze) that relation guidance should learn to down-weight.
DEFAULT_TASKS = ("bicubic", "gaussian_blur", "aniso_gaussian_blur", "defocus_blur",
                 "gaussian_noise", "jpeg", "rain", "haze")


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    v = parse_variant(arg, VARIANTS)
    c = ml_collections.ConfigDict()
    c.method = "drtl"
    c.seed = 0

    c.model = blocks.model()
    # Identity start with a unit residual gain and a zero-initialised final conv: with ReZero's
    # zero gain, target-only fine-tuning on 5 Nikon shots gained +0.17 dB in 1500 steps on
    # validation pairs, with zero_tail +0.95 dB (experiments/RESULTS.md, learning curves).
    c.model.residual_init = "zero_tail"

    c.drtl = ml_collections.ConfigDict()
    c.drtl.pipeline = "pretrain"          # 'pretrain' (DRTL-P) | 'meta' (DRTL-M) | 'none'
    c.drtl.tasks = DEFAULT_TASKS          # () = all registered defaults
    c.drtl.mode = "same"                  # synthetic LR: 'same' (back on the HR grid) | 'down'
    c.drtl.aux_scale = 3                  # resolution factor of the synthetic distortions
    c.drtl.task_map = "auto"              # per-task gradients: 'auto' ('unroll' on CPU, 'vmap'
    #                                       on GPU/TPU) | 'vmap' | 'map' (less memory) | 'unroll'
    #                                       (see reweight.map_over_tasks and RESULTS.md)
    c.drtl.shard = "batch"                # mesh axis for (K, B) batches: 'batch' | 'task'
    c.drtl.weighted_backward = "auto"     # DRTL-P with fixed weights: 'single' = one backward
    #                                       pass of sum_k w_k L_k (K x less gradient memory and
    #                                       all-reduce) | 'per_task' = K gradients combined by the
    #                                       relation-weighted transform (same update) | 'auto' =
    #                                       single on GPU/TPU, per_task on CPU (faster there)

    c.relation = ml_collections.ConfigDict()
    c.relation.mode = "embedding"         # 'embedding' | 'gradient' | 'uniform'
    c.relation.tau = 0.1                  # softmax temperature of the relation weights
    c.relation.clip_negative = False      # zero weight for tasks with cos <= 0
    c.relation.refresh_every = 25         # gradient mode: steps between weight refreshes
    c.relation.smoothing = 0.0            # gradient mode: EMA factor of the weights across
    #                                       refreshes (0 = use each refresh's weights as they are)
    c.relation.embed_dim = 64
    c.relation.widths = (32, 64, 128)
    c.relation.input_mode = "both"        # DRN input: 'raw' | 'normalize' | 'highpass' | 'both'
    c.relation.crop = 48                  # LR crop size seen by the DRN
    c.relation.pool_size = 256            # clean HR crops kept on device for DRN training
    c.relation.batch_per_task = 8
    c.relation.drn_steps = 300
    c.relation.drn_lr = 1e-3
    c.relation.logit_scale = 16.0
    c.relation.steps_per_call = 1          # DRN steps per jitted call (>1: lax.scan chunks)
    c.relation.target_crops_per_image = 16
    c.relation.mix_fraction = 0.0         # DRN samples that mix two distortions (soft labels
    #                                       0.5/0.5): targets with several distortions embed
    #                                       between their prototypes (RESULTS.md, issue 15)
    c.relation.build_graph_for_uniform = True  # still draw the graph in uniform mode

    c.data = ml_collections.ConfigDict()
    c.data.target_sample = "city100_nikon"
    c.data.target_dir = ""
    c.data.lr_subdir = "lr"
    c.data.hr_subdir = "hr"
    c.data.shots = 4
    c.data.shot_seed = 0                  # 0: the first N pairs by name; else a seeded choice
    c.data.eval_count = 0                 # held-out = the last N pairs (0 = all but the shots)
    c.data.aux_sample = "clean_hr"
    c.data.aux_dir = ""
    c.data.hr_patch = 48
    c.data.batch_size = 2                 # per auxiliary task (DRTL-M: support = query = this)
    c.data.target_batch = 4
    c.data.finetune_batch = 8
    c.data.worker_count = 0
    c.data.cache_images = 256             # decode sets up to this size once, keep in memory
    c.data.store = "auto"                # 'auto' (small sets in memory, larger ones in a decoded
    #                                      uint8 memory-mapped store) | 'memory' | 'disk' | 'none'
    c.data.store_dir = ""               # '' = $JAXSR_STORE_DIR, else ~/.cache/jaxsr/stores

    c.transfer = ml_collections.ConfigDict()
    c.transfer.num_steps = 300
    c.transfer.optim = blocks.optim(5e-4, warmup=10)

    c.meta = ml_collections.ConfigDict()
    c.meta.inner_lr = 1e-2
    c.meta.num_inner_steps = 1
    c.meta.first_order = False
    c.meta.remat = False                  # jax.checkpoint inner steps (hessian='autodiff')
    c.meta.pretrain_fraction = 0.5        # warm start: this fraction of transfer.num_steps is
    #                                       relation-weighted pre-training before MAML (MZSR's
    #                                       meta-transfer; 0 = MAML from the initialisation)
    c.meta.hessian = "hvp"                # second-order terms: 'hvp' (explicit backward pass with
    #                                       Hessian-vector products) | 'autodiff' (grad of scan)

    c.finetune = ml_collections.ConfigDict()
    c.finetune.num_steps = 200
    c.finetune.optim = blocks.optim(2e-4)
    c.finetune.ema_decay = 0.0
    c.finetune.eval_every = 100

    c.train = blocks.train()
    c.eval = blocks.evaluation()

    for name in ("pretrain", "meta"):
        if v.get(name):
            c.drtl.pipeline = name
    if v.get("targetonly"):
        c.drtl.pipeline = "none"
    for name in ("embedding", "gradient", "uniform"):
        if v.get(name):
            c.relation.mode = name
    if v.get("iphone"):
        c.data.target_sample = "city100_iphone"
        c.data.shots = 2
        c.drtl.aux_scale = 2
    for s in (2, 3, 4):
        if v.get(f"x{s}"):
            # LR = HR / s: targets are bicubic-style pairs (e.g. a tfds RealSR/DRealSR export or
            # the user's own folder); the shipped City100 pairs are same-size, so point
            # data.target_dir at such pairs.
            c.model.scale = s
            c.drtl.mode = "down"
            c.drtl.aux_scale = s
            c.relation.crop = 24
    if v.get("paper"):
        c.model.name = "edsr_baseline"
        c.model.kwargs = ml_collections.ConfigDict()
        c.drtl.tasks = ()
        c.data.hr_patch = 96
        c.data.batch_size = 8
        c.data.target_batch = 16
        c.data.finetune_batch = 16
        c.data.worker_count = 8
        c.relation.drn_steps = 5000
        c.relation.pool_size = 4096
        c.relation.batch_per_task = 16
        c.transfer.num_steps = 100_000
        c.transfer.optim = blocks.optim(2e-4, schedule="multistep", warmup=1000)
        c.transfer.optim.milestones = (0.5, 0.8)
        c.meta.num_inner_steps = 5
        c.finetune.num_steps = 5000
        c.finetune.optim = blocks.optim(5e-5)
        c.finetune.eval_every = 1000
        c.train.log_every = 100
        c.train.checkpoint_every = 2000
        c.eval.tile = 256
    if v.get("tiny"):
        c.model.kwargs = ml_collections.ConfigDict({"num_blocks": 1, "features": 8})
        c.drtl.tasks = ("bicubic", "gaussian_blur", "gaussian_noise", "haze")
        c.data.hr_patch = 24
        c.data.batch_size = 2
        c.data.target_batch = 2
        c.data.finetune_batch = 4
        c.relation.crop = 24
        c.relation.widths = (8, 16)
        c.relation.embed_dim = 16
        c.relation.pool_size = 32
        c.relation.batch_per_task = 4
        c.relation.drn_steps = 20
        c.relation.steps_per_call = 1
        c.relation.target_crops_per_image = 2
        c.relation.refresh_every = 5
        c.transfer.num_steps = 10
        c.finetune.num_steps = 10
        c.finetune.eval_every = 10
        c.train.log_every = 5
        c.train.checkpoint_every = 5
        c.eval.tile = 64
    return finalize(c)
