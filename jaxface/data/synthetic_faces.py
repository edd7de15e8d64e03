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
"""

from __future__ import annotations

import dataclasses
import functools
import math
import types
from typing import Mapping

import numpy as np
import tensorflow_datasets as tfds
from PIL import Image, ImageDraw, ImageFilter

from jaxface.data.pipeline import PreparedSource

# ----------------------------------------------------------------------------------------------
# Label vocabulary.


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
SPLITS = ('train', 'validation', 'test')
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
    """100 * exp(-(P + A) / 2) with P, A the mean squared normalised deviations (module docstring)."""
    p = np.mean([((proportions[name] - ideal) / half) ** 2 for name, ideal, half in PROPORTIONS])
    a = np.mean([(asymmetries[name] / sd) ** 2 for name, sd in ASYMMETRIES])
    return float(100.0 * math.exp(-(p + a) / 2.0))


# ----------------------------------------------------------------------------------------------
# Identity and per-image parameters.

_SKIN_TONES = np.array([[246, 214, 190], [232, 190, 160], [205, 158, 120], [165, 115, 80],
                        [120, 80, 55], [88, 58, 40]], np.float32)
_HAIR_COLOURS = np.array([[30, 24, 20], [60, 40, 28], [105, 70, 40], [150, 110, 65],
                          [205, 170, 110], [140, 60, 30]], np.float32)
_HAIR_COLOUR_PROBS = (0.3, 0.25, 0.18, 0.1, 0.1, 0.07)
_EYE_COLOURS = np.array([[70, 45, 25], [110, 75, 40], [60, 110, 160], [80, 125, 85],
                         [110, 120, 125]], np.float32)
_GREY_HAIR = np.array([200, 200, 205], np.float32)


@dataclasses.dataclass(frozen=True)
class IdentityParams:
    """Everything fixed for one person. Lengths are fractions of the head half-width `a` (x) or
    half-height `b` (y); colours are RGB floats in [0, 255]."""

    identity: int
    gender: int
    base_age: float
    skin: tuple
    hair: tuple
    eye_colour: tuple
    lips: tuple
    half_width: float      # a, as a fraction of the canvas side
    depth: float           # c / a
    jaw_taper: float       # relative narrowing of the face outline from cheek to chin
    proportions: Mapping[str, float]   # PROPORTIONS names -> value
    asymmetries: Mapping[str, float]   # ASYMMETRIES names -> value
    eye_open: float        # eye height / eye width at age 18
    brow_thickness: float  # / b
    lip_thickness: float   # / b at age 18
    nose_width: float      # half width / a
    ear_size: float        # ear half-height / b
    hair_style: str        # 'short', 'bob' or 'long'
    hairline: float        # v of the hairline at the midline (-1 top of head, 0 eye level)
    fringe: bool
    part_tilt: float
    balding: float         # hairline recession per year above 30, in v units
    greying_onset: float   # age at which hair starts to grey
    stubble: bool
    face_value: float


def _uniform_proportion(rng: np.random.Generator, name: str) -> float:
    _, ideal, half = next(p for p in PROPORTIONS if p[0] == name)
    return float(rng.uniform(ideal - half, ideal + half))


@functools.lru_cache(maxsize=4096)
def sample_identity(seed: int, identity: int) -> IdentityParams:
    """Identity `identity`'s fixed parameters, from `np.random.default_rng([seed, identity])` alone."""
    if identity < 0:
        raise ValueError(f'identity must be >= 0; got {identity}')
    rng = np.random.default_rng([seed, identity])
    gender = int(rng.integers(2))
    male = gender == 1
    tone = rng.uniform(0, len(_SKIN_TONES) - 1)
    low = int(tone)
    skin = _SKIN_TONES[low] + (tone - low) * (_SKIN_TONES[min(low + 1, len(_SKIN_TONES) - 1)] - _SKIN_TONES[low])
    skin = np.clip(skin + rng.normal(0, 6, 3), 0, 255)
    hair = _HAIR_COLOURS[rng.choice(len(_HAIR_COLOURS), p=_HAIR_COLOUR_PROBS)] + rng.normal(0, 8, 3)
    eye_colour = _EYE_COLOURS[rng.integers(len(_EYE_COLOURS))] + rng.normal(0, 6, 3)
    lips = skin * np.array([0.82, 0.6, 0.6]) + np.array([25, 5, 5])
    # Read-only mappings: instances are cached and shared.
    proportions = types.MappingProxyType({name: _uniform_proportion(rng, name) for name, _, _ in PROPORTIONS})
    asymmetries = types.MappingProxyType(
        {name: float(np.clip(rng.normal(0, sd), -2.5 * sd, 2.5 * sd)) for name, sd in ASYMMETRIES})
    if male:
        hair_style = str(rng.choice(['short', 'bob', 'long'], p=[0.9, 0.05, 0.05]))
    else:
        hair_style = str(rng.choice(['short', 'bob', 'long'], p=[0.1, 0.3, 0.6]))
    fringe = bool(rng.random() < (0.15 if male else 0.4))
    return IdentityParams(
        identity=identity,
        gender=gender,
        base_age=float(rng.uniform(AGE_RANGE[0] + 2, AGE_RANGE[1] - 2)),
        skin=tuple(float(v) for v in skin),
        hair=tuple(float(v) for v in np.clip(hair, 0, 255)),
        eye_colour=tuple(float(v) for v in np.clip(eye_colour, 0, 255)),
        lips=tuple(float(v) for v in np.clip(lips, 0, 255)),
        half_width=float(rng.uniform(0.235, 0.255) if male else rng.uniform(0.22, 0.24)),
        depth=float(rng.uniform(0.95, 1.1)),
        jaw_taper=float(rng.uniform(0.08, 0.25) if male else rng.uniform(0.22, 0.38)),
        proportions=proportions,
        asymmetries=asymmetries,
        eye_open=float(rng.uniform(0.5, 0.62) if male else rng.uniform(0.56, 0.7)),
        brow_thickness=float(rng.uniform(0.04, 0.06) if male else rng.uniform(0.022, 0.035)),
        lip_thickness=float(rng.uniform(0.035, 0.05) if male else rng.uniform(0.05, 0.07)),
        nose_width=float(rng.uniform(0.14, 0.19) if male else rng.uniform(0.12, 0.16)),
        ear_size=float(rng.uniform(0.2, 0.26)),
        hair_style=hair_style,
        hairline=float(rng.uniform(-0.62, -0.5)),
        fringe=fringe,
        part_tilt=float(rng.uniform(-0.12, 0.12)),
        balding=float(rng.uniform(0.0, 0.012) if male and rng.random() < 0.5 else 0.0),
        greying_onset=float(rng.uniform(35, 70)),
        stubble=bool(male and rng.random() < 0.4),
        face_value=face_value_score(proportions, asymmetries),
    )


