"""Held-out PSNR/SSIM of the *transferred* models of a fewshot_realsr run, before fine-tuning.

Separates what transfer learned from what fine-tuning added: for every (seed, shots, method) row
of OUT/results.json with a transfer phase, restores the last transfer checkpoint (uniform rows:
the shared per-seed one) and evaluates it on the same held-out pairs. Writes
OUT/pre_finetune.json and prints a table with the after-fine-tune PSNR-Y beside it.

  python experiments/fewshot_pre_finetune.py --data_dir ../shared/data/city100/nikon_d5500 \\
      --out_dir runs/fewshot_nikon --out_dir runs/fewshot_nikon_meta
"""
from __future__ import annotations

import functools
import json
import pathlib
import sys

from absl import app, flags

_DATA = flags.DEFINE_string("data_dir", None, "Paired folder of the run.", required=True)
_OUTS = flags.DEFINE_multi_string("out_dir", [], "fewshot_realsr output folder(s).")
_CONFIG = flags.DEFINE_string("config", "configs/drtl.py", "Base DRTL config file.")
_VARIANT = flags.DEFINE_string("variant", "", "Config variant string of the run.")
_EVAL = flags.DEFINE_integer("eval_count", 10, "Held-out pairs (the last N by name).")


def transfer_dir(out: pathlib.Path, row: dict) -> pathlib.Path | None:
    """Where a row's transfer checkpoints are (None for target-only rows)."""
    method = row["method"]
    if method == "target_only":
        return None
    if method.startswith(("uniform", "only_")):  # target-independent: one per seed
        return out / f"seed{row['seed']}" / f"shared_{method}" / "transfer"
    return out / f"seed{row['seed']}" / f"shots{row['shots']}" / method / "transfer"


def main(argv):
    del argv
    from jaxsr.logs import quiet_library_logs
    quiet_library_logs()
    from jaxsr.checkpoint import restore_params
    from jaxsr.config_util import load_config_file
    from jaxsr.methods.drtl import data as drtl_data
    from jaxsr.model_factory import build_model
    from jaxsr.train import evaluate as eval_lib
    from jaxsr.train import mesh as mesh_lib
    from jaxsr.train.steps import make_apply_fn

    config = load_config_file(_CONFIG.value, _VARIANT.value)
    config.unlock()
    config.data.target_dir = _DATA.value
    config.data.eval_count = _EVAL.value
    config.data.shots = 1
    scale = int(config.model.scale)
    split = drtl_data.split_target(config.data, scale)
    pairs = [(r["lr"], r["hr"], str(r["name"]))
             for r in (split.heldout[i] for i in range(len(split.heldout)))]
    apply = make_apply_fn(build_model(config.model), mesh_lib.make_mesh())
    ev = config.eval
    cache: dict[str, dict] = {}
    lines = ["| seed | shots | method | before fine-tune PSNR-Y | SSIM-Y | after PSNR-Y |",
             "|---|---|---|---|---|---|"]
    for folder in map(pathlib.Path, _OUTS.value):
        rows = json.loads((folder / "results.json").read_text())
        rows_out = []
        for row in rows:
            where = transfer_dir(folder, row)
            if where is None:
                continue
            if str(where) not in cache:
                params, _ = restore_params(where)
                mean, _, _ = eval_lib.evaluate_pairs(
                    functools.partial(apply, params), pairs, scale, tile=ev.tile,
                    overlap=ev.overlap, batch_tiles=ev.batch_tiles)
                cache[str(where)] = {k: float(v) for k, v in mean.items()}
            before = cache[str(where)]
            rows_out.append({"seed": row["seed"], "shots": row["shots"], "method": row["method"],
                             "before": before, "after": row["metrics"]})
            lines.append(f"| {row['seed']} | {row['shots']} | {row['method']} | "
                         f"{before['psnr_y']:.3f} | {before['ssim_y']:.4f} | "
                         f"{row['metrics']['psnr_y']:.3f} |")
        (folder / "pre_finetune.json").write_text(json.dumps(rows_out, indent=2))
    base, _, _ = eval_lib.evaluate_pairs(None, pairs, scale)
    print(f"identity/bicubic PSNR-Y {base['psnr_y']:.3f}, SSIM-Y {base['ssim_y']:.4f}")
    print("\n".join(lines))


if __name__ == "__main__":
    sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
    app.run(main)
