"""A small U-Net for 3-class nucleus segmentation (background, interior, boundary; seed 002).

    image [B, H, W, C] uint8 (or float in [0, 1])
      level k = 0..N-1: two 3x3 conv-BN-relu at widths[k] (skip k), then 2x2 max-pool (not after the last)
      decoder k = N-2..0: nearest 2x upsample, concat skip k, two 3x3 conv-BN-relu at widths[k]
      head: 1x1 conv -> logits [B, H, W, num_classes] float32
H and W must be multiples of 2**(N-1). Two models of the method may differ in `widths` and in
`initializer` (the kernel initialiser) as well as in their random initialisation.
"""

from __future__ import annotations

from typing import Any, Sequence

import flax.linen as nn
import jax.numpy as jnp


INITS = {"he_normal": nn.initializers.variance_scaling(2.0, "fan_in", "normal"),
         "he_uniform": nn.initializers.variance_scaling(2.0, "fan_in", "uniform"),
         "lecun_normal": nn.initializers.lecun_normal(),
         "glorot_uniform": nn.initializers.glorot_uniform()}


class _Double(nn.Module):
    features: int
    initializer: str = "he_normal"
    bn_axis_name: str | None = None
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, train: bool):
        for i in range(2):
            x = nn.Conv(self.features, (3, 3), padding="SAME", use_bias=False, kernel_init=INITS[self.initializer],
                        dtype=self.dtype, param_dtype=jnp.float32, name=f"conv{i}")(x)
            x = nn.relu(nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5,
                                     axis_name=self.bn_axis_name, dtype=self.dtype, name=f"bn{i}")(x))
        return x


class UNet(nn.Module):
    widths: Sequence[int] = (16, 32, 64)
    num_classes: int = 3
    initializer: str = "he_normal"
    bn_axis_name: str | None = None
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, images: jnp.ndarray, train: bool) -> jnp.ndarray:
        if self.initializer not in INITS:
            raise ValueError(f"UNet initializer {self.initializer!r}; allowed: {', '.join(INITS)}")
        factor = 2 ** (len(self.widths) - 1)
        if images.shape[1] % factor or images.shape[2] % factor:
            raise ValueError(f"UNet with {len(self.widths)} levels needs H, W divisible by {factor}; "
                             f"got {images.shape[1:3]}")
        x = images.astype(self.dtype) / 255.0 if images.dtype == jnp.uint8 else images.astype(self.dtype)
        layer = dict(initializer=self.initializer, bn_axis_name=self.bn_axis_name, dtype=self.dtype)
        skips = []
        for k, w in enumerate(self.widths):
            x = _Double(w, name=f"down{k}", **layer)(x, train)
            if k < len(self.widths) - 1:
                skips.append(x)
                x = nn.max_pool(x, (2, 2), (2, 2))
        for k in reversed(range(len(self.widths) - 1)):
            x = jnp.repeat(jnp.repeat(x, 2, axis=1), 2, axis=2)
            x = _Double(self.widths[k], name=f"up{k}", **layer)(jnp.concatenate([x, skips[k]], -1), train)
        logits = nn.Conv(self.num_classes, (1, 1), dtype=self.dtype, param_dtype=jnp.float32, name="head")(x)
        return logits.astype(jnp.float32)
