"""Supervised SR/restoration (the foundation trainer).

Default: a small EDSR with a global residual, trained on the real City100 Nikon pairs the package
ships (same-size pairs, scale 1), evaluated on 2 held-out pairs against the identity baseline;
a few minutes on a 2-core CPU.

Variants (comma-separated after ':'):
  tiny       smallest run for tests and smoke checks (seconds to a minute on CPU)
  paper      EDSR-baseline x4 on DIV2K-style pairs at the published scale (set data.train_dir)
  x2,x3,x4   bicubic SR at that scale on the shipped clean HR images (LR synthesized on device)
  synthetic  train on the shipped clean HR images with the default auxiliary distortion tasks
Examples:
  python -m jaxsr.main --config=configs/supervised.py
  python -m jaxsr.main --config=configs/supervised.py:x4 --config.train.num_steps=2000
  python -m jaxsr.main --config=configs/supervised.py:paper --config.data.train_dir=/data/DIV2K_pairs
"""
import ml_collections

from jaxsr import config_blocks as blocks
from jaxsr.config_util import finalize, parse_variant

VARIANTS = ("tiny", "paper", "x2", "x3", "x4", "synthetic")


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    v = parse_variant(arg, VARIANTS)
    c = ml_collections.ConfigDict()
    c.method = "supervised"
    c.seed = 0

    c.model = blocks.model()

    c.data = ml_collections.ConfigDict()
    c.data.sample = "city100_nikon"      # shipped sample used when train_dir is empty
    c.data.train_dir = ""
    c.data.lr_subdir = "lr"
    c.data.hr_subdir = "hr"
    c.data.val_dir = ""
    c.data.val_count = 2
    c.data.batch_size = 8
    c.data.hr_patch = 48
    c.data.augment = True
    c.data.worker_count = 0
    c.data.cache_images = 256            # decode sets up to this size once, keep in memory
    c.data.store = "auto"                # 'auto' (small sets in memory, larger ones in a decoded
    #                                      uint8 memory-mapped store) | 'memory' | 'disk' | 'none'
    c.data.store_dir = ""               # '' = $JAXSR_STORE_DIR, else ~/.cache/jaxsr/stores
    c.data.synthetic_tasks = ()
    c.data.mode = "down"                 # synthetic tasks: 'down' (LR smaller) or 'same'

    c.optim = blocks.optim(5e-4, warmup=20, min_lr_ratio=0.01)
    c.train = blocks.train(checkpoint_every=200, keep_checkpoints=3, ema_decay=0.99,
                           num_steps=600, eval_every=200, best_metric="psnr_y")
    c.eval = blocks.evaluation()

    if v.get("x2") or v.get("x3") or v.get("x4") or v.get("synthetic"):
        c.data.sample = "clean_hr"
        c.data.val_count = 2
        c.data.synthetic_tasks = ("bicubic",)
        for s in (2, 3, 4):
            if v.get(f"x{s}"):
                c.model.scale = s
        c.data.hr_patch = 48 if c.model.scale != 3 else 48
        c.eval.tile = 64
    if v.get("synthetic"):
        from jaxsr.degradations import default_auxiliary_tasks
        c.data.synthetic_tasks = tuple(default_auxiliary_tasks())
        c.data.mode = "same" if c.model.scale == 1 else "down"
    if v.get("paper"):
        c.model.name = "edsr_baseline"
        c.model.scale = 4
        c.model.global_residual = False
        c.model.kwargs = ml_collections.ConfigDict()
        c.data.batch_size = 16
        c.data.hr_patch = 192
        c.data.worker_count = 8
        c.optim.lr = 1e-4
        c.optim.schedule = "multistep"
        c.optim.milestones = (200_000,)
        c.optim.warmup_steps = 0
        c.train.num_steps = 300_000
        c.train.ema_decay = 0.999
        c.train.log_every = 100
        c.train.eval_every = 5000
        c.train.checkpoint_every = 5000
        c.eval.tile = 256
    if v.get("tiny"):
        c.model.kwargs = ml_collections.ConfigDict({"num_blocks": 1, "features": 8})
        c.data.batch_size = 4
        c.data.hr_patch = 24
        c.train.num_steps = 20
        c.train.log_every = 5
        c.train.eval_every = 10
        c.train.checkpoint_every = 10
        c.optim.warmup_steps = 0
        c.eval.tile = 64
    return finalize(c)
