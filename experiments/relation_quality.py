"""How right are DRTL's embedding relations? Spearman correlation with measured oracle relations.

The oracle relation of an auxiliary distortion is the held-out PSNR-Y gain of pre-training on it
alone then fine-tuning on the shots (the 'only_<task>_P' rows of `fewshot_realsr.py`, mean over
their seeds). The oracle does not depend on the relation network, so DRN variants (training
steps, input representation, crop size, target crops) are compared here without re-running
any SR training: for each variant, each DRN seed and each shot draw, train the DRN, embed the
target's shot crops, and rank-correlate cos(e_T, M_k) (the order of the embedding weights for
every tau) with the oracle.

  python experiments/relation_quality.py --oracle=runs/fs15_nikon_val/results.json \\
      --data_dir=../shared/data/city100/nikon_d5500 --exclude_last=10 --eval_count=10 \\
      --shots=5 --shot_seeds=0,1,2 --drn_seeds=0,1 \\
      --variant=default: --variant=drn1500:relation.drn_steps=1500 --out_dir=runs/relq_nikon
  # the README's default run (4 shipped crops): leave --data_dir out, --shots=4, --shot_seeds=-1

Writes OUT/results.json and OUT/results.md (mean +- std of rho per variant, per-draw values).
"""
from __future__ import annotations

import json
import pathlib
import sys

from absl import app, flags

_ORACLE = flags.DEFINE_string("oracle", None, "results.json with only_<task>_P rows.",
                              required=True)
_STAGE = flags.DEFINE_enum("oracle_stage", "after", ["after", "before"], "Oracle gain after "
                           "fine-tuning (the definition), or of the transferred model before "
                           "fine-tuning (zero-shot transfer; needs pre_finetune.json beside "
                           "--oracle, from fewshot_pre_finetune.py).")
_DATA = flags.DEFINE_string("data_dir", "", "Target pairs (lr/, hr/); '' = the config's shipped "
                            "sample (data.target_sample).")
_EXCLUDE = flags.DEFINE_integer("exclude_last", 0, "Set aside the last N pairs (as in "
                                "fewshot_realsr.py), so the shots come from the same pool.")
_EVAL = flags.DEFINE_integer("eval_count", 10, "Held-out pairs of the split (as in the oracle).")
_SHOTS = flags.DEFINE_integer("shots", 5, "Shots whose crops form the target node.")
_SHOT_SEEDS = flags.DEFINE_list("shot_seeds", ["0"], "Shot draws: data.shot_seed = 1000 + s, as "
                                "fewshot_realsr.py's seed s; -1 = the first N pairs by name.")
_DRN_SEEDS = flags.DEFINE_list("drn_seeds", ["0"], "DRN initialisation / data seeds.")
_VARIANTS = flags.DEFINE_multi_string("variant", ["default:"], "NAME:key=value;key=value "
                                      "(config overrides of the DRN), e.g. "
                                      "'drn1500:relation.drn_steps=1500'.")
_CONFIG = flags.DEFINE_string("config", "configs/drtl.py", "Base DRTL config.")
_OVERRIDES = flags.DEFINE_multi_string("set", [], "Overrides for every variant, key=value.")
_OUT = flags.DEFINE_string("out_dir", "runs/relation_quality", "Output folder.")


def oracle_gains(path: pathlib.Path, stage: str = "after") -> dict[str, float]:
    """Mean PSNR-Y gain over the identity of each 'only_<task>_P' row of a results.json, after
    fine-tuning, or before it (the transferred model, from pre_finetune.json beside it)."""
    import numpy as np
    rows = json.loads(path.read_text())
    if stage == "before":
        before = {(r["seed"], r["shots"], r["method"]): r["before"]["psnr_y"] for r in
                  json.loads((path.parent / "pre_finetune.json").read_text())}
        rows = [{**r, "metrics": {"psnr_y": before[(r["seed"], r["shots"], r["method"])]}}
                for r in rows if (r["seed"], r["shots"], r["method"]) in before]
    gains: dict[str, list[float]] = {}
    for r in rows:
        m = r["method"]
        if m.startswith("only_") and m.endswith("_P"):
            gains.setdefault(m[5:-2], []).append(r["metrics"]["psnr_y"] - r["baseline"]["psnr_y"])
    if len(gains) < 3:
        raise app.UsageError(f"{path} holds {len(gains)} only_<task>_P rows; run "
                             "fewshot_realsr.py --methods=only_each_P first.")
    return {t: float(np.mean(v)) for t, v in gains.items()}


