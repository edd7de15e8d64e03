"""Losses over pairs of embeddings (face recognition, seed 001).

Pure functions of arrays. Inside a step mapped over devices pass `axis_name` and the pairs are those of
the GLOBAL batch (`jaxface.losses.reduction.gather_global`), with the gradient of one device holding
the whole batch.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxface.losses.reduction import gather_global

DISTANCE_FLOOR = 1e-12  # squared distance below which d = sqrt(.) is clamped: a finite gradient at d = 0


def pairwise_margin_loss(embeddings: jax.Array, ids: jax.Array, margin: float, *,
                         axis_name: str | None = None) -> jax.Array:
    """Contrastive loss over all pairs i < j of the batch.

    Args:
      embeddings: [B, D] float (typically L2-normalised).
      ids: [B] int identity of each embedding.
      margin: m > 0, the distance beyond which a pair of different identities costs nothing.
      axis_name: the device axis of a mapped step: the pairs are then those of the global batch.

      d_ij   = ||e_i - e_j||_2
      l_ij   = d_ij^2                    if ids_i == ids_j
               max(0, m - d_ij)^2        otherwise
      loss   = sum_{i<j} l_ij / (B (B - 1) / 2)

    d_ij for different identities is sqrt(max(d_ij^2, 1e-12)), so two equal embeddings of different
    identities get a finite gradient pushing them apart.

    Returns:
      scalar float32 loss (0 for B < 2).
    """
    if embeddings.ndim != 2:
        raise ValueError(f"embeddings must have shape [B, D], got {tuple(embeddings.shape)}")
    if ids.shape != embeddings.shape[:1]:
        raise ValueError(f"ids must have shape [B] = ({embeddings.shape[0]},), got {tuple(ids.shape)}")
    if isinstance(margin, (int, float)) and not margin > 0:
        raise ValueError(f"margin must be > 0, got {margin}")
    e = gather_global(jnp.asarray(embeddings, jnp.float32), axis_name)
    ids = gather_global(ids, axis_name)
    b = e.shape[0]
    if b < 2:
        return jnp.zeros((), jnp.float32)
    norms = jnp.sum(e * e, axis=-1)
    # ||a||^2 + ||b||^2 - 2 a.b: one [B, D] x [D, B] matmul instead of a [B, B, D] difference tensor
    squared = jnp.maximum(norms[:, None] + norms[None, :] - 2.0 * (e @ e.T), 0.0)  # [B, B]
    same = ids[:, None] == ids[None, :]
    distance = jnp.sqrt(jnp.maximum(squared, DISTANCE_FLOOR))
    per_pair = jnp.where(same, squared, jnp.maximum(margin - distance, 0.0) ** 2)
    upper = jnp.triu(jnp.ones((b, b), bool), k=1)  # each unordered pair once, no self-pairs
    return jnp.sum(jnp.where(upper, per_pair, 0.0)) / (b * (b - 1) / 2)
