"""`synthetic_faces`: procedurally rendered faces with seven attribute labels, head pose and identity.

Every face is a small 3-D scene rendered with numpy and Pillow (no TensorFlow anywhere): a head
ellipsoid carrying a frontal face texture (skin, eyes, brows, mouth, wrinkles, stubble, glasses, mask),
a nose ellipsoid, two ear ellipsoids, a hair shell, a neck, shoulders and a background. The head is
rotated by (yaw, pitch, roll) and ray-cast orthographically at 1.5 times the output resolution, lit with
a Lambert model, box-downsampled to `image_size` and finally degraded according to `quality`. Yaw and pitch
therefore foreshorten and occlude features exactly as on a rigid head; roll rotates the face in the plane.

Identities. Identity `k` has fixed geometry (face width and height-to-width ratio, jaw taper, eye spacing,
eye size, nose length/width, mouth width, lip thickness, ear size, left/right asymmetries) and fixed
colouring (skin, hair, eyes), hair style, gender and a base age, all drawn from
`np.random.default_rng([seed, k])` (`sample_identity`). Train and validation draw their examples from
identities `0 .. num_train_identities-1`, test from the next `num_test_identities`, so test identities
are never seen in training. Example `i` of a split belongs to identity `first + i % count`, so every
identity appears in several images with different pose, expression, age (+-2 years), accessories,
lighting, background and quality (the super-resolution + recognition recipe reuses this).

Labels (all stored for every example; see `label_mask` for which a training recipe may use):
  gender      int32   0 female, 1 male (p = 0.5 per identity). Cues: hair length, jaw taper, face width, brow thickness, lips,
                      stubble. Each cue alone is unreliable (short-haired women, long-haired men).
  age         float32 years in [18, 78]. Cues: forehead lines, crow's feet, nasolabial folds and
                      under-eye lines (thin, fade in from ~25 years), hair greying, a receding hairline
                      on some men, eye opening and lip fullness shrinking with age, the nose lengthening.
  smile       int32   0 neutral, 1 smiling (p = 0.5). Cues: mouth corners raised, open mouth with teeth, cheek
                      blush, slightly narrowed eyes.
  quality     int32   (p = 0.5, 0.25, 0.25) 0 sharp, 1 Gaussian-blurred (sigma 1.4-2.6 px), 2 low-resolution (downsampled to
                      18-30 px and back) plus Gaussian noise (sigma 5-12 grey levels).
  face_value  float32 in (0, 100], a fixed function of the identity's 3-D geometry (pose-invariant):
                        P = mean_i ((r_i - r_i*) / h_i)^2      over the 5 proportions in `PROPORTIONS`
                        A = mean_j (d_j / s_j)^2                over the 6 asymmetries in `ASYMMETRIES`
                        face_value = 100 * exp(-(P + A) / 2)
                      r_i is a proportion (face height/width, eye spacing, eye width, nose length, mouth
                      width), r_i* its ideal (the centre of its sampling range), h_i the half-width of that
                      range; d_j a left/right asymmetry (eye height, eye size, brow height, nose offset,
                      mouth offset, mouth tilt) and s_j its sampling standard deviation.
  mask        int32   0/1 (p = 0.3), a surgical mask over nose, mouth and chin.
  glasses     int32   0/1 (p = 0.3), tinted glasses (lens opacity 0.65-0.95) over the eyes.
  pose        float32 [3] (yaw, pitch, roll) degrees. Positive yaw turns the face towards image +x,
                      positive pitch tilts it up, positive roll turns it counter-clockwise on screen.
  identity    int32
  image       uint8   [image_size, image_size, 3]

Couplings (real, not just label noise): the mask hides the mouth (smile, lips, nasolabial folds, mouth
width and offset), glasses hide the eyes (squint, crow's feet, eye size and spacing), blur and low
resolution erase the thin wrinkle lines and small asymmetries, a fringe hides the forehead lines, and
pose moves, foreshortens and occludes everything. Hence the split used by the multi-task recipe:
  independent attributes `INDEPENDENT_ATTRIBUTES` = gender, quality, mask, glasses: large, global or
    redundant cues that survive every other attribute;
  coupled attributes `COUPLED_ATTRIBUTES` = age, smile, face_value: small or local cues that the other
    attributes hide.
Measured with a small probe (MultiTaskAttributeNet widths 12-96, one block per stage, all labels, 1200 Adam
steps of 64 on `default` train, CPU), on the test split (unseen identities): quality 1.00, mask 0.998,
glasses 0.992, gender 0.85 accuracy; smile 0.58 (0.73 on sharp unmasked faces, 0.45 = chance on masked
ones), age R^2 0.48 (0.61 sharp, 0.35 blurred / low-res), face_value R^2 < 0 (not learnt by the probe).

Subsets (feature `subset`, drawn per example with probabilities `SUBSET_PROBABILITIES`), as in the
staged recipe: subset 1 carries only the independent attributes, subset 2 adds the coupled ones, subset 3
adds pose. Subsets 1 and 2 are near-frontal (|yaw| <= 10, |pitch| <= 8, |roll| <= 8 degrees), subset 3
has large poses (|yaw| <= 50, |pitch| <= 25, |roll| <= 30). `label_mask` [NUM_ATTRIBUTES] float32 in the
order `ATTRIBUTES` is 1 where the attribute is labelled, and `pose_mask` float32 scalar is 1 in subset 3.

Use:
  builder = prepare('default', data_dir)          # download_and_prepare(file_format='array_record')
  source = data_source('default', 'train', data_dir)
  example = source[0]                             # dict of numpy arrays; source[i] is example i
  ATTRIBUTE_SPECS, POSE_SPEC, LABEL_SCALES        # head widths (`output_dim`), regression-loss scales
Rendering without the builder: `render_face(sample_identity(seed, k), sample_example(rng, person, subset))`;
`landmarks(...)` gives the 5 projected landmarks (eyes, nose tip, mouth corners) of such a render.

This module is the public face of the data set; the code lives in `jaxface.data.faces`, one concern per
module: `labels` (attribute specs, subsets, label ranges, face_value), `sampling` (identity and per-image
parameters), `raycast` (ellipsoid ray casting and shading), `layout` (where the face parts sit),
`texture` (the painted face), `rendering` (`render_face`, `landmarks`) and `builder` (the TFDS builder,
`prepare`, `data_source`), on the plumbing shared with `synthetic_gestures` in `jaxface.data.tfds_builder`.
"""

