"""Pure loss functions (arrays in, scalars out): detection, distillation, attributes."""

from jaxface.losses.detection import centernet_heatmap_focal_loss, centernet_loss, masked_l1_loss
from jaxface.losses.distillation import (
    feature_distillation_loss,
    head_distillation_loss,
    kd_logit_loss,
)
