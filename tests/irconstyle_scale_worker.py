"""Subprocess worker for tests/test_irconstyle_scale.py: 2 ConStyle steps + 1 L1 step of the tiny
IRConStyle model on fixed batches on n simulated CPU devices; saves every leaf of params and
buffers (key encoder, queue, pointer)."""
import argparse
import os
import sys

parser = argparse.ArgumentParser()
parser.add_argument("--devices", type=int, default=1)
parser.add_argument("--out", required=True)
parser.add_argument("--steps", type=int, default=3)
args = parser.parse_args()

import jax  # noqa: E402  (XLA_FLAGS set by the caller)
import numpy as np  # noqa: E402

sys.path.insert(0, os.path.dirname(__file__))
from test_irconstyle import _setup, tiny_config  # noqa: E402

from jaxsr.methods.irconstyle import train as ic_train  # noqa: E402
from jaxsr.train import mesh as mesh_lib  # noqa: E402
from jaxsr.train.steps import compile_step  # noqa: E402

# SGD and Charbonnier for the reasons given in tests/scale_worker.py (float-eps noise stays
# float-eps; no L1 subgradient flips at exactly-zero residuals).
config = tiny_config(**{"optim.name": "sgd", "optim.lr": 0.01, "train.loss": "charbonnier",
                        "data.batch_size": 8, "constyle.steps": 2, "train.num_steps": 3})
net, tx, state, degrade = _setup(config)
mesh = mesh_lib.make_mesh(jax.devices()[:args.devices])
rep = mesh_lib.replicated(mesh)
state = jax.device_put(state, rep)
s1 = compile_step(ic_train.make_constyle_step(net, tx, config, degrade), mesh, rep)
s2 = compile_step(ic_train.make_restore_step(net, tx, config, degrade), mesh, rep)
rng = np.random.default_rng(0)
p = config.data.hr_patch
for i in range(args.steps):
    hr = rng.integers(0, 256, (8, p, p, 3), dtype=np.uint8)
    state, metrics = (s1 if i < 2 else s2)(state, mesh_lib.put_global_batch({"hr": hr}, mesh))
flat = jax.tree.leaves(jax.device_get({"params": state.params, "buffers": state.buffers}))
np.savez(args.out, *flat, loss=np.asarray(jax.device_get(metrics["loss"])))
print("devices", mesh.devices.size, "loss", metrics["loss"])
