"""Config helpers: variant strings (`file.py:tiny,x4`) and key checks with close matches."""
from __future__ import annotations

import difflib
from typing import Iterable

import ml_collections


class ConfigError(ValueError):
    """A config key or value is wrong; the message names it and the fix."""


def parse_variant(arg: str | None, allowed: Iterable[str]) -> dict[str, str | bool]:
    """'tiny,x4,tau=0.5' -> {'tiny': True, 'x4': True, 'tau': '0.5'}; unknown names -> error.

    `allowed` lists the variant names (for `k=v` items, the key names) the config accepts.
    """
    allowed = list(allowed)
    out: dict[str, str | bool] = {}
    for item in filter(None, (s.strip() for s in (arg or "").split(","))):
        key, _, value = item.partition("=")
        if key not in allowed:
            close = difflib.get_close_matches(key, allowed, n=3, cutoff=0.5)
            hint = f" Did you mean {', '.join(close)}?" if close else ""
            raise ConfigError(f"unknown config variant {key!r}.{hint} Valid variants: "
                              f"{', '.join(allowed)}")
        out[key] = value if value else True
    return out


def flat_keys(config: ml_collections.ConfigDict, prefix: str = "") -> list[str]:
    """All dotted leaf keys of a ConfigDict."""
    keys = []
    for k, v in config.items():
        if isinstance(v, ml_collections.ConfigDict):
            keys += flat_keys(v, f"{prefix}{k}.")
        else:
            keys.append(f"{prefix}{k}")
    return keys


def check_key(config: ml_collections.ConfigDict, dotted: str) -> None:
    """Raises ConfigError naming `dotted` and its closest existing keys if it is not a key."""
    keys = flat_keys(config)
    if dotted in keys:
        return
    close = difflib.get_close_matches(dotted, keys, n=3, cutoff=0.5)
    hint = f" Did you mean: {', '.join(close)}?" if close else ""
    raise ConfigError(f"unknown config key {dotted!r}.{hint} "
                      f"See the config file for the {len(keys)} valid keys.")


def load_config_file(path: str, variant: str | None = None) -> ml_collections.ConfigDict:
    """`get_config(variant)` of a config file, as `--config=path[:variant]` gives it to
    `jaxsr.main`. `path` may carry the variant itself ('configs/drtl.py:tiny,meta')."""
    import importlib.util
    import pathlib
    if variant is None:
        path, _, variant = str(path).partition(":")
    file = pathlib.Path(path).expanduser()
    if not file.is_file():
        raise ConfigError(f"config file {str(path)!r} not found (run from the repository root, "
                          "or give its full path)")
    spec = importlib.util.spec_from_file_location(f"_jaxsr_config_{file.stem}", file)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    if not hasattr(module, "get_config"):
        raise ConfigError(f"config file {str(path)!r} has no get_config(variant) function")
    return module.get_config(variant or None)


def override(config: ml_collections.ConfigDict, dotted: str, value) -> None:
    """Sets the existing key `config.<dotted>` (works on locked configs); an unknown key
    raises ConfigError with close matches."""
    check_key(config, dotted)
    *parents, leaf = dotted.split(".")
    node = config
    for name in parents:
        node = node[name]
    node[leaf] = value


def parse_override(item: str) -> tuple[str, object]:
    """'key=value' -> (key, value), the value read as a Python literal when it is one
    ('1e-3' -> 0.001, '(1, 2)' -> tuple), else kept as a string ('zero_tail')."""
    import ast
    key, sep, value = item.partition("=")
    if not sep:
        raise ConfigError(f"override {item!r} is not key=value; write e.g. relation.tau=0.05")
    try:
        return key, ast.literal_eval(value)
    except (ValueError, SyntaxError):
        return key, value


def finalize(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """Locks the config so a misspelt override is an error rather than a new key."""
    config.lock()
    return config


def check_values(config: ml_collections.ConfigDict) -> None:
    """Raises ConfigError naming the key for values no run can use: step counts, cadences
    (`*_every`), batch sizes and `keep_checkpoints` below 1; a negative `overlap` or
    `warmup_steps`."""
    for key in flat_keys(config):
        leaf = key.rsplit(".", 1)[-1]
        node = config
        for part in key.split("."):
            node = node[part]
        if isinstance(node, bool) or not isinstance(node, (int, float)):
            continue
        if leaf in ("num_steps", "keep_checkpoints") or leaf.endswith("_every") \
                or leaf.endswith("batch_size"):
            if node < 1:
                raise ConfigError(f"config.{key}={node!r} must be at least 1; set "
                                  f"--config.{key}=<a positive number>")
        elif leaf in ("overlap", "warmup_steps") and node < 0:
            raise ConfigError(f"config.{key}={node!r} cannot be negative; set "
                              f"--config.{key}=0 or more")
