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
parser.add_argument("--step", default="supervised", choices=["supervised", "drtl_pretrain",
                                                              "drtl_meta"])
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
from jaxsr.train import steps as train_steps  # noqa: E402
from jaxsr.train.optim import make_optimizer  # noqa: E402
from jaxsr.train.state import create_state  # noqa: E402

# SGD: the update is linear in the gradient, so summation-order noise stays at float eps (Adam's
# m/sqrt(v) turns noise in near-zero gradient entries into +-lr steps). Charbonnier: L1's
# subgradient at exactly-zero residuals (pred == target, common at the ReZero start on integer
# images) flips between 0 and +-1 with XLA's fusion choices.
config = tiny_config(**{"optim.name": "sgd", "optim.lr": 0.05, "data.batch_size": 8,
                        "train.loss": "charbonnier"})
model = build_model(config.model)
params = init_params(model, jax.random.key(0), 16)
devices = jax.devices()[:args.devices] if args.process_id is None else jax.devices()
mesh = mesh_lib.make_mesh(devices)
sharding = mesh_lib.replicated(mesh)
rng = np.random.default_rng(0)
share = 8 // args.num_processes
lo = 0 if args.process_id is None else args.process_id * share
if args.step == "supervised":
    optimizer, _ = make_optimizer(config.optim, 100)
    state = jax.device_put(create_state(params, optimizer, 0), sharding)
    step = train_steps.compile_step(
        train_steps.make_train_step(model, optimizer, config.train.loss, config.train.ema_decay),
        mesh, sharding)
    hr = rng.integers(0, 256, (args.steps, 8, 16, 16, 3), dtype=np.uint8)
    lr = np.clip(hr.astype(int) + rng.integers(-20, 21, hr.shape), 0, 255).astype(np.uint8)
    batches = [{"lr": lr[i, lo:lo + share], "hr": hr[i, lo:lo + share]}
               for i in range(args.steps)]
    put = lambda b: mesh_lib.put_global_batch(b, mesh)  # noqa: E731
else:  # DRTL-P / DRTL-M step: aux batches (K=3, 8 per task) sharded on the per-task batch axis.
    import optax
    from test_drtl_pipeline import TASKS, drtl_config
    from jaxsr.methods.drtl import steps as drtl_steps
    from jaxsr.methods.drtl.reweight import relation_weighted_sum
    meta = args.step == "drtl_meta"
    config = drtl_config(**{"drtl.tasks": TASKS, "drtl.aux_scale": 2,
                            "train.loss": "charbonnier", "relation.mode": "gradient",
                            "relation.refresh_every": 2})
    optimizer = optax.with_extra_args_support(optax.chain(
        relation_weighted_sum(weights=np.array([0.5, 0.3, 0.2])), optax.sgd(0.05)))
    state = jax.device_put(create_state(params, optimizer, 0), sharding)
    build = drtl_steps.make_meta_step if meta else drtl_steps.make_pretrain_step
    shardings = {"aux_hr": mesh_lib.batch_sharding(mesh, 1),
                 "target_lr": mesh_lib.batch_sharding(mesh),
                 "target_hr": mesh_lib.batch_sharding(mesh)}
    step = train_steps.compile_step(build(model, optimizer, config, TASKS), mesh, sharding,
                                   shardings)
    per_task = 16 if meta else 8  # DRTL-M splits each task batch into support and query
    batches = []
    for i in range(args.steps):
        aux = rng.integers(0, 256, (3, per_task, 16, 16, 3), dtype=np.uint8)
        t_hr = rng.integers(0, 256, (8, 16, 16, 3), dtype=np.uint8)
        pick = np.r_[lo:lo + share] if not meta else np.r_[lo:lo + share, 8 + lo:8 + lo + share]
        batches.append({"aux_hr": aux[:, pick],
                        "target_lr": t_hr[lo:lo + share], "target_hr": t_hr[lo:lo + share]})
    put = lambda b: {k: jax.make_array_from_process_local_data(shardings[k], v)  # noqa: E731
                     for k, v in b.items()}
for batch in batches:
    state, metrics = step(state, put(batch))
flat = jax.tree.leaves(jax.device_get(state.params))
np.savez(args.out, *flat, loss=np.asarray(jax.device_get(metrics["loss"])))
print("devices", mesh.devices.size, "processes", jax.process_count(), "loss", metrics["loss"])
