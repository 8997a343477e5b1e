"""Convert parameters between the unrolled and the scanned (stacked) block layouts.

EDSR, RCAN and NAFNet run their repeated blocks with `nn.scan` by default (`scan_blocks=True`,
see `jaxsr.models.common.repeat_blocks`): the n blocks `block_0` ... `block_{n-1}` of the unrolled
layout become one entry `blocks` whose leaves carry a new leading axis of length n. The rule is
by name, in every dict of a pytree:

  unrolled  {stem}block_{i} / {stem}group_{i}, i = 0..n-1   (e.g. block_3, enc_1_block_0, group_2)
  stacked   {stem}blocks    / {stem}groups, leaves (n, ...) (e.g. blocks, enc_1_blocks, groups)

Nested levels stack bottom-up: RCAN's `group_g/block_i/conv1/kernel` (3, 3, F, F) becomes
`groups/blocks/conv1/kernel` (G, B, 3, 3, F, F). Both functions are pure: they return a new tree
and work on any pytree (a params dict, {'params': ...}, a whole train state with its optimizer
moments) whose leaves are numpy arrays, jax arrays or `jax.ShapeDtypeStruct`s; non-dict
containers (dataclasses, named tuples) are kept as they are. Use them for checkpoints or exported
parameters written before the scanned layout (`jaxsr.checkpoint` does this automatically on
restore), or to load stacked weights into a model built with `scan_blocks=False`:

    params = stack_blocks(old_params)        # unrolled -> what models.create('rcan') expects
    params = unstack_blocks(params)          # stacked -> models.create('rcan', scan_blocks=False)
    params = params_for(model, params)       # whichever layout `model` expects

`like`: a tree in the wanted layout (e.g. from `jax.eval_shape(model.init, ...)`); only entries
that `like` has in the other layout are converted, so networks that keep unrolled `block_i`
names (CRL-SR's encoder, ConStyle-NAFNet's restorer) are left alone in a mixed state.
"""
from __future__ import annotations

import re
from typing import Any, Mapping

import jax
import numpy as np

_UNROLLED = re.compile(r"^(?P<stem>.*(?:block|group))_(?P<i>\d+)$")
_STACKED = re.compile(r"^(?P<stem>.*(?:block|group))s$")


def _is_dict(x: Any) -> bool:
    return isinstance(x, Mapping)


def _stack_leaves(name: str, leaves: list) -> Any:
    first = leaves[0]
    if isinstance(first, jax.ShapeDtypeStruct):
        return jax.ShapeDtypeStruct((len(leaves), *first.shape), first.dtype)
    if isinstance(first, jax.Array):
        import jax.numpy as jnp
        return jnp.stack(leaves)
    if isinstance(first, (np.ndarray, np.generic, int, float)):
        return np.stack([np.asarray(x) for x in leaves])
    raise TypeError(f"stack_blocks: cannot stack leaves of type {type(first).__name__} under "
                    f"{name!r}")


def _slice_leaf(x: Any, i: int) -> Any:
    if isinstance(x, jax.ShapeDtypeStruct):
        sharding = getattr(x, "sharding", None)
        keep = sharding is not None and getattr(sharding, "is_fully_replicated", False)
        return jax.ShapeDtypeStruct(x.shape[1:], x.dtype, sharding=sharding if keep else None)
    return x[i]


def _leading(tree: Any) -> int | None:
    sizes = {int(leaf.shape[0]) for leaf in jax.tree_util.tree_leaves(tree)
             if getattr(leaf, "ndim", len(getattr(leaf, "shape", ()))) > 0}
    if len(sizes) > 1:
        raise ValueError(f"unstack_blocks: leaves of one stacked entry have different leading "
                         f"sizes {sorted(sizes)}")
    return sizes.pop() if sizes else None


def _stack_dict(d: Mapping, like: Any) -> dict:
    groups: dict[str, dict[int, str]] = {}
    out: dict[str, Any] = {}
    for key in d:
        m = _UNROLLED.match(str(key))
        wanted = like is None or (_is_dict(like) and f"{m['stem']}s" in like) if m else False
        if m and wanted:
            groups.setdefault(m["stem"], {})[int(m["i"])] = key
        else:
            child = like.get(key) if _is_dict(like) else None
            out[key] = _convert(_stack_dict, d[key], child)
    for stem, members in groups.items():
        name = f"{stem}s"
        if name in out:
            raise ValueError(f"stack_blocks: both {name!r} and {stem}_0... are present")
        if sorted(members) != list(range(len(members))):
            raise ValueError(f"stack_blocks: {stem}_i indices {sorted(members)} are not 0.."
                             f"{len(members) - 1}; cannot stack them into {name!r}")
        child = like.get(name) if _is_dict(like) else None
        subs = [_convert(_stack_dict, d[members[i]], child) for i in range(len(members))]
        structs = {jax.tree_util.tree_structure(s) for s in subs}
        if len(structs) != 1:
            raise ValueError(f"stack_blocks: {stem}_0..{stem}_{len(subs) - 1} differ in structure; "
                             f"cannot stack them into {name!r}")
        out[name] = jax.tree_util.tree_map(lambda *xs: _stack_leaves(name, list(xs)), *subs)
    return type(d)(out) if not isinstance(d, dict) else out


