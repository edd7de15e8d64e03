"""Pixel labels from boxes (seed 002), and the fusion of weak labels with a model's predictions.

Classes: 0 background, 1 nucleus interior, 2 boundary (so touching nuclei separate into instances).
Boxes are (y0, x0, y1, x1) in pixels, y1 / x1 exclusive (`synthetic_cells`); labels come with an
`ignore` mask (True: no loss at that pixel).

Weak labels (`weak_labels`), one shape per box: the largest ellipse inscribed in the box ('ellipse'),
or the box itself ('box', the boxes-as-masks baseline):
  * outside every shape: background (0); this includes everything outside every box;
  * inside a shape: interior (1), its inner 1-pixel rim boundary (2); a pixel covered by several
    shapes belongs to the one it lies deepest inside (overlaps are split between them);
  * ignore: the dividing line between neighbouring shapes (the pixels of each that touch the other;
    the next pixels inwards are boundary, so touching nuclei still get a separating label), and a band
    of `edge_width` pixels just outside each shape (along the ellipse edges, where the true outline may
    lie either side).

Fusion rule (`fuse`), the round n+1 labels of one model from the OTHER model's round-n class
probabilities p (or its own, for self-training):
  1. outside every box: background, whatever p says (boxes are complete: no nucleus lies outside one);
  2. inside a box, where the predicted class is confident (max_c p_c >= `confidence`): that class;
  3. inside a box, where it is not: the weak label (and its ignore mask);
  4. a box in which the prediction covers less than `min_box_foreground` of the box's ellipse with
     foreground (a nucleus the model missed): that box keeps its weak labels entirely;
  5. with `keep_dividing_lines`: the weak labels' dividing lines between neighbouring shapes stay ignored
     and the boundary beside them stays boundary, whatever the prediction says (the boxes tell which
     nuclei touch; the prediction only decides their extent). Without it, a model that merges two
     touching nuclei teaches the merge to the next round.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

SHAPES = ("ellipse", "box")
CROSS = ndimage.generate_binary_structure(2, 1)


def _box(box) -> tuple[int, int, int, int]:
    y0, x0, y1, x1 = (int(v) for v in box)
    if not (y1 > y0 and x1 > x0):
        raise ValueError(f"box {list(box)} is empty (need y1 > y0 and x1 > x0)")
    return y0, x0, y1, x1


def box_mask(box, shape: tuple[int, int]) -> np.ndarray:
    y0, x0, y1, x1 = _box(box)
    out = np.zeros(shape, bool)
    out[max(y0, 0):y1, max(x0, 0):x1] = True
    return out


def ellipse_mask(box, shape: tuple[int, int]) -> np.ndarray:
    """The largest axis-aligned ellipse inscribed in `box`, rasterised so that it stays inside the box
    and touches all four sides: per row, the columns whose centres lie within the ellipse's chord at
    the row's centre (at least the column holding the centre), united with the same per column."""
    y0, x0, y1, x1 = _box(box)
    cy, cx, ry, rx = (y0 + y1) / 2, (x0 + x1) / 2, (y1 - y0) / 2, (x1 - x0) / 2
    out = np.zeros(shape, bool)

    def scan(lo, hi, c, r, cross_lo, cross_hi, cross_c, cross_r, rows: bool):
        for i in range(lo, hi):
            d = (i + 0.5 - c) / r
            half = cross_r * np.sqrt(max(0.0, 1 - d * d))
            j0 = max(cross_lo, int(np.ceil(cross_c - half - 0.5)))
            j1 = min(cross_hi, int(np.floor(cross_c + half - 0.5)) + 1)
            centre = min(max(int(np.floor(cross_c)), cross_lo), cross_hi - 1)
            j0, j1 = min(j0, centre), max(j1, centre + 1)
            if rows:
                out[i, j0:j1] = True
            else:
                out[j0:j1, i] = True

    scan(y0, y1, cy, ry, x0, x1, cx, rx, rows=True)
    scan(x0, x1, cx, rx, y0, y1, cy, ry, rows=False)
    return out


def shape_masks(boxes: np.ndarray, num: int, shape: tuple[int, int], kind: str = "ellipse") -> np.ndarray:
    """[num, H, W] bool: the shape drawn in each of the first `num` boxes."""
    if kind not in SHAPES:
        raise ValueError(f"shape kind {kind!r}; allowed: {', '.join(SHAPES)}")
    draw = ellipse_mask if kind == "ellipse" else box_mask
    return np.stack([draw(b, shape) for b in boxes[:num]]) if num else np.zeros((0, *shape), bool)


def inner_rim(mask: np.ndarray) -> np.ndarray:
    """Pixels of `mask` with a 4-neighbour outside it (the image border does not count)."""
    return mask & ~ndimage.binary_erosion(mask, CROSS, border_value=1)


