"""Synthetic degradations (jittable, vmappable, per-sample random parameters) and the registry
of named distortion tasks used to synthesize auxiliary training data.

Per-image functions take (H, W, 3) float32 in [0, 1]; batches go through `synthesize`.
The JPEG module (jpeg.py) is imported lazily by the tasks that use it.
"""
from jaxsr.degradations.params import Bernoulli, LogUniform, Uniform
from jaxsr.degradations.tasks import (DistortionTask, UnknownTaskError, default_auxiliary_tasks,
                                      get_task, register_task, synthesize, synthesize_tasks,
                                      task_names)

__all__ = [
    "Bernoulli", "LogUniform", "Uniform", "DistortionTask", "UnknownTaskError",
    "default_auxiliary_tasks", "get_task", "register_task", "synthesize", "synthesize_tasks",
    "task_names",
]
