"""Subprocess worker for tests/test_scale.py: trains the tiny supervised model a few steps on a
fixed batch and saves the parameters, on n local devices or as one of several processes."""
import argparse
import os
import sys

parser = argparse.ArgumentParser()
parser.add_argument("--devices", type=int, default=1, help="simulated CPU devices to use")
parser.add_argument("--process_id", type=int, default=None)
parser.add_argument("--num_processes", type=int, default=1)
parser.add_argument("--port", type=int, default=0)
parser.add_argument("--steps", type=int, default=4)
parser.add_argument("--out", required=True)
args = parser.parse_args()

import jax  # noqa: E402  (XLA_FLAGS is set by the caller before this import)
import numpy as np  # noqa: E402

if args.process_id is not None:
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(f"localhost:{args.port}", args.num_processes, args.process_id)

sys.path.insert(0, os.path.dirname(__file__))
from test_train import tiny_config  # noqa: E402

from jaxsr.model_factory import build_model, init_params  # noqa: E402
from jaxsr.train import mesh as mesh_lib  # noqa: E402
from jaxsr.train import supervised  # noqa: E402
from jaxsr.train.optim import make_optimizer  # noqa: E402
from jaxsr.train.state import create_state  # noqa: E402

# SGD: the update is linear in the gradient, so summation-order noise stays at float eps (Adam's
# m/sqrt(v) turns noise in near-zero gradient entries into +-lr steps).
# Charbonnier: L1's subgradient at exactly-zero residuals (pred == target, common at the ReZero
# start on integer images) flips between 0 and +-1 with XLA's fusion choices.
config = tiny_config(**{"optim.name": "sgd", "optim.lr": 0.05, "data.batch_size": 8,
                        "train.loss": "charbonnier"})
model = build_model(config.model)
params = init_params(model, jax.random.key(0), 16)
optimizer, _ = make_optimizer(config.optim, 100)
devices = jax.devices()[:args.devices] if args.process_id is None else jax.devices()
mesh = mesh_lib.make_mesh(devices)
sharding = mesh_lib.replicated(mesh)
state = jax.device_put(create_state(params, optimizer, 0), sharding)
step = supervised.compile_step(
        supervised.make_train_step(model, optimizer, config.train.loss, config.train.ema_decay), mesh, sharding)
rng = np.random.default_rng(0)
hr = rng.integers(0, 256, (args.steps, 8, 16, 16, 3), dtype=np.uint8)
lr = np.clip(hr.astype(int) + rng.integers(-20, 21, hr.shape), 0, 255).astype(np.uint8)
share = 8 // args.num_processes
lo = 0 if args.process_id is None else args.process_id * share
for i in range(args.steps):
    local = {"lr": lr[i, lo:lo + share], "hr": hr[i, lo:lo + share]}
    state, metrics = step(state, mesh_lib.put_global_batch(local, mesh))
flat = jax.tree.leaves(jax.device_get(state.params))
np.savez(args.out, *flat, loss=np.asarray(jax.device_get(metrics["loss"])))
print("devices", mesh.devices.size, "processes", jax.process_count(), "loss", metrics["loss"])
