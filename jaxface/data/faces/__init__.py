"""The implementation of the `synthetic_faces` data set, one concern per module (import the public names
from `jaxface.data.synthetic_faces`, which documents the data set):

  labels     attribute specs, subsets and their labels, label ranges, the face_value formula
  sampling   identity parameters (`sample_identity`) and per-image parameters (`sample_example`)
  raycast    head-frame rotations, ellipsoid ray casting and Lambert shading
  layout     where the eyes, nose and mouth sit in one image; colours at a given age
  texture    the painted frontal face texture (wrinkles, eyes, mouth, glasses, mask, ...)
  rendering  `render_face` (the whole image, then its quality degradation) and `landmarks`
  builder    the TFDS builder, its configs, `generate_example`, `prepare` and `data_source`
"""