@dataclasses.dataclass(frozen=True)
class ExampleParams:
    """Everything that varies between images of one identity."""

    subset: int
    age: float
    smile: int
    smile_amount: float   # 0.55-1 when smiling, 0-0.15 otherwise
    glasses: int
    glasses_round: bool
    lens_alpha: float
    frame_colour: tuple
    mask: int
    mask_colour: tuple
    lipstick: bool
    quality: int
    blur_sigma: float
    low_res_side: int
    noise_sigma: float
    pose: tuple           # (yaw, pitch, roll) degrees
    light: tuple          # direction (x, y, z) towards the light, unit length
    background: tuple     # two RGB colours, top and bottom
    shirt: tuple
    head_offset: tuple    # (dx, dy) fraction of the canvas
    head_scale: float
    noise_seed: int


def _random_muted_colour(rng: np.random.Generator, low: int = 40, high: int = 220) -> tuple:
    return tuple(float(v) for v in rng.uniform(low, high, 3))


def sample_example(rng: np.random.Generator, person: IdentityParams, subset: int) -> ExampleParams:
    """Per-image parameters of one image of `person` in `subset` (1, 2 or 3)."""
    if subset not in SUBSETS:
        raise ValueError(f'subset must be one of {SUBSETS}; got {subset!r}')
    smile = int(rng.random() < 0.5)
    glasses = int(rng.random() < 0.3)
    mask = int(rng.random() < 0.3)
    quality = int(rng.choice(3, p=[0.5, 0.25, 0.25]))
    if subset == 3:
        pose = rng.uniform(-1, 1, 3) * np.array(LARGE_POSE_LIMIT)
    else:
        pose = np.clip(rng.normal(0, FRONTAL_POSE_SD), -np.array(FRONTAL_POSE_LIMIT), FRONTAL_POSE_LIMIT)
    light = np.array([rng.uniform(-0.6, 0.6), rng.uniform(-0.6, 0.1), 1.0])
    mask_colours = ([170, 205, 230], [235, 235, 235], [40, 40, 45], [120, 160, 200])
    return ExampleParams(
        subset=subset,
        age=float(np.clip(person.base_age + rng.uniform(-2, 2), *AGE_RANGE)),
        smile=smile,
        smile_amount=float(rng.uniform(0.55, 1.0) if smile else rng.uniform(0.0, 0.15)),
        glasses=glasses,
        glasses_round=bool(rng.random() < 0.5),
        lens_alpha=float(rng.uniform(0.65, 0.95)),
        frame_colour=_random_muted_colour(rng, 10, 90),
        mask=mask,
        mask_colour=tuple(float(v) for v in mask_colours[rng.integers(len(mask_colours))]),
        lipstick=bool(person.gender == 0 and rng.random() < 0.7),
        quality=quality,
        blur_sigma=float(rng.uniform(1.4, 2.6)),
        low_res_side=int(rng.integers(18, 31)),
        noise_sigma=float(rng.uniform(5, 12)),
        pose=tuple(float(v) for v in pose),
        light=tuple(float(v) for v in light / np.linalg.norm(light)),
        background=(_random_muted_colour(rng), _random_muted_colour(rng)),
        shirt=_random_muted_colour(rng, 20, 200),
        head_offset=(float(rng.uniform(-0.02, 0.02)), float(rng.uniform(-0.02, 0.02))),
        head_scale=float(rng.uniform(0.96, 1.04)),
        noise_seed=int(rng.integers(2**31)),
    )


# ----------------------------------------------------------------------------------------------
# Rendering.

_SUPERSAMPLE = 1.5  # ray-cast at 1.5x the output side, then box-downsample (anti-aliasing)
_TEXTURE_SCALE = 1.0  # face texture pixels per work-canvas pixel
_AMBIENT, _DIFFUSE = 0.5, 0.6


def rotation_matrix(yaw: float, pitch: float, roll: float) -> np.ndarray:
    """[3, 3] head frame -> view frame (x right, y down, z towards the viewer), R = Rz(roll) Ry(yaw) Rx(pitch).
    The face normal (0, 0, 1) goes to (sin yaw cos pitch, -sin pitch, ...) before roll."""
    y, p, r = np.deg2rad([yaw, pitch, roll])
    rot_yaw = np.array([[math.cos(y), 0, math.sin(y)], [0, 1, 0], [-math.sin(y), 0, math.cos(y)]])
    rot_pitch = np.array([[1, 0, 0], [0, math.cos(p), -math.sin(p)], [0, math.sin(p), math.cos(p)]])
    rot_roll = np.array([[math.cos(r), math.sin(r), 0], [-math.sin(r), math.cos(r), 0], [0, 0, 1]])
    return rot_roll @ rot_yaw @ rot_pitch


@dataclasses.dataclass
class _Ellipsoid:
    centre: np.ndarray  # head frame, canvas pixels
    axes: np.ndarray


