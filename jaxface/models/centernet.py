"""CenterNet-style detectors for two-teacher feature distillation.

One network family serves all three roles of the method:

* the student (target detector) on the training image;
* teacher 1, a wider network on the same image (more parameters, same feature-map shapes);
* teacher 2, which sees an image ``L`` times larger and whose stem stride is ``L`` times larger, so that
  its N backbone feature maps have exactly the student's spatial shapes and can be compared level by level.

Layout (N = ``len(widths)``, s = ``stem_stride``)::

    image [B, H, W, 3]
      stem: log2(s) stride-2 3x3 conv-BN-relu          -> [B, H/s, W/s, stem_width]
      level k = 1..N: stride-2 3x3 conv-BN-relu, then ``blocks_per_level`` residual blocks
                                                      -> C_k [B, H/(s*2^k), W/(s*2^k), widths[k-1]]
      neck: P_N = lateral_N(C_N); P_k = lateral_k(C_k) + upsample2(P_{k+1}); 3x3 conv-BN-relu on P_1
      heads on the neck output (3x3 conv + relu + 1x1 conv each): heatmap, wh, offset

The detection output stride is ``2 * s`` (4 for the student).
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import flax.linen as nn
import jax.numpy as jnp

# ImageNet channel statistics: the conventional normalisation for conv detectors; fixed so that a
# checkpoint means the same thing whatever data set it was trained on.
_PIXEL_MEAN = (0.485, 0.456, 0.406)
_PIXEL_STD = (0.229, 0.224, 0.225)

# CenterNet initialises the heatmap logits to a prior foreground probability of 0.1 so the focal loss
# does not start swamped by the (overwhelmingly negative) background: bias = log(0.1 / 0.9) = -2.197.
HEATMAP_PRIOR = 0.1
HEATMAP_BIAS_INIT = math.log(HEATMAP_PRIOR / (1.0 - HEATMAP_PRIOR))

# He initialisation (fan-out) for convs followed by ReLU, as in torchvision's ResNets.
_conv_init = nn.initializers.variance_scaling(2.0, "fan_out", "normal")


def _upsample2_nearest(x: jnp.ndarray) -> jnp.ndarray:
    """[B, h, w, C] -> [B, 2h, 2w, C] by repeating each pixel into a 2x2 block."""
    batch, height, width, channels = x.shape
    x = jnp.broadcast_to(x[:, :, None, :, None, :], (batch, height, 2, width, 2, channels))
    return x.reshape(batch, 2 * height, 2 * width, channels)


def _is_power_of_two(value: int) -> bool:
    return isinstance(value, int) and value >= 1 and (value & (value - 1)) == 0


class ConvBNReLU(nn.Module):
    """Conv (no bias) -> BatchNorm -> optional ReLU. [B, H, W, C_in] -> [B, H/stride, W/stride, features]."""

    features: int
    kernel_size: int = 3
    strides: int = 1
    relu: bool = True
    bn_axis_name: str | None = None
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jnp.ndarray, train: bool) -> jnp.ndarray:
        x = nn.Conv(
            self.features,
            (self.kernel_size, self.kernel_size),
            strides=(self.strides, self.strides),
            padding="SAME",
            use_bias=False,
            kernel_init=_conv_init,
            dtype=self.dtype,
            param_dtype=jnp.float32,
            name="conv",
        )(x)
        x = nn.BatchNorm(
            use_running_average=not train,
            momentum=0.9,
            epsilon=1e-5,
            axis_name=self.bn_axis_name,
            dtype=self.dtype,
            param_dtype=jnp.float32,
            name="bn",
        )(x)
        return nn.relu(x) if self.relu else x


class ResidualBlock(nn.Module):
    """Basic residual block: relu(x + BN(conv3x3(relu(BN(conv3x3(x)))))); shape preserved [B, H, W, width]."""

    width: int
    bn_axis_name: str | None = None
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jnp.ndarray, train: bool) -> jnp.ndarray:
        layer = dict(bn_axis_name=self.bn_axis_name, dtype=self.dtype)
        y = ConvBNReLU(self.width, name="conv1", **layer)(x, train)
        y = ConvBNReLU(self.width, relu=False, name="conv2", **layer)(y, train)
        return nn.relu(x + y)


class CenterNet(nn.Module):
    """CenterNet-style detector: residual backbone with N stride-2 levels, top-down FPN neck, three heads.

    Stem: ``log2(stem_stride)`` stacked stride-2 3x3 conv-BN-relu layers (one stride-1 conv when
    ``stem_stride == 1``). For the high-resolution teacher (``stem_stride = 4``) this is two stride-2
    convs rather than one stride-4 conv: a 3x3 kernel with stride 4 would skip pixels, and a single
    large-kernel conv is only a linear map at full resolution. Two convs see every pixel and put a
    nonlinearity at half resolution, so the teacher can use detail that the student's smaller image lacks,
    while its later levels have the same strides (relative to its stem output) and hence the same
    feature-map shapes as the student's on an ``L = stem_stride / 2`` times smaller image.

    Input: ``images`` [B, H, W, 3], uint8 in [0, 255] or float in [0, 1]; uint8 is divided by 255, then both
    are normalised per channel with ImageNet mean/std. H and W must be multiples of
    ``stem_stride * 2**N``.

    Returns a dict of float32 arrays (cast back from ``dtype``):
      ``features``: tuple of N backbone maps, level k (1-based) is
        [B, H / (stem_stride * 2**k), W / (stem_stride * 2**k), widths[k-1]]
        (student on 64x64: 16x16x16, 8x8x32, 4x4x64);
      ``heads``: {'heatmap': [B, h, w, num_classes] logits, 'wh': [B, h, w, 2], 'offset': [B, h, w, 2]}
        with (h, w) = (H, W) / (2 * stem_stride), the first level's resolution.

    ``bn_axis_name``: name of the mapped device axis ('data' inside a pmap/shard_map step) over which
    BatchNorm averages its batch statistics. ``dtype`` is the compute dtype; parameters and BatchNorm
    statistics stay float32.
    """

    num_classes: int
    widths: Sequence[int] = (16, 32, 64)
    stem_stride: int = 2
    blocks_per_level: int = 1
    head_width: int = 32
    bn_axis_name: str | None = None
    dtype: Any = jnp.float32
    stem_width: int | None = None  # channels of the stem convs; None -> widths[0]
    neck_width: int | None = None  # channels of the FPN laterals and fuse conv; None -> widths[0]

    @property
    def output_stride(self) -> int:
        """Input pixels per heatmap cell: ``2 * stem_stride``."""
        return 2 * self.stem_stride

    @property
    def input_multiple(self) -> int:
        """H and W must be multiples of this: ``stem_stride * 2**N``."""
        return self.stem_stride * 2 ** len(self.widths)

    def _check_config(self) -> None:
        if not isinstance(self.num_classes, int) or self.num_classes < 1:
            raise ValueError(f"CenterNet.num_classes must be an int >= 1, got {self.num_classes!r}")
        if len(self.widths) < 1 or any(not isinstance(w, int) or w < 1 for w in self.widths):
            raise ValueError(f"CenterNet.widths must be a non-empty sequence of ints >= 1, got {self.widths!r}")
        if not _is_power_of_two(self.stem_stride):
            raise ValueError(f"CenterNet.stem_stride must be a power of two (1, 2, 4, ...), got {self.stem_stride!r}")
        if not isinstance(self.blocks_per_level, int) or self.blocks_per_level < 0:
            raise ValueError(f"CenterNet.blocks_per_level must be an int >= 0, got {self.blocks_per_level!r}")
        for field in ("head_width", "stem_width", "neck_width"):
            value = getattr(self, field)
            if value is not None and (not isinstance(value, int) or value < 1):
                raise ValueError(f"CenterNet.{field} must be an int >= 1, got {value!r}")

    def _normalise(self, images: jnp.ndarray) -> jnp.ndarray:
        if images.ndim != 4 or images.shape[-1] != 3:
            raise ValueError(f"CenterNet expects images of shape [B, H, W, 3], got {images.shape}")
        height, width = images.shape[1:3]
        if height % self.input_multiple or width % self.input_multiple:
            raise ValueError(
                f"CenterNet image height and width must be multiples of stem_stride * 2**N = "
                f"{self.input_multiple}, got {height}x{width}"
            )
        if images.dtype == jnp.uint8:
            images = images.astype(jnp.float32) / 255.0
        elif jnp.issubdtype(images.dtype, jnp.floating):
            images = images.astype(jnp.float32)
        else:
            raise ValueError(f"CenterNet images must be uint8 or floating point, got dtype {images.dtype}")
        mean = jnp.asarray(_PIXEL_MEAN, jnp.float32)
        std = jnp.asarray(_PIXEL_STD, jnp.float32)
        return ((images - mean) / std).astype(self.dtype)

    @nn.compact
    def __call__(self, images: jnp.ndarray, train: bool) -> dict:
        self._check_config()
        x = self._normalise(images)
        layer = dict(bn_axis_name=self.bn_axis_name, dtype=self.dtype)

        stem_width = self.stem_width or self.widths[0]
        num_stem_convs = max(1, int(math.log2(self.stem_stride)))
        stem_conv_stride = 2 if self.stem_stride > 1 else 1
        for i in range(num_stem_convs):
            x = ConvBNReLU(stem_width, strides=stem_conv_stride, name=f"stem_{i}", **layer)(x, train)

        features = []
        for level, width in enumerate(self.widths, start=1):
            x = ConvBNReLU(width, strides=2, name=f"level{level}_down", **layer)(x, train)
            for block in range(self.blocks_per_level):
                x = ResidualBlock(width, name=f"level{level}_block{block}", **layer)(x, train)
            features.append(x)

        neck_width = self.neck_width or self.widths[0]

        def lateral(level: int, feature: jnp.ndarray) -> jnp.ndarray:
            """1x1 projection of backbone level ``level`` to the neck width."""
            return nn.Conv(
                neck_width, (1, 1), kernel_init=_conv_init, dtype=self.dtype, param_dtype=jnp.float32,
                name=f"neck_lateral{level}",
            )(feature)

        top_down = lateral(len(features), features[-1])
        for level in range(len(features) - 1, 0, -1):
            top_down = lateral(level, features[level - 1]) + _upsample2_nearest(top_down)
        neck = ConvBNReLU(neck_width, name="neck_fuse", **layer)(top_down, train)

        head_outputs = {"heatmap": self.num_classes, "wh": 2, "offset": 2}
        heads = {}
        for head_name, out_channels in head_outputs.items():
            h = nn.Conv(
                self.head_width, (3, 3), kernel_init=_conv_init, dtype=self.dtype, param_dtype=jnp.float32,
                name=f"head_{head_name}_hidden",
            )(neck)
            h = nn.relu(h)
            bias_init = (
                nn.initializers.constant(HEATMAP_BIAS_INIT) if head_name == "heatmap" else nn.initializers.zeros
            )
            h = nn.Conv(
                out_channels, (1, 1), bias_init=bias_init, dtype=self.dtype, param_dtype=jnp.float32,
                name=f"head_{head_name}_out",
            )(h)
            heads[head_name] = h.astype(jnp.float32)

        return {"features": tuple(f.astype(jnp.float32) for f in features), "heads": heads}


class FeatureAdapter(nn.Module):
    """Per-level 1x1 conv (with bias) mapping student feature channels to a teacher's.

    ``features``: sequence of N arrays [B, h_k, w_k, C_k]; returns a tuple of N float32 arrays
    [B, h_k, w_k, channels[k]]. Trained with the student for feature distillation, dropped at export.
    """

    channels: Sequence[int]
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, features: Sequence[jnp.ndarray]) -> tuple:
        if len(features) != len(self.channels):
            raise ValueError(
                f"FeatureAdapter got {len(features)} feature maps but has {len(self.channels)} levels "
                f"(channels={tuple(self.channels)})"
            )
        adapted = []
        for level, (feature, out_channels) in enumerate(zip(features, self.channels), start=1):
            if feature.ndim != 4:
                raise ValueError(f"FeatureAdapter level {level} expects [B, h, w, C], got shape {feature.shape}")
            y = nn.Conv(
                out_channels, (1, 1), dtype=self.dtype, param_dtype=jnp.float32, name=f"level{level}"
            )(feature.astype(self.dtype))
            adapted.append(y.astype(jnp.float32))
        return tuple(adapted)
