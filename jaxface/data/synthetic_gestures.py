"""Procedural hand-gesture detection dataset (`synthetic_gestures`), built offline with numpy and Pillow.

Each example is a cluttered scene with 0 to `MAX_HANDS` cartoon hands. A hand is a wrist, a palm and
five digits drawn as rounded rectangles / capsules; the gesture class is which digits are extended.
Hands vary in size (boxes about 12-40 low-resolution pixels tall at S=64), rotation (+-35 degrees), side
(mirrored half the time) and skin tone (SKIN_TONES, jittered), overlap at most MAX_PAIRWISE_IOU and
keep MIN_FRACTION_INSIDE of their box inside the image. Backgrounds are colour gradients with
blotches, stripes, random shapes and skin-coloured blobs that are not hands, plus mild sensor noise.
The scene is rendered at high resolution (`image_hr`, [L*S, L*S, 3]) and the low-resolution `image`
([S, S, 3]) is derived from it by a Gaussian blur and L x L average pooling, so a teacher that sees
`image_hr` can resolve finger details (victory vs three, four vs open_palm) that the student's
`image` blurs together.

Features (all fixed shapes, stored as `tfds.features.Tensor`, so reading needs no TensorFlow):
  image      uint8   [S, S, 3]
  image_hr   uint8   [L*S, L*S, 3]
  boxes      float32 [MAX_HANDS, 4]  normalised [ymin, xmin, ymax, xmax] in [0, 1], zero rows pad
  labels     int32   [MAX_HANDS]     index into CLASS_NAMES, -1 pads
  num_hands  int32   []              number of valid rows in boxes / labels (valid rows come first)
Boxes enclose every drawn part of the hand (wrist, palm, fingers, outline), clipped to the image.

Example i of split s depends only on `np.random.default_rng([SPLIT_SEEDS[s], i])`, so preparing twice
gives identical arrays whatever the generation order, and configs with the same split seeds share
scenes (`smoke` is a prefix of `lr64`; `lr128` renders the same scenes as `lr64` at twice the size).

Usage:
  builder = prepare('lr64', data_dir)            # download_and_prepare(file_format='array_record')
  train = data_source('lr64', 'train', data_dir)  # random-access source, train[i] is example i
"""

from __future__ import annotations

import dataclasses
import functools
import math

import numpy as np
import tensorflow_datasets as tfds
from PIL import Image, ImageDraw

from jaxface.data import tfds_builder

CLASS_NAMES = (
    'fist',
    'point',
    'victory',
    'three',
    'open_palm',
    'thumb_up',
    'four',
    'rock',
)
NUM_CLASSES = len(CLASS_NAMES)
MAX_HANDS = 3
LR_FACTOR = 2
# Anti-aliasing blur applied to image_hr before L x L average pooling, in high-resolution pixels.
BLUR_SIGMA_PER_FACTOR = 0.5
SPLIT_SEEDS = {'train': 1, 'validation': 2, 'test': 3}
MAX_PAIRWISE_IOU = 0.2
MIN_FRACTION_INSIDE = 0.85
# Drawing happens at this multiple of the high-resolution size, then is box-filtered down: smooth edges.
_SUPERSAMPLE = 2
_PLACEMENT_TRIES = 30
# Probabilities of 0, 1, 2, 3 hands in a scene.
_NUM_HANDS_PROBS = (0.1, 0.4, 0.3, 0.2)
# Hand scale as a fraction of the image side (the hand spans about 1.2 scales from wrist to fingertip).
_HAND_SCALE_RANGE = (0.22, 0.5)
_MAX_ROTATION_DEG = 35.0

# RGB skin tones from light to deep; each hand jitters its tone.
SKIN_TONES = (
    (255, 224, 196),
    (241, 194, 160),
    (224, 172, 130),
    (198, 134, 98),
    (161, 102, 70),
    (120, 78, 54),
    (86, 56, 40),
)

