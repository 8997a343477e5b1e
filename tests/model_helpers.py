"""Helpers shared by the export and predict tests."""
import jax
import numpy as np

from jaxsr.model_factory import init_params


def random_params(model, seed: int = 0, lr_patch: int = 16):
    """Parameters of `model` drawn with numpy (shapes from `jax.eval_shape`; compiling the real
    initialiser takes seconds per model on a busy CPU): kernels ~ N(0, 1/fan_in), vectors
    ~ 0.05 + N(0, 0.1), so every layer (and the ReZero gain) shapes the output."""
    shapes = jax.eval_shape(lambda k: init_params(model, k, lr_patch), jax.random.key(0))
    rng = np.random.default_rng(seed)

    def draw(path, s):
        # Scanned blocks stack their parameters on leading axes ('blocks', 'groups' in the
        # path): draw each block's leaf as its unrolled counterpart would be drawn.
        stacked = sum(getattr(k, "key", None) in ("blocks", "groups") or
                      str(getattr(k, "key", "")).endswith("_blocks") for k in path)
        per_block = s.shape[stacked:]
        if len(per_block) >= 2:
            return (rng.standard_normal(s.shape) / np.sqrt(np.prod(per_block[:-1]))).astype(s.dtype)
        return (0.05 + 0.1 * rng.standard_normal(s.shape)).astype(s.dtype)
    return jax.tree_util.tree_map_with_path(draw, shapes)
