"""IRConStyle (Fan, Zhao, Chang, arXiv 2402.15784): a MoCo-trained ConStyle encoder whose
per-scale features and latent code are injected into a U-Net restorer.

  model.py   the deployed network (ConStyle encoder + restorer, one params tree), registered as
             `constyle_nafnet`, `constyle_unet` and the generic `constyle` in jaxsr.models
  moco.py    momentum key encoder update and the queue of negatives with its pointer
  losses.py  InfoNCE + content + style, composed from jaxsr.losses
  train.py   the two-phase schedule on the run harness (`train_and_evaluate`, `deployable`)

This package's __init__ imports nothing heavy, so `jaxsr.models` can import model.py.
"""
