"""CenterNet training targets (Zhou et al., "Objects as Points", 2019) from normalised boxes, in numpy.

For a box with normalised [ymin, xmin, ymax, xmax] on an H x W output grid:
  centre (cy, cx) = ((ymin + ymax) / 2 * H, (xmin + xmax) / 2 * W),  cell (iy, ix) = (floor cy, floor cx)
  size   (h, w)   = ((ymax - ymin) * H, (xmax - xmin) * W)              (in output cells)
  heatmap[..., label] gets a Gaussian of radius r = int(gaussian_radius(ceil h, ceil w, 0.7)),
    sigma = (2r + 1) / 6, peaked at exactly 1 on (iy, ix); overlapping Gaussians combine by element-wise
    max;
  wh[iy, ix] = (h, w), offset[iy, ix] = (cy - iy, cx - ix), mask[iy, ix] = 1.
This follows the reference implementation (`gaussian_radius`, `draw_umich_gaussian` in
xingyizhou/CenterNet src/lib/utils/image.py). When two boxes share a centre cell, the later box's wh and
offset win and the mask counts the cell once.
"""

from __future__ import annotations

import math

import numpy as np

MIN_OVERLAP = 0.7


def gaussian_radius(height: float, width: float, min_overlap: float = MIN_OVERLAP) -> float:
    """CenterNet's Gaussian radius for a height x width box: the smallest r over the three cases (both
    corners shifted inward, outward, or one of each) such that a box whose corners move by r still has
    IoU >= min_overlap with the original. Kept exactly as the reference code (including its use of
    the quadratic's (b + sqrt) / 2 roots) so that targets match published CenterNet training."""
    a1, b1 = 1.0, height + width
    c1 = width * height * (1 - min_overlap) / (1 + min_overlap)
    r1 = (b1 + math.sqrt(b1 ** 2 - 4 * a1 * c1)) / 2
    a2, b2 = 4.0, 2 * (height + width)
    c2 = (1 - min_overlap) * width * height
    r2 = (b2 + math.sqrt(b2 ** 2 - 4 * a2 * c2)) / 2
    a3, b3 = 4 * min_overlap, -2 * min_overlap * (height + width)
    c3 = (min_overlap - 1) * width * height
    r3 = (b3 + math.sqrt(b3 ** 2 - 4 * a3 * c3)) / 2
    return min(r1, r2, r3)


def _gaussian_patch(radius: int) -> np.ndarray:
    """[2r+1, 2r+1] float32 Gaussian with sigma = (2r+1)/6 and value exactly 1 at the centre; values below
    float eps times the peak are zeroed (as in the reference)."""
    diameter = 2 * radius + 1
    sigma = diameter / 6
    offsets = np.arange(-radius, radius + 1, dtype=np.float64)
    patch = np.exp(-(offsets[:, None] ** 2 + offsets[None, :] ** 2) / (2 * sigma * sigma))
    patch[patch < np.finfo(np.float64).eps * patch.max()] = 0
    return patch.astype(np.float32)


def _draw_gaussian(channel: np.ndarray, cell_y: int, cell_x: int, radius: int) -> None:
    """In place: channel = max(channel, Gaussian of `radius` centred on (cell_y, cell_x)), clipped at the
    borders."""
    height, width = channel.shape
    patch = _gaussian_patch(radius)
    top, bottom = min(cell_y, radius), min(height - cell_y, radius + 1)
    left, right = min(cell_x, radius), min(width - cell_x, radius + 1)
    region = channel[cell_y - top:cell_y + bottom, cell_x - left:cell_x + right]
    np.maximum(region, patch[radius - top:radius + bottom, radius - left:radius + right], out=region)


def _check_output_size(output_size) -> tuple[int, int]:
    try:
        height, width = (int(v) for v in output_size)
    except (TypeError, ValueError):
        raise ValueError(f'output_size must be (H, W) of positive ints; got {output_size!r}') from None
    if height <= 0 or width <= 0:
        raise ValueError(f'output_size must be (H, W) of positive ints; got {output_size!r}')
    return height, width


