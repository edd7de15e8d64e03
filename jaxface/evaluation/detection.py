"""Decoding and evaluation for CenterNet-style detectors (Zhou et al., "Objects as Points", 2019).

Conventions shared with `jaxface.losses.detection`:
  * head maps are channels-last at the detector's output resolution [B, h, w, ...];
  * `heatmap` holds per-class logits [B, h, w, C];
  * `wh` [B, h, w, 2] is (box height, box width) in output-grid cells;
  * `offset` [B, h, w, 2] is (dy, dx), the centre's fractional position inside its cell, so the
    centre in grid units is (row + dy, col + dx);
  * boxes are normalised [ymin, xmin, ymax, xmax] in [0, 1] (grid coordinates divided by h and w);
  * ground truth is `gt_boxes` [N, K, 4] with `gt_labels` [N, K] int, -1 marking padding.

`decode_centernet` is jax.numpy and jittable (with `top_k` static); the metrics are numpy and run
once over the whole evaluation set.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

PEAK_WINDOW = 3


def decode_centernet(
    heatmap_logits: jax.Array,
    wh: jax.Array,
    offset: jax.Array,
    *,
    top_k: int = 20,
) -> dict[str, jax.Array]:
    """Turns CenterNet head maps into the top-K scored boxes of each image.

    Args:
      heatmap_logits: [B, h, w, C] per-class centre logits.
      wh: [B, h, w, 2] (height, width) in grid cells; negative sizes count as 0.
      offset: [B, h, w, 2] (dy, dx) sub-cell centre offsets.
      top_k: number of detections kept per image (static under jit); at most h * w * C.

    With p = sigmoid(logits), a cell is a peak when p equals the max of its 3x3 neighbourhood in
    the same class channel (CenterNet's max-pool NMS; equal neighbours on a plateau all survive).
    Non-peaks are set to 0, and the K largest of the h * w * C values give, for a peak at
    (row, col, class):

      centre = (row + dy, col + dx)
      box    = [(cy - H/2) / h, (cx - W/2) / w, (cy + H/2) / h, (cx + W/2) / w] clipped to [0, 1]
      score  = p,   class = class

    Returns:
      {'boxes': [B, top_k, 4] float32, 'scores': [B, top_k] float32 in descending order,
       'classes': [B, top_k] int32}.
    """
    if heatmap_logits.ndim != 4:
        raise ValueError(
            f"heatmap_logits must have rank 4 [B, h, w, C], got shape {tuple(heatmap_logits.shape)}"
        )
    batch, height, width, num_classes = heatmap_logits.shape
    for name, head in (("wh", wh), ("offset", offset)):
        if tuple(head.shape) != (batch, height, width, 2):
            raise ValueError(
                f"{name} must have shape {(batch, height, width, 2)} to match heatmap_logits "
                f"{tuple(heatmap_logits.shape)}, got {tuple(head.shape)}"
            )
    num_candidates = height * width * num_classes
    is_int = isinstance(top_k, (int, np.integer)) and not isinstance(top_k, bool)
    if not is_int or not 1 <= top_k <= num_candidates:
        raise ValueError(f"top_k must be an int in [1, h*w*C = {num_candidates}], got {top_k!r}")

    probs = jax.nn.sigmoid(jnp.asarray(heatmap_logits, jnp.float32))
    neighbourhood_max = jax.lax.reduce_window(
        probs,
        -jnp.inf,
        jax.lax.max,
        window_dimensions=(1, PEAK_WINDOW, PEAK_WINDOW, 1),
        window_strides=(1, 1, 1, 1),
        padding="SAME",
    )
    peaks = jnp.where(probs == neighbourhood_max, probs, 0.0)

    # Flat index runs over (row, col, class) in row-major order, matching the reshape.
    scores, flat_index = jax.lax.top_k(peaks.reshape(batch, num_candidates), int(top_k))
    classes = (flat_index % num_classes).astype(jnp.int32)
    cell = flat_index // num_classes
    rows = (cell // width).astype(jnp.float32)
    cols = (cell % width).astype(jnp.float32)

    def gather_at_peaks(head: jax.Array) -> jax.Array:
        flat_head = jnp.asarray(head, jnp.float32).reshape(batch, height * width, 2)
        return jnp.take_along_axis(flat_head, cell[..., None], axis=1)  # [B, top_k, 2]

    size = jnp.maximum(gather_at_peaks(wh), 0.0)
    centre_offset = gather_at_peaks(offset)
    centre_y = rows + centre_offset[..., 0]
    centre_x = cols + centre_offset[..., 1]
    half_height = size[..., 0] / 2.0
    half_width = size[..., 1] / 2.0
    boxes = jnp.stack(
        [
            (centre_y - half_height) / height,
            (centre_x - half_width) / width,
            (centre_y + half_height) / height,
            (centre_x + half_width) / width,
        ],
        axis=-1,
    )
    return {"boxes": jnp.clip(boxes, 0.0, 1.0), "scores": scores, "classes": classes}


def _pairwise_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU between every box of a [..., N, 4] and of b [..., M, 4] -> [..., N, M] (float64)."""
    a = a[..., :, None, :].astype(np.float64)
    b = b[..., None, :, :].astype(np.float64)
    inter_h = np.clip(np.minimum(a[..., 2], b[..., 2]) - np.maximum(a[..., 0], b[..., 0]), 0.0, None)
    inter_w = np.clip(np.minimum(a[..., 3], b[..., 3]) - np.maximum(a[..., 1], b[..., 1]), 0.0, None)
    intersection = inter_h * inter_w
    area_a = np.clip(a[..., 2] - a[..., 0], 0.0, None) * np.clip(a[..., 3] - a[..., 1], 0.0, None)
    area_b = np.clip(b[..., 2] - b[..., 0], 0.0, None) * np.clip(b[..., 3] - b[..., 1], 0.0, None)
    union = area_a + area_b - intersection
    # Two empty boxes have union 0: define their IoU as 0 rather than NaN.
    return np.where(union > 0, intersection / np.where(union > 0, union, 1.0), 0.0)


def iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Intersection over union of every pair of [ymin, xmin, ymax, xmax] boxes.

    Args:
      a: [N, 4] boxes.
      b: [M, 4] boxes.

      iou[i, j] = area(a_i ∩ b_j) / (area(a_i) + area(b_j) - area(a_i ∩ b_j)),
      with inverted extents counted as zero area and 0 where the union is empty.

    Returns:
      [N, M] float64.
    """
    a = np.asarray(a)
    b = np.asarray(b)
    for name, boxes in (("a", a), ("b", b)):
        if boxes.ndim != 2 or boxes.shape[-1] != 4:
            raise ValueError(f"{name} must have shape [N, 4], got {boxes.shape}")
    return _pairwise_iou(a, b)


def _voc_average_precision(is_true_positive: np.ndarray, num_gt: int) -> float:
    """All-point interpolated AP (VOC 2010+) of detections already sorted by descending score.

    With cumulative TP / FP counts down the ranking, recall_i = TP_i / num_gt and
    precision_i = TP_i / (TP_i + FP_i); precision is replaced by its running max from the right
    (the envelope) and AP = sum_i (recall_i - recall_{i-1}) * envelope_i over recall changes.
    """
    true_positives = np.cumsum(is_true_positive, dtype=np.float64)
    false_positives = np.cumsum(~is_true_positive, dtype=np.float64)
    recall = true_positives / num_gt
    precision = true_positives / np.maximum(true_positives + false_positives, 1.0)
    recall = np.concatenate([[0.0], recall, [1.0]])
    precision = np.concatenate([[0.0], precision, [0.0]])
    envelope = np.maximum.accumulate(precision[::-1])[::-1]
    changes = np.nonzero(recall[1:] != recall[:-1])[0]
    return float(np.sum((recall[changes + 1] - recall[changes]) * envelope[changes + 1]))


def detection_average_precision(
    boxes: np.ndarray,
    scores: np.ndarray,
    classes: np.ndarray,
    gt_boxes: np.ndarray,
    gt_labels: np.ndarray,
    *,
    num_classes: int,
    iou_threshold: float = 0.5,
    class_names: Sequence[str] | None = None,
) -> dict[str, float]:
    """Pascal-VOC average precision per class over a whole evaluation set.

    Args:
      boxes: [N, D, 4] predicted boxes, normalised [ymin, xmin, ymax, xmax].
      scores: [N, D] confidences.
      classes: [N, D] int predicted classes; negative entries are padding and ignored.
      gt_boxes: [N, K, 4] ground-truth boxes in the same frame.
      gt_labels: [N, K] int classes in [0, num_classes), -1 for padding.
      num_classes: C.
      iou_threshold: a detection can match a ground truth of its class when IoU >= this.
      class_names: C names used in the result keys; defaults to '0', '1', ...

    Per class, all detections of the set are ranked by descending score (stable for ties). Going
    down the ranking, as in the VOC devkit, a detection takes the ground truth of its image and
    class with the highest IoU; it is a true positive if that IoU >= iou_threshold and that ground
    truth is still unmatched, otherwise a false positive (so duplicates of a found object are false
    positives). AP is the all-point interpolated area under the precision/recall curve (see
    `_voc_average_precision`); a class with ground truth but no detections gets 0.

    Returns:
      {'mAP': mean AP over classes with at least one ground truth (NaN if none has),
       'AP/<name>': AP of each class, NaN when the class has no ground truth}.
    """
    boxes, scores, classes = np.asarray(boxes), np.asarray(scores), np.asarray(classes)
    gt_boxes, gt_labels = np.asarray(gt_boxes), np.asarray(gt_labels)
    if boxes.ndim != 3 or boxes.shape[-1] != 4:
        raise ValueError(f"boxes must have shape [N, D, 4], got {boxes.shape}")
    if scores.shape != boxes.shape[:2] or classes.shape != boxes.shape[:2]:
        raise ValueError(
            f"scores and classes must have shape {boxes.shape[:2]} to match boxes [N, D, 4], "
            f"got {scores.shape} and {classes.shape}"
        )
    if gt_boxes.ndim != 3 or gt_boxes.shape[-1] != 4 or gt_boxes.shape[0] != boxes.shape[0]:
        raise ValueError(
            f"gt_boxes must have shape [N={boxes.shape[0]}, K, 4] like boxes, got {gt_boxes.shape}"
        )
    if gt_labels.shape != gt_boxes.shape[:2]:
        raise ValueError(f"gt_labels must have shape {gt_boxes.shape[:2]}, got {gt_labels.shape}")
    if not np.issubdtype(classes.dtype, np.integer) or not np.issubdtype(gt_labels.dtype, np.integer):
        raise ValueError(
            f"classes and gt_labels must be integer arrays, got {classes.dtype} and {gt_labels.dtype}"
        )
    if num_classes < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes}")
    if not 0.0 < iou_threshold <= 1.0:
        raise ValueError(f"iou_threshold must be in (0, 1], got {iou_threshold}")
    if class_names is None:
        class_names = [str(c) for c in range(num_classes)]
    if len(class_names) != num_classes:
        raise ValueError(
            f"class_names must have num_classes={num_classes} entries, got {len(class_names)}"
        )
    if np.any(classes >= num_classes) or np.any(gt_labels >= num_classes):
        raise ValueError(
            f"classes and gt_labels must be < num_classes={num_classes} (negative = padding), "
            f"got max {classes.max(initial=-1)} and {gt_labels.max(initial=-1)}"
        )
    if np.any(gt_labels < -1):
        raise ValueError(
            f"gt_labels must be in [0, {num_classes}) or -1 for padding, got min {gt_labels.min()}"
        )
    if np.any(np.isnan(scores[classes >= 0])):
        raise ValueError("scores contain NaN at non-padding detections")

    ious = _pairwise_iou(boxes, gt_boxes)  # [N, D, K]
    results: dict[str, float] = {}
    class_aps = []
    for class_id, name in enumerate(class_names):
        is_class_gt = gt_labels == class_id  # [N, K]
        num_gt = int(is_class_gt.sum())
        if num_gt == 0:
            results[f"AP/{name}"] = float("nan")
            continue
        image_index, detection_index = np.nonzero(classes == class_id)
        ranking = np.argsort(-scores[image_index, detection_index], kind="stable")
        is_matched = np.zeros_like(is_class_gt)
        is_true_positive = np.zeros(len(ranking), dtype=bool)
        for rank, i in enumerate(ranking):
            image, detection = image_index[i], detection_index[i]
            candidate_ious = np.where(is_class_gt[image], ious[image, detection], -1.0)
            best = int(np.argmax(candidate_ious))
            if candidate_ious[best] >= iou_threshold and not is_matched[image, best]:
                is_matched[image, best] = True
                is_true_positive[rank] = True
        ap = _voc_average_precision(is_true_positive, num_gt)
        results[f"AP/{name}"] = ap
        class_aps.append(ap)
    results["mAP"] = float(np.mean(class_aps)) if class_aps else float("nan")
    return results


def detection_records(boxes, scores, classes, class_names, *, score_threshold: float, top: float = 0.0,
                      left: float = 0.0, side: float = 1.0) -> list[dict]:
    """One image's decoded detections as JSON-able records, those with score >= `score_threshold`.

    Args:
      boxes: [K, 4] normalised [ymin, xmin, ymax, xmax] in a square of `side` pixels whose top-left
        corner is at (`top`, `left`) of the original image (the centred square a model read).
      scores: [K]; classes: [K] int indices into `class_names`.

    Returns:
      [{'class': name, 'score': float, 'box_xyxy': [x0, y0, x1, y1] in the original image's pixels}].
    """
    records = []
    for box, score, label in zip(np.asarray(boxes), np.asarray(scores), np.asarray(classes)):
        if score >= score_threshold:
            y0, x0, y1, x1 = (float(v) * side for v in box)
            records.append({"class": class_names[int(label)], "score": round(float(score), 4),
                            "box_xyxy": [round(left + x0, 1), round(top + y0, 1), round(left + x1, 1), round(top + y1, 1)]})
    return records