# Hand model, local frame in hand-scale units: u to the pinky side, v up towards the fingertips,
# palm centred at the origin. Digits per finger: (base u, length, width, splay degrees towards +u).
_PALM_SIZE = (0.50, 0.50)
_PALM_CORNER = 0.13
_WRIST_CENTRE_V = -0.36
_WRIST_SIZE = (0.34, 0.24)
_FINGER_BASE_V = 0.17
_FINGERS = {
    'index': (-0.175, 0.44, 0.115, -7.0),
    'middle': (-0.058, 0.49, 0.120, -1.0),
    'ring': (0.060, 0.45, 0.115, 5.0),
    'pinky': (0.178, 0.35, 0.100, 12.0),
}
_THUMB_BASE = complex(-0.20, -0.10)
_THUMB_LENGTH = 0.38
_THUMB_WIDTH = 0.14
_THUMB_ANGLE_DEG = -48.0  # from vertical, towards -u (away from the fingers)

# Which digits each gesture extends. thumb_up is drawn as a fist seen from the side (see _hand_parts).
_EXTENDED = {
    'fist': (),
    'point': ('index',),
    'victory': ('index', 'middle'),
    'three': ('index', 'middle', 'ring'),
    'open_palm': ('thumb', 'index', 'middle', 'ring', 'pinky'),
    'thumb_up': ('thumb',),
    'four': ('index', 'middle', 'ring', 'pinky'),
    'rock': ('index', 'pinky'),
}
# Gesture-specific splay overrides (degrees), e.g. the V of victory and the spread of an open palm.
_SPLAY_OVERRIDES = {
    'victory': {'index': -14.0, 'middle': 9.0},
    'open_palm': {'index': -11.0, 'middle': -2.0, 'ring': 8.0, 'pinky': 19.0},
    'rock': {'index': -10.0, 'pinky': 16.0},
}


# ----------------------------------------------------------------------------------------------
# Geometry helpers. A point is a complex number x + iy, a polygon a 1-D complex array: rotations
# and mirrors become one multiply / conjugate, which keeps per-example Python overhead small.

_HALF_CIRCLE = np.exp(1j * np.linspace(-math.pi / 2, math.pi / 2, 9))
_QUARTER_CIRCLE = np.exp(1j * np.linspace(0, math.pi / 2, 6))
_FULL_CIRCLE = np.exp(1j * np.linspace(0, 2 * math.pi, 24, endpoint=False))


def _capsule(p0: complex, p1: complex, width: float) -> np.ndarray:
    """Stadium polygon of the given width whose spine runs from p0 to p1."""
    spine = p1 - p0
    direction = spine / abs(spine) if abs(spine) > 0 else 1j
    cap = (width / 2) * direction * _HALF_CIRCLE
    return np.concatenate([p1 + cap, p0 - cap])


def _rounded_rect(centre: complex, width: float, height: float, corner: float) -> np.ndarray:
    """Axis-aligned width x height rectangle with rounded corners."""
    half_w, half_h = width / 2 - corner, height / 2 - corner
    arc = corner * _QUARTER_CIRCLE
    return centre + np.concatenate([complex(half_w, half_h) + arc, complex(-half_w, half_h) + 1j * arc,
                                    complex(-half_w, -half_h) - arc, complex(half_w, -half_h) - 1j * arc])


def _ellipse(centre: complex, radius_x: float, radius_y: float, angle: float) -> np.ndarray:
    """Ellipse with the given radii rotated by angle (radians)."""
    unrotated = radius_x * _FULL_CIRCLE.real + 1j * radius_y * _FULL_CIRCLE.imag
    return centre + unrotated * complex(math.cos(angle), math.sin(angle))


def _digit_tip(base: complex, length: float, splay_deg: float) -> complex:
    angle = math.radians(splay_deg)
    return base + length * complex(math.sin(angle), math.cos(angle))


