"""IRConStyle: ConStyle encoder (MoCo + content + style losses) injected into a U-Net restorer.

Default: ConStyle on a small 3-level NAFNet-style restorer (width 16, one block per level),
deraining with synthetic rain on the shipped clean images; a few CPU minutes.

Variants (comma-separated after ':'):
  task      derain (default) | dehaze | denoise15 | denoise25 | denoise50 | deblur
  size      tiny (tests, seconds) | nafnet (ConStyle-NAFNet 48 / [7,8,9] / 9 / [9,8,7]) |
            unet (ConStyle on the plain U-Net) | paper (published schedule: 128 px, batch 16,
            AdamW 3e-4 wd 1e-4, EMA 0.999, constant 243k then cosine to 1e-6 at 703k,
            ConStyle losses for 250k steps, queue 65760)
  data=DIR  train on real pairs DIR/{rain,clean}/NNN.png (comma-free; use --config.data.*
            for several roots), e.g. data=../shared/data/rain100l
Examples:
  python -m jaxsr.main --config=configs/irconstyle.py:tiny
  python -m jaxsr.main --config=configs/irconstyle.py:denoise25,nafnet \
      --config.data.clean_dir=../shared/data/bsd100/hr
  python -m jaxsr.main --config=configs/irconstyle.py:paper,derain \
      --config.data.pair_dirs="('/data/Rain14000',)" --config.data.val_dirs="('/data/Rain100H',)"
"""
import ml_collections

from jaxsr import config_blocks as blocks
from jaxsr.config_util import ConfigError, finalize, parse_variant

TASKS = ("derain", "dehaze", "denoise15", "denoise25", "denoise50", "deblur")
SIZES = ("tiny", "nafnet", "unet", "paper")
VARIANTS = TASKS + SIZES + ("data",)


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    v = parse_variant(arg, VARIANTS)
    tasks = [t for t in TASKS if v.get(t)]
    if len(tasks) > 1:
        raise ConfigError(f"pick one task variant, got {tasks}")
    task = tasks[0] if tasks else "derain"
    c = ml_collections.ConfigDict()
    c.method = "irconstyle"
    c.seed = 0

    # The deployed network: ConStyle encoder + restorer (jaxsr/methods/irconstyle/model.py).
    c.model = blocks.model("constyle", scale=1, global_residual=False, kwargs={
        "restorer": "nafnet", "width": 16, "enc_blocks": (1, 1, 1), "middle_blocks": 1,
        "dec_blocks": (1, 1, 1)})

    c.constyle = ml_collections.ConfigDict()
    c.constyle.steps = 300            # phase 1 (ConStyle losses) length; then encoder frozen
    c.constyle.queue_size = 4096      # K negatives (published 65760)
    c.constyle.temperature = 0.07
    c.constyle.momentum = 0.999       # key encoder EMA (parameters only)
    c.constyle.normalize = True       # L2-normalised codes (MoCo); False = the code's raw dots
    c.constyle.enqueue = "query"      # 'query' (the published code) | 'key' (standard MoCo)
    c.constyle.w_infonce = 1.0        # loss weights (all 1 in the paper)
    c.constyle.w_content = 1.0
    c.constyle.w_style = 1.0

    c.data = ml_collections.ConfigDict()
    c.data.pair_dirs = ()             # real pairs (roots); empty = synthetic on clean images
    c.data.val_dirs = ()              # default: pair_dirs with val_range
    c.data.lr_subdir = "rain"
    c.data.hr_subdir = "clean"
    c.data.train_range = ""           # e.g. '1-40' (numeric stems, inclusive); '' = all
    c.data.val_range = ""
    c.data.clean_dir = ""             # synthetic: clean images ('' = shipped clean_hr)
    c.data.val_clean_dir = ""         # '' = the last val_count images of clean_dir
    c.data.val_count = 2
    c.data.degradation = {"derain": "rain", "dehaze": "haze", "deblur": "blur"}.get(task, "noise")
    c.data.noise_sigma = float(task[7:]) if task.startswith("denoise") else 25.0
    c.data.batch_size = 8
    c.data.hr_patch = 64
    c.data.augment = True
    c.data.worker_count = 0
    c.data.cache_images = 256
    c.data.store = "auto"                # 'auto' (small sets in memory, larger ones in a decoded
    #                                      uint8 memory-mapped store) | 'memory' | 'disk' | 'none'
    c.data.store_dir = ""               # '' = $JAXSR_STORE_DIR, else ~/.cache/jaxsr/stores

    c.optim = blocks.optim(5e-4, schedule="cosine", warmup=0, min_lr_ratio=0.01, name="adamw",
                           weight_decay=1e-4)
    c.optim.constant_fraction = 0.35  # 'constant_cosine': share of steps at constant lr
    c.train = blocks.train(checkpoint_every=200, keep_checkpoints=2, ema_decay=0.0,
                           num_steps=600, eval_every=300, best_metric="psnr_y")
    c.eval = blocks.evaluation(tile=128, overlap=16)

    if v.get("data"):
        c.data.pair_dirs = (str(v["data"]),)
    if v.get("nafnet"):
        c.model.name = "constyle_nafnet"
        c.model.kwargs = ml_collections.ConfigDict()
    if v.get("unet"):
        c.model.name = "constyle_unet"
        c.model.kwargs = ml_collections.ConfigDict()
    if v.get("paper"):
        if not v.get("unet"):
            c.model.name = "constyle_nafnet"
            c.model.kwargs = ml_collections.ConfigDict()
        c.data.batch_size = 16
        c.data.hr_patch = 128
        c.data.worker_count = 8
        c.optim.lr = 3e-4
        c.optim.b2 = 0.999
        c.optim.schedule = "constant_cosine"
        c.optim.constant_fraction = 243_000 / 703_000
        c.optim.min_lr_ratio = 1e-6 / 3e-4
        c.train.num_steps = 703_000
        c.constyle.steps = 250_000
        c.constyle.queue_size = 65760
        c.train.ema_decay = 0.999
        c.train.log_every = 100
        c.train.eval_every = 5000
        c.train.checkpoint_every = 5000
        c.eval.tile = 256
    if v.get("tiny"):
        c.model.name = "constyle"
        c.model.kwargs = ml_collections.ConfigDict({
            "restorer": "nafnet", "width": 8, "enc_blocks": (1, 0, 0), "middle_blocks": 1,
            "dec_blocks": (0, 0, 1),
            "encoder_stages": ((4, 8), (8, 16), (16, 16), (16, 32)), "encoder_hidden": (16,),
            "code_dim": 16})
        c.constyle.queue_size = 32
        c.constyle.steps = 6
        c.data.batch_size = 4
        c.data.hr_patch = 32
        c.train.num_steps = 12
        c.train.log_every = 3
        c.train.eval_every = 6
        c.train.checkpoint_every = 6
        c.eval.tile = 64
        c.eval.overlap = 8
        c.eval.num_images = 1
    return finalize(c)
