"""Registry of named distortion tasks and batch synthesis of (HR -> LR) training inputs.

A `DistortionTask` turns one clean HR image into its distorted LR counterpart:

    LR = up_if_same( after( down( before(HR) ) ) )

  before: distortions that happen at capture resolution (blur, colour, weather, spatially
          variant blur); applied to the HR image.
  down:   MATLAB bicubic `imresize` by the integer `scale` (identity for scale 1).
  after:  distortions of the recorded low-resolution image (sensor noise, JPEG); applied at LR.
  up:     only in mode 'same': MATLAB bicubic back to the HR size (City100-style pairs).

Parameters are drawn per sample from the task's ranges (`params.Uniform` etc.) with a JAX key,
so one batch holds many parameter values and everything stays jittable and vmappable.
This module is the registry mechanism only and never imports the built-in tasks: those live in
`catalog.py`, which imports this module and registers them; the package `__init__` imports
`catalog` once, so `import jaxsr.degradations` either yields the full registry or raises the
catalog's own error (again on every retry, since a failed import is not cached).
"""
from __future__ import annotations

import dataclasses
import difflib
import functools
from typing import Any, Callable, Mapping, Optional, Sequence, Union

import jax
import jax.numpy as jnp

from jaxsr.degradations.params import ParamSpec, as_spec
from jaxsr.degradations.resize import check_scale_mode, downscale, upscale_to

# (key, img (h, w, 3), params {name: () float32}) -> (h, w, 3)
DegradeFn = Callable[[jax.Array, jax.Array, Mapping[str, jax.Array]], jax.Array]


@dataclasses.dataclass(frozen=True)
class DistortionTask:
    """One named synthetic distortion with per-sample random parameters.

    Fields:
      name: registry key, e.g. 'gaussian_blur'.
      family: coarse group ('downsampling', 'blur', 'noise', 'compression', 'color',
        'weather', 'mixed').
      ranges: parameter name -> `Uniform` / `LogUniform` / `Bernoulli` (a dict, an (lo, hi)
        pair or a number is accepted and normalised to a sorted tuple of (name, spec) pairs so
        the task is hashable and can be a static jit argument).
      before: HR-stage distortion `(key, img, params) -> img`, or None.
      after: LR-stage distortion `(key, img, params) -> img`, or None.
      down_method: imresize method of the scale step ('bicubic', 'bilinear', 'box').
      description: one line for listings.
    """

    name: str
    family: str
    ranges: Any = ()
    before: Optional[DegradeFn] = None
    after: Optional[DegradeFn] = None
    down_method: str = "bicubic"
    description: str = ""

    def __post_init__(self):
        items = self.ranges.items() if isinstance(self.ranges, Mapping) else self.ranges
        ranges = tuple(sorted((str(k), as_spec(v)) for k, v in items))
        object.__setattr__(self, "ranges", ranges)

    @property
    def param_ranges(self) -> dict[str, ParamSpec]:
        """{parameter name: spec}."""
        return dict(self.ranges)

    def with_ranges(self, **ranges) -> "DistortionTask":
        """A copy with some parameter ranges replaced, e.g. `task.with_ranges(sigma=(0, 0))`."""
        unknown = sorted(set(ranges) - set(self.param_ranges))
        if unknown:
            raise ValueError(f"task {self.name!r} has no parameter(s) {unknown}; its parameters "
                             f"are {sorted(self.param_ranges)}.")
        return dataclasses.replace(self, ranges={**self.param_ranges, **ranges})

    def sample_params(self, key: jax.Array) -> dict[str, jax.Array]:
        """{name: () float32} drawn from the ranges (one key per parameter, sorted by name)."""
        if not self.ranges:
            return {}
        keys = jax.random.split(key, len(self.ranges))
        return {name: spec.sample(k) for (name, spec), k in zip(self.ranges, keys)}

    def apply(self, key: jax.Array, hr: jax.Array, params: Mapping[str, jax.Array],
              scale: int, mode: str = "down") -> jax.Array:
        """Degrade one HR image (H, W, 3) float32 in [0, 1] with given parameters.

        Returns (H/scale, W/scale, 3) for mode 'down', (H, W, 3) for 'same'; float32 in [0, 1].
        """
        if hr.ndim != 3 or hr.shape[-1] != 3:
            raise ValueError(f"task {self.name!r}: expected one HR image (H, W, 3), got shape "
                             f"{hr.shape}; use synthesize() for batches (B, H, W, 3).")
        check_scale_mode(hr.shape, scale, mode)
        k_before, k_after = jax.random.split(key)
        x = hr.astype(jnp.float32)
        if self.before is not None:
            x = jnp.clip(self.before(k_before, x, params), 0.0, 1.0)
        x = downscale(x, scale, self.down_method)
        if self.after is not None:
            x = jnp.clip(self.after(k_after, x, params), 0.0, 1.0)
        if mode == "same":
            x = upscale_to(x, hr.shape[:2])
        return x.astype(jnp.float32)

    def sample_and_apply(self, key: jax.Array, hr: jax.Array, scale: int,
                         mode: str = "down") -> jax.Array:
        """Draw parameters from `key` and degrade one HR image; see `apply` for shapes."""
        k_params, k_apply = jax.random.split(key)
        return self.apply(k_apply, hr, self.sample_params(k_params), scale, mode)


