"""Synthetic degradations (jittable, vmappable, per-sample random parameters) and the registry
of named distortion tasks used to synthesize auxiliary training data.

Per-image functions take (H, W, 3) float32 in [0, 1]; batches go through `synthesize`.
The JPEG module (jpeg.py) is imported lazily by the tasks that use it.

Structure: tasks.py is the registry mechanism (it never imports catalog.py); catalog.py imports
tasks.py and registers the built-in tasks. Importing catalog here, once, is the only place the
built-ins are loaded: if that fails, `import jaxsr.degradations` raises the catalog's error
(and raises it again on every retry) instead of leaving an empty registry behind.
"""
from jaxsr.degradations.params import Bernoulli, LogUniform, Uniform
from jaxsr.degradations.tasks import (DistortionTask, UnknownTaskError, get_task, register_task,
                                      synthesize, synthesize_tasks, task_names)
from jaxsr.degradations.catalog import default_auxiliary_tasks  # registers the built-ins

__all__ = [
    "Bernoulli", "LogUniform", "Uniform", "DistortionTask", "UnknownTaskError",
    "default_auxiliary_tasks", "get_task", "register_task", "synthesize", "synthesize_tasks",
    "task_names",
]
