"""Small helpers shared by the model definitions."""

from __future__ import annotations

from typing import Any

import jax
import numpy as np


COMPUTE_DTYPES = ("float32", "bfloat16")  # what `config.model(s).compute_dtype` may name


def param_count(params: Any) -> int:
    """Total number of scalars in a pytree of arrays (e.g. a flax ``params`` collection).

    Works on concrete arrays and on ``jax.ShapeDtypeStruct`` leaves (from ``jax.eval_shape``),
    so a model's size can be read without allocating its weights.
    """
    return int(sum(int(np.prod(leaf.shape)) for leaf in jax.tree_util.tree_leaves(params)))
