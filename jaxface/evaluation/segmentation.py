"""Segmentation metrics for nuclei (seed 002): semantic overlap and instance matching.

Classes are 0 background, 1 interior, 2 boundary. Instances at inference (`instances_from_classes`):
4-connected components of the interior class, grown into the rest of the foreground (interior or
boundary) one pixel ring at a time, each pixel joining the neighbouring component with the largest
label when several reach it in the same ring; foreground no component reaches stays background.

Metrics over a split (`segmentation_metrics`):
  fg_iou, dice     foreground (class > 0) vs ground-truth foreground, pixels pooled over the split
  mean_iou         mean over ground-truth instances of the IoU with its best-overlapping predicted instance
  ap               the 2018 Data Science Bowl score: per image, for each IoU threshold t in 0.5:0.05:0.95,
                   TP / (TP + FP + FN) with a match when IoU > t (one-to-one for t >= 0.5), averaged over
                   thresholds, then over images (an image with no instance on either side scores 1)
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

THRESHOLDS = np.round(np.arange(0.5, 0.951, 0.05), 2)
_CROSS = ndimage.generate_binary_structure(2, 1)


def instances_from_classes(classes: np.ndarray) -> np.ndarray:
    """Class map [H, W] -> instance labels [H, W] int32 (0 = background, 1..K)."""
    labels, _ = ndimage.label(classes == 1, structure=_CROSS)
    foreground = classes > 0
    while True:
        grown = ndimage.maximum_filter(labels, footprint=_CROSS, mode="constant", cval=0)
        new = (labels == 0) & foreground & (grown > 0)
        if not new.any():
            return labels.astype(np.int32)
        labels[new] = grown[new]


def iou_matrix(gt: np.ndarray, pred: np.ndarray) -> np.ndarray:
    """[num gt instances, num predicted instances] IoU of two instance-label images (labels 1..K;
    labels need not be consecutive: rows / columns follow the sorted labels present)."""
    g_ids, g = np.unique(gt, return_inverse=True)
    p_ids, p = np.unique(pred, return_inverse=True)
    inter = np.bincount(g.ravel() * len(p_ids) + p.ravel(), minlength=len(g_ids) * len(p_ids)).reshape(
        len(g_ids), len(p_ids))
    area_g, area_p = inter.sum(1), inter.sum(0)
    iou = inter / np.maximum(area_g[:, None] + area_p[None, :] - inter, 1)
    return iou[g_ids > 0][:, p_ids > 0]


def dsb_score(iou: np.ndarray) -> float:
    """Data Science Bowl 2018 score of one image from its IoU matrix [gt, pred]."""
    n_gt, n_pred = iou.shape
    if n_gt == 0 and n_pred == 0:
        return 1.0
    scores = []
    for t in THRESHOLDS:
        tp = int((iou > t).sum())  # at t >= 0.5 each instance has at most one match above t
        scores.append(tp / (n_gt + n_pred - tp))
    return float(np.mean(scores))


def segmentation_metrics(pred_classes: np.ndarray, gt_instances: np.ndarray) -> dict:
    """pred_classes [N, H, W] in {0, 1, 2}, gt_instances [N, H, W] -> {'fg_iou', 'dice', 'mean_iou', 'ap',
    'instances_per_image'} (module docstring)."""
    pf, gf = pred_classes > 0, gt_instances > 0
    inter, union, total = np.sum(pf & gf), np.sum(pf | gf), pf.sum() + gf.sum()
    best, scores, counts = [], [], []
    for classes, gt in zip(pred_classes, gt_instances):
        iou = iou_matrix(gt, instances_from_classes(classes))
        best.extend(iou.max(1) if iou.shape[1] else np.zeros(iou.shape[0]))
        scores.append(dsb_score(iou))
        counts.append(iou.shape[1])
    return {"fg_iou": float(inter / max(union, 1)), "dice": float(2 * inter / max(total, 1)),
            "mean_iou": float(np.mean(best)) if best else 0.0, "ap": float(np.mean(scores)),
            "instances_per_image": float(np.mean(counts))}


CLASS_COLOURS = np.array([[0, 0, 0], [60, 200, 60], [230, 60, 60], [110, 110, 110]], np.uint8)  # bg, in, rim, ignore


def save_overlays(path: str, images: np.ndarray, maps: dict, count: int, title: str) -> str:
    """A grid, one row per image (the first `count`): the grayscale image [N, H, W, 1], then each class
    map of `maps` ({caption: [N, H, W] in 0..3, 3 = ignore}) in CLASS_COLOURS."""
    from jaxface.evaluation import plots  # matplotlib only where figures are drawn

    count = min(count, len(images))
    panels = [np.repeat(images[i], 3, -1) if j < 0 else CLASS_COLOURS[m[i]]
              for i in range(count) for j, m in [(-1, None), *enumerate(maps.values())]]
    return plots.save_captioned_grid(path, np.stack(panels), ["image", *maps] * count, max_images=len(panels),
                                     title=title)
