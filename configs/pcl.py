"""PCL-SR: fine-tune an SR network with L1 + alpha * L_CL against an embedding network trained
alongside with L_CLD (see jaxsr/methods/pcl/).

Units: images are in [0, 1] here. The released code trains on [0, 255] images (rgb_range 255),
so its L1 is 255x ours while L_CL (cosines) is unit-free: its alpha 5 (RCAN, InfoNCE form) and 3
(NLSN, cosine form) are alpha 5/255 and 3/255 here, and its gradient value clip 1 is 1/255.

Default: a small EDSR (4 blocks x 32) x4 from scratch on the 8 shipped clean HR images (last 2
held out, MATLAB-bicubic LR) with a reduced-width embedding network; CPU minutes.

Variants (comma-separated after ':'):
  tiny     smallest run for tests and the notebook (seconds)
  edsr     EDSR-baseline (EDSR-S of the paper's table), x4
  rcan     RCAN (10 groups x 20 blocks), x4, InfoNCE form, alpha 5/255, value clip 1/255
  cosine   the NLSN loss form: alpha 3/255, L_CL = mean s(SR, n) - mean s(SR, p)
  paper    DIV2K x4 as published: HR 192, batch 16, Adam 5e-5 (0.9, 0.999), 3 cosine restarts of
           200k steps, full-width embedding, RCAN backbone; set data.train_dir to the DIV2K HR
           folder and init_from to a pre-trained run
Examples:
  python -m jaxsr.main --config=configs/pcl.py:tiny --workdir=/tmp/pcl
  python -m jaxsr.main --config=configs/pcl.py:edsr --config.init_from=RUN_DIR --workdir=/tmp/f
  python -m jaxsr.main --config=configs/pcl.py:paper --config.data.train_dir=/data/DIV2K_HR \\
      --config.init_from=/runs/rcan_x4 --workdir=/runs/rcan_x4_pcl
"""
import ml_collections

from jaxsr import config_blocks as blocks
from jaxsr.config_util import finalize, parse_variant

VARIANTS = ("tiny", "edsr", "rcan", "cosine", "paper")
FULL_WIDTHS = (64, 64, 128, 128, 256, 256, 512, 512)   # the paper's discriminator
SMALL_WIDTHS = (16, 16, 32, 32, 64, 64, 128, 128)      # CPU-sized: a quarter of the channels


def embed_block(widths) -> ml_collections.ConfigDict:
    """The embedding network (a `jaxsr.model_factory.build_side_model` block)."""
    return ml_collections.ConfigDict({
        "name": "vgg_discriminator", "dtype": "auto",
        "kwargs": ml_collections.ConfigDict({"widths": tuple(widths),
                                             "strides": (1, 2, 1, 2, 1, 2, 1, 2)})})


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    v = parse_variant(arg, VARIANTS)
    c = ml_collections.ConfigDict()
    c.method = "pcl"
    c.seed = 0
    c.init_from = ""                      # workdir of a trained run whose network to fine-tune

    c.model = blocks.model(scale=4)

    c.pcl = ml_collections.ConfigDict()
    c.pcl.alpha = 5.0 / 255.0             # weight of L_CL next to L1 on [0, 1] images (see doc)
    c.pcl.cl_form = "infonce"             # 'infonce' (RCAN) or 'cosine' (NLSN)
    c.pcl.released_code_gradient = False  # True: SR features under no_grad as released (no L_CL
                                          # gradient reaches the SR net); False: paper's intent
    c.pcl.feature_block = 4               # contrastive features: this block, before activation
    c.pcl.embed_lr = 0.0                  # embedding Adam rate, constant; 0 = optim.lr
    c.pcl.clip_value = 0.0                # element-wise SR gradient clip (released --gclip); 0 off
    c.pcl.embed = embed_block(SMALL_WIDTHS)

    c.data = ml_collections.ConfigDict()
    c.data.sample = "clean_hr"            # shipped HR images used when train_dir is empty
    c.data.train_dir = ""                 # HR folder(s), comma-separated (LR made on device)
    c.data.paired = False                 # True: train_dir holds lr/ and hr/ pairs instead
    c.data.lr_subdir = "lr"
    c.data.hr_subdir = "hr"
    c.data.val_dir = ""                   # paired folder (lr/, hr/), e.g. ../shared/data/set5/x4
    c.data.val_count = 2                  # without val_dir: hold out this many training images
    c.data.batch_size = 8
    c.data.hr_patch = 64                  # multiple of 16; the paper uses 192
    c.data.augment = True
    c.data.worker_count = 0
    c.data.cache_images = 256
    c.data.store = "auto"                # 'auto' (small sets in memory, larger ones in a decoded
    #                                      uint8 memory-mapped store) | 'memory' | 'disk' | 'none'
    c.data.store_dir = ""               # '' = $JAXSR_STORE_DIR, else ~/.cache/jaxsr/stores
    c.data.synthetic_tasks = ()           # unused by PCL (bicubic LR is made by the step)
    c.data.mode = "down"

    c.optim = blocks.optim(2e-4, schedule="cosine_restarts", restarts=1, min_lr_ratio=0.0,
                           b2=0.999)
    c.train = blocks.train(checkpoint_every=100, keep_checkpoints=2, num_steps=300,
                           eval_every=100, best_metric="psnr_y")
    c.eval = blocks.evaluation(tile=48, overlap=8)

    if v.get("edsr"):
        c.model = blocks.model("edsr_baseline", scale=4, kwargs={}, global_residual=False)
    if v.get("rcan") or v.get("paper"):
        c.model = blocks.model("rcan", scale=4, kwargs={}, global_residual=False)
        c.pcl.clip_value = 1.0 / 255.0
    if v.get("cosine"):
        c.pcl.cl_form = "cosine"
        c.pcl.alpha = 3.0 / 255.0
    if v.get("paper"):
        c.pcl.embed = embed_block(FULL_WIDTHS)
        c.data.batch_size = 16
        c.data.hr_patch = 192
        c.data.worker_count = 8
        c.optim = blocks.optim(5e-5, schedule="cosine_restarts", restarts=3, min_lr_ratio=0.0,
                               b2=0.999)
        c.train.num_steps = 600_000
        c.train.log_every = 100
        c.train.eval_every = 5000
        c.train.checkpoint_every = 5000
        c.eval = blocks.evaluation(tile=128, overlap=16)
    if v.get("tiny"):
        c.model.kwargs = ml_collections.ConfigDict({"num_blocks": 1, "features": 8})
        c.pcl.embed = embed_block((4, 4, 8, 8, 8, 8, 8, 8))
        c.data.batch_size = 4
        c.data.hr_patch = 32
        c.train.num_steps = 10
        c.train.log_every = 5
        c.train.eval_every = 10
        c.train.checkpoint_every = 5
        c.eval = blocks.evaluation(tile=32, overlap=4, num_images=1)
    return finalize(c)
