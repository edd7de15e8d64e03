"""Image helpers shared by recipes and commands: centred square crops and resizing to a model's input."""

from __future__ import annotations

import numpy as np
from PIL import Image


def center_square(height: int, width: int) -> tuple[int, int, int]:
    """(top, left, side) of the largest centred square of an image of `height` x `width` pixels."""
    side = min(height, width)
    return (height - side) // 2, (width - side) // 2, side


def resize_images(images: np.ndarray, size: int) -> np.ndarray:
    """[N, H, W, 3] uint8 -> [N, size, size, 3]: a centred square crop, then an exact box average when
    the side is an integer multiple of `size` (cheap), else Pillow's area-aware bilinear resize."""
    top, left, side = center_square(images.shape[1], images.shape[2])
    images = images[:, top:top + side, left:left + side]
    n = len(images)
    if side == size:
        return np.ascontiguousarray(images)
    if side % size == 0:
        f = side // size
        boxed = images.reshape(n, size, f, size, f, 3).mean(axis=(2, 4), dtype=np.float32)
        return np.round(boxed).astype(np.uint8)
    return np.stack([np.asarray(Image.fromarray(im).resize((size, size), Image.Resampling.BILINEAR,
                                                           reducing_gap=2.0)) for im in images])


def separable_gaussian(x: np.ndarray, sigma: float, radius: int, axes: tuple[int, ...]) -> np.ndarray:
    """Gaussian filter of std `sigma` along each of `axes` of a float array, kernel taps
    exp(-k^2 / (2 sigma^2)) for k in [-radius, radius] normalised to sum 1 (in x's dtype), borders
    reflected as in 'abcd|dcba'. Same shape and dtype as x."""
    taps = np.exp(-0.5 * (np.arange(-radius, radius + 1) / sigma) ** 2)
    taps = (taps / taps.sum()).astype(x.dtype)
    for axis in axes:
        pad = [(0, 0)] * x.ndim
        pad[axis] = (radius, radius)
        padded = np.pad(x, pad, mode="symmetric")
        n = x.shape[axis]
        x = sum(w * np.take(padded, np.arange(i, i + n), axis=axis) for i, w in enumerate(taps))
    return x