def _cast(ellipsoid: _Ellipsoid, rotation: np.ndarray, head_xy, shape):
    """Ray-casts `ellipsoid` (head frame) through the canvas pixels inside its projected bounding box.

    Returns None when the box is off the canvas, else (window, t, hit, point): `window` the (row, column)
    slices of the box, `t` [h, w] view-z of the front hit (larger is nearer), `hit` [h, w] bool and
    `point` a tuple of three [h, w] head-frame coordinates of the hit. Works on 2-D component arrays
    (not [h, w, 3]) because this is the renderer's inner loop.
    """
    centre_view = rotation @ ellipsoid.centre
    extent = np.sqrt(((rotation * ellipsoid.axes) ** 2).sum(axis=1))
    x0 = max(int(head_xy[0] + centre_view[0] - extent[0]) - 1, 0)
    x1 = min(int(head_xy[0] + centre_view[0] + extent[0]) + 2, shape[1])
    y0 = max(int(head_xy[1] + centre_view[1] - extent[1]) - 1, 0)
    y1 = min(int(head_xy[1] + centre_view[1] + extent[1]) + 2, shape[0])
    if x1 <= x0 or y1 <= y0:
        return None
    xs = (np.arange(x0, x1, dtype=np.float32) + np.float32(0.5 - head_xy[0]))[None, :]
    ys = (np.arange(y0, y1, dtype=np.float32) + np.float32(0.5 - head_xy[1]))[:, None]
    # Ray through view pixel (X, Y): head-frame origin X R[0] + Y R[1], direction R[2].
    direction = rotation[2] / ellipsoid.axes
    a_coef = float(direction @ direction)
    b_coef = np.zeros((y1 - y0, x1 - x0), np.float32)
    c_coef = np.full((y1 - y0, x1 - x0), -1.0, np.float32)
    for k in range(3):
        base = (xs * np.float32(rotation[0, k] / ellipsoid.axes[k])
                + (ys * np.float32(rotation[1, k] / ellipsoid.axes[k])
                   - np.float32(ellipsoid.centre[k] / ellipsoid.axes[k])))
        b_coef += np.float32(2.0 * direction[k]) * base
        c_coef += base * base
    disc = b_coef * b_coef - np.float32(4.0 * a_coef) * c_coef
    hit = disc >= 0
    t = (np.sqrt(np.maximum(disc, 0.0)) - b_coef) * np.float32(0.5 / a_coef)
    point = tuple(xs * np.float32(rotation[0, k]) + ys * np.float32(rotation[1, k]) + t * np.float32(rotation[2, k])
                  for k in range(3))
    return (slice(y0, y1), slice(x0, x1)), t, hit, point


def _lambert(ellipsoid: _Ellipsoid, point: tuple, rotation: np.ndarray, light: np.ndarray) -> np.ndarray:
    """Ambient + diffuse shading [h, w] at head-frame `point` (three [h, w] arrays) on `ellipsoid`."""
    light_head = rotation.T @ light
    normal = [(point[k] - np.float32(ellipsoid.centre[k])) * np.float32(1.0 / ellipsoid.axes[k] ** 2) for k in range(3)]
    norm = np.sqrt(normal[0] ** 2 + normal[1] ** 2 + normal[2] ** 2) + np.float32(1e-9)
    cosine = (normal[0] * np.float32(light_head[0]) + normal[1] * np.float32(light_head[1])
              + normal[2] * np.float32(light_head[2])) / norm
    return np.float32(_AMBIENT) + np.float32(_DIFFUSE) * np.clip(cosine, 0.0, 1.0)


def _curve(x_from: float, x_to: float, fn, num: int = 14) -> list:
    """`num` points (x, fn(x)) with x evenly spaced from `x_from` to `x_to`."""
    step = (x_to - x_from) / (num - 1)
    return [(x_from + i * step, fn(x_from + i * step)) for i in range(num)]


@dataclasses.dataclass(frozen=True)
class _Layout:
    """Geometry of one image in head-frame canvas px (x right, y down, z towards the viewer, origin the
    head centre), shared by the texture, the 3-D parts and `landmarks`."""

    a: float              # head half-width
    b: float              # head half-height
    c: float              # head half-depth
    head_xy: tuple        # canvas px of the head centre
    eyes: tuple           # for side -1 then +1: (centre x, centre y, half width, half height)
    nose: _Ellipsoid
    nostril_y: float
    mouth: tuple          # (centre x, centre y, half width, corner raise, opening, lip thickness)


def _age_fraction(age: float) -> float:
    return (age - AGE_RANGE[0]) / (AGE_RANGE[1] - AGE_RANGE[0])


def _layout(person: IdentityParams, ex: ExampleParams, side: int) -> _Layout:
    prop, asym = person.proportions, person.asymmetries
    a = person.half_width * side * ex.head_scale
    b = a * prop['aspect']
    c = a * person.depth
    age_t = _age_fraction(ex.age)
    smile = ex.smile_amount
    eyes = []
    for sign in (-1, 1):
        half_w = prop['eye_width'] * a / 2 * (1.0 + sign * asym['eye_size_diff'] / 2)
        # Eyes narrow with age and when smiling (the cheeks push the lower lids up).
        half_h = half_w * person.eye_open * (1.0 - 0.3 * age_t) * (1.0 - 0.22 * smile)
        eyes.append((sign * prop['eye_sep'] * a, sign * asym['eye_dy'] * b / 2, half_w, half_h))
    nose_len = (prop['nose_len'] + 0.04 * age_t) * b  # noses lengthen with age
    nose_x = asym['nose_dx'] * a
    face_z = c * math.sqrt(max(1.0 - (nose_x / a) ** 2 - (0.5 * nose_len / b) ** 2, 0.0))
    nose = _Ellipsoid(np.array([nose_x, 0.5 * nose_len, face_z - 0.05 * a]),
                      np.array([person.nose_width * a, 0.55 * nose_len, 0.22 * a]))
    mouth_y = prop['nose_len'] * b + 0.24 * b
    mouth_half_w = prop['mouth_width'] * a * (1.0 + 0.2 * smile)
    lip_t = person.lip_thickness * b * (1.0 - 0.35 * age_t) * (1.15 if person.gender == 0 else 1.0)
    mouth = (asym['mouth_dx'] * a, mouth_y, mouth_half_w, 0.11 * b * smile,
             0.12 * b * max(smile - 0.3, 0.0) / 0.7, lip_t)
    head_xy = (side * (0.5 + ex.head_offset[0]), side * (0.45 + ex.head_offset[1]))
    return _Layout(a=a, b=b, c=c, head_xy=head_xy, eyes=tuple(eyes), nose=nose, nostril_y=nose_len, mouth=mouth)


