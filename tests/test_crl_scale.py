"""CRL-SR's step on 8 simulated CPU devices (batch sharded over 'data') equals 1 device: every
leaf of the state (deployed network and every auxiliary network) after 3 steps.

Run as a script (`python tests/test_crl_scale.py --devices N --out FILE`) it is the worker; the
test starts two with XLA_FLAGS=--xla_force_host_platform_device_count=8 (as tests/test_scale.py).
"""
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest

HERE = pathlib.Path(__file__).resolve()
REPO = HERE.parents[1]


def _run(out, devices):
    env = dict(os.environ, JAX_PLATFORMS="cpu",
               XLA_FLAGS="--xla_force_host_platform_device_count=8")
    return subprocess.Popen([sys.executable, str(HERE), "--devices", str(devices), "--out",
                             str(out)], env=env, cwd=REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)


@pytest.mark.slow  # two subprocesses (1 and 8 simulated devices), each compiling the step
def test_crl_step_on_eight_devices_equals_one_device(tmp_path):
    procs = [_run(tmp_path / "one.npz", 1), _run(tmp_path / "eight.npz", 8)]
    outs = [p.communicate(timeout=600)[0] for p in procs]
    for p, o in zip(procs, outs):
        assert p.returncode == 0, o[-3000:]
    assert "devices 8" in outs[1] and "devices 1" in outs[0]
    one, eight = np.load(tmp_path / "one.npz"), np.load(tmp_path / "eight.npz")
    assert sorted(one.files) == sorted(eight.files)
    assert any("details_remover" in k for k in one.files)
    for k in one.files:
        np.testing.assert_allclose(one[k], eight[k], rtol=1e-4, atol=1e-6, err_msg=k)


def worker(devices: int, out: str) -> None:
    import jax
    sys.path.insert(0, str(REPO))
    from jaxsr.config_util import load_config_file, override
    from jaxsr.methods.crl import train as crl
    from jaxsr.train import mesh as mesh_lib
    from jaxsr.train.steps import compile_step
    config = load_config_file(str(REPO / "configs" / "crl.py"), "tiny")
    # SGD + Charbonnier: updates linear in the gradient and no L1 subgradient flips, so the
    # only difference left is summation order (see tests/scale_worker.py).
    for k, v in {"optim.name": "sgd", "optim.lr": 0.05, "train.loss": "charbonnier",
                 "data.batch_size": 8}.items():
        override(config, k, v)
    terms, nets = crl.Terms.of(config), crl.build_networks(config)
    tx, aux_tx = crl.make_optimizers(config)
    state = crl.init_state(config, nets, terms, tx, aux_tx)
    mesh = mesh_lib.make_mesh(jax.devices()[:devices])
    step = compile_step(crl.make_step(nets, terms, config, tx, aux_tx,
                                      crl.level_spec(config, "train")),
                        mesh, mesh_lib.replicated(mesh))
    state = jax.device_put(state, mesh_lib.replicated(mesh))
    rng = np.random.default_rng(0)
    p = config.data.hr_patch
    for _ in range(3):
        hr = rng.integers(0, 256, (8, p, p, 3), dtype=np.uint8)
        state, metrics = step(state, mesh_lib.put_global_batch({"hr": hr}, mesh))
    flat = {jax.tree_util.keystr(path): np.asarray(leaf) for path, leaf in
            jax.tree_util.tree_flatten_with_path(jax.device_get(
                {"params": state.params, "aux": {n: a.params for n, a in state.aux.items()},
                 "loss": metrics["loss"]}))[0]}
    np.savez(out, **flat)
    print(f"devices {mesh.devices.size}")


if __name__ == "__main__":
    import argparse
    parser = argparse.ArgumentParser()
    parser.add_argument("--devices", type=int, required=True)
    parser.add_argument("--out", required=True)
    a = parser.parse_args()
    worker(a.devices, a.out)
