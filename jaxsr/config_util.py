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


def finalize(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """Locks the config so a misspelt override is an error rather than a new key."""
    config.lock()
    return config
