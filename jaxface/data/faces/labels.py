"""Label vocabulary of `synthetic_faces`: the attributes and how each is predicted (`AttributeSpec`),
which subset labels which, the ranges labels are sampled from, and the face_value formula

  face_value = 100 * exp(-(P + A) / 2),  P = mean_i ((r_i - r_i*) / h_i)^2,  A = mean_j (d_j / s_j)^2

over the proportions r_i in `PROPORTIONS` (ideal r_i*, half-range h_i) and the left/right asymmetries d_j
in `ASYMMETRIES` (sampling sd s_j). The labels themselves are documented in `jaxface.data.synthetic_faces`.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Mapping

import numpy as np


@dataclasses.dataclass(frozen=True)
class AttributeSpec:
    """How an attribute is predicted: `kind` 'classification' with `num_classes` classes (int32 label
    [B]) or 'regression' with `dim` outputs (float32 label [B], or [B, dim] when dim > 1), `units` the
    label's unit."""

    kind: str
    num_classes: int = 0
    dim: int = 1
    units: str = ''

    @property
    def output_dim(self) -> int:
        """Width of the network head: num_classes logits or dim regressed values."""
        return self.num_classes if self.kind == 'classification' else self.dim


ATTRIBUTES = ('gender', 'age', 'smile', 'quality', 'face_value', 'mask', 'glasses')
NUM_ATTRIBUTES = len(ATTRIBUTES)
ATTRIBUTE_SPECS = {
    'gender': AttributeSpec('classification', num_classes=2),
    'age': AttributeSpec('regression', units='years'),
    'smile': AttributeSpec('classification', num_classes=2),
    'quality': AttributeSpec('classification', num_classes=3),
    'face_value': AttributeSpec('regression', units='score 0-100'),
    'mask': AttributeSpec('classification', num_classes=2),
    'glasses': AttributeSpec('classification', num_classes=2),
}
POSE_SPEC = AttributeSpec('regression', dim=3, units='degrees (yaw, pitch, roll)')
# Rough spread of each regression label (years, score points, degrees), to divide errors by in a loss.
LABEL_SCALES = {'age': 10.0, 'face_value': 10.0, 'pose': 20.0}
INDEPENDENT_ATTRIBUTES = ('gender', 'quality', 'mask', 'glasses')
COUPLED_ATTRIBUTES = ('age', 'smile', 'face_value')
QUALITY_NAMES = ('sharp', 'blurred', 'low_res_noisy')
SUBSETS = (1, 2, 3)
SUBSET_PROBABILITIES = (0.4, 0.35, 0.25)
# Labelled attributes per subset (1 independent only, 2 + coupled, 3 + pose).
SUBSET_ATTRIBUTES = {
    1: INDEPENDENT_ATTRIBUTES,
    2: INDEPENDENT_ATTRIBUTES + COUPLED_ATTRIBUTES,
    3: INDEPENDENT_ATTRIBUTES + COUPLED_ATTRIBUTES,
}
# Pose ranges in degrees (yaw, pitch, roll): near-frontal subsets 1-2 (normal, sd then clip) and the
# large-pose subset 3 (uniform).
FRONTAL_POSE_SD = (4.0, 3.0, 3.0)
FRONTAL_POSE_LIMIT = (10.0, 8.0, 8.0)
LARGE_POSE_LIMIT = (50.0, 25.0, 30.0)
AGE_RANGE = (18.0, 78.0)

# face_value: (name, ideal r*, half-range h); identities draw r uniformly from [r* - h, r* + h].
PROPORTIONS = (
    ('aspect', 1.34, 0.12),      # head height / width (b / a)
    ('eye_sep', 0.45, 0.09),     # eye-centre offset from the midline / a
    ('eye_width', 0.42, 0.07),   # eye width / a
    ('nose_len', 0.36, 0.08),    # nose bottom below eye level / b
    ('mouth_width', 0.36, 0.10),  # half mouth width / a
)
# face_value: (name, sampling sd s); identities draw d ~ N(0, s^2) clipped to +-2.5 s.
ASYMMETRIES = (
    ('eye_dy', 0.035),        # right eye lower than left, / b
    ('eye_size_diff', 0.12),  # relative size difference of the eyes
    ('brow_dy', 0.04),        # right brow lower than left, / b
    ('nose_dx', 0.05),        # nose offset to +x, / a
    ('mouth_dx', 0.06),       # mouth offset to +x, / a
    ('mouth_tilt', 0.04),     # right mouth corner lower than left, / b
)


def face_value_score(proportions: Mapping[str, float], asymmetries: Mapping[str, float]) -> float:
    """100 * exp(-(P + A) / 2) with P, A the mean squared normalised deviations (see the module docstring)."""
    p = np.mean([((proportions[name] - ideal) / half) ** 2 for name, ideal, half in PROPORTIONS])
    a = np.mean([(asymmetries[name] / sd) ** 2 for name, sd in ASYMMETRIES])
    return float(100.0 * math.exp(-(p + a) / 2.0))
