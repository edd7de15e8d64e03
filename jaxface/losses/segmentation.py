"""Pixel losses with an ignore mask, for segmentation from weak labels (seed 002).

Both are normalised over the GLOBAL batch when `axis_name` is given (inside a step mapped over
devices): 1 device and 8 devices optimise the same objective (see `jaxface.losses.reduction`).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax
from jax import lax

from jaxface.losses.reduction import global_ratio, spans_devices


def masked_pixel_cross_entropy(logits: jax.Array, labels: jax.Array, ignore_mask: jax.Array, *,
                               axis_name: str | None = None) -> jax.Array:
    """Mean softmax cross-entropy over the pixels that are not ignored.

    logits [B, H, W, C], labels int [B, H, W] in [0, C), ignore_mask bool [B, H, W] (True: no loss,
    no gradient; the label there may be anything). Sum of CE over kept pixels / max(number kept, 1),
    both counted over the global batch with `axis_name`.
    """
    keep = 1.0 - ignore_mask.astype(jnp.float32)
    safe = jnp.where(ignore_mask, 0, labels).astype(jnp.int32)
    ce = optax.softmax_cross_entropy_with_integer_labels(logits.astype(jnp.float32), safe)
    return global_ratio(jnp.sum(ce * keep), jnp.sum(keep), axis_name=axis_name, floor=1.0)


def soft_dice_loss(probs: jax.Array, targets: jax.Array, mask: jax.Array, *, axis_name: str | None = None,
                   epsilon: float = 1.0) -> jax.Array:
    """1 - mean over classes of (2 sum p t + eps) / (sum p + sum t + eps), sums over the pixels where
    `mask` is True (the global batch with `axis_name`).

    probs [B, H, W, C] (softmax output), targets [B, H, W, C] one-hot (or soft) or int [B, H, W]
    class labels, mask bool [B, H, W]. With `axis_name` every device returns the same global value;
    the gradient reaching each device's pixels through the psum is n times its share, so the mean
    of the devices' gradients (`devices.value_and_mean_grad`) is that of one device holding all.
    """
    if targets.ndim == probs.ndim - 1:
        targets = jax.nn.one_hot(targets.astype(jnp.int32), probs.shape[-1])
    m = mask.astype(jnp.float32)[..., None]
    p, t = probs.astype(jnp.float32) * m, targets.astype(jnp.float32) * m
    inter, total = jnp.sum(p * t, axis=(0, 1, 2)), jnp.sum(p + t, axis=(0, 1, 2))
    if spans_devices(axis_name):
        inter, total = lax.psum(inter, axis_name), lax.psum(total, axis_name)
    return 1.0 - jnp.mean((2 * inter + epsilon) / (total + epsilon))
