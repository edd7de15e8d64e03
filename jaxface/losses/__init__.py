"""Pure loss functions (arrays in, scalars out): detection, distillation, attributes, metric learning.

A loss whose normaliser counts data (objects, masked cells, labelled examples) takes an optional
`axis_name`: inside a step mapped over devices pass `jaxface.train.devices.AXIS`, and the count is
taken over the global batch, so 1 device, 8 devices or 2 hosts optimise the same objective
(`jaxface.losses.reduction.global_ratio`); a loss over pairs of examples gathers the global batch
(`gather_global`). Without it the single-device formula applies.
"""

from jaxface.losses.detection import centernet_heatmap_focal_loss, centernet_loss, masked_l1_loss
from jaxface.losses.distillation import (
    feature_distillation_loss,
    head_distillation_loss,
    kd_logit_loss,
)
from jaxface.losses.metric import pairwise_margin_loss
from jaxface.losses.reduction import gather_global, global_ratio
from jaxface.losses.segmentation import masked_pixel_cross_entropy, soft_dice_loss
