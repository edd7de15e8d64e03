"""Masked multi-head loss for multi-task face-attribute recognition.

Each head h sees only the examples that carry its label (mask m_h[i] = 1), so data sets labelled for
different subsets of attributes can share one batch:

    classification head (integer labels y_h [B], logits z_h [B, C]):
        l_h[i] = -log softmax(z_h[i])[y_h[i]]
    regression head (float labels y_h [B] or [B, k], predictions p_h of the same shape, or [B, 1] for
    labels [B]), smooth-L1 / Huber with delta d on values divided by the head's scale s_h:
        e = (p_h[i] - y_h[i]) / s_h
        huber(e) = 0.5 e^2            if |e| <= d
                   d (|e| - 0.5 d)    otherwise
        l_h[i] = mean over the k components of huber(e)
    head loss    L_h   = sum_i m_h[i] l_h[i] / max(sum_i m_h[i], 1)
    total        L     = sum_h w_h L_h

A head with no labelled example in the batch has L_h = 0 exactly and sends exactly zero gradient to its
outputs: the labels (and predictions) of unlabelled examples are replaced by finite placeholders before
the per-example loss, so a NaN or out-of-range label in an unlabelled row cannot leak into the gradient
through 0 * NaN.
"""

from __future__ import annotations

from typing import Mapping

import jax
import jax.numpy as jnp

from jaxface.losses.reduction import global_ratio


def _huber(error: jnp.ndarray, delta: float) -> jnp.ndarray:
    absolute = jnp.abs(error)
    return jnp.where(absolute <= delta, 0.5 * error * error, delta * (absolute - 0.5 * delta))


def _check_keys(outputs, labels, label_masks, weights) -> None:
    names = set(outputs)
    for what, mapping in (('labels', labels), ('label_masks', label_masks), ('weights', weights)):
        if set(mapping) != names:
            raise ValueError(
                f'{what} must have the same keys as outputs {sorted(names)}; missing {sorted(names - set(mapping))}, '
                f'extra {sorted(set(mapping) - names)}')


def _head_loss(name: str, output: jnp.ndarray, label: jnp.ndarray, mask: jnp.ndarray, scale: float | None,
               huber_delta: float) -> jnp.ndarray:
    """Per-example loss [B] of one head; the kind (classification / regression) is read off the label dtype."""
    batch = output.shape[0]
    if mask.shape != (batch,):
        raise ValueError(f'label_masks[{name!r}] must have shape [B] = ({batch},); got {mask.shape}')
    labelled = mask > 0
    if jnp.issubdtype(label.dtype, jnp.integer):
        if scale is not None:
            raise ValueError(f'regression_scales[{name!r}] given, but {name!r} has integer labels (classification)')
        if output.ndim != 2 or label.shape != (batch,):
            raise ValueError(f'classification head {name!r} needs logits [B, C] and integer labels [B]; '
                             f'got outputs {output.shape} and labels {label.shape}')
        logits = output.astype(jnp.float32)
        safe_label = jnp.where(labelled, label, 0)
        log_probs = jax.nn.log_softmax(logits, axis=-1)
        per_example = -jnp.take_along_axis(log_probs, safe_label[:, None].astype(jnp.int32), axis=-1)[:, 0]
        return per_example
    if not jnp.issubdtype(label.dtype, jnp.floating):
        raise ValueError(f'labels[{name!r}] must be integer (classification) or floating (regression); '
                         f'got dtype {label.dtype}')
    prediction = output.astype(jnp.float32)
    if prediction.ndim == label.ndim + 1 and prediction.shape[-1] == 1:
        prediction = prediction[..., 0]
    if prediction.shape != label.shape or label.ndim not in (1, 2) or label.shape[0] != batch:
        raise ValueError(f'regression head {name!r} needs outputs and labels of the same shape [B] or [B, k] '
                         f'(outputs [B, 1] allowed for labels [B]); got outputs {output.shape} and labels {label.shape}')
    scale = 1.0 if scale is None else scale
    if not scale > 0:
        raise ValueError(f'regression_scales[{name!r}] must be > 0; got {scale}')
    keep = labelled if label.ndim == 1 else labelled[:, None]
    error = jnp.where(keep, prediction - label.astype(jnp.float32), 0.0) / scale
    per_example = _huber(error, huber_delta)
    if per_example.ndim == 2:
        per_example = per_example.mean(axis=-1)
    return per_example


def multi_head_attribute_loss(
    outputs: Mapping[str, jnp.ndarray],
    labels: Mapping[str, jnp.ndarray],
    label_masks: Mapping[str, jnp.ndarray],
    weights: Mapping[str, float],
    *,
    regression_scales: Mapping[str, float] | None = None,
    huber_delta: float = 1.0,
    axis_name: str | None = None,
) -> tuple[jnp.ndarray, dict[str, jnp.ndarray]]:
    """Weighted sum of masked per-head losses (formulas in the module docstring).

    Args:
      outputs: name -> [B, C] logits (classification) or [B] / [B, 1] / [B, k] predictions (regression).
      labels: name -> [B] integer class ids (classification: the head kind is read off the label dtype)
        or [B] / [B, k] floats (regression).
      label_masks: name -> [B] float, 1 where the example carries that label, 0 where not (fractional
        values act as per-example weights).
      weights: name -> float weight w_h of the head in the total.
      regression_scales: name -> s_h > 0 dividing prediction and label before the Huber loss (e.g. 10
        for age in years), for regression heads only; missing heads use 1.
      huber_delta: d, where the Huber loss turns from quadratic to linear (on scaled values).
      axis_name: the device axis of a mapped step: sum_i m_h[i] then runs over the global batch
        (`jaxface.losses.reduction`), so the loss does not depend on the number of devices.

    Returns:
      (total, per_head): the scalar float32 total L and {name: L_h} (unweighted head losses).
    """
    _check_keys(outputs, labels, label_masks, weights)
    regression_scales = dict(regression_scales or {})
    unknown = set(regression_scales) - set(outputs)
    if unknown:
        raise ValueError(f'regression_scales has heads {sorted(unknown)} that are not in outputs {sorted(outputs)}')
    if not huber_delta > 0:
        raise ValueError(f'huber_delta must be > 0; got {huber_delta}')
    total = jnp.zeros((), jnp.float32)
    per_head = {}
    for name in sorted(outputs):
        output, label = jnp.asarray(outputs[name]), jnp.asarray(labels[name])
        mask = jnp.asarray(label_masks[name], jnp.float32)
        if output.ndim == 0 or label.ndim == 0:
            raise ValueError(f'{name!r}: outputs and labels need a leading batch axis; '
                             f'got outputs {output.shape}, labels {label.shape}')
        per_example = _head_loss(name, output, label, mask, regression_scales.get(name), huber_delta)
        # Unlabelled rows: zero weight and a finite placeholder loss, so they add exactly 0 and pass
        # exactly zero gradient (jnp.where routes no cotangent to the unselected branch).
        per_example = jnp.where(mask > 0, per_example, 0.0)
        head_loss = global_ratio(jnp.sum(mask * per_example), jnp.sum(mask), axis_name=axis_name, floor=1.0)
        per_head[name] = head_loss
        total = total + jnp.float32(weights[name]) * head_loss
    return total, per_head