def _face_texture(person: IdentityParams, ex: ExampleParams, layout: _Layout, rng: np.random.Generator):
    """Frontal face texture over x in [-a, a], y in [-b, b] (head frame, canvas px), `_TEXTURE_SCALE`
    texture px per canvas px. Returns (rgb float32 [H, W, 3], alpha bool [H, W], scale)."""
    k = _TEXTURE_SCALE
    a, b = layout.a, layout.b
    width, height = int(2 * a * k) + 1, int(2 * b * k) + 1
    age_t = _age_fraction(ex.age)
    wrinkle = float(np.clip((ex.age - 25.0) / 40.0, 0.0, 1.0))
    skin = _skin_colour(person, ex.age)
    image = Image.new('RGB', (width, height), tuple(int(v) for v in skin))
    draw = ImageDraw.Draw(image, 'RGBA')

    def px(x, y):  # head-frame canvas px -> texture px
        return ((x + a) * k, (y + b) * k)

    def poly(points):
        return [px(x, y) for x, y in points]

    def rgba(colour, alpha=255):
        return tuple(min(max(int(v), 0), 255) for v in colour) + (min(max(int(alpha), 0), 255),)

    prop, asym = person.proportions, person.asymmetries
    dark = skin * 0.55
    line_w = max(1, int(round(1.6 * k)))
    smile = ex.smile_amount

    # Cheek blush (smiles raise and redden the cheeks; some women wear blush).
    blush = 0.6 * smile + (0.3 if person.gender == 0 else 0.0)
    for side in (-1, 1):
        cx, cy = side * 0.55 * a, 0.3 * b - 0.05 * b * smile
        r = 0.2 * a
        draw.ellipse([px(cx - r, cy - 0.7 * r), px(cx + r, cy + 0.7 * r)], fill=rgba((220, 90, 90), 45 * blush))

    # Stubble: darkened speckle over the beard area.
    if person.stubble:
        tex = np.array(image)
        top = int(1.25 * b * k)
        yh = (np.arange(top, height, dtype=np.float32)[:, None] / k - b)
        xh = np.arange(width, dtype=np.float32)[None, :] / k - a
        beard = np.abs(xh) < a * (1.0 - 0.9 * np.clip((yh - 0.25 * b) / b, 0, 1))
        beard &= ~((np.abs(xh - layout.mouth[0]) < layout.mouth[2] * 1.1)
                   & (np.abs(yh - layout.mouth[1]) < 0.08 * b))
        beard &= rng.random(beard.shape, dtype=np.float32) < 0.22
        region = tex[top:]
        region[beard] = (region[beard] * 0.68).astype(np.uint8)
        image = Image.fromarray(tex)
        draw = ImageDraw.Draw(image, 'RGBA')

    # Wrinkles: thin dark lines whose opacity grows with age.
    if wrinkle > 0:
        colour = rgba(dark, 200 * wrinkle)
        for j, level in enumerate((-0.27, -0.35, -0.43)):
            span = 0.42 - 0.05 * j
            pts = _curve(-span * a, span * a, lambda x, level=level: level * b + 0.02 * b * math.cos(7 * x / a))
            draw.line(poly(pts), fill=colour, width=line_w)
        mouth_x, mouth_y, mouth_half_w = layout.mouth[:3]
        for side, (cx, cy, hw, _) in zip((-1, 1), layout.eyes):
            # Crow's feet.
            ex0 = cx + side * hw * 1.1
            for angle in (-25, 0, 25):
                dx, dy = 0.12 * a * math.cos(math.radians(angle)), 0.12 * a * math.sin(math.radians(angle))
                draw.line(poly([(ex0, cy), (ex0 + side * dx, cy + dy)]), fill=colour, width=line_w)
            # Nasolabial fold: from the nose wing to beyond the mouth corner.
            nx = layout.nose.centre[0] + side * (person.nose_width * a + 0.03 * a)
            mx = mouth_x + side * (mouth_half_w + 0.05 * a)
            pts = [(nx, layout.nostril_y - 0.03 * b), (0.5 * (nx + mx) + side * 0.06 * a, 0.5 * (layout.nostril_y + mouth_y)),
                   (mx, mouth_y + 0.06 * b)]
            draw.line(poly(pts), fill=colour, width=line_w)
            # Under-eye line.
            pts = _curve(cx - hw * 0.8, cx + hw * 0.8,
                         lambda x, cx=cx, cy=cy, hw=hw: cy + 0.11 * b - 0.03 * b * (1 - ((x - cx) / hw) ** 2))
            draw.line(poly(pts), fill=colour, width=line_w)

    # Eyes: sclera almond, iris, pupil, then skin lids trimmed back over the iris, lid line, brow.
    hair_now = _hair_colour(person, ex.age)
    for side, (cx, cy, hw, hh) in zip((-1, 1), layout.eyes):
        def top(x, cx=cx, cy=cy, hw=hw, hh=hh):
            return cy - hh * (1 - ((x - cx) / hw) ** 2)

        def bottom(x, cx=cx, cy=cy, hw=hw, hh=hh):
            return cy + 0.7 * hh * (1 - ((x - cx) / hw) ** 2)

        draw.polygon(poly(_curve(cx - hw, cx + hw, top) + _curve(cx + hw, cx - hw, bottom)), fill=rgba((240, 238, 232)))
        r_iris = 0.55 * hw
        draw.ellipse([px(cx - r_iris, cy - r_iris), px(cx + r_iris, cy + r_iris)], fill=rgba(person.eye_colour))
        r_pupil = 0.45 * r_iris
        draw.ellipse([px(cx - r_pupil, cy - r_pupil), px(cx + r_pupil, cy + r_pupil)], fill=rgba((15, 12, 12)))
        lid = rgba(skin * 0.93)
        draw.polygon(poly(_curve(cx - hw * 1.05, cx + hw * 1.05, top) + [(cx + hw * 1.05, cy - 1.2 * hw),
                                                                         (cx - hw * 1.05, cy - 1.2 * hw)]), fill=lid)
        draw.polygon(poly(_curve(cx - hw * 1.05, cx + hw * 1.05, bottom) + [(cx + hw * 1.05, cy + 1.2 * hw),
                                                                            (cx - hw * 1.05, cy + 1.2 * hw)]),
                     fill=rgba(skin))
        lash_w = max(1, int(round((2.6 if person.gender == 0 else 1.6) * k)))
        draw.line(poly(_curve(cx - hw * 1.05, cx + hw * 1.05, top)), fill=rgba((25, 18, 15)), width=lash_w)
        # Brow.
        brow_y = cy - 0.17 * b + side * asym['brow_dy'] * b / 2
        bw = hw * 1.25
        pts = _curve(cx - bw, cx + bw, lambda x, cx=cx, brow_y=brow_y, bw=bw:
                     brow_y - 0.04 * b * (1 - ((x - cx) / bw) ** 2) + side * 0.02 * b * (x - cx) / bw)
        draw.line(poly(pts), fill=rgba(hair_now * 0.8), width=max(1, int(round(person.brow_thickness * b * k))))

    # Nostrils (the nose itself is an ellipsoid; its lower edge carries these from the texture).
    nose_x, nose_y = layout.nose.centre[0], layout.nostril_y
    for side in (-1, 1):
        cx = nose_x + side * person.nose_width * a * 0.45
        draw.ellipse([px(cx - 0.07 * a, nose_y - 0.035 * b), px(cx + 0.07 * a, nose_y + 0.02 * b)],
                     fill=rgba(skin * 0.4))

    # Mouth: lips along a centre line whose corners rise with the smile; a smile opens onto teeth.
    mouth_x, mouth_y, half_w, raise_corners, opening, lip_t = layout.mouth
    lips = np.array((190, 40, 60)) if ex.lipstick else np.array(person.lips)

    def centre(x):
        s = (x - mouth_x) / half_w
        return mouth_y - raise_corners * (s * s) + asym['mouth_tilt'] * b * s / 2

    def bump(x):
        s = (x - mouth_x) / half_w
        return max(1.0 - s * s, 0.0) ** 0.6

    x_l, x_r = mouth_x - half_w, mouth_x + half_w
    upper_in = lambda x: centre(x) - 0.3 * opening * bump(x)  # noqa: E731
    lower_in = lambda x: centre(x) + 0.7 * opening * bump(x)  # noqa: E731
    if opening > 0:
        draw.polygon(poly(_curve(x_l, x_r, upper_in) + _curve(x_r, x_l, lower_in)), fill=rgba((70, 20, 25)))
        teeth = lambda x: upper_in(x) + 0.5 * opening * bump(x)  # noqa: E731
        draw.polygon(poly(_curve(x_l * 0.8 + 0.2 * mouth_x, x_r * 0.8 + 0.2 * mouth_x, upper_in)
                          + _curve(x_r * 0.8 + 0.2 * mouth_x, x_l * 0.8 + 0.2 * mouth_x, teeth)),
                     fill=rgba((245, 243, 235)))
    draw.polygon(poly(_curve(x_l, x_r, lambda x: upper_in(x) - lip_t * bump(x)) + _curve(x_r, x_l, upper_in)),
                 fill=rgba(lips * 0.92))
    draw.polygon(poly(_curve(x_l, x_r, lower_in) + _curve(x_r, x_l, lambda x: lower_in(x) + 1.2 * lip_t * bump(x))),
                 fill=rgba(lips))
    draw.line(poly(_curve(x_l, x_r, upper_in)), fill=rgba(lips * 0.5), width=max(1, int(round(1.2 * k))))

    # Glasses: tinted lenses hide the eyes (and crow's feet); frame, bridge and temple arms.
    if ex.glasses:
        frame = rgba(ex.frame_colour)
        frame_w = max(1, int(round(3.0 * k)))
        lens_boxes = []
        for side, (cx, cy, hw, _) in zip((-1, 1), layout.eyes):
            rx, ry = max(hw * 1.5, 0.28 * a), 0.15 * b
            box = [px(cx - rx, -ry), px(cx + rx, ry * 0.95)]
            lens_boxes.append(box)
            if ex.glasses_round:
                draw.ellipse(box, fill=rgba((25, 25, 35), 255 * ex.lens_alpha), outline=frame, width=frame_w)
            else:
                draw.rounded_rectangle(box, radius=0.3 * ry * k, fill=rgba((25, 25, 35), 255 * ex.lens_alpha),
                                       outline=frame, width=frame_w)
            draw.line([(box[1][0] if side == 1 else box[0][0], box[0][1] + 0.25 * ry * k), px(side * a, -0.02 * b)],
                      fill=frame, width=frame_w)
        draw.line([(lens_boxes[0][1][0], lens_boxes[0][0][1] + 0.3 * (lens_boxes[0][1][1] - lens_boxes[0][0][1])),
                   (lens_boxes[1][0][0], lens_boxes[1][0][1] + 0.3 * (lens_boxes[1][1][1] - lens_boxes[1][0][1]))],
                  fill=frame, width=frame_w)

    rgb = np.asarray(image, np.float32)
    # Face outline: the head ellipse, narrowed by the jaw taper below the cheekbones, cut at the chin.
    u = (np.arange(width, dtype=np.float32)[None, :] / k - a) / a
    v = (np.arange(height, dtype=np.float32)[:, None] / k - b) / b
    jaw = np.clip((v - 0.15) / 0.8, 0.0, 1.0) ** 1.4
    alpha = (u / (1.0 - person.jaw_taper * jaw)) ** 2 + v**2 <= 1.0
    alpha &= v <= 0.93

    # Mask: opaque over the nose tip, mouth and chin; straps to the ears. Drawn last so nothing the
    # smile changes shows through.
    if ex.mask:
        mask_image = Image.new('L', (width, height), 0)
        mdraw = ImageDraw.Draw(mask_image)
        top_y = 0.5 * prop['nose_len'] * b
        outline = [(-0.88 * a, top_y + 0.12 * b), (-0.3 * a, top_y), (0.3 * a, top_y), (0.88 * a, top_y + 0.12 * b),
                   (0.8 * a, 0.72 * b), (0.3 * a, 1.0 * b), (-0.3 * a, 1.0 * b), (-0.8 * a, 0.72 * b)]
        mdraw.polygon(poly(outline), fill=255)
        covered = np.asarray(mask_image) > 0
        rgb[covered] = np.array(ex.mask_colour, np.float32)
        alpha |= covered & (v <= 0.99)
        pleat = Image.fromarray(rgb.astype(np.uint8))
        pdraw = ImageDraw.Draw(pleat, 'RGBA')
        for j in range(3):
            y = top_y + (0.22 + 0.2 * j) * b
            pdraw.line(poly([(-0.7 * a, y), (0.7 * a, y)]), fill=rgba(np.array(ex.mask_colour) * 0.75),
                       width=line_w)
        for side in (-1, 1):
            pdraw.line(poly([(side * 0.86 * a, top_y + 0.14 * b), (side * a, 0.0)]), fill=rgba((235, 235, 235)),
                       width=line_w)
            pdraw.line(poly([(side * 0.8 * a, 0.7 * b), (side * a, 0.2 * b)]), fill=rgba((235, 235, 235)),
                       width=line_w)
        rgb = np.asarray(pleat, np.float32)
    return rgb, alpha, k