def weak_labels(boxes: np.ndarray, num: int, shape: tuple[int, int], kind: str = "ellipse",
                edge_width: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """(labels int32 [H, W] in {0, 1, 2}, ignore bool [H, W]) of one image's boxes (module docstring)."""
    masks = shape_masks(boxes, num, shape, kind)
    labels, ignore = np.zeros(shape, np.int32), np.zeros(shape, bool)
    if not num:
        return labels, ignore
    # each covered pixel belongs to the shape it lies deepest inside: overlaps are split between them
    depth = np.stack([ndimage.distance_transform_edt(np.pad(m, 1))[1:-1, 1:-1] for m in masks])
    owner = np.where(masks.any(0), depth.argmax(0) + 1, 0)
    padded = np.pad(owner, 1, mode="edge")
    neighbours = [padded[:-2, 1:-1], padded[2:, 1:-1], padded[1:-1, :-2], padded[1:-1, 2:]]
    dividing = np.any([(n > 0) & (n != owner) for n in neighbours], 0) & (owner > 0)
    rim = np.any([n != owner for n in neighbours], 0) & (owner > 0)
    labels[owner > 0] = 1
    labels[rim | (ndimage.binary_dilation(dividing, CROSS) & (owner > 0))] = 2  # boundary beside a dividing line
    covered = owner > 0
    edges = ndimage.binary_dilation(covered, CROSS, iterations=edge_width) & ~covered if edge_width else False
    ignore |= dividing | edges
    labels[dividing] = 0
    return labels, ignore


def gt_labels(instances: np.ndarray) -> np.ndarray:
    """Ground-truth classes of an instance-label image [H, W]: boundary (2) where an instance pixel
    has a 4-neighbour of another value (background or another instance), interior (1) elsewhere."""
    inst = instances.astype(np.int32)
    hi = ndimage.maximum_filter(inst, footprint=CROSS, mode="nearest")
    lo = ndimage.minimum_filter(inst, footprint=CROSS, mode="nearest")
    out = (inst > 0).astype(np.int32)
    out[(inst > 0) & ((hi != inst) | (lo != inst))] = 2
    return out


def inside_boxes(boxes: np.ndarray, num: int, shape: tuple[int, int]) -> np.ndarray:
    out = np.zeros(shape, bool)
    for b in boxes[:num]:
        out |= box_mask(b, shape)
    return out


def fuse(weak: np.ndarray, weak_ignore: np.ndarray, boxes: np.ndarray, num: int, probs: np.ndarray, *,
         confidence: float, min_box_foreground: float, keep_dividing_lines: bool = False,
         kind: str = "ellipse") -> tuple[np.ndarray, np.ndarray]:
    """Labels for the next round from weak labels (of shape `kind`) and a model's probabilities [H, W, 3]
    (module docstring)."""
    shape = weak.shape
    pred, conf = probs.argmax(-1), probs.max(-1)
    labels, ignore = weak.copy(), weak_ignore.copy()
    region = inside_boxes(boxes, num, shape)
    take = region & (conf >= confidence)
    labels[take], ignore[take] = pred[take], False
    if keep_dividing_lines:  # rule 5
        dividing = weak_ignore & shape_masks(boxes, num, shape, kind).any(0)
        beside = (weak == 2) & ndimage.binary_dilation(dividing, CROSS) & ~dividing
        labels[dividing], ignore[dividing] = weak[dividing], True
        labels[beside], ignore[beside] = 2, False
    for b in boxes[:num]:
        ellipse = ellipse_mask(b, shape)
        if (pred[ellipse] > 0).mean() < min_box_foreground:  # a missed nucleus keeps its box's weak labels
            inside = box_mask(b, shape)
            labels[inside], ignore[inside] = weak[inside], weak_ignore[inside]
    return labels, ignore


def weak_split(boxes: np.ndarray, num_cells: np.ndarray, shape: tuple[int, int], kind: str,
               edge_width: int) -> tuple[np.ndarray, np.ndarray]:
    """`weak_labels` of every image of a split: ([N, H, W] int32, [N, H, W] bool)."""
    out = [weak_labels(b, int(n), shape, kind, edge_width) for b, n in zip(boxes, num_cells)]
    return np.stack([o[0] for o in out]), np.stack([o[1] for o in out])


def fuse_split(weak: np.ndarray, weak_ignore: np.ndarray, boxes: np.ndarray, num_cells: np.ndarray,
               probs: np.ndarray, **rule) -> tuple[np.ndarray, np.ndarray]:
    out = [fuse(w, i, b, int(n), p, **rule) for w, i, b, n, p in zip(weak, weak_ignore, boxes, num_cells, probs)]
    return np.stack([o[0] for o in out]), np.stack([o[1] for o in out])


def split_labels(boxes: np.ndarray, num_cells: np.ndarray, instances: np.ndarray, kind: str = "ellipse",
                 edge_width: int = 1) -> dict:
    """Every label a split needs: 'weak', 'weak_ignore' (shape `kind`), 'box', 'box_ignore' (boxes as
    masks) and 'gt' (`gt_labels` of the instances), each [N, H, W]."""
    shape = instances.shape[1:3]
    out = dict(zip(("weak", "weak_ignore"), weak_split(boxes, num_cells, shape, kind, edge_width)))
    out.update(zip(("box", "box_ignore"), weak_split(boxes, num_cells, shape, "box", edge_width)))
    return {**out, "gt": np.stack([gt_labels(x) for x in instances])}
