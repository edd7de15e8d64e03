"""Reconstruction losses between a restored image and its target (super-resolution, seed 001)."""

from __future__ import annotations

import jax
import jax.numpy as jnp

KINDS = ("l1", "l2")


def reconstruction_loss(restored: jax.Array, target: jax.Array, kind: str = "l1") -> jax.Array:
    """Mean over every pixel and channel of the batch:
      'l1':  mean |restored - target|
      'l2':  mean (restored - target)^2
    Both images on the same scale (e.g. [0, 1]). Each device's mean over its own equal-sized slice,
    averaged over devices (`devices.value_and_mean_grad`), is the global batch's mean."""
    if restored.shape != target.shape:
        raise ValueError(f"restored {tuple(restored.shape)} and target {tuple(target.shape)} must have the same shape")
    diff = jnp.asarray(restored, jnp.float32) - jnp.asarray(target, jnp.float32)
    if kind == "l1":
        return jnp.mean(jnp.abs(diff))
    if kind == "l2":
        return jnp.mean(diff * diff)
    raise ValueError(f"reconstruction loss kind {kind!r}; allowed: {', '.join(KINDS)}")