def _skin_colour(person: IdentityParams, age: float) -> np.ndarray:
    """Skin darkens slightly with age."""
    return (np.array(person.skin) * (1.0 - 0.08 * _age_fraction(age))).astype(np.float32)


def _hair_colour(person: IdentityParams, age: float) -> np.ndarray:
    # Greying starts at an identity-specific age and never completes: a coarse, unreliable age cue.
    grey = 0.8 * float(np.clip((age - person.greying_onset) / 25.0, 0.0, 1.0))
    return (1 - grey) * np.array(person.hair) + grey * _GREY_HAIR


def _background(ex: ExampleParams, side: int) -> np.ndarray:
    top, bottom = np.array(ex.background[0], np.float32), np.array(ex.background[1], np.float32)
    ramp = np.linspace(0.0, 1.0, side, dtype=np.float32)[:, None, None]
    return np.broadcast_to(top + ramp * (bottom - top), (side, side, 3)).copy()


def render_face(person: IdentityParams, ex: ExampleParams, image_size: int = 112) -> np.ndarray:
    """Renders one face. Returns uint8 [image_size, image_size, 3]; a pure function of its arguments."""
    side = int(round(_SUPERSAMPLE * image_size))
    rng = np.random.default_rng(ex.noise_seed)
    rotation = rotation_matrix(*ex.pose)
    light = np.array(ex.light)
    layout = _layout(person, ex, side)
    a, b, c, head_xy = layout.a, layout.b, layout.c, layout.head_xy
    skin = _skin_colour(person, ex.age)
    hair = _hair_colour(person, ex.age).astype(np.float32)

    layer = Image.fromarray(_background(ex, side).astype(np.uint8))
    draw = ImageDraw.Draw(layer)
    # Shoulders: not rotated with the head, only shifted a little by yaw.
    shift = 0.2 * a * math.sin(math.radians(ex.pose[0]))
    draw.ellipse([head_xy[0] - 2.6 * a + shift, head_xy[1] + 1.32 * b,
                  head_xy[0] + 2.6 * a + shift, head_xy[1] + 1.32 * b + 3.0 * a],
                 fill=tuple(int(v) for v in ex.shirt))
    if person.hair_style == 'long':
        # Hair falling behind the head down to the shoulders: attached to the head at the top, hanging
        # straight down (not rotated) below.
        top = np.array([[-1.0 * a, -0.3 * b, -0.6 * c], [1.0 * a, -0.3 * b, -0.6 * c]]) @ rotation.T
        hang = np.array([[1.25 * a, 1.75 * b], [0.6 * a, 1.85 * b], [-0.6 * a, 1.85 * b], [-1.25 * a, 1.75 * b]])
        hang[:, 0] += 0.5 * (top[0, 0] + top[1, 0])
        outline = list(top[:, :2]) + list(hang)
        draw.polygon([(head_xy[0] + p[0], head_xy[1] + p[1]) for p in outline],
                     fill=tuple(int(v) for v in hair * 0.75))
    canvas = np.asarray(layer, np.float32).copy()
    depth = np.full((side, side), -np.inf, np.float32)

    def composite(window, t, valid, colour):
        nearer = valid & (t > depth[window])
        np.copyto(depth[window], t, where=nearer)
        np.copyto(canvas[window], colour, where=nearer[..., None])

    def shaded(colour, shade):  # colour [3] or [h, w, 3], shade [h, w] -> [h, w, 3]
        return colour * shade[..., None]

    # Neck: upright in the view frame (the head turns on it), hidden behind the jaw at the top.
    neck = _Ellipsoid(np.array([0.0, 1.1 * b, -0.35 * c]), np.array([0.5 * a, 0.75 * b, 0.5 * c]))
    upright = np.eye(3)
    cast = _cast(neck, upright, head_xy, canvas.shape)
    if cast is not None:
        window, t, hit, point = cast
        composite(window, t, hit, shaded(skin * 0.62, _lambert(neck, point, upright, light)))

    # Head: face texture on the front hemisphere, plain skin behind, cut away below the jaw line.
    texture, tex_alpha, k = _face_texture(person, ex, layout, rng)
    head = _Ellipsoid(np.zeros(3), np.array([a, b, c]))

    def textured(point, front_only):
        col = np.clip(((point[0] + a) * k).astype(np.int32), 0, texture.shape[1] - 1)
        row = np.clip(((point[1] + b) * k).astype(np.int32), 0, texture.shape[0] - 1)
        colour = texture[row, col]
        valid = tex_alpha[row, col]
        if front_only:
            return colour, valid
        front = point[2] >= 0
        behind = ~front & (point[1] < 0.55 * b)
        colour = np.where(behind[..., None], skin, colour)
        return colour, np.where(front, valid, behind)

    window, t, hit, point = _cast(head, rotation, head_xy, canvas.shape)
    colour, valid = textured(point, front_only=False)
    composite(window, t, hit & valid, shaded(colour, _lambert(head, point, rotation, light)))

    # Nose: an ellipsoid from the brow line to the nostrils, textured with the face (mask included).
    nose = layout.nose
    cast = _cast(nose, rotation, head_xy, canvas.shape)
    if cast is not None:
        window, t, hit, point = cast
        colour, valid = textured(point, front_only=True)
        composite(window, t, hit & valid, shaded(colour, _lambert(nose, point, rotation, light)))

    # Ears, slightly darker than the face, with a darker inner bowl.
    for sign in (-1, 1):
        ear = _Ellipsoid(np.array([sign * 0.97 * a, 0.08 * b, -0.1 * c]),
                         np.array([0.1 * a, person.ear_size * b, 0.2 * a]))
        cast = _cast(ear, rotation, head_xy, canvas.shape)
        if cast is None:
            continue
        window, t, hit, point = cast
        inner = ((point[1] - ear.centre[1]) / ear.axes[1]) ** 2 + ((point[2] - ear.centre[2]) / ear.axes[2]) ** 2
        colour = np.where((inner < 0.35)[..., None], skin * 0.7, skin * 0.9)
        composite(window, t, hit, shaded(colour, _lambert(ear, point, rotation, light)))

    # Hair shell: hair above the hairline at the front, above the nape at the back.
    volume = {'short': (1.06, 1.05, 1.08), 'bob': (1.14, 1.08, 1.15), 'long': (1.12, 1.07, 1.15)}[person.hair_style]
    shell = _Ellipsoid(np.array([0.0, -0.05 * b, -0.04 * c]), np.array([a, b, c]) * np.array(volume))
    hairline = person.hairline - person.balding * max(ex.age - 30.0, 0.0)
    if person.fringe:
        hairline = -0.32
    side_level = {'short': -0.05, 'bob': 0.3, 'long': 0.5}[person.hair_style]
    nape_level = {'short': 0.5, 'bob': 0.7, 'long': 1.0}[person.hair_style]
    window, t, hit, point = _cast(shell, rotation, head_xy, canvas.shape)
    u, v, w = ((point[j] - np.float32(shell.centre[j])) * np.float32(1.0 / shell.axes[j]) for j in range(3))
    front_line = hairline + person.part_tilt * u + (side_level - hairline) * u * u
    is_hair = np.where(w >= 0, v < front_line, v < nape_level)
    # Strands: fine stripes running from the crown, in the shell's frontal (u, v) coordinates.
    strands = 0.9 + 0.1 * np.sin(np.float32(70.0) * np.arctan2(u, v + 1.2))
    composite(window, t, hit & is_hair, shaded(hair, strands * _lambert(shell, point, rotation, light)))

    image = Image.fromarray(np.clip(canvas, 0, 255).astype(np.uint8))
    image = image.resize((image_size, image_size), Image.Resampling.BOX)
    return _degrade(image, ex, rng)


