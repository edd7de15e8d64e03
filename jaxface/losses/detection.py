"""CenterNet detection losses (Zhou et al., "Objects as Points", 2019).

Pure functions of arrays: jittable, no Flax modules, no state. All maps are channels-last,
[B, H, W, C] at the output stride of the detector. Reductions run in float32 whatever the input
dtype, so bf16 heads still give a stable scalar.
"""

from __future__ import annotations

from collections.abc import Mapping

import jax
import jax.numpy as jnp

from jaxface.losses.reduction import global_ratio

FOCAL_ALPHA = 2.0
FOCAL_BETA = 4.0
PROBABILITY_CLIP = 1e-4
MASK_EPSILON = 1e-4

CENTERNET_HEAD_KEYS = ("heatmap", "wh", "offset")
CENTERNET_TARGET_KEYS = ("heatmap", "wh", "offset", "mask")


def _require_rank(name: str, array: jax.Array, rank: int, layout: str) -> None:
    if array.ndim != rank:
        raise ValueError(f"{name} must have rank {rank} ({layout}), got shape {tuple(array.shape)}")


def _require_same_shape(name_a: str, a: jax.Array, name_b: str, b: jax.Array) -> None:
    if a.shape != b.shape:
        raise ValueError(
            f"{name_a} and {name_b} must have the same shape, got {tuple(a.shape)} and {tuple(b.shape)}"
        )


def _require_keys(name: str, mapping: Mapping, keys: tuple[str, ...]) -> None:
    missing = [key for key in keys if key not in mapping]
    if missing:
        raise ValueError(f"{name} is missing keys {missing}; required keys are {list(keys)}")


def centernet_heatmap_focal_loss(logits: jax.Array, target: jax.Array, *, axis_name: str | None = None) -> jax.Array:
    """Penalty-reduced pixel-wise focal loss on the centre heatmap (CenterNet eq. 1).

    Args:
      logits: [B, H, W, C] raw heatmap scores (before the sigmoid).
      target: [B, H, W, C] Gaussian-splatted ground truth in [0, 1]; exactly 1 at object centres.

    With p = clip(sigmoid(logits), 1e-4, 1 - 1e-4), alpha = 2, beta = 4 and N = the number of cells
    in the whole batch where target == 1:

      positive cells (target == 1):  -(1 - p)^alpha * log(p)
      other cells:                   -(1 - target)^beta * p^alpha * log(1 - p)

      loss = (sum of positive terms + sum of negative terms) / N     if N > 0
      loss = sum of negative terms                                   if N == 0

    The clip follows the reference implementation: it keeps log() finite and, as there, stops the
    gradient for cells already saturated past the clip.

    axis_name: inside a step mapped over devices, the device axis; N is then counted over the
    global batch (see `jaxface.losses.reduction`), so the loss does not depend on the device count.

    Returns:
      scalar float32 loss.
    """
    _require_rank("logits", logits, 4, "[B, H, W, C]")
    _require_same_shape("logits", logits, "target", target)
    logits = jnp.asarray(logits, jnp.float32)
    target = jnp.asarray(target, jnp.float32)

    prob = jnp.clip(jax.nn.sigmoid(logits), PROBABILITY_CLIP, 1.0 - PROBABILITY_CLIP)
    is_positive = (target == 1.0).astype(jnp.float32)
    is_negative = 1.0 - is_positive

    positive_loss = -jnp.sum(is_positive * (1.0 - prob) ** FOCAL_ALPHA * jnp.log(prob))
    negative_loss = -jnp.sum(
        is_negative * (1.0 - target) ** FOCAL_BETA * prob**FOCAL_ALPHA * jnp.log(1.0 - prob)
    )
    # With no positives the positive sum is 0, so dividing by max(N, 1) leaves the negative sum
    # alone: both cases of the formula in one expression, no branch and no division by zero.
    return global_ratio(positive_loss + negative_loss, jnp.sum(is_positive), axis_name=axis_name, floor=1.0)


