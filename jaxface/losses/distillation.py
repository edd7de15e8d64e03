"""Knowledge-distillation losses: logits, intermediate features and CenterNet head maps.

Pure functions of arrays: jittable, no Flax modules. Every teacher input goes through
jax.lax.stop_gradient, so a caller may pass live teacher outputs without training the teacher.
Reductions run in float32 whatever the input dtype.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import jax
import jax.numpy as jnp

from jaxface.losses.detection import (
    CENTERNET_HEAD_KEYS,
    _require_keys,
    _require_rank,
    _require_same_shape,
    masked_l1_loss,
)
from jaxface.losses.reduction import global_ratio


def kd_logit_loss(
    student_logits: jax.Array, teacher_logits: jax.Array, temperature: float | jax.Array
) -> jax.Array:
    """Hinton et al. soft-target loss, scaled by T^2 so its gradient size does not depend on T.

    Args:
      student_logits: [..., C] logits, class axis last (e.g. [B, C]).
      teacher_logits: [..., C] same shape; gradient is stopped.
      temperature: T > 0, a Python number or a scalar array.

      p_t = softmax(teacher / T), log q_s = log_softmax(student / T)   over the last axis
      loss = T^2 * mean_over_leading_axes( sum_c p_t[c] * (log p_t[c] - log q_s[c]) )

    Classes the teacher gives probability exactly 0 (e.g. -inf logits) contribute 0, by the
    convention 0 * log 0 = 0.

    Returns:
      scalar float32 loss, 0 when the two logit arrays are equal.
    """
    if student_logits.ndim < 1:
        raise ValueError("student_logits must have a class axis [..., C], got a scalar")
    _require_same_shape("student_logits", student_logits, "teacher_logits", teacher_logits)
    if isinstance(temperature, (int, float)) and not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    temperature = jnp.asarray(temperature, jnp.float32)
    teacher_logits = jax.lax.stop_gradient(jnp.asarray(teacher_logits, jnp.float32))
    student_logits = jnp.asarray(student_logits, jnp.float32)

    teacher_log_prob = jax.nn.log_softmax(teacher_logits / temperature, axis=-1)
    student_log_prob = jax.nn.log_softmax(student_logits / temperature, axis=-1)
    teacher_prob = jnp.exp(teacher_log_prob)
    pointwise = jnp.where(
        teacher_prob > 0, teacher_prob * (teacher_log_prob - student_log_prob), 0.0
    )
    kl_per_example = jnp.sum(pointwise, axis=-1)
    return temperature**2 * jnp.mean(kl_per_example)


def feature_distillation_loss(
    student_features: Sequence[jax.Array], teacher_features: Sequence[jax.Array]
) -> jax.Array:
    """Mean squared error between matching student and teacher feature maps, averaged over levels.

    Args:
      student_features: N arrays [B, h_k, w_k, c_k], one per pyramid level, ALREADY mapped to the
        teacher's width by the caller (e.g. a learned 1x1 conv adapter).
      teacher_features: N arrays with exactly the same shapes; gradient is stopped.

      loss = (1/N) * sum_k mean_{b,y,x,c} (student_k - teacher_k)^2

    Each level counts equally whatever its size.

    Returns:
      scalar float32 loss.
    """
    student_features = list(student_features)
    teacher_features = list(teacher_features)
    if len(student_features) != len(teacher_features):
        raise ValueError(
            f"student_features has {len(student_features)} levels but teacher_features has "
            f"{len(teacher_features)}; they must have the same number"
        )
    if not student_features:
        raise ValueError("feature_distillation_loss needs at least one feature level, got 0")
    for level, (student, teacher) in enumerate(zip(student_features, teacher_features)):
        if student.shape != teacher.shape:
            raise ValueError(
                f"feature level {level}: student shape {tuple(student.shape)} does not match "
                f"teacher shape {tuple(teacher.shape)}"
            )
    per_level = []
    for student, teacher in zip(student_features, teacher_features):
        teacher = jax.lax.stop_gradient(jnp.asarray(teacher, jnp.float32))
        per_level.append(jnp.mean((jnp.asarray(student, jnp.float32) - teacher) ** 2))
    return jnp.mean(jnp.stack(per_level))


def head_distillation_loss(
    student_heads: Mapping[str, jax.Array],
    teacher_heads: Mapping[str, jax.Array],
    center_mask: jax.Array,
    *,
    heatmap_weight: float = 1.0,
    wh_weight: float = 0.1,
    offset_weight: float = 1.0,
    axis_name: str | None = None,
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Distil a teacher's CenterNet head maps into the student's.

    Args:
      student_heads: {'heatmap': [B, H, W, C] logits, 'wh': [B, H, W, 2], 'offset': [B, H, W, 2]}.
      teacher_heads: the same keys and shapes; gradient is stopped.
      center_mask: [B, H, W] (or [B, H, W, 1]), 1 at ground-truth object centres.
      axis_name: the device axis of a mapped step: the object count is then the global batch's.

      heatmap = sum_{b,y,x,c} (sigmoid(student.heatmap) - sigmoid(teacher.heatmap))^2 / max(sum(center_mask), 1)
      wh      = masked_l1_loss(student.wh, teacher.wh, center_mask)
      offset  = masked_l1_loss(student.offset, teacher.offset, center_mask)
      total   = heatmap_weight * heatmap + wh_weight * wh + offset_weight * offset

    The heatmap is matched everywhere (the teacher's soft scores carry information off the
    centres) and, like CenterNet's focal loss, normalised by the number of objects rather than the
    number of cells, so its scale does not shrink with the map size and weights near 1 are
    meaningful. Size and offset are only meaningful at centres, so they are masked like the
    ground-truth regression losses (K channels summed, divided by the number of centres).

    Returns:
      (total scalar, {'heatmap', 'wh', 'offset'} unweighted scalar terms).
    """
    _require_keys("student_heads", student_heads, CENTERNET_HEAD_KEYS)
    _require_keys("teacher_heads", teacher_heads, CENTERNET_HEAD_KEYS)
    for key in CENTERNET_HEAD_KEYS:
        _require_rank(f"student_heads['{key}']", student_heads[key], 4, "[B, H, W, C]")
        _require_same_shape(
            f"student_heads['{key}']", student_heads[key], f"teacher_heads['{key}']", teacher_heads[key]
        )
    teacher = {key: jax.lax.stop_gradient(teacher_heads[key]) for key in CENTERNET_HEAD_KEYS}

    student_scores = jax.nn.sigmoid(jnp.asarray(student_heads["heatmap"], jnp.float32))
    teacher_scores = jax.nn.sigmoid(jnp.asarray(teacher["heatmap"], jnp.float32))
    terms = {
        "heatmap": global_ratio(jnp.sum((student_scores - teacher_scores) ** 2), jnp.sum(center_mask),
                                axis_name=axis_name, floor=1.0),
        "wh": masked_l1_loss(student_heads["wh"], teacher["wh"], center_mask, axis_name=axis_name),
        "offset": masked_l1_loss(student_heads["offset"], teacher["offset"], center_mask, axis_name=axis_name),
    }
    total = (
        heatmap_weight * terms["heatmap"]
        + wh_weight * terms["wh"]
        + offset_weight * terms["offset"]
    )
    return total, terms