class UnknownTaskError(KeyError):
    """An unregistered task name; the message lists close matches and all names."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


_REGISTRY: dict[str, DistortionTask] = {}


def register_tasks(tasks: Sequence[DistortionTask], *,
                   overwrite: bool = False) -> tuple[DistortionTask, ...]:
    """Add several tasks at once, all or none: every task is checked (type, name not yet
    registered unless `overwrite`, no name twice in `tasks`) before any is added, so a failure
    leaves the registry as it was. Returns the tasks as a tuple."""
    tasks = tuple(tasks)
    seen = set()
    for task in tasks:
        if not isinstance(task, DistortionTask):
            raise TypeError(f"register_task expects a DistortionTask, got {type(task).__name__}.")
        if task.name in seen:
            raise ValueError(f"distortion task name {task.name!r} appears twice in one "
                             "register_tasks() call; task names must be unique.")
        if task.name in _REGISTRY and not overwrite:
            raise ValueError(f"distortion task {task.name!r} is already registered; pick another "
                             "name or pass overwrite=True.")
        seen.add(task.name)
    for task in tasks:
        _REGISTRY[task.name] = task
    return tasks


def register_task(task: DistortionTask, *, overwrite: bool = False) -> DistortionTask:
    """Add `task` under `task.name`; an existing name needs `overwrite=True`. Returns task."""
    return register_tasks((task,), overwrite=overwrite)[0]


def task_names() -> list[str]:
    """Sorted names of all registered tasks."""
    return sorted(_REGISTRY)


def get_task(name: str) -> DistortionTask:
    """The registered task called `name`; unknown names raise `UnknownTaskError` (a KeyError)
    that suggests close matches."""
    try:
        return _REGISTRY[name]
    except (KeyError, TypeError):
        pass
    close = difflib.get_close_matches(str(name), list(_REGISTRY), n=3, cutoff=0.5)
    hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
    raise UnknownTaskError(
        f"unknown distortion task {name!r}.{hint} Registered tasks: {', '.join(task_names())}. "
        "Add new ones with jaxsr.degradations.register_task().")


def _resolve(task_or_name: Union[str, DistortionTask]) -> DistortionTask:
    return task_or_name if isinstance(task_or_name, DistortionTask) else get_task(task_or_name)


def _check_batch(hr: jax.Array, ndim: int, where: str) -> None:
    if hr.ndim != ndim or hr.shape[-1] != 3:
        want = "(B, H, W, 3)" if ndim == 4 else "(K, B, H, W, 3) or (B, H, W, 3)"
        raise ValueError(f"{where}: expected HR images {want}, got shape {hr.shape}.")
    if not jnp.issubdtype(hr.dtype, jnp.floating):
        raise TypeError(f"{where}: expected float images in [0, 1], got dtype {hr.dtype}; "
                        "convert uint8 with hr.astype(jnp.float32) / 255.")


@functools.partial(jax.jit, static_argnums=(0, 1, 2))
def _synthesize(task: DistortionTask, scale: int, mode: str, key: jax.Array,
                hr: jax.Array) -> jax.Array:
    keys = jax.random.split(key, hr.shape[0])
    return jax.vmap(lambda k, x: task.sample_and_apply(k, x, scale, mode))(keys, hr)


def synthesize(task_or_name: Union[str, DistortionTask], key: jax.Array, hr_batch: jax.Array,
               scale: int, mode: str = "down") -> jax.Array:
    """Distort a batch, one independent parameter draw per image.

    Args:
      task_or_name: a registered name or a `DistortionTask` (static).
      key: JAX PRNG key; image i uses `jax.random.split(key, B)[i]`.
      hr_batch: (B, H, W, 3) float in [0, 1], H and W divisible by `scale`.
      scale: static int >= 1. mode: 'down' or 'same' (static).
    Returns:
      (B, H/scale, W/scale, 3) ('down') or (B, H, W, 3) ('same'), float32 in [0, 1].
    Jitted internally; also traceable inside an outer jit (task, scale, mode static).
    """
    task = _resolve(task_or_name)
    hr_batch = jnp.asarray(hr_batch)
    _check_batch(hr_batch, 4, "synthesize")
    check_scale_mode(hr_batch.shape, scale, mode)
    return _synthesize(task, scale, mode, key, hr_batch)


def synthesize_tasks(names: Sequence[Union[str, DistortionTask]], key: jax.Array,
                     hr_batch: jax.Array, scale: int, mode: str = "down") -> jax.Array:
    """One distorted batch per task, stacked on a leading task axis.

    Args:
      names: K task names or tasks (static).
      key: split into K keys; result[k] == synthesize(names[k], split(key, K)[k], hr[k]).
      hr_batch: (K, B, H, W, 3) (a batch per task) or (B, H, W, 3) (shared by all tasks).
    Returns:
      (K, B, h, w, 3) float32 in [0, 1].
    Different tasks are different code, so this unrolls over the K task functions at trace
    time (compile time grows with K; the run time is the sum of the K tasks).
    """
    tasks = tuple(_resolve(n) for n in names)
    if not tasks:
        raise ValueError("synthesize_tasks needs at least one task name.")
    hr_batch = jnp.asarray(hr_batch)
    if hr_batch.ndim == 4:
        _check_batch(hr_batch, 4, "synthesize_tasks")
        hr_batch = jnp.broadcast_to(hr_batch, (len(tasks),) + hr_batch.shape)
    _check_batch(hr_batch, 5, "synthesize_tasks")
    if hr_batch.shape[0] != len(tasks):
        raise ValueError(f"synthesize_tasks: hr_batch has {hr_batch.shape[0]} task batches but "
                         f"{len(tasks)} task names were given; they must match.")
    check_scale_mode(hr_batch.shape, scale, mode)
    return _synthesize_tasks(tasks, scale, mode, key, hr_batch)


@functools.partial(jax.jit, static_argnums=(0, 1, 2))
def _synthesize_tasks(tasks: tuple, scale: int, mode: str, key: jax.Array,
                      hr: jax.Array) -> jax.Array:
    keys = jax.random.split(key, len(tasks))
    return jnp.stack([_synthesize(t, scale, mode, keys[i], hr[i]) for i, t in enumerate(tasks)])
