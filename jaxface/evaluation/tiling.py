"""Prediction on images larger than a model's tile: overlapping tiles stitched together.

`predict_tiled(fn, image, tile, margin, align)` runs `fn` ([n, tile, tile, C] -> [n, tile, tile, K]) on tiles whose
starts step by tile - 2 * margin (the last row / column of tiles ends at the image edge) and keeps from
each tile only its central part, all but `margin` pixels from every side that is not an image edge. With
`margin` at least the model's receptive-field radius every kept pixel saw the same context as in one
pass over the whole image, so the stitched result equals it exactly (for models without image-wide
operations; the U-Net's BatchNorm in inference mode is per pixel). A network that pools by 2^k needs
its tiles at multiples of `align` = 2^k from the origin: tile, tile - 2 * margin and the image sides
(pad them) must be multiples of it.
"""

from __future__ import annotations

from typing import Callable

import numpy as np


def tile_starts(length: int, tile: int, margin: int) -> list[int]:
    if tile <= 2 * margin:
        raise ValueError(f"tile {tile} must exceed twice the margin {margin}")
    if length <= tile:
        return [0]
    return sorted(set(range(0, length - tile, tile - 2 * margin)) | {length - tile})


def predict_tiled(fn: Callable[[np.ndarray], np.ndarray], image: np.ndarray, tile: int, margin: int,
                  align: int = 1, batch: int = 8) -> np.ndarray:
    """image [H, W, C] (H, W >= tile, or padded by the caller) -> fn's output stitched to [H, W, K]."""
    h, w = image.shape[:2]
    if any(v % align for v in (tile, tile - 2 * margin, h, w)):
        raise ValueError(f"tile {tile}, tile - 2 x margin {tile - 2 * margin} and the image's {h}x{w} must be "
                         f"multiples of {align}")
    spots = [(y, x) for y in tile_starts(h, tile, margin) for x in tile_starts(w, tile, margin)]
    outputs = []
    for i in range(0, len(spots), batch):
        outputs.extend(np.asarray(fn(np.stack([image[y:y + tile, x:x + tile] for y, x in spots[i:i + batch]]))))
    out = np.zeros((h, w, outputs[0].shape[-1]), outputs[0].dtype)
    for (y, x), o in zip(spots, outputs):
        # keep [y0, y1) x [x0, x1): the margins inside the image belong to the neighbouring tiles
        y0, x0 = (y + margin if y > 0 else 0), (x + margin if x > 0 else 0)
        y1, x1 = (y + tile - margin if y + tile < h else h), (x + tile - margin if x + tile < w else w)
        out[y0:y1, x0:x1] = o[y0 - y:y1 - y, x0 - x:x1 - x]
    return out