def _hand_parts(class_name: str, rng: np.random.Generator) -> tuple[list[np.ndarray], int]:
    """Polygons of one hand in its local frame (u = real, towards the pinky; v = imag, towards the
    fingertips; palm centred at 0), in drawing order, and how many leading ones are plain skin.

    The remaining 'fold' parts (curled knuckles, a thumb across the palm) are drawn over the palm with
    a slightly darker fill, so the silhouette and the creases carry the gesture.
    """
    extended = _EXTENDED[class_name]
    splay = _SPLAY_OVERRIDES.get(class_name, {})
    wrist = _rounded_rect(1j * _WRIST_CENTRE_V, *_WRIST_SIZE, 0.06)
    behind, folds = [wrist], []
    if class_name == 'thumb_up':
        # Side view of a fist: knuckles stacked on the +u side, thumb straight up from the top.
        thumb_base = complex(-0.09 + rng.uniform(-0.02, 0.02), 0.12)
        behind.append(_capsule(thumb_base, _digit_tip(thumb_base, _THUMB_LENGTH + 0.04, rng.uniform(-8, 8)),
                               _THUMB_WIDTH))
        palm = _rounded_rect(0j, 0.42, 0.46, _PALM_CORNER)
        for row, v in enumerate((0.15, 0.05, -0.05, -0.15)):
            folds.append(_capsule(complex(0.12, v), complex(0.27 - 0.015 * row, v), 0.105 - 0.005 * row))
    else:
        for name, (base_u, length, width, default_splay) in _FINGERS.items():
            if name in extended:
                base = complex(base_u, _FINGER_BASE_V)
                angle = splay.get(name, default_splay) + rng.uniform(-3, 3)
                tip = _digit_tip(base, length * rng.uniform(0.93, 1.07), angle)
                behind.append(_capsule(base, tip, width))
            else:
                # Curled finger: a knuckle bump just over the top edge of the palm.
                folds.append(_capsule(complex(base_u, 0.14), complex(base_u, 0.27), width))
        if 'thumb' in extended:
            angle = _THUMB_ANGLE_DEG + rng.uniform(-8, 8) - (10.0 if class_name == 'open_palm' else 0.0)
            tip = _digit_tip(_THUMB_BASE, _THUMB_LENGTH, angle)
            behind.append(_capsule(_THUMB_BASE, tip, _THUMB_WIDTH))
        else:
            # Thumb folded across the palm towards the curled fingers.
            tip = complex(0.02 + rng.uniform(-0.03, 0.03), 0.07)
            folds.append(_capsule(complex(-0.22, -0.10), tip, 0.13))
        palm = _rounded_rect(0j, *_PALM_SIZE, _PALM_CORNER)
    return behind + [palm] + folds, len(behind) + 1


def _to_image(points: np.ndarray, *, scale: float, angle: float, mirror: bool,
              centre: complex) -> np.ndarray:
    """Local hand frame (v up) -> normalised image coordinates (y down): mirror, rotate, scale, shift."""
    if mirror:
        points = -points.conj()
    return centre + scale * (points * complex(math.cos(angle), math.sin(angle))).conj()


def _box_of(points: np.ndarray) -> np.ndarray:
    """Unclipped [ymin, xmin, ymax, xmax] enclosing the points (normalised coordinates)."""
    return np.array([points.imag.min(), points.real.min(), points.imag.max(), points.real.max()])


def _area(box) -> float:
    return max(0.0, box[2] - box[0]) * max(0.0, box[3] - box[1])


def _iou(a, b) -> float:
    inter = _area((max(a[0], b[0]), max(a[1], b[1]), min(a[2], b[2]), min(a[3], b[3])))
    union = _area(a) + _area(b) - inter
    return inter / union if union > 0 else 0.0


def _pixel_coords(polygon: np.ndarray, size: int) -> list[float]:
    """Flat [x0, y0, x1, y1, ...] in canvas pixels, the form ImageDraw.polygon takes fastest."""
    return (np.column_stack([polygon.real, polygon.imag]).ravel() * size).tolist()


# ----------------------------------------------------------------------------------------------
# Rendering.