LANDMARK_NAMES = ('eye_image_left', 'eye_image_right', 'nose_tip', 'mouth_image_left', 'mouth_image_right')


def landmarks(person: IdentityParams, ex: ExampleParams, image_size: int = 112) -> np.ndarray:
    """Five landmarks of the rendered face, float32 [5, 2] of (x, y) output pixels, in the order
    `LANDMARK_NAMES` ('image_left' = the side at smaller x in a frontal view): the pupils, the nose
    tip and the mouth corners, projected through the same head pose as `render_face`. Points can be
    hidden by pose or accessories; they are positions, not visibilities."""
    side = int(round(_SUPERSAMPLE * image_size))
    layout = _layout(person, ex, side)
    a, b, c = layout.a, layout.b, layout.c

    def on_face(x, y):
        return (x, y, c * math.sqrt(max(1.0 - (x / a) ** 2 - (y / b) ** 2, 0.0)))

    mouth_x, mouth_y, half_w, raise_corners, _, _ = layout.mouth
    tilt = person.asymmetries['mouth_tilt'] * b / 2
    nose = layout.nose
    points = np.array([
        on_face(*layout.eyes[0][:2]),
        on_face(*layout.eyes[1][:2]),
        (nose.centre[0], nose.centre[1], nose.centre[2] + nose.axes[2]),
        on_face(mouth_x - half_w, mouth_y - raise_corners - tilt),
        on_face(mouth_x + half_w, mouth_y - raise_corners + tilt),
    ])
    view = points @ rotation_matrix(*ex.pose).T
    return ((view[:, :2] + np.array(layout.head_xy)) * (image_size / side)).astype(np.float32)