def masked_l1_loss(pred: jax.Array, target: jax.Array, mask: jax.Array, *,
                   axis_name: str | None = None) -> jax.Array:
    """L1 regression loss at masked cells, summed over channels, averaged over masked cells.

    Args:
      pred: [B, H, W, K] regressed values (K = 2 for CenterNet's size and offset heads).
      target: [B, H, W, K] ground truth, only meaningful where mask is set.
      mask: [B, H, W] or [B, H, W, 1] weights, 1 at object centres and 0 elsewhere.

      loss = sum_{b,y,x,k} |pred - target| * mask[b,y,x] / (sum_{b,y,x} mask[b,y,x] + 1e-4)

    The K channels of a cell are SUMMED (an L1 norm per object) and the result is divided by the
    number of masked cells, i.e. objects: the paper's L_size = 1/N sum_k |S_hat_pk - s_k|. (The
    reference code's RegL1Loss expands the mask over the K channels before summing it, which divides
    by K*N instead; the value here is K times that one.) An all-zero mask gives exactly 0.
    With `axis_name` (the device axis of a mapped step) the mask is summed over the global batch.

    Returns:
      scalar float32 loss.
    """
    _require_rank("pred", pred, 4, "[B, H, W, K]")
    _require_same_shape("pred", pred, "target", target)
    cell_shape = tuple(pred.shape[:3])
    if tuple(mask.shape) not in (cell_shape, cell_shape + (1,)):
        raise ValueError(
            f"mask must have shape {cell_shape} or {cell_shape + (1,)} to match pred "
            f"{tuple(pred.shape)}, got {tuple(mask.shape)}"
        )
    mask = jnp.asarray(mask, jnp.float32).reshape(cell_shape)
    per_cell_error = jnp.sum(
        jnp.abs(jnp.asarray(pred, jnp.float32) - jnp.asarray(target, jnp.float32)), axis=-1
    )
    return global_ratio(jnp.sum(per_cell_error * mask), jnp.sum(mask), axis_name=axis_name, epsilon=MASK_EPSILON)


def centernet_loss(
    heads: Mapping[str, jax.Array],
    targets: Mapping[str, jax.Array],
    *,
    wh_weight: float = 0.1,
    offset_weight: float = 1.0,
    axis_name: str | None = None,
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Full CenterNet training loss.

    Args:
      heads: {'heatmap': [B, H, W, C] logits, 'wh': [B, H, W, 2], 'offset': [B, H, W, 2]}.
      targets: {'heatmap': [B, H, W, C] in [0, 1], 'wh': [B, H, W, 2], 'offset': [B, H, W, 2],
        'mask': [B, H, W] 1 at object centres}.
      wh_weight: weight of the size term (CenterNet's lambda_size, 0.1).
      offset_weight: weight of the sub-pixel offset term (lambda_off, 1).
      axis_name: the device axis of a mapped step: object counts are then global (every term).

      heatmap = centernet_heatmap_focal_loss(heads.heatmap, targets.heatmap)
      wh      = masked_l1_loss(heads.wh, targets.wh, targets.mask)
      offset  = masked_l1_loss(heads.offset, targets.offset, targets.mask)
      total   = heatmap + wh_weight * wh + offset_weight * offset

    Returns:
      (total scalar, {'heatmap', 'wh', 'offset'} unweighted scalar terms).
    """
    _require_keys("heads", heads, CENTERNET_HEAD_KEYS)
    _require_keys("targets", targets, CENTERNET_TARGET_KEYS)
    terms = {
        "heatmap": centernet_heatmap_focal_loss(heads["heatmap"], targets["heatmap"], axis_name=axis_name),
        "wh": masked_l1_loss(heads["wh"], targets["wh"], targets["mask"], axis_name=axis_name),
        "offset": masked_l1_loss(heads["offset"], targets["offset"], targets["mask"], axis_name=axis_name),
    }
    total = terms["heatmap"] + wh_weight * terms["wh"] + offset_weight * terms["offset"]
    return total, terms
