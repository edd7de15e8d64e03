"""Detector models (flax linen). Models import nothing from training code."""

from jaxface.models.centernet import (
    HEATMAP_BIAS_INIT,
    HEATMAP_PRIOR,
    CenterNet,
    ConvBNReLU,
    FeatureAdapter,
    ResidualBlock,
)
from jaxface.models.common import param_count

__all__ = [
    "CenterNet",
    "ConvBNReLU",
    "FeatureAdapter",
    "HEATMAP_BIAS_INIT",
    "HEATMAP_PRIOR",
    "ResidualBlock",
    "param_count",
]