def _degrade(image: Image.Image, ex: ExampleParams, rng: np.random.Generator) -> np.ndarray:
    """quality 0: unchanged; 1: Gaussian blur; 2: down to `low_res_side` px and back, plus noise."""
    if ex.quality == 1:
        image = image.filter(ImageFilter.GaussianBlur(ex.blur_sigma))
    elif ex.quality == 2:
        size = image.size[0]
        image = image.resize((ex.low_res_side, ex.low_res_side), Image.Resampling.BOX)
        image = image.resize((size, size), Image.Resampling.BILINEAR)
        noisy = np.asarray(image, np.float32) + rng.normal(0.0, ex.noise_sigma, (size, size, 3))
        return np.clip(np.round(noisy), 0, 255).astype(np.uint8)
    return np.asarray(image, np.uint8).copy()


# ----------------------------------------------------------------------------------------------
# Examples and the TFDS builder.


def split_seed(seed: int, split: str) -> int:
    """Seed of `split`'s example stream; distinct from every identity seed `[seed, k]` stream because it
    is the first entry of a different pair."""
    if split not in SPLITS:
        raise ValueError(f'split must be one of {SPLITS}; got {split!r}')
    return 1_000_003 * (1 + SPLITS.index(split)) + seed


@dataclasses.dataclass(eq=False, kw_only=True)
class SyntheticFacesConfig(tfds.core.BuilderConfig):
    """Sizes of one variant.

    Attributes:
      image_size: side of `image`.
      num_train, num_validation, num_test: examples per split.
      num_train_identities: identities 0..n-1, shared by train and validation.
      num_test_identities: the next identities, used only by test.
      seed: identity and example streams derive from it.
    """

    image_size: int = 112
    num_train: int = 6000
    num_validation: int = 600
    num_test: int = 600
    num_train_identities: int = 600
    num_test_identities: int = 60
    seed: int = 0

    @property
    def split_sizes(self) -> dict:
        return {'train': self.num_train, 'validation': self.num_validation, 'test': self.num_test}

    def identity_of(self, split: str, index: int) -> int:
        """Identity of example `index` of `split`: round-robin over the split's identity range."""
        if split == 'test':
            return self.num_train_identities + index % self.num_test_identities
        return index % self.num_train_identities