from jaxface.data.faces.builder import (CONFIGS, FEATURE_DTYPES, SyntheticFaces, SyntheticFacesConfig, data_source,
                                        generate_example, prepare, split_seed)
from jaxface.data.faces.labels import (AGE_RANGE, ASYMMETRIES, ATTRIBUTE_SPECS, ATTRIBUTES, COUPLED_ATTRIBUTES,
                                       FRONTAL_POSE_LIMIT, FRONTAL_POSE_SD, INDEPENDENT_ATTRIBUTES, LABEL_SCALES,
                                       LARGE_POSE_LIMIT, NUM_ATTRIBUTES, POSE_SPEC, PROPORTIONS, QUALITY_NAMES,
                                       SUBSET_ATTRIBUTES, SUBSET_PROBABILITIES, SUBSETS, AttributeSpec,
                                       face_value_score)
from jaxface.data.faces.raycast import rotation_matrix
from jaxface.data.faces.rendering import LANDMARK_NAMES, landmarks, render_face
from jaxface.data.faces.sampling import ExampleParams, IdentityParams, sample_example, sample_identity
from jaxface.data.tfds_builder import SPLITS, TypedSource

__all__ = [
    # Labels.
    'AGE_RANGE', 'ASYMMETRIES', 'ATTRIBUTE_SPECS', 'ATTRIBUTES', 'COUPLED_ATTRIBUTES', 'FRONTAL_POSE_LIMIT',
    'FRONTAL_POSE_SD', 'INDEPENDENT_ATTRIBUTES', 'LABEL_SCALES', 'LARGE_POSE_LIMIT', 'NUM_ATTRIBUTES', 'POSE_SPEC',
    'PROPORTIONS', 'QUALITY_NAMES', 'SUBSET_ATTRIBUTES', 'SUBSET_PROBABILITIES', 'SUBSETS', 'AttributeSpec',
    'face_value_score',
    # Sampling and rendering.
    'ExampleParams', 'IdentityParams', 'sample_example', 'sample_identity', 'rotation_matrix', 'LANDMARK_NAMES',
    'landmarks', 'render_face',
    # The TFDS builder.
    'CONFIGS', 'FEATURE_DTYPES', 'SPLITS', 'SyntheticFaces', 'SyntheticFacesConfig', 'TypedSource', 'data_source',
    'generate_example', 'prepare', 'split_seed',
]
