"""Attribute metrics and readable predictions (pure NumPy; no plotting)."""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np


def attribute_metric(kind: str, outputs: np.ndarray, labels: np.ndarray, known: np.ndarray) -> float:
    """Over the examples whose label is known (known [N] > 0): accuracy in % of argmax(outputs [N, C])
    for kind 'classification', else the mean absolute error |outputs - labels| in label units (over
    every component, e.g. the three pose angles). NaN when no label is known."""
    keep = known > 0
    if not keep.any():
        return float("nan")
    if kind == "classification":
        return float(100.0 * np.mean(np.argmax(outputs[keep], axis=-1) == labels[keep]))
    return float(np.mean(np.abs(outputs[keep] - labels[keep])))


def trivial_outputs(kind: str, train_labels: np.ndarray, train_known: np.ndarray, count: int,
                    num_classes: int = 0) -> np.ndarray:
    """What the trivial predictor fitted on the training labels (train_known [N] > 0) outputs for `count`
    examples: the one-hot of the training majority class [count, num_classes] for kind 'classification',
    else the training mean [count, ...]; `attribute_metric` of these is the figure a head must beat."""
    labels = train_labels[train_known > 0]
    if not len(labels):
        raise ValueError("no training label to fit the trivial predictor on")
    if kind == "classification":
        counts = np.bincount(labels.astype(np.int64), minlength=num_classes)
        return np.tile(np.eye(len(counts), dtype=np.float32)[np.argmax(counts)], (count, 1))
    mean = labels.astype(np.float64).mean(axis=0)
    return np.broadcast_to(mean.astype(np.float32), (count,) + mean.shape).copy()


def above_trivial(kind: str, metric: float, trivial: float, min_points: float = 10.0,
                  max_ratio: float = 0.8) -> bool:
    """A head is learned when its accuracy is >= `min_points` above the trivial predictor's
    (classification) or its MAE <= `max_ratio` x the trivial predictor's (regression)."""
    if kind == "classification":
        return bool(metric >= trivial + min_points)
    return bool(metric <= max_ratio * trivial)


def describe_attribute(kind: str, head: str, output: np.ndarray, names: Sequence[str] = ()) -> object:
    """One head's output for one image -> a readable value: {'label', 'probability'} (softmax of the
    logits) for a classification head, the (yaw, pitch, roll) dict for pose, else a float."""
    if kind == "classification":
        probs = np.exp(output - output.max())
        probs /= probs.sum()
        k = int(np.argmax(probs))
        return {"label": names[k] if k < len(names) else k, "probability": round(float(probs[k]), 4)}
    if head == "pose":
        return {axis: round(float(v), 2) for axis, v in zip(("yaw", "pitch", "roll"), output)}
    return round(float(output), 2)


def caption(described: Mapping[str, object], per_line: int = 2) -> str:
    """{head: `describe_attribute` value} -> a short multi-line caption for a figure."""
    parts = []
    for head, value in described.items():
        if isinstance(value, dict) and "label" in value:
            parts.append(f"{head}: {value['label']}")
        elif isinstance(value, dict):
            parts.append("pose: " + "/".join(f"{v:.0f}" for v in value.values()))
        else:
            parts.append(f"{head}: {value:.1f}")
    return "\n".join(", ".join(parts[i:i + per_line]) for i in range(0, len(parts), per_line))