def _check_inputs(boxes: np.ndarray, labels: np.ndarray, num_classes: int, batch_dims: int) -> None:
    lead = 'B, ' if batch_dims else ''
    if boxes.ndim != 2 + batch_dims or boxes.shape[-1] != 4:
        raise ValueError(f'boxes must have shape [{lead}K, 4]; got {boxes.shape}')
    if labels.shape != boxes.shape[:-1]:
        raise ValueError(f'labels must have shape [{lead}K] matching boxes {boxes.shape}; '
                         f'got {labels.shape}')
    if not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f'labels must be integers; got dtype {labels.dtype}')
    if not isinstance(num_classes, (int, np.integer)) or num_classes <= 0:
        raise ValueError(f'num_classes must be a positive int; got {num_classes!r}')
    bad = (labels < -1) | (labels >= num_classes)
    if bad.any():
        raise ValueError(f'labels must be -1 (padding) or in [0, {num_classes}); got {labels[bad][0]}')
    valid_boxes = boxes[labels >= 0]
    outside = ~((valid_boxes >= 0) & (valid_boxes <= 1)).all(axis=-1)  # NaN counts as outside
    if outside.any():
        raise ValueError(f'boxes of non-padding rows must be finite and normalised to [0, 1]; '
                         f'got {valid_boxes[outside][0].tolist()}')
    if np.any(valid_boxes[:, 2] < valid_boxes[:, 0]) or np.any(valid_boxes[:, 3] < valid_boxes[:, 1]):
        raise ValueError('boxes must be [ymin, xmin, ymax, xmax] with ymin <= ymax and xmin <= xmax')


def _encode_checked(boxes: np.ndarray, labels: np.ndarray, num_classes: int, height: int,
                    width: int) -> dict[str, np.ndarray]:
    heatmap = np.zeros((height, width, num_classes), np.float32)
    wh = np.zeros((height, width, 2), np.float32)
    offset = np.zeros((height, width, 2), np.float32)
    mask = np.zeros((height, width), np.float32)
    grid_scale = np.array([height, width, height, width], np.float64)
    for box, label in zip(boxes.astype(np.float64) * grid_scale, labels):
        if label < 0:
            continue
        box_h, box_w = box[2] - box[0], box[3] - box[1]
        centre_y, centre_x = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
        # A centre exactly on the far edge (a degenerate box at 1.0) belongs to the last cell.
        cell_y = min(int(math.floor(centre_y)), height - 1)
        cell_x = min(int(math.floor(centre_x)), width - 1)
        radius = max(0, int(gaussian_radius(math.ceil(box_h), math.ceil(box_w))))
        # heatmap[..., label] is a strided view, so drawing into it writes the heatmap.
        _draw_gaussian(heatmap[..., label], cell_y, cell_x, radius)
        wh[cell_y, cell_x] = (box_h, box_w)
        offset[cell_y, cell_x] = (centre_y - cell_y, centre_x - cell_x)
        mask[cell_y, cell_x] = 1.0
    return {'heatmap': heatmap, 'wh': wh, 'offset': offset, 'mask': mask}


def encode_centernet_targets(boxes, labels, *, num_classes: int, output_size) -> dict[str, np.ndarray]:
    """CenterNet targets for one example.

    Args:
      boxes: [K, 4] normalised [ymin, xmin, ymax, xmax] in [0, 1].
      labels: [K] int class ids in [0, num_classes); -1 marks padding rows, which are skipped.
      num_classes: number of heatmap channels.
      output_size: (H, W) of the head's output maps.
    Returns:
      dict of float32 arrays: heatmap [H, W, num_classes], wh [H, W, 2] (box height, width in cells),
      offset [H, W, 2] (cy - floor cy, cx - floor cx), mask [H, W] (1 at centre cells). See module doc.
    """
    boxes, labels = np.asarray(boxes), np.asarray(labels)
    height, width = _check_output_size(output_size)
    _check_inputs(boxes, labels, num_classes, batch_dims=0)
    return _encode_checked(boxes, labels, int(num_classes), height, width)


def _gaussian_radius_array(height: np.ndarray, width: np.ndarray, min_overlap: float = MIN_OVERLAP) -> np.ndarray:
    """`gaussian_radius` elementwise over float64 arrays (the same operations, so the same values)."""
    b1 = height + width
    c1 = width * height * (1 - min_overlap) / (1 + min_overlap)
    r1 = (b1 + np.sqrt(b1 ** 2 - 4 * 1.0 * c1)) / 2
    b2 = 2 * (height + width)
    c2 = (1 - min_overlap) * width * height
    r2 = (b2 + np.sqrt(b2 ** 2 - 4 * 4.0 * c2)) / 2
    a3, b3 = 4 * min_overlap, -2 * min_overlap * (height + width)
    c3 = (min_overlap - 1) * width * height
    r3 = (b3 + np.sqrt(b3 ** 2 - 4 * a3 * c3)) / 2
    return np.minimum(np.minimum(r1, r2), r3)