def _random_colour(rng: np.random.Generator) -> tuple[int, int, int]:
    return tuple(int(c) for c in rng.integers(0, 256, 3))


def _skin_colour(rng: np.random.Generator) -> np.ndarray:
    tone = np.asarray(SKIN_TONES[rng.integers(len(SKIN_TONES))], np.float64)
    tone = tone * rng.uniform(0.88, 1.08) + rng.uniform(-8, 8, 3)
    return np.clip(tone, 0, 255)


def _as_rgb(colour: np.ndarray) -> tuple[int, int, int]:
    return tuple(int(c) for c in np.clip(colour, 0, 255))


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    """Colour gradient + smooth colour blotches + optional stripes; uint8 [size, size, 3].

    All of it is smooth, so callers render it at the high-resolution size and upsample.
    """
    coords = (np.arange(size, dtype=np.float32) + 0.5) / size
    direction = rng.uniform(0, 2 * math.pi)
    ramp_x, ramp_y = math.cos(direction) * coords, math.sin(direction) * coords
    low = ramp_x.min() + ramp_y.min()
    high = ramp_x.max() + ramp_y.max()
    start = rng.uniform(0, 255, 3).astype(np.float32)
    slope = (rng.uniform(0, 255, 3).astype(np.float32) - start) / (high - low)
    image = (start - low * slope) + ramp_y[:, None, None] * slope + ramp_x[None, :, None] * slope
    # Blotches: a coarse random grid upsampled bicubically (fixed grid, so resolution independent).
    grid = rng.integers(0, 256, (5, 5, 3), dtype=np.uint8)
    blotches = np.asarray(Image.fromarray(grid).resize((size, size), Image.BICUBIC), np.float32)
    image += (blotches - 128.0) * rng.uniform(0.1, 0.45)
    if rng.random() < 0.35:
        cycles = rng.uniform(4, 14)
        angle = rng.uniform(0, math.pi)
        phase_x = (2 * math.pi * cycles * math.cos(angle)) * coords
        phase_y = (2 * math.pi * cycles * math.sin(angle)) * coords
        # sin(a + b) = sin a cos b + cos a sin b: two outer products instead of a full-size sin.
        stripes = (np.sin(phase_y)[:, None] * np.cos(phase_x)[None, :]
                   + np.cos(phase_y)[:, None] * np.sin(phase_x)[None, :])
        image += stripes[..., None] * (rng.uniform(10, 35) * rng.uniform(0.3, 1.0, 3).astype(np.float32))
    return np.clip(image, 0, 255).astype(np.uint8)


