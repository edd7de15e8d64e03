"""Face recognizer and the super-resolution -> recognizer cascade (flax linen).

FaceEmbedder: images [B, H, W, 3] (uint8 or float in [0, 1]) -> ResNetBackbone (basic blocks,
`jaxface.models.attributes`) -> global average pool -> Dense(E) -> e / max(||e||_2, 1e-6): unit
embeddings [B, E] float32.

Cascade (claim 6 of seed 001): the SR model's output fed to the recognizer, one module whose variables
are {'params': {'sr': ..., 'recognizer': ...}, 'batch_stats': {'recognizer': ...}}, i.e. the two trained
models' variables side by side: lr [B, h, w, 3] -> {'embedding' [B, E], 'restored' [B, f h, f w, 3]}.
"""

from __future__ import annotations

from typing import Any, Sequence

import flax.linen as nn
import jax.numpy as jnp

from jaxface.models.attributes import ResNetBackbone


def l2_normalise(x: jnp.ndarray, eps: float = 1e-6) -> jnp.ndarray:
    return x / jnp.maximum(jnp.linalg.norm(x, axis=-1, keepdims=True), eps)


class FaceEmbedder(nn.Module):
    widths: Sequence[int] = (32, 64, 128, 256)
    blocks: Sequence[int] = (2, 2, 2, 2)
    stem_width: int | None = None
    stem_stride: int = 2
    embed_dim: int = 128
    bn_axis_name: str | None = None
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, images: jnp.ndarray, train: bool) -> jnp.ndarray:
        features = ResNetBackbone(widths=tuple(self.widths), blocks=tuple(self.blocks), stem_width=self.stem_width,
                                  stem_stride=self.stem_stride, bn_axis_name=self.bn_axis_name, dtype=self.dtype,
                                  name="backbone")(images, train)
        pooled = jnp.mean(features, axis=(1, 2))
        embedding = nn.Dense(self.embed_dim, dtype=self.dtype, param_dtype=jnp.float32, name="embed")(pooled)
        return l2_normalise(embedding.astype(jnp.float32))


class Cascade(nn.Module):
    """SR then recognizer; `sr` and `recognizer` are the (unbound) trained modules."""

    sr: nn.Module
    recognizer: FaceEmbedder

    def __call__(self, lr: jnp.ndarray) -> dict[str, jnp.ndarray]:
        restored = self.sr(lr)
        return {"embedding": self.recognizer(restored, train=False), "restored": restored}


def cascade_variables(sr: dict, recognizer: dict) -> dict:
    """The Cascade's variables from the two models' own {'params', 'batch_stats'?}."""
    sr_variables, recognizer_variables = sr, recognizer
    out = {"params": {"sr": sr_variables["params"], "recognizer": recognizer_variables["params"]}}
    stats = {name: v["batch_stats"] for name, v in (("sr", sr_variables), ("recognizer", recognizer_variables))
             if v.get("batch_stats")}
    if stats:
        out["batch_stats"] = stats
    return out
