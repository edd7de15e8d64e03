"""Evaluation: detector decoding and metrics (`detection`) and report figures (`plots`).

The metric API is re-exported here; import `jaxface.evaluation.plots` explicitly for figures, so
training code that only needs metrics does not load matplotlib.
"""

from jaxface.evaluation.detection import decode_centernet, detection_average_precision, detection_records, iou_matrix

__all__ = ["decode_centernet", "detection_average_precision", "detection_records", "iou_matrix"]