def _draw_clutter(draw: ImageDraw.ImageDraw, rng: np.random.Generator, size: int) -> None:
    """Random rectangles, ellipses, triangles and lines in random colours."""
    for _ in range(rng.integers(4, 13)):
        kind = rng.integers(4)
        colour = _random_colour(rng)
        centre = complex(*rng.uniform(-0.05, 1.05, 2))
        width, height = rng.uniform(0.04, 0.3, 2)
        angle = rng.uniform(0, math.pi)
        if kind == 0:
            corners = np.array([1 + 1j, -1 + 1j, -1 - 1j, 1 - 1j]) * 0.5
            rotation = complex(math.cos(angle), math.sin(angle))
            polygon = centre + (corners.real * width + 1j * corners.imag * height) * rotation
        elif kind == 1:
            polygon = _ellipse(centre, width / 2, height / 2, angle)
        elif kind == 2:
            offsets = rng.uniform(-0.15, 0.15, (3, 2))
            polygon = centre + offsets[:, 0] + 1j * offsets[:, 1]
        else:
            end = centre + complex(*rng.uniform(-0.3, 0.3, 2))
            line_width = max(1, int(round(rng.uniform(0.005, 0.025) * size)))
            draw.line(_pixel_coords(np.array([centre, end]), size), fill=colour, width=line_width)
            continue
        outline = _random_colour(rng) if rng.random() < 0.3 else None
        draw.polygon(_pixel_coords(polygon, size), fill=colour, outline=outline, width=max(1, size // 128))


def _draw_distractors(draw: ImageDraw.ImageDraw, rng: np.random.Generator, size: int) -> None:
    """Skin-coloured blobs and sticks that are not hands (faces, arms, objects of similar colour)."""
    for _ in range(rng.integers(0, 4)):
        colour = _skin_colour(rng)
        centre = complex(*rng.uniform(0.0, 1.0, 2))
        if rng.random() < 0.6:
            radius_x, radius_y = rng.uniform(0.04, 0.16, 2)
            polygon = _ellipse(centre, radius_x, radius_y, rng.uniform(0, math.pi))
        else:
            end = centre + complex(*rng.uniform(-0.35, 0.35, 2))
            polygon = _capsule(centre, end, rng.uniform(0.04, 0.12))
        draw.polygon(_pixel_coords(polygon, size), fill=_as_rgb(colour), outline=_as_rgb(colour * 0.72),
                     width=max(1, size // 128))


def _place_hands(rng: np.random.Generator) -> list[dict]:
    """Samples hand classes and poses; rejects poses overlapping earlier hands or leaving the image."""
    num_wanted = rng.choice(len(_NUM_HANDS_PROBS), p=_NUM_HANDS_PROBS)
    hands = []
    for _ in range(num_wanted):
        label = int(rng.integers(NUM_CLASSES))
        parts, num_skin = _hand_parts(CLASS_NAMES[label], rng)
        local = np.concatenate(parts)
        for _ in range(_PLACEMENT_TRIES):
            points = _to_image(local, scale=rng.uniform(*_HAND_SCALE_RANGE),
                               angle=math.radians(rng.uniform(-_MAX_ROTATION_DEG, _MAX_ROTATION_DEG)),
                               mirror=bool(rng.random() < 0.5), centre=complex(*rng.uniform(0.1, 0.9, 2)))
            box = _box_of(points)
            clipped = np.clip(box, 0.0, 1.0)
            if _area(clipped) < MIN_FRACTION_INSIDE * _area(box):
                continue
            if any(_iou(clipped, other['box']) > MAX_PAIRWISE_IOU for other in hands):
                continue
            polygons = np.split(points, np.cumsum([len(p) for p in parts])[:-1])
            hands.append(dict(label=label, box=clipped, polygons=polygons, num_skin=num_skin,
                              skin=_skin_colour(rng)))
            break
    return hands


def _draw_hand(draw: ImageDraw.ImageDraw, hand: dict, size: int) -> None:
    skin = hand['skin']
    fill, fold_fill, outline = _as_rgb(skin), _as_rgb(skin * 0.93), _as_rgb(skin * 0.68)
    width = max(1, int(round(size / 160)))
    for index, polygon in enumerate(hand['polygons']):
        draw.polygon(_pixel_coords(polygon, size), fill=fill if index < hand['num_skin'] else fold_fill,
                     outline=outline, width=width)


@functools.lru_cache(maxsize=8)
def _blur_pool_taps(factor: int) -> tuple[int, np.ndarray]:
    """(radius, taps) of the 1-D filter equal to a Gaussian blur (sigma = BLUR_SIGMA_PER_FACTOR * factor)
    followed by factor-wide average pooling: output i = sum_k taps[k] * input[factor*i - radius + k]."""
    sigma = BLUR_SIGMA_PER_FACTOR * factor
    radius = int(math.ceil(3 * sigma))
    gaussian = np.exp(-0.5 * (np.arange(-radius, radius + 1) / sigma) ** 2)
    gaussian /= gaussian.sum()
    return radius, np.convolve(gaussian, np.full(factor, 1.0 / factor)).astype(np.float32)


def _blur_pool_axis(image: np.ndarray, axis: int, factor: int) -> np.ndarray:
    radius, taps = _blur_pool_taps(factor)
    pad = [(0, 0)] * image.ndim
    pad[axis] = (radius, radius)
    padded = np.pad(image, pad, mode='reflect')
    out_len = image.shape[axis] // factor
    index = [slice(None)] * image.ndim
    out = 0.0
    for k, tap in enumerate(taps):
        index[axis] = slice(k, k + factor * out_len, factor)
        out = out + tap * padded[tuple(index)]
    return out


def blur_downsample(image_hr: np.ndarray, factor: int = LR_FACTOR) -> np.ndarray:
    """Anti-aliased downsampling: a separable Gaussian blur (sigma = BLUR_SIGMA_PER_FACTOR * factor
    high-resolution pixels, numpy 'reflect' padding) followed by factor x factor average pooling,
    rounded to uint8. Blur and pooling are fused into one strided filter per axis.

    Args:
      image_hr: uint8 [factor*S, factor*T, C].
    Returns:
      uint8 [S, T, C].
    """
    image_hr = np.asarray(image_hr)
    if factor < 1 or image_hr.ndim != 3 or image_hr.shape[0] % factor or image_hr.shape[1] % factor:
        raise ValueError(f'image_hr must be [H, W, C] with H and W divisible by factor={factor}; '
                         f'got shape {image_hr.shape}')
    if min(image_hr.shape[:2]) <= _blur_pool_taps(factor)[0]:
        raise ValueError(f'image_hr sides must exceed the blur radius {_blur_pool_taps(factor)[0]}; '
                         f'got shape {image_hr.shape}')
    image = image_hr.astype(np.float32)
    image = _blur_pool_axis(_blur_pool_axis(image, 0, factor), 1, factor)
    return np.clip(np.round(image), 0, 255).astype(np.uint8)


def render_example(rng: np.random.Generator, *, lr_size: int, lr_factor: int = LR_FACTOR) -> dict:
    """Renders one scene from `rng`. Geometry is drawn in normalised units, so the same rng state
    gives the same scene at any size.

    Returns:
      dict of numpy arrays with the dataset's feature names, shapes and dtypes (see module docstring).
    """
    hr_size = lr_size * lr_factor
    canvas_size = hr_size * _SUPERSAMPLE
    # Nearest upsampling is exact here: the box filter below undoes it on the background.
    canvas = Image.fromarray(_background(rng, hr_size)).resize((canvas_size, canvas_size), Image.NEAREST)
    draw = ImageDraw.Draw(canvas)
    _draw_clutter(draw, rng, canvas_size)
    _draw_distractors(draw, rng, canvas_size)
    hands = _place_hands(rng)
    for hand in hands:
        _draw_hand(draw, hand, canvas_size)
    image_hr = np.asarray(canvas.reduce(_SUPERSAMPLE), np.int16)
    # Sensor noise: the popcount of a random byte is Binomial(8, 1/2) (mean 4, std sqrt 2), a cheap
    # near-Gaussian integer.
    noise_bits = np.frombuffer(rng.bytes(image_hr.size), np.uint8).reshape(image_hr.shape)
    noise_gain = int(rng.integers(1, 3))
    image_hr += (np.bitwise_count(noise_bits).astype(np.int16) - 4) * noise_gain
    image_hr = np.clip(image_hr, 0, 255).astype(np.uint8)

    boxes = np.zeros((MAX_HANDS, 4), np.float32)
    labels = np.full((MAX_HANDS,), -1, np.int32)
    for row, hand in enumerate(hands):
        boxes[row] = hand['box']
        labels[row] = hand['label']
    return {
        'image': blur_downsample(image_hr, lr_factor),
        'image_hr': image_hr,
        'boxes': boxes,
        'labels': labels,
        'num_hands': np.int32(len(hands)),
    }


def generate_example(split: str, index: int, *, lr_size: int, lr_factor: int = LR_FACTOR) -> dict:
    """Example `index` of `split`, from `np.random.default_rng([SPLIT_SEEDS[split], index])` alone."""
    tfds_builder.check_choice('split', split, SPLIT_SEEDS)
    if index < 0:
        raise ValueError(f'index must be >= 0; got {index}')
    rng = np.random.default_rng([SPLIT_SEEDS[split], index])
    return render_example(rng, lr_size=lr_size, lr_factor=lr_factor)


# ----------------------------------------------------------------------------------------------
# TFDS builder (the plumbing shared with synthetic_faces is in jaxface.data.tfds_builder).


@dataclasses.dataclass(eq=False, kw_only=True)
class SyntheticGesturesConfig(tfds_builder.GeneratedConfig):
    """Resolution and split sizes of one variant.

    Attributes:
      lr_size: side S of the low-resolution `image`.
      lr_factor: L; `image_hr` has side L*S.
      num_train, num_validation, num_test: number of examples per split.
    """

    lr_size: int = 64
    lr_factor: int = LR_FACTOR

    @property
    def hr_size(self) -> int:
        return self.lr_size * self.lr_factor


CONFIGS = {
    'lr64': SyntheticGesturesConfig(
        name='lr64', lr_size=64, num_train=4096, num_validation=512, num_test=512,
        description='64x64 image, 128x128 image_hr; sized for CPU training (the default).'),
    'lr128': SyntheticGesturesConfig(
        name='lr128', lr_size=128, num_train=8192, num_validation=1024, num_test=1024,
        description='128x128 image, 256x256 image_hr; for accelerators.'),
    'smoke': SyntheticGesturesConfig(
        name='smoke', lr_size=64, num_train=128, num_validation=32, num_test=32,
        description='Tiny 64x64 / 128x128 variant for tests (a prefix of lr64).'),
}


class SyntheticGestures(tfds_builder.GeneratedBuilder):
    """Procedural hand gestures in cluttered scenes, with paired low / high resolution images."""

    VERSION = tfds.core.Version('1.0.0')
    RELEASE_NOTES = {
        '1.0.0': 'Initial release: 8 gesture classes, 0-3 hands per scene, LR image derived from HR '
                 'by Gaussian blur + 2x2 average pooling.',
    }
    BUILDER_CONFIGS = list(CONFIGS.values())
    DEFAULT_CONFIG_NAME = 'lr64'

    def _features(self) -> tfds.features.FeaturesDict:
        config = self.builder_config
        # Raw bytes: the noisy images barely compress (zlib saves ~11% at ~2 ms per example).
        image_encoding = tfds.features.Encoding.BYTES
        return tfds.features.FeaturesDict({
            'image': tfds.features.Tensor(shape=(config.lr_size, config.lr_size, 3), dtype=np.uint8,
                                          encoding=image_encoding),
            'image_hr': tfds.features.Tensor(shape=(config.hr_size, config.hr_size, 3), dtype=np.uint8,
                                             encoding=image_encoding),
            'boxes': tfds.features.Tensor(shape=(MAX_HANDS, 4), dtype=np.float32),
            'labels': tfds.features.Tensor(shape=(MAX_HANDS,), dtype=np.int32),
            'num_hands': tfds.features.Tensor(shape=(), dtype=np.int32),
        })

    def _generate_example(self, split: str, index: int) -> dict:
        config = self.builder_config
        return generate_example(split, index, lr_size=config.lr_size, lr_factor=config.lr_factor)


def prepare(config_name: str = 'lr64', data_dir: str | None = None) -> SyntheticGestures:
    """Generates `synthetic_gestures/<config_name>` as array_record files under `data_dir` (tfds' default
    directory when None; a no-op when already prepared) and returns the builder."""
    return tfds_builder.prepare(SyntheticGestures, config_name, data_dir)


def data_source(config_name: str, split: str, data_dir: str | None = None) -> tfds_builder.TypedSource:
    """Random-access, TensorFlow-free source of a prepared split: `source[i]` is the dict of numpy
    arrays of example i (feature names and dtypes above), `len(source)` the split size."""
    return tfds_builder.open_split(SyntheticGestures, config_name, split, data_dir)
