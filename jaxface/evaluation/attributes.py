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
