"""Normalising a loss by a count of the GLOBAL batch when the batch is split over devices.

Many losses are a ratio over the examples i of a batch, Σ_i a_i / max(Σ_i c_i, floor), where the
normaliser c counts data (objects, masked cells, labelled examples, pairs). When every device holds a
slice d of the batch and divides by its own count, the mean over devices of a_d / c_d is not the
global ratio: the objective, and so the trained model, would depend on the number of devices.

Pass `axis_name` (the mapped axis the step runs under, `jaxface.train.devices.AXIS`) and each device
returns

    n * a_d / max(Σ_d c_d, floor)        (n = number of devices on the axis)

whose mean over the n devices is exactly Σ_d a_d / max(Σ_d c_d, floor), the single-device formula
applied to the whole global batch. Gradients averaged over devices (`devices.value_and_mean_grad`)
and metrics averaged over devices (the core does this) are then those of the global ratio, on any
number of devices and processes. Without `axis_name` the formula is the single-device one,
a / max(c, floor). The count carries no gradient (it is data).

Losses over all PAIRS of the global batch (metric learning) gather the examples instead
(`gather_global`): every device then computes the same global loss L, and the gradient reaching a
device's own examples through the gather's transpose (a reduce-scatter) is n * dL/de_d; averaged over
the n devices by `value_and_mean_grad`, the parameter gradient is exactly dL/dθ of one device holding
the whole batch.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax


def spans_devices(axis_name: str | None) -> bool:
    """Whether a collective over `axis_name` has anything to combine: False outside a mapping (None) and
    on an axis of one device, where psum, pmean, pmax and a tiled all_gather are the identity. The losses
    and the core skip collectives then, because XLA keeps a one-participant all-reduce and it stops
    fusion around it (measured on one CPU device: the mutual step's loss psum and gradient pmean cost it
    ~10-20 %)."""
    return axis_name is not None and lax.axis_size(axis_name) > 1


def global_ratio(numerator: jax.Array, count: jax.Array, *, axis_name: str | None = None,
                 floor: float | None = None, epsilon: float = 0.0) -> jax.Array:
    """numerator / normaliser, the normaliser counted over the global batch.

    Args:
      numerator: scalar, this device's sum a_d.
      count: scalar, this device's count c_d (no gradient flows through it).
      axis_name: the device axis the step is mapped over, or None on one device / outside a mapping.
      floor: the normaliser is max(Σ c, floor) (e.g. 1, so an empty batch gives the plain sum).
      epsilon: added to the normaliser, Σ c + epsilon (instead of, or after, the floor).

    Returns:
      n * a_d / (max(Σ_d c_d, floor) + epsilon); its mean over the axis is the global ratio.
    """
    count = lax.stop_gradient(jnp.asarray(count, jnp.float32))
    if spans_devices(axis_name):
        numerator = numerator * lax.axis_size(axis_name)
        count = lax.psum(count, axis_name)
    if floor is not None:
        count = jnp.maximum(count, floor)
    return numerator / (count + epsilon)


def gather_global(x: jax.Array, axis_name: str | None = None) -> jax.Array:
    """[b, ...] on each of n devices -> [n * b, ...], the global batch in device order (the order of
    the batch before it was split); `x` itself without an axis. Differentiable (see the module note)."""
    if not spans_devices(axis_name):
        return x
    return lax.all_gather(x, axis_name, axis=0, tiled=True)