def target_folder(out: pathlib.Path) -> str:
    """--data_dir, or with --exclude_last N a folder of links to all but the last N pairs."""
    if not _DATA.value or not _EXCLUDE.value:
        return _DATA.value
    from jaxsr.methods.drtl.data import set_aside_last
    return str(set_aside_last(_DATA.value, out / "pairs", _EXCLUDE.value))


def main(argv):
    del argv
    from jaxsr.logs import quiet_library_logs
    quiet_library_logs()
    import functools
    import jax
    import jax.numpy as jnp
    import numpy as np
    from scipy.stats import spearmanr
    from jaxsr.config_util import load_config_file, override, parse_override
    from jaxsr.methods.drtl import data as drtl_data
    from jaxsr.methods.drtl import train as drtl
    from jaxsr.methods.drtl.relation import knowledge_graph

    out = pathlib.Path(_OUT.value)
    out.mkdir(parents=True, exist_ok=True)
    oracle = oracle_gains(pathlib.Path(_ORACLE.value), _STAGE.value)
    data_dir = target_folder(out)
    rows = []
    for spec in _VARIANTS.value:
        name, _, rest = spec.partition(":")
        for drn_seed in map(int, _DRN_SEEDS.value):
            c = load_config_file(_CONFIG.value, "")
            c.unlock()
            for item in (i for i in [*_OVERRIDES.value, *rest.split(";")] if i):
                override(c, *parse_override(item))
            c.seed = drn_seed
            if data_dir:
                c.data.target_dir = data_dir
                c.data.eval_count = _EVAL.value
            c.data.shots = _SHOTS.value
            names = drtl.task_names(c)
            missing = sorted(set(names) - set(oracle))
            if missing:
                raise app.UsageError(f"the oracle has no only_<task>_P rows for {missing}")
            model, params = drtl.train_relation_net(c, names)
            graph_fn = jax.jit(functools.partial(knowledge_graph, model))
            for shot_seed in map(int, _SHOT_SEEDS.value):
                c.data.shot_seed = 0 if shot_seed < 0 else 1000 + shot_seed
                split = drtl_data.split_target(c.data, int(c.model.scale))
                crops = drtl_data.target_lr_crops(split, c.relation.crop,
                                                  c.relation.target_crops_per_image, drn_seed)
                cos = np.asarray(graph_fn(params, jnp.asarray(crops, jnp.float32) / 255.0)
                                 ["target_aux"])
                rho, _ = spearmanr([oracle[t] for t in names], cos)
                rows.append({"variant": name, "overrides": rest, "drn_seed": drn_seed,
                             "shot_seed": shot_seed, "shots": split.shot_names,
                             "cos": dict(zip(names, map(float, cos))), "rho": float(rho)})
                print(f"{name:>16} drn seed {drn_seed} shots {shot_seed}: rho {rho:+.2f}  "
                      + " ".join(f"{t}={v:+.2f}" for t, v in zip(names, cos)), flush=True)
            (out / "results.json").write_text(json.dumps(rows, indent=2))
    write_table(out, rows, oracle)


def write_table(out: pathlib.Path, rows: list[dict], oracle: dict[str, float]) -> None:
    import numpy as np
    tasks = sorted(oracle, key=lambda t: -oracle[t])
    lines = [f"Oracle: `{_ORACLE.value}` ({_STAGE.value} fine-tuning; PSNR-Y gain of "
             "only_<task>_P, dB): " + ", ".join(
        f"{t} {oracle[t]:+.3f}" for t in tasks), "",
             f"Target: `{_DATA.value or 'the shipped sample'}`, {_SHOTS.value} shots, shot draws "
             f"{_SHOT_SEEDS.value}, DRN seeds {_DRN_SEEDS.value}.", "",
             "| variant | overrides | Spearman rho mean +- std | draws | mean cos to the target: "
             + ", ".join(tasks) + " |", "|---|---|---|---|---|"]
    for name in dict.fromkeys(r["variant"] for r in rows):
        sel = [r for r in rows if r["variant"] == name]
        rho = np.array([r["rho"] for r in sel])
        cos = " ".join(f"{np.mean([r['cos'][t] for r in sel]):+.2f}" for t in tasks)
        lines.append(f"| {name} | `{sel[0]['overrides'] or '-'}` | {rho.mean():+.2f} +- "
                     f"{rho.std():.2f} | {len(sel)} | {cos} |")
    (out / "results.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
    app.run(main)
