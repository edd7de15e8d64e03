"""Image helpers shared by recipes and commands: centred square crops and resizing to a model's input."""

from __future__ import annotations

from typing import Sequence

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


def gaussian_taps(sigma: float, radius: int, dtype) -> np.ndarray:
    """[2 radius + 1] taps exp(-k^2 / (2 sigma^2)), k in [-radius, radius], normalised to sum 1 in float64,
    then cast to `dtype`."""
    taps = np.exp(-0.5 * (np.arange(-radius, radius + 1) / sigma) ** 2)
    return (taps / taps.sum()).astype(dtype)


def separable_gaussian(x: np.ndarray, sigma: float, radius: int, axes: tuple[int, ...]) -> np.ndarray:
    """Gaussian filter of std `sigma` along each of `axes` of a float array, kernel taps
    exp(-k^2 / (2 sigma^2)) for k in [-radius, radius] normalised to sum 1 (in x's dtype), borders
    reflected as in 'abcd|dcba'. Same shape and dtype as x."""
    taps = gaussian_taps(sigma, radius, x.dtype)
    for axis in axes:
        pad = [(0, 0)] * x.ndim
        pad[axis] = (radius, radius)
        padded = np.pad(x, pad, mode="symmetric")
        n = x.shape[axis]
        x = sum(w * np.take(padded, np.arange(i, i + n), axis=axis) for i, w in enumerate(taps))
    return x


def separable_filter_batch(x: np.ndarray, taps: Sequence[np.ndarray], axes: tuple[int, ...]) -> np.ndarray:
    """x float [N, ...] and one odd-length kernel per example (taps[n]: [2 r_n + 1], x's dtype) -> x's shape
    and dtype: example n filtered along each of `axes` (axes of x, not 0) by taps[n], borders reflected as
    in 'abcd|dcba'. With R = max_n r_n and w[n] = taps[n] centred in 2R + 1 zeros, per axis

      y[n] = 0 + w[n, 0] * p[n, 0:L] + w[n, 1] * p[n, 1:L + 1] + ... + w[n, 2R] * p[n, 2R:2R + L],

    p = x reflected by R along the axis, L its length. For finite x this is, bit for bit,
    `separable_gaussian`'s result for example n alone with its own taps: the symmetric padding by R
    holds the padding by r_n at its centre, and a zero tap adds 0 * v = +-0, which leaves a partial sum
    unchanged (started at +0 it is never -0, and p + +-0 == p for any other p): the same float additions
    happen in the same order as in the per-example sum. The kernel [1] passes an example through.
    """
    radius = max(len(t) // 2 for t in taps)
    w = np.zeros((len(x), 2 * radius + 1), x.dtype)
    for n, t in enumerate(taps):
        w[n, radius - len(t) // 2:radius + len(t) // 2 + 1] = t
    w = w.reshape(w.shape + (1,) * (x.ndim - 1))  # [N, 2R + 1, 1, ...]: w[:, i] broadcasts over an example
    for axis in axes:
        pad = [(0, 0)] * x.ndim
        pad[axis] = (radius, radius)
        padded = np.pad(x, pad, mode="symmetric")
        length, out, term = x.shape[axis], np.zeros_like(x), np.empty_like(x)
        for i in range(2 * radius + 1):  # tap order as in separable_gaussian
            out += np.multiply(w[:, i], padded[(slice(None),) * axis + (slice(i, i + length),)], out=term)
        x = out
    return x
