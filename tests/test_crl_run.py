"""A whole CRL-SR run through the harness (configs/crl.py:tiny): interrupted after its step-4
checkpoint and resumed, it ends bit-identical to an uninterrupted run (every leaf: E_l +
decoder, each auxiliary network and its optimizer state); predict and export of the run carry
only the deployed network (E_l + SR decoder) and reproduce its output."""
import json
import pathlib

import jax
import numpy as np
import pytest

from jaxsr.checkpoint import Checkpointer
from jaxsr.config_util import load_config_file, override
from jaxsr.methods.crl import train as crl

REPO = pathlib.Path(__file__).resolve().parents[1]
AUX_WORDS = ("lr_head", "details_remover", "extractor", "rec_decoder", "stem", "fc1", "fc2")


def tiny():
    config = load_config_file(str(REPO / "configs" / "crl.py"), "tiny")
    for k, v in {"train.num_steps": 8, "train.checkpoint_every": 4, "train.eval_every": 8,
                 "train.log_every": 4}.items():
        override(config, k, v)
    return config


class Interrupted(RuntimeError):
    pass


class StopAfter:
    """Batches that raise (like a kill) when batch number `count + 1` is asked for."""
    def __init__(self, batches, count):
        self.batches, self.count, self.seen = batches, count, 0

    def __iter__(self):
        return self

    def __next__(self):
        self.seen += 1
        if self.seen > self.count:
            raise Interrupted("simulated kill")
        return next(self.batches)

    def get_state(self):
        return self.batches.get_state()

    def set_state(self, s):
        self.batches.set_state(s)


def _flat(tree, prefix=""):
    out = {}
    if isinstance(tree, dict):
        for k, v in tree.items():
            out.update(_flat(v, f"{prefix}/{k}"))
    elif isinstance(tree, (list, tuple)):
        for i, v in enumerate(tree):
            out.update(_flat(v, f"{prefix}/{i}"))
    else:
        out[prefix] = np.asarray(tree)
    return out


def test_resume_is_exact_and_predict_export_carry_only_the_deployed_network(tmp_path,
                                                                             monkeypatch):
    config = tiny()
    ref_summary = crl.train_and_evaluate(config, str(tmp_path / "ref"))
    # Interrupted after 5 batches: the step-4 checkpoint is committed, step 8 never happens.
    original = crl.data_lib.train_iterator
    monkeypatch.setattr(crl.data_lib, "train_iterator",
                        lambda *a, **k: StopAfter(original(*a, **k), 5))
    with pytest.raises(Interrupted):
        crl.train_and_evaluate(config, str(tmp_path / "victim"))
    monkeypatch.setattr(crl.data_lib, "train_iterator", original)
    assert Checkpointer(tmp_path / "victim").all_steps() == [4]
    summary = crl.train_and_evaluate(config, str(tmp_path / "victim"))
    assert summary["final"] == ref_summary["final"]
    ref_raw, ref_meta = Checkpointer(tmp_path / "ref").restore_raw()
    raw, meta = Checkpointer(tmp_path / "victim").restore_raw()
    assert meta["step"] == ref_meta["step"] == 8
    a, b = _flat(ref_raw), _flat(raw)
    assert a.keys() == b.keys() and any("details_remover" in k for k in a)
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)

    # The deployed network: E_l + SR decoder only.
    dep = json.loads((tmp_path / "victim" / "deployable.json").read_text())
    assert dep["method"] == "crl" and dep["model"]["name"] == "crl_sr"
    from jaxsr import predict
    from jaxsr import export as ex
    restorer = predict.load_restorer(workdir=str(tmp_path / "victim"))
    from jaxsr.run_config import load_run
    run = load_run(tmp_path / "victim")
    names = list(_flat(jax.device_get(run.params)))
    assert names and not any(w in n for n in names for w in AUX_WORDS)
    assert {n.split("/")[2] for n in names if n.startswith("/net/")} == {"encoder", "decoder"}
    x = np.random.default_rng(0).random((16, 16, 3)).astype(np.float32)
    want = np.clip(np.asarray(run.model.apply({"params": run.params}, x[None]))[0], 0, 1)
    np.testing.assert_allclose(predict.restore_array(restorer, x, tile=16, overlap=0), want,
                               atol=1e-5)
    path = ex.export_run(tmp_path / "victim", tmp_path / "artifact", platforms=["cpu"])
    with np.load(pathlib.Path(path) / "params.npz") as npz:
        keys = list(npz.keys())
    assert keys and not any(w in k for k in keys for w in AUX_WORDS)
    loaded = ex.load(path)
    np.testing.assert_allclose(np.asarray(loaded(x[None]))[0], want, atol=1e-5)
