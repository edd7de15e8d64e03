"""Multi-task face-attribute network: one shared ResNet trunk, one small head per attribute, and an
optional per-task decoupling module, built so that a model can grow stage by stage.

Layout (B batch, E = embed_dim)::

    images [B, H, W, 3]  (uint8 in [0, 255] -> x / 127.5 - 1; float in [0, 1] -> 2x - 1)
      ResNetBackbone: 3x3 stem conv-BN-relu (stride `stem_stride`), then len(widths) stages of basic
        residual blocks (stage s: blocks[s] blocks of width widths[s], the first with stride 2 for s > 0)
                                                 -> [B, H / (stem_stride 2^(S-1)), ..., widths[-1]]
      global average pool, neck Dense(E) + relu  -> shared features f [B, E]
      pose head first (when present): p = head_pose(f)
      every other head h: x_h = f                    (decoupling=False)
                          x_h = decouple_h(f, p)     (decoupling=True)
                          out_h = head_h(x_h): Dense(head_hidden) + relu + Dense(out_dim)

Decoupling module (stage 3 of the recipe): per-task feature gating plus a task-specific residual branch,
conditioned on the predicted head pose:

    q   = [f, stop_gradient(p) / pose_scale]            ([f] when there is no pose head)
    g_h = 2 sigmoid(W_g q + b_g)                         channel gate in (0, 2), [B, E]
    r_h = W_2 relu(W_1 q + b_1) + b_2                    residual branch, [B, E]
    x_h = g_h * f + r_h

Why this design: the coupled attributes (age, smile, face value) read small, local cues whose shared
features are entangled with the interfering attributes (a mask hides the mouth, glasses the eyes, blur
the wrinkles, pose moves everything). A per-task gate lets each head re-weight the shared channels,
suppressing those dominated by the interferers and amplifying the ones it needs, without touching the
shared trunk that the independent attributes rely on; the residual branch adds a little task-specific
capacity for what re-weighting alone cannot express (e.g. combining eye-region cues when the mouth is
masked). Conditioning both on the predicted pose lets the re-weighting depend on the head pose, so
pose-induced feature shifts can be compensated; the pose estimate is stop-gradient so the other tasks
cannot bend the pose head, and it is the network's own prediction, so no pose label is needed at test
time. W_g and W_2 start at zero (b_g = b_2 = 0), so g_h = 1 and r_h = 0: with the earlier stage's
parameters copied in (`merge_params`) the stage-3 network starts out computing exactly the stage-2
function, and the new module only departs from identity as training asks it to.

Parameter names do not depend on which heads exist or on `decoupling`: the trunk is `backbone` and
`neck`, head h is `head_<h>`, its decoupler `decouple_<h>`. Adding heads or the decoupling module only
adds subtrees, so `merge_params(new_params, old_params)` carries a trained stage into the next. A
single-task model is the same class with one head.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
from flax.core import frozen_dict
from flax import traverse_util

# He initialisation (fan-out) for convs followed by ReLU, as in torchvision's ResNets.
_conv_init = nn.initializers.variance_scaling(2.0, 'fan_out', 'normal')


def _normalise_images(images: jnp.ndarray, dtype: Any) -> jnp.ndarray:
    if images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(f'images must have shape [B, H, W, 3]; got {images.shape}')
    if images.dtype == jnp.uint8:
        x = images.astype(jnp.float32) / 127.5 - 1.0
    elif jnp.issubdtype(images.dtype, jnp.floating):
        x = images.astype(jnp.float32) * 2.0 - 1.0
    else:
        raise ValueError(f'images must be uint8 or floating point; got dtype {images.dtype}')
    return x.astype(dtype)


class BasicBlock(nn.Module):
    """ResNet basic block: relu(shortcut(x) + BN(conv3x3(relu(BN(conv3x3_stride(x)))))).

    [B, H, W, C_in] -> [B, H / strides, W / strides, width]; the shortcut is a strided 1x1 conv + BN when
    the shape changes, the identity otherwise. The last BN's scale starts at zero so each block starts as
    (nearly) the identity, which keeps deep stacks trainable at large learning rates.
    """

    width: int
    strides: int = 1
    bn_axis_name: str | None = None
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jnp.ndarray, train: bool) -> jnp.ndarray:
        norm = dict(use_running_average=not train, momentum=0.9, epsilon=1e-5, axis_name=self.bn_axis_name,
                    dtype=self.dtype, param_dtype=jnp.float32)
        conv = dict(use_bias=False, kernel_init=_conv_init, dtype=self.dtype, param_dtype=jnp.float32,
                    padding='SAME')
        y = nn.Conv(self.width, (3, 3), strides=(self.strides, self.strides), name='conv1', **conv)(x)
        y = nn.relu(nn.BatchNorm(name='bn1', **norm)(y))
        y = nn.Conv(self.width, (3, 3), name='conv2', **conv)(y)
        y = nn.BatchNorm(name='bn2', scale_init=nn.initializers.zeros, **norm)(y)
        if self.strides != 1 or x.shape[-1] != self.width:
            x = nn.Conv(self.width, (1, 1), strides=(self.strides, self.strides), name='shortcut_conv', **conv)(x)
            x = nn.BatchNorm(name='shortcut_bn', **norm)(x)
        return nn.relu(x + y)


class ResNetBackbone(nn.Module):
    """ResNet with basic blocks (ResNet-18 is widths=(64, 128, 256, 512), blocks=(2, 2, 2, 2)).

    images [B, H, W, 3] (uint8 or float in [0, 1]; see module docstring) -> feature map
    [B, H / R, W / R, widths[-1]] with R = stem_stride * 2^(len(widths) - 1) (16 for the defaults, i.e.
    7x7 on 112x112 faces). `bn_axis_name` names the mapped device axis over which BatchNorm averages
    batch statistics; `dtype` is the compute dtype (parameters and statistics stay float32).
    """

    widths: Sequence[int] = (32, 64, 128, 256)
    blocks: Sequence[int] = (2, 2, 2, 2)
    stem_width: int | None = None  # None -> widths[0]
    stem_stride: int = 2
    bn_axis_name: str | None = None
    dtype: Any = jnp.float32

    def _check_config(self) -> None:
        if len(self.widths) < 1 or len(self.widths) != len(self.blocks):
            raise ValueError(f'ResNetBackbone.widths and .blocks must be non-empty and of equal length; '
                             f'got widths={self.widths!r}, blocks={self.blocks!r}')
        if any(not isinstance(w, int) or w < 1 for w in self.widths):
            raise ValueError(f'ResNetBackbone.widths must be ints >= 1; got {self.widths!r}')
        if any(not isinstance(n, int) or n < 1 for n in self.blocks):
            raise ValueError(f'ResNetBackbone.blocks must be ints >= 1; got {self.blocks!r}')
        if self.stem_stride not in (1, 2):
            raise ValueError(f'ResNetBackbone.stem_stride must be 1 or 2; got {self.stem_stride!r}')

    @nn.compact
    def __call__(self, images: jnp.ndarray, train: bool) -> jnp.ndarray:
        self._check_config()
        x = _normalise_images(images, self.dtype)
        x = nn.Conv(self.stem_width or self.widths[0], (3, 3), strides=(self.stem_stride, self.stem_stride),
                    padding='SAME', use_bias=False, kernel_init=_conv_init, dtype=self.dtype,
                    param_dtype=jnp.float32, name='stem_conv')(x)
        x = nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5, axis_name=self.bn_axis_name,
                         dtype=self.dtype, param_dtype=jnp.float32, name='stem_bn')(x)
        x = nn.relu(x)
        for stage, (width, count) in enumerate(zip(self.widths, self.blocks)):
            for block in range(count):
                strides = 2 if stage > 0 and block == 0 else 1
                x = BasicBlock(width, strides, bn_axis_name=self.bn_axis_name, dtype=self.dtype,
                               name=f'stage{stage + 1}_block{block + 1}')(x, train)
        return x


class AttributeHead(nn.Module):
    """Dense(hidden) + relu + Dense(out_dim): [B, E] -> [B, out_dim]."""

    out_dim: int
    hidden: int
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        x = nn.relu(nn.Dense(self.hidden, dtype=self.dtype, param_dtype=jnp.float32, name='hidden')(x))
        return nn.Dense(self.out_dim, dtype=self.dtype, param_dtype=jnp.float32, name='out')(x)


class TaskDecoupler(nn.Module):
    """x_h = 2 sigmoid(W_g q + b_g) * f + W_2 relu(W_1 q + b_1) + b_2 (module docstring).

    features f [B, E], condition q [B, Q] -> [B, E]; the identity map at initialisation.
    """

    hidden: int
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, features: jnp.ndarray, condition: jnp.ndarray) -> jnp.ndarray:
        width = features.shape[-1]
        dense = dict(dtype=self.dtype, param_dtype=jnp.float32)
        gate = 2.0 * nn.sigmoid(nn.Dense(width, kernel_init=nn.initializers.zeros, name='gate', **dense)(condition))
        branch = nn.relu(nn.Dense(self.hidden, name='branch_hidden', **dense)(condition))
        branch = nn.Dense(width, kernel_init=nn.initializers.zeros, name='branch_out', **dense)(branch)
        return gate * features + branch


def _head_dims(heads: Any) -> tuple[tuple[str, int], ...]:
    pairs = tuple(heads.items()) if isinstance(heads, Mapping) else tuple(tuple(pair) for pair in heads)
    if not pairs:
        raise ValueError('MultiTaskAttributeNet.heads must name at least one head')
    for pair in pairs:
        if len(pair) != 2 or not isinstance(pair[0], str) or not isinstance(pair[1], int) or pair[1] < 1:
            raise ValueError(f'MultiTaskAttributeNet.heads must be (name: str, out_dim: int >= 1) pairs; got {pair!r}')
    names = [name for name, _ in pairs]
    if len(set(names)) != len(names):
        raise ValueError(f'MultiTaskAttributeNet.heads has duplicate names: {names}')
    return pairs


class MultiTaskAttributeNet(nn.Module):
    """Shared ResNet trunk + one head per attribute (+ per-task decoupling); see the module docstring.

    heads: (name, out_dim) pairs (a tuple, hashable) or a dict name -> out_dim: out_dim = number of
      classes for a classification head, number of regressed values for a regression head.
    decoupling: insert `decouple_<name>` before every head except `pose_head`.
    pose_head: name of the head whose (stop-gradient) prediction conditions the decouplers; ignored
      when no head has this name.

    __call__(images [B, H, W, 3], train) -> {name: float32 [B, out_dim]}, squeezed to [B] when
    out_dim == 1 (matching [B] regression labels).
    """

    heads: Any
    decoupling: bool = False
    widths: Sequence[int] = (32, 64, 128, 256)
    blocks: Sequence[int] = (2, 2, 2, 2)
    stem_width: int | None = None
    stem_stride: int = 2
    embed_dim: int = 256
    head_hidden: int = 128
    decoupling_hidden: int = 64
    pose_head: str = 'pose'
    pose_scale: float = 30.0  # divides the pose head's output (degrees) to bring the condition to order 1
    bn_axis_name: str | None = None
    dtype: Any = jnp.float32

    @property
    def head_dims(self) -> tuple[tuple[str, int], ...]:
        return _head_dims(self.heads)

    @nn.compact
    def __call__(self, images: jnp.ndarray, train: bool) -> dict[str, jnp.ndarray]:
        head_dims = self.head_dims
        feature_map = ResNetBackbone(widths=self.widths, blocks=self.blocks, stem_width=self.stem_width,
                                     stem_stride=self.stem_stride, bn_axis_name=self.bn_axis_name,
                                     dtype=self.dtype, name='backbone')(images, train)
        pooled = jnp.mean(feature_map, axis=(1, 2))
        shared = nn.relu(nn.Dense(self.embed_dim, dtype=self.dtype, param_dtype=jnp.float32, name='neck')(pooled))

        raw = {}
        dims = dict(head_dims)
        condition = shared
        if self.pose_head in dims:
            raw[self.pose_head] = AttributeHead(dims[self.pose_head], self.head_hidden, dtype=self.dtype,
                                                name=f'head_{self.pose_head}')(shared)
            if self.decoupling:
                pose = jax.lax.stop_gradient(raw[self.pose_head]).astype(shared.dtype) / self.pose_scale
                condition = jnp.concatenate([shared, pose], axis=-1)
        for name, out_dim in head_dims:
            if name == self.pose_head:
                continue
            x = shared
            if self.decoupling:
                x = TaskDecoupler(self.decoupling_hidden, dtype=self.dtype, name=f'decouple_{name}')(shared, condition)
            raw[name] = AttributeHead(out_dim, self.head_hidden, dtype=self.dtype, name=f'head_{name}')(x)
        outputs = {}
        for name, out_dim in head_dims:
            out = raw[name].astype(jnp.float32)
            outputs[name] = out[:, 0] if out_dim == 1 else out
        return outputs


def merge_params(new_params: Any, old_params: Any, *, allow_dropped: bool = False) -> Any:
    """Returns `new_params` with every leaf whose path also exists in `old_params` replaced by the old leaf.

    For stage-to-stage initialisation: init the grown model (more heads, decoupling) to get
    `new_params`, then copy the trained earlier stage in. Works on any nested dict / FrozenDict of arrays
    (a `params` or `batch_stats` collection, or the whole variables dict) and returns the container type
    of `new_params`.

    Raises ValueError when a shared path has different shapes, or when `old_params` has paths missing
    from `new_params` (parameters would be silently lost) unless `allow_dropped=True` (e.g. to cut a
    multi-task model down to one head).
    """
    frozen = isinstance(new_params, frozen_dict.FrozenDict)
    new_flat = traverse_util.flatten_dict(frozen_dict.unfreeze(new_params))
    old_flat = traverse_util.flatten_dict(frozen_dict.unfreeze(old_params))
    dropped = sorted('/'.join(map(str, path)) for path in old_flat.keys() - new_flat.keys())
    if dropped and not allow_dropped:
        raise ValueError(f'old_params has {len(dropped)} leaves missing from new_params (e.g. {dropped[:3]}); '
                         'pass allow_dropped=True to discard them')
    for path, old in old_flat.items():
        if path not in new_flat:
            continue
        if jnp.shape(old) != jnp.shape(new_flat[path]):
            raise ValueError(f'merge_params: shape mismatch at {"/".join(map(str, path))}: '
                             f'new {jnp.shape(new_flat[path])} vs old {jnp.shape(old)}')
        new_flat[path] = old
    merged = traverse_util.unflatten_dict(new_flat)
    return frozen_dict.freeze(merged) if frozen else merged


def network_variables(full: dict, heads, decoupling: bool) -> dict:
    """The variables of a network with `heads` cut out of the largest one (`full`: its
    {collection: {module name: tree}}): parameter names do not depend
    on which heads exist (`MultiTaskAttributeNet`), so every model starts from the same weights and
    initialising compiles once rather than once per model."""
    keep = {"backbone", "neck"} | {f"head_{h}" for h in heads}
    if decoupling:
        keep |= {f"decouple_{h}" for h in heads if h != "pose"}
    return {collection: {k: v for k, v in tree.items() if k in keep} for collection, tree in full.items()}


def to_label_units(outputs: dict, scales: dict) -> dict:
    """Regression head h outputs y_h / s_h (unit-sized targets); this returns s_h * output in label units.
    Then the Huber loss on (s_h * o - y) / s_h has an O(1) gradient at o, like a cross-entropy: a head
    emitting degrees directly gets gradients 1/s_h smaller and barely shapes the shared trunk (measured:
    pose stayed at the constant predictor's error in every multi-task arm)."""
    return {h: o * scales[h] if h in scales else o for h, o in outputs.items()}
