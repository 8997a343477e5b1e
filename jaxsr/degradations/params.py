"""Parameter distributions of distortion tasks: each draws one traced float32 scalar from a key.

Specs are frozen (hashable) so tasks holding them can be static arguments of `jax.jit`.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Union

import jax
import jax.numpy as jnp


@dataclasses.dataclass(frozen=True)
class Uniform:
    """Uniform on [lo, hi]; `lo == hi` gives the constant `lo`."""

    lo: float
    hi: float

    def __post_init__(self):
        if not self.lo <= self.hi:
            raise ValueError(
                f"Uniform range needs lo <= hi, got ({self.lo}, {self.hi}); swap them.")

    def sample(self, key: jax.Array) -> jax.Array:
        """() float32 scalar."""
        return jax.random.uniform(key, (), jnp.float32, self.lo, self.hi)

    @property
    def is_constant(self) -> bool:
        return self.lo == self.hi


@dataclasses.dataclass(frozen=True)
class LogUniform:
    """Log-uniform on [lo, hi] (0 < lo <= hi): equal mass per octave."""

    lo: float
    hi: float

    def __post_init__(self):
        if not 0 < self.lo <= self.hi:
            raise ValueError(
                f"LogUniform range needs 0 < lo <= hi, got ({self.lo}, {self.hi}); "
                "use Uniform for ranges that include 0.")

    def sample(self, key: jax.Array) -> jax.Array:
        """() float32 scalar."""
        u = jax.random.uniform(key, (), jnp.float32, math.log(self.lo), math.log(self.hi))
        return jnp.exp(u)

    @property
    def is_constant(self) -> bool:
        return self.lo == self.hi


@dataclasses.dataclass(frozen=True)
class Bernoulli:
    """1.0 with probability `p`, else 0.0 (a float32 flag; use `flag > 0.5` as a bool)."""

    p: float

    def __post_init__(self):
        if not 0.0 <= self.p <= 1.0:
            raise ValueError(f"Bernoulli probability must be in [0, 1], got {self.p}.")

    def sample(self, key: jax.Array) -> jax.Array:
        """() float32 scalar in {0, 1}."""
        return jax.random.bernoulli(key, self.p).astype(jnp.float32)

    @property
    def is_constant(self) -> bool:
        return self.p in (0.0, 1.0)


ParamSpec = Union[Uniform, LogUniform, Bernoulli]


def as_spec(value) -> ParamSpec:
    """A spec from a spec, an `(lo, hi)` pair (uniform) or a number (constant)."""
    if isinstance(value, (Uniform, LogUniform, Bernoulli)):
        return value
    if isinstance(value, (tuple, list)) and len(value) == 2:
        return Uniform(float(value[0]), float(value[1]))
    if isinstance(value, (int, float)):
        return Uniform(float(value), float(value))
    raise TypeError(
        f"cannot use {value!r} as a parameter range: pass Uniform/LogUniform/Bernoulli, "
        "an (lo, hi) pair or a single number.")
