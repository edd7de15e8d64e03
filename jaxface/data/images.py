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