def _encode_batch_vectorised(boxes: np.ndarray, labels: np.ndarray, num_classes: int, height: int,
                             width: int) -> dict[str, np.ndarray]:
    """`_encode_checked` for a whole batch [B, K] without a Python loop over boxes: each box's Gaussian
    is evaluated on the full H x W grid (inside its (2r+1)^2 window, zero outside) and boxes are
    combined by max per (example, class); on a shared centre cell the later box's wh and offset win.
    Bit-identical to the per-box reference (tested)."""
    batch = labels.shape[0]
    heatmap = np.zeros((batch, height, width, num_classes), np.float32)
    wh = np.zeros((batch, height, width, 2), np.float32)
    offset = np.zeros((batch, height, width, 2), np.float32)
    mask = np.zeros((batch, height, width), np.float32)
    b_idx, k_idx = np.nonzero(labels >= 0)  # row-major: per example, boxes in order
    if len(b_idx) == 0:
        return {"heatmap": heatmap, "wh": wh, "offset": offset, "mask": mask}
    box = boxes[b_idx, k_idx].astype(np.float64) * np.array([height, width, height, width], np.float64)
    box_h, box_w = box[:, 2] - box[:, 0], box[:, 3] - box[:, 1]
    centre_y, centre_x = (box[:, 0] + box[:, 2]) / 2, (box[:, 1] + box[:, 3]) / 2
    cell_y = np.minimum(np.floor(centre_y).astype(np.int64), height - 1)
    cell_x = np.minimum(np.floor(centre_x).astype(np.int64), width - 1)
    radius = np.maximum(0, np.trunc(_gaussian_radius_array(np.ceil(box_h), np.ceil(box_w))).astype(np.int64))
    sigma = (2 * radius + 1) / 6
    dy = np.arange(height, dtype=np.float64)[None, :] - cell_y[:, None]  # [N, H]
    dx = np.arange(width, dtype=np.float64)[None, :] - cell_x[:, None]  # [N, W]
    gauss = np.exp(-(dy[:, :, None] ** 2 + dx[:, None, :] ** 2) / (2 * sigma * sigma)[:, None, None])
    inside = (np.abs(dy) <= radius[:, None])[:, :, None] & (np.abs(dx) <= radius[:, None])[:, None, :]
    gauss = np.where(inside & (gauss >= np.finfo(np.float64).eps), gauss, 0.0).astype(np.float32)
    label = labels[b_idx, k_idx]
    # max over the boxes of each (example, class) channel: sort the boxes by channel, reduce each run
    channel = b_idx * num_classes + label
    order = np.argsort(channel, kind="stable")
    channels, first = np.unique(channel[order], return_index=True)
    planes = np.zeros((batch * num_classes, height, width), np.float32)
    planes[channels] = np.maximum.reduceat(gauss[order], first, axis=0)
    heatmap = np.ascontiguousarray(planes.reshape(batch, num_classes, height, width).transpose(0, 2, 3, 1))
    # sequential assignment: for a repeated (example, cell) index the last box (in order) wins
    wh[b_idx, cell_y, cell_x] = np.stack([box_h, box_w], axis=1)
    offset[b_idx, cell_y, cell_x] = np.stack([centre_y - cell_y, centre_x - cell_x], axis=1)
    mask[b_idx, cell_y, cell_x] = 1.0
    return {"heatmap": heatmap, "wh": wh, "offset": offset, "mask": mask}


def encode_centernet_batch(boxes, labels, *, num_classes: int, output_size) -> dict[str, np.ndarray]:
    """`encode_centernet_targets` over a batch: boxes [B, K, 4], labels [B, K] -> the same keys with a
    leading B axis (heatmap [B, H, W, num_classes], wh/offset [B, H, W, 2], mask [B, H, W]), computed
    for all boxes at once (`_encode_batch_vectorised`)."""
    boxes, labels = np.asarray(boxes), np.asarray(labels)
    height, width = _check_output_size(output_size)
    _check_inputs(boxes, labels, num_classes, batch_dims=1)
    return _encode_batch_vectorised(boxes, labels, int(num_classes), height, width)