def _unstack_dict(d: Mapping, like: Any) -> dict:
    out: dict[str, Any] = {}
    for key in d:
        m = _STACKED.match(str(key))
        wanted = like is None or (_is_dict(like) and f"{m['stem']}_0" in like) if m else False
        if m and wanted and _is_dict(d[key]):
            n = _leading(d[key])
            if n is None:
                raise ValueError(f"unstack_blocks: {key!r} has no stacked leaves")
            for i in range(n):
                name = f"{m['stem']}_{i}"
                if name in d:
                    raise ValueError(f"unstack_blocks: both {key!r} and {name!r} are present")
                child = like.get(name) if _is_dict(like) else None
                sub = jax.tree_util.tree_map(lambda x, i=i: _slice_leaf(x, i), d[key])
                out[name] = _convert(_unstack_dict, sub, child)
        else:
            child = like.get(key) if _is_dict(like) else None
            out[key] = _convert(_unstack_dict, d[key], child)
    return type(d)(out) if not isinstance(d, dict) else out


def _convert(fn, tree: Any, like: Any) -> Any:
    """`fn(dict, like)` applied to `tree` if it is a dict, else to every outermost dict inside
    its containers (with the matching part of `like` when `like` has the same containers)."""
    if _is_dict(tree):
        return fn(tree, like)
    if like is not None and not _is_dict(like):
        try:
            return jax.tree_util.tree_map(lambda x, t: fn(x, t) if _is_dict(x) else x, tree,
                                          like, is_leaf=_is_dict)
        except (ValueError, TypeError):  # other containers in `like`: convert by name alone
            pass
    return jax.tree_util.tree_map(lambda x: fn(x, None) if _is_dict(x) else x, tree,
                                  is_leaf=_is_dict)


def stack_blocks(tree: Any, like: Any = None) -> Any:
    """Unrolled -> stacked layout (module doc): sibling `{stem}_0..{stem}_{n-1}` entries (stem
    ending in 'block' or 'group') become `{stem}s` with leaves stacked on a new axis 0.
    `like` (optional, same outer containers as `tree`): convert only where `like` has `{stem}s`.
    Raises ValueError naming the entries when indices have gaps or the blocks differ in
    structure."""
    return _convert(_stack_dict, tree, like)


def unstack_blocks(tree: Any, like: Any = None) -> Any:
    """Stacked -> unrolled layout, the inverse of `stack_blocks`: `{stem}s` (stem ending in
    'block' or 'group') with leaves (n, ...) becomes `{stem}_0..{stem}_{n-1}`. `like` (optional):
    convert only where `like` has `{stem}_0`."""
    return _convert(_unstack_dict, tree, like)


def has_unrolled(tree: Any) -> bool:
    """Whether any dict in `tree` has a `..block_i` / `..group_i` key."""
    return _any_key(tree, _UNROLLED)


def has_stacked(tree: Any) -> bool:
    """Whether any dict in `tree` has a `..blocks` / `..groups` key."""
    return _any_key(tree, _STACKED)


def _any_key(tree: Any, pattern: re.Pattern) -> bool:
    found = False

    def visit(x: Any) -> Any:
        nonlocal found
        if _is_dict(x):
            for k, v in x.items():
                found = found or bool(pattern.match(str(k)))
                visit(v)
        return x

    jax.tree_util.tree_map(visit, tree, is_leaf=_is_dict)
    return found


def scan_layout(model: Any) -> bool | None:
    """The layout `model` expects: its `scan_blocks` field (looking through wrappers with a `net`
    field, e.g. `jaxsr.model_factory.GlobalResidual`); None for models without the field."""
    while model is not None:
        if hasattr(model, "scan_blocks"):
            return bool(model.scan_blocks)
        model = getattr(model, "net", None)
    return None


def params_for(model: Any, params: Any) -> Any:
    """`params` in the block layout `model` expects (unchanged for models without
    `scan_blocks`, whose `block_i` names are their only layout)."""
    scan = scan_layout(model)
    if scan is None:
        return params
    return stack_blocks(params) if scan else unstack_blocks(params)
