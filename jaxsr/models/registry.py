"""Name registries for networks: restorers (`create`, `names`, `register`) and side networks
(`create_side`, `side_names`, `register_side`).

A registered entry is a Flax module class plus a dict of preset field values. Presets
(`edsr_baseline`, `nafnet_w32`, ...) and generic names (`edsr`, `nafnet`) point at the same class;
keyword arguments given to `create` override the preset.

Restorers map an image to an image and all take `scale`. Side networks (discriminators / embedding
networks, feature encoders) train next to a restorer, are never deployed and take no `scale`; they
live in their own registry so that neither list offers names of the other kind.
"""
from __future__ import annotations

import dataclasses
import difflib
from typing import Any, Callable, TypeVar

import flax.linen as nn

ModuleT = TypeVar("ModuleT", bound=type)

# Fields every Flax module has that are not configuration.
_INTERNAL_FIELDS = frozenset({"parent", "name"})


@dataclasses.dataclass(frozen=True)
class Entry:
    """One registry entry: the module class and the preset field values."""

    cls: type
    preset: dict[str, Any]
    doc: str


def fields_of(cls: type) -> list[str]:
    """Configurable dataclass field names of a Flax module class (without `parent`, `name`)."""
    return [f.name for f in dataclasses.fields(cls) if f.name not in _INTERNAL_FIELDS]


class Registry:
    """Names -> (module class, preset). `kind` ('model', 'side network') words the errors."""

    def __init__(self, kind: str):
        self.kind = kind
        self.entries: dict[str, Entry] = {}

    def register(self, name: str, doc: str = "", **preset: Any) -> Callable[[ModuleT], ModuleT]:
        """Class decorator registering a Flax module under `name` with preset field values."""

        def deco(cls: ModuleT) -> ModuleT:
            if not (isinstance(cls, type) and issubclass(cls, nn.Module)):
                raise TypeError(
                    f"register({name!r}) expects a flax.linen.Module subclass, got {cls!r}")
            if name in self.entries and self.entries[name].cls is not cls:
                raise ValueError(
                    f"{self.kind} name {name!r} is already registered to "
                    f"{self.entries[name].cls.__name__}; pick another name")
            valid = fields_of(cls)
            bad = sorted(set(preset) - set(valid))
            if bad:
                raise TypeError(f"preset {name!r} sets unknown fields {bad} of {cls.__name__}; "
                                f"valid fields: {valid}")
            summary = doc or (cls.__doc__ or "").strip().split("\n")[0]
            self.entries[name] = Entry(cls, dict(preset), summary)
            return cls

        return deco

    def names(self) -> list[str]:
        """Sorted list of all registered names (presets and generic names)."""
        return sorted(self.entries)

    def get(self, name: str) -> Entry:
        """The entry for `name`; ValueError listing valid names and close matches."""
        if not isinstance(name, str) or name not in self.entries:
            close = difflib.get_close_matches(str(name), list(self.entries), n=3, cutoff=0.5)
            hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
            raise ValueError(f"unknown {self.kind} name {name!r}.{hint} "
                             f"Valid names: {', '.join(self.names())}")
        return self.entries[name]

    def create(self, name: str, **kwargs: Any) -> nn.Module:
        """Build the module registered as `name`, with `kwargs` overriding the preset fields."""
        entry = self.get(name)
        valid = fields_of(entry.cls)
        bad = sorted(set(kwargs) - set(valid))
        if bad:
            close = {b: difflib.get_close_matches(b, valid, n=1) for b in bad}
            hints = "; ".join(f"{b!r} (did you mean {c[0]!r}?)" if c else repr(b)
                              for b, c in close.items())
            raise TypeError(f"{self.kind} {name!r} ({entry.cls.__name__}) has no field {hints}. "
                            f"Valid fields: {', '.join(valid)}")
        # Lists (from YAML / JSON configs) become tuples so the module stays hashable.
        config = {k: _tuplify(v) for k, v in {**entry.preset, **kwargs}.items()}
        return entry.cls(**config)

    def describe(self, name: str) -> dict[str, Any]:
        """Field values `create(name)` would use (preset over class defaults)."""
        entry = self.get(name)
        defaults = {}
        for f in dataclasses.fields(entry.cls):
            if f.name in _INTERNAL_FIELDS:
                continue
            if f.default is not dataclasses.MISSING:
                defaults[f.name] = f.default
            elif f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
                defaults[f.name] = f.default_factory()  # type: ignore[misc]
        return {**defaults, **entry.preset}


def _tuplify(value: Any) -> Any:
    if isinstance(value, (list, tuple)):
        return tuple(_tuplify(v) for v in value)
    return value


_MODELS = Registry("model")
_SIDE = Registry("side network")


# ----------------------------------------------------------------------------- restorers
def register(name: str, doc: str = "", **preset: Any) -> Callable[[ModuleT], ModuleT]:
    """Class decorator registering a restorer under `name` with preset field values.

    Stack it to register several presets of one class::

        @register("edsr_baseline", features=64, num_blocks=16)
        @register("edsr")
        class EDSR(nn.Module): ...
    """
    return _MODELS.register(name, doc, **preset)


def names() -> list[str]:
    """Sorted list of all registered restorer names (presets and generic names)."""
    return _MODELS.names()


def get(name: str) -> Entry:
    """The restorer entry for `name`; ValueError listing valid names and close matches."""
    return _MODELS.get(name)


def create(name: str, **kwargs: Any) -> nn.Module:
    """Build the restorer registered as `name`, with `kwargs` overriding the preset fields.

    Example: `create('edsr_baseline', scale=4, dtype=jnp.bfloat16)`. Every model maps
    x (B, h, w, 3) float32 in [0, 1] -> (B, h*scale, w*scale, 3) float32.
    """
    return _MODELS.create(name, **kwargs)


def describe(name: str) -> dict[str, Any]:
    """Field values `create(name)` would use (preset over class defaults), for logs and configs."""
    return _MODELS.describe(name)


# ----------------------------------------------------------------------------- side networks
def register_side(name: str, doc: str = "", **preset: Any) -> Callable[[ModuleT], ModuleT]:
    """Class decorator registering a side network (discriminator, encoder) under `name`."""
    return _SIDE.register(name, doc, **preset)


def side_names() -> list[str]:
    """Sorted list of all registered side-network names."""
    return _SIDE.names()


def get_side(name: str) -> Entry:
    """The side-network entry for `name`; ValueError listing valid names and close matches."""
    return _SIDE.get(name)


def create_side(name: str, **kwargs: Any) -> nn.Module:
    """Build the side network registered as `name` (no `scale`), `kwargs` overriding the preset.

    Example: `create_side('vgg_discriminator', use_bn=False, dtype=jnp.bfloat16)`.
    """
    return _SIDE.create(name, **kwargs)


def describe_side(name: str) -> dict[str, Any]:
    """Field values `create_side(name)` would use (preset over class defaults)."""
    return _SIDE.describe(name)