CONFIGS = {
    'default': SyntheticFacesConfig(
        name='default', image_size=112, num_train=6000, num_validation=600, num_test=600,
        num_train_identities=600, num_test_identities=60,
        description='112x112; 600 train/validation identities (10 train + 1 validation image each), '
                    '60 test identities (10 images each).'),
    'smoke': SyntheticFacesConfig(
        name='smoke', image_size=112, num_train=96, num_validation=24, num_test=24,
        num_train_identities=12, num_test_identities=4,
        description='Tiny variant for tests: 12 train/validation identities, 4 test identities.'),
}


def generate_example(config: SyntheticFacesConfig, split: str, index: int) -> dict:
    """Example `index` of `split`: a dict of numpy arrays with the builder's features, a pure function
    of (config, split, index) through `np.random.default_rng([split_seed(config.seed, split), index])`
    and the identity's own stream."""
    if index < 0:
        raise ValueError(f'index must be >= 0; got {index}')
    rng = np.random.default_rng([split_seed(config.seed, split), index])
    subset = int(rng.choice(SUBSETS, p=SUBSET_PROBABILITIES))
    identity = config.identity_of(split, index)
    person = sample_identity(config.seed, identity)
    ex = sample_example(rng, person, subset)
    labelled = SUBSET_ATTRIBUTES[subset]
    return {
        'image': render_face(person, ex, config.image_size),
        'gender': np.int32(person.gender),
        'age': np.float32(ex.age),
        'smile': np.int32(ex.smile),
        'quality': np.int32(ex.quality),
        'face_value': np.float32(person.face_value),
        'mask': np.int32(ex.mask),
        'glasses': np.int32(ex.glasses),
        'pose': np.asarray(ex.pose, np.float32),
        'identity': np.int32(identity),
        'subset': np.int32(subset),
        'label_mask': np.asarray([name in labelled for name in ATTRIBUTES], np.float32),
        'pose_mask': np.float32(subset == 3),
    }


class SyntheticFaces(tfds.core.GeneratorBasedBuilder):
    """Procedurally rendered faces with 7 attribute labels, pose and identity (see module docstring)."""

    VERSION = tfds.core.Version('1.0.0')
    RELEASE_NOTES = {'1.0.0': 'Initial release.'}
    BUILDER_CONFIGS = list(CONFIGS.values())
    DEFAULT_CONFIG_NAME = 'default'

    def _info(self) -> tfds.core.DatasetInfo:
        config = self.builder_config
        scalar = lambda dtype: tfds.features.Tensor(shape=(), dtype=dtype)  # noqa: E731
        return tfds.core.DatasetInfo(
            builder=self,
            description=__doc__,
            features=tfds.features.FeaturesDict({
                'image': tfds.features.Tensor(shape=(config.image_size, config.image_size, 3), dtype=np.uint8,
                                              encoding=tfds.features.Encoding.ZLIB),
                'gender': scalar(np.int32),
                'age': scalar(np.float32),
                'smile': scalar(np.int32),
                'quality': scalar(np.int32),
                'face_value': scalar(np.float32),
                'mask': scalar(np.int32),
                'glasses': scalar(np.int32),
                'pose': tfds.features.Tensor(shape=(3,), dtype=np.float32),
                'identity': scalar(np.int32),
                'subset': scalar(np.int32),
                'label_mask': tfds.features.Tensor(shape=(NUM_ATTRIBUTES,), dtype=np.float32),
                'pose_mask': scalar(np.float32),
            }),
            # Keep example i at position i so data_source(...)[i] == generate_example(config, split, i).
            disable_shuffling=True,
            homepage='https://github.com/jaxface',
        )

    def _split_generators(self, dl_manager):
        del dl_manager  # Nothing to download: every example is generated.
        return {split: self._generate_examples(split, size)
                for split, size in self.builder_config.split_sizes.items()}

    def _generate_examples(self, split: str, num_examples: int):
        for index in range(num_examples):
            yield index, generate_example(self.builder_config, split, index)


def _check_config_name(config_name: str) -> None:
    if config_name not in CONFIGS:
        raise ValueError(f'config_name must be one of {sorted(CONFIGS)}; got {config_name!r}')


def prepare(config_name: str = 'default', data_dir: str | None = None) -> SyntheticFaces:
    """Generates `synthetic_faces/<config_name>` as array_record files under `data_dir` (tfds' default
    directory when None; a no-op when already prepared) and returns the builder."""
    _check_config_name(config_name)
    builder = SyntheticFaces(config=config_name, data_dir=data_dir, file_format='array_record')
    builder.download_and_prepare()
    return builder


FEATURE_DTYPES = {
    'image': np.uint8, 'gender': np.int32, 'age': np.float32, 'smile': np.int32, 'quality': np.int32,
    'face_value': np.float32, 'mask': np.int32, 'glasses': np.int32, 'pose': np.float32,
    'identity': np.int32, 'subset': np.int32, 'label_mask': np.float32, 'pose_mask': np.float32,
}


class TypedSource:
    """A tfds data source whose examples come back with the declared dtypes.

    tfds' numpy decoding returns scalar features as Python int / float, which `np.stack` would widen to
    int64 / float64; this wrapper casts every feature to `FEATURE_DTYPES` instead. Random access:
    `len(source)`, `source[i]`, `source.__getitems__([i, j, ...])`.
    """

    def __init__(self, source):
        self.source = source

    def __len__(self) -> int:
        return len(self.source)

    @staticmethod
    def _cast(example: dict) -> dict:
        return {name: np.asarray(value, FEATURE_DTYPES[name]) for name, value in example.items()}

    def __getitem__(self, index: int) -> dict:
        return self._cast(self.source[index])

    def __getitems__(self, indices) -> list:
        return [self._cast(example) for example in self.source.__getitems__(list(indices))]


def data_source(config_name: str, split: str, data_dir: str | None = None) -> TypedSource:
    """Random-access, TensorFlow-free source of a prepared split: `source[i]` is the dict of numpy
    arrays of example i (features and dtypes in `FEATURE_DTYPES`), `len(source)` the split size."""
    _check_config_name(config_name)
    if split not in SPLITS:
        raise ValueError(f'split must be one of {SPLITS}; got {split!r}')
    return TypedSource(PreparedSource(f'synthetic_faces/{config_name}', split, data_dir))
