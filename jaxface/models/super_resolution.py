"""Super-resolution networks (flax linen): FSRCNN-style with sub-pixel upsampling, and SRCNN.

Both read a low-resolution image [B, h, w, 3] (uint8 in [0, 255] or float in [0, 1]) and return the
restored image [B, f h, f w, 3] as float32 in (about) [0, 1]; it is not clipped, so a reconstruction
loss keeps its gradient everywhere (clip for display).

FSRCNN (Dong et al. 2016), layers on the low-resolution grid, PReLU after each but the last:
    conv5x5(d)  feature extraction
    conv1x1(s)  shrinking
    m x conv3x3(s)  mapping
    conv1x1(d)  expanding
    conv3x3(3 f^2), depth-to-space by f  sub-pixel upsampling (Shi et al. 2016) instead of a deconvolution
SRCNN (Dong et al. 2014), on the bicubic-upsampled image: conv9x9(n1) relu, conv1x1(n2) relu, conv5x5(3).

residual=True adds the bicubic upsampling of the input, y = bicubic_f(x) + net(x), and the last layer
starts at zero, so an untrained model returns the bicubic image and training only learns the detail.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

SR_KINDS = ("fsrcnn", "srcnn")


def to_unit(images: jnp.ndarray) -> jnp.ndarray:
    """uint8 [0, 255] -> float32 [0, 1]; floating images are taken to be in [0, 1] already."""
    if images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(f"images must have shape [B, H, W, 3]; got {images.shape}")
    if images.dtype == jnp.uint8:
        return images.astype(jnp.float32) / 255.0
    if not jnp.issubdtype(images.dtype, jnp.floating):
        raise ValueError(f"images must be uint8 or floating point; got dtype {images.dtype}")
    return images.astype(jnp.float32)


def bicubic_upsample(x: jnp.ndarray, factor: int) -> jnp.ndarray:
    """float [B, h, w, C] -> [B, f h, f w, C], bicubic (Keys, a = -0.5)."""
    b, h, w, c = x.shape
    return jax.image.resize(x, (b, h * factor, w * factor, c), method="bicubic")


def depth_to_space(x: jnp.ndarray, factor: int) -> jnp.ndarray:
    """[B, h, w, C f^2] -> [B, f h, f w, C]: channel (i f + j) C + c of a pixel goes to sub-pixel (i, j)."""
    b, h, w, cf = x.shape
    c = cf // (factor * factor)
    x = x.reshape(b, h, w, factor, factor, c)
    return x.transpose(0, 1, 3, 2, 4, 5).reshape(b, h * factor, w * factor, c)


class FSRCNN(nn.Module):
    factor: int = 4
    d: int = 56
    s: int = 12
    m: int = 4
    residual: bool = True
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, images: jnp.ndarray) -> jnp.ndarray:
        x = to_unit(images)
        conv = dict(dtype=self.dtype, param_dtype=jnp.float32, padding="SAME")
        y = x.astype(self.dtype)
        for i, (width, k) in enumerate([(self.d, 5), (self.s, 1)] + [(self.s, 3)] * self.m + [(self.d, 1)]):
            y = nn.Conv(width, (k, k), name=f"conv{i}", **conv)(y)
            y = nn.PReLU(param_dtype=jnp.float32, name=f"prelu{i}")(y)
        last_init = nn.initializers.zeros if self.residual else nn.initializers.lecun_normal()
        y = nn.Conv(3 * self.factor ** 2, (3, 3), kernel_init=last_init, name="subpixel", **conv)(y)
        y = depth_to_space(y.astype(jnp.float32), self.factor)
        return y + bicubic_upsample(x, self.factor) if self.residual else y


class SRCNN(nn.Module):
    factor: int = 4
    n1: int = 64
    n2: int = 32
    residual: bool = True
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, images: jnp.ndarray) -> jnp.ndarray:
        up = bicubic_upsample(to_unit(images), self.factor)
        conv = dict(dtype=self.dtype, param_dtype=jnp.float32, padding="SAME")
        y = nn.relu(nn.Conv(self.n1, (9, 9), name="conv0", **conv)(up.astype(self.dtype)))
        y = nn.relu(nn.Conv(self.n2, (1, 1), name="conv1", **conv)(y))
        last_init = nn.initializers.zeros if self.residual else nn.initializers.lecun_normal()
        y = nn.Conv(3, (5, 5), kernel_init=last_init, name="conv2", **conv)(y).astype(jnp.float32)
        return y + up if self.residual else y


def build_sr(kind: str, factor: int, *, dtype: Any = jnp.float32, **options) -> nn.Module:
    """kind 'fsrcnn' (options d, s, m, residual) or 'srcnn' (n1, n2, residual)."""
    if kind == "fsrcnn":
        return FSRCNN(factor=factor, dtype=dtype, **options)
    if kind == "srcnn":
        return SRCNN(factor=factor, dtype=dtype, **options)
    raise ValueError(f"config.model.sr.kind={kind!r}; allowed: {', '.join(SR_KINDS)}")
